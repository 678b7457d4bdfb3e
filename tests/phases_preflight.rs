//! The read-only front of the pipeline (connect, detect OS, connect.after hooks, validate)
//! against testenv hosts over real SSH, through the library.

mod common;

use common::phases::{load, opts};
use k0sctl::exit::Code;
use k0sctl::phases::{self, Manager, State};
use k0sctl::transport::ssh::SshConfig;
use testenv::{Env, Options};

fn pipeline() -> Manager {
    let mut p = phases::preflight();
    p.push(Box::new(phases::disconnect::Disconnect));
    Manager::new(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_probes_runs_hooks_and_validates() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-preflight-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let manifest = std::fs::read_to_string(&env.manifest).unwrap();
    // A connect.after hook on the first host.
    let with_hook = manifest.replacen(
        "    ssh:\n",
        "    hooks:\n      connect:\n        after:\n        - touch /tmp/connect-after-ran\n    ssh:\n",
        1,
    );
    let marker = "test -f /tmp/connect-after-ran && echo yes || echo no";

    // Dry run: everything is probed, the hook is only planned.
    let mut state = State::new(
        load(&with_hook, dir.path()),
        opts(true),
        SshConfig::parse(""),
    );
    pipeline().run(&mut state).await.expect("dry-run preflight");
    assert_eq!(state.plan.changes.len(), 1, "{:?}", state.plan.changes);
    assert!(
        state.plan.changes[0]
            .1
            .contains("run after connect hook: \"touch /tmp/connect-after-ran\"")
    );
    assert_eq!(env.exec(&env.hosts[0], marker).unwrap().trim(), "no");

    // Real run.
    let mut state = State::new(
        load(&with_hook, dir.path()),
        opts(false),
        SshConfig::parse(""),
    );
    let reports = pipeline().run(&mut state).await.expect("preflight");
    // Everything ran but the version lookup (the manifest pins the version).
    assert!(
        reports
            .iter()
            .all(|r| r.ran == (r.title != "Set k0s version")),
        "{reports:?}"
    );
    for (h, t) in state.hosts.iter().zip(&env.hosts) {
        let p = h.host.as_ref().expect("probed");
        assert_eq!(p.facts.hostname, t.name);
        assert_eq!(h.node_name().ok().as_deref(), Some(t.name.as_str()));
        assert_eq!(p.facts.os.id, "ubuntu");
        // The private address is the first address other than the one we connect to (k0sctl's
        // rule); testenv hosts have only that one, so none is discovered.
        assert!(
            p.facts.addresses.contains(&t.ip.to_string()),
            "{:?}",
            p.facts.addresses
        );
        assert_eq!(h.private_address(), None);
        assert!(p.remote.privilege().can_escalate());
        assert!(p.facts.clock_skew_secs.abs() < 5.0);
    }
    assert_eq!(env.exec(&env.hosts[0], marker).unwrap().trim(), "yes");
    assert_eq!(env.exec(&env.hosts[1], marker).unwrap().trim(), "no");

    // Two hosts claiming one node name: refused before anything changes, both named.
    let dup = manifest.replace(
        "  - role: worker\n",
        "  - role: worker\n    hostname: Same-Name\n",
    );
    let mut state = State::new(load(&dup, dir.path()), opts(false), SshConfig::parse(""));
    let e = pipeline()
        .run(&mut state)
        .await
        .expect_err("duplicate hostnames");
    assert_eq!(e.code, Code::PhaseFailed);
    assert_eq!(e.phase, "Validate hosts");
    let msg = e.to_string();
    assert!(
        msg.contains("hostname \"same-name\" is not unique"),
        "{msg}"
    );
    for w in env.hosts.iter().filter(|h| h.role == "worker") {
        assert!(msg.contains(&w.ip.to_string()), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_fails_connect_with_its_code() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-unreach-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 1)).expect("testenv up");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manifest = std::fs::read_to_string(&env.manifest).unwrap().replace(
        "  hosts:\n",
        &format!("  hosts:\n  - role: worker\n    ssh:\n      address: 127.0.0.1\n      port: {port}\n      keyPath: {}\n", env.key_path.display()),
    );
    let mut state = State::new(
        load(&manifest, dir.path()),
        opts(false),
        SshConfig::parse(""),
    );
    let e = pipeline().run(&mut state).await.expect_err("unreachable");
    assert_eq!(e.code, Code::Unreachable);
    assert_eq!(e.hosts.len(), 1, "{e}");
    assert_eq!(e.hosts[0].0, format!("127.0.0.1:{port}"));
    // The reachable host was still connected.
    assert!(state.hosts[1].remote.is_some());
}

fn with_k0s_facts() -> Manager {
    let mut p = phases::preflight();
    p.push(Box::new(phases::gather_k0s_facts::GatherK0sFacts));
    p.push(Box::new(phases::disconnect::Disconnect));
    Manager::new(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_k0s_facts_finds_running_k0s_leader_and_cluster_id() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-k0sfacts-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 2)).expect("testenv up");
    let manifest = std::fs::read_to_string(&env.manifest).unwrap();

    // Fresh hosts: nothing installed; the first controller will lead.
    let mut state = State::new(
        load(&manifest, dir.path()),
        opts(false),
        SshConfig::parse(""),
    );
    with_k0s_facts()
        .run(&mut state)
        .await
        .expect("gather on fresh hosts");
    assert!(state.hosts.iter().all(|h| {
        h.k0s
            .as_ref()
            .is_some_and(|k| k.binary_version.is_none() && k.status.is_none())
    }));
    assert_eq!(state.leader, Some(0));
    assert_eq!(state.cluster_id, None);

    // Install and start a controller by hand (as a user would have with k0sctl before).
    let url = env.binserver_url.clone().unwrap();
    let v = env.versions.last().unwrap().clone();
    let ctrl = &env.hosts[0];
    env.ssh(ctrl, &format!(
        "curl -sSfo /usr/local/bin/k0s {url}/k0sproject/k0s/releases/download/{}/k0s-{v}-amd64 && chmod 0755 /usr/local/bin/k0s && k0s install controller --data-dir=/var/lib/k0s && systemctl start k0scontroller",
        v.replace('+', "%2B")
    ))
    .unwrap();
    common::poll::poll(
        "the controller to be ready",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(500),
        || {
            env.ssh(ctrl, "k0s kubectl get --raw=/readyz")
                .is_ok_and(|o| o.trim() == "ok")
        },
    );
    let uid = env
        .ssh(
            ctrl,
            "k0s kubectl get namespace kube-system -o template={{.metadata.uid}}",
        )
        .unwrap();

    let mut state = State::new(
        load(&manifest, dir.path()),
        opts(false),
        SshConfig::parse(""),
    );
    with_k0s_facts()
        .run(&mut state)
        .await
        .expect("gather with a running controller");
    let k = state.hosts[0].k0s.as_ref().unwrap();
    assert_eq!(k.binary_version.as_ref().unwrap().to_string(), v);
    let st = k.status.as_ref().unwrap();
    assert_eq!(st.role, "controller");
    assert_eq!(st.args, ["--data-dir=/var/lib/k0s"]);
    assert_eq!(k.service.as_deref(), Some("k0scontroller"));
    assert_eq!(state.leader, Some(0));
    assert_eq!(state.cluster_id.as_deref(), Some(uid.trim()));
    assert!(state.hosts[1].k0s.as_ref().unwrap().status.is_none());

    // The manifest now claims another role for the running controller: refused.
    let changed = manifest.replacen("role: controller", "role: controller+worker", 1);
    let mut state = State::new(
        load(&changed, dir.path()),
        opts(false),
        SshConfig::parse(""),
    );
    let e = with_k0s_facts()
        .run(&mut state)
        .await
        .expect_err("role change");
    assert!(
        e.to_string().contains("role change is not supported"),
        "{e}"
    );
}
