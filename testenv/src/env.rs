//! Test hosts in Linux namespaces: creation (`Env::up`), teardown (`down_dir`, `Env::down`, `Drop`)
//! and the files an environment writes (`k0sctl.yaml`, `hosts.json`, `id_ed25519`, `known_hosts`,
//! `k0s-versions`, `state.json`).
//!
//! Each host = its own network namespace (veth on a per-environment bridge), mount, UTS, PID and
//! cgroup namespaces, a copy-on-write overlay of the machine's root filesystem (`lowerdir=/`), and
//! systemd as PID 1 booting a minimal target that starts only journald and OpenSSH's sshd.
//!
//! Collision avoidance between concurrent environments: every environment gets a random prefix
//! (`te` + 4 hex digits) used in all namespace/bridge/veth/cgroup names, and its own /24 subnet
//! out of 10.213.0.0/16, claimed with an O_EXCL lock file in `/run/testenv/`. A /24 holds
//! `HOSTS_PER_SUBNET` hosts; a bigger environment claims one more /24 per further
//! `HOSTS_PER_SUBNET` hosts, all on the same bridge (each host has an on-link route to the
//! others), like a flat data-centre network with several subnets on one segment.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY: &str = "/run/testenv";
/// Hosts per /24: addresses `.10` to `.249` (`.1` is the machine, `.5` the bastion, `.254` the
/// gateway nobody owns).
pub const HOSTS_PER_SUBNET: usize = 240;
/// Most hosts one environment may have (its /24s all sit on one bridge).
pub const MAX_HOSTS: usize = 4 * HOSTS_PER_SUBNET;
/// Where host cgroups live on the machine and how a host mounts its cgroup filesystem:
/// cgroup v2 (pure v2 machine, or the `unified` hierarchy of a hybrid one) is preferred; a named
/// `name=systemd` v1 hierarchy is the fallback. Each host gets a sub-cgroup and a cgroup namespace.
fn cgroup_mode() -> (&'static str, &'static str) {
    let is_v2 = |p: &str| std::fs::metadata(format!("{p}/cgroup.controllers")).is_ok();
    if is_v2("/sys/fs/cgroup") {
        ("/sys/fs/cgroup/testenv", "v2")
    } else if is_v2("/sys/fs/cgroup/unified") {
        ("/sys/fs/cgroup/unified/testenv", "v2")
    } else {
        ("/sys/fs/cgroup/systemd/testenv", "v1")
    }
}
/// Default stand-in versions offered by the binary server (oldest first).
pub const DEFAULT_VERSIONS: &[&str] = &["v1.30.5+k0s.0", "v1.31.2+k0s.0"];

/// How the optional non-root user gets root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SudoMode {
    Nopasswd,
    Password,
}

/// Options for `Env::up`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Environment directory (created if missing). Must not be in use by another live environment.
    pub dir: PathBuf,
    /// Number of cluster hosts.
    pub hosts: usize,
    /// How many of them are controllers (the first ones); the rest are workers.
    pub controllers: usize,
    /// OS to present in /etc/os-release: ubuntu, debian, alpine, rhel, centos, rocky, fedora, sles.
    pub os: String,
    /// Optional non-root user with sudo.
    pub user: Option<String>,
    pub sudo: SudoMode,
    /// Add a jump host; cluster hosts then sit on an internal bridge the operator cannot reach.
    pub bastion: bool,
    /// Shape the operator→hosts direction of the bridge with tc (Mbit/s).
    pub uplink_mbit: Option<u32>,
    /// The k0s stand-in binary to stamp and serve. Default: see `find_k0s_bin`.
    pub k0s_bin: Option<PathBuf>,
    /// Versions offered by the binary server, oldest first.
    pub versions: Vec<String>,
    /// Run the binary server inside this process (library use). `testenv up` runs it as a daemon.
    pub binserver_in_process: bool,
    /// Also give hosts an RSA host key (3072 bit; slow to generate for many hosts).
    pub rsa_host_keys: bool,
    /// A second interface (`eth1`) per cluster host on a second bridge (its own /24, no address
    /// on the machine) carrying the host's default route, as on machines whose cluster traffic
    /// uses a private network: k0sctl's private-interface detection finds `eth1`, and the
    /// host's private address differs from its SSH address (`eth0`).
    pub private_net: bool,
    /// sshd with `AllowTcpForwarding no` (hardened configurations, CIS benchmarks): every
    /// `direct-tcpip` channel is refused with "administratively prohibited".
    pub no_tcp_forwarding: bool,
    /// PID 1 of the hosts: `systemd` (default) or `openrc` (OpenRC's `openrc-init`, as on
    /// Alpine; needs `install-deps.sh`'s unpacked OpenRC in [`OPENRC_ROOT`]).
    pub init: String,
    /// `--realistic`: the stand-in takes time where real k0s does (see [`crate::timing`]).
    pub realistic: Option<crate::timing::Realistic>,
}

/// Debian's `openrc`, `libeinfo1` and `librc1` unpacked (merged-/usr layout) by
/// `testenv/install-deps.sh`; `--init openrc` hosts get a copy in their own layer.
pub const OPENRC_ROOT: &str = "/var/lib/testenv/openrc-root";

impl Options {
    pub fn new(dir: impl Into<PathBuf>, hosts: usize) -> Options {
        Options {
            dir: dir.into(),
            hosts,
            controllers: 1.min(hosts),
            os: "ubuntu".into(),
            user: None,
            sudo: SudoMode::Nopasswd,
            bastion: false,
            uplink_mbit: None,
            k0s_bin: None,
            versions: DEFAULT_VERSIONS.iter().map(|s| s.to_string()).collect(),
            binserver_in_process: true,
            rsa_host_keys: false,
            private_net: false,
            no_tcp_forwarding: false,
            init: "systemd".into(),
            realistic: None,
        }
    }
}

/// One host of an environment (also the element type of `hosts.json`'s `hosts`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    /// Host name (also its hostname): controller0.., worker0.., bastion.
    pub name: String,
    /// controller | worker | bastion
    pub role: String,
    /// Address the operator (or, with a bastion, the bastion) connects to.
    pub ip: Ipv4Addr,
    pub ssh_port: u16,
    /// Network namespace name (`ip netns exec <netns> ...`).
    pub netns: String,
    /// PID (in the machine's PID namespace) of the host's PID 1 (systemd).
    pub pid: i32,
    /// Root filesystem as seen from the machine (`/proc/<pid>/root`).
    pub root: PathBuf,
    /// Address on the private network (`eth1`), with `--private-net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<Ipv4Addr>,
}

