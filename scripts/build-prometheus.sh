#!/usr/bin/env bash
# Build upstream Prometheus and promtool from the Go module proxy into ~/.cache/modeldeploy/bin, once;
# later runs reuse them. Prints the prometheus binary's path. Debian's package (what the process-level
# monitoring tests use) is built without Kubernetes service discovery, which the e2e test
# (tests/e2e/test_monitoring.py: kubernetes_sd_configs) needs. Prometheus' go.mod has replace
# directives, so `go install pkg@version` refuses it: the module is downloaded and built in place.
set -euo pipefail

RELEASE="${PROMETHEUS_RELEASE:-2.54.1}"
MODULE_VERSION="v0.${RELEASE#2.}"  # Prometheus 2.x.y is the Go module version v0.x.y
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
BIN="$CACHE/bin"

if [ -x "$BIN/prometheus" ] && "$BIN/prometheus" --version 2>&1 | grep -q "version $RELEASE "; then
    echo "$BIN/prometheus"
    exit 0
fi
command -v go >/dev/null || { echo "build-prometheus: 'go' is required to build Prometheus" >&2; exit 1; }

mkdir -p "$BIN"
STAGE="$(mktemp -d "$CACHE/.prometheus-build.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
echo "build-prometheus: building github.com/prometheus/prometheus@$MODULE_VERSION (first run takes minutes)" >&2
SOURCE="$(go mod download -json "github.com/prometheus/prometheus@$MODULE_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
(cd "$SOURCE" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$RELEASE" \
    -o "$STAGE/" ./cmd/prometheus ./cmd/promtool) >&2
mv -f "$STAGE/prometheus" "$STAGE/promtool" "$BIN/"
echo "$BIN/prometheus"
