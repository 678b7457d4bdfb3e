#!/usr/bin/env bash
# A walk-through a newcomer can run on one machine (as root, after ./setup.sh):
# three test hosts in Linux namespaces (testenv: real sshd + systemd, and a k0s stand-in —
# test scaffolding, not real k0s), a cluster installed with `k0sctl apply`, and real kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
[ -x "$BIN/k0sctl" ] || BIN=target/debug
DIR=${DIR:-/tmp/k0sctl-walkthrough}

"$BIN/testenv" down --dir "$DIR" >/dev/null 2>&1 || true
trap '"$BIN/testenv" down --dir "$DIR"' EXIT

echo "== testenv up: 1 controller + 2 workers"
"$BIN/testenv" up --dir "$DIR" --hosts 3
echo "== the manifest testenv wrote"
cat "$DIR/k0sctl.yaml"

echo "== k0sctl apply --dry-run (what would change)"
"$BIN/k0sctl" apply -c "$DIR/k0sctl.yaml" --dry-run

echo "== k0sctl apply"
"$BIN/k0sctl" apply -c "$DIR/k0sctl.yaml"

echo "== k0sctl kubeconfig > $DIR/admin.conf"
umask 077
"$BIN/k0sctl" kubeconfig -c "$DIR/k0sctl.yaml" > "$DIR/admin.conf"

echo "== kubectl get nodes"
kubectl --kubeconfig "$DIR/admin.conf" get nodes

echo "== k0sctl apply again: nothing to do"
"$BIN/k0sctl" apply -c "$DIR/k0sctl.yaml" --dry-run
