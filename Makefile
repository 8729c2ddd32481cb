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

# MinIO (a real S3-compatible server for the S3 fetch tests), built from the Go module proxy
# once per machine into ~/.cache/modeldeploy (scripts/build-minio.sh pins the version).
.PHONY: minio
minio:
	scripts/build-minio.sh >/dev/null

test: install k8s-binaries minio
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m "not cluster and not e2e"

# The whole story on this machine (root: the process node makes network namespaces).
demo: install k8s-binaries
	$(PY) -m modeldeploy.demo $(DEMO_FLAGS)

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Operator images and install (needs Docker, kind and kubectl; not used by the test suite).
IMAGE_TAG ?= 0.1.0
KIND_CLUSTER ?= modeldeploy
KUBECTL ?= kubectl
.PHONY: images kind-up kind-load deploy undeploy
images:
	docker build --target operator -t modeldeploy-operator:$(IMAGE_TAG) .
	docker build --target model-server -t modeldeploy-server:$(IMAGE_TAG) .

kind-up:
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)

kind-load: images
	kind load docker-image --name $(KIND_CLUSTER) modeldeploy-operator:$(IMAGE_TAG) modeldeploy-server:$(IMAGE_TAG)

deploy:
	$(KUBECTL) apply -k manifests/
	$(KUBECTL) -n modeldeploy-system rollout status deployment/modeldeploy-operator --timeout=180s

# ModelDeployments first, while the operator still runs to release its finalizer (kopf timers).
undeploy:
	-$(KUBECTL) delete modeldeployments.modeldeploy.io --all --all-namespaces --wait
	$(KUBECTL) delete -k manifests/ --ignore-not-found
