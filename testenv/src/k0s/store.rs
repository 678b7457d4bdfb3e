//! Object store of the stand-in API server (what etcd/kine is for k0s): Kubernetes objects as
//! JSON, a global resourceVersion, a watch event history, etcd membership, persisted to
//! `<data-dir>/db/state.json` so state survives restarts, binary upgrades and backup/restore.
//! Also the resource table used for routing and discovery.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// One API resource served by the stand-in.
#[derive(Debug)]
pub struct Res {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    pub subresources: &'static [&'static str],
}

impl Res {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// Store key prefix, e.g. `apps/deployments`.
    pub fn gr(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }
}

pub static RESOURCES: &[Res] = &[
    Res {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        subresources: &["status", "finalize"],
    },
    Res {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        subresources: &["status"],
    },
    Res {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        subresources: &["status", "eviction"],
    },
    Res {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        subresources: &[],
    },
    Res {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        subresources: &[],
    },
    Res {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        subresources: &["status"],
    },
    Res {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        subresources: &[],
    },
    Res {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short: &["deploy"],
        subresources: &["status", "scale"],
    },
    Res {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short: &["rs"],
        subresources: &["status", "scale"],
    },
    Res {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        short: &["ds"],
        subresources: &["status"],
    },
    Res {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short: &["pdb"],
        subresources: &["status"],
    },
    Res {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "k0s.k0sproject.io",
        version: "v1beta1",
        plural: "clusterconfigs",
        kind: "ClusterConfig",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
];

pub fn find_res(group: &str, version: &str, plural: &str) -> Option<&'static Res> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn res_by_kind(kind: &str) -> Option<&'static Res> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// A watch event as stored in the history and sent to watchers.
#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub gr: String,
    pub ns: String,
    pub typ: &'static str,
    pub obj: Value,
}

#[derive(Default, Serialize, Deserialize)]
pub struct Data {
    pub rv: u64,
    /// key = `<gr>/<ns>/<name>` (ns empty for cluster-scoped)
    pub objects: BTreeMap<String, Value>,
    /// etcd members: name → peer URL
    pub members: BTreeMap<String, String>,
}

pub struct Store {
    pub data: Mutex<Data>,
    pub history: Mutex<VecDeque<Event>>,
    pub tx: broadcast::Sender<Event>,
    pub path: PathBuf,
    pub dirty: std::sync::atomic::AtomicBool,
}

pub fn key(gr: &str, ns: &str, name: &str) -> String {
    format!("{gr}/{ns}/{name}")
}

pub fn new_uid() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

impl Store {
    pub fn load(path: PathBuf) -> anyhow::Result<Store> {
        let data = if path.exists() {
            serde_json::from_slice(&std::fs::read(&path)?)?
        } else {
            Data::default()
        };
        let (tx, _) = broadcast::channel(4096);
        let s = Store {
            data: Mutex::new(data),
            history: Mutex::new(VecDeque::new()),
            tx,
            path,
            dirty: false.into(),
        };
        s.bootstrap();
        Ok(s)
    }

