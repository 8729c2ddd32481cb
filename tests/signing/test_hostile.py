"""Issue 11, as an attacker tries it: fetch and verify refuse with one stable reason, and
never delete, hang or overflow. Each test names the case of the issue it covers."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from devcluster.iris import Keys
from modeldeploy.params import fetch as fetching
from modeldeploy.params import signing
from modeldeploy.params.errors import VerificationError

from .conftest import HttpServer
from .helpers import assert_installed, assert_refused, cli, files_of, run_fetch, tar_gz, upstream


def upstream_sign(model: Path, keys: Keys, *extra: str | Path) -> None:
    done = upstream("sign", "key", model, "--signature", model / "model.sig", "--private_key", keys.private, *extra)
    assert done.returncode == 0, done.stderr


def refusal(model: Path, public_key: Path) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        signing.verify(model, public_key)
    return caught.value


def edit_bundle(model: Path, edit) -> None:  # type: ignore[no-untyped-def]
    bundle = json.loads((model / "model.sig").read_text())
    edit(bundle)
    (model / "model.sig").write_text(json.dumps(bundle))


def edit_statement(model: Path, edit) -> None:  # type: ignore[no-untyped-def]
    def change(bundle: dict) -> None:  # type: ignore[type-arg]
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        edit(statement)
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()

    edit_bundle(model, change)


def write_key(path: Path, key: object) -> Path:
    path.write_bytes(key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))
    return path


# --- case 1: a file outside what the signature covers ----------------------------------------


def test_1_signature_ignoring_the_pickle_does_not_cover_a_replaced_pickle(model: Path, keys: Keys) -> None:
    upstream_sign(model, keys, "--ignore-paths", model / "model.joblib")
    joblib.dump({"not": "the model"}, model / "model.joblib")
    err = refusal(model, keys.public)
    assert (err.reason, err.files) == ("FilesDiffer", ["model.joblib"])
    assert "extra model.joblib" in str(err)


def test_1_upstream_default_git_ignores_do_not_hide_git_files(model: Path, keys: Keys) -> None:
    (model / ".gitattributes").write_text("* filter=evil\n")
    upstream_sign(model, keys)  # upstream ignores .git* by default, and records it
    err = refusal(model, keys.public)
    assert (err.reason, err.files) == ("FilesDiffer", [".gitattributes"])


def test_1_ignore_paths_the_tree_does_not_contain_verify(model: Path, keys: Keys) -> None:
    upstream_sign(model, keys, "--ignore-paths", model / "notes.txt")  # plus upstream's .git* ignores
    assert sorted(signing.verify(model, keys.public).files) == ["model.joblib", "model.yaml"]
    (model / "notes.txt").write_text("added later")
    assert refusal(model, keys.public).files == ["notes.txt"]


def test_1_symlinked_file_and_directory_are_refused_when_read(model: Path, keys: Keys, tmp_path: Path) -> None:
    tree = signing.verify_tree(model, keys.public)
    (tmp_path / "outside.joblib").write_bytes((model / "model.joblib").read_bytes())
    (model / "model.joblib").unlink()
    (model / "model.joblib").symlink_to(tmp_path / "outside.joblib")  # same bytes, through a link
    with pytest.raises(VerificationError) as caught:
        tree.read("model.joblib")
    assert caught.value.reason == "UnsafeFile"
    for name in ("/etc/passwd", "../iris/model.joblib", "", "a/../../x"):
        with pytest.raises(VerificationError) as caught:
            tree.read(name)
        assert caught.value.reason == "UnsafeFile", name
    with pytest.raises(VerificationError) as caught:
        tree.read("model.sig")
    assert caught.value.reason == "FileNotSigned"


def test_2_bytes_read_are_hashed_so_a_later_swap_is_caught(model: Path, keys: Keys) -> None:
    tree = signing.verify_tree(model, keys.public)
    assert tree.read("model.yaml") == (model / "model.yaml").read_bytes()
    replacement = model / "swap.tmp"
    replacement.write_bytes((model / "model.yaml").read_bytes() + b"# swapped\n")
    replacement.replace(model / "model.yaml")  # after the check, before the load
    with pytest.raises(VerificationError) as caught:
        tree.read("model.yaml")
    assert (caught.value.reason, caught.value.files) == ("FilesDiffer", ["model.yaml"])


# --- case 4: fetch deletes only what it installed --------------------------------------------


def test_4_user_directory_with_a_verified_manifest_is_never_deleted(
    model: Path, dest: Path, other_keys: Keys
) -> None:
    dest.mkdir()
    (dest / "verified-manifest.json").write_text("{}")
    (dest / "notes.txt").write_text("mine")
    result, record = run_fetch(model, dest, other_keys.public)
    assert result.exit_code == 1 and record["reason"] == "DestinationInvalid"
    assert (dest / "notes.txt").read_text() == "mine" and (dest / "verified-manifest.json").exists()


def test_4_dest_equal_to_the_source_with_the_wrong_key_keeps_the_source(model: Path, other_keys: Keys) -> None:
    (model / "verified-manifest.json").write_text("{}")  # as earlier fetch versions left it
    before = files_of(model)
    result, record = run_fetch(model, model, other_keys.public)
    assert result.exit_code == 1 and record["reason"] in ("DestinationInvalid", "KeyMismatch")
    assert files_of(model) == before


def test_4_a_copy_of_a_fetched_directory_is_not_fetchs_to_delete(
    model: Path, dest: Path, keys: Keys, other_keys: Keys, tmp_path: Path
) -> None:
    assert run_fetch(model, dest, keys.public)[0].exit_code == 0
    copy = shutil.copytree(dest, tmp_path / "pod" / "copy")
    result, record = run_fetch(model, copy, other_keys.public)
    assert result.exit_code == 1 and record["reason"] == "DestinationInvalid"
    assert (copy / "model.joblib").exists()


def test_4_failed_refetch_removes_only_fetchs_files(model: Path, dest: Path, keys: Keys, other_keys: Keys) -> None:
    assert run_fetch(model, dest, keys.public)[0].exit_code == 0
    result, record = run_fetch(model, dest, other_keys.public)
    assert_refused(result, record, dest, "KeyMismatch")
    assert not dest.exists()


def test_4_a_user_file_inside_an_earlier_fetch_is_kept(model: Path, dest: Path, keys: Keys, other_keys: Keys) -> None:
    assert run_fetch(model, dest, keys.public)[0].exit_code == 0
    (dest / "notes.txt").write_text("mine")
    _, record = run_fetch(model, dest, other_keys.public)
    assert record["reason"] == "DestinationInvalid" and "notes.txt" in record["message"]
    assert (dest / "notes.txt").read_text() == "mine"


def test_4_symlinked_dest_is_refused_with_a_reason_and_left_alone(
    model: Path, dest: Path, keys: Keys, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    assert run_fetch(model, elsewhere, keys.public)[0].exit_code == 0
    dest.symlink_to(elsewhere)
    result, record = run_fetch(model, dest, keys.public)
    assert result.exit_code == 1 and record["reason"] == "DestinationInvalid"
    assert "symbolic link" in record["message"] and result.stderr.count("\n") == 1
    assert (elsewhere / "model.joblib").exists()


# --- case 5: bounded in time; staging cleaned --------------------------------------------------


def test_5_a_trickling_source_hits_the_overall_deadline(
    model: Path, dest: Path, keys: Keys, http_server: HttpServer
) -> None:
    tar_gz(http_server.root / "iris.tar.gz", files_of(model))
    began = time.monotonic()
    result, record = run_fetch(
        f"{http_server.url}/slow/iris.tar.gz", dest, keys.public, "--timeout", "3", "--deadline", "2"
    )
    assert time.monotonic() - began < 10
    assert_refused(result, record, dest, "DeadlineExceeded")


def test_5_staging_directories_of_an_interrupted_run_are_removed(model: Path, dest: Path, keys: Keys) -> None:
    stale = dest.parent / f".{dest.name}.fetch-killed"
    (stale / "download").mkdir(parents=True)
    (stale / "download" / "half.bin").write_bytes(b"x" * 100)
    assert_installed(*run_fetch(model, dest, keys.public), dest, keys)
    assert not stale.exists()


# --- case 8: the termination record fits in 4 KiB -------------------------------------------


def test_8_record_of_many_long_file_names_stays_under_4_kib(model: Path, dest: Path, keys: Keys) -> None:
    for index in range(40):
        (model / f"{index:03d}-{'x' * 240}.bin").write_bytes(b"x")
    result, record = run_fetch(model, dest, keys.public)
    assert_refused(result, record, dest, "FilesDiffer")
    line = (dest.parent / "termination-log").read_bytes()
    assert len(line) < 4096
    assert line.startswith(b'{"verified":false,"reason":"FilesDiffer"')


def test_8_record_is_bounded_whatever_the_error() -> None:
    err = VerificationError("FilesDiffer", "y" * 100_000, [f"{i}-{'é' * 3000}" for i in range(500)])
    record = fetching.termination_record("s3://b/" + "k" * 10_000, err, "sha256:" + "0" * 64)
    assert len(record.line().encode()) < 4096 and record.reason == "FilesDiffer"


# --- case 10: archive expansion is bounded by default ------------------------------------------


def test_10_default_limits_refuse_a_compression_bomb(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "bomb.tar.gz", {**files_of(model), "zeros.bin": bytes(64 << 20)})
    assert archive.stat().st_size < 1 << 20
    result, record = run_fetch(archive, dest, keys.public)
    assert_refused(result, record, dest, "TooLarge")
    assert "expansion limit" in record["message"]


# --- case 11: one line with a stable reason, from types and own checks ----------------------


def assert_one_line(args: list[str | Path], reason: str) -> None:
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert reason in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256K1()), ed25519.Ed25519PrivateKey.generate(),
     rsa.generate_private_key(public_exponent=65537, key_size=2048)],
    ids=["secp256k1", "ed25519", "rsa"],
)
def test_11_unsupported_keys_are_one_line_reasons(model: Path, tmp_path: Path, key: object) -> None:
    public = write_key(tmp_path / "public.pem", key)
    assert_one_line(["verify", model, "--public-key", public], "PublicKeyInvalid")
    private = tmp_path / "private.pem"
    private.write_bytes(key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    assert_one_line(["sign", model, "--private-key", private], "PrivateKeyInvalid")


def _certificate_bundle(bundle: dict) -> None:  # type: ignore[type-arg]
    bundle["verificationMaterial"] = {"x509CertificateChain": {"certificates": [{"rawBytes": "AAAA"}]}}


def _no_signatures(bundle: dict) -> None:  # type: ignore[type-arg]
    bundle["dsseEnvelope"]["signatures"] = []


def _no_material(bundle: dict) -> None:  # type: ignore[type-arg]
    del bundle["verificationMaterial"]


def _two_signatures(bundle: dict) -> None:  # type: ignore[type-arg]
    bundle["dsseEnvelope"]["signatures"] *= 2


@pytest.mark.parametrize(
    ("edit", "reason"),
    [(_certificate_bundle, "SignatureMalformed"), (_no_signatures, "SignatureMalformed"),
     (_no_material, "SignatureMalformed"), (_two_signatures, "UnsupportedSignature")],
    ids=["garbage-certificate-chain", "empty-signatures", "no-verification-material", "two-signatures"],
)
def test_11_bundle_shapes_are_classified(
    model: Path, keys: Keys, edit: Callable[[dict[str, Any]], None], reason: str
) -> None:
    edit_bundle(model, edit)
    assert refusal(model, keys.public).reason == reason
    assert_one_line(["verify", model, "--public-key", keys.public], reason)


def test_11_unknown_hash_type_is_unsupported(model: Path, keys: Keys) -> None:
    edit_statement(model, lambda s: s["predicate"]["serialization"].update(hash_type="md5"))
    assert refusal(model, keys.public).reason == "UnsupportedSignature"


def test_11_deep_nesting_is_malformed(model: Path, keys: Keys) -> None:
    (model / "model.sig").write_text("[" * 200_000 + "]" * 200_000)
    assert_one_line(["verify", model, "--public-key", keys.public], "SignatureMalformed")


def test_11_reasons_do_not_depend_on_upstream_wording(
    model: Path, keys: Keys, other_keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_signing._signing import sign_ec_key

    def reworded(*_: object) -> None:
        raise ValueError("something upstream says in new words")

    monkeypatch.setattr(sign_ec_key.Verifier, "_verify_bundle", reworded)
    assert refusal(model, other_keys.public).reason == "KeyMismatch"  # our hint check, before upstream runs
    assert refusal(model, keys.public).reason == "SignatureInvalid"  # upstream refused, whatever its words
    (model / "model.yaml").write_text("tampered\n")
    assert refusal(model, keys.public).reason == "SignatureInvalid"  # files are compared only once authentic


# --- case 12: a backslash is an ordinary character, in a directory and in an archive ---------


def test_12_backslash_file_name_verifies_from_directory_and_archive(
    model: Path, dest: Path, keys: Keys, tmp_path: Path
) -> None:
    (model / "back\\slash").write_text("data")
    signing.sign(model, keys.private)
    assert "back\\slash" in signing.verify(model, keys.public).files
    archive = tmp_path / "iris.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files_of(model).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result, record = run_fetch(archive, dest, keys.public)
    assert result.exit_code == 0, record
    assert (dest / "back\\slash").read_text() == "data"
