#!/usr/bin/env bash
# Debian packages the real node and the image builds need (containerd, runc, CNI plugins,
# iptables/conntrack for kube-proxy, buildah + debootstrap for the images, gcc + libc6-dev for
# the static pause binary), and prometheus (with promtool) for the monitoring tests. Idempotent:
# installs only what is missing (apt-get update first), so a prepared machine pays nothing.
# Needs root only when something is missing.
set -euo pipefail

PACKAGES=(buildah debootstrap containerd runc containernetworking-plugins iptables conntrack gcc libc6-dev prometheus)

if ! command -v dpkg-query >/dev/null; then
    echo "install-node-packages: not a Debian machine; install by hand: ${PACKAGES[*]}" >&2
    exit 0
fi
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-node-packages: run as root to apt-get install: ${missing[*]}" >&2
    exit 1
fi
echo "install-node-packages: apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
