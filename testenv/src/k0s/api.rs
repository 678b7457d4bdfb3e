//! Kubernetes API subset served by the stand-in controller on :6443 (HTTPS, client-certificate
//! and bootstrap-token authentication), enough for real `kubectl` (get/create/apply/patch/delete,
//! cordon/drain, tables, watch) and kube-rs: discovery, OpenAPI v3 stubs for kubectl's field
//! validation probe, generic CRUD for the resources in `store::RESOURCES`, the pod eviction
//! subresource with PodDisruptionBudget semantics (Kubernetes `pkg/registry/core/pod/storage/eviction.go`), and `/readyz` `/livez`.

use super::store::{self, Event, RESOURCES, Res, Store};
use super::util;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;

pub type Body = BoxBody<Bytes, Infallible>;

/// Who is calling.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// Client certificate signed by the cluster CA (admin, kubelets).
    Cert,
    /// Valid bootstrap token `id.secret`; the bool = controller-join usage.
    Bootstrap(String, bool),
    Anonymous,
    BadToken,
}

pub struct ApiCtx {
    pub store: Arc<Store>,
    pub k8s_version: String,
    pub pki: std::path::PathBuf,
    pub advertise: String,
}

pub fn full(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", ctype)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

pub fn json_resp(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json", serde_json::to_vec(v).unwrap())
}

pub fn status_err(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response<Body> {
    let mut s = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":message,"reason":reason,"code":code});
    if let Some(d) = details {
        s["details"] = d;
    }
    json_resp(StatusCode::from_u16(code).unwrap(), &s)
}

fn not_found(res: &Res, name: &str) -> Response<Body> {
    let gr = if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    };
    status_err(
        404,
        "NotFound",
        &format!("{gr} \"{name}\" not found"),
        Some(json!({"name":name,"group":res.group,"kind":res.plural})),
    )
}

/// Authenticate a bearer token against bootstrap-token secrets.
pub fn check_token(store: &Store, tok: &str) -> Caller {
    let Some((id, secret)) = tok.split_once('.') else {
        return Caller::BadToken;
    };
    let Some(s) = store.get("secrets", "kube-system", &format!("bootstrap-token-{id}")) else {
        return Caller::BadToken;
    };
    let field = |f: &str| {
        s["data"][f].as_str().and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
    };
    if field("token-secret").as_deref() != Some(secret) {
        return Caller::BadToken;
    }
    if let Some(exp) = field("expiration").and_then(|e| util::parse_rfc3339(&e))
        && exp < util::now_unix()
    {
        return Caller::BadToken;
    }
    let controller = field("usage-bootstrap-controller-join").as_deref() == Some("true")
        || field("usage-controller-join").as_deref() == Some("true");
    Caller::Bootstrap(id.to_string(), controller)
}

fn query_map(q: Option<&str>) -> std::collections::HashMap<String, String> {
    let mut m = std::collections::HashMap::new();
    for kv in q.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        m.insert(
            util::percent_decode(k),
            util::percent_decode(&v.replace('+', " ")),
        );
    }
    m
}

// ---------- selectors ----------

/// Label selector string (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) matches labels?
pub fn label_selector_matches(sel: &str, labels: &Value) -> bool {
    let mut reqs = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in sel.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                reqs.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    reqs.push(cur);
    reqs.iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .all(|r| {
            let get = |k: &str| labels.get(k.trim()).and_then(|v| v.as_str());
            if let Some((k, v)) = r.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = r.split_once("==") {
                get(k) == Some(v.trim())
            } else if let Some((k, v)) = r.split_once('=') {
                get(k) == Some(v.trim())
            } else if let Some(i) = r.find(" notin ") {
                let vals = set_vals(&r[i + 7..]);
                !get(&r[..i])
                    .map(|x| vals.contains(&x.to_string()))
                    .unwrap_or(false)
            } else if let Some(i) = r.find(" in ") {
                let vals = set_vals(&r[i + 4..]);
                get(&r[..i])
                    .map(|x| vals.contains(&x.to_string()))
                    .unwrap_or(false)
            } else if let Some(k) = r.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(r).is_some()
            }
        })
}

fn set_vals(s: &str) -> Vec<String> {
    s.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|x| x.trim().to_string())
        .collect()
}

