"""The `modeldeploy` command: a click group whose subcommands load lazily.

Each subcommand lives beside the code it drives; this module only maps names to
import paths, so `modeldeploy fetch` in an init container never imports FastAPI
or the Kubernetes client.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

COMMANDS: dict[str, str] = {
    "keygen": "model_server.cli:keygen",
    "sign": "model_server.cli:sign",
    "verify": "model_server.cli:verify",
    "fetch": "model_server.cli:fetch",
    "serve": "model_server.serve:serve",
    "operator": "model_operator.cli:operator",
    "cluster": "devcluster.cli:cluster",
    "demo": "modeldeploy.demo:demo",
    "loadtest": "modeldeploy.loadtest.cli:loadtest",
}


# The harness a command drives beyond the package it lives in.
REQUIRES: dict[str, str] = {"demo": "devcluster"}


def installed(name: str) -> bool:
    """Whether the packages command ``name`` needs are installed (an image carries only its product's)."""
    packages = {COMMANDS[name].split(".", 1)[0], REQUIRES.get(name, COMMANDS[name].split(".", 1)[0])}
    return all(importlib.util.find_spec(package) is not None for package in packages)


class LazyGroup(click.Group):
    """A group that imports a subcommand only when it is listed or invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if installed(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not installed(cmd_name):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="modeldeploy")
def main() -> None:
    """Deploy signed ML models on Kubernetes."""
