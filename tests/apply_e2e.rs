//! `k0sctl apply` end to end on testenv (real SSH, systemd, the k0s stand-in), checked with
//! the real `kubectl`: install from nothing, then a re-apply that changes nothing.

mod common;

use common::cli::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use testenv::{Env, Options};

fn ready_nodes(kubeconfig: &Path) -> Vec<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "nodes", "-o", "json"])
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "kubectl: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// One 3-host cluster (1 controller + 2 workers) and what the cases share.
struct Install {
    // Fields drop in this order: the hosts go before the directory they live in.
    env: Env,
    dir: tempfile::TempDir,
    cache: PathBuf,
    manifest: String,
    /// Where `--kubeconfig-out` writes the admin kubeconfig.
    kc: PathBuf,
}

#[test]
fn apply_installs_a_cluster_and_reapply_changes_nothing() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("kubectl is required (the machine image ships it)");
    }
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-apply-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let t = Install {
        cache: dir.path().join("cache"),
        manifest: env.manifest.display().to_string(),
        kc: dir.path().join("admin.conf"),
        env,
        dir,
    };
    dry_run_on_fresh_hosts_plans_and_touches_nothing(&t);
    install_joins_workers_and_reports_changes(&t);
    reapply_changes_nothing(&t);
    kubeconfig_command_names_what_was_asked(&t);
    drop(t);
}

