//! End to end on testenv, where the k0s stand-in behaves like real k0s in ways our tool once
//! got wrong (each step fails without the matching fix):
//! * k0s v1.35.1 decodes the worker's join-token file at every start: after the join the tool
//!   leaves a valid dummy token there, and repairs a file an earlier run overwrote with a
//!   comment, so the worker restarts;
//! * k0s records install flags in pflag's rendering (`-l kubelet=2` → every component's level
//!   under `--logging`, `--labels` sorted from v1.34): a converged cluster is not reinstalled;
//! * a pre-release's kubelet reports the Kubernetes version without `-rc.N`
//!   (`v1.36.3+k0s` for k0s `v1.36.3-rc.0+k0s.0`): the upgrade's Ready wait accepts it.

mod common;

use common::cli::*;

use std::time::Duration;

use common::poll::{poll, poll_until};

use testenv::{Env, Options};

const LONG: Duration = Duration::from_secs(90);

fn status(env: &Env, h: &testenv::Host) -> Option<serde_json::Value> {
    let out = env.exec(h, "/usr/local/bin/k0s status -o json").ok()?;
    serde_json::from_str(&out).ok()
}

fn node_json(env: &Env, name: &str) -> serde_json::Value {
    let c = env.hosts.iter().find(|h| h.role == "controller").unwrap();
    let out = env
        .exec(
            c,
            &format!("/usr/local/bin/k0s kubectl get node {name} -o json"),
        )
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

fn main_pid(env: &Env, w: &testenv::Host) -> String {
    env.exec(w, "systemctl show -p MainPID --value k0sworker")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// How often systemd had to restart the worker's service because its k0s exited by itself.
fn auto_restarts(env: &Env, w: &testenv::Host) -> u64 {
    env.exec(w, "systemctl show -p NRestarts --value k0sworker")
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Restarts the worker's service and waits (bounded) until k0s runs again under a new PID and
/// answers `k0s status`, and still runs under that PID a moment later (a worker that cannot
/// start exits before its status socket answers).
fn restart_worker_and_wait(env: &Env, w: &testenv::Host) {
    let pid_before = main_pid(env, w);
    env.exec(w, "systemctl restart k0sworker").unwrap();
    poll_until(
        "k0sworker to run again under a new PID",
        LONG,
        Duration::from_secs(1),
        || {
            let pid = main_pid(env, w);
            if pid == "0" || pid == pid_before || status(env, w).is_none() {
                return None;
            }
            std::thread::sleep(Duration::from_secs(3));
            (main_pid(env, w) == pid).then_some(())
        },
    );
}

/// Restarts the worker's service and waits (bounded) until its k0s has refused to start: the
/// new process exited by itself (systemd counts an automatic restart) without its status
/// socket ever answering, and the journal holds k0s's reason.
fn restart_worker_expecting_refusal(env: &Env, w: &testenv::Host) -> String {
    let restarts = auto_restarts(env, w);
    env.exec(w, "systemctl restart k0sworker").unwrap();
    poll(
        "k0sworker to exit by itself after the restart",
        LONG,
        Duration::from_secs(1),
        || auto_restarts(env, w) > restarts,
    );
    assert!(status(env, w).is_none(), "k0s answers its status socket");
    env.exec(w, "journalctl -u k0sworker --no-pager -n 50")
        .unwrap_or_default()
}

#[test]
fn v1_35_1_token_file_recorded_flags_and_a_prerelease_upgrade() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-realk0s-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 2);
    o.versions = vec![
        testenv::stamp::TOKEN_AT_EVERY_START_VERSION.to_string(),
        testenv::stamp::PRERELEASE_VERSION.to_string(),
    ];
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let w = env.hosts.iter().find(|h| h.role == "worker").unwrap();
    // Flags that k0s records differently from how they are written.
    let base: String = std::fs::read_to_string(&env.manifest)
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start() == "- role: worker" {
                format!("{l}\n    installFlags:\n    - -l kubelet=2\n    - --labels=zz.example/b=1,aa.example/a=2\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(base.contains("installFlags"), "{base}");
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    // The stand-in records the flags as k0s v1.35 does.
    let st = status(&env, w).expect("k0s status on the worker");
    let args: Vec<String> = serde_json::from_value(st["Args"].clone()).unwrap();
    assert!(
        args.contains(&"--labels=aa.example/a=2,zz.example/b=1".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--logging=containerd=info,etcd=info,konnectivity-server=1,kube-apiserver=1,kube-controller-manager=1,kube-scheduler=1,kubelet=2".to_string()),
        "{args:?}"
    );
    // Converged: the next apply changes nothing (no reinstall for a false flag drift).
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        changes(&text(&out.stdout)),
        Vec::<(String, String)>::new(),
        "{}",
        text(&out.stderr)
    );

    // v1.35.1: the token file holds a decodable token after the join, so the worker restarts.
    let tok = env.exec(w, "cat /etc/k0s/k0stoken").unwrap();
    assert!(
        !tok.trim().is_empty() && !tok.starts_with('#'),
        "token file after the join: {tok:?}"
    );
    restart_worker_and_wait(&env, w);
    // With a comment in the file (what the tool wrote after a join before), a v1.35.1
    // worker cannot start, as real k0s v1.35.1 …
    let comment = "printf '# overwritten by k0sctl after join\\n' > /etc/k0s/k0stoken";
    env.exec(w, comment).unwrap();
    let log = restart_worker_expecting_refusal(&env, w);
    assert!(log.contains("failed to decode join token"), "{log}");
    env.exec(
        w,
        &format!("printf '%s' '{}' > /etc/k0s/k0stoken", tok.trim()),
    )
    .unwrap();
    restart_worker_and_wait(&env, w);
    // … so apply repairs such a file on a running v1.35.1 worker.
    env.exec(w, comment).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ch = changes(&text(&out.stdout));
    assert!(
        ch.iter().any(|(_, a)| a.contains("dummy join token")),
        "{ch:?}\n{}",
        text(&out.stderr)
    );
    restart_worker_and_wait(&env, w);

    // Upgrade to a pre-release: its kubelet reports v1.36.3+k0s.
    let (old, new) = (&env.versions[0], &env.versions[1]);
    std::fs::write(
        &m,
        base.replace(
            &format!("version: \"{old}\""),
            &format!("version: \"{new}\""),
        ),
    )
    .unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(
        out.status.success(),
        "upgrade failed:\n{}",
        text(&out.stderr)
    );
    for h in &env.hosts {
        assert_eq!(
            status(&env, h).unwrap()["Version"].as_str(),
            Some(new.as_str())
        );
    }
    let node = node_json(&env, &w.name);
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.36.3+k0s");
    let c = env.hosts.iter().find(|h| h.role == "controller").unwrap();
    let v = env
        .exec(c, "/usr/local/bin/k0s kubectl get --raw /version")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["gitVersion"], "v1.36.3+k0s");
}

mod pdb {
    //! PodDisruptionBudgets as Kubernetes evaluates them, through the tool's drain: `{}`
    //! selects every pod of its namespace; a budget whose spec the disruption controller has
    //! not observed yet refuses evictions with 429 "still being processed" (retried); several
    //! budgets over one pod make the eviction API answer 500, and the tool names them; a
    //! Pending pod is not blocked by its budget; a PATCH with a stale resourceVersion is a 409.

    use super::common::phases::{load, opts};
    use k0sctl::kube::{self as k, ApiEndpoint, DrainEvent, DrainOptions, KubeError};
    use k0sctl::phases::{self, Manager, State};
    use k0sctl::transport::ssh::SshConfig;
    use k0sctl::transport::{Cmd, Secret};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use serde_json::json;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
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

    fn budget(name: &str, spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    }

    async fn until<F, Fut>(what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::common::poll::poll_until_async(
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

    /// (node, phase, ready) of the pods of `app` in `ns` that are not terminating.
    async fn pods(client: &kube::Client, ns: &str, app: &str) -> Vec<(String, String, bool)> {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let l = api
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap();
        l.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let st = p.status.clone().unwrap_or_default();
                let ready = st
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    st.phase.unwrap_or_default(),
                    ready,
                )
            })
            .collect()
    }

    async fn observed(api: &Api<PodDisruptionBudget>, name: &str, allowed: i32) -> bool {
        let b = api.get(name).await.unwrap();
        let generation = b.metadata.generation.unwrap_or(1);
        b.status.is_some_and(|s| {
            s.observed_generation.unwrap_or(0) >= generation
                && s.disruptions_allowed == Some(allowed)
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pdbs_are_evaluated_as_kubernetes_does() {
        let dir = tempfile::Builder::new()
            .prefix("k0sctl-realk0s-pdb-")
            .tempdir()
            .unwrap();
        let mut o = Options::new(dir.path().join("env"), 3);
        o.controllers = 1;
        let env = Env::up(o).expect("testenv up");
        let manifest = std::fs::read_to_string(&env.manifest).unwrap();
        let mut state = State::new(
            load(&manifest, dir.path()),
            opts(false),
            SshConfig::parse(""),
        );
        let mut pipeline = phases::apply(None);
        pipeline.pop();
        Manager::new(pipeline).run(&mut state).await.expect("apply");
        let leader = &state.hosts[state.leader.expect("leader")];
        let p = leader.probed().unwrap();
        let kc = p
            .remote
            .run_str(Cmd::new(p.k0s_cmd("kubeconfig admin")).sudo())
            .await
            .unwrap();
        let (client, _tunnels) = k::client(&p.remote, &Secret::new(kc), &ApiEndpoint::default())
            .await
            .expect("client");
        for w in ["worker0", "worker1"] {
            k::wait_node_ready(&client, w, None, Duration::from_secs(120))
                .await
                .expect("worker Ready");
        }
        // The disruption controller observes a budget's spec 4 s after it changed.
        let controller = env.hosts.iter().find(|h| h.role == "controller").unwrap();
        env.exec(
            controller,
            "echo TESTENV_PDB_SYNC_SECONDS=4 > /etc/testenv-k0s.env",
        )
        .unwrap();
        let pp = PostParams::default();
        let nss: Api<Namespace> = Api::all(client.clone());
        for ns in ["guarded", "slow"] {
            nss.create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        }
        let deps: Api<Deployment> = Api::namespaced(client.clone(), "guarded");
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "guarded");
        let fast = DrainOptions {
            retry_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(6),
            ..DrainOptions::default()
        };

        // 1. `selector: {}` covers every pod of its namespace.
        k::cordon(&client, "worker1").await.unwrap();
        deps.create(&pp, &deployment("app", 2)).await.unwrap();
        pdbs.create(
            &pp,
            &budget("all", json!({"selector": {}, "minAvailable": 2})),
        )
        .await
        .unwrap();
        until("2 app pods Ready on worker0", || async {
            let p = pods(&client, "guarded", "app").await;
            p.len() == 2 && p.iter().all(|(n, _, r)| n == "worker0" && *r)
        })
        .await;
        until("budget `all` observed, allowing nothing", || {
            observed(&pdbs, "all", 0)
        })
        .await;
        k::uncordon(&client, "worker1").await.unwrap();
        let blocking = k::blocking_pdbs(&client, &["worker0"]).await.unwrap();
        let all = blocking
            .iter()
            .find(|b| b.namespace == "guarded" && b.name == "all")
            .unwrap_or_else(|| panic!("`{{}}` budget not listed as blocking: {blocking:?}"));
        assert_eq!(all.pods.len(), 2, "{all}");
        match k::drain(&client, "worker0", &fast, &|_: &DrainEvent| {}).await {
            Err(KubeError::Blocked(b)) => assert_eq!(b.pdbs(), ["guarded/all"]),
            other => panic!("drain was not blocked by the `{{}}` budget: {other:?}"),
        }
        k::uncordon(&client, "worker0").await.unwrap();
        pdbs.delete("all", &DeleteParams::default()).await.unwrap();

        // 2. A budget the disruption controller has not observed yet: 429 "still being
        // processed", retried until it is; then the drain goes through.
        pdbs.create(
            &pp,
            &budget(
                "late",
                json!({"selector": {"matchLabels": {"app": "app"}}, "maxUnavailable": 1}),
            ),
        )
        .await
        .unwrap();
        let log: Arc<Mutex<Vec<DrainEvent>>> = Arc::default();
        let l2 = log.clone();
        let cb = move |e: &DrainEvent| l2.lock().unwrap().push(e.clone());
        let slow_ok = DrainOptions {
            retry_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(90),
            ..DrainOptions::default()
        };
        k::drain(&client, "worker0", &slow_ok, &cb)
            .await
            .expect("drain once the budget is observed");
        let evs = log.lock().unwrap().clone();
        assert!(
            evs.iter().any(
                |e| matches!(e, DrainEvent::Blocked { pdb: Some(p), message, .. }
                if p == "late" && message.contains("still being processed"))
            ),
            "{evs:?}"
        );
        until("2 app pods Ready on worker1", || async {
            let p = pods(&client, "guarded", "app").await;
            p.len() == 2 && p.iter().all(|(n, _, r)| n == "worker1" && *r)
        })
        .await;

        // 3. Two budgets over the same pods: the eviction API answers 500; both are named.
        pdbs.create(
            &pp,
            &budget(
                "also",
                json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, "maxUnavailable": 1}),
            ),
        )
        .await
        .unwrap();
        until("budget `also` observed", || observed(&pdbs, "also", 1)).await;
        let e = k::drain(&client, "worker1", &fast, &|_: &DrainEvent| {})
            .await
            .expect_err("eviction with two budgets");
        let msg = e.to_string();
        assert!(
            msg.contains("more than one PodDisruptionBudget")
                && msg.contains("late")
                && msg.contains("also"),
            "{msg}"
        );
        k::uncordon(&client, "worker0").await.unwrap();
        k::uncordon(&client, "worker1").await.unwrap();

        // 4. A Pending pod (its containers not started yet) is not blocked by its budget.
        env.exec(
            controller,
            "echo TESTENV_POD_READY_DELAY_SECONDS=3600 >> /etc/testenv-k0s.env",
        )
        .unwrap();
        k::cordon(&client, "worker1").await.unwrap();
        let sdeps: Api<Deployment> = Api::namespaced(client.clone(), "slow");
        let spdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "slow");
        sdeps.create(&pp, &deployment("slow", 1)).await.unwrap();
        spdbs
            .create(
                &pp,
                &budget(
                    "slow",
                    json!({"selector": {"matchLabels": {"app": "slow"}}, "minAvailable": 1}),
                ),
            )
            .await
            .unwrap();
        until("a Pending slow pod on worker0", || async {
            let p = pods(&client, "slow", "slow").await;
            p.len() == 1 && p[0].0 == "worker0" && p[0].1 == "Pending"
        })
        .await;
        until("budget `slow` observed, allowing nothing", || {
            observed(&spdbs, "slow", 0)
        })
        .await;
        let blocking = k::blocking_pdbs(&client, &["worker0"]).await.unwrap();
        assert!(
            !blocking.iter().any(|b| b.namespace == "slow"),
            "a Pending pod counted as blocked: {blocking:?}"
        );
        k::uncordon(&client, "worker1").await.unwrap();

        // 5. PATCH with a stale resourceVersion: 409 Conflict.
        let stale =
            Patch::Merge(json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}));
        match nss.patch("slow", &PatchParams::default(), &stale).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
            other => panic!("stale PATCH accepted: {other:?}"),
        }
    }
}

