"""The `modeldeploy` command: a click group whose subcommands load lazily.

Each subcommand lives beside the code it drives; this module only maps names to
import paths, so `modeldeploy fetch` in an init container never imports FastAPI
or the Kubernetes client. A command is listed only where the dependency set it
needs is installed (each image installs one set: `.[server]` or `.[operator]`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import NamedTuple

import click


class Command(NamedTuple):
    """Where a subcommand lives, and a module of the dependency set it needs."""

    target: str
    needs: str


COMMANDS: dict[str, Command] = {
    "keygen": Command("modeldeploy.params.cli:keygen", "model_signing"),
    "sign": Command("modeldeploy.params.cli:sign", "model_signing"),
    "verify": Command("modeldeploy.params.cli:verify", "model_signing"),
    "fetch": Command("modeldeploy.params.fetch_cli:fetch", "model_signing"),
    "serve": Command("model_server.serve:serve", "fastapi"),
    "operator": Command("model_operator.cli:operator", "kopf"),
    "loadtest": Command("modeldeploy.loadtest.cli:loadtest", "httptools"),
}


def installed(name: str) -> bool:
    """Whether the dependency set command ``name`` needs is installed."""
    return importlib.util.find_spec(COMMANDS[name].needs) is not None


class LazyGroup(click.Group):
    """A group that imports a subcommand only when it is listed or invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if installed(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not installed(cmd_name):
            return None
        module_name, attr = COMMANDS[cmd_name].target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="modeldeploy")
def main() -> None:
    """Deploy signed ML models on Kubernetes."""
