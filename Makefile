# The ModelDeployment operator: one place for every command a user or CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-unit demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Kubernetes control plane + etcd + kubectl, built from the Go module proxy once per machine
# and cached in ~/.cache/modeldeploy (devcluster/build.py pins the versions).
.PHONY: k8s-binaries
k8s-binaries: install
	PYTHON=$(PY) scripts/build-k8s.sh

test: install k8s-binaries
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m "not cluster and not e2e"

demo: install
	$(PY) -m modeldeploy.demo

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