/// On-disk record of everything an environment created, written before anything is created so
/// that `down` also works after a crash of `up`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub prefix: String,
    pub dir: PathBuf,
    pub subnet: u8,
    pub inner_subnet: Option<u8>,
    pub bridge: String,
    pub inner_bridge: Option<String>,
    /// `--private-net`: the private network's /24 and bridge.
    #[serde(default)]
    pub private_subnet: Option<u8>,
    #[serde(default)]
    pub private_bridge: Option<String>,
    /// More /24s on the main bridge when there are more than `HOSTS_PER_SUBNET` hosts.
    #[serde(default)]
    pub extra_subnets: Vec<u8>,
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub hosts: Vec<Host>,
    pub binserver_pid: Option<i32>,
    pub binserver_url: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub versions: Vec<String>,
}

/// A running environment. Dropping it tears everything down (also while unwinding from a panic).
pub struct Env {
    pub dir: PathBuf,
    pub prefix: String,
    /// Cluster hosts (controllers first).
    pub hosts: Vec<Host>,
    pub bastion: Option<Host>,
    pub key_path: PathBuf,
    pub known_hosts: PathBuf,
    pub manifest: PathBuf,
    pub hosts_json: PathBuf,
    /// e.g. `http://10.213.7.1:38123` (None with a bastion: hosts cannot reach the operator).
    pub binserver_url: Option<String>,
    /// Stand-in versions offered, oldest first.
    pub versions: Vec<String>,
    /// Stamped stand-in binary per version (local paths), same order as `versions`.
    pub k0s_binaries: Vec<PathBuf>,
    /// Password of the optional sudo user.
    pub password: Option<String>,
    pub user: Option<String>,
    binserver: Option<crate::binserver::BinServer>,
    down_done: bool,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn ip_batch(netns: Option<&str>, script: &str) -> Result<()> {
    use std::io::Write;
    let mut c = Command::new("ip");
    if let Some(n) = netns {
        c.args(["-n", n]);
    }
    c.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut ch = c.spawn().context("spawn ip -batch")?;
    ch.stdin.take().unwrap().write_all(script.as_bytes())?;
    let out = ch.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -batch failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn rand_hex(n: usize) -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..n)
        .map(|_| format!("{:x}", r.random_range(0..16u8)))
        .collect()
}

/// Claim a free 10.213.N.0/24: not present on any interface or route of the machine, and not
/// claimed by another environment (O_EXCL lock file in /run/testenv).
fn claim_subnet(dir: &Path) -> Result<u8> {
    std::fs::create_dir_all(REGISTRY)?;
    let used = ip(&["-4", "addr"])? + &ip(&["-4", "route", "show", "table", "all"])?;
    for n in 1..=254u8 {
        let net = format!("10.213.{n}.");
        if used.contains(&net) {
            continue;
        }
        let lock = Path::new(REGISTRY).join(format!("subnet-{n}"));
        // A stale claim (another directory whose state file is gone, claimed more than two minutes
        // ago so it is not an environment still being set up) is reclaimed.
        if let Ok(owner) = std::fs::read_to_string(&lock) {
            let old = std::fs::metadata(&lock)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().map(|e| e.as_secs() > 120).unwrap_or(false))
                .unwrap_or(false);
            if Path::new(owner.trim()) != dir
                && old
                && !Path::new(owner.trim()).join("state.json").exists()
            {
                let _ = std::fs::remove_file(&lock);
            }
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut f) => {
                use std::io::Write;
                writeln!(f, "{}", dir.display())?;
                return Ok(n);
            }
            Err(_) => continue,
        }
    }
    bail!("no free subnet in 10.213.0.0/16")
}

fn release_subnet(n: u8, dir: &Path) {
    let lock = Path::new(REGISTRY).join(format!("subnet-{n}"));
    if let Ok(owner) = std::fs::read_to_string(&lock)
        && Path::new(owner.trim()) == dir
    {
        let _ = std::fs::remove_file(&lock);
    }
}

/// Locate the k0s stand-in binary: `$TESTENV_K0S_BIN`, else a `k0s` next to the running
/// executable, else in its parent (cargo puts integration-test executables in `target/<profile>/deps`).
pub fn find_k0s_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TESTENV_K0S_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("k0s");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "k0s stand-in binary not found next to {}: build it with `cargo build -p testenv --bins` or set TESTENV_K0S_BIN",
        exe.display()
    )
}

fn os_release(os: &str) -> Result<&'static str> {
    Ok(match os {
        "ubuntu" => {
            "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\nHOME_URL=\"https://www.ubuntu.com/\"\nUBUNTU_CODENAME=jammy\n"
        }
        "debian" => {
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n"
        }
        "alpine" => {
            "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\nHOME_URL=\"https://alpinelinux.org/\"\n"
        }
        "rhel" => {
            "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.4 (Plow)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\nPLATFORM_ID=\"platform:el9\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 9.4 (Plow)\"\n"
        }
        "centos" => {
            "NAME=\"CentOS Stream\"\nVERSION=\"9\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"9\"\nPRETTY_NAME=\"CentOS Stream 9\"\n"
        }
        "rocky" => {
            "NAME=\"Rocky Linux\"\nVERSION=\"9.4 (Blue Onyx)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\nPRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\n"
        }
        "fedora" => {
            "NAME=\"Fedora Linux\"\nVERSION=\"40 (Server Edition)\"\nID=fedora\nVERSION_ID=40\nPRETTY_NAME=\"Fedora Linux 40 (Server Edition)\"\n"
        }
        "sles" => {
            "NAME=\"SLES\"\nVERSION=\"15-SP5\"\nVERSION_ID=\"15.5\"\nPRETTY_NAME=\"SUSE Linux Enterprise Server 15 SP5\"\nID=\"sles\"\nID_LIKE=\"suse\"\n"
        }
        other => bail!(
            "unsupported --os {other:?} (ubuntu, debian, alpine, rhel, centos, rocky, fedora, sles)"
        ),
    })
}

/// Package-manager stubs for non-Debian OS personalities (the userland is always Debian's): they
/// log the call to /var/log/testenv-pkg.log and succeed.
fn pkg_stubs(os: &str) -> &'static [&'static str] {
    match os {
        "alpine" => &["apk"],
        "rhel" | "centos" | "rocky" | "fedora" => &["yum", "dnf"],
        "sles" => &["zypper"],
        _ => &[],
    }
}

const BOOT_SH: &str = r#"#!/bin/sh
# testenv host boot: runs as PID 1 of the host's PID namespace (inside its own network, mount,
# UTS and cgroup namespaces), mounts the host's root and execs systemd as PID 1.
set -e
H="$1"; NAME="$2"; INIT="${4:-systemd}"
R="$H/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$H/upper,workdir=$H/work" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
if [ "$3" = v2 ]; then
    mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
