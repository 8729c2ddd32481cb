# The ModelDeployment operator: one place for every command a user or CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-unit demo bench clean crds lint proto

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

# Debian packages of the real node and the image builds (containerd, runc, CNI plugins, buildah,
# debootstrap, ...): apt-get installs only what is missing (root needed only then).
.PHONY: node-packages
node-packages:
	scripts/install-node-packages.sh

# Upstream Prometheus + promtool (with Kubernetes service discovery, for the e2e monitoring test),
# built from the Go module proxy once per machine into ~/.cache/modeldeploy/bin. The process-level
# monitoring tests use Debian's prometheus package (node-packages).
.PHONY: prometheus
prometheus:
	scripts/build-prometheus.sh >/dev/null

# helm v3 (the chart in charts/modeldeploy and its tests), built from the Go module proxy once per
# machine into ~/.cache/modeldeploy/bin (scripts/build-helm.sh pins the version).
.PHONY: helm
helm:
	scripts/build-helm.sh >/dev/null

test: install lint k8s-binaries minio helm node-packages prometheus images
	$(PY) -m pytest

# The CRD's schema is generated from the contract's types (modeldeploy/contract); a test checks it.
# The chart installs the same files from its crds/ (tests/charts checks they are identical).
crds: install
	$(PY) -m modeldeploy.contract.crd --write crds
	cp crds/modeldeployment.yaml crds/modeltrustpolicy.yaml manifests/kopf-peering.yaml charts/modeldeploy/crds/

# The Open Inference Protocol v2 gRPC code and its typed stubs, from KServe's grpc_predict_v2.proto.
proto: install
	PATH=$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. model_server/_proto/grpc_predict_v2.proto

# The layers (import-linter), ruff and mypy --strict on the product packages.
lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check modeldeploy model_operator model_server
	$(VENV)/bin/mypy

test-unit: install
	$(PY) -m pytest -m "not cluster and not e2e and not images"

# The whole story on this machine, as root (the node makes a bridge, iptables rules, mounts).
# `make demo DEMO_FLAGS=--keep` leaves the cluster, operator and ModelDeployment running.
demo: install k8s-binaries minio node-packages images
	$(PY) -m devcluster.demo $(DEMO_FLAGS)

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The node's images as docker archives under ~/.cache/modeldeploy/images (devcluster/images.py):
# operator and server from the Dockerfile (docker build where a Docker engine answers, otherwise
# buildah on a debootstrap base), pause, CoreDNS and MinIO from source. Reused while the tree is
# unchanged. `python -m devcluster images --load SOCKET` also imports them into a containerd.
.PHONY: images
images: install
	$(PY) -m devcluster images

# Install on kind (needs Docker, kind and kubectl; not used by the test suite).
KIND_CLUSTER ?= modeldeploy
KUBECTL ?= kubectl
.PHONY: kind-up kind-load deploy undeploy

kind-up:
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)

kind-load: install
	for archive in $$($(PY) -m devcluster images --product-only --paths); do \
	    kind load image-archive --name $(KIND_CLUSTER) $$archive; done

deploy:
	$(KUBECTL) apply -k manifests/
	$(KUBECTL) -n modeldeploy-system rollout status deployment/modeldeploy-operator --timeout=180s

# ModelDeployments first (they carry no finalizer: the garbage collector removes their children).
undeploy:
	-$(KUBECTL) delete modeldeployments.modeldeploy.io --all --all-namespaces --wait
	$(KUBECTL) delete -k manifests/ --ignore-not-found
