#!/usr/bin/env bash
# Build helm v3 (for the chart in charts/modeldeploy and its tests) from the Go module proxy into
# ~/.cache/modeldeploy/bin/helm, once per machine: a helm already there at $VERSION is reused.
# Prints the binary's path. The ldflags are those of helm's own Makefile: the version that
# `helm version` reports, and the Kubernetes minor its client-go is (1.37 for v3.22.0), which
# `helm template` and `helm lint` assume as the cluster's version when they talk to none.
set -euo pipefail

VERSION="${HELM_VERSION:-v3.22.0}"
KUBE_MINOR="${HELM_KUBE_MINOR:-37}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
BIN="$CACHE/bin/helm"

if [ -x "$BIN" ] && [ "$("$BIN" version --template '{{.Version}}' 2>/dev/null)" = "$VERSION" ]; then
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null || { echo "build-helm: 'go' (>= 1.24) is required to build helm" >&2; exit 1; }

mkdir -p "$CACHE/bin"
STAGE="$(mktemp -d "$CACHE/.helm-build.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
echo "build-helm: building helm.sh/helm/v3/cmd/helm@$VERSION (first run takes a few minutes)" >&2
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION"
for pkg in pkg/chartutil pkg/lint/rules; do
    LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$KUBE_MINOR"
done
CGO_ENABLED=0 GOBIN="$STAGE" GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags "$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$VERSION" >&2
mv -f "$STAGE/helm" "$BIN"  # a rename: a concurrent build or reader sees one whole binary
echo "$BIN"