else
    mount -t tmpfs -o mode=755 tmpfs "$R/sys/fs/cgroup"
    mkdir -p "$R/sys/fs/cgroup/systemd"
    mount -t cgroup -o none,name=systemd cgroup "$R/sys/fs/cgroup/systemd"
fi
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount --rbind /dev "$R/dev"
hostname "$NAME"
cd "$R"
if [ "$INIT" = openrc ]; then
    # openrc-init as PID 1: runs the sysinit, boot and default runlevels (sshd is in default).
    exec chroot "$R" /sbin/openrc-init
fi
export container=testenv
exec chroot "$R" /lib/systemd/systemd --system --unit=testenv-host.target --log-target=journal-or-kmsg
"#;

const MASKED_UNITS: &[&str] = &[
    "systemd-modules-load.service",
    "systemd-remount-fs.service",
    "systemd-binfmt.service",
    "systemd-sysctl.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-firstboot.service",
    "systemd-pcrphase.service",
    "systemd-journal-flush.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-hwdb-update.service",
    "e2scrub_reap.service",
    "postgresql.service",
    "etcd.service",
];

const HOST_TARGET: &str = "[Unit]\nDescription=testenv host (minimal boot: journald + sshd)\nWants=ssh.service systemd-user-sessions.service\nAfter=ssh.service systemd-user-sessions.service\nAllowIsolate=yes\n";

/// An OpenRC host's own files: `rc.conf` (no container personality, the unified cgroup v2
/// layout the host already has), a `net` provider (the network is set up from outside, as a
/// container's is, and k0s's OpenRC script `need`s `net`), and sshd as an OpenRC service in
/// the default runlevel (Debian's `/etc/init.d/ssh` is an LSB script OpenRC does not run).
fn openrc_host(up: &Path) -> Result<()> {
    // The unpacked packages go into the host's own layer (an overlay refuses a second lower
    // layer that lies inside the first, `/`). About 1 MiB per host.
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{OPENRC_ROOT}/."))
        .arg(up))?;
    let _ = std::fs::remove_file(up.join(".complete"));
    // Debian's OpenRC also reads insserv's configuration (for LSB scripts); none is needed.
    write_file(&up.join("etc/insserv.conf"), b"", 0o644)?;
    write_file(
        &up.join("etc/rc.conf"),
        b"# testenv OpenRC host\nrc_sys=\"\"\nrc_cgroup_mode=\"unified\"\nrc_logger=\"NO\"\nrc_parallel=\"NO\"\n",
        0o644,
    )?;
    write_file(
        &up.join("etc/init.d/testenv-net"),
        b"#!/sbin/openrc-run\ndescription=\"network configured by testenv from outside the host\"\ndepend() {\n\tprovide net\n}\nstart() {\n\tebegin \"Network (set up by testenv)\"\n\teend 0\n}\n",
        0o755,
    )?;
    write_file(
        &up.join("etc/init.d/sshd"),
        b"#!/sbin/openrc-run\ndescription=\"OpenSSH server\"\ncommand=/usr/sbin/sshd\ncommand_args=\"-D\"\ncommand_background=yes\npidfile=/run/${RC_SVCNAME}.pid\ndepend() {\n\tuse net\n}\nstart_pre() {\n\tmkdir -p /run/sshd && chmod 0755 /run/sshd\n}\n",
        0o755,
    )?;
    let rl = up.join("etc/runlevels/default");
    std::fs::create_dir_all(&rl)?;
    for s in ["testenv-net", "sshd"] {
        let l = rl.join(s);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(format!("/etc/init.d/{s}"), &l)?;
    }
    Ok(())
}

fn host_key_types(opts: &Options) -> Vec<&'static str> {
    let mut v = vec!["ed25519", "ecdsa"];
    if opts.rsa_host_keys {
        v.push("rsa");
    }
    v
}

