#!/bin/sh
# Installs what testenv needs on a bare Debian 12 machine. Idempotent; run as root.
# testenv is TEST SCAFFOLDING for k0sctl's end-to-end tests (see testenv/README.md).
set -eu
export DEBIAN_FRONTEND=noninteractive
# etcd-server/etcd-client: the stand-in controllers run real etcd members (Debian 12: etcd 3.4).
PKGS="openssh-server openssh-client sudo iproute2 util-linux systemd tar gzip curl procps binutils passwd etcd-server etcd-client"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    # Never start the packages' services in the machine's own network namespace:
    # test hosts start their own sshd inside their namespaces.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    apt-get update
    apt-get install -y --no-install-recommends $missing
    [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
# The etcd package enables etcd.service for the machine: never run it in the machine's own
# namespace (test hosts start their own members inside their namespaces; testenv also masks the
# unit for the hosts' boot).
if [ -e /lib/systemd/system/etcd.service ]; then
    systemctl disable etcd.service >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then systemctl stop etcd.service >/dev/null 2>&1 || true; fi
fi
# The package also creates an `etcd` system user. k0s creates its own `etcd` user at install and
# deletes it at reset; a user from the machine's image would make every reset change the hosts'
# /etc/passwd. The stand-in runs etcd as root, so the package's user is not needed.
if getent passwd etcd >/dev/null 2>&1 && [ "$(getent passwd etcd | cut -d: -f6)" = /var/lib/etcd/ ]; then
    userdel etcd >/dev/null 2>&1 || true
    rmdir /var/lib/etcd 2>/dev/null || true
fi
# OpenRC for `testenv up --init openrc` hosts (PID 1 = openrc-init, as on Alpine). The packages
# are NOT installed on the machine (its own init stays untouched, nothing is started): Debian's
# openrc and its two libraries are unpacked into $OPENRC_ROOT, which openrc hosts stack as an
# extra read-only layer over the machine's root. The machine's root is merged-/usr (/lib, /sbin,
# /bin are symlinks), so the unpacked /lib, /sbin, /bin move under usr/ (an overlay layer's
# directory would otherwise hide the symlink).
OPENRC_ROOT=/var/lib/testenv/openrc-root
OPENRC_PKGS="openrc libeinfo1 librc1"
if [ ! -e "$OPENRC_ROOT/.complete" ]; then
    tmp=$(mktemp -d)
    stage="$tmp/stage"
    mkdir -p "$stage"
    (cd "$tmp" && apt-get download $OPENRC_PKGS) || { apt-get update && (cd "$tmp" && apt-get download $OPENRC_PKGS); }
    for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$stage"; done
    for d in bin sbin lib; do
        if [ -d "$stage/$d" ] && [ ! -L "$stage/$d" ]; then
            mkdir -p "$stage/usr/$d"
            cp -a "$stage/$d/." "$stage/usr/$d/"
            rm -rf "${stage:?}/$d"
        fi
    done
    rm -rf "$OPENRC_ROOT"
    mkdir -p "$(dirname "$OPENRC_ROOT")"
    mv "$stage" "$OPENRC_ROOT"
    touch "$OPENRC_ROOT/.complete"
    rm -rf "$tmp"
fi
# kubectl is used by tests (real kubectl against the stand-in API server); the CI image ships it.
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl not found on PATH; kubectl-based testenv tests will be skipped" >&2
exit 0
