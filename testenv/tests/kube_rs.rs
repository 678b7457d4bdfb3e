//! kube-rs (the client k0sctl-rs uses) against the stand-in API server: version, nodes, watch via
//! `await_condition`, cordon, Deployment/PDB creation with k8s-openapi types, and a PDB-blocked
//! eviction surfacing as `kube::Error::Api` with code 429.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget};
use kube::api::{Api, ListParams, PostParams};
use std::path::PathBuf;
use std::time::Duration;
use testenv::{Env, Options};

#[test]
fn kube_rs_client_against_stand_in() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: testenv tests need root");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("testenv-it-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = Options::new(&dir, 2);
    o.k0s_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_k0s")));
    let env = Env::up(o).expect("testenv up");
    let url = env.binserver_url.clone().unwrap();
    let v = env.versions[0].clone();
    for h in &env.hosts {
        env.ssh(h, &format!("curl -sSfo /usr/local/bin/k0s {url}/k0sproject/k0s/releases/download/{}/k0s-{v}-amd64 && chmod 0755 /usr/local/bin/k0s", v.replace('+', "%2B"))).unwrap();
    }
    let (c, w) = (&env.hosts[0], &env.hosts[1]);
    env.ssh(c, "k0s install controller && systemctl start k0scontroller && until k0s token create --role=worker > /tmp/t 2>/dev/null; do sleep 0.5; done").unwrap();
    let tok = env.ssh(c, "cat /tmp/t").unwrap();
    env.ssh(w, &format!("mkdir -p /etc/k0s && echo '{}' > /etc/k0s/k0stoken && k0s install worker --token-file=/etc/k0s/k0stoken && systemctl start k0sworker", tok.trim())).unwrap();
    let kc = env.ssh(c, "k0s kubeconfig admin").unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&kc).unwrap();
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        cfg.default_retry = false;
        let client = kube::Client::try_from(cfg).unwrap();
        let ver = client.apiserver_version().await.unwrap();
        assert_eq!(ver.git_version, testenv::k0s::daemon::k8s_version(&v));

        let nodes: Api<Node> = Api::all(client.clone());
        let ready = |n: Option<&Node>| {
            n.and_then(|n| n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status == "True")).unwrap_or(false)
        };
        tokio::time::timeout(Duration::from_secs(90), kube::runtime::wait::await_condition(nodes.clone(), "worker0", ready))
            .await
            .expect("worker0 Ready")
            .unwrap();
        let n = nodes.get("worker0").await.unwrap();
        assert_eq!(n.status.unwrap().node_info.unwrap().kubelet_version, testenv::k0s::daemon::k8s_version(&v));

        let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
            "spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}
        })).unwrap();
        deps.create(&PostParams::default(), &d).await.unwrap();
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"web-pdb"},
            "spec":{"maxUnavailable":0,"selector":{"matchLabels":{"app":"web"}}}
        })).unwrap();
        pdbs.create(&PostParams::default(), &pdb).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod = loop {
            let l = pods.list(&ListParams::default().fields("spec.nodeName=worker0")).await.unwrap();
            let r = l.items.into_iter().find(|p| p.status.as_ref().and_then(|s| s.conditions.as_ref()).map(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")).unwrap_or(false));
            if let Some(p) = r {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let name = pod.metadata.name.clone().unwrap();
        nodes.cordon("worker0").await.unwrap();
        assert_eq!(nodes.get("worker0").await.unwrap().spec.unwrap().unschedulable, Some(true));
        let ev: Eviction = serde_json::from_value(serde_json::json!({"metadata":{"name":name,"namespace":"default"},"deleteOptions":{"gracePeriodSeconds":30}})).unwrap();
        match pods.create_subresource::<_, kube::core::Status>("eviction", &name, &PostParams::default(), &ev).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 429);
                assert_eq!(s.reason, "TooManyRequests");
                let cause = &s.details.unwrap().causes[0];
                assert_eq!(cause.reason, "DisruptionBudget");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        nodes.uncordon("worker0").await.unwrap();
    });
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}
