#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (with the Rust toolchain) to build, run and test k0sctl,
# then builds the release binaries. Run as root: the end-to-end test environment (testenv)
# needs openssh-server, sudo, iproute2 and systemd, and creates network namespaces.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found; install the Rust toolchain (rustup, Rust >= 1.89) first" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    sh testenv/install-deps.sh
else
    echo "setup.sh: not root, skipping system packages (testenv and its tests need root)" >&2
fi
cargo build --release --workspace
echo "setup.sh: built ./target/release/k0sctl"
