//! The host-variant matrix (issue "right on real k0s"): on each kind of host the tool meets in
//! the wild, install a small cluster (1 controller + 2 workers), put a workload guarded by a
//! PodDisruptionBudget on it, upgrade k0s (which drains every worker through the budget) and
//! re-apply (nothing may change). Variants:
//!
//! * `default`: testenv's ordinary hosts;
//! * `private_net`: a second interface per host carrying the default route (`--private-net`):
//!   the detected private address must reach `k0s install` as `--node-ip` (kubelet's
//!   InternalIP), and a converged cluster must not look drifted;
//! * `no_tcp_forwarding`: sshd with `AllowTcpForwarding no`: the Kubernetes API must be
//!   reached without `direct-tcpip` channels, said once at info level;
//! * `only_bind_to_address`: `spec.api.onlyBindToAddress: true`: the API server listens only on
//!   the controller's address (nothing on 127.0.0.1), where the tool must reach it;
//! * `openrc`: hosts whose PID 1 is OpenRC (`--init openrc`): the tool's OpenRC service paths
//!   (`rc-service`, `/etc/init.d/k0s*`) and its `/etc/conf.d` environment, through install,
//!   upgrade and a final `reset`.
//!
//! * `realistic`: testenv's `--realistic` timing (nodes NotReady for a while after each kubelet
//!   start, pods Ready only after a delay, a controller's API answering only after a delay, budgets
//!   observed late), as real k0s hosts behave: every wait of the tool must hold.

mod common;

use common::cli::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use testenv::{Env, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Default,
    PrivateNet,
    NoTcpForwarding,
    /// The same hosts through the `openSSH:` transport (system ssh; `ssh -W` cannot report a
    /// refused forward when it opens, so the tool asks first).
    NoTcpForwardingOpenSsh,
    OnlyBindToAddress,
    OpenRc,
    Realistic,
}

fn workload(name: &str) -> String {
    workload_with(name, "maxUnavailable: 1")
}

fn workload_with(name: &str, budget: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}-pdb\n  namespace: default\nspec:\n  {budget}\n  selector:\n    matchLabels:\n      app: {name}\n"
    )
}

fn wait_ready_pods(kc: &Path, app: &str, n: usize) {
    common::poll::poll(
        &format!("{n} {app} pods to be Ready"),
        Duration::from_secs(60),
        Duration::from_millis(300),
        || ready_pods(kc, app).map(|v| v.len()) == Some(n),
    );
}

/// The YAML text has `key: value` (plain or double-quoted).
fn has(yaml: &str, key: &str, value: &str) -> bool {
    yaml.lines().any(|l| {
        let l = l.trim();
        l == format!("{key}: {value}") || l == format!("{key}: \"{value}\"")
    })
}

fn status_json(env: &Env, h: &testenv::Host) -> serde_json::Value {
    let out = env.exec(h, "/usr/local/bin/k0s status -o json").unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{}: {e}: {out}", h.name))
}

/// One variant's cluster (1 controller + 2 workers), installed by `apply`.
struct V {
    variant: Variant,
    // Fields drop in this order: the hosts go before the directory they live in.
    env: Env,
    _dir: tempfile::TempDir,
    cache: PathBuf,
    /// Where `--kubeconfig-out` wrote the admin kubeconfig.
    kc: PathBuf,
    /// The manifest's path and its first content.
    m: PathBuf,
    base: String,
    /// What the install printed on stderr.
    install_log: String,
}

/// A variant's whole run, in order: each case starts from where the one before left the
/// cluster.
fn run(variant: Variant) {
    let v = installed(variant);
    installed_as_the_variant_wants(&v);
    if variant == Variant::NoTcpForwarding {
        blocked_drain_without_forwarding_exits_6(&v);
    }
    upgrade_drains_every_worker_through_the_budget(&v);
    converged_reapply_changes_nothing(&v);
    if variant == Variant::OnlyBindToAddress {
        removing_a_node_goes_through_the_api(&v);
    }
    if variant == Variant::OpenRc {
        reset_through_openrc(&v);
    }
    drop(v);
}

