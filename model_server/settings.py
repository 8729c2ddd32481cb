"""Server settings: the model directory plus the YAML config file (`server.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class SettingsError(ValueError):
    """The config file is unreadable or malformed."""


class ServerSettings(BaseModel):
    """What `modeldeploy serve` runs with. Config keys are camelCase (`maxRequestBytes`)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, protected_namespaces=())

    model_dir: Path
    public_key: Path | None = None  # the key model.sig must verify with at load; no key, no load
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)
    max_batch_size: int = Field(default=1024, gt=0)
    drain_seconds: float = Field(default=5.0, ge=0.0)
    policies: list[Any] = Field(default_factory=list)
    policy_timeout_seconds: float = Field(default=1.0, gt=0.0)  # per request, all rows and policies


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
        raise SettingsError(f"{config}: {err}") from err