/// `--realistic` timing: controllers' APIs come up only after a delay, nodes register NotReady
/// and turn Ready later, pods take seconds: an HA install and a worker upgrade still converge.
#[test]
fn ha_install_and_worker_upgrade_with_realistic_timing() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-realistic-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 4);
    o.controllers = 3;
    o.realistic = Some(testenv::timing::Realistic::default());
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(
        out.status.success(),
        "HA install failed:\n{}",
        text(&out.stderr)
    );
    let w = env.hosts.iter().find(|h| h.role == "worker").unwrap();
    let ready = |env: &Env| {
        let n = node_json(env, &w.name);
        n["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_default()
    };
    assert_eq!(
        ready(&env).0,
        "True",
        "the install returned before the worker was Ready"
    );

    // The mode is in effect: a restarted kubelet reports NotReady for a while.
    env.exec(w, "systemctl restart k0sworker").unwrap();
    common::poll::poll(
        "the worker to report NotReady after a restart",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || ready(&env) == ("False".to_string(), "KubeletNotReady".to_string()),
    );

    // A restarted controller runs (`k0s status` answers) before its API does.
    let c = env.hosts.iter().rfind(|h| h.role == "controller").unwrap();
    env.exec(c, "systemctl restart k0scontroller").unwrap();
    common::poll::poll(
        &format!("{} to restart", c.name),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || status(&env, c).is_some(),
    );
    let api_open = || {
        env.exec(c, "timeout 2 bash -c '</dev/tcp/127.0.0.1/6443'")
            .is_ok()
    };
    assert!(
        !api_open(),
        "the API answered right after the controller started"
    );
    common::poll::poll(
        &format!("the API of {} to come up", c.name),
        Duration::from_secs(60),
        Duration::from_millis(500),
        api_open,
    );

    // Worker (and controller) upgrade in this mode.
    let (old, new) = (&env.versions[0], env.versions.last().unwrap());
    std::fs::write(
        &m,
        base.replace(
            &format!("version: \"{old}\""),
            &format!("version: \"{new}\""),
        ),
    )
    .unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(
        out.status.success(),
        "upgrade failed:\n{}",
        text(&out.stderr)
    );
    for h in &env.hosts {
        assert_eq!(
            status(&env, h).unwrap()["Version"].as_str(),
            Some(new.as_str()),
            "{}",
            h.name
        );
    }
    assert_eq!(ready(&env).0, "True");
}