fn write_file(p: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(p, content).with_context(|| format!("write {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

struct PlannedHost {
    name: String,
    role: String,
    ip: Ipv4Addr,
    netns: String,
    veth: String,
    /// second interface for the bastion (inner bridge)
    inner: Option<(String, Ipv4Addr)>,
    /// `--private-net`: the host's veth on the private bridge and its address there.
    private: Option<(String, Ipv4Addr)>,
    bridge: String,
    gateway: Ipv4Addr,
}

impl Env {
    /// Bring an environment up. On error everything created so far is torn down again.
    pub fn up(opts: Options) -> Result<Env> {
        if unsafe { libc::geteuid() } != 0 {
            bail!("testenv must run as root");
        }
        if opts.hosts == 0 || opts.hosts > MAX_HOSTS {
            bail!("--hosts must be 1..={MAX_HOSTS}");
        }
        if opts.hosts > HOSTS_PER_SUBNET && (opts.bastion || opts.private_net) {
            bail!(
                "--hosts above {HOSTS_PER_SUBNET} is only supported without --bastion and --private-net"
            );
        }
        if opts.controllers > opts.hosts {
            bail!("--controllers must not exceed --hosts");
        }
        let os_rel = os_release(&opts.os)?;
        match opts.init.as_str() {
            "systemd" => {}
            "openrc" => {
                if !Path::new(OPENRC_ROOT).join(".complete").exists() {
                    bail!(
                        "--init openrc needs OpenRC unpacked in {OPENRC_ROOT}: run testenv/install-deps.sh"
                    );
                }
            }
            o => bail!("--init must be systemd or openrc, not {o:?}"),
        }
        raise_sysctls(opts.hosts);
        for v in &opts.versions {
            crate::stamp::validate_version(v)?;
        }
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("create {}", opts.dir.display()))?;
        let dir = std::fs::canonicalize(&opts.dir)?;
        if dir.join("state.json").exists() {
            bail!(
                "{} already holds an environment (run `testenv down --dir {}` first)",
                dir.display(),
                dir.display()
            );
        }
        let k0s_bin = match &opts.k0s_bin {
            Some(p) => p.clone(),
            None => find_k0s_bin()?,
        };
        let mut prefix;
        loop {
            prefix = format!("te{}", rand_hex(4));
            if !Path::new("/run/netns")
                .join(format!("{prefix}-controller0"))
                .exists()
                && !Path::new("/sys/class/net")
                    .join(format!("{prefix}br"))
                    .exists()
            {
                break;
            }
        }
        let mut st = State {
            prefix: prefix.clone(),
            dir: dir.clone(),
            versions: opts.versions.clone(),
            ..Default::default()
        };
        st.subnet = claim_subnet(&dir)?;
        for _ in 1..opts.hosts.div_ceil(HOSTS_PER_SUBNET) {
            match claim_subnet(&dir) {
                Ok(n) => st.extra_subnets.push(n),
                Err(e) => {
                    for n in std::iter::once(st.subnet).chain(st.extra_subnets.iter().copied()) {
                        release_subnet(n, &dir);
                    }
                    return Err(e);
                }
            }
        }
        st.bridge = format!("{prefix}br");
        if opts.bastion {
            match claim_subnet(&dir) {
                Ok(n) => st.inner_subnet = Some(n),
                Err(e) => {
                    release_subnet(st.subnet, &dir);
                    return Err(e);
                }
            }
            st.inner_bridge = Some(format!("{prefix}bi"));
        }
        if opts.private_net {
            match claim_subnet(&dir) {
                Ok(n) => st.private_subnet = Some(n),
                Err(e) => {
                    release_subnet(st.subnet, &dir);
                    if let Some(n) = st.inner_subnet {
                        release_subnet(n, &dir);
                    }
                    return Err(e);
                }
            }
            st.private_bridge = Some(format!("{prefix}bp"));
        }
        // Plan every name before creating anything, and record it.
        let mut planned = Vec::new();
        let outer = |i: u8| Ipv4Addr::new(10, 213, st.subnet, i);
        let cluster_net = st.inner_subnet.unwrap_or(st.subnet);
        // Host i's /24 and its last octet.
        let host_net = |i: usize| {
            let k = i / HOSTS_PER_SUBNET;
            let n = if k == 0 {
                cluster_net
            } else {
                st.extra_subnets[k - 1]
            };
            (n, 10 + (i % HOSTS_PER_SUBNET) as u8)
        };
        let cluster_bridge = st.inner_bridge.clone().unwrap_or(st.bridge.clone());
        let (mut nc, mut nw) = (0, 0);
        for i in 0..opts.hosts {
            let (name, role) = if i < opts.controllers {
                nc += 1;
                (format!("controller{}", nc - 1), "controller")
            } else {
                nw += 1;
                (format!("worker{}", nw - 1), "worker")
            };
            planned.push(PlannedHost {
                netns: format!("{prefix}-{name}"),
                veth: format!("{prefix}v{i}"),
                name,
                role: role.into(),
                ip: {
                    let (n, o) = host_net(i);
                    Ipv4Addr::new(10, 213, n, o)
                },
                inner: None,
                private: st.private_subnet.map(|n| {
                    (
                        format!("{prefix}p{i}"),
                        Ipv4Addr::new(10, 213, n, 10 + i as u8),
                    )
                }),
                bridge: cluster_bridge.clone(),
                // A gateway address nobody owns: hosts get a realistic default route, but no
                // packet can leave the bridge towards any other network.
                gateway: Ipv4Addr::new(10, 213, host_net(i).0, 254),
            });
        }
        if let Some(inner) = st.inner_subnet {
            planned.push(PlannedHost {
                name: "bastion".into(),
                role: "bastion".into(),
                ip: outer(5),
                netns: format!("{prefix}-bastion"),
                veth: format!("{prefix}vb"),
                inner: Some((format!("{prefix}vbi"), Ipv4Addr::new(10, 213, inner, 5))),
                private: None,
                bridge: st.bridge.clone(),
                gateway: outer(254),
            });
        }
        st.netns = planned.iter().map(|p| p.netns.clone()).collect();
        st.links = std::iter::once(st.bridge.clone())
            .chain(st.inner_bridge.clone())
            .chain(st.private_bridge.clone())
            .chain(planned.iter().map(|p| p.veth.clone()))
            .chain(
                planned
                    .iter()
                    .filter_map(|p| p.inner.as_ref().map(|i| i.0.clone())),
            )
            .chain(
                planned
                    .iter()
                    .filter_map(|p| p.private.as_ref().map(|i| i.0.clone())),
            )
            .collect();
        save_state(&st)?;
        std::fs::write(
            Path::new(REGISTRY).join(format!("env-{prefix}")),
            format!("{}\n", dir.display()),
        )?;
        match Self::build(&opts, &dir, &mut st, &planned, os_rel, &k0s_bin) {
            Ok(env) => Ok(env),
            Err(e) => {
                let _ = down_dir(&dir);
                Err(e)
            }
        }
    }

    fn build(
        opts: &Options,
        dir: &Path,
        st: &mut State,
        planned: &[PlannedHost],
        os_rel: &str,
        k0s_bin: &Path,
    ) -> Result<Env> {
        let bridge_ip = Ipv4Addr::new(10, 213, st.subnet, 1);
        // Network: bridges, veths, addresses.
        let mut root_batch = format!(
            "link add {} type bridge\naddr add {bridge_ip}/24 dev {}\nlink set {} up\n",
            st.bridge, st.bridge, st.bridge
        );
        for n in &st.extra_subnets {
            root_batch += &format!("addr add 10.213.{n}.1/24 dev {}\n", st.bridge);
        }
        if let Some(ib) = &st.inner_bridge {
            // The inner bridge has no address: the machine cannot reach hosts behind the bastion.
            root_batch += &format!("link add {ib} type bridge\nlink set {ib} up\n");
        }
        if let Some(pb) = &st.private_bridge {
            // Like the inner bridge, the private network has no address on the machine.
            root_batch += &format!("link add {pb} type bridge\nlink set {pb} up\n");
        }
        for p in planned {
            ip(&["netns", "add", &p.netns])?;
            root_batch += &format!(
                "link add {} type veth peer name eth0 netns {}\nlink set {} master {} up\n",
                p.veth, p.netns, p.veth, p.bridge
            );
            if let Some((iv, _)) = &p.inner {
                root_batch += &format!(
                    "link add {iv} type veth peer name eth1 netns {}\nlink set {iv} master {} up\n",
                    p.netns,
                    st.inner_bridge.as_ref().unwrap()
                );
            }
            if let Some((pv, _)) = &p.private {
                root_batch += &format!(
                    "link add {pv} type veth peer name eth1 netns {}\nlink set {pv} master {} up\n",
                    p.netns,
                    st.private_bridge.as_ref().unwrap()
                );
            }
        }
        if let Some(n) = st.inner_subnet {
            // The machine has no address on the inner bridge; make sure packets for that subnet
            // are refused locally instead of following the machine's default route.
            root_batch += &format!("route add unreachable 10.213.{n}.0/24\n");
        }
        if let Some(n) = st.private_subnet {
            root_batch += &format!("route add unreachable 10.213.{n}.0/24\n");
        }
        ip_batch(None, &root_batch)?;
        if let Some(m) = opts.uplink_mbit {
            run(Command::new("tc").args([
                "qdisc",
                "add",
                "dev",
                &st.bridge,
                "root",
                "tbf",
                "rate",
                &format!("{m}mbit"),
                "burst",
                "256kb",
                "latency",
                "100ms",
            ]))?;
        }
        for p in planned {
            let mut b = format!(
                "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\n",
                p.ip
            );
            match &p.private {
                // The default route goes over the private network (gateway `.254` that nobody
                // owns, as on the first network): k0sctl's detection (`ip route list scope
                // global`) then names eth1.
                Some((_, pip)) => {
                    let o = pip.octets();
                    b += &format!(
                        "addr add {pip}/24 dev eth1\nlink set eth1 up\nroute add default via {}.{}.{}.254 dev eth1 onlink\n",
                        o[0], o[1], o[2]
                    );
                }
                None => b += &format!("route add default via {} dev eth0 onlink\n", p.gateway),
            }
            // The environment's other /24s are on the same segment.
            for n in std::iter::once(st.subnet).chain(st.extra_subnets.iter().copied()) {
                if st.extra_subnets.is_empty() || p.ip.octets()[2] == n {
                    continue;
                }
                b += &format!("route add 10.213.{n}.0/24 dev eth0 scope link\n");
            }
            if let Some((_, iip)) = &p.inner {
                b += &format!("addr add {iip}/24 dev eth1\nlink set eth1 up\n");
            }
            ip_batch(Some(&p.netns), &b)?;
        }
        // SSH client key and known_hosts.
        let key = dir.join("id_ed25519");
        if !key.exists() {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "testenv", "-f"])
                .arg(&key))?;
        }
        let pubkey = std::fs::read_to_string(dir.join("id_ed25519.pub"))?;
        let password = opts.user.as_ref().map(|_| format!("te-{}", rand_hex(12)));
        st.user = opts.user.clone();
        st.password = password.clone();
        // /etc/hosts shared by all hosts.
        let mut etc_hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for p in planned {
            // Names resolve to the SSH address (also with `--private-net`): a kubelet without
            // `--node-ip` then registers that address, as the kubelet's own rule says.
            etc_hosts += &format!("{}\t{}\n", p.ip, p.name);
        }
        let boot = dir.join("boot.sh");
        write_file(&boot, BOOT_SH.as_bytes(), 0o755)?;
        let mut known_hosts = String::new();
        let mut keygens = Vec::new();
        // Prepare every host's upper layer, then boot them all in parallel.
        for p in planned {
            let h = dir.join("hosts").join(&p.name);
            let up = h.join("upper");
            for d in ["work", "root"] {
                std::fs::create_dir_all(h.join(d))?;
            }
            write_file(
                &up.join("etc/systemd/system/testenv-host.target"),
                HOST_TARGET.as_bytes(),
                0o644,
            )?;
            // Units that make no sense in a namespace host, or would touch the machine's global
            // kernel state (sysctl, modules, binfmt), are masked.
            for unit in MASKED_UNITS {
                let l = up.join("etc/systemd/system").join(unit);
                let _ = std::fs::remove_file(&l);
                std::os::unix::fs::symlink("/dev/null", &l)?;
            }
            // Logs in memory, small: hosts are short-lived.
            write_file(
                &up.join("etc/systemd/journald.conf.d/testenv.conf"),
                b"[Journal]\nStorage=volatile\nRuntimeMaxUse=4M\n",
                0o644,
            )?;
            write_file(
                &up.join("etc/hostname"),
                format!("{}\n", p.name).as_bytes(),
                0o644,
            )?;
            write_file(&up.join("etc/hosts"), etc_hosts.as_bytes(), 0o644)?;
            write_file(&up.join("etc/os-release"), os_rel.as_bytes(), 0o644)?;
            write_file(&up.join("usr/lib/os-release"), os_rel.as_bytes(), 0o644)?;
            write_file(
                &up.join("etc/machine-id"),
                format!("{}\n", rand_hex(32)).as_bytes(),
                0o444,
            )?;
            write_file(
                &up.join("root/.ssh/authorized_keys"),
                pubkey.as_bytes(),
                0o600,
            )?;
            // A fresh root home (Debian's skeleton), not the machine operator's shell setup.
            for f in [".bashrc", ".profile"] {
                if let Ok(c) = std::fs::read(Path::new("/etc/skel").join(f)) {
                    write_file(&up.join("root").join(f), &c, 0o644)?;
                }
            }
            // Fresh, empty state the machine may have in these places.
            std::fs::create_dir_all(up.join("var/lib/k0s").parent().unwrap())?;
            for stub in pkg_stubs(&opts.os) {
                write_file(
                    &up.join("usr/local/bin").join(stub),
                    format!("#!/bin/sh\necho \"{stub} $*\" >> /var/log/testenv-pkg.log\nexit 0\n")
                        .as_bytes(),
                    0o755,
                )?;
            }
            // The host's own keys, like a Debian install has (ed25519 and ecdsa; rsa on request:
            // RSA generation is slow on 2 cores). Clients pick different types (OpenSSH prefers
            // ed25519, Go's x/crypto ecdsa), as on real machines. Key generation runs in parallel.
            std::fs::create_dir_all(up.join("etc/ssh"))?;
            let mut conf = String::from("Port 22\n");
            for t in host_key_types(opts) {
                let hk = up.join(format!("etc/ssh/ssh_host_{t}_key"));
                conf += &format!("HostKey /etc/ssh/ssh_host_{t}_key\n");
                let ch = Command::new("ssh-keygen")
                    .args([
                        "-q",
                        "-t",
                        t,
                        "-N",
                        "",
                        "-C",
                        &format!("root@{}", p.name),
                        "-f",
                    ])
                    .arg(&hk)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("spawn ssh-keygen")?;
                keygens.push(ch);
            }
            // Only these host keys (never the machine's own); otherwise Debian's sshd defaults
            // (e.g. MaxStartups 10:30:100, which limits parallel handshakes through a bastion).
            conf += "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUseDNS no\n";
            if opts.no_tcp_forwarding {
                // This file is included before Debian's own settings: the first value wins.
                conf += "AllowTcpForwarding no\n";
            }
            write_file(
                &up.join("etc/ssh/sshd_config.d/testenv.conf"),
                conf.as_bytes(),
                0o644,
            )?;
            if opts.init == "openrc" {
                openrc_host(&up)?;
            }
            // The optional user exists on every host, the bastion included.
            if let Some(u) = &opts.user {
                add_user(&up, u, &pubkey, opts.sudo)?;
            }
        }
        for mut k in keygens {
            if !k.wait()?.success() {
                bail!("ssh-keygen failed");
            }
        }
        for p in planned {
            let up = dir.join("hosts").join(&p.name).join("upper");
            for t in host_key_types(opts) {
                let hpub =
                    std::fs::read_to_string(up.join(format!("etc/ssh/ssh_host_{t}_key.pub")))?;
                let hpub: Vec<&str> = hpub.split_whitespace().collect();
                known_hosts += &format!("{} {} {}\n", p.ip, hpub[0], hpub[1]);
                if let Some((_, iip)) = &p.inner {
                    known_hosts += &format!("{} {} {}\n", iip, hpub[0], hpub[1]);
                }
            }
        }
        write_file(&dir.join("known_hosts"), known_hosts.as_bytes(), 0o644)?;
        let mut children = Vec::new();
        for p in planned {
            let h = dir.join("hosts").join(&p.name);
            let cg = format!("{}/{}", cgroup_mode().0, p.netns);
            std::fs::create_dir_all(&cg).with_context(|| format!("create cgroup {cg}"))?;
            let log = std::fs::File::create(h.join("console.log"))?;
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "echo $$ > {cg}/cgroup.procs && exec ip netns exec {} unshare --mount --uts --pid --cgroup --fork --propagation private sh {} {} {} {} {}",
                    p.netns,
                    boot.display(),
                    h.display(),
                    p.name,
                    cgroup_mode().1,
                    opts.init
                ))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            unsafe {
                use std::os::unix::process::CommandExt;
                c.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            children.push(c.spawn().context("spawn host")?);
        }
        // Reap the launcher processes in the background (they live as long as their host).
        std::thread::spawn(move || {
            for mut c in children {
                let _ = c.wait();
            }
        });
        // Wait for every sshd banner (from the machine, or through the bastion's namespace).
        let deadline = Instant::now() + Duration::from_secs(120);
        for p in planned {
            loop {
                let ok = if st.inner_subnet.is_some() && p.role != "bastion" {
                    let bastion_ns = format!("{}-bastion", st.prefix);
                    Command::new("ip")
                        .args([
                            "netns",
                            "exec",
                            &bastion_ns,
                            "bash",
                            "-c",
                            &format!("exec 3<>/dev/tcp/{}/22 && head -c 4 <&3", p.ip),
                        ])
                        .stderr(Stdio::null())
                        .output()
                        .map(|o| o.stdout.starts_with(b"SSH-"))
                        .unwrap_or(false)
                } else {
                    ssh_banner(p.ip)
                };
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(
                        dir.join("hosts").join(&p.name).join("console.log"),
                    )
                    .unwrap_or_default();
                    bail!(
                        "host {} did not start sshd within 120 s; console: {log}",
                        p.name
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut hosts = Vec::new();
        for p in planned {
            let pid =
                pid1_of(&p.netns).with_context(|| format!("host {}: PID 1 not found", p.name))?;
            hosts.push(Host {
                name: p.name.clone(),
                role: p.role.clone(),
                ip: p.ip,
                ssh_port: 22,
                netns: p.netns.clone(),
                pid,
                root: PathBuf::from(format!("/proc/{pid}/root")),
                private_ip: p.private.as_ref().map(|x| x.1),
            });
        }
        st.hosts = hosts.clone();
        if let (Some(u), Some(pw)) = (&opts.user, &password) {
            for h in &hosts {
                host_exec(h.pid, &format!("echo '{u}:{pw}' | chpasswd"))?;
            }
        }
        if let Some(r) = &opts.realistic {
            for h in &hosts {
                r.install(Path::new(&format!("/proc/{}/root", h.pid)))?;
            }
        }
        // Stand-in binaries + binary server.
        let bin_root = dir.join("bin");
        crate::binserver::populate(&bin_root, k0s_bin, &opts.versions)?;
        let k0s_binaries: Vec<PathBuf> = opts
            .versions
            .iter()
            .map(|v| {
                bin_root
                    .join("k0sproject/k0s/releases/download")
                    .join(v)
                    .join(format!("k0s-{v}-amd64"))
            })
            .collect();
        std::fs::write(
            dir.join("k0s-versions"),
            opts.versions
                .iter()
                .map(|v| format!("{v}\n"))
                .collect::<String>(),
        )?;
        let mut binserver = None;
        if opts.binserver_in_process {
            let s = crate::binserver::BinServer::start(bin_root.clone(), (bridge_ip, 0).into())?;
            st.binserver_url = Some(format!("http://{}", s.addr));
            binserver = Some(s);
        } else {
            let port = free_port(bridge_ip)?;
            let exe = std::env::current_exe()?;
            let log = std::fs::File::create(dir.join("binserver.log"))?;
            let mut c = Command::new(exe);
            c.args(["binserver", "--root"])
                .arg(&bin_root)
                .args(["--listen", &format!("{bridge_ip}:{port}")])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            unsafe {
                use std::os::unix::process::CommandExt;
                c.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let ch = c.spawn()?;
            st.binserver_pid = Some(ch.id() as i32);
            st.binserver_url = Some(format!("http://{bridge_ip}:{port}"));
            save_state(st)?;
            let dl = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect((bridge_ip, port)).is_err() {
                if Instant::now() > dl {
                    bail!("binary server did not start");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        save_state(st)?;
        let (cluster, bastion): (Vec<Host>, Vec<Host>) =
            hosts.into_iter().partition(|h| h.role != "bastion");
        let bastion = bastion.into_iter().next();
        let env = Env {
            dir: dir.to_path_buf(),
            prefix: st.prefix.clone(),
            hosts: cluster,
            bastion,
            key_path: key,
            known_hosts: dir.join("known_hosts"),
            manifest: dir.join("k0sctl.yaml"),
            hosts_json: dir.join("hosts.json"),
            binserver_url: if st.inner_subnet.is_some() {
                None
            } else {
                st.binserver_url.clone()
            },
            versions: opts.versions.clone(),
            k0s_binaries,
            password,
            user: opts.user.clone(),
            binserver,
            down_done: false,
        };
        std::fs::write(&env.manifest, env.manifest_yaml())?;
        std::fs::write(
            &env.hosts_json,
            serde_json::to_string_pretty(&env.hosts_json_value())? + "\n",
        )?;
        Ok(env)
    }

    /// The k0sctl manifest for this environment.
    pub fn manifest_yaml(&self) -> String {
        let user = self.user.clone().unwrap_or_else(|| "root".into());
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let mut y = String::from(
            "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nmetadata:\n  name: testenv-",
        );
        y += &self.prefix;
        y += "\n  user: admin\nspec:\n  hosts:\n";
        for h in &self.hosts {
            y += &format!(
                "  - role: {}\n    ssh:\n      address: {}\n      user: {user}\n      port: {}\n      keyPath: {}\n",
                h.role,
                h.ip,
                h.ssh_port,
                q(&self.key_path.display().to_string())
            );
            y += &format!(
                "      options:\n        UserKnownHostsFile: {}\n        StrictHostKeyChecking: \"yes\"\n",
                q(&self.known_hosts.display().to_string())
            );
            if let Some(b) = &self.bastion {
                y += &format!(
                    "      bastion:\n        address: {}\n        user: root\n        port: {}\n        keyPath: {}\n",
                    b.ip,
                    b.ssh_port,
                    q(&self.key_path.display().to_string())
                );
                y += &format!(
                    "        options:\n          UserKnownHostsFile: {}\n          StrictHostKeyChecking: \"yes\"\n",
                    q(&self.known_hosts.display().to_string())
                );
            }
            match &self.binserver_url {
                Some(u) => {
                    y += &format!(
                        "    k0sDownloadURL: {}\n",
                        q(&format!(
                            "{u}/k0sproject/k0s/releases/download/%v/k0s-%v-%p"
                        ))
                    )
                }
                None => {
                    y += &format!(
                        "    k0sBinaryPath: {}\n",
                        q(&self.k0s_binaries[0].display().to_string())
                    )
                }
            }
        }
        y += &format!("  k0s:\n    version: {}\n", q(&self.versions[0]));
        y
    }

    fn hosts_json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "prefix": self.prefix,
            "dir": self.dir,
            "keyPath": self.key_path,
            "knownHosts": self.known_hosts,
            "manifest": self.manifest,
            "binserverUrl": self.binserver_url,
            "versions": self.versions,
            "k0sBinaries": self.k0s_binaries,
            "user": self.user,
            "password": self.password,
            "bastion": self.bastion,
            "hosts": self.hosts,
        })
    }

    /// `ssh` command (system OpenSSH client) preconfigured for `host`: key, known_hosts, user,
    /// and the bastion as ProxyJump when there is one. Append the remote command yourself.
    pub fn ssh_command(&self, host: &Host) -> Command {
        self.ssh_command_as(host, "root")
    }

    /// Like `ssh_command`, logging in as `user` (e.g. the `--user` account).
    pub fn ssh_command_as(&self, host: &Host, user: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-i"]).arg(&self.key_path);
        c.arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()));
        c.args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ]);
        if let Some(b) = &self.bastion {
            c.arg("-o").arg(format!(
                "ProxyCommand=ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes -W %h:%p root@{}",
                self.key_path.display(),
                self.known_hosts.display(),
                b.ip
            ));
        }
        c.arg("-p").arg(host.ssh_port.to_string());
        c.arg(format!("{user}@{}", host.ip));
        c
    }

    /// Run a shell command on `host` over SSH as root; returns stdout, fails on non-zero exit.
    pub fn ssh(&self, host: &Host, cmd: &str) -> Result<String> {
        run(self.ssh_command(host).arg(cmd)).with_context(|| format!("ssh {}: {cmd}", host.name))
    }

    /// Run a shell command inside `host` without SSH (nsenter into all its namespaces).
    pub fn exec(&self, host: &Host, cmd: &str) -> Result<String> {
        host_exec(host.pid, cmd)
    }

    /// Host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts
            .iter()
            .chain(self.bastion.iter())
            .find(|h| h.name == name)
    }

    /// Tear everything down (idempotent).
    pub fn down(&mut self) -> Result<()> {
        if self.down_done {
            return Ok(());
        }
        self.down_done = true;
        self.binserver.take();
        down_dir(&self.dir)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("testenv: teardown of {} failed: {e:#}", self.dir.display());
        }
    }
}

