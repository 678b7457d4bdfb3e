//! Control loops of the stand-in controller (what kube-controller-manager, the scheduler and the
//! kubelets do, reduced to what the orchestrator can observe): node lifecycle (NotReady/Unknown
//! after missed heartbeats), Deployment → ReplicaSet → Pods, a scheduler onto schedulable Ready
//! nodes, pods turning Ready after a short delay, owner garbage collection, PDB status, and
//! bootstrap-token expiry.

use super::api::{self, node_ready, pod_ready, selector_obj_matches};
use super::store::Store;
use super::util;
use serde_json::{Value, json};
use std::sync::Arc;

/// Seconds without a heartbeat before a node is marked Unknown (kube-controller-manager's
/// node-monitor-grace-period default).
pub const NODE_GRACE: i64 = 40;
/// Seconds from scheduling until a pod is Running and Ready.
pub const POD_READY_DELAY: i64 = 2;
/// Seconds a terminating pod takes to stop (capped by its grace period).
pub const POD_TERMINATION: i64 = 1;

/// Test knobs, read from the controller's environment (set them with `k0s install --env`):
/// `TESTENV_NODE_GRACE_SECONDS`, `TESTENV_POD_READY_DELAY_SECONDS`.
fn knob(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The control loops run on one controller at a time, like kube-controller-manager with leader
/// election: the holder of the Lease `kube-system/kube-controller-manager` (renewed every 2 s,
/// taken over by another controller 15 s after its last renewal, released on shutdown).
pub async fn run(store: Arc<Store>) {
    loop {
        let st = store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if lead(&st) {
                tick(&st);
            }
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    }
}

const LEASE: &str = "kube-controller-manager";
const LEASE_SECONDS: i64 = 15;

fn identity() -> String {
    format!("{}_{}", util::hostname(), std::process::id())
}

/// Try to hold (or renew) the controller-manager lease; true while this controller leads.
fn lead(store: &Store) -> bool {
    if !store.is_etcd() {
        return true;
    }
    let me = identity();
    let now = util::now_unix();
    let mut leading = false;
    let mut renewed = false;
    let ok = store.cas("coordination.k8s.io/leases", "kube-system", LEASE, |cur| {
        let holder = cur.map(|l| s(&l["spec"]["holderIdentity"]).to_string());
        let renew = cur
            .and_then(|l| l["spec"]["renewTime"].as_str())
            .and_then(util::parse_rfc3339)
            .unwrap_or(0);
        let dur = cur
            .and_then(|l| l["spec"]["leaseDurationSeconds"].as_i64())
            .unwrap_or(LEASE_SECONDS);
        let mine = holder.as_deref() == Some(me.as_str());
        let free = holder.as_deref().is_none_or(str::is_empty) || now > renew + dur;
        if mine && now < renew + 2 {
            leading = true;
            return None;
        }
        if !mine && !free {
            return None;
        }
        renewed = true;
        let mut l = cur.cloned().unwrap_or_else(|| {
            json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":LEASE,"namespace":"kube-system"},"spec":{}})
        });
        let transitions = l["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
        if !mine {
            l["spec"]["acquireTime"] = json!(util::now_rfc3339());
            l["spec"]["leaseTransitions"] = json!(transitions + i64::from(cur.is_some()));
        }
        l["spec"]["holderIdentity"] = json!(me);
        l["spec"]["leaseDurationSeconds"] = json!(LEASE_SECONDS);
        l["spec"]["renewTime"] = json!(util::now_rfc3339());
        Some(l)
    });
    leading || (renewed && ok)
}

/// Give the lease up (shutdown), so that another controller takes over at once.
pub fn release(store: &Store) {
    if !store.is_etcd() {
        return;
    }
    let me = identity();
    store.cas("coordination.k8s.io/leases", "kube-system", LEASE, |cur| {
        let cur = cur?;
        if cur["spec"]["holderIdentity"] != me.as_str() {
            return None;
        }
        let mut l = cur.clone();
        l["spec"]["holderIdentity"] = json!("");
        Some(l)
    });
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn tick(store: &Store) {
    let now = util::now_unix();
    // Node lifecycle.
    for n in store.list("nodes", None) {
        let hb = n["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["lastHeartbeatTime"].as_str())
            .and_then(util::parse_rfc3339);
        let stale = hb
            .map(|t| now - t > knob("TESTENV_NODE_GRACE_SECONDS", NODE_GRACE))
            .unwrap_or(false);
        let ready_status = n["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"].clone());
        if stale && ready_status != Some(json!("Unknown")) {
            store.modify("nodes", "", s(&n["metadata"]["name"]), |n| {
                if let Some(cs) = n["status"]["conditions"].as_array_mut() {
                    for c in cs {
                        c["status"] = json!("Unknown");
                        c["reason"] = json!("NodeStatusUnknown");
                        c["message"] = json!("Kubelet stopped posting node status.");
                        c["lastTransitionTime"] = json!(util::now_rfc3339());
                    }
                }
                true
            });
        }
    }
    let nodes = store.list("nodes", None);
    // Deployments → ReplicaSets.
    for d in store.list("apps/deployments", None) {
        let ns = s(&d["metadata"]["namespace"]).to_string();
        let dname = s(&d["metadata"]["name"]).to_string();
        let hash = template_hash(&d["spec"]["template"]);
        let rs_name = format!("{dname}-{hash}");
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let owner = json!([{"apiVersion":"apps/v1","kind":"Deployment","name":dname,"uid":d["metadata"]["uid"],"controller":true,"blockOwnerDeletion":true}]);
        match store.get("apps/replicasets", &ns, &rs_name) {
            None => {
                let mut tpl = d["spec"]["template"].clone();
                if !tpl["metadata"]["labels"].is_object() {
                    tpl["metadata"]["labels"] = json!({});
                }
                tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut sel = d["spec"]["selector"].clone();
                if !sel["matchLabels"].is_object() {
                    sel["matchLabels"] = json!({});
                }
                sel["matchLabels"]["pod-template-hash"] = json!(hash);
                let mut labels = tpl["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let _ = store.create(
                    "apps/replicasets",
                    &ns,
                    json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":rs_name,"namespace":ns,"labels":labels,"ownerReferences":owner,
                        "annotations":{"deployment.kubernetes.io/revision":"1"}},"spec":{"replicas":replicas,"selector":sel,"template":tpl},"status":{"replicas":0}}),
                );
            }
            Some(rs) if rs["spec"]["replicas"].as_i64() != Some(replicas) => {
                store.modify("apps/replicasets", &ns, &rs_name, |r| {
                    r["spec"]["replicas"] = json!(replicas);
                    true
                });
            }
            _ => {}
        }
        // Old ReplicaSets of this deployment scale to zero.
        for rs in store.list("apps/replicasets", Some(&ns)) {
            let owned = rs["metadata"]["ownerReferences"]
                .as_array()
                .map(|a| a.iter().any(|o| o["uid"] == d["metadata"]["uid"]))
                .unwrap_or(false);
            if owned && rs["metadata"]["name"] != rs_name.as_str() && rs["spec"]["replicas"] != 0 {
                store.modify("apps/replicasets", &ns, s(&rs["metadata"]["name"]), |r| {
                    r["spec"]["replicas"] = json!(0);
                    true
                });
            }
        }
    }
    // ReplicaSets → Pods, and owner garbage collection.
    for rs in store.list("apps/replicasets", None) {
        let ns = s(&rs["metadata"]["namespace"]).to_string();
        let rname = s(&rs["metadata"]["name"]).to_string();
        if let Some(o) = rs["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["kind"] == "Deployment"))
        {
            let alive = store
                .get("apps/deployments", &ns, s(&o["name"]))
                .map(|d| d["metadata"]["uid"] == o["uid"])
                .unwrap_or(false);
            if !alive {
                store.delete("apps/replicasets", &ns, &rname);
                continue;
            }
        }
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1);
        let pods: Vec<Value> = store
            .list("pods", Some(&ns))
            .into_iter()
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .map(|a| a.iter().any(|o| o["uid"] == rs["metadata"]["uid"]))
                    .unwrap_or(false)
            })
            .collect();
        let pods: Vec<Value> = pods
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let have = pods.len() as i64;
        for _ in have..want {
            let mut tpl = rs["spec"]["template"].clone();
            let pname = format!("{rname}-{}", api::rand_suffix(5));
            let labels = tpl["metadata"]["labels"].take();
            let _ = store.create(
                "pods",
                &ns,
                json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":pname,"namespace":ns,"labels":labels,"generateName":format!("{rname}-"),
                    "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":rname,"uid":rs["metadata"]["uid"],"controller":true,"blockOwnerDeletion":true}]},
                    "spec":tpl["spec"],"status":{"phase":"Pending","conditions":[],"qosClass":"BestEffort"}}),
            );
        }
        if have > want {
            let mut ps = pods.clone();
            ps.sort_by_key(|p| (pod_ready(p), p["spec"]["nodeName"].is_string()));
            for p in ps.iter().take((have - want) as usize) {
                store.delete("pods", &ns, s(&p["metadata"]["name"]));
            }
        }
        let pods: Vec<Value> = store
            .list("pods", Some(&ns))
            .into_iter()
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .map(|a| a.iter().any(|o| o["uid"] == rs["metadata"]["uid"]))
                    .unwrap_or(false)
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .collect();
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let st = json!({"replicas":pods.len(),"fullyLabeledReplicas":pods.len(),"readyReplicas":ready,"availableReplicas":ready,"observedGeneration":rs["metadata"]["generation"]});
        if rs["status"] != st {
            store.modify("apps/replicasets", &ns, &rname, |r| {
                r["status"] = st;
                true
            });
        }
    }
    // Deployment status.
    for d in store.list("apps/deployments", None) {
        let ns = s(&d["metadata"]["namespace"]).to_string();
        let (mut total, mut ready, mut updated) = (0, 0, 0);
        let hash = template_hash(&d["spec"]["template"]);
        for rs in store.list("apps/replicasets", Some(&ns)) {
            if rs["metadata"]["ownerReferences"]
                .as_array()
                .map(|a| a.iter().any(|o| o["uid"] == d["metadata"]["uid"]))
                .unwrap_or(false)
            {
                total += rs["status"]["replicas"].as_i64().unwrap_or(0);
                ready += rs["status"]["readyReplicas"].as_i64().unwrap_or(0);
                if rs["metadata"]["name"]
                    .as_str()
                    .map(|n| n.ends_with(&hash))
                    .unwrap_or(false)
                {
                    updated += rs["status"]["replicas"].as_i64().unwrap_or(0);
                }
            }
        }
        let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let avail = if ready >= want { "True" } else { "False" };
        let old_cond = d["status"]["conditions"]
            .as_array()
            .and_then(|a| a.first())
            .cloned();
        let ltt = match &old_cond {
            Some(c) if c["status"] == avail => c["lastTransitionTime"].clone(),
            _ => json!(util::now_rfc3339()),
        };
        let st = json!({"observedGeneration":d["metadata"]["generation"],"replicas":total,"updatedReplicas":updated,"readyReplicas":ready,"availableReplicas":ready,
            "unavailableReplicas":(want - ready).max(0),
            "conditions":[{"type":"Available","status":avail,"reason":if avail=="True" {"MinimumReplicasAvailable"} else {"MinimumReplicasUnavailable"},
                "message":if avail=="True" {"Deployment has minimum availability."} else {"Deployment does not have minimum availability."},"lastTransitionTime":ltt,"lastUpdateTime":ltt}]});
        if d["status"] != st {
            store.modify("apps/deployments", &ns, s(&d["metadata"]["name"]), |x| {
                x["status"] = st;
                true
            });
        }
    }
    // DaemonSets: one pod per matching node, bound directly (DaemonSet pods tolerate the
    // node's taints and unschedulable, as kube-proxy / kube-router / konnectivity-agent do).
    for ds in store.list("apps/daemonsets", None) {
        let ns = s(&ds["metadata"]["namespace"]).to_string();
        let dname = s(&ds["metadata"]["name"]).to_string();
        let owned: Vec<Value> = store
            .list("pods", Some(&ns))
            .into_iter()
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .map(|a| a.iter().any(|o| o["uid"] == ds["metadata"]["uid"]))
                    .unwrap_or(false)
            })
            .collect();
        let sel = ds["spec"]["template"]["spec"]["nodeSelector"].clone();
        let wanted: Vec<&Value> = nodes
            .iter()
            .filter(|n| {
                sel.as_object()
                    .map(|m| {
                        m.iter()
                            .all(|(k, v)| n["metadata"]["labels"].get(k) == Some(v))
                    })
                    .unwrap_or(true)
            })
            .collect();
        for n in &wanted {
            let nn = s(&n["metadata"]["name"]);
            if owned.iter().any(|p| p["spec"]["nodeName"] == nn) {
                continue;
            }
            let tpl = &ds["spec"]["template"];
            let mut spec = tpl["spec"].clone();
            spec["nodeName"] = json!(nn);
            let _ = store.create(
                "pods",
                &ns,
                json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":format!("{dname}-{}", api::rand_suffix(5)),"namespace":ns,"labels":tpl["metadata"]["labels"],"generateName":format!("{dname}-"),
                    "ownerReferences":[{"apiVersion":"apps/v1","kind":"DaemonSet","name":dname,"uid":ds["metadata"]["uid"],"controller":true,"blockOwnerDeletion":true}]},
                    "spec":spec,"status":{"phase":"Pending","conditions":[],"startTime":util::now_rfc3339(),"qosClass":"BestEffort"}}),
            );
        }
        let owned: Vec<Value> = store
            .list("pods", Some(&ns))
            .into_iter()
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .map(|a| a.iter().any(|o| o["uid"] == ds["metadata"]["uid"]))
                    .unwrap_or(false)
            })
            .collect();
        let ready = owned.iter().filter(|p| pod_ready(p)).count();
        let st = json!({"desiredNumberScheduled":wanted.len(),"currentNumberScheduled":owned.len(),"numberMisscheduled":0,"numberReady":ready,
            "numberAvailable":ready,"updatedNumberScheduled":owned.len(),"observedGeneration":ds["metadata"]["generation"]});
        if ds["status"] != st {
            store.modify("apps/daemonsets", &ns, &dname, |x| {
                x["status"] = st;
                true
            });
        }
    }
    // Pods: garbage collection, scheduling, kubelet simulation.
    for p in store.list("pods", None) {
        let ns = s(&p["metadata"]["namespace"]).to_string();
        let name = s(&p["metadata"]["name"]).to_string();
        if let Some(o) = p["metadata"]["ownerReferences"].as_array().and_then(|a| {
            a.iter()
                .find(|o| o["kind"] == "ReplicaSet" || o["kind"] == "DaemonSet")
        }) {
            let gr = if o["kind"] == "DaemonSet" {
                "apps/daemonsets"
            } else {
                "apps/replicasets"
            };
            let alive = store
                .get(gr, &ns, s(&o["name"]))
                .map(|r| r["metadata"]["uid"] == o["uid"])
                .unwrap_or(false);
            if !alive {
                store.delete("pods", &ns, &name);
                continue;
            }
        }
        // Graceful termination: the kubelet removes a terminating pod once its containers have
        // stopped (here: after min(grace, TESTENV_POD_TERMINATION_SECONDS)), if the node is Ready.
        if let Some(del) = p["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(util::parse_rfc3339)
        {
            let grace = p["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0);
            let started = del - grace;
            let node_ok = p["spec"]["nodeName"]
                .as_str()
                .map(|n| {
                    nodes
                        .iter()
                        .any(|x| x["metadata"]["name"] == n && node_ready(x))
                })
                .unwrap_or(true);
            if node_ok
                && now
                    >= started + grace.min(knob("TESTENV_POD_TERMINATION_SECONDS", POD_TERMINATION))
            {
                store.delete("pods", &ns, &name);
            }
            continue;
        }
        let node_name = p["spec"]["nodeName"].as_str().map(|s| s.to_string());
        match node_name {
            None => {
                if let Some(n) = pick_node(&nodes, &store.list("pods", None), &p) {
                    store.modify("pods", &ns, &name, |p| {
                        p["spec"]["nodeName"] = json!(n);
                        p["status"]["conditions"] = json!([{"type":"PodScheduled","status":"True","lastTransitionTime":util::now_rfc3339()}]);
                        p["status"]["startTime"] = json!(util::now_rfc3339());
                        true
                    });
                }
            }
            Some(n) => {
                let node = nodes.iter().find(|x| x["metadata"]["name"] == n.as_str());
                let Some(node) = node else {
                    store.delete("pods", &ns, &name);
                    continue;
                };
                let nready = node_ready(node);
                let started = p["status"]["startTime"]
                    .as_str()
                    .and_then(util::parse_rfc3339)
                    .unwrap_or(now);
                if nready
                    && !pod_ready(&p)
                    && now - started >= knob("TESTENV_POD_READY_DELAY_SECONDS", POD_READY_DELAY)
                    && p["status"]["phase"] != "Succeeded"
                    && p["status"]["phase"] != "Failed"
                {
                    let ip = node["status"]["addresses"]
                        .as_array()
                        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                        .map(|a| a["address"].clone())
                        .unwrap_or(json!(""));
                    store.modify("pods", &ns, &name, |p| {
                        let t = util::now_rfc3339();
                        let cs: Vec<Value> = p["spec"]["containers"]
                            .as_array()
                            .map(|a| a.iter().map(|c| json!({"name":c["name"],"image":c["image"],"imageID":"","ready":true,"started":true,"restartCount":0,"state":{"running":{"startedAt":t}}})).collect())
                            .unwrap_or_default();
                        p["status"]["phase"] = json!("Running");
                        p["status"]["hostIP"] = ip.clone();
                        // A stable, per-pod address inside the default pod CIDR 10.244.0.0/16.
                        let h = p["metadata"]["uid"].as_str().unwrap_or("").bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
                        p["status"]["podIP"] = json!(format!("10.244.{}.{}", 1 + h % 250, 2 + (h / 250) % 250));
                        p["status"]["podIPs"] = json!([{"ip": p["status"]["podIP"].clone()}]);
                        p["status"]["containerStatuses"] = json!(cs);
                        p["status"]["conditions"] = json!([
                            {"type":"Initialized","status":"True","lastTransitionTime":t},
                            {"type":"Ready","status":"True","lastTransitionTime":t},
                            {"type":"ContainersReady","status":"True","lastTransitionTime":t},
                            {"type":"PodScheduled","status":"True","lastTransitionTime":t}]);
                        true
                    });
                } else if !nready && pod_ready(&p) {
                    // Node lifecycle controller marks pods of unreachable nodes NotReady.
                    store.modify("pods", &ns, &name, |p| {
                        if let Some(cs) = p["status"]["conditions"].as_array_mut() {
                            for c in cs
                                .iter_mut()
                                .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
                            {
                                c["status"] = json!("False");
                                c["lastTransitionTime"] = json!(util::now_rfc3339());
                            }
                        }
                        true
                    });
                }
            }
        }
    }
    // PodDisruptionBudget status.
    for pdb in store.list("policy/poddisruptionbudgets", None) {
        api::refresh_pdb(store, &pdb);
    }
    // Token cleaner: expired bootstrap tokens are deleted.
    for sec in store.list("secrets", Some("kube-system")) {
        if sec["type"] != "bootstrap.kubernetes.io/token" {
            continue;
        }
        let exp = sec["data"]["expiration"].as_str().and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        });
        if let Some(t) = exp.and_then(|e| util::parse_rfc3339(&String::from_utf8_lossy(&e)))
            && t < now
        {
            store.delete("secrets", "kube-system", s(&sec["metadata"]["name"]));
        }
    }
}

