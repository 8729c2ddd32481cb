"""`modeldeploy fetch`: verified parameters land atomically in DEST; every refusal leaves DEST empty."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from devcluster.iris import Keys
from modeldeploy.params import signing

from .conftest import HttpServer
from .helpers import assert_installed, assert_refused, cli, files_of, flip_byte, run_fetch, tar_gz

# --- sources that verify ------------------------------------------------------------------


def test_directory_source_is_installed_with_signature_and_verified_manifest(
    model: Path, dest: Path, keys: Keys
) -> None:
    result, record = run_fetch(model, dest, keys.public)
    assert_installed(result, record, dest, keys)
    assert record["manifestDigest"] == signing.signed_digest(model / "model.sig")
    assert record["failedFiles"] == [] and record["source"] == str(model)
    assert cli("verify", dest, "--public-key", keys.public).exit_code == 0


def test_file_uri_tar_gz_with_top_level_directory(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "iris.tar.gz", files_of(model), prefix="iris/")
    assert_installed(*run_fetch(f"file://{archive}", dest, keys.public), dest, keys)


def test_tar_of_dot_made_with_tar_c_dir_dot(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tmp_path / "iris.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model, arcname=".")
    assert_installed(*run_fetch(archive, dest, keys.public), dest, keys)


def test_source_path_that_is_a_symlink_is_followed(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "iris-1.0.0.tar.gz", files_of(model))
    (tmp_path / "current.tar.gz").symlink_to(archive)
    assert_installed(*run_fetch(tmp_path / "current.tar.gz", dest, keys.public), dest, keys)


def test_zip_with_signature_beside_it(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tmp_path / "iris.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in files_of(model).items():
            if name != "model.sig":
                zf.writestr(name, data)
    shutil.copy(model / "model.sig", tmp_path / "iris.zip.sig")
    assert_installed(*run_fetch(archive, dest, keys.public), dest, keys)


def test_http_archive_with_signature_beside_it_and_pinned_digest(
    model: Path, dest: Path, keys: Keys, http_server: HttpServer
) -> None:
    members = {k: v for k, v in files_of(model).items() if k != "model.sig"}
    tar_gz(http_server.root / "iris.tar.gz", members)
    shutil.copy(model / "model.sig", http_server.root / "iris.tar.gz.sig")
    pin = signing.signed_digest(model / "model.sig")
    assert_installed(*run_fetch(f"{http_server.url}/iris.tar.gz", dest, keys.public, "--sha256", pin), dest, keys)


def test_explicit_signature_uri_replaces_the_one_inside(
    model: Path, dest: Path, keys: Keys, other_keys: Keys, http_server: HttpServer
) -> None:
    good = shutil.copy(model / "model.sig", http_server.root / "good.sig")
    signing.sign(model, other_keys.private)  # model.sig inside is now by another key
    result, record = run_fetch(model, dest, keys.public, "--signature-uri", f"{http_server.url}/good.sig")
    assert_installed(result, record, dest, keys)
    assert (dest / "model.sig").read_bytes() == Path(good).read_bytes()


def test_earlier_fetch_is_replaced(model: Path, dest: Path, keys: Keys) -> None:
    assert run_fetch(model, dest, keys.public)[0].exit_code == 0
    (model / "model.yaml").write_text((model / "model.yaml").read_text() + "# v2\n")
    signing.sign(model, keys.private)
    assert_installed(*run_fetch(model, dest, keys.public), dest, keys)
    assert (dest / "model.yaml").read_text().endswith("# v2\n")


# --- refusals: the parameters or the signature --------------------------------------------


def test_flipped_byte(model: Path, dest: Path, keys: Keys) -> None:
    flip_byte(model / "model.joblib")
    result, record = run_fetch(model, dest, keys.public)
    assert_refused(result, record, dest, "FilesDiffer")
    assert record["failedFiles"] == ["model.joblib"] and "changed model.joblib" in record["message"]
    assert record["keyFingerprint"] == keys.fingerprint and record["manifestDigest"] is None


def test_extra_file(model: Path, dest: Path, keys: Keys) -> None:
    (model / "payload.pkl").write_bytes(b"cos\nsystem\n")
    result, record = run_fetch(model, dest, keys.public)
    assert_refused(result, record, dest, "FilesDiffer")
    assert record["failedFiles"] == ["payload.pkl"] and "extra payload.pkl" in record["message"]


def test_missing_file(model: Path, dest: Path, keys: Keys) -> None:
    (model / "model.yaml").unlink()
    result, record = run_fetch(model, dest, keys.public)
    assert_refused(result, record, dest, "FilesDiffer")
    assert record["failedFiles"] == ["model.yaml"] and "missing model.yaml" in record["message"]


def test_swapped_signature(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    other = shutil.copytree(model, tmp_path / "other")
    (other / "model.yaml").write_text("name: other\n")
    signing.sign(other, keys.private)
    shutil.copy(other / "model.sig", model / "model.sig")
    result, record = run_fetch(model, dest, keys.public)
    assert_refused(result, record, dest, "FilesDiffer")
    assert record["failedFiles"] == ["model.yaml"]


def test_wrong_key(model: Path, dest: Path, other_keys: Keys) -> None:
    result, record = run_fetch(model, dest, other_keys.public)
    assert_refused(result, record, dest, "KeyMismatch")
    assert record["keyFingerprint"] == other_keys.fingerprint


def test_no_signature(model: Path, dest: Path, keys: Keys) -> None:
    (model / "model.sig").unlink()
    result, record = run_fetch(model, dest, keys.public)
    assert_refused(result, record, dest, "SignatureMissing")
    assert "model.sig" in record["message"]


def test_malformed_signature(model: Path, dest: Path, keys: Keys) -> None:
    (model / "model.sig").write_text("{}")
    assert_refused(*run_fetch(model, dest, keys.public), dest, "SignatureMalformed")


def test_pinned_digest_mismatch(model: Path, dest: Path, keys: Keys) -> None:
    result, record = run_fetch(model, dest, keys.public, "--sha256", "0" * 64)
    assert_refused(result, record, dest, "DigestMismatch")


def test_failed_fetch_removes_an_earlier_verified_model(model: Path, dest: Path, keys: Keys) -> None:
    assert run_fetch(model, dest, keys.public)[0].exit_code == 0
    flip_byte(model / "model.joblib")
    assert_refused(*run_fetch(model, dest, keys.public), dest, "FilesDiffer")


def test_unrelated_non_empty_destination_is_left_alone(model: Path, dest: Path, keys: Keys) -> None:
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    result, record = run_fetch(model, dest, keys.public)
    assert result.exit_code == 1 and record["reason"] == "DestinationInvalid"
    assert (dest / "notes.txt").read_text() == "mine"


def test_symlink_in_directory_source(model: Path, dest: Path, keys: Keys) -> None:
    (model / "link").symlink_to("/etc/passwd")
    result, record = run_fetch(model, dest, keys.public)
    assert_refused(result, record, dest, "UnsafeFile")
    assert record["failedFiles"] == ["link"]


# --- refusals: the transport ----------------------------------------------------------------


def test_truncated_download_is_retried_then_refused(
    model: Path, dest: Path, keys: Keys, http_server: HttpServer
) -> None:
    tar_gz(http_server.root / "iris.tar.gz", files_of(model))
    result, record = run_fetch(f"{http_server.url}/truncated/iris.tar.gz", dest, keys.public)
    assert_refused(result, record, dest, "DownloadFailed")
    assert "after 4 attempts" in record["message"]
    assert http_server.requests.count("/truncated/iris.tar.gz") == 4


def test_http_error(model: Path, dest: Path, keys: Keys, http_server: HttpServer) -> None:
    result, record = run_fetch(f"{http_server.url}/error/iris.tar.gz", dest, keys.public)
    assert_refused(result, record, dest, "DownloadFailed")
    assert "HTTP 500" in record["message"]


def test_http_not_found(dest: Path, keys: Keys, http_server: HttpServer) -> None:
    result, record = run_fetch(f"{http_server.url}/nope.tar.gz", dest, keys.public)
    assert_refused(result, record, dest, "SourceNotFound")
    assert http_server.requests == ["/nope.tar.gz"]


def test_credentials_in_source_url_are_not_reported(dest: Path, keys: Keys, http_server: HttpServer) -> None:
    url = http_server.url.replace("http://", "http://user:hunter2@") + "/nope.tar.gz"
    result, record = run_fetch(url, dest, keys.public)
    assert "hunter2" not in json.dumps(record) and "hunter2" not in result.stderr


@pytest.mark.parametrize("route", ["", "nolength/"])
def test_oversized_download(model: Path, dest: Path, keys: Keys, http_server: HttpServer, route: str) -> None:
    archive = tar_gz(http_server.root / "iris.tar.gz", files_of(model))
    limit = archive.stat().st_size - 1
    result, record = run_fetch(f"{http_server.url}/{route}iris.tar.gz", dest, keys.public, "--max-bytes", str(limit))
    assert_refused(result, record, dest, "TooLarge")
    assert str(limit) in record["message"]


def test_archive_that_expands_past_the_limit(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "bomb.tar.gz", {**files_of(model), "zeros.bin": bytes(50 << 20)})
    assert archive.stat().st_size < 1 << 20
    result, record = run_fetch(archive, dest, keys.public, "--max-bytes", str(10 << 20))
    assert_refused(result, record, dest, "TooLarge")


# --- refusals: unsafe archives ----------------------------------------------------------------


def unsafe_tar(path: Path, model: Path, evil: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files_of(model).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(evil, io.BytesIO(b"pwned") if evil.isreg() else None)
    return path


def tar_member(name: str, kind: bytes, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


@pytest.mark.parametrize(
    ("evil", "named"),
    [
        (tar_member("../escape.txt", tarfile.REGTYPE, size=5), "../escape.txt"),
        (tar_member("/etc/cron.d/evil", tarfile.REGTYPE, size=5), "/etc/cron.d/evil"),
        (tar_member("link", tarfile.SYMTYPE, linkname="../../../etc/passwd"), "link"),
        (tar_member("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), "hard"),
        (tar_member("dev", tarfile.CHRTYPE), "dev"),
        (tar_member("fifo", tarfile.FIFOTYPE), "fifo"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "hardlink", "device", "fifo"],
)
def test_unsafe_tar_member(
    model: Path, dest: Path, keys: Keys, tmp_path: Path, evil: tarfile.TarInfo, named: str
) -> None:
    archive = unsafe_tar(tmp_path / "evil.tar.gz", model, evil)
    result, record = run_fetch(archive, dest, keys.public)
    assert_refused(result, record, dest, "UnsafeArchive")
    assert named in record["message"] and record["failedFiles"] == [named]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "pod" / "escape.txt").exists()


def test_zip_with_dotdot_member(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in files_of(model).items():
            zf.writestr(name, data)
        zf.writestr("../../escape.txt", b"pwned")
    assert_refused(*run_fetch(archive, dest, keys.public), dest, "UnsafeArchive")
    assert not (tmp_path / "escape.txt").exists()


def test_zip_with_symlink_member(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in files_of(model).items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("link")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    assert_refused(*run_fetch(archive, dest, keys.public), dest, "UnsafeArchive")


def test_not_an_archive(dest: Path, keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "params.bin").write_bytes(b"just bytes")
    assert_refused(*run_fetch(tmp_path / "params.bin", dest, keys.public), dest, "SourceInvalid")
