#!/usr/bin/env bash
# Build the MinIO server (a real S3-compatible store, for the S3 fetch tests) from the Go
# module proxy into ~/.cache/modeldeploy/minio-<version>/, once; later runs reuse it.
# Prints the binary's path. MinIO publishes no semver tags on the module proxy, so we pin
# the pseudo-version of its last commit; its go.mod has no replace directives, so
# `go install` builds it directly, static (CGO_ENABLED=0, as MinIO releases are) so that it also
# runs alone in a scratch image (devcluster/images.py).
set -euo pipefail

VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
DIR="$CACHE/minio-$VERSION"

if [ -x "$DIR/minio" ]; then
    echo "$DIR/minio"
    exit 0
fi
command -v go >/dev/null || { echo "build-minio: 'go' (>= 1.24) is required to build MinIO" >&2; exit 1; }

mkdir -p "$CACHE"
STAGE="$(mktemp -d "$CACHE/.minio-build.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
echo "build-minio: building github.com/minio/minio@$VERSION (first run takes a few minutes)" >&2
CGO_ENABLED=0 GOBIN="$STAGE" GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$VERSION" >&2
mv -T "$STAGE" "$DIR" 2>/dev/null || [ -x "$DIR/minio" ]  # another build may have won the race
echo "$DIR/minio"