fn template_hash(tpl: &Value) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(tpl).unwrap_or_default());
    let d = h.finalize();
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    d.iter()
        .take(10)
        .map(|b| A[*b as usize % A.len()] as char)
        .collect()
}

fn tolerated(taint: &Value, tolerations: &Value) -> bool {
    tolerations
        .as_array()
        .map(|a| {
            a.iter().any(|t| {
                let key_ok =
                    t["key"].is_null() && t["operator"] == "Exists" || t["key"] == taint["key"];
                let val_ok = t["operator"] == "Exists"
                    || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
                let eff_ok =
                    t["effect"].is_null() || t["effect"] == "" || t["effect"] == taint["effect"];
                key_ok && val_ok && eff_ok
            })
        })
        .unwrap_or(false)
}

/// Least-loaded schedulable Ready node whose NoSchedule/NoExecute taints the pod tolerates and
/// whose labels satisfy the pod's nodeSelector.
fn pick_node(nodes: &[Value], pods: &[Value], pod: &Value) -> Option<String> {
    nodes
        .iter()
        .filter(|n| node_ready(n) && n["spec"]["unschedulable"] != true)
        .filter(|n| {
            n["spec"]["taints"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
                        .all(|t| tolerated(t, &pod["spec"]["tolerations"]))
                })
                .unwrap_or(true)
        })
        .filter(|n| {
            pod["spec"]["nodeSelector"]
                .as_object()
                .map(|sel| {
                    sel.iter()
                        .all(|(k, v)| n["metadata"]["labels"].get(k) == Some(v))
                })
                .unwrap_or(true)
        })
        .min_by_key(|n| {
            pods.iter()
                .filter(|p| p["spec"]["nodeName"] == n["metadata"]["name"])
                .count()
        })
        .map(|n| s(&n["metadata"]["name"]).to_string())
}

