//! Removing nodes with `k0sctl apply`, end to end on testenv: a worker marked `reset: true` is
//! drained (its pods move, the PodDisruptionBudget holds), deleted from the API and reset; a
//! worker that vanished from the manifest (its machine stopped) is reported by every apply and
//! removed by `--prune`; re-applying changes nothing.

mod common;

use common::cli::*;

use std::path::Path;
use std::time::Duration;

use testenv::{Env, Options};

/// The manifest's host blocks (each starts with `  - role:`), and the text around them.
fn split_hosts(m: &str) -> (String, Vec<String>, String) {
    let mut head = String::new();
    let mut hosts: Vec<String> = Vec::new();
    let mut tail = String::new();
    for l in m.lines() {
        if l.starts_with("  - role:") {
            hosts.push(format!("{l}\n"));
        } else if !hosts.is_empty() && tail.is_empty() && l.starts_with("    ") {
            hosts.last_mut().unwrap().push_str(&format!("{l}\n"));
        } else if hosts.is_empty() {
            head.push_str(&format!("{l}\n"));
        } else {
            tail.push_str(&format!("{l}\n"));
        }
    }
    (head, hosts, tail)
}

fn nodes(kc: &Path) -> Vec<String> {
    let mut v: Vec<String> = kubectl(
        kc,
        &["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"],
        None,
    )
    .split_whitespace()
    .map(str::to_string)
    .collect();
    v.sort();
    v
}

fn until(what: &str, secs: u64, f: impl FnMut() -> bool) {
    common::poll::poll(
        what,
        Duration::from_secs(secs),
        Duration::from_millis(300),
        f,
    );
}

