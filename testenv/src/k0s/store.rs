//! Object store of the stand-in API server: Kubernetes objects as JSON, a global
//! resourceVersion, a watch event history. Also the resource table used for routing and
//! discovery.
//!
//! Two backends:
//! * **etcd** (controllers with `spec.storage.type: etcd`, the default): the objects live in the
//!   controller's real etcd member under `/registry/<group/resource>/<namespace>/<name>`, as
//!   kube-apiserver keeps them; resourceVersion is etcd's mod revision. Every controller serves
//!   the API from the same etcd cluster. A watch on `/registry/` feeds a local cache, the event
//!   history and the watchers, in revision order; reads first make a linearizable read (so they
//!   fail without quorum, as kube-apiserver's do) and then wait until the cache has caught up
//!   with that revision; writes are etcd transactions (create: key absent; update: compare the
//!   mod revision, re-applied on a conflict). When etcd cannot be reached or has no quorum, the
//!   operation marks the current API request failed (`ETCD_FAILED`), and the API answers 500/503.
//! * **file** (kine, `--single`): `<data-dir>/db/state.json`, persisted every 200 ms.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use tokio::sync::broadcast;

use super::etcd;

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
}

pub struct Store {
    pub data: Mutex<Data>,
    pub history: Mutex<VecDeque<Event>>,
    pub tx: broadcast::Sender<Event>,
    pub path: PathBuf,
    pub dirty: std::sync::atomic::AtomicBool,
    /// etcd backend (None: file backend).
    etcd: bool,
    /// Signalled whenever the cache (`data`) advances (etcd backend).
    advanced: Condvar,
}

tokio::task_local! {
    /// Set when a store operation of the current API request could not reach etcd (or etcd had
    /// no quorum); the API then answers with an error instead of the handler's response.
    pub static ETCD_FAILED: std::cell::Cell<bool>;
}

fn etcd_failed(e: &anyhow::Error) {
    let _ = ETCD_FAILED.try_with(|c| c.set(true));
    eprintln!("etcd: {e:#}");
}

const PREFIX: &str = "/registry/";

fn ekey(k: &str) -> String {
    format!("{PREFIX}{k}")
}

/// The object stored under a key-value pair, with its resourceVersion (the mod revision).
fn obj_of(kv: &Value) -> Option<(String, Value)> {
    let k = String::from_utf8(etcd::unb64(&kv["key"])).ok()?;
    let k = k.strip_prefix(PREFIX)?.to_string();
    let mut o: Value = serde_json::from_slice(&etcd::unb64(&kv["value"])).ok()?;
    o["metadata"]["resourceVersion"] = json!(etcd::num(&kv["mod_revision"]).to_string());
    Some((k, o))
}

/// What kube-apiserver stores: the object without its resourceVersion.
fn stored(o: &Value) -> String {
    let mut o = o.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    etcd::b64(&serde_json::to_vec(&o).unwrap_or_default())
}

