"""`modeldeploy fetch`: the init container's command, a thin click command over `fetch`.

A `ParametersError` (or anything unforeseen) becomes the termination record, one line on
stderr and exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from modeldeploy.contract.pod import TERMINATION_LOG
from modeldeploy.contract.reasons import FETCH_FAILED
from modeldeploy.params import fetch as fetching
from modeldeploy.params import signing, sources
from modeldeploy.params.cli import public_key_option, trust_of_options, trust_option
from modeldeploy.params.errors import ParametersError


def _limit(flag: str, type_: click.ParamType[Any], setting: str, help_: str) -> Callable[[Any], Any]:
    """A `fetch` option whose default is the `sources.Settings` field of the same meaning."""
    return click.option(flag, type=type_, default=getattr(sources.Settings, setting), show_default=True, help=help_)


@click.command()
@click.argument("source")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to create.")
@public_key_option
@trust_option
@click.option("--signature-uri", default=None, help="Default: model.sig inside SOURCE, or SOURCE.sig.")
@click.option("--sha256", default=None, help="Pin the signed manifest's digest.")
@click.option(
    "--termination-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Default: /dev/termination-log when it exists.",
)
@_limit("--max-bytes", click.IntRange(min=1), "max_bytes", "Refuse downloads and unpacked trees larger than this.")
@_limit("--timeout", click.FloatRange(min=0.1), "timeout", "Network timeout in seconds (per connection or read).")
@_limit(
    "--deadline",
    click.FloatRange(min=1),
    "deadline",
    "Give up (DeadlineExceeded) when download, unpacking and verification take longer, in seconds.",
)
@_limit(
    "--max-expansion",
    click.FloatRange(min=1),
    "max_expansion",
    "Refuse archives that unpack to more than this many times their size.",
)
def fetch(
    source: str,
    dest: Path,
    public_key: Path | None,
    trust: Path | None,
    signature_uri: str | None,
    sha256: str | None,
    termination_log: Path | None,
    max_bytes: int,
    timeout: float,
    deadline: float,
    max_expansion: float,
) -> None:
    """Download SOURCE, verify it, and only then move it to DEST (fail closed)."""
    if termination_log is None and Path(TERMINATION_LOG).exists():
        termination_log = Path(TERMINATION_LOG)
    settings = sources.Settings(max_bytes=max_bytes, max_expansion=max_expansion, timeout=timeout, deadline=deadline)
    if (public_key is None) == (trust is None):
        raise click.UsageError("give exactly one of --public-key or --trust")
    result: signing.VerifiedModel | ParametersError
    try:
        result = fetching.fetch(source, dest, trust_of_options(public_key, trust), signature_uri, sha256, settings)
    except ParametersError as err:
        result = err
    except Exception as err:  # fail closed on anything unforeseen, with a reason
        result = ParametersError(FETCH_FAILED, f"{type(err).__name__}: {err}")
    record = fetching.termination_record(source, result, _fingerprint_or_none(public_key) if public_key else None)
    if termination_log is not None:
        fetching.write_termination_log(termination_log, record)
    if isinstance(result, ParametersError):
        click.echo(f"fetch refused {record.source}: {' '.join(str(result).split())}", err=True)
        raise SystemExit(1)
    click.echo(f"installed {dest}: {record.message} (manifest {record.manifest_digest})")


def _fingerprint_or_none(public_key: Path) -> str | None:
    try:
        return signing.fingerprint(signing.load_public_key(public_key))
    except ParametersError:
        return None