#[test]
fn reset_true_drains_and_removes_and_prune_removes_strays() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-remove-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 4)).expect("testenv up");
    let cache = dir.path().join("cache");
    let kc = dir.path().join("admin.conf");
    let (head, mut hosts, tail) = split_hosts(&std::fs::read_to_string(&env.manifest).unwrap());
    assert_eq!(hosts.len(), 4);
    // A stopped worker goes NotReady after 5 s here (the stand-in's knob, set through the
    // controller's service environment).
    hosts[0].push_str("    environment:\n      TESTENV_NODE_GRACE_SECONDS: \"5\"\n");
    let m = dir.path().join("k0sctl.yaml");
    let ms = m.to_str().unwrap();
    std::fs::write(&m, format!("{head}{}{tail}", hosts.concat())).unwrap();
    let out = k0sctl(
        &cache,
        &["apply", "-c", ms, "--kubeconfig-out", kc.to_str().unwrap()],
    );
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    assert_eq!(nodes(&kc), ["worker0", "worker1", "worker2"]);

    // Three web pods, one of them on worker2, under a budget of one away at a time.
    kubectl(&kc, &["cordon", "worker0"], None);
    kubectl(&kc, &["cordon", "worker1"], None);
    kubectl(
        &kc,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: c\n        image: nginx\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web-pdb\n  namespace: default\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app: web\n",
        ),
    );
    until("3 web pods on worker2", 60, || {
        ready_pods(&kc, "web").unwrap_or_default() == ["worker2"; 3]
    });
    kubectl(&kc, &["uncordon", "worker0"], None);
    kubectl(&kc, &["uncordon", "worker1"], None);

    // worker2 is marked reset: true; worker1 leaves the manifest and its machine stops.
    hosts[3].push_str("    reset: true\n");
    let (w1, w2) = (&env.hosts[2], &env.hosts[3]);
    env.exec(w1, "systemctl stop k0sworker").unwrap();
    until("worker1 NotReady", 60, || {
        kubectl(
            &kc,
            &[
                "get",
                "node",
                "worker1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        )
        .trim()
            != "True"
    });
    hosts.remove(2);
    std::fs::write(&m, format!("{head}{}{tail}", hosts.concat())).unwrap();

    // A dry run plans the removal and names the stray; nothing moves.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--dry-run", "--prune"]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(plan.contains("drain node worker2"), "{plan}");
    assert!(
        plan.contains("prune: node worker1 (NotReady) is not in the configuration"),
        "{plan}"
    );
    assert_eq!(nodes(&kc), ["worker0", "worker1", "worker2"]);

    // Without --prune the stray is reported, not removed.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--dry-run"]);
    assert!(
        text(&out.stderr).contains(
            "node worker1 (NotReady) is not in the configuration; `k0sctl apply --prune` removes it"
        ),
        "{}",
        text(&out.stderr)
    );

    let out = k0sctl(&cache, &["apply", "-c", ms, "--prune"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "apply --prune failed:\n{err}");
    assert_eq!(nodes(&kc), ["worker0"]);
    // The pods moved off worker2 through the budget; the host is clean.
    until("3 web pods Ready on worker0", 60, || {
        ready_pods(&kc, "web").unwrap_or_default() == ["worker0"; 3]
    });
    assert_eq!(
        env.exec(w2, "ls -d /usr/local/bin/k0s /var/lib/k0s /etc/k0s /etc/systemd/system/k0sworker.service 2>/dev/null | wc -l")
            .unwrap()
            .trim(),
        "0"
    );
    assert!(err.contains("remove them from the configuration"), "{err}");

    // Converged: the same manifest again changes nothing and reports no stray.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--prune", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("\"event\":\"change\""), "{stdout}");
    assert!(!stdout.contains("\"event\":\"stray\""), "{stdout}");
}

/// etcd's own member list on `h` (etcdctl against the controller's member): (name, peer URL).
fn etcd_members(env: &Env, h: &testenv::Host) -> Vec<(String, String)> {
    let out = env
        .exec(
            h,
            "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member list -w json",
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut m: Vec<(String, String)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["peerURLs"][0].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    m.sort();
    m
}

/// Controllers on real etcd: a controller whose member was removed by hand (etcdctl) is
/// reported by the stray check; `reset: true` takes a controller out of etcd's member list; the
/// hand-removed one, reset too, is no member any more (`peer not found`): a warning, and its
/// reset goes on.
#[test]
fn controller_removal_keeps_etcd_membership_right() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-remove-ctl-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 3;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let (head, mut hosts, tail) = split_hosts(&std::fs::read_to_string(&env.manifest).unwrap());
    let m = dir.path().join("k0sctl.yaml");
    let ms = m.to_str().unwrap();
    std::fs::write(&m, format!("{head}{}{tail}", hosts.concat())).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let (c0, c1, c2) = (&env.hosts[0], &env.hosts[1], &env.hosts[2]);
    let peer = |h: &testenv::Host| format!("https://{}:2380", h.ip);
    let member = |h: &testenv::Host| (h.name.clone(), peer(h));
    assert_eq!(etcd_members(&env, c0), [member(c0), member(c1), member(c2)]);

    // controller2's member removed by hand: the stray check names it.
    let id = env
        .exec(
            c0,
            &format!(
                "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member list | grep -F '{}' | cut -d, -f1",
                peer(c2)
            ),
        )
        .unwrap();
    // etcd refuses to remove a member while the others have been connected for less than a
    // few seconds (`unhealthy cluster`): retried.
    let remove = format!(
        "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member remove {}",
        id.trim()
    );
    let mut last = String::new();
    common::poll::poll_until_or(
        "etcd to remove the member",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || match env.exec(c0, &remove) {
            Ok(_) => Some(()),
            Err(e) => {
                last = format!("{e:#}");
                None
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}: member remove: {last}"));
    assert_eq!(etcd_members(&env, c0), [member(c0), member(c1)]);
    let out = k0sctl(&cache, &["apply", "-c", ms, "--dry-run"]);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "controller {}:22 ({}) is not an etcd member",
            c2.ip, c2.ip
        )),
        "{err}"
    );

    // controller1 and controller2 marked reset: true. controller1 leaves etcd through the
    // leader; controller2 is no member ("peer not found"): a warning, and it is reset anyway.
    hosts[1].push_str("    reset: true\n");
    hosts[2].push_str("    reset: true\n");
    std::fs::write(&m, format!("{head}{}{tail}", hosts.concat())).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "apply failed:\n{err}");
    assert_eq!(etcd_members(&env, c0), [member(c0)], "{err}");
    assert!(
        err.contains(&format!("{}:22: not an etcd member", c2.ip)),
        "{err}"
    );
    assert!(
        err.contains(&format!("peer not found: {}", peer(c2))),
        "{err}"
    );
    for h in [c1, c2] {
        assert_eq!(
            env.exec(h, "ls -d /var/lib/k0s /etc/k0s /usr/local/bin/k0s /etc/systemd/system/k0scontroller.service 2>/dev/null | wc -l")
                .unwrap()
                .trim(),
            "0",
            "{} was not reset",
            h.name
        );
    }
    // The remaining controller still serves, alone.
    let ns = env
        .exec(
            c0,
            "k0s kubectl --cache-dir=/tmp/test-kubectl-cache --request-timeout=20s get ns kube-system -o name",
        )
        .unwrap();
    assert_eq!(ns.trim(), "namespace/kube-system");
}
