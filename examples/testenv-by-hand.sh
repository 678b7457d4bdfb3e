#!/bin/sh
# Bring up 3 testenv hosts, install a k0s cluster by hand over SSH with the k0s stand-in
# (1 controller, 2 workers), list the nodes with the machine's real kubectl, then tear down.
# Test scaffolding demo; run as root from the workspace root:  sh examples/testenv-by-hand.sh
set -eu
cargo build -q -p testenv --bins
TE=target/debug/testenv
DIR=$(mktemp -d /tmp/testenv-by-hand.XXXXXX)
cleanup() { "$TE" down --dir "$DIR"; echo "ip netns list after down: [$(ip netns list)]"; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM

"$TE" up --dir "$DIR" --hosts 3 --controllers 1
URL=$("$TE" get --dir "$DIR" binserver-url)
VER=$(tail -n1 "$DIR/k0s-versions")
ssh_to() { ip=$1; shift; ssh -i "$DIR/id_ed25519" -o UserKnownHostsFile="$DIR/known_hosts" -o BatchMode=yes "root@$ip" "$@"; }
CTRL=$("$TE" get --dir "$DIR" controller-ips | head -n1)
WORKERS=$("$TE" get --dir "$DIR" worker-ips)

# Every host downloads the stand-in from the binary server (k0s release URL layout).
for ip in $CTRL $WORKERS; do
    ssh_to "$ip" "curl -sSfLo /usr/local/bin/k0s '$URL/k0sproject/k0s/releases/download/$(echo "$VER" | sed 's/+/%2B/')/k0s-$VER-amd64' && chmod 0755 /usr/local/bin/k0s && k0s version"
done

# Controller: install the service, start it, wait for the API.
ssh_to "$CTRL" "k0s install controller --data-dir=/var/lib/k0s && systemctl start k0scontroller"
until [ "$(ssh_to "$CTRL" "k0s kubectl get --raw='/readyz'" 2>/dev/null)" = ok ]; do sleep 1; done

# Workers: one join token each, written to /etc/k0s/k0stoken, then install + start.
for ip in $WORKERS; do
    TOKEN=$(ssh_to "$CTRL" "k0s token create --role=worker --expiry=10m0s --data-dir=/var/lib/k0s")
    ssh_to "$ip" "mkdir -p /etc/k0s && umask 077 && echo '$TOKEN' > /etc/k0s/k0stoken && k0s install worker --data-dir=/var/lib/k0s --token-file=/etc/k0s/k0stoken --kubelet-extra-args=--node-ip=$ip && systemctl start k0sworker"
done

# Real kubectl on the machine, admin kubeconfig from the controller.
ssh_to "$CTRL" "k0s kubeconfig admin --data-dir=/var/lib/k0s" > "$DIR/admin.conf"
export KUBECONFIG="$DIR/admin.conf"
until [ "$(kubectl get nodes --no-headers 2>/dev/null | awk '$2=="Ready"' | wc -l)" = 2 ]; do sleep 1; done
kubectl get nodes -o wide