/// RFC 7386 merge patch turning `a` into `b`.
fn merge_diff(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut p = serde_json::Map::new();
            for (k, v) in y {
                match x.get(k) {
                    Some(old) if old == v => {}
                    Some(old) if old.is_object() && v.is_object() => {
                        p.insert(k.clone(), merge_diff(old, v));
                    }
                    _ => {
                        p.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in x.keys() {
                if !y.contains_key(k) {
                    p.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(p)
        }
        _ => b.clone(),
    }
}

fn merge_apply(t: &mut Value, p: &Value) {
    match p {
        Value::Object(pm) => {
            if !t.is_object() {
                *t = json!({});
            }
            let tm = t.as_object_mut().expect("object");
            for (k, v) in pm {
                if v.is_null() {
                    tm.remove(k);
                } else {
                    merge_apply(tm.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *t = p.clone(),
    }
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
            etcd: false,
            advanced: Condvar::new(),
        };
        s.bootstrap();
        Ok(s)
    }

    /// A store on this controller's etcd member (which must be serving): loads the cache and
    /// starts the watch that keeps it current.
    pub fn etcd() -> anyhow::Result<std::sync::Arc<Store>> {
        let (tx, _) = broadcast::channel(4096);
        let s = std::sync::Arc::new(Store {
            data: Mutex::new(Data::default()),
            history: Mutex::new(VecDeque::new()),
            tx,
            path: PathBuf::new(),
            dirty: false.into(),
            etcd: true,
            advanced: Condvar::new(),
        });
        s.relist()?;
        let w = s.clone();
        std::thread::spawn(move || w.watch_loop());
        s.bootstrap();
        Ok(s)
    }

    pub fn is_etcd(&self) -> bool {
        self.etcd
    }

    /// Replace the cache with etcd's current content.
    fn relist(&self) -> anyhow::Result<()> {
        let v = etcd::range(PREFIX, Some(&etcd::prefix_end(PREFIX)), json!({}))?;
        let mut objects = BTreeMap::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            if let Some((k, o)) = obj_of(kv) {
                objects.insert(k, o);
            }
        }
        let mut d = self.data.lock().unwrap();
        d.objects = objects;
        d.rv = etcd::num(&v["header"]["revision"]);
        drop(d);
        self.advanced.notify_all();
        Ok(())
    }

    /// Follow etcd's changes: apply them to the cache and emit them as watch events.
    fn watch_loop(&self) {
        loop {
            let start = self.data.lock().unwrap().rv + 1;
            match etcd::watch(PREFIX, start) {
                Ok(stream) => {
                    for msg in stream {
                        let r = &msg["result"];
                        if r["compact_revision"].as_str().is_some_and(|c| c != "0")
                            || r["canceled"] == true
                        {
                            // History gone (compaction): start again from a full list.
                            let _ = self.relist();
                            break;
                        }
                        for ev in r["events"].as_array().into_iter().flatten() {
                            self.apply_event(ev);
                        }
                    }
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn apply_event(&self, ev: &Value) {
        let kv = &ev["kv"];
        let rv = etcd::num(&kv["mod_revision"]);
        let mut d = self.data.lock().unwrap();
        if rv <= d.rv {
            return;
        }
        let deleted = ev["type"] == "DELETE";
        let k = String::from_utf8(etcd::unb64(&kv["key"])).unwrap_or_default();
        let Some(k) = k.strip_prefix(PREFIX).map(str::to_string) else {
            return;
        };
        // `<gr>` may contain one `/` (group/resource): split from the right.
        let (gr, ns) = {
            let mut it = k.rsplitn(3, '/');
            let _name = it.next();
            let ns = it.next().unwrap_or("").to_string();
            let gr = it.next().unwrap_or("").to_string();
            (gr, ns)
        };
        let (typ, obj) = if deleted {
            let mut o = d.objects.remove(&k).or_else(|| {
                serde_json::from_slice::<Value>(&etcd::unb64(&ev["prev_kv"]["value"])).ok()
            });
            if let Some(o) = &mut o {
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
            }
            ("DELETED", o)
        } else {
            let created = etcd::num(&kv["create_revision"]) == rv;
            match obj_of(kv) {
                Some((_, o)) => {
                    d.objects.insert(k.clone(), o.clone());
                    (if created { "ADDED" } else { "MODIFIED" }, Some(o))
                }
                None => ("MODIFIED", None),
            }
        };
        d.rv = rv;
        if let Some(o) = obj {
            // Emitted while holding the data lock so watchers see events in revision order.
            self.emit(rv, &gr, &ns, typ, &o);
        }
        drop(d);
        self.advanced.notify_all();
    }

    /// Wait until the cache has seen revision `rv` (bounded).
    fn wait_for(&self, rv: u64) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut d = self.data.lock().unwrap();
        while d.rv < rv {
            let now = std::time::Instant::now();
            if now > deadline {
                anyhow::bail!("etcd watch cache is behind revision {rv}");
            }
            d = self.advanced.wait_timeout(d, deadline - now).unwrap().0;
        }
        Ok(())
    }

    /// Make the cache as current as a linearizable read (etcd backend; no-op for files). Fails
    /// while etcd is unreachable or has no quorum.
    pub fn sync(&self) -> anyhow::Result<()> {
        if !self.etcd {
            return Ok(());
        }
        let rv = etcd::quorum_revision()?;
        self.wait_for(rv)
    }

    fn sync_or_flag(&self) -> bool {
        match self.sync() {
            Ok(()) => true,
            Err(e) => {
                etcd_failed(&e);
                false
            }
        }
    }

    /// Read one object straight from etcd: (object with resourceVersion, mod revision).
    fn etcd_get(&self, k: &str) -> anyhow::Result<Option<(Value, u64)>> {
        let v = etcd::range(&ekey(k), None, json!({}))?;
        Ok(v["kvs"][0].as_object().and_then(|_| {
            let kv = &v["kvs"][0];
            obj_of(kv).map(|(_, o)| (o, etcd::num(&kv["mod_revision"])))
        }))
    }

    /// Compare-and-swap of one object in etcd: `f` gets the current object (None: absent) and
    /// returns the new one (None: leave it). One attempt; false when etcd failed or someone
    /// else wrote in between. For the file backend the same under the data lock.
    pub fn cas(
        &self,
        gr: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(Option<&Value>) -> Option<Value>,
    ) -> bool {
        let k = key(gr, ns, name);
        if !self.etcd {
            let cur = self.get(gr, ns, name);
            return match (f(cur.as_ref()), cur) {
                (None, _) => false,
                (Some(n), None) => self.create(gr, ns, n).is_ok(),
                (Some(n), Some(_)) => self.update(gr, ns, n).is_some(),
            };
        }
        let Ok(cur) = self.etcd_get(&k) else {
            return false;
        };
        let Some(mut n) = f(cur.as_ref().map(|(o, _)| o)) else {
            return false;
        };
        if !n["metadata"].is_object() {
            n["metadata"] = json!({});
        }
        n["metadata"]["name"] = json!(name);
        if !ns.is_empty() {
            n["metadata"]["namespace"] = json!(ns);
        }
        let cmp = match &cur {
            Some((_, m)) => {
                json!({"key": etcd::b64(ekey(&k).as_bytes()), "target": "MOD", "mod_revision": m.to_string()})
            }
            None => {
                if n["metadata"]["uid"].is_null() {
                    n["metadata"]["uid"] = json!(new_uid());
                    n["metadata"]["creationTimestamp"] = json!(super::util::now_rfc3339());
                }
                json!({"key": etcd::b64(ekey(&k).as_bytes()), "target": "CREATE", "create_revision": "0"})
            }
        };
        let body = json!({"compare": [cmp], "success": [{"request_put": {"key": etcd::b64(ekey(&k).as_bytes()), "value": stored(&n)}}]});
        match etcd::txn(&body) {
            Ok(r) if r["succeeded"] == true => {
                let _ = self.wait_for(etcd::num(&r["header"]["revision"]));
                true
            }
            _ => false,
        }
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
        if self.etcd {
            return Ok(());
        }
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
        if self.etcd && !self.sync_or_flag() {
            return None;
        }
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
        if self.etcd && !self.sync_or_flag() {
            return Vec::new();
        }
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
        if self.etcd {
            return self.etcd_create(gr, ns, &name, obj);
        }
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
        if self.etcd {
            return self.etcd_write(gr, ns, &name, |_| obj.clone());
        }
        let mut d = self.data.lock().unwrap();
        let old = d.objects.get(&key(gr, ns, &name))?.clone();
        Some(self.write_locked(&mut d, gr, ns, &name, obj, &old))
    }

    fn etcd_create(&self, gr: &str, ns: &str, name: &str, mut obj: Value) -> Result<Value, Value> {
        let k = ekey(&key(gr, ns, name));
        let m = obj["metadata"].as_object_mut().expect("metadata");
        if !ns.is_empty() {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("uid".into(), json!(new_uid()));
        m.insert(
            "creationTimestamp".into(),
            json!(super::util::now_rfc3339()),
        );
        if gr.starts_with("apps/") || gr.starts_with("policy/") || gr == "pods" {
            m.insert("generation".into(), json!(1));
        }
        let kb = etcd::b64(k.as_bytes());
        let body = json!({
            "compare": [{"key": kb, "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": kb, "value": stored(&obj)}}],
            "failure": [{"request_range": {"key": kb}}],
        });
        match etcd::txn(&body) {
            Ok(r) if r["succeeded"] == true => {
                let rv = etcd::num(&r["header"]["revision"]);
                let _ = self.wait_for(rv);
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                Ok(obj)
            }
            Ok(r) => {
                let kv = &r["responses"][0]["response_range"]["kvs"][0];
                Err(obj_of(kv).map(|(_, o)| o).unwrap_or(obj))
            }
            Err(e) => {
                etcd_failed(&e);
                // The caller sees a conflict-shaped refusal; the request fails as a whole.
                Err(obj)
            }
        }
    }

    /// Read-compare-write loop in etcd: `next(old)` gives the new object; retried on conflicts.
    fn etcd_write(
        &self,
        gr: &str,
        ns: &str,
        name: &str,
        mut next: impl FnMut(&Value) -> Value,
    ) -> Option<Value> {
        let k = key(gr, ns, name);
        for _ in 0..50 {
            let (old, m) = match self.etcd_get(&k) {
                Ok(Some(x)) => x,
                Ok(None) => return None,
                Err(e) => {
                    etcd_failed(&e);
                    return None;
                }
            };
            let mut obj = next(&old);
            if obj == old {
                return Some(obj);
            }
            let spec_changed = old["spec"] != obj["spec"];
            if !obj["metadata"].is_object() {
                obj["metadata"] = json!({});
            }
            if let Some(md) = obj["metadata"].as_object_mut() {
                for f in ["uid", "creationTimestamp"] {
                    md.insert(f.into(), old["metadata"][f].clone());
                }
                md.insert("name".into(), json!(name));
                if !ns.is_empty() {
                    md.insert("namespace".into(), json!(ns));
                }
                if let Some(g) = old["metadata"]["generation"].as_i64() {
                    let g = if spec_changed { g + 1 } else { g };
                    md.insert("generation".into(), json!(g));
                }
            }
            let kb = etcd::b64(ekey(&k).as_bytes());
            let body = json!({
                "compare": [{"key": kb, "target": "MOD", "mod_revision": m.to_string()}],
                "success": [{"request_put": {"key": kb, "value": stored(&obj)}}],
            });
            match etcd::txn(&body) {
                Ok(r) if r["succeeded"] == true => {
                    let rv = etcd::num(&r["header"]["revision"]);
                    let _ = self.wait_for(rv);
                    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                    return Some(obj);
                }
                Ok(_) => continue,
                Err(e) => {
                    etcd_failed(&e);
                    return None;
                }
            }
        }
        None
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
        if self.etcd {
            let k = ekey(&key(gr, ns, name));
            let r = etcd::call(
                "/v3/kv/deleterange",
                &json!({"key": etcd::b64(k.as_bytes()), "prev_kv": true}),
                etcd::REQ_TIMEOUT,
            );
            return match r {
                Ok(v) => {
                    let rv = etcd::num(&v["header"]["revision"]);
                    let mut o: Value =
                        serde_json::from_slice(&etcd::unb64(&v["prev_kvs"][0]["value"])).ok()?;
                    let _ = self.wait_for(rv);
                    o["metadata"]["resourceVersion"] = json!(rv.to_string());
                    Some(o)
                }
                Err(e) => {
                    etcd_failed(&e);
                    None
                }
            };
        }
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
        if self.etcd {
            // `f` runs once; on a conflicting write the change it made is re-applied as a merge
            // patch onto the newer object.
            let mut f = Some(f);
            let mut patch: Option<Value> = None;
            let mut skipped = None;
            let r = self.etcd_write(gr, ns, name, |old| {
                let mut o = old.clone();
                match &patch {
                    Some(p) => merge_apply(&mut o, p),
                    None => {
                        if !(f.take().expect("first attempt"))(&mut o) {
                            skipped = Some(o.clone());
                            patch = Some(json!({}));
                            return old.clone();
                        }
                        patch = Some(merge_diff(old, &o));
                    }
                }
                o
            });
            return skipped.or(r);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reapplied_onto_a_newer_object_as_a_merge_patch() {
        let old = json!({"metadata":{"name":"n","labels":{"a":"1","b":"2"}},"spec":{"x":1}});
        let mine = json!({"metadata":{"name":"n","labels":{"a":"1","c":"3"}},"spec":{"x":1}});
        let p = merge_diff(&old, &mine);
        assert_eq!(p, json!({"metadata":{"labels":{"b":null,"c":"3"}}}));
        // Someone else changed spec meanwhile: both changes survive.
        let mut newer = json!({"metadata":{"name":"n","labels":{"a":"1","b":"2"}},"spec":{"x":2}});
        merge_apply(&mut newer, &p);
        assert_eq!(
            newer,
            json!({"metadata":{"name":"n","labels":{"a":"1","c":"3"}},"spec":{"x":2}})
        );
    }

    #[test]
    fn etcd_keys_and_numbers() {
        assert_eq!(etcd::prefix_end("/registry/"), b"/registry0".to_vec());
        assert_eq!(etcd::num(&json!("42")), 42);
        assert_eq!(etcd::num(&json!(7)), 7);
        assert_eq!(etcd::num(&Value::Null), 0);
        assert_eq!(etcd::peer_url("10.0.0.1"), "https://10.0.0.1:2380");
        assert_eq!(etcd::peer_url("fd00::1"), "https://[fd00::1]:2380");
        let kv = json!({"key": etcd::b64(b"/registry/apps/deployments/ns1/web"),
            "value": etcd::b64(br#"{"metadata":{"name":"web"}}"#), "mod_revision": "9"});
        let (k, o) = obj_of(&kv).unwrap();
        assert_eq!(k, "apps/deployments/ns1/web");
        assert_eq!(o["metadata"]["resourceVersion"], "9");
    }
}
