"""Server settings: the model directory plus the YAML config file (`server.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modeldeploy.contract.pod import ServerConfig
from modeldeploy.contract.validation import error_lines


class SettingsError(ValueError):
    """The config file is unreadable or malformed."""


class ServerSettings(ServerConfig):
    """What `modeldeploy serve` runs with: `server.yaml` (the contract's `ServerConfig`) plus its command line."""

    model_dir: Path
    public_key: Path | None = None  # the key model.sig must verify with at load; no key, no load


def load_settings(model_dir: Path, config: Path | None = None, public_key: Path | None = None) -> ServerSettings:
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
        return ServerSettings.model_validate({**document, **overrides})
    except ValidationError as err:
        raise SettingsError(f"{config}: {'; '.join(error_lines(err))}") from err
