"""The iris example as the demos, tests and benchmarks make it: trained parameters, key pairs, sealed copies."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from modeldeploy.params import signing

TRAIN = Path(__file__).resolve().parents[1] / "examples" / "iris" / "train.py"


@dataclass(frozen=True)
class Keys:
    """A key pair's PEM files and the public key's fingerprint."""

    private: Path
    public: Path
    fingerprint: str


def write_keys(directory: Path, curve: str = "p256") -> Keys:
    """A fresh key pair in ``directory`` (made if missing): ``private.pem`` (mode 0600) and ``public.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = signing.generate_key(curve)
    private, public = directory / "private.pem", directory / "public.pem"
    private.write_bytes(signing.private_key_pem(key))
    private.chmod(0o600)
    public.write_bytes(signing.public_key_pem(key.public_key()))
    return Keys(private, public, signing.fingerprint(key.public_key()))


def train(model_dir: Path, stump: bool = False) -> Path:
    """Train ``examples/iris`` into ``model_dir`` (scikit-learn, no download); ``stump``: the worse model."""
    subprocess.run([sys.executable, str(TRAIN), str(model_dir), *(["--stump"] if stump else [])], check=True,
                   capture_output=True)
    return model_dir


def flowers() -> list[dict[str, float]]:
    """The 150 iris flowers as request bodies: real inputs, e.g. for a canary's analysis."""
    from sklearn.datasets import load_iris

    features = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    return [dict(zip(features, (float(value) for value in row), strict=True)) for row in load_iris().data]


def sealed(work: Path) -> tuple[Path, Keys]:
    """``work/iris`` trained, signed with a new key pair in ``work`` and verified, as ``fetch`` leaves it."""
    keys = write_keys(work)
    model_dir = train(work / "iris")
    signing.seal(model_dir, keys.private, keys.public)
    return model_dir, keys