fn add_user(up: &Path, u: &str, pubkey: &str, sudo: SudoMode) -> Result<()> {
    let uid = 1500;
    let mut passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd += &format!("{u}:x:{uid}:{uid}::/home/{u}:/bin/bash\n");
    let mut shadow = std::fs::read_to_string("/etc/shadow")?;
    shadow += &format!("{u}:!:19000:0:99999:7:::\n");
    let mut group = std::fs::read_to_string("/etc/group")?;
    group += &format!("{u}:x:{uid}:\n");
    write_file(&up.join("etc/passwd"), passwd.as_bytes(), 0o644)?;
    write_file(&up.join("etc/shadow"), shadow.as_bytes(), 0o640)?;
    write_file(&up.join("etc/group"), group.as_bytes(), 0o644)?;
    let rule = match sudo {
        SudoMode::Nopasswd => format!("{u} ALL=(ALL:ALL) NOPASSWD:ALL\n"),
        SudoMode::Password => format!("{u} ALL=(ALL:ALL) ALL\n"),
    };
    write_file(
        &up.join("etc/sudoers.d/testenv-user"),
        rule.as_bytes(),
        0o440,
    )?;
    let home = up.join("home").join(u);
    write_file(&home.join(".ssh/authorized_keys"), pubkey.as_bytes(), 0o600)?;
    for p in [
        home.clone(),
        home.join(".ssh"),
        home.join(".ssh/authorized_keys"),
    ] {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid))?;
    }
    Ok(())
}

