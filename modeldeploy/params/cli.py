"""`modeldeploy keygen | sign | verify`: thin click commands over `signing` (`fetch` is in `fetch_cli`).

Each command turns a `ParametersError` into one line on stderr and exit code 1. Nothing
here imports the download code, so verifying starts as fast as model_signing's own CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from modeldeploy.params import signing
from modeldeploy.params.errors import ParametersError
from modeldeploy.params.trust import Trust

PASSWORD_ENV = "MODELDEPLOY_KEY_PASSWORD"


@click.command()
@click.option(
    "--private-key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="PEM file to create (mode 0600).",
)
@click.option(
    "--public-key", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PEM file to create."
)
@click.option("--curve", type=click.Choice(sorted(signing.CURVES)), default="p256", show_default=True)
@click.option("--password", envvar=PASSWORD_ENV, default=None, help=f"Encrypt the private key (or set {PASSWORD_ENV}).")
def keygen(private_key: Path, public_key: Path, curve: str, password: str | None) -> None:
    """Create an EC key pair for signing parameters; print the public key's fingerprint."""
    key = signing.generate_key(curve)
    try:
        fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise click.ClickException(f"{private_key} already exists; not overwriting a private key") from err
    with os.fdopen(fd, "wb") as out:
        out.write(signing.private_key_pem(key, password))
    public_key.write_bytes(signing.public_key_pem(key.public_key()))
    click.echo(signing.fingerprint(key.public_key()))


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--private-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--signature", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: MODEL_DIR/model.sig."
)
@click.option(
    "--password", envvar=PASSWORD_ENV, default=None, help=f"The private key's password (or set {PASSWORD_ENV})."
)
@click.option("--hash", "hash_algorithm", type=click.Choice(signing.HASH_TYPES), default="sha256", show_default=True,
              help="How files are hashed (blake3 is fastest; it has no sharded form).")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Hash files in shards of this many bytes (model_signing's shard serialization).")
@click.option("--signing-certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Certificate method: the private key's certificate (PEM).")
@click.option("--certificate-chain", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="Certificate method: intermediate certificates to include (repeatable).")
def sign(
    model_dir: Path, private_key: Path, signature: Path | None, password: str | None, hash_algorithm: str,
    shard_size: int | None, signing_certificate: Path | None, certificate_chain: tuple[Path, ...],
) -> None:
    """Sign every file of MODEL_DIR (OpenSSF Model Signing bundle, key or certificate method)."""
    try:
        written = signing.sign(model_dir, private_key, signature, password, hash_algorithm=hash_algorithm,
                               shard_size=shard_size, signing_certificate=signing_certificate,
                               certificate_chain=certificate_chain)
    except (ParametersError, ValueError, TypeError, OSError) as err:
        raise click.ClickException(f"signing failed: {' '.join(str(err).split())}") from err
    click.echo(f"signed {model_dir} -> {written} (manifest {signing.signed_digest(written)})")


public_key_option = click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                                  help="The PEM EC public key the signature must verify with.")
trust_option = click.option("--trust", type=click.Path(dir_okay=False, path_type=Path), default=None,
                             help="A trust.json (TrustBundle): every policy's signers, as the operator renders it.")


def trust_of_options(public_key: Path | None, trust: Path | None, roots: Path | None = None,
           subjects: tuple[str, ...] = (), sans: tuple[str, ...] = ()) -> Trust:
    """The one trust the options name (exactly one of --public-key, --trust, --certificate-chain)."""
    if sum(option is not None for option in (public_key, trust, roots)) != 1:
        raise click.UsageError("give exactly one of --public-key, --trust or --certificate-chain")
    if (subjects or sans) and roots is None:
        raise click.UsageError("--subject and --san constrain --certificate-chain; give it too")
    if trust is not None:
        return Trust.load(trust)
    if public_key is not None:
        return Trust.from_public_key(public_key)
    assert roots is not None  # exactly one of the three
    return Trust.from_roots(roots, subjects, sans)


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@public_key_option
@trust_option
@click.option("--certificate-chain", "roots", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Certificate method: the trusted root (and intermediate) certificates (PEM).")
@click.option("--subject", "subjects", multiple=True, help="With --certificate-chain: an allowed signing subject.")
@click.option("--san", "sans", multiple=True, help="With --certificate-chain: an allowed email/URI/DNS name.")
@click.option(
    "--signature", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: MODEL_DIR/model.sig."
)
def verify(model_dir: Path, public_key: Path | None, trust: Path | None, roots: Path | None,
           subjects: tuple[str, ...], sans: tuple[str, ...], signature: Path | None) -> None:
    """Exit 0 when MODEL_DIR matches its signature made by a trusted signer."""
    try:
        verified = signing.verify(model_dir, trust_of_options(public_key, trust, roots, subjects, sans), signature)
    except ParametersError as err:
        click.echo(f"verification failed: {err}", err=True)
        raise SystemExit(1) from err
    files, digest = len(verified.files), verified.manifest_digest
    click.echo(f"verified {files} files signed by {verified.signer} ({verified.trusted_by}; {verified.hash_algorithm}; "
               f"manifest {digest})")
