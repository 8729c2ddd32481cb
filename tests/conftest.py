"""Shared pytest configuration: the local control-plane fixtures (``devcluster``, ``namespace``)."""

pytest_plugins = ["devcluster.pytest_plugin"]