/// metav1.LabelSelector object matches labels? (an empty selector matches everything)
pub fn selector_obj_matches(sel: &Value, labels: &Value) -> bool {
    if let Some(ml) = sel["matchLabels"].as_object() {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for e in exprs {
            let k = e["key"].as_str().unwrap_or("");
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let have = labels.get(k).and_then(|v| v.as_str());
            let ok = match e["operator"].as_str().unwrap_or("") {
                "In" => have.map(|h| vals.contains(&h)).unwrap_or(false),
                "NotIn" => !have.map(|h| vals.contains(&h)).unwrap_or(false),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

fn field_value<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path.split('.') {
        cur = cur.get(p)?;
    }
    Some(cur)
}

pub fn field_selector_matches(sel: &str, obj: &Value) -> bool {
    sel.split(',').filter(|s| !s.is_empty()).all(|r| {
        let (k, v, neg) = if let Some((k, v)) = r.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = r.split_once("==") {
            (k, v, false)
        } else if let Some((k, v)) = r.split_once('=') {
            (k, v, false)
        } else {
            return true;
        };
        let have = match field_value(obj, k.trim()) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        (have == v.trim()) != neg
    })
}

// ---------- tables ----------

pub fn human_age(created: &Value) -> String {
    let Some(t) = created.as_str().and_then(util::parse_rfc3339) else {
        return "<unknown>".into();
    };
    let d = (util::now_unix() - t).max(0);
    if d < 120 {
        format!("{d}s")
    } else if d < 600 {
        format!("{}m{}s", d / 60, d % 60)
    } else if d < 3 * 3600 {
        format!("{}m", d / 60)
    } else if d < 8 * 3600 {
        format!("{}h{}m", d / 3600, d % 3600 / 60)
    } else if d < 48 * 3600 {
        format!("{}h", d / 3600)
    } else {
        format!("{}d", d / 86400)
    }
}

fn cond_status<'a>(obj: &'a Value, typ: &str) -> Option<&'a str> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == typ)?["status"]
        .as_str()
}

pub fn pod_ready(p: &Value) -> bool {
    cond_status(p, "Ready") == Some("True")
}

pub fn node_ready(n: &Value) -> bool {
    cond_status(n, "Ready") == Some("True")
}

fn addr(n: &Value, typ: &str) -> String {
    n["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == typ))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("<none>")
        .to_string()
}

fn table(res: &Res, items: &[Value], rv: u64) -> Value {
    let col = |n: &str, t: &str| json!({"name":n,"type":t,"format":if n=="Name" {"name"} else {""},"description":"","priority":0});
    // Columns shown only with `-o wide`.
    let wide =
        |n: &str| json!({"name":n,"type":"string","format":"","description":"","priority":1});
    let (cols, rows): (Vec<Value>, Vec<Vec<Value>>) = match res.plural {
        "nodes" => (
            vec![
                col("Name", "string"),
                col("Status", "string"),
                col("Roles", "string"),
                col("Age", "string"),
                col("Version", "string"),
                wide("Internal-IP"),
                wide("External-IP"),
                wide("OS-Image"),
                wide("Kernel-Version"),
                wide("Container-Runtime"),
            ],
            items
                .iter()
                .map(|n| {
                    let mut st = match cond_status(n, "Ready") {
                        Some("True") => "Ready".to_string(),
                        Some(_) => "NotReady".to_string(),
                        None => "Unknown".to_string(),
                    };
                    if n["spec"]["unschedulable"] == true {
                        st += ",SchedulingDisabled";
                    }
                    let mut roles: Vec<String> = n["metadata"]["labels"]
                        .as_object()
                        .map(|l| {
                            l.keys()
                                .filter_map(|k| {
                                    k.strip_prefix("node-role.kubernetes.io/")
                                        .map(|s| s.to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    roles.sort();
                    let roles = if roles.is_empty() {
                        "<none>".to_string()
                    } else {
                        roles.join(",")
                    };
                    vec![
                        n["metadata"]["name"].clone(),
                        json!(st),
                        json!(roles),
                        json!(human_age(&n["metadata"]["creationTimestamp"])),
                        n["status"]["nodeInfo"]["kubeletVersion"].clone(),
                        json!(addr(n, "InternalIP")),
                        json!(addr(n, "ExternalIP")),
                        n["status"]["nodeInfo"]["osImage"].clone(),
                        n["status"]["nodeInfo"]["kernelVersion"].clone(),
                        n["status"]["nodeInfo"]["containerRuntimeVersion"].clone(),
                    ]
                })
                .collect(),
        ),
        "pods" => (
            vec![
                col("Name", "string"),
                col("Ready", "string"),
                col("Status", "string"),
                col("Restarts", "string"),
                col("Age", "string"),
                wide("IP"),
                wide("Node"),
                wide("Nominated Node"),
                wide("Readiness Gates"),
            ],
            items
                .iter()
                .map(|p| {
                    let n = p["spec"]["containers"]
                        .as_array()
                        .map(|a| a.len())
                        .unwrap_or(1);
                    let r = if pod_ready(p) { n } else { 0 };
                    let st = if p["metadata"]["deletionTimestamp"].is_string() {
                        json!("Terminating")
                    } else {
                        p["status"]["phase"].clone()
                    };
                    vec![
                        p["metadata"]["name"].clone(),
                        json!(format!("{r}/{n}")),
                        st,
                        json!("0"),
                        json!(human_age(&p["metadata"]["creationTimestamp"])),
                        json!(p["status"]["podIP"].as_str().unwrap_or("<none>")),
                        json!(p["spec"]["nodeName"].as_str().unwrap_or("<none>")),
                        json!("<none>"),
                        json!("<none>"),
                    ]
                })
                .collect(),
        ),
        "deployments" => (
            vec![
                col("Name", "string"),
                col("Ready", "string"),
                col("Up-to-date", "integer"),
                col("Available", "integer"),
                col("Age", "string"),
            ],
            items
                .iter()
                .map(|d| {
                    let s = &d["status"];
                    vec![
                        d["metadata"]["name"].clone(),
                        json!(format!(
                            "{}/{}",
                            s["readyReplicas"].as_i64().unwrap_or(0),
                            d["spec"]["replicas"].as_i64().unwrap_or(1)
                        )),
                        json!(s["updatedReplicas"].as_i64().unwrap_or(0)),
                        json!(s["availableReplicas"].as_i64().unwrap_or(0)),
                        json!(human_age(&d["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
        "poddisruptionbudgets" => (
            vec![
                col("Name", "string"),
                col("Min Available", "string"),
                col("Max Unavailable", "string"),
                col("Allowed Disruptions", "integer"),
                col("Age", "string"),
            ],
            items
                .iter()
                .map(|p| {
                    let f = |v: &Value| {
                        if v.is_null() {
                            json!("N/A")
                        } else {
                            json!(v.to_string().trim_matches('"'))
                        }
                    };
                    vec![
                        p["metadata"]["name"].clone(),
                        f(&p["spec"]["minAvailable"]),
                        f(&p["spec"]["maxUnavailable"]),
                        json!(p["status"]["disruptionsAllowed"].as_i64().unwrap_or(0)),
                        json!(human_age(&p["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
        "daemonsets" => (
            vec![
                col("Name", "string"),
                col("Desired", "integer"),
                col("Current", "integer"),
                col("Ready", "integer"),
                col("Up-to-date", "integer"),
                col("Available", "integer"),
                col("Age", "string"),
            ],
            items
                .iter()
                .map(|d| {
                    let s = &d["status"];
                    let n = |k: &str| json!(s[k].as_i64().unwrap_or(0));
                    vec![
                        d["metadata"]["name"].clone(),
                        n("desiredNumberScheduled"),
                        n("currentNumberScheduled"),
                        n("numberReady"),
                        n("updatedNumberScheduled"),
                        n("numberAvailable"),
                        json!(human_age(&d["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
        "namespaces" => (
            vec![
                col("Name", "string"),
                col("Status", "string"),
                col("Age", "string"),
            ],
            items
                .iter()
                .map(|n| {
                    vec![
                        n["metadata"]["name"].clone(),
                        n["status"]["phase"].clone(),
                        json!(human_age(&n["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
        "events" => (
            vec![
                col("Last Seen", "string"),
                col("Type", "string"),
                col("Reason", "string"),
                col("Object", "string"),
                col("Message", "string"),
            ],
            items
                .iter()
                .map(|e| {
                    let io = &e["involvedObject"];
                    vec![
                        json!(human_age(if e["lastTimestamp"].is_string() {
                            &e["lastTimestamp"]
                        } else {
                            &e["metadata"]["creationTimestamp"]
                        })),
                        e["type"].clone(),
                        e["reason"].clone(),
                        json!(format!(
                            "{}/{}",
                            io["kind"].as_str().unwrap_or("").to_lowercase(),
                            io["name"].as_str().unwrap_or("")
                        )),
                        e["message"].clone(),
                    ]
                })
                .collect(),
        ),
        _ => (
            vec![col("Name", "string"), col("Age", "string")],
            items
                .iter()
                .map(|o| {
                    vec![
                        o["metadata"]["name"].clone(),
                        json!(human_age(&o["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
    };
    let rows: Vec<Value> = rows
        .into_iter()
        .zip(items)
        .map(|(cells, o)| json!({"cells":cells,"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":o["metadata"]}}))
        .collect();
    json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":rv.to_string()},"columnDefinitions":cols,"rows":rows})
}

// ---------- discovery ----------

fn resource_list(group: &str, version: &str) -> Value {
    let mut rs = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        rs.push(json!({"name":r.plural,"singularName":r.kind.to_lowercase(),"namespaced":r.namespaced,"kind":r.kind,
            "verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"shortNames":r.short}));
        if [
            "pods",
            "services",
            "deployments",
            "replicasets",
            "daemonsets",
        ]
        .contains(&r.plural)
        {
            rs.last_mut().unwrap()["categories"] = json!(["all"]);
        }
        for s in r.subresources {
            let (kind, verbs, grp, ver) = match *s {
                "eviction" => ("Eviction", json!(["create"]), Some("policy"), Some("v1")),
                "scale" => (
                    "Scale",
                    json!(["get", "patch", "update"]),
                    Some("autoscaling"),
                    Some("v1"),
                ),
                "finalize" => (r.kind, json!(["update"]), None, None),
                _ => (r.kind, json!(["get", "patch", "update"]), None, None),
            };
            let mut e = json!({"name":format!("{}/{}", r.plural, s),"singularName":"","namespaced":r.namespaced,"kind":kind,"verbs":verbs});
            if let (Some(g), Some(v)) = (grp, ver) {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            rs.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":gv,"resources":rs})
}

fn group_list() -> Value {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    let gs: Vec<Value> = groups
        .iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion":format!("{g}/{v}"),"version":v});
            json!({"name":g,"versions":[gv.clone()],"preferredVersion":gv})
        })
        .collect();
    json!({"kind":"APIGroupList","apiVersion":"v1","groups":gs})
}

fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL":"/openapi/v3/api/v1?hash=testenv"}),
    );
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        let k = format!("apis/{}/{}", r.group, r.version);
        paths.insert(
            k.clone(),
            json!({"serverRelativeURL":format!("/openapi/v3/{k}?hash=testenv")}),
        );
    }
    json!({"paths":paths})
}

/// Minimal OpenAPI v3 document for one group/version: per resource a PATCH operation carrying the
/// GVK extension and the `fieldValidation` query parameter, which is what kubectl probes to decide
/// that the server validates fields itself.
fn openapi_gv(group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let p = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let op = json!({"x-kubernetes-group-version-kind":{"group":group,"version":version,"kind":r.kind},
            "parameters":[{"name":"fieldValidation","in":"query","schema":{"type":"string","uniqueItems":true}},
                          {"name":"dryRun","in":"query","schema":{"type":"string","uniqueItems":true}}],
            "responses":{"200":{"description":"OK"}}});
        paths.insert(p, json!({"patch":op.clone(),"put":op}));
    }
    json!({"openapi":"3.0.0","info":{"title":"Kubernetes","version":"v1.31.2"},"paths":paths,"components":{"schemas":{}}})
}

// ---------- request handling ----------

struct Target {
    res: &'static Res,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match *segs.first()? {
        "api" => ("", *segs.get(1)?, &segs[2..]),
        "apis" => (*segs.get(1)?, *segs.get(2)?, segs.get(3..)?),
        _ => return None,
    };
    let (ns, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let res = store::find_res(group, version, rest.first()?)?;
    Some(Target {
        res,
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

pub async fn handle(
    ctx: Arc<ApiCtx>,
    caller: Caller,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query_map(req.uri().query());
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    // Public endpoints.
    match path.as_str() {
        "/version" => {
            let v = &ctx.k8s_version;
            let minor = v.trim_start_matches('v').split('.').nth(1).unwrap_or("31");
            return Ok(json_resp(
                StatusCode::OK,
                &json!({"major":"1","minor":minor,"emulationMajor":"1","emulationMinor":minor,"gitVersion":v,"gitCommit":"0000000000000000000000000000000000000000","gitTreeState":"clean","buildDate":"2024-10-24T00:00:00Z","goVersion":"go1.22.8","compiler":"gc","platform":"linux/amd64"}),
            ));
        }
        "/readyz" | "/livez" | "/healthz" => {
            if q.contains_key("verbose") {
                let checks = [
                    "ping",
                    "log",
                    "etcd",
                    "etcd-readiness",
                    "informer-sync",
                    "poststarthook/start-apiserver-admission-initializer",
                    "poststarthook/generic-apiserver-start-informers",
                    "shutdown",
                ];
                let mut s = String::new();
                for c in checks {
                    s += &format!("[+]{c} ok\n");
                }
                s += &format!("{} check passed\n", path.trim_start_matches('/'));
                return Ok(full(StatusCode::OK, "text/plain; charset=utf-8", s));
            }
            return Ok(full(StatusCode::OK, "text/plain; charset=utf-8", "ok"));
        }
        _ => {}
    }
    if caller == Caller::BadToken {
        return Ok(status_err(401, "Unauthorized", "Unauthorized", None));
    }
    if path == "/api/testenv/kubelet-bootstrap" && method == hyper::Method::POST {
        // Stand-in for kubelet TLS bootstrap (CSR + csr-approver): a bootstrap token gets a
        // client certificate for its node.
        if !matches!(caller, Caller::Bootstrap(_, _) | Caller::Cert) {
            return Ok(status_err(
                403,
                "Forbidden",
                "forbidden: bootstrap token required",
                None,
            ));
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
        let node = v["nodeName"].as_str().unwrap_or("unknown").to_string();
        return Ok(
            match super::pki::issue(
                &ctx.pki,
                &format!("system:node:{node}"),
                &["system:nodes"],
                &[],
                false,
                true,
            ) {
                Ok((c, k)) => json_resp(StatusCode::OK, &json!({"cert":c,"key":k})),
                Err(e) => status_err(500, "InternalError", &format!("{e:#}"), None),
            },
        );
    }
    if caller != Caller::Cert {
        let user = if caller == Caller::Anonymous {
            "system:anonymous".to_string()
        } else {
            "system:bootstrap".to_string()
        };
        return Ok(status_err(
            403,
            "Forbidden",
            &format!("forbidden: User \"{user}\" cannot access path \"{path}\""),
            None,
        ));
    }
    // Discovery.
    match path.as_str() {
        "/api" => {
            return Ok(json_resp(
                StatusCode::OK,
                &json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":format!("{}:6443", ctx.advertise)}]}),
            ));
        }
        "/apis" => return Ok(json_resp(StatusCode::OK, &group_list())),
        "/api/v1" => return Ok(json_resp(StatusCode::OK, &resource_list("", "v1"))),
        "/openapi/v3" => return Ok(json_resp(StatusCode::OK, &openapi_root())),
        _ => {}
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        let (g, v) = if let Some(v) = gv.strip_prefix("api/") {
            ("", v)
        } else {
            gv.strip_prefix("apis/")
                .and_then(|x| x.rsplit_once('/'))
                .unwrap_or(("", ""))
        };
        return Ok(json_resp(StatusCode::OK, &openapi_gv(g, v)));
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.len() == 3
        && segs[0] == "apis"
        && RESOURCES
            .iter()
            .any(|r| r.group == segs[1] && r.version == segs[2])
    {
        return Ok(json_resp(StatusCode::OK, &resource_list(segs[1], segs[2])));
    }
    if segs.len() == 2
        && segs[0] == "apis"
        && let Some(g) = group_list()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == segs[1])
    {
        let mut g = g.clone();
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        return Ok(json_resp(StatusCode::OK, &g));
    }
    let Some(t) = parse_target(&path) else {
        return Ok(status_err(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        ));
    };
    let gr = t.res.gr();
    let ns = if t.res.namespaced {
        t.ns.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let dry = q.contains_key("dryRun");
    let want_table = accept.contains("as=Table");
    match (method.as_str(), &t.name, t.sub.as_deref()) {
        ("GET", None, _) => {
            if q.get("watch")
                .map(|w| w == "true" || w == "1")
                .unwrap_or(false)
            {
                return Ok(watch(ctx, t.res, t.ns.clone(), q, want_table));
            }
            let ls = q.get("labelSelector").cloned().unwrap_or_default();
            let fs = q.get("fieldSelector").cloned().unwrap_or_default();
            let rv = ctx.store.current_rv();
            let items: Vec<Value> = ctx
                .store
                .list(
                    &gr,
                    if t.res.namespaced {
                        t.ns.as_deref()
                    } else {
                        None
                    },
                )
                .into_iter()
                .filter(|o| {
                    label_selector_matches(&ls, &o["metadata"]["labels"])
                        && field_selector_matches(&fs, o)
                })
                .map(|o| with_kind(o, t.res))
                .collect();
            if want_table {
                return Ok(json_resp(StatusCode::OK, &table(t.res, &items, rv)));
            }
            Ok(json_resp(
                StatusCode::OK,
                &json!({"kind":format!("{}List", t.res.kind),"apiVersion":t.res.api_version(),"metadata":{"resourceVersion":rv.to_string()},"items":items}),
            ))
        }
        ("GET", Some(name), sub) => match ctx.store.get(&gr, &ns, name) {
            Some(o) if sub == Some("scale") => Ok(json_resp(StatusCode::OK, &scale_of(&o))),
            Some(o) => {
                let o = with_kind(o, t.res);
                if want_table {
                    return Ok(json_resp(
                        StatusCode::OK,
                        &table(t.res, &[o], ctx.store.current_rv()),
                    ));
                }
                Ok(json_resp(StatusCode::OK, &o))
            }
            None => Ok(not_found(t.res, name)),
        },
        ("POST", Some(name), Some("eviction")) if t.res.plural == "pods" => {
            Ok(evict(&ctx, &ns, name, &body, dry))
        }
        ("POST", None, _) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return Ok(status_err(
                    400,
                    "BadRequest",
                    "the body of the request was in an unknown format",
                    None,
                ));
            };
            if !obj["metadata"].is_object() {
                obj["metadata"] = json!({});
            }
            if obj["metadata"]["name"].as_str().unwrap_or("").is_empty() {
                match obj["metadata"]["generateName"].as_str() {
                    Some(g) => obj["metadata"]["name"] = json!(format!("{g}{}", rand_suffix(5))),
                    None => {
                        return Ok(status_err(
                            422,
                            "Invalid",
                            &format!(
                                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                                t.res.kind
                            ),
                            None,
                        ));
                    }
                }
            }
            if t.res.namespaced && !ns.is_empty() && ctx.store.get("namespaces", "", &ns).is_none()
            {
                return Ok(status_err(
                    404,
                    "NotFound",
                    &format!("namespaces \"{ns}\" not found"),
                    Some(json!({"name":ns,"kind":"namespaces"})),
                ));
            }
            obj["apiVersion"] = json!(t.res.api_version());
            obj["kind"] = json!(t.res.kind);
            defaults(t.res, &mut obj);
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if dry {
                return Ok(json_resp(StatusCode::CREATED, &obj));
            }
            match ctx.store.create(&gr, &ns, obj) {
                Ok(o) => Ok(json_resp(StatusCode::CREATED, &o)),
                Err(_) => {
                    let g = if t.res.group.is_empty() {
                        t.res.plural.to_string()
                    } else {
                        format!("{}.{}", t.res.plural, t.res.group)
                    };
                    Ok(status_err(
                        409,
                        "AlreadyExists",
                        &format!("{g} \"{name}\" already exists"),
                        Some(json!({"name":name,"group":t.res.group,"kind":t.res.plural})),
                    ))
                }
            }
        }
        ("PUT", Some(name), sub) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return Ok(status_err(
                    400,
                    "BadRequest",
                    "the body of the request was in an unknown format",
                    None,
                ));
            };
            let Some(old) = ctx.store.get(&gr, &ns, name) else {
                return Ok(not_found(t.res, name));
            };
            if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                && !rv.is_empty()
                && Some(rv) != old["metadata"]["resourceVersion"].as_str()
            {
                return Ok(conflict(t.res, name));
            }
            match sub {
                Some("status") => {
                    let mut o = old.clone();
                    o["status"] = obj["status"].take();
                    obj = o;
                }
                Some("scale") => {
                    let mut o = old.clone();
                    o["spec"]["replicas"] = obj["spec"]["replicas"].clone();
                    obj = o;
                }
                _ => {
                    obj["status"] = old["status"].clone();
                }
            }
            obj["apiVersion"] = json!(t.res.api_version());
            obj["kind"] = json!(t.res.kind);
            if dry {
                return Ok(json_resp(StatusCode::OK, &obj));
            }
            let o = write_part(&ctx.store, &gr, &ns, name, obj, sub).unwrap_or(old);
            Ok(json_resp(
                StatusCode::OK,
                &if sub == Some("scale") {
                    scale_of(&o)
                } else {
                    o
                },
            ))
        }
        ("PATCH", Some(name), sub) => {
            let Some(old) = ctx.store.get(&gr, &ns, name) else {
                return Ok(not_found(t.res, name));
            };
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return Ok(status_err(
                    400,
                    "BadRequest",
                    "the body of the request was in an unknown format",
                    None,
                ));
            };
            let mut obj = old.clone();
            if sub == Some("scale") {
                if let Some(r) = patch["spec"]["replicas"].as_i64() {
                    obj["spec"]["replicas"] = json!(r);
                }
            } else if ctype.starts_with("application/json-patch+json") {
                if let Err(e) = json_patch(&mut obj, &patch) {
                    return Ok(status_err(422, "Invalid", &e, None));
                }
            } else if ctype.starts_with("application/merge-patch+json")
                || ctype.starts_with("application/strategic-merge-patch+json")
            {
                merge_patch(&mut obj, &patch);
            } else {
                return Ok(status_err(
                    415,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ctype})"
                    ),
                    None,
                ));
            }
            // Optimistic concurrency: a patch that carries `metadata.resourceVersion` only
            // applies to that version of the object (the API server updates with the patched
            // object's resourceVersion as precondition; Kubernetes
            // `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`).
            if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                && !rv.is_empty()
                && Some(rv) != old["metadata"]["resourceVersion"].as_str()
            {
                return Ok(conflict(t.res, name));
            }
            if sub == Some("status") {
                let st = obj["status"].take();
                obj = old.clone();
                obj["status"] = st;
            }
            if dry {
                return Ok(json_resp(StatusCode::OK, &obj));
            }
            let o = write_part(&ctx.store, &gr, &ns, name, obj, sub).unwrap_or(old);
            Ok(json_resp(
                StatusCode::OK,
                &if sub == Some("scale") {
                    scale_of(&o)
                } else {
                    with_kind(o, t.res)
                },
            ))
        }
        ("DELETE", Some(name), None) => {
            if dry {
                return Ok(match ctx.store.get(&gr, &ns, name) {
                    Some(o) => json_resp(StatusCode::OK, &o),
                    None => not_found(t.res, name),
                });
            }
            if t.res.plural == "pods" {
                let grace = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["gracePeriodSeconds"].as_i64())
                    .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
                return Ok(match delete_pod(&ctx.store, &ns, name, grace) {
                    Some(o) => json_resp(StatusCode::OK, &with_kind(o, t.res)),
                    None => not_found(t.res, name),
                });
            }
            match delete_cascade(&ctx.store, t.res, &ns, name) {
                Some(o) => Ok(json_resp(StatusCode::OK, &with_kind(o, t.res))),
                None => Ok(not_found(t.res, name)),
            }
        }
        ("DELETE", None, None) => {
            let ls = q.get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = ctx
                .store
                .list(&gr, t.ns.as_deref())
                .into_iter()
                .filter(|o| label_selector_matches(&ls, &o["metadata"]["labels"]))
                .collect();
            for o in &items {
                let n = o["metadata"]["name"].as_str().unwrap_or("");
                let ons = o["metadata"]["namespace"].as_str().unwrap_or("");
                delete_cascade(&ctx.store, t.res, ons, n);
            }
            Ok(json_resp(
                StatusCode::OK,
                &json!({"kind":format!("{}List", t.res.kind),"apiVersion":t.res.api_version(),"metadata":{},"items":items}),
            ))
        }
        _ => Ok(status_err(
            405,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            ),
            None,
        )),
    }
}

/// Write the part of an object a request may change, atomically against concurrent writers:
/// the status subresource replaces only `status`, scale only `spec.replicas`, and the main
/// resource everything except `status` (as the API server does for resources with a status
/// subresource) — so a kubelet heartbeat never undoes a cordon and vice versa.
fn write_part(
    store: &Store,
    gr: &str,
    ns: &str,
    name: &str,
    new: Value,
    sub: Option<&str>,
) -> Option<Value> {
    store.modify(gr, ns, name, |cur| {
        match sub {
            Some("status") => cur["status"] = new["status"].clone(),
            Some("scale") => cur["spec"]["replicas"] = new["spec"]["replicas"].clone(),
            _ => {
                let st = cur["status"].clone();
                *cur = new;
                if !st.is_null() {
                    cur["status"] = st;
                }
            }
        }
        true
    })
}

fn conflict(res: &Res, name: &str) -> Response<Body> {
    let g = if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    };
    status_err(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {g} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        Some(json!({"name":name,"group":res.group,"kind":res.plural})),
    )
}

fn scale_of(o: &Value) -> Value {
    json!({"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":o["metadata"]["name"],"namespace":o["metadata"]["namespace"],"uid":o["metadata"]["uid"],"resourceVersion":o["metadata"]["resourceVersion"],"creationTimestamp":o["metadata"]["creationTimestamp"]},
        "spec":{"replicas":o["spec"]["replicas"].as_i64().unwrap_or(1)},"status":{"replicas":o["status"]["replicas"].as_i64().unwrap_or(0)}})
}

fn with_kind(mut o: Value, res: &Res) -> Value {
    o["apiVersion"] = json!(res.api_version());
    o["kind"] = json!(res.kind);
    o
}

pub fn rand_suffix(n: usize) -> String {
    use rand::Rng;
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::rng();
    (0..n)
        .map(|_| A[r.random_range(0..A.len())] as char)
        .collect()
}

/// Server-side defaults applied on create.
fn defaults(res: &Res, o: &mut Value) {
    match res.plural {
        "pods" if o["status"]["phase"].is_null() => {
            o["status"] = json!({"phase":"Pending","conditions":[]});
        }
        "namespaces" => {
            o["status"] = json!({"phase":"Active"});
            let n = o["metadata"]["name"].clone();
            if !o["metadata"]["labels"].is_object() {
                o["metadata"]["labels"] = json!({});
            }
            o["metadata"]["labels"]["kubernetes.io/metadata.name"] = n;
        }
        "deployments" | "replicasets" => {
            if o["spec"]["replicas"].is_null() {
                o["spec"]["replicas"] = json!(1);
            }
            if res.plural == "deployments" && o["spec"]["strategy"].is_null() {
                o["spec"]["strategy"] = json!({"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":"25%","maxSurge":"25%"}});
            }
            o["status"] = json!({});
        }
        "poddisruptionbudgets" => {
            o["status"] = json!({"disruptionsAllowed":0,"currentHealthy":0,"desiredHealthy":0,"expectedPods":0,"observedGeneration":0});
        }
        "events" if o["count"].is_null() => {
            o["count"] = json!(1);
        }
        _ => {}
    }
}

/// Graceful pod deletion as the API server does it: a pod bound to a node gets
/// `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds`, and is removed by its
/// kubelet once its containers stopped (the controller loop: after the grace period or
/// `TESTENV_POD_TERMINATION_SECONDS`, default 1 s, whichever is shorter, and only while the node
/// is Ready — pods of unreachable nodes stay Terminating, as in a real cluster). Unbound or
/// terminal pods, and grace period 0, are removed at once.
pub fn delete_pod(store: &Store, ns: &str, name: &str, grace: Option<i64>) -> Option<Value> {
    let pod = store.get("pods", ns, name)?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    let grace = grace
        .filter(|g| *g >= 0)
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
        || matches!(phase, "Succeeded" | "Failed")
        || grace == 0
    {
        return store.delete("pods", ns, name);
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return Some(pod);
    }
    store.modify("pods", ns, name, |p| {
        p["metadata"]["deletionTimestamp"] = json!(util::rfc3339(util::now_unix() + grace));
        p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        true
    })
}

/// Delete an object plus what a real cluster's controllers would remove with it.
pub fn delete_cascade(store: &Store, res: &Res, ns: &str, name: &str) -> Option<Value> {
    let o = store.delete(&res.gr(), ns, name)?;
    match res.plural {
        "namespaces" => {
            for r in RESOURCES.iter().filter(|r| r.namespaced) {
                for x in store.list(&r.gr(), Some(name)) {
                    store.delete(&r.gr(), name, x["metadata"]["name"].as_str().unwrap_or(""));
                }
            }
        }
        "nodes" => {
            for p in store.list("pods", None) {
                if p["spec"]["nodeName"] == name {
                    store.delete(
                        "pods",
                        p["metadata"]["namespace"].as_str().unwrap_or(""),
                        p["metadata"]["name"].as_str().unwrap_or(""),
                    );
                }
            }
        }
        _ => {}
    }
    Some(o)
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Some(p) = patch.as_object() {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if k.starts_with("$") {
                continue; // strategic-merge directives
            }
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("json patch must be an array")? {
        let path = op["path"].as_str().unwrap_or("");
        let ptr: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parent_path) = ptr.split_last().ok_or("empty path")?;
        let mut parent = &mut *target;
        for p in parent_path {
            parent = match parent {
                Value::Object(m) => m.entry(p.clone()).or_insert(json!({})),
                Value::Array(a) => a
                    .get_mut(p.parse::<usize>().map_err(|e| e.to_string())?)
                    .ok_or("index out of range")?,
                _ => return Err(format!("invalid path {path}")),
            };
        }
        match (op["op"].as_str().unwrap_or(""), parent) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), op["value"].clone());
            }
            ("add", Value::Array(a)) => {
                if last == "-" {
                    a.push(op["value"].clone())
                } else {
                    a.insert(last.parse().map_err(|_| "bad index")?, op["value"].clone())
                }
            }
            ("replace", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| "bad index")?;
                *a.get_mut(i).ok_or("index out of range")? = op["value"].clone();
            }
            ("remove", Value::Object(m)) => {
                m.remove(last);
            }
            ("remove", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| "bad index")?;
                if i < a.len() {
                    a.remove(i);
                }
            }
            ("test", _) => {}
            (o, _) => return Err(format!("unsupported json patch op {o}")),
        }
    }
    Ok(())
}

// ---------- PodDisruptionBudget ----------

/// Whether a policy/v1 PodDisruptionBudget's selector selects a pod with these labels: a
/// missing (nil) selector selects nothing, an empty one (`{}`) every pod of the namespace
/// (PodDisruptionBudgetSpec.selector of policy/v1; the eviction handler honours `{}` since
/// Kubernetes 1.28, kubernetes#119732 in `pkg/registry/core/pod/storage/eviction.go`).
pub fn pdb_selects(pdb: &Value, labels: &Value) -> bool {
    let sel = &pdb["spec"]["selector"];
    sel.is_object() && selector_obj_matches(sel, labels)
}

/// Computed PDB numbers: (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed).
pub fn pdb_numbers(store: &Store, pdb: &Value) -> (i64, i64, i64, i64) {
    let ns = pdb["metadata"]["namespace"].as_str().unwrap_or("");
    let pods: Vec<Value> = store
        .list("pods", Some(ns))
        .into_iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && pdb_selects(pdb, &p["metadata"]["labels"])
        })
        .collect();
    let current = pods.iter().filter(|p| pod_ready(p)).count() as i64;
    // Expected pods: scale of the pods' controllers (ReplicaSet → owning Deployment).
    let expected_from_controllers = || -> i64 {
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for p in &pods {
            let Some(o) = p["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|a| a.iter().find(|o| o["controller"] == true))
            else {
                continue;
            };
            let oname = o["name"].as_str().unwrap_or("");
            if o["kind"] == "ReplicaSet" {
                if let Some(rs) = store.get("apps/replicasets", ns, oname) {
                    let dep = rs["metadata"]["ownerReferences"]
                        .as_array()
                        .and_then(|a| a.iter().find(|o| o["kind"] == "Deployment"))
                        .and_then(|o| o["name"].as_str())
                        .map(|s| s.to_string());
                    match dep.and_then(|d| store.get("apps/deployments", ns, &d)) {
                        Some(d) => {
                            if seen.insert(format!("d/{}", d["metadata"]["name"])) {
                                total += d["spec"]["replicas"].as_i64().unwrap_or(1);
                            }
                        }
                        None => {
                            if seen.insert(format!("rs/{oname}")) {
                                total += rs["spec"]["replicas"].as_i64().unwrap_or(1);
                            }
                        }
                    }
                }
            } else if seen.insert(format!("{}/{oname}", o["kind"])) {
                total += 1;
            }
        }
        total
    };
    let pct = |v: &Value, of: i64| -> Option<i64> {
        match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) if s.ends_with('%') => s
                .trim_end_matches('%')
                .parse::<i64>()
                .ok()
                .map(|p| (p * of + 99) / 100),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    let (desired, expected) = if let Value::Number(n) = &pdb["spec"]["minAvailable"] {
        (n.as_i64().unwrap_or(0), pods.len() as i64)
    } else if !pdb["spec"]["minAvailable"].is_null() {
        let e = expected_from_controllers();
        (pct(&pdb["spec"]["minAvailable"], e).unwrap_or(0), e)
    } else if !pdb["spec"]["maxUnavailable"].is_null() {
        let e = expected_from_controllers();
        (
            (e - pct(&pdb["spec"]["maxUnavailable"], e).unwrap_or(0)).max(0),
            e,
        )
    } else {
        (0, pods.len() as i64)
    };
    (current, desired, expected, (current - desired).max(0))
}

/// Recompute and store a PDB's status; returns the updated object.
pub fn refresh_pdb(store: &Store, pdb: &Value) -> Value {
    let (cur, des, exp, allowed) = pdb_numbers(store, pdb);
    let ns = pdb["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
    store
        .modify("policy/poddisruptionbudgets", &ns, &name, |p| {
            let g = p["metadata"]["generation"].clone();
            let st = &p["status"];
            if st["currentHealthy"] == cur && st["desiredHealthy"] == des && st["expectedPods"] == exp && st["disruptionsAllowed"] == allowed && st["observedGeneration"] == g {
                return false;
            }
            let old_cond = st["conditions"].as_array().and_then(|a| a.first()).cloned();
            let status = if allowed > 0 { "True" } else { "False" };
            let ltt = match &old_cond {
                Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
                _ => json!(util::now_rfc3339()),
            };
            p["status"] = json!({"observedGeneration":g,"disruptionsAllowed":allowed,"currentHealthy":cur,"desiredHealthy":des,"expectedPods":exp,
                "conditions":[{"type":"DisruptionAllowed","status":status,"reason":if allowed > 0 {"SufficientPods"} else {"InsufficientPods"},"message":"","observedGeneration":g,"lastTransitionTime":ltt}]});
            true
        })
        .unwrap_or_else(|| pdb.clone())
}

/// Evictions are decided one at a time: a real API server's check-and-decrement of a PDB's
/// `disruptionsAllowed` is a status update with a resourceVersion precondition, so two
/// concurrent evictions can never both take the last allowed disruption.
static EVICTIONS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn evict(ctx: &ApiCtx, ns: &str, name: &str, body: &[u8], dry: bool) -> Response<Body> {
    let _one_at_a_time = EVICTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let store = &ctx.store;
    let Some(pod) = store.get("pods", ns, name) else {
        return status_err(
            404,
            "NotFound",
            &format!("pods \"{name}\" not found"),
            Some(json!({"name":name,"kind":"pods"})),
        );
    };
    let ev: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    if let Some(n) = ev["metadata"]["name"].as_str()
        && n != name
    {
        return status_err(
            400,
            "BadRequest",
            "name in URL does not match name in Eviction object",
            None,
        );
    }
    let dry = dry
        || ev["deleteOptions"]["dryRun"]
            .as_array()
            .map(|a| !a.is_empty())
            .unwrap_or(false);
    let success = || {
        json_resp(
            StatusCode::CREATED,
            &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}),
        )
    };
    let grace = ev["deleteOptions"]["gracePeriodSeconds"].as_i64();
    let do_delete = || {
        if !dry {
            delete_pod(store, ns, name, grace);
        }
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod["metadata"]["deletionTimestamp"].is_string()
    {
        do_delete();
        return success();
    }
    let pdbs: Vec<Value> = store
        .list("policy/poddisruptionbudgets", Some(ns))
        .into_iter()
        .filter(|p| pdb_selects(p, &pod["metadata"]["labels"]))
        .collect();
    if pdbs.len() > 1 {
        return status_err(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            None,
        );
    }
    if let Some(pdb) = pdbs.first() {
        let pname = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
        // The disruption controller has not seen the budget's current spec yet (it was just
        // created or changed): its status cannot be trusted, so the eviction is refused with
        // 429 until it has (`checkAndDecrement` in Kubernetes
        // `pkg/registry/core/pod/storage/eviction.go`). The stand-in's controller loop catches
        // up within a second (longer with TESTENV_PDB_SYNC_SECONDS).
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
        let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
        if observed < generation {
            let st = &pdb["status"];
            let (cur, des) = (
                st["currentHealthy"].as_i64().unwrap_or(0),
                st["desiredHealthy"].as_i64().unwrap_or(0),
            );
            if !pod_ready(&pod) && cur >= des && des > 0 {
                do_delete();
                return success();
            }
            return status_err(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                Some(
                    json!({"causes":[{"reason":"DisruptionBudget","message":format!("The disruption budget {pname} is still being processed by the server.")}],"retryAfterSeconds":10}),
                ),
            );
        }
        let pdb = refresh_pdb(store, pdb);
        let (cur, des, _, allowed) = pdb_numbers(store, &pdb);
        if !pod_ready(&pod) && cur >= des && des > 0 {
            do_delete();
            refresh_pdb(store, &pdb);
            return success();
        }
        if allowed == 0 {
            let mut r = status_err(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                Some(
                    json!({"causes":[{"reason":"DisruptionBudget","message":format!("The disruption budget {pname} needs {des} healthy pods and has {cur} currently")}]}),
                ),
            );
            let _ = &mut r;
            return r;
        }
        do_delete();
        if !dry {
            refresh_pdb(store, &pdb);
        }
        return success();
    }
    do_delete();
    success()
}

// ---------- watch ----------

struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn watch(
    ctx: Arc<ApiCtx>,
    res: &'static Res,
    ns: Option<String>,
    q: std::collections::HashMap<String, String>,
    want_table: bool,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let gr = res.gr();
    let ls = q.get("labelSelector").cloned().unwrap_or_default();
    let fs = q.get("fieldSelector").cloned().unwrap_or_default();
    let since: Option<u64> = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let mut sub = ctx.store.tx.subscribe();
    // kubectl get -w asks for tables: every event then carries a one-row Table.
    let render = move |o: Value| {
        let o = with_kind(o, res);
        if want_table { table(res, &[o], 0) } else { o }
    };
    let matches = {
        let gr = gr.clone();
        move |e: &Event| {
            e.gr == gr
                && ns.as_ref().map(|n| *n == e.ns).unwrap_or(true)
                && label_selector_matches(&ls, &e.obj["metadata"]["labels"])
                && field_selector_matches(&fs, &e.obj)
        }
    };
    // Initial events: history after `since`, or synthetic ADDED for the current state.
    let mut initial = Vec::new();
    let mut last_rv;
    match since {
        Some(rv) => {
            // Read the current resourceVersion before taking the history lock (the store emits
            // events while holding its data lock: data → history is the only lock order).
            let cur = ctx.store.current_rv();
            let h = ctx.store.history.lock().unwrap();
            // History starts after `rv` (or is empty after a restart while `rv` is behind): the
            // client must relist, as with etcd compaction.
            let too_old = match h.front() {
                Some(e) => e.rv > rv + 1,
                None => cur > rv,
            };
            if too_old {
                initial.push(json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":format!("too old resource version: {rv}"),"reason":"Expired","code":410}}));
            } else {
                for e in h.iter().filter(|e| e.rv > rv && matches(e)) {
                    initial.push(json!({"type":e.typ,"object":render(e.obj.clone())}));
                }
            }
            last_rv = h.back().map(|e| e.rv).unwrap_or(rv).max(rv);
        }
        None => {
            last_rv = ctx.store.current_rv();
            for o in ctx.store.list(&gr, None) {
                let e = Event {
                    rv: 0,
                    gr: gr.clone(),
                    ns: o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    typ: "ADDED",
                    obj: o,
                };
                if matches(&e) {
                    initial.push(json!({"type":"ADDED","object":render(e.obj)}));
                }
            }
        }
    }
    tokio::spawn(async move {
        for e in initial {
            if tx.send(line(&e)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
        loop {
            let ev = tokio::select! {
                e = sub.recv() => e,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            };
            match ev {
                Ok(e) => {
                    if e.rv <= last_rv || !matches(&e) {
                        continue;
                    }
                    last_rv = e.rv;
                    let l = json!({"type":e.typ,"object":render(e.obj)});
                    if tx.send(line(&l)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .body(BoxBody::new(ChanBody(rx)))
        .unwrap()
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap();
    b.push(b'\n');
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let l = json!({"app":"web","tier":"fe"});
        assert!(label_selector_matches("app=web,tier in (fe,be)", &l));
        assert!(!label_selector_matches("app!=web", &l));
        assert!(label_selector_matches("!missing,app", &l));
        assert!(selector_obj_matches(
            &json!({"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"NotIn","values":["db"]}]}),
            &l
        ));
        assert!(field_selector_matches(
            "spec.nodeName=w1",
            &json!({"spec":{"nodeName":"w1"}})
        ));
    }

    #[test]
    fn pdb_numbers_follow_min_available_and_max_unavailable() {
        let dir = std::env::temp_dir().join(format!("testenv-unit-{}", std::process::id()));
        let store = Store::load(dir.join("state.json")).unwrap();
        for i in 0..3 {
            let ready = if i < 2 { "True" } else { "False" };
            store
                .create("pods", "default", json!({"metadata":{"name":format!("p{i}"),"labels":{"app":"web"}},"status":{"phase":"Running","conditions":[{"type":"Ready","status":ready}]}}))
                .unwrap();
        }
        let pdb = json!({"metadata":{"name":"x","namespace":"default"},"spec":{"minAvailable":2,"selector":{"matchLabels":{"app":"web"}}}});
        assert_eq!(pdb_numbers(&store, &pdb), (2, 2, 3, 0));
        let pdb = json!({"metadata":{"name":"x","namespace":"default"},"spec":{"minAvailable":1,"selector":{"matchLabels":{"app":"web"}}}});
        assert_eq!(pdb_numbers(&store, &pdb).3, 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