/// Every host runs its own systemd, which needs several inotify instances; the kernel's default
/// per-user limit (128) allows only a dozen or so hosts. Raise (never lower) the limits.
fn raise_sysctls(hosts: usize) {
    // The kernel's IPv4 neighbour (ARP) table is one table for all network namespaces, and
    // its hard limit (gc_thresh3, 1024 by default) counts every namespace's entries: the
    // machine's entry for each host, each host's for the machine and the controller, the
    // controller's for each host. Above ~240 hosts that passes 1024 and new neighbours are
    // refused ("neighbour table overflow"), so leave room for 8 entries per host.
    let neigh = (8 * hosts) as u64;
    for (k, min) in [
        ("fs/inotify/max_user_instances", 8192u64),
        ("fs/inotify/max_user_watches", 524288),
        ("net/ipv4/neigh/default/gc_thresh1", neigh / 4),
        ("net/ipv4/neigh/default/gc_thresh2", neigh / 2),
        ("net/ipv4/neigh/default/gc_thresh3", neigh),
    ] {
        let p = Path::new("/proc/sys").join(k);
        let cur: u64 = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cur < min {
            let _ = std::fs::write(&p, min.to_string());
        }
    }
}

fn ssh_banner(ip: Ipv4Addr) -> bool {
    use std::io::Read;
    let Ok(mut s) =
        std::net::TcpStream::connect_timeout(&(ip, 22).into(), Duration::from_millis(300))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut b = [0u8; 4];
    s.read_exact(&mut b).is_ok() && &b == b"SSH-"
}

