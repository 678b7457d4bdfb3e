//! The Kubernetes room end to end on testenv: a 1 controller + 2 worker cluster installed by the
//! real apply pipeline behind a bastion (the API server is not routable from this process), a
//! kube client whose connections are SSH tunnels through the leader, and the PDB-aware drain:
//! a PDB with `maxUnavailable: 1` lets the drain finish with the pods on the other node; a PDB
//! that allows nothing is listed by `blocking_pdbs`, named by a `Blocked` event once the evictions
//! start, and makes `drain` fail with `Blocked` naming pod and PDB; the node stays
//! cordoned until `uncordon`; the evict taint goes on and off.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::phases::{load, opts};
use k0sctl::kube::{self as k, ApiEndpoint, DrainEvent, DrainOptions, EvictTaint, KubeError};
use k0sctl::phases::{self, Manager, State};
use k0sctl::transport::ssh::SshConfig;
use k0sctl::transport::{Cmd, Secret};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use testenv::{Env, Options};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

fn pdb(name: &str, app: &str, spec: serde_json::Value) -> PodDisruptionBudget {
    let mut s = spec;
    s["selector"] = json!({"matchLabels": {"app": app}});
    serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name}, "spec": s
    }))
    .unwrap()
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// (node, pod name) of the Ready pods of `app`.
async fn ready_pods(client: &kube::Client, app: &str) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let l = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap();
    l.items
        .iter()
        .filter(|p| is_ready(p))
        .map(|p| {
            (
                p.spec
                    .as_ref()
                    .unwrap()
                    .node_name
                    .clone()
                    .unwrap_or_default(),
                p.metadata.name.clone().unwrap(),
            )
        })
        .collect()
}

/// Polls until `f` is true (generous: the machine is shared).
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::poll::poll_until_async(
        what,
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let fut = f();
            async move { fut.await.then_some(()) }
        },
    )
    .await
}

type Log = Arc<Mutex<Vec<(Instant, DrainEvent)>>>;

fn recorder() -> (Log, impl Fn(&DrainEvent) + Send + Sync) {
    let log: Log = Arc::default();
    let l2 = log.clone();
    (log, move |e: &DrainEvent| {
        eprintln!("event: {e}");
        l2.lock().unwrap().push((Instant::now(), e.clone()));
    })
}

