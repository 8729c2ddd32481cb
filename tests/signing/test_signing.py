"""keygen, sign, verify and verify_tree: every refusal has a precise reason and file list."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from devcluster.iris import Keys, write_keys
from modeldeploy.params import signing
from modeldeploy.params.errors import VerificationError

from .helpers import cli, flip_byte, upstream


def refusal(model_dir: Path, public_key: Path, signature: Path | None = None) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        signing.verify(model_dir, public_key, signature)
    return caught.value


def test_signed_model_verifies_with_fingerprint_digest_and_files(model: Path, keys: Keys) -> None:
    verified = signing.verify(model, keys.public)
    assert verified.key_fingerprint == keys.fingerprint
    assert verified.manifest_digest == signing.signed_digest(model / "model.sig")
    assert verified.manifest_digest.startswith("sha256:") and len(verified.manifest_digest) == 71
    assert sorted(verified.files) == ["model.joblib", "model.yaml"]


def test_signature_and_verified_manifest_are_not_signed(model: Path, keys: Keys) -> None:
    (model / signing.VERIFIED_MANIFEST).write_text("{}")
    assert sorted(signing.verify(model, keys.public).files) == ["model.joblib", "model.yaml"]


def test_flipped_byte_names_the_changed_file(model: Path, keys: Keys) -> None:
    flip_byte(model / "model.joblib")
    err = refusal(model, keys.public)
    assert (err.reason, err.files) == ("FilesDiffer", ["model.joblib"])
    assert "changed model.joblib" in str(err) and "\n" not in str(err)


def test_extra_and_missing_files_are_named(model: Path, keys: Keys) -> None:
    (model / "evil.py").write_text("import os\n")
    (model / "model.yaml").unlink()
    err = refusal(model, keys.public)
    assert (err.reason, err.files) == ("FilesDiffer", ["evil.py", "model.yaml"])
    assert "extra evil.py" in str(err) and "missing model.yaml" in str(err)


def test_extra_file_in_a_git_directory_is_not_ignored(model: Path, keys: Keys) -> None:
    (model / ".git").mkdir()
    (model / ".git" / "hook").write_text("payload")
    assert refusal(model, keys.public).files == [".git/hook"]


def test_wrong_key_is_a_key_mismatch(model: Path, other_keys: Keys) -> None:
    err = refusal(model, other_keys.public)
    assert err.reason == "KeyMismatch"
    assert other_keys.fingerprint in str(err)


def test_signature_from_another_model_is_refused(model: Path, keys: Keys, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.yaml").write_text("name: other\n")
    signing.sign(other, keys.private)
    shutil.copy(other / "model.sig", model / "model.sig")
    err = refusal(model, keys.public)
    assert err.reason == "FilesDiffer"
    assert err.files == ["model.joblib", "model.yaml"]


def test_signature_whose_payload_was_edited_is_invalid(model: Path, keys: Keys) -> None:
    bundle = json.loads((model / "model.sig").read_text())
    signature = bundle["dsseEnvelope"]["signatures"][0]
    signature["sig"] = signature["sig"][:-8] + ("AAAAAAA=" if not signature["sig"].endswith("AAAAAAA=") else "BBBBBBB=")
    (model / "model.sig").write_text(json.dumps(bundle))
    assert refusal(model, keys.public).reason == "SignatureInvalid"


def test_missing_signature(model: Path, keys: Keys) -> None:
    (model / "model.sig").unlink()
    err = refusal(model, keys.public)
    assert err.reason == "SignatureMissing" and "model.sig" in str(err)


@pytest.mark.parametrize("content", ["not json", '{"mediaType": "x"}', '{"dsseEnvelope": {"payload": "!!"}}'])
def test_malformed_signature(model: Path, keys: Keys, content: str) -> None:
    (model / "model.sig").write_text(content)
    assert refusal(model, keys.public).reason == "SignatureMalformed"


def test_private_key_given_as_public_key_is_invalid(model: Path, keys: Keys) -> None:
    assert refusal(model, keys.private).reason == "PublicKeyInvalid"


def test_symlink_in_model_is_refused(model: Path, keys: Keys) -> None:
    (model / "link").symlink_to("/etc/passwd")
    err = refusal(model, keys.public)
    assert err.reason == "FilesDiffer" and "symlink" in str(err)


def test_signature_outside_the_model_dir(model: Path, keys: Keys, tmp_path: Path) -> None:
    outside = signing.sign(model, keys.private, tmp_path / "detached.sig")
    (model / "model.sig").unlink()
    assert signing.verify(model, keys.public, outside).key_fingerprint == keys.fingerprint


def test_verify_tree_names_changed_and_extra_files(model: Path, keys: Keys) -> None:
    verified = signing.verify_tree(model, keys.public).verified
    assert verified == signing.verify(model, keys.public)
    flip_byte(model / "model.yaml", 0)
    (model / "extra.bin").write_bytes(b"x")
    err = refusal(model, keys.public)
    assert (err.reason, err.files) == ("FilesDiffer", ["extra.bin", "model.yaml"])


def test_recheck_passes_until_a_file_changes_and_names_it(model: Path, keys: Keys) -> None:
    tree = signing.verify_tree(model, keys.public)
    tree.recheck()
    flip_byte(model / "model.joblib", 100)
    with pytest.raises(VerificationError) as caught:
        tree.recheck()
    assert (caught.value.reason, caught.value.files) == ("FilesDiffer", ["model.joblib"])
    assert "changed model.joblib" in str(caught.value)


def test_recheck_names_extra_and_missing_files_and_keeps_ignoring_the_signature(
    model: Path, keys: Keys, tmp_path: Path,
) -> None:
    outside = signing.sign(model, keys.private, tmp_path / "detached.sig")
    tree = signing.verify_tree(model, keys.public, outside)
    (model / "model.sig").write_bytes(b"unsigned, never hashed")
    tree.recheck()
    (model / "policies.yaml").write_text("policies: []\n")
    (model / "model.yaml").unlink()
    with pytest.raises(VerificationError) as caught:
        tree.recheck()
    assert (caught.value.reason, caught.value.files) == ("FilesDiffer", ["model.yaml", "policies.yaml"])
    assert "extra policies.yaml; missing model.yaml" in str(caught.value)


# --- command line -----------------------------------------------------------------------


def test_keygen_writes_private_key_0600_and_prints_fingerprint(tmp_path: Path) -> None:
    result = cli("keygen", "--private-key", tmp_path / "k.pem", "--public-key", tmp_path / "k.pub", "--curve", "p384")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    public = serialization.load_pem_public_key((tmp_path / "k.pub").read_bytes())
    assert result.stdout.strip() == signing.fingerprint(public)  # type: ignore[arg-type]
    assert public.curve.name == "secp384r1"  # type: ignore[union-attr]


def test_keygen_refuses_to_overwrite_a_private_key(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("precious")
    result = cli("keygen", "--private-key", tmp_path / "k.pem", "--public-key", tmp_path / "k.pub")
    assert result.exit_code != 0 and "already exists" in result.stderr
    assert (tmp_path / "k.pem").read_text() == "precious"


def test_password_protected_key_signs_only_with_its_password(tmp_path: Path, trained: Path) -> None:
    model = shutil.copytree(trained, tmp_path / "m")
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    assert cli("keygen", "--private-key", key, "--public-key", pub, "--password", "s3cret").exit_code == 0
    assert b"ENCRYPTED" in key.read_bytes()
    assert cli("sign", model, "--private-key", key).exit_code == 1
    assert not (model / "model.sig").exists()
    assert cli("sign", model, "--private-key", key, "--password", "s3cret").exit_code == 0
    assert cli("verify", model, "--public-key", pub).exit_code == 0


def test_cli_verify_exit_codes_and_one_line_reason(model: Path, keys: Keys, other_keys: Keys) -> None:
    ok = cli("verify", model, "--public-key", keys.public)
    assert ok.exit_code == 0 and keys.fingerprint in ok.stdout
    bad = cli("verify", model, "--public-key", other_keys.public)
    assert bad.exit_code == 1
    assert bad.stderr.count("\n") == 1 and "KeyMismatch" in bad.stderr


def test_cli_sign_then_verify_with_detached_signature(tmp_path: Path, trained: Path, keys: Keys) -> None:
    model = shutil.copytree(trained, tmp_path / "m")
    sig = tmp_path / "m.sig"
    assert cli("sign", model, "--private-key", keys.private, "--signature", sig).exit_code == 0
    assert cli("verify", model, "--public-key", keys.public, "--signature", sig).exit_code == 0
    flip_byte(model / "model.joblib")
    result = cli("verify", model, "--public-key", keys.public, "--signature", sig)
    assert result.exit_code == 1 and "FilesDiffer" in result.stderr and "model.joblib" in result.stderr


# --- interoperability with the upstream model_signing CLI ---------------------------------


def test_our_signature_verifies_with_upstream_cli(model: Path, keys: Keys, other_keys: Keys) -> None:
    done = upstream("verify", "key", model, "--signature", model / "model.sig", "--public_key", keys.public)
    assert done.returncode == 0, done.stderr
    wrong = upstream("verify", "key", model, "--signature", model / "model.sig", "--public_key", other_keys.public)
    assert wrong.returncode != 0


def test_upstream_signature_verifies_with_ours(tmp_path: Path, trained: Path, keys: Keys) -> None:
    model = shutil.copytree(trained, tmp_path / "m")
    done = upstream("sign", "key", model, "--signature", model / "model.sig", "--private_key", keys.private)
    assert done.returncode == 0, done.stderr
    assert cli("verify", model, "--public-key", keys.public).exit_code == 0
    flip_byte(model / "model.joblib")
    assert refusal(model, keys.public).files == ["model.joblib"]


def test_upstream_refuses_our_tampered_model(model: Path, keys: Keys) -> None:
    (model / "extra.txt").write_text("x")
    done = upstream("verify", "key", model, "--signature", model / "model.sig", "--public_key", keys.public)
    assert done.returncode != 0 and "extra.txt" in done.stderr


def test_p384_keys_interoperate(tmp_path: Path, trained: Path) -> None:
    keys = write_keys(tmp_path / "p384", "p384")
    model = shutil.copytree(trained, tmp_path / "m")
    assert (
        upstream("sign", "key", model, "--signature", model / "model.sig", "--private_key", keys.private).returncode
        == 0
    )
    assert signing.verify(model, keys.public).key_fingerprint == keys.fingerprint
