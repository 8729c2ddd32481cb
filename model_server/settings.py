"""Server settings: the model directory plus the YAML config file (`server.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from modeldeploy.contract.pod import ServerConfig
from modeldeploy.contract.validation import error_lines


class SettingsError(ValueError):
    """The config file is unreadable or malformed."""


class ServerSettings(ServerConfig):
    """What `modeldeploy serve` runs with: `server.yaml` (the contract's `ServerConfig`) plus its command line."""

    model_dir: Path
    # whom model.sig must be signed by (one of them): a PEM EC public key, or a trust.json (TrustBundle);
    # neither: nothing loads
    public_key: Path | None = None
    trust: Path | None = None
    # Open Inference Protocol v2 over gRPC on this address (port 0: off)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)

    @model_validator(mode="after")
    def _one_trust(self) -> ServerSettings:
        if self.public_key is not None and self.trust is not None:
            raise ValueError("give a public key or a trust file, not both")
        return self


def load_settings(
    model_dir: Path, config: Path | None = None, public_key: Path | None = None, trust: Path | None = None
) -> ServerSettings:
    """Settings for `model_dir`, with the config file's keys if one is given.

    Raises:
        SettingsError: the file is unreadable, not YAML, or has unknown or invalid keys.
    """
    document: dict[str, Any] = {}
    if config is not None:
        try:
            document = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise SettingsError(f"{config}: {err}") from err
        if not isinstance(document, dict):
            raise SettingsError(f"{config}: expected a mapping at the top level")
    try:
        overrides: dict[str, Any] = {"modelDir": model_dir}
        if public_key is not None:
            overrides["publicKey"] = public_key
        if trust is not None:
            overrides["trust"] = trust
        return ServerSettings.model_validate({**document, **overrides})
    except ValidationError as err:
        raise SettingsError(f"{config}: {'; '.join(error_lines(err))}") from err