fn installed(variant: Variant) -> V {
    let dir = tempfile::Builder::new()
        .prefix(&format!("k0sctl-variant-{variant:?}-"))
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.private_net = variant == Variant::PrivateNet;
    let no_forwarding = matches!(
        variant,
        Variant::NoTcpForwarding | Variant::NoTcpForwardingOpenSsh
    );
    o.no_tcp_forwarding = no_forwarding;
    if variant == Variant::OpenRc {
        o.init = "openrc".into();
    }
    if variant == Variant::Realistic {
        o.realistic = Some(testenv::timing::Realistic::default());
    }
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let kc = dir.path().join("admin.conf");
    let mut base = std::fs::read_to_string(&env.manifest).unwrap();
    base = base.trim_end().to_string() + "\n";
    if variant == Variant::NoTcpForwardingOpenSsh {
        base = base.replace("    ssh:\n", "    openSSH:\n");
    }
    if variant == Variant::OnlyBindToAddress {
        base += "    config:\n      spec:\n        api:\n          onlyBindToAddress: true\n";
    }
    if variant == Variant::OpenRc {
        // A service environment on every host (OpenRC: /etc/conf.d/<service>).
        base = base.replace(
            "    k0sDownloadURL:",
            "    environment:\n      TESTENV_MARK: openrc-env\n    k0sDownloadURL:",
        );
    }
    base += "  options:\n    drain:\n      gracePeriod: 5s\n";
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();

    // Install.
    let out = k0sctl(
        &cache,
        &[
            "apply",
            "-c",
            m.to_str().unwrap(),
            "--kubeconfig-out",
            kc.to_str().unwrap(),
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{variant:?}: apply failed:\n{err}");
    V {
        variant,
        env,
        _dir: dir,
        cache,
        kc,
        m,
        base,
        install_log: err,
    }
}

/// What the variant itself changes on the installed cluster (node IPs, API address, OpenRC).
fn installed_as_the_variant_wants(v: &V) {
    let V {
        variant,
        env,
        kc,
        install_log: err,
        ..
    } = v;
    let variant = *variant;
    let controller = &env.hosts[0];
    let workers: Vec<&testenv::Host> = env.hosts.iter().filter(|h| h.role == "worker").collect();
    match variant {
        Variant::PrivateNet => {
            // k0sctl's rule: the default route's interface (eth1) holds the private address;
            // every worker's recorded install args carry it as --node-ip and the kubelet
            // registered it as InternalIP.
            for w in &workers {
                let p = w.private_ip.expect("private ip").to_string();
                assert!(
                    err.contains(&format!("discovered {p} as private address")),
                    "{err}"
                );
                let args = status_json(env, w)["Args"].to_string();
                assert!(
                    args.contains(&format!("--node-ip={p}")),
                    "{}: {args}",
                    w.name
                );
                let ip = kubectl(
                    kc,
                    &[
                        "get",
                        "node",
                        &w.name,
                        "-o",
                        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
                    ],
                    None,
                );
                assert_eq!(ip.trim(), p, "{}", w.name);
            }
            let cfg = env.exec(controller, "cat /etc/k0s/k0s.yaml").unwrap();
            let p = controller.private_ip.unwrap().to_string();
            assert!(has(&cfg, "peerAddress", &p), "{cfg}");
        }
        Variant::OnlyBindToAddress => {
            let cfg = env.exec(controller, "cat /etc/k0s/k0s.yaml").unwrap();
            assert!(has(&cfg, "address", &controller.ip.to_string()), "{cfg}");
            let listening = env.exec(controller, "ss -Hltn").unwrap();
            assert!(
                listening.contains(&format!("{}:6443", controller.ip))
                    && !listening.contains("127.0.0.1:6443")
                    && !listening.contains("*:6443")
                    && !listening.contains("0.0.0.0:6443"),
                "{listening}"
            );
        }
        Variant::OpenRc => check_openrc(env),
        _ => {}
    }
}

/// Without forwarding, a budget that allows nothing still blocks the drain the same way: the
/// PodDisruptionBudget named in a drain_blocked event, exit code 6.
fn blocked_drain_without_forwarding_exits_6(v: &V) {
    let V {
        env,
        cache,
        kc,
        m,
        base,
        ..
    } = v;
    let ms = m.to_str().unwrap();
    let (old, new) = (&env.versions[0], env.versions.last().unwrap().clone());
    kubectl(
        kc,
        &["apply", "-f", "-"],
        Some(&workload_with("solid", "minAvailable: 2")),
    );
    wait_ready_pods(kc, "solid", 2);
    std::fs::write(
        m,
        base.replace(
            &format!("version: \"{old}\""),
            &format!("version: \"{new}\""),
        ) + "      timeout: 12s\n",
    )
    .unwrap();
    let out = k0sctl(cache, &["apply", "-c", ms, "--output", "json"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert_eq!(err.matches("SSH TCP forwarding is off").count(), 1, "{err}");
    let blocked: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "drain_blocked")
        .collect();
    assert!(
        blocked.iter().any(|v| v["pdb"] == "solid-pdb"),
        "{blocked:?}\n{err}"
    );
    kubectl(
        kc,
        &[
            "delete",
            "deployment/solid",
            "poddisruptionbudget/solid-pdb",
        ],
        None,
    );
}

/// Upgrade: every worker is drained through the budget (the workload never drops to zero),
/// relays (without forwarding) end with the run, no node is left cordoned.
fn upgrade_drains_every_worker_through_the_budget(v: &V) {
    let V {
        variant,
        env,
        cache,
        kc,
        m,
        base,
        ..
    } = v;
    let variant = *variant;
    let ms = m.to_str().unwrap();
    let controller = &env.hosts[0];
    let workers: Vec<&testenv::Host> = env.hosts.iter().filter(|h| h.role == "worker").collect();
    let (old, new) = (&env.versions[0], env.versions.last().unwrap().clone());
    let no_forwarding = matches!(
        variant,
        Variant::NoTcpForwarding | Variant::NoTcpForwardingOpenSsh
    );
    kubectl(kc, &["apply", "-f", "-"], Some(&workload("web")));
    wait_ready_pods(kc, "web", 2);

    std::fs::write(
        m,
        base.replace(
            &format!("version: \"{old}\""),
            &format!("version: \"{new}\""),
        ),
    )
    .unwrap();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (kc, sampling) = (kc.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut min = usize::MAX;
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                min = min.min(ready_pods(&kc, "web").map_or(usize::MAX, |v| v.len()));
                std::thread::sleep(Duration::from_millis(200));
            }
            min
        })
    };
    let out = k0sctl(cache, &["apply", "-c", ms]);
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let min = sampler.join().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{variant:?}: upgrade failed:\n{err}");
    for h in &env.hosts {
        assert_eq!(
            status_json(env, h)["Version"].as_str(),
            Some(new.as_str()),
            "{}",
            h.name
        );
    }
    for w in &workers {
        assert!(
            err.contains(&format!("drained node {}", w.name)),
            "{}: {err}",
            w.name
        );
    }
    let said = err.matches("SSH TCP forwarding is off").count();
    if no_forwarding {
        assert_eq!(said, 1, "{err}");
        assert!(err.contains("bash /dev/tcp"), "{err}");
        // No relay outlives the run (each ends with its channel).
        common::poll::poll(
            "no relay left",
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                let left = env
                    .exec(controller, "pgrep -fa '[d]ev/tcp/' || true")
                    .unwrap();
                if !left.trim().is_empty() {
                    eprintln!("relays left: {left}");
                }
                left.trim().is_empty()
            },
        );
    } else {
        assert_eq!(said, 0, "{err}");
    }
    assert!(min >= 1, "the workload dropped to {min} Ready pods");
    let unschedulable = kubectl(
        kc,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].spec.unschedulable}",
        ],
        None,
    );
    assert!(!unschedulable.contains("true"), "{unschedulable}");
    wait_ready_pods(kc, "web", 2);
}