#[allow(dead_code)]
fn matches(sel: &Value, labels: &Value) -> bool {
    selector_obj_matches(sel, labels)
}

/// The kube-system workloads a fresh k0s cluster runs (k0s applies them from its manifests and
/// re-creates them when deleted): DaemonSets kube-proxy, kube-router, konnectivity-agent and
/// Deployments coredns, metrics-server. Their pods make `kubectl drain --ignore-daemonsets`
/// behave as on a real cluster.
pub fn ensure_system_workloads(store: &Store, k8s_version: &str) {
    let k8s = k8s_version.split('+').next().unwrap_or(k8s_version);
    let tolerate_all = json!([{"operator":"Exists"}]);
    let ds = |name: &str, image: &str| {
        json!({"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":name,"namespace":"kube-system","labels":{"k8s-app":name}},
            "spec":{"selector":{"matchLabels":{"k8s-app":name}},"template":{"metadata":{"labels":{"k8s-app":name}},
                "spec":{"nodeSelector":{"kubernetes.io/os":"linux"},"tolerations":tolerate_all,"priorityClassName":"system-node-critical",
                    "containers":[{"name":name,"image":image}]}}},"status":{}})
    };
    let deploy = |name: &str, replicas: i64, image: &str| {
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":name,"namespace":"kube-system","labels":{"k8s-app":name}},
            "spec":{"replicas":replicas,"selector":{"matchLabels":{"k8s-app":name}},"template":{"metadata":{"labels":{"k8s-app":name}},
                "spec":{"nodeSelector":{"kubernetes.io/os":"linux"},"priorityClassName":"system-cluster-critical",
                    "tolerations":[{"key":"CriticalAddonsOnly","operator":"Exists"}],
                    "containers":[{"name":name,"image":image}]}}},"status":{}})
    };
    let items = [
        (
            "apps/daemonsets",
            ds(
                "kube-proxy",
                &format!("quay.io/k0sproject/kube-proxy:{k8s}"),
            ),
        ),
        (
            "apps/daemonsets",
            ds(
                "kube-router",
                "quay.io/k0sproject/kube-router:v2.2.1-iptables1.8.9-0",
            ),
        ),
        (
            "apps/daemonsets",
            ds(
                "konnectivity-agent",
                "quay.io/k0sproject/apiserver-network-proxy-agent:v0.30.3",
            ),
        ),
        (
            "apps/deployments",
            deploy("coredns", 2, "quay.io/k0sproject/coredns:1.11.3"),
        ),
        (
            "apps/deployments",
            deploy(
                "metrics-server",
                1,
                "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
            ),
        ),
    ];
    for (gr, obj) in items {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if store.get(gr, "kube-system", &name).is_none() {
            let mut o = obj;
            if let Value::Object(m) = &mut o["metadata"] {
                m.insert("generation".into(), json!(1));
            }
            let _ = store.create(gr, "kube-system", o);
        }
    }
}
