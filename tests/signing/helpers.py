"""Helpers shared by the signing and fetch tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from model_server import signing
from modeldeploy.cli import main

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    fingerprint: str


def make_keys(directory: Path, curve: str = "p256") -> Keys:
    directory.mkdir(parents=True, exist_ok=True)
    key = signing.generate_key(curve)
    private, public = directory / "private.pem", directory / "public.pem"
    private.write_bytes(signing.private_key_pem(key))
    public.write_bytes(signing.public_key_pem(key.public_key()))
    return Keys(private, public, signing.fingerprint(key.public_key()))


def cli(*args: str | Path) -> Result:
    """Run `modeldeploy ARGS` in-process; stderr is kept apart from stdout."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def flip_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