/// Dry run on fresh hosts: a plan, and nothing on them.
fn dry_run_on_fresh_hosts_plans_and_touches_nothing(t: &Install) {
    let Install {
        env,
        cache,
        manifest,
        ..
    } = t;
    let out = k0sctl(cache, &["apply", "-c", manifest, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("dry-run: cluster state altering actions would be performed:"),
        "{plan}"
    );
    assert!(
        plan.contains("install k0s controller (the cluster's first)"),
        "{plan}"
    );
    assert_eq!(
        plan.matches("install k0s worker (join the cluster)")
            .count(),
        2,
        "{plan}"
    );
    for h in &env.hosts {
        assert_eq!(
            env.exec(h, "ls /usr/local/bin/k0s /etc/k0s 2>/dev/null | wc -l")
                .unwrap()
                .trim(),
            "0"
        );
    }
}

/// The install: the kubeconfig written 0600, the nodes Ready, the summary of changes, the k0s
/// config and the retired join tokens 0600.
fn install_joins_workers_and_reports_changes(t: &Install) {
    let Install {
        env,
        cache,
        manifest,
        kc,
        ..
    } = t;
    let out = k0sctl(
        cache,
        &[
            "apply",
            "-c",
            manifest,
            "--kubeconfig-out",
            kc.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(kc).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(ready_nodes(kc), ["worker0", "worker1"]);
    // The summary says what changed where.
    let err = text(&out.stderr);
    assert!(err.contains("==> Changes made:"), "{err}");
    let summary: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.contains("==> Changes made:"))
        .skip(1)
        .collect();
    assert_eq!(
        summary
            .iter()
            .filter(|l| l.contains("installed and started k0s worker (joined the cluster)"))
            .count(),
        2,
        "{err}"
    );
    assert_eq!(
        summary
            .iter()
            .filter(|l| l.contains(": installed k0s v"))
            .count(),
        3,
        "{err}"
    );
    assert_eq!(
        summary
            .iter()
            .filter(|l| l.contains("initialised the cluster"))
            .count(),
        1,
        "{err}"
    );
    let ctrl = &env.hosts[0];
    assert_eq!(
        env.exec(ctrl, "head -c 21 /etc/k0s/k0s.yaml").unwrap(),
        "# generated-by-k0sctl"
    );
    assert_eq!(
        env.exec(ctrl, "stat -c %a /etc/k0s/k0s.yaml")
            .unwrap()
            .trim(),
        "600"
    );
    for w in &env.hosts[1..] {
        // Tokens are retired after the join.
        assert_eq!(
            env.exec(w, "cat /etc/k0s/k0stoken").unwrap(),
            "# overwritten by k0sctl after join\n"
        );
        assert_eq!(
            env.exec(w, "stat -c %a /etc/k0s/k0stoken").unwrap().trim(),
            "600"
        );
    }
}

/// Re-apply: nothing to do; the plan says so, the event stream has no change, and no file on
/// any host changes.
fn reapply_changes_nothing(t: &Install) {
    let Install {
        env,
        cache,
        manifest,
        ..
    } = t;
    let stamp = "stat -c '%n %Y' /usr/local/bin/k0s /etc/k0s/* /etc/systemd/system/k0s*.service 2>/dev/null";
    let before: Vec<String> = env
        .hosts
        .iter()
        .map(|h| env.exec(h, stamp).unwrap())
        .collect();
    let out = k0sctl(cache, &["apply", "-c", manifest, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "dry-run: no cluster state altering actions would be performed\n"
    );
    let out = k0sctl(cache, &["apply", "-c", manifest, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The event stream: one JSON object per line, phases, and zero changes.
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "phase_start" && e["phase"] == "Gather k0s facts")
    );
    assert!(!events.iter().any(|e| e["event"] == "change"), "{events:?}");
    let summary = events.last().unwrap();
    assert_eq!(
        (
            summary["event"].as_str(),
            summary["ok"].as_bool(),
            summary["changes"].as_u64()
        ),
        (Some("summary"), Some(true), Some(0))
    );
    assert!(text(&out.stderr).contains("==> No changes"));
    let after: Vec<String> = env
        .hosts
        .iter()
        .map(|h| env.exec(h, stamp).unwrap())
        .collect();
    assert_eq!(before, after);
}

/// `k0sctl kubeconfig` gives a working kubeconfig too, with the requested names.
fn kubeconfig_command_names_what_was_asked(t: &Install) {
    let Install {
        dir,
        cache,
        manifest,
        ..
    } = t;
    let out = k0sctl(
        cache,
        &["kubeconfig", "-c", manifest, "-u", "ops", "-n", "prod"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kc2 = dir.path().join("kc2");
    std::fs::write(&kc2, &out.stdout).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["current-context"], "prod");
    assert_eq!(v["users"][0]["name"], "ops");
    assert_eq!(ready_nodes(&kc2), ["worker0", "worker1"]);
}

#[test]
fn apply_ha_controllers_and_workers() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-apply-ha-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 5);
    o.controllers = 3;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let kc = dir.path().join("admin.conf");
    let out = k0sctl(
        &cache,
        &[
            "apply",
            "-c",
            &env.manifest.display().to_string(),
            "--kubeconfig-out",
            kc.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    // With one controller running, the other two join together (k0sctl's quorum-aware
    // batches: 1 running + 2 joining keeps a majority of 3 once both are up).
    let err = text(&out.stderr);
    assert_eq!(err.matches("controller joined").count(), 2, "{err}");
    assert!(err.contains("joining 2 controllers in parallel"), "{err}");
    for h in env.hosts.iter().filter(|h| h.role == "controller") {
        assert_eq!(
            env.exec(h, "systemctl is-active k0scontroller")
                .unwrap()
                .trim(),
            "active",
            "{}",
            h.name
        );
        // Every controller's config lists every controller address in the API SANs.
        let cfg = env.exec(h, "cat /etc/k0s/k0s.yaml").unwrap();
        for c in env.hosts.iter().filter(|c| c.role == "controller") {
            assert!(cfg.contains(&c.ip.to_string()), "{}: {cfg}", h.name);
        }
    }
    assert_eq!(ready_nodes(&kc), ["worker0", "worker1"]);
    ha_is_real(&env);
}

/// `kubectl` through the API server of controller `h` itself (`localhost:6443` in its
/// namespace), with a bounded request time.
fn api_on(env: &Env, h: &testenv::Host, args: &str) -> Result<String, String> {
    env.exec(
        h,
        &format!("k0s kubectl --cache-dir=/tmp/test-kubectl-cache --request-timeout=20s {args}"),
    )
    .map_err(|e| format!("{e:#}"))
}

/// The three controllers of `env` run one real etcd cluster and each serves the API from it:
/// one controller down keeps the API answering through the others, two down lose the quorum.
fn ha_is_real(env: &Env) {
    let c: Vec<&testenv::Host> = env
        .hosts
        .iter()
        .filter(|h| h.role == "controller")
        .collect();
    assert_eq!(c.len(), 3);
    // etcd's own member list (etcdctl, not k0s): three started members, named by host.
    let list = env
        .exec(
            c[0],
            "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member list -w simple",
        )
        .unwrap();
    for h in &c {
        assert!(
            list.contains(&format!("started, {}, https://{}:2380", h.name, h.ip)),
            "{list}"
        );
    }
    assert_eq!(list.lines().count(), 3, "{list}");
    // Each controller serves the API itself: written through one, read through another.
    api_on(env, c[1], "create namespace written-on-controller1").unwrap();
    let ns = api_on(env, c[2], "get namespace written-on-controller1 -o name").unwrap();
    assert_eq!(ns.trim(), "namespace/written-on-controller1");
    // No etcd listens in the machine's own namespace.
    let ss = Command::new("ss").args(["-ltnH"]).output().unwrap();
    let ss = text(&ss.stdout);
    for h in &c {
        assert!(!ss.contains(&format!("{}:2380", h.ip)), "{ss}");
    }

    // One controller down (the first, which created the cluster): the others still answer.
    env.exec(c[0], "systemctl stop k0scontroller").unwrap();
    for h in &c[1..] {
        let nodes =
            api_on(env, h, "get nodes -o name").unwrap_or_else(|e| panic!("{}: {e}", h.name));
        assert!(nodes.contains("node/worker0"), "{}: {nodes}", h.name);
    }
    api_on(env, c[2], "create namespace written-without-controller0").unwrap();
    // Two down: no quorum, no answer.
    env.exec(c[1], "systemctl stop k0scontroller").unwrap();
    let r = api_on(env, c[2], "get namespaces -o name");
    assert!(r.is_err(), "the API answered without an etcd quorum: {r:?}");
    // Back: the API answers again, with what was written while controller0 was down.
    env.exec(c[0], "systemctl start k0scontroller").unwrap();
    env.exec(c[1], "systemctl start k0scontroller").unwrap();
    common::poll::poll(
        "the API to come back with what was written without controller0",
        std::time::Duration::from_secs(120),
        std::time::Duration::from_millis(500),
        || {
            let r = api_on(
                env,
                c[0],
                "get namespace written-without-controller0 -o name",
            );
            if let Err(e) = &r {
                eprintln!("API not back yet: {e}");
            }
            r.is_ok_and(|ns| ns.contains("written-without-controller0"))
        },
    );
}

/// A testenv of `hosts` hosts whose first host gets `role`, applied with `--kubeconfig-out`;
/// returns the environment and the kubeconfig's path.
fn apply_with_first_role(
    dir: &Path,
    name: &str,
    hosts: usize,
    role: &str,
    cache: &Path,
) -> (Env, std::path::PathBuf) {
    let env = Env::up(Options::new(dir.join(name), hosts)).expect("testenv up");
    let manifest = std::fs::read_to_string(&env.manifest).unwrap().replacen(
        "role: controller",
        &format!("role: {role}"),
        1,
    );
    let m = dir.join(format!("{name}.yaml"));
    std::fs::write(&m, manifest).unwrap();
    let kc = dir.join(format!("{name}.conf"));
    let out = k0sctl(
        cache,
        &[
            "apply",
            "-c",
            m.to_str().unwrap(),
            "--kubeconfig-out",
            kc.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    (env, kc)
}

#[test]
fn apply_controller_worker_and_single_roles() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-apply-roles-")
        .tempdir()
        .unwrap();
    let cache = dir.path().join("cache");
    let unit = |env: &Env| {
        env.exec(
            &env.hosts[0],
            "cat /etc/systemd/system/k0scontroller.service",
        )
        .unwrap()
    };

    // controller+worker: the controller is a node too.
    let (env, kc) = apply_with_first_role(dir.path(), "cw", 2, "controller+worker", &cache);
    assert_eq!(ready_nodes(&kc), ["controller0", "worker0"]);
    assert!(
        unit(&env).contains("--enable-worker=true"),
        "{}",
        unit(&env)
    );
    drop(env);

    // single: one host, kine storage, a node of its own.
    let (env, kc) = apply_with_first_role(dir.path(), "single", 1, "single", &cache);
    assert_eq!(ready_nodes(&kc), ["controller0"]);
    assert!(unit(&env).contains("--single=true"), "{}", unit(&env));
}

#[test]
fn host_locks_and_detailed_exitcode() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-apply-lock-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 2)).expect("testenv up");
    let cache = dir.path().join("cache");
    let manifest = env.manifest.display().to_string();
    let lock_exists = |i: usize| {
        env.exec(
            &env.hosts[i],
            "test -e /run/lock/k0sctl && echo yes || echo no",
        )
        .unwrap()
        .trim()
        .to_string()
    };

    // --detailed-exitcode: 9 while changes are pending.
    let out = k0sctl(
        &cache,
        &["apply", "-c", &manifest, "--dry-run", "--detailed-exitcode"],
    );
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cluster state altering actions would be performed"));

    // Another k0sctl holds the lock on the worker: refused with exit 7, the holder named,
    // nothing installed, and the lock this run took on the controller released again.
    let other = "k0sctl someone@elsewhere pid 4242 since 2026-11-22T00:00:00Z";
    env.exec(
        &env.hosts[1],
        &format!("printf '%s\\n' '{other}' > /run/lock/k0sctl"),
    )
    .unwrap();
    let out = k0sctl(&cache, &["apply", "-c", &manifest]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(other) && err.contains(&env.hosts[1].ip.to_string()),
        "{err}"
    );
    assert_eq!(lock_exists(0), "no");
    assert_eq!(
        env.exec(
            &env.hosts[0],
            "test -e /usr/local/bin/k0s && echo yes || echo no"
        )
        .unwrap()
        .trim(),
        "no"
    );
    // A dry run reports a live lock too.
    let out = k0sctl(&cache, &["apply", "-c", &manifest, "--dry-run"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    // Once not refreshed for 30 s the lock is stale and taken over; after the run no lock is left.
    env.exec(&env.hosts[1], "touch -d '-2 minutes' /run/lock/k0sctl")
        .unwrap();
    let out = k0sctl(&cache, &["apply", "-c", &manifest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        (lock_exists(0), lock_exists(1)),
        ("no".to_string(), "no".to_string())
    );

    // Converged: a detailed dry run exits 0.
    let out = k0sctl(
        &cache,
        &["apply", "-c", &manifest, "--dry-run", "--detailed-exitcode"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn additional_manifests_are_applied_once() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-apply-manifests-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 2)).expect("testenv up");
    let cache = dir.path().join("cache");
    let mut manifest = std::fs::read_to_string(&env.manifest).unwrap();
    manifest.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-settings\n  namespace: default\ndata:\n  greeting: hello\n");
    let m = dir.path().join("with-manifests.yaml");
    std::fs::write(&m, manifest).unwrap();
    let kc = dir.path().join("admin.conf");
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
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let got = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args([
            "get",
            "configmap",
            "extra-settings",
            "-o",
            "jsonpath={.data.greeting}",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&got.stdout), "hello", "{}", text(&got.stderr));
    // Applied again: kubectl says unchanged, and that is no change.
    let out = k0sctl(
        &cache,
        &["apply", "-c", m.to_str().unwrap(), "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["changes"], 0, "{}", text(&out.stdout));
}
