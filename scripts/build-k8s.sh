#!/usr/bin/env bash
# Build (first run on a machine) or reuse the Kubernetes control-plane binaries and etcd,
# cached under ${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}. Versions: devcluster/build.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -c "from devcluster.build import main; main()"