async fn unschedulable(client: &kube::Client, node: &str) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes.get(node).await.unwrap();
    n.spec.unwrap().unschedulable.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_through_the_leader_tunnel_with_pdbs() {
    // RUST_LOG=k0sctl=debug,russh=debug shows tunnels and retries when investigating.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-kube-drain-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 1;
    o.bastion = true;
    let env = Env::up(o).expect("testenv up");
    let manifest = std::fs::read_to_string(&env.manifest).unwrap();

    // Install with the real apply pipeline, keeping the connections (no final disconnect).
    let mut state = State::new(
        load(&manifest, dir.path()),
        opts(false),
        SshConfig::parse(""),
    );
    let mut pipeline = phases::apply(None);
    let last = pipeline.pop().unwrap();
    assert_eq!(last.title(), "Disconnect from hosts");
    Manager::new(pipeline).run(&mut state).await.expect("apply");
    let leader = &state.hosts[state.leader.expect("leader")];
    let p = leader.probed().unwrap();
    let kc = p
        .remote
        .run_str(Cmd::new(p.k0s_cmd("kubeconfig admin")).sudo())
        .await
        .unwrap();
    let kc = Secret::new(kc);
    let server = kc
        .expose()
        .lines()
        .find(|l| l.trim().starts_with("server:"));
    eprintln!(
        "k0s kubeconfig admin: {}",
        server.unwrap_or("(no server)").trim()
    );

    // The API server is not reachable from here: only the tunnel gets through.
    let controller_ip = env.hosts[0].ip.to_string();
    let direct = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect((controller_ip.as_str(), 6443)),
    )
    .await;
    assert!(
        !matches!(direct, Ok(Ok(_))),
        "{controller_ip}:6443 is reachable directly; the test would not prove the tunnel"
    );
    let (client, tunnels) = k::client(&p.remote, &kc, &ApiEndpoint::default())
        .await
        .expect("client");
    let v = client
        .apiserver_version()
        .await
        .expect("version via tunnel");
    assert!(v.git_version.contains("+k0s"), "{}", v.git_version);
    assert!(tunnels.opened() >= 1);
    // TLS is verified, not disabled: with another certificate as the CA the client fails.
    let field = |name: &str| {
        kc.expose()
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in the admin kubeconfig"))
    };
    let (ca, client_cert) = (
        field("certificate-authority-data:"),
        field("client-certificate-data:"),
    );
    let wrong_ca = Secret::new(kc.expose().replace(&ca, &client_cert));
    let (bad, _) = k::client(&p.remote, &wrong_ca, &ApiEndpoint::default())
        .await
        .expect("client with another CA");
    let e = bad
        .apiserver_version()
        .await
        .expect_err("server accepted under a wrong CA");
    let e = KubeError::Api {
        what: "get the API server version".into(),
        source: e,
    };
    eprintln!("wrong CA: {e}");
    assert!(e.to_string().contains("certificate"), "{e}");

    for w in ["worker0", "worker1"] {
        k::wait_node_ready(&client, w, None, Duration::from_secs(120))
            .await
            .expect("worker Ready");
        assert!(
            k::node_version(&client, w)
                .await
                .unwrap()
                .unwrap()
                .contains("+k0s")
        );
    }
    assert!(
        k::list_nodes(&client)
            .await
            .unwrap()
            .contains_key("worker1")
    );

    drain_finishes_within_a_pdb_that_allows_one(&client).await;
    blocked_drain_names_pods_and_pdb(&client).await;
    evict_taint_goes_on_and_off(&client).await;

    eprintln!("tunnels opened: {}", tunnels.opened());
    state.pool.close_all().await;
    drop(env);
}

/// Case 1, maxUnavailable: 1 — evictions are refused while one pod is away, retried, and the drain
/// finishes with the pods on the other node.
async fn drain_finishes_within_a_pdb_that_allows_one(client: &kube::Client) {
    let client = client.clone();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // 1. maxUnavailable: 1 — all three pods on worker0 (worker1 cordoned while they are
    // scheduled): evictions are refused while one pod is away, retried, and the drain
    // finishes with the pods on worker1; the workload never drops below the budget.
    assert!(k::cordon(&client, "worker1").await.unwrap());
    deps.create(&pp, &deployment("web", 3)).await.unwrap();
    pdbs.create(&pp, &pdb("web-pdb", "web", json!({"maxUnavailable": 1})))
        .await
        .unwrap();
    until("3 web pods Ready on worker0", || async {
        let p = ready_pods(&client, "web").await;
        p.len() == 3 && p.iter().all(|(n, _)| n == "worker0")
    })
    .await;
    assert!(k::uncordon(&client, "worker1").await.unwrap());
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (client, sampling) = (client.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut min = usize::MAX;
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                min = min.min(ready_pods(&client, "web").await.len());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            min
        })
    };
    let (log, cb) = recorder();
    let opts1 = DrainOptions {
        retry_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(120),
        ..DrainOptions::default()
    };
    let report = k::drain(&client, "worker0", &opts1, &cb)
        .await
        .expect("drain with maxUnavailable: 1");
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let min_ready = sampler.await.unwrap();
    let evs: Vec<DrainEvent> = log.lock().unwrap().iter().map(|(_, e)| e.clone()).collect();
    eprintln!(
        "drain 1: {} evicted in {:?}: {:?}; fewest Ready web pods seen: {min_ready}",
        report.evicted.len(),
        report.elapsed,
        report.evicted
    );
    assert!(
        min_ready >= 2,
        "the workload dropped to {min_ready} Ready pods"
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, DrainEvent::Blocked { pdb: Some(p), .. } if p == "web-pdb")),
        "no eviction was refused by web-pdb: {evs:?}"
    );
    assert!(matches!(
        &evs[0],
        DrainEvent::Cordoned { already: false, .. }
    ));
    assert!(
        evs.iter()
            .any(|e| matches!(e, DrainEvent::Warning { message, .. }
        if message == "ignoring DaemonSet-managed Pods"))
    );
    assert!(matches!(evs.last().unwrap(), DrainEvent::Done { .. }));
    assert_eq!(
        report
            .evicted
            .iter()
            .filter(|p| p.starts_with("default/web-"))
            .count(),
        3
    );
    assert!(unschedulable(&client, "worker0").await);
    until("3 web pods Ready on worker1", || async {
        let p = ready_pods(&client, "web").await;
        p.len() == 3 && p.iter().all(|(n, _)| n == "worker1")
    })
    .await;
    assert!(k::uncordon(&client, "worker0").await.unwrap());
    assert!(
        !k::uncordon(&client, "worker0").await.unwrap(),
        "idempotent"
    );
}

