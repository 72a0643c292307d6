#!/usr/bin/env bash
# Installs what building and testing Plexus needs on a fresh Debian machine (run as root).
# The Rust toolchain (1.95+, with rustfmt and clippy) is expected from rustup; Debian's own
# cargo is too old for edition 2024.
set -euo pipefail

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: run as root: the tests create network namespaces and links" >&2
        exit 1
    fi
}
need_root

# OVS-DPDK and dpdk-testpmd for the vhost-user tests (started by the tests, under temporary
# directories; the packages' own services are not used); a C++ compiler for libFuzzer, which
# the fuzz targets build (hack/fuzz.sh).
packages=(iproute2 containernetworking-plugins util-linux
    openvswitch-switch-dpdk dpdk dpdk-dev librte-net-virtio23 librte-mempool-ring23 g++)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "$0: cargo not found: install Rust 1.95 or later with rustup (https://rustup.rs)" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