fn free_port(ip: Ipv4Addr) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// PID (machine namespace) of the process that is PID 1 inside the given network namespace's host.
pub fn pid1_of(netns: &str) -> Option<i32> {
    let pids = ip(&["netns", "pids", netns]).ok()?;
    for p in pids.split_whitespace() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        if let Some(l) = status.lines().find(|l| l.starts_with("NSpid:")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 3 && f[2] == "1" {
                return p.parse().ok();
            }
        }
    }
    None
}

/// Run `cmd` with sh inside the host whose PID 1 is `pid` (all namespaces, its root and cwd).
pub fn host_exec(pid: i32, cmd: &str) -> Result<String> {
    run(Command::new("nsenter").args(["-t", &pid.to_string(), "-a", "-r", "-w", "sh", "-c", cmd]))
}

fn save_state(st: &State) -> Result<()> {
    let p = st.dir.join("state.json");
    let tmp = st.dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(st)?)?;
    std::fs::rename(tmp, p)?;
    Ok(())
}

/// Load `DIR/state.json`.
pub fn load_state(dir: &Path) -> Result<Option<State>> {
    let p = dir.join("state.json");
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_str(&std::fs::read_to_string(&p)?)
            .with_context(|| format!("parse {}", p.display()))?,
    ))
}

/// Tear down the environment recorded in `dir` (idempotent; works after a crash of `up`).
pub fn down_dir(dir: &Path) -> Result<()> {
    let dir = std::fs::canonicalize(dir).unwrap_or(dir.to_path_buf());
    let Some(st) = load_state(&dir)? else {
        return Ok(());
    };
    let mut errors = Vec::new();
    // 1. Kill every process in every host namespace (SIGKILL of a PID namespace's init kills the
    //    whole namespace; the launcher processes live in the netns too).
    // All namespaces per round, one pause per round (50 hosts go down in one or two rounds).
    let ns_pids = |ns: &str| -> Vec<i32> {
        ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let mut live: Vec<&String> = st
        .netns
        .iter()
        .filter(|ns| Path::new("/run/netns").join(ns).exists())
        .collect();
    for _ in 0..100 {
        live.retain(|ns| {
            let pids = ns_pids(ns);
            for p in &pids {
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            !pids.is_empty()
        });
        if live.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Wait until every namespace is empty before removing it.
    for ns in &st.netns {
        let dl = Instant::now() + Duration::from_secs(10);
        while !ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .trim()
            .is_empty()
            && Instant::now() < dl
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new("/run/netns").join(ns).exists()
            && let Err(e) = ip(&["netns", "del", ns])
            && Path::new("/run/netns").join(ns).exists()
        {
            errors.push(format!("{e:#}"));
        }
        let cg = PathBuf::from(format!("{}/{ns}", cgroup_mode().0));
        // A cgroup can stay busy for a moment after its last process died.
        for _ in 0..30 {
            if !cg.exists() {
                break;
            }
            remove_cgroup_tree(&cg);
            if cg.exists() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // 2. Links (veth peers vanish with their namespace; bridges must be deleted).
    for l in &st.links {
        // veth peers disappear asynchronously once their namespace is gone: only a link that
        // still exists after a failed delete is an error.
        if Path::new("/sys/class/net").join(l).exists()
            && let Err(e) = ip(&["link", "del", l])
        {
            std::thread::sleep(Duration::from_millis(200));
            if Path::new("/sys/class/net").join(l).exists() {
                errors.push(format!("{e:#}"));
            }
        }
    }
    for n in st.inner_subnet.iter().chain(st.private_subnet.iter()) {
        let _ = ip(&["route", "del", "unreachable", &format!("10.213.{n}.0/24")]);
    }
    // 3. The binary server daemon (only if it is still our process).
    if let Some(pid) = st.binserver_pid {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("binserver") {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // 4. Any mount left under the directory (there should be none: hosts mount privately).
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut ours: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(|s| s.to_string()))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let c = std::ffi::CString::new(m.clone()).unwrap();
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            errors.push(format!("umount {m}: {}", std::io::Error::last_os_error()));
        }
    }
    if !errors.is_empty() {
        bail!(
            "teardown of {} incomplete: {}",
            dir.display(),
            errors.join("; ")
        );
    }
    // 5. Host layers and bookkeeping.
    let _ = std::fs::remove_dir_all(dir.join("hosts"));
    release_subnet(st.subnet, &dir);
    for n in st
        .inner_subnet
        .iter()
        .chain(st.private_subnet.iter())
        .chain(st.extra_subnets.iter())
    {
        release_subnet(*n, &dir);
    }
    let _ = std::fs::remove_file(Path::new(REGISTRY).join(format!("env-{}", st.prefix)));
    std::fs::remove_file(dir.join("state.json"))?;
    Ok(())
}

fn remove_cgroup_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// Environments registered on this machine (prefix → dir), e.g. for `testenv down --all`.
pub fn registered_envs() -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(REGISTRY) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(p) = n.strip_prefix("env-")
                && let Ok(d) = std::fs::read_to_string(e.path())
            {
                v.push((p.to_string(), PathBuf::from(d.trim())));
            }
        }
    }
    v
}

/// Human-readable status of the environment in `dir`.
pub fn status(dir: &Path) -> Result<String> {
    let Some(st) = load_state(dir)? else {
        return Ok(format!("{}: no environment\n", dir.display()));
    };
    let mut s = format!(
        "environment {} (prefix {}, subnet 10.213.{}.0/24)\n",
        st.dir.display(),
        st.prefix,
        st.subnet
    );
    for n in &st.extra_subnets {
        s += &format!("also subnet 10.213.{n}.0/24 on the same bridge\n");
    }
    if let Some(u) = &st.binserver_url {
        s += &format!("binary server: {u}\n");
    }
    for h in &st.hosts {
        let alive = pid1_of(&h.netns).map(|p| p == h.pid).unwrap_or(false);
        let sshd = if alive {
            if ssh_banner(h.ip) {
                "ssh up"
            } else {
                "ssh unreachable from here"
            }
        } else {
            "DOWN"
        };
        s += &format!(
            "{:<14} {:<10} {:<15} pid {:<8} {}\n",
            h.name,
            h.role,
            h.ip,
            h.pid,
            if alive { sshd } else { "DOWN" }
        );
    }
    Ok(s)
}