/// Case 2, minAvailable = replicas — nothing may go: listed, named, and the drain fails Blocked.
async fn blocked_drain_names_pods_and_pdb(client: &kube::Client) {
    let client = client.clone();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    // 2. minAvailable = replicas — nothing may go. Pods are placed on worker0 by cordoning
    // worker1 while they are scheduled.
    assert!(k::cordon(&client, "worker1").await.unwrap());
    deps.create(&pp, &deployment("solid", 2)).await.unwrap();
    pdbs.create(&pp, &pdb("solid-pdb", "solid", json!({"minAvailable": 2})))
        .await
        .unwrap();
    until("2 solid pods Ready on worker0", || async {
        let p = ready_pods(&client, "solid").await;
        p.len() == 2 && p.iter().all(|(n, _)| n == "worker0")
    })
    .await;
    k::uncordon(&client, "worker1").await.unwrap();
    until("solid-pdb allows no disruption", || async {
        let p = pdbs.get("solid-pdb").await.unwrap();
        p.status
            .is_some_and(|s| s.current_healthy == Some(2) && s.disruptions_allowed == Some(0))
    })
    .await;
    let solid: Vec<String> = ready_pods(&client, "solid")
        .await
        .into_iter()
        .map(|(_, n)| n)
        .collect();

    let blocking = k::blocking_pdbs(&client, &["worker0"]).await.unwrap();
    eprintln!("blocking: {blocking:?}");
    assert_eq!(blocking.len(), 1, "{blocking:?}");
    let b = &blocking[0];
    assert_eq!(
        (b.namespace.as_str(), b.name.as_str()),
        ("default", "solid-pdb")
    );
    assert_eq!(b.selector, "app=solid");
    assert_eq!((b.current_healthy, b.desired_healthy), (2, 2));
    let mut covered: Vec<String> = b.pods.iter().map(|(_, p)| p.clone()).collect();
    covered.sort();
    let mut want = solid.clone();
    want.sort();
    assert_eq!(covered, want);
    assert!(b.pods.iter().all(|(n, _)| n == "worker0"));
    assert!(
        b.to_string()
            .contains("2 healthy, 2 needed, 0 disruptions allowed")
    );
    // Nothing blocks worker1 (web-pdb allows one disruption).
    assert!(
        k::blocking_pdbs(&client, &["worker1"])
            .await
            .unwrap()
            .is_empty()
    );

    let (log, cb) = recorder();
    let opts2 = DrainOptions {
        retry_interval: Duration::from_secs(1),
        progress_interval: Duration::from_secs(2),
        timeout: Duration::from_secs(7),
        ..DrainOptions::default()
    };
    let start = Instant::now();
    let err = k::drain(&client, "worker0", &opts2, &cb)
        .await
        .expect_err("blocked drain");
    let took = start.elapsed();
    let log = log.lock().unwrap().clone();
    let evicting_at = log
        .iter()
        .find(|(_, e)| matches!(e, DrainEvent::Evicting { .. }))
        .expect("evicting event")
        .0;
    let blocked: Vec<_> = log
        .iter()
        .filter_map(|(t, e)| match e {
            DrainEvent::Blocked {
                pod,
                pdb,
                keep_trying_for,
                retry_every,
                ..
            } => Some((*t, pod.clone(), pdb.clone(), *keep_trying_for, *retry_every)),
            _ => None,
        })
        .collect();
    // One Blocked event per blocked pod, not one per retry.
    assert_eq!(blocked.len(), 2, "{log:?}");
    let first = &blocked[0];
    // Order, not speed: the first Blocked comes after the evictions start (the latency is
    // printed for the record, not asserted).
    let latency = first.0 - evicting_at;
    eprintln!("first Blocked event {latency:?} after the evictions started; drain took {took:?}");
    let index = |want: fn(&DrainEvent) -> bool| log.iter().position(|(_, e)| want(e));
    let evicting_i = index(|e| matches!(e, DrainEvent::Evicting { .. })).unwrap();
    let blocked_i = index(|e| matches!(e, DrainEvent::Blocked { .. })).unwrap();
    assert!(evicting_i < blocked_i, "{log:?}");
    for (_, pod, pdb, keep, every) in &blocked {
        assert!(
            solid.iter().any(|s| pod == &format!("default/{s}")),
            "{pod}"
        );
        assert_eq!(pdb.as_deref(), Some("solid-pdb"));
        assert!(keep.unwrap() <= opts2.timeout, "{keep:?}");
        assert_eq!(*every, Duration::from_secs(1));
    }
    // Progress every 2 s, not a line per retry (7 s / 1 s = 7 retries per pod).
    let progress = log
        .iter()
        .filter(|(_, e)| matches!(e, DrainEvent::Progress { .. }))
        .count();
    let ticks = (took.as_millis() / opts2.progress_interval.as_millis()) as usize;
    assert!(
        (1..=ticks + 1).contains(&progress),
        "{progress} progress events in {took:?}"
    );
    // The drain keeps trying until its timeout (a lower bound that load cannot break).
    assert!(took >= opts2.timeout, "{took:?}");
    let KubeError::Blocked(b) = &err else {
        panic!("expected Blocked, got {err}")
    };
    assert_eq!(b.node, "worker0");
    assert_eq!(b.blockers.len(), 2);
    assert_eq!(b.pdbs(), vec!["default/solid-pdb".to_string()]);
    assert!(err.is_blocked());
    let msg = err.to_string();
    eprintln!("{msg}");
    for s in &solid {
        assert!(msg.contains(&format!("pod default/{s}")), "{msg}");
    }
    for want in [
        "PodDisruptionBudget default/solid-pdb",
        "--no-drain",
        "spec.options.drain.timeout",
        "replicas",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    // The drain leaves the node cordoned; the caller restores it.
    assert!(unschedulable(&client, "worker0").await);
    assert_eq!(
        ready_pods(&client, "solid").await.len(),
        2,
        "nothing evicted"
    );
}

/// The evict taint goes on and off, idempotently, and the node is uncordoned.
async fn evict_taint_goes_on_and_off(client: &kube::Client) {
    let client = client.clone();
    // Taint helpers (what an upgrade with evictTaint does around the drain).
    let taint = EvictTaint::try_from(&k0sctl::config::model::EvictTaintOption::default()).unwrap();
    assert!(
        k::add_taint(&client, "worker0", &taint, Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !k::add_taint(&client, "worker0", &taint, Duration::from_secs(30))
            .await
            .unwrap()
    );
    let ts = k::taint_strings(&client, "worker0").await.unwrap();
    assert!(
        ts.contains(&"k0sctl.k0sproject.io/evict=true:NoExecute".to_string()),
        "{ts:?}"
    );
    assert!(k::remove_taint(&client, "worker0", &taint).await.unwrap());
    assert!(!k::remove_taint(&client, "worker0", &taint).await.unwrap());
    assert!(k::uncordon(&client, "worker0").await.unwrap());
    assert!(!unschedulable(&client, "worker0").await);
}