    /// Built-in objects a fresh cluster has (namespaces, default service accounts, ClusterConfig).
    fn bootstrap(&self) {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if self.get("namespaces", "", ns).is_none() {
                let _ = self.create(
                    "namespaces",
                    "",
                    json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":ns,"labels":{"kubernetes.io/metadata.name":ns}},"spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}),
                );
            }
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let d = self.data.lock().unwrap();
        let bytes = serde_json::to_vec(&*d)?;
        drop(d);
        super::util::write_mode(&self.path, &bytes, 0o600)
    }

    fn emit(&self, rv: u64, gr: &str, ns: &str, typ: &'static str, obj: &Value) {
        let ev = Event {
            rv,
            gr: gr.to_string(),
            ns: ns.to_string(),
            typ,
            obj: obj.clone(),
        };
        let mut h = self.history.lock().unwrap();
        h.push_back(ev.clone());
        if h.len() > 5000 {
            h.pop_front();
        }
        drop(h);
        let _ = self.tx.send(ev);
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, gr: &str, ns: &str, name: &str) -> Option<Value> {
        self.data
            .lock()
            .unwrap()
            .objects
            .get(&key(gr, ns, name))
            .cloned()
    }

    pub fn current_rv(&self) -> u64 {
        self.data.lock().unwrap().rv
    }

    /// All objects of a resource (optionally in one namespace).
    pub fn list(&self, gr: &str, ns: Option<&str>) -> Vec<Value> {
        let d = self.data.lock().unwrap();
        let prefix = match ns {
            Some(ns) => format!("{gr}/{ns}/"),
            None => format!("{gr}/"),
        };
        d.objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Create; fills uid, resourceVersion, creationTimestamp, generation. Err(existing) if present.
    pub fn create(&self, gr: &str, ns: &str, mut obj: Value) -> Result<Value, Value> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut d = self.data.lock().unwrap();
        let k = key(gr, ns, &name);
        if let Some(e) = d.objects.get(&k) {
            return Err(e.clone());
        }
        d.rv += 1;
        let rv = d.rv;
        let m = obj["metadata"].as_object_mut().expect("metadata");
        if !ns.is_empty() {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("uid".into(), json!(new_uid()));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert(
            "creationTimestamp".into(),
            json!(super::util::now_rfc3339()),
        );
        if gr.starts_with("apps/") || gr.starts_with("policy/") || gr == "pods" {
            m.insert("generation".into(), json!(1));
        }
        d.objects.insert(k, obj.clone());
        // Emitted while holding the data lock so watchers see events in resourceVersion order.
        self.emit(rv, gr, ns, "ADDED", &obj);
        drop(d);
        Ok(obj)
    }

    /// Replace an existing object (keeps uid/creationTimestamp; bumps generation when spec changed).
    pub fn update(&self, gr: &str, ns: &str, obj: Value) -> Option<Value> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut d = self.data.lock().unwrap();
        let old = d.objects.get(&key(gr, ns, &name))?.clone();
        Some(self.write_locked(&mut d, gr, ns, &name, obj, &old))
    }

    /// Store `obj` as the new version of `old` (data lock held by the caller).
    fn write_locked(
        &self,
        d: &mut Data,
        gr: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
        old: &Value,
    ) -> Value {
        if *old == obj {
            return obj;
        }
        d.rv += 1;
        let rv = d.rv;
        let spec_changed = old["spec"] != obj["spec"];
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            for f in ["uid", "creationTimestamp"] {
                m.insert(f.into(), old["metadata"][f].clone());
            }
            m.insert("name".into(), json!(name));
            if !ns.is_empty() {
                m.insert("namespace".into(), json!(ns));
            }
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            if let Some(g) = old["metadata"]["generation"].as_i64() {
                let g = if spec_changed { g + 1 } else { g };
                m.insert("generation".into(), json!(g));
            }
        }
        d.objects.insert(key(gr, ns, name), obj.clone());
        self.emit(rv, gr, ns, "MODIFIED", &obj);
        obj
    }

    pub fn delete(&self, gr: &str, ns: &str, name: &str) -> Option<Value> {
        let mut d = self.data.lock().unwrap();
        let mut obj = d.objects.remove(&key(gr, ns, name))?;
        d.rv += 1;
        let rv = d.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.emit(rv, gr, ns, "DELETED", &obj);
        drop(d);
        Some(obj)
    }

    /// Read-modify-write helper; `f` returns false to skip the write.
    pub fn modify(
        &self,
        gr: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value) -> bool,
    ) -> Option<Value> {
        // Atomic read-modify-write (the data lock is held throughout).
        let mut d = self.data.lock().unwrap();
        let old = d.objects.get(&key(gr, ns, name))?.clone();
        let mut o = old.clone();
        if !f(&mut o) {
            return Some(o);
        }
        Some(self.write_locked(&mut d, gr, ns, name, o, &old))
    }
}