/// Converged: nothing changes (no install-flag drift, e.g. from --node-ip).
fn converged_reapply_changes_nothing(v: &V) {
    let V { cache, m, .. } = v;
    let ms = m.to_str().unwrap();
    let out = k0sctl(cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(changes(&text(&out.stdout)), Vec::<(String, String)>::new());
}

/// Removing a node goes through the same API: worker1 marked `reset: true` is drained and
/// deleted from the API, then reset.
fn removing_a_node_goes_through_the_api(v: &V) {
    let V { cache, kc, m, .. } = v;
    let ms = m.to_str().unwrap();
    let cur = std::fs::read_to_string(m).unwrap();
    let at = cur.rfind("    k0sDownloadURL:").unwrap();
    let eol = at + cur[at..].find('\n').unwrap() + 1;
    std::fs::write(
        m,
        format!("{}    reset: true\n{}", &cur[..eol], &cur[eol..]),
    )
    .unwrap();
    let out = k0sctl(cache, &["apply", "-c", ms]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "removing worker1 failed:\n{err}");
    assert!(err.contains("drained node worker1"), "{err}");
    let nodes = kubectl(
        kc,
        &["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"],
        None,
    );
    assert_eq!(nodes.trim(), "worker0");
    wait_ready_pods(kc, "web", 2);
}

/// Reset through OpenRC: services stopped and removed, k0s gone.
fn reset_through_openrc(v: &V) {
    let V { env, cache, m, .. } = v;
    let ms = m.to_str().unwrap();
    check_openrc(env);
    let out = k0sctl(cache, &["reset", "-c", ms, "--force"]);
    assert!(out.status.success(), "reset failed:\n{}", text(&out.stderr));
    for h in &env.hosts {
        let left = env
            .exec(
                h,
                "ls /etc/init.d | grep k0s; pidof k0s; rc-status -a 2>/dev/null | grep k0s; true",
            )
            .unwrap();
        assert_eq!(left.trim(), "", "{}: {left}", h.name);
    }
}

/// OpenRC hosts: PID 1 is openrc-init, k0s runs as an OpenRC service (`/etc/init.d/k0s*`,
/// started), and the manifest's environment reached the k0s process through `/etc/conf.d`.
fn check_openrc(env: &Env) {
    for h in &env.hosts {
        let svc = if h.role == "controller" {
            "k0scontroller"
        } else {
            "k0sworker"
        };
        assert_eq!(
            env.exec(h, "cat /proc/1/comm").unwrap().trim(),
            "openrc-init"
        );
        let st = env
            .exec(h, &format!("rc-service {svc} status 2>&1; true"))
            .unwrap();
        assert!(st.contains("started"), "{}: {st}", h.name);
        let conf = env.exec(h, &format!("cat /etc/conf.d/{svc}")).unwrap();
        assert!(
            conf.contains("TESTENV_MARK=openrc-env"),
            "{}: {conf}",
            h.name
        );
        let environ = env
            .exec(
                h,
                "for p in $(pidof k0s); do tr '\\0' '\\n' < /proc/$p/environ; done",
            )
            .unwrap();
        assert!(
            environ.contains("TESTENV_MARK=openrc-env"),
            "{}: {environ}",
            h.name
        );
    }
}

#[test]
fn default_hosts() {
    run(Variant::Default);
}

#[test]
fn private_network() {
    run(Variant::PrivateNet);
}

#[test]
fn no_tcp_forwarding() {
    run(Variant::NoTcpForwarding);
}

#[test]
fn no_tcp_forwarding_openssh_transport() {
    run(Variant::NoTcpForwardingOpenSsh);
}

#[test]
fn openrc_hosts() {
    run(Variant::OpenRc);
}

#[test]
fn only_bind_to_address() {
    run(Variant::OnlyBindToAddress);
}

#[test]
fn realistic_timing() {
    run(Variant::Realistic);
}
