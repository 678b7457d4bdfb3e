//! `k0s controller` / `k0s worker`: what the k0scontroller / k0sworker services run.
//!
//! Both hold the runtime-config lock (`/run/k0s/k0s.yaml.lock`), write `/run/k0s/k0s.yaml` and
//! serve the status socket (`/run/k0s/status.sock`, HTTP over a unix socket; `GET /status` plus
//! stand-in-internal endpoints used by `k0s token`/`k0s etcd`). A controller owns the PKI, the
//! object store and serves the Kubernetes API on :6443 and the k0s API on :9443 (`/` → 404,
//! `/v1beta1/ca`, `/v1beta1/etcd/members`). With etcd storage each controller runs a real etcd
//! member (see `etcd.rs`) and serves both APIs itself from the shared etcd cluster; a controller
//! joins through an existing controller's k0s API (CA, then etcd member add).
//! Workers turn their join token into `<data-dir>/kubelet.conf`, register their Node and post
//! Ready heartbeats every 5 s.

use super::api::{self, ApiCtx, Caller};
use super::store::Store;
use super::util::{self, TlsClient};
use super::{Flags, K0sConfig};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const RUN_DIR: &str = "/run/k0s";
pub const HEARTBEAT_SECS: u64 = 5;

/// Shared state of a running daemon.
pub struct Daemon {
    pub role: String,
    pub flags: Flags,
    pub args: Vec<String>,
    pub data_dir: PathBuf,
    pub cfg: K0sConfig,
    pub version: String,
    pub workloads: bool,
    pub single: bool,
    pub store: Option<Arc<Store>>,
    /// This controller's etcd member (etcd storage).
    pub member: std::sync::Mutex<Option<super::etcd::Member>>,
    pub invocation_id: String,
    pub api_ok: std::sync::Mutex<(bool, String)>,
}

/// The Kubernetes version k0s embeds, as its kubelet and API server report it
/// (`status.nodeInfo.kubeletVersion`, `/version` gitVersion). k0s builds Kubernetes with
/// `KUBE_GIT_VERSION=v<kubernetes_version>+k0s` (k0s `embedded-bins/kubernetes/Dockerfile`,
/// version from `embedded-bins/Makefile.variables`), and a k0s release `vX.Y.Z[-pre]+k0s.N`
/// embeds Kubernetes `X.Y.Z`: a pre-release's `-rc.N` is not part of it.
/// `v1.36.3-rc.0+k0s.0` → `v1.36.3+k0s`.
pub fn k8s_version(v: &str) -> String {
    let main = v.split('+').next().unwrap_or(v);
    let core = main.split('-').next().unwrap_or(main);
    let core = core.trim_start_matches('v');
    format!("v{core}+k0s")
}

fn lock_runtime() -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(RUN_DIR)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{RUN_DIR}/k0s.yaml.lock"))?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another k0s process is still running");
    }
    Ok(f)
}

/// Is a k0s daemon holding the runtime lock?
pub fn is_running() -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{RUN_DIR}/k0s.yaml.lock"))
    else {
        return false;
    };
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return true;
    }
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
    false
}

fn k0s_vars(d: &Path) -> Value {
    let dd = d.display().to_string();
    json!({
        "InvocationID": "",
        "AdminKubeConfigPath": format!("{dd}/pki/admin.conf"),
        "BinDir": format!("{dd}/bin"),
        "CertRootDir": format!("{dd}/pki"),
        "DataDir": dd,
        "KubeletRootDir": format!("{dd}/kubelet"),
        "EtcdCertDir": format!("{dd}/pki/etcd"),
        "EtcdDataDir": format!("{dd}/etcd"),
        "KineSocketPath": format!("{RUN_DIR}/kine/kine.sock:2379"),
        "KonnectivitySocketDir": format!("{RUN_DIR}/konnectivity-server"),
        "KubeletAuthConfigPath": format!("{dd}/kubelet.conf"),
        "ManifestsDir": format!("{dd}/manifests"),
        "RunDir": RUN_DIR,
        "KonnectivityKubeConfigPath": format!("{dd}/pki/konnectivity.conf"),
        "OCIBundleDir": format!("{dd}/images"),
        "DefaultStorageType": "etcd",
        "RuntimeConfigPath": format!("{RUN_DIR}/k0s.yaml"),
        "StatusSocketPath": format!("{RUN_DIR}/status.sock"),
        "StartupConfigPath": "/etc/k0s/k0s.yaml",
        "HelmHome": format!("{dd}/helmhome"),
        "HelmRepositoryCache": format!("{dd}/helmhome/cache"),
        "HelmRepositoryConfig": format!("{dd}/helmhome/repositories.yaml"),
    })
}

impl Daemon {
    pub fn status_json(&self) -> Value {
        let mut vars = k0s_vars(&self.data_dir);
        vars["InvocationID"] = json!(self.invocation_id);
        if self.single {
            vars["DefaultStorageType"] = json!("kine");
        }
        let (ok, msg) = self.api_ok.lock().unwrap().clone();
        json!({
            "Version": self.version,
            "Pid": std::process::id(),
            "PPid": std::os::unix::process::parent_id(),
            "Role": if self.role == "worker" { "worker" } else { "controller" },
            "SysInit": "",
            "StubFile": "",
            "Output": "",
            "Workloads": self.workloads,
            "SingleNode": self.single,
            "Args": self.args,
            "WorkerToAPIConnectionStatus": {"Message": if self.workloads { msg } else { String::new() }, "Success": self.workloads && ok},
            "ClusterConfig": if self.role == "worker" { Value::Null } else { self.cfg.cluster_config_json() },
            "K0sVars": vars,
        })
    }

    fn pki(&self) -> PathBuf {
        self.data_dir.join("pki")
    }

    /// Controller operations behind `k0s token` / `k0s etcd` (executed where the store lives).
    pub async fn controller_op(
        &self,
        op: &str,
        q: &std::collections::HashMap<String, String>,
    ) -> Result<(u16, String)> {
        let store = self.store.as_ref().context("no store")?;
        match op {
            "token-create" => {
                let role = q.get("role").map(|s| s.as_str()).unwrap_or("worker");
                if self.single {
                    return Ok((
                        400,
                        "refusing to create token: cannot join into a single node cluster".into(),
                    ));
                }
                if role == "controller" && self.cfg.storage_type(self.single) != "etcd" {
                    return Ok((
                        400,
                        "refusing to create token: cannot join controller into current storage"
                            .into(),
                    ));
                }
                let expiry =
                    util::parse_duration(q.get("expiry").map(|s| s.as_str()).unwrap_or("0s"))?;
                let id = rand_alnum(6);
                let secret = rand_alnum(16);
                use base64::Engine;
                let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                let mut data = serde_json::Map::new();
                data.insert("token-id".into(), json!(b(&id)));
                data.insert("token-secret".into(), json!(b(&secret)));
                if role == "controller" {
                    data.insert(
                        "description".into(),
                        json!(b("Controller bootstrap token generated by k0s")),
                    );
                    data.insert("usage-bootstrap-controller-join".into(), json!(b("true")));
                    data.insert("usage-controller-join".into(), json!(b("true")));
                } else {
                    data.insert(
                        "description".into(),
                        json!(b("Worker bootstrap token generated by k0s")),
                    );
                    data.insert("usage-bootstrap-authentication".into(), json!(b("true")));
                    data.insert("usage-bootstrap-signing".into(), json!(b("true")));
                }
                if expiry > 0 {
                    data.insert(
                        "expiration".into(),
                        json!(b(&util::rfc3339(util::now_unix() + expiry))),
                    );
                }
                store
                    .create("secrets", "kube-system", json!({"apiVersion":"v1","kind":"Secret","type":"bootstrap.kubernetes.io/token","metadata":{"name":format!("bootstrap-token-{id}"),"namespace":"kube-system"},"data":data}))
                    .map_err(|_| anyhow::anyhow!("token id collision"))?;
                let port = if role == "controller" {
                    self.cfg.k0s_api_port()
                } else {
                    self.cfg.api_port()
                };
                let url = format!("https://{}", self.cfg.external_host_port(port));
                let ca = std::fs::read(self.pki().join("ca.crt"))?;
                let user = if role == "controller" {
                    "controller-bootstrap"
                } else {
                    "kubelet-bootstrap"
                };
                Ok((
                    200,
                    super::token::encode(&url, &ca, user, &format!("{id}.{secret}"))?,
                ))
            }
            "token-invalidate" => {
                let id = q.get("id").cloned().unwrap_or_default();
                store.delete("secrets", "kube-system", &format!("bootstrap-token-{id}"));
                Ok((200, String::new()))
            }
            "token-list" => {
                let role = q.get("role").cloned().unwrap_or_default();
                let mut rows = Vec::new();
                for s in store.list("secrets", Some("kube-system")) {
                    if s["type"] != "bootstrap.kubernetes.io/token" {
                        continue;
                    }
                    use base64::Engine;
                    let f = |k: &str| {
                        s["data"][k]
                            .as_str()
                            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                    };
                    let r = if f("usage-controller-join").is_some()
                        || f("usage-bootstrap-controller-join").is_some()
                    {
                        "controller"
                    } else {
                        "worker"
                    };
                    if !role.is_empty() && role != r {
                        continue;
                    }
                    rows.push(json!({"id":f("token-id").unwrap_or_default(),"role":r,"expiry":f("expiration").unwrap_or_default()}));
                }
                Ok((200, serde_json::to_string(&rows)?))
            }
            "etcd-join" => {
                // k0s's join API (`cmd/api/api.go`): add the new controller as an etcd member
                // with its peer URL and answer the initial-cluster list plus the etcd CA.
                if self.cfg.storage_type(self.single) != "etcd" {
                    return Ok((404, "404 page not found".into()));
                }
                let node = q.get("node").cloned().unwrap_or_default();
                let peer = q.get("peer").cloned().unwrap_or_default();
                let added =
                    tokio::task::spawn_blocking(move || super::etcd::member_add(&node, &peer))
                        .await?;
                match added {
                    Ok(list) => {
                        let e = self.pki().join("etcd");
                        let r = |f: &str| std::fs::read_to_string(e.join(f)).unwrap_or_default();
                        Ok((
                            200,
                            serde_json::to_string(
                                &json!({"initialCluster": list, "ca": {"cert": r("ca.crt"), "key": r("ca.key")}}),
                            )?,
                        ))
                    }
                    Err(e) => Ok((500, format!("{e:#}"))),
                }
            }
            _ => Ok((404, format!("unknown op {op}"))),
        }
    }
}

#[allow(dead_code)]
fn bracket(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn rand_alnum(n: usize) -> String {
    use rand::Rng;
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::rng();
    (0..n)
        .map(|_| A[r.random_range(0..A.len())] as char)
        .collect()
}

/// Kubeconfig YAML with embedded CA and client certificate (the shape k0s writes).
pub fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    cluster: &str,
    ctx: &str,
    user: &str,
) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    user: {user}\n  name: {ctx}\ncurrent-context: {ctx}\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b(ca_pem),
        b(cert_pem),
        b(key_pem)
    )
}

/// (server, CA PEM, client cert PEM, client key PEM, bearer token) of a kubeconfig.
pub type KubeconfigParts = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Parse a kubeconfig (YAML) into its parts.
pub fn parse_kubeconfig(y: &str) -> Result<KubeconfigParts> {
    let v: Value = serde_saphyr::from_str(y).context("parse kubeconfig")?;
    use base64::Engine;
    let d = |x: &Value| {
        x.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let cur = v["current-context"].as_str().unwrap_or("");
    let ctx = v["contexts"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == cur).or(a.first()))
        .map(|c| c["context"].clone())
        .unwrap_or(json!({}));
    let cl = v["clusters"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == ctx["cluster"]).or(a.first()))
        .map(|c| c["cluster"].clone())
        .unwrap_or(json!({}));
    let us = v["users"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == ctx["user"]).or(a.first()))
        .map(|c| c["user"].clone())
        .unwrap_or(json!({}));
    Ok((
        cl["server"].as_str().unwrap_or("").to_string(),
        d(&cl["certificate-authority-data"]).unwrap_or_default(),
        d(&us["client-certificate-data"]),
        d(&us["client-key-data"]),
        us["token"].as_str().map(|s| s.to_string()),
    ))
}

fn server_tls(pki: &Path, sans: &[String]) -> Result<rustls::ServerConfig> {
    let (cert, key) = super::pki::issue(pki, "kube-apiserver", &[], sans, true, false)?;
    let ca = std::fs::read_to_string(pki.join("ca.crt"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in util::pem_to_certs(&ca)? {
        roots.add(c)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        util::provider(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut chain = util::pem_to_certs(&cert)?;
    chain.extend(util::pem_to_certs(&ca)?);
    let mut cfg = rustls::ServerConfig::builder_with_provider(util::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, util::pem_key(&key)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn serve_https<F, Fut>(addr: &str, tls: rustls::ServerConfig, handler: F) -> Result<()>
where
    F: Fn(Caller, hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<api::Body>, std::convert::Infallible>>
        + Send
        + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen {addr}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let has_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| !c.is_empty())
                    .unwrap_or(false);
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let caller = if has_cert {
                            Caller::Cert
                        } else {
                            match req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("Bearer "))
                            {
                                Some(t) => Caller::Bootstrap(t.trim().to_string(), false),
                                None => Caller::Anonymous,
                            }
                        };
                        let head = req.method() == hyper::Method::HEAD;
                        let fut = handler(caller, req);
                        async move {
                            let r = fut.await?;
                            if !head {
                                return Ok::<_, std::convert::Infallible>(r);
                            }
                            // HEAD: same status and headers, no body (HTTP/2 forbids DATA frames here).
                            let (parts, _) = r.into_parts();
                            use http_body_util::BodyExt;
                            Ok(hyper::Response::from_parts(
                                parts,
                                http_body_util::Empty::<bytes::Bytes>::new()
                                    .map_err(|e| match e {})
                                    .boxed(),
                            ))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    Ok(())
}

/// The API's answer while etcd cannot be reached or has no quorum (kube-apiserver's storage
/// error for a timed-out etcd request).
fn etcd_unavailable(msg: &str) -> hyper::Response<api::Body> {
    api::json_resp(
        hyper::StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":msg,"code":500}),
    )
}

/// How long after a controller's start its Kubernetes API (:6443) begins to answer: on a real
/// controller the API server comes up only after etcd and the API server itself started
/// (seconds to tens of seconds). TESTENV_API_START_DELAY_SECONDS, default 0 (at once).
fn api_start_delay() -> Option<std::time::Duration> {
    let s = util::knob("TESTENV_API_START_DELAY_SECONDS", 0);
    (s > 0).then(|| std::time::Duration::from_secs(s as u64))
}

/// k0s v1.35.1 (and only that release) decodes the worker's join token at every start.
pub fn worker_decodes_token_at_every_start(version: &str) -> bool {
    let core = version.split('+').next().unwrap_or(version);
    core == "v1.35.1"
}

fn resolve_token(flags: &Flags, positional: Option<&String>) -> Result<Option<String>> {
    let mut sources = Vec::new();
    if let Some(p) = positional {
        sources.push(p.clone());
    }
    if let Some(f) = flags.get("token-file") {
        let t = std::fs::read_to_string(f).map_err(|_| {
            anyhow::anyhow!("token file \"{f}\" not found: obtain a new token via \"k0s token create ...\" and store it in the file or reinstall this node via \"k0s install --force ...\" or \"k0sctl apply --force ...\"")
        })?;
        if t.trim().is_empty() {
            bail!(
                "token file \"{f}\" is empty: obtain a new token via \"k0s token create ...\" and store it in the file or reinstall this node via \"k0s install --force ...\" or \"k0sctl apply --force ...\""
            );
        }
        sources.push(t);
    }
    if let Ok(t) = std::env::var("K0S_TOKEN")
        && !t.is_empty()
    {
        sources.push(t);
    }
    if sources.len() > 1 {
        bail!(
            "you can only pass one token source: either as a CLI argument, via '--token-file [path]', or via the K0S_TOKEN environment variable"
        );
    }
    Ok(sources.pop())
}

/// Kubelet-extra-args parsing: (node-ip, hostname-override).
fn kubelet_extra(flags: &Flags) -> (Option<String>, Option<String>) {
    let mut ip = None;
    let mut host = None;
    if let Some(x) = flags.get("kubelet-extra-args") {
        for a in x.split_whitespace() {
            if let Some(v) = a.strip_prefix("--node-ip=") {
                ip = Some(v.to_string());
            }
            if let Some(v) = a.strip_prefix("--hostname-override=") {
                host = Some(v.to_string());
            }
        }
    }
    (ip, host)
}

/// Entry for `k0s controller` and `k0s worker`.
pub fn run(role: &str, flags: Flags, positional: Vec<String>, raw_args: Vec<String>) -> Result<()> {
    let _lock = lock_runtime()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(role, flags, positional, raw_args))
}

async fn run_async(
    role: &str,
    flags: Flags,
    positional: Vec<String>,
    raw_args: Vec<String>,
) -> Result<()> {
    let data_dir = PathBuf::from(
        flags
            .get("data-dir")
            .cloned()
            .unwrap_or_else(|| "/var/lib/k0s".into()),
    );
    std::fs::create_dir_all(&data_dir)?;
    let single = flags.bool("single");
    let workloads = role == "worker" || single || flags.bool("enable-worker");
    let cfg = if role == "worker" {
        K0sConfig::default()
    } else {
        K0sConfig::load(flags.get("config").map(|s| s.as_str()))?
    };
    let version = crate::stamp::slot_version();
    // When the worker reads its join token (k0s `cmd/worker/worker.go`): v1.35.1 reads and
    // decodes it at every start, before anything else, and refuses to start when it is not a
    // valid kubelet-bootstrap token (k0s issue #7202); other releases read it lazily, only when
    // there is no kubelet kubeconfig yet (a joined worker starts without the file).
    let eager = worker_decodes_token_at_every_start(&version);
    let token = if role == "worker" && !eager && data_dir.join("kubelet.conf").exists() {
        None
    } else {
        resolve_token(&flags, positional.first())?
    };
    if role == "worker"
        && eager
        && let Some(t) = &token
    {
        let (_, _, user, _) = super::token::decode(t)
            .map_err(|e| anyhow::anyhow!("failed to decode join token: {e:#}"))?;
        if user != "kubelet-bootstrap" {
            bail!("wrong token type {user}, expected type: kubelet-bootstrap");
        }
    }
    let invocation_id = rand_alnum(32)
        .chars()
        .map(|c| {
            if c.is_ascii_digit() || ('a'..='f').contains(&c) {
                c
            } else {
                'a'
            }
        })
        .collect();
    // Runtime config.
    let rc = format!(
        "apiVersion: k0s.k0sproject.io/v1beta1\nkind: RuntimeConfig\nmetadata:\n  creationTimestamp: \"{}\"\nspec:\n  k0sVars:\n    DataDir: {}\n    RunDir: {RUN_DIR}\n    StatusSocketPath: {RUN_DIR}/status.sock\n    AdminKubeConfigPath: {}/pki/admin.conf\n",
        util::now_rfc3339(),
        data_dir.display(),
        data_dir.display()
    );
    util::write_mode(
        Path::new(&format!("{RUN_DIR}/k0s.yaml")),
        rc.as_bytes(),
        0o600,
    )?;
    let mut d = Daemon {
        role: role.to_string(),
        flags: flags.clone(),
        args: raw_args,
        data_dir: data_dir.clone(),
        cfg,
        version: version.clone(),
        workloads,
        single,
        store: None,
        member: std::sync::Mutex::new(None),
        invocation_id,
        api_ok: std::sync::Mutex::new((false, "kubelet not started yet".into())),
    };
    util::log_info(&format!("k0s {version} starting as {role}"));
    let pki = data_dir.join("pki");
    let mut worker_api: Option<(String, TlsClient)> = None;
    if role == "controller" {
        std::fs::create_dir_all(&pki)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o751))?;
        }
        let peer = d.cfg.peer_address();
        let etcd_storage = d.cfg.storage_type(single) == "etcd";
        // k0s joins when it has a token and no etcd data yet (no CA for other storage).
        let needs_join = token.is_some()
            && if etcd_storage {
                !super::etcd::is_member(&data_dir)
            } else {
                !pki.join("ca.crt").exists()
            };
        let mut initial_cluster = None;
        if needs_join {
            let tok = token.as_ref().expect("checked");
            // Join: fetch the CA from the k0s API of the existing controller.
            let (url, ca, user, bt) = super::token::decode(tok)?;
            if user != "controller-bootstrap" {
                bail!("wrong token type {user}, expected type: controller-bootstrap");
            }
            let tls = TlsClient {
                ca_pem: ca,
                cert_pem: None,
                key_pem: None,
                insecure: false,
            };
            let auth = format!("Bearer {bt}");
            let (code, body) = retry_req(&tls, "GET", &format!("{url}/v1beta1/ca"), &auth).await?;
            if code != 200 {
                bail!(
                    "failed to fetch CA from {url}: HTTP {code}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let v: Value = serde_json::from_slice(&body)?;
            util::write_mode(
                &pki.join("ca.key"),
                v["ca.key"].as_str().unwrap_or("").as_bytes(),
                0o640,
            )?;
            util::write_mode(
                &pki.join("ca.crt"),
                v["ca.crt"].as_str().unwrap_or("").as_bytes(),
                0o644,
            )?;
            if etcd_storage {
                // etcd refuses a member add while the cluster is unhealthy (e.g. an earlier added
                // member has not started yet): k0s retries its join with a backoff (10
                // attempts from 1 s, doubling; `pkg/component/controller/etcd.go`).
                let join_url = format!(
                    "{url}/v1beta1/etcd/members?node={}&peer={}",
                    enc(&util::hostname()),
                    enc(&super::etcd::peer_url(&peer))
                );
                let mut delay = 1;
                let mut attempt = 0;
                let body = loop {
                    attempt += 1;
                    let (code, body) = retry_req(&tls, "POST", &join_url, &auth).await?;
                    if code == 200 {
                        break body;
                    }
                    let msg = String::from_utf8_lossy(&body).into_owned();
                    if attempt >= 10 {
                        bail!("failed to join etcd cluster: HTTP {code}: {msg}");
                    }
                    util::log_warn(&format!(
                        "joining the etcd cluster failed (HTTP {code}: {msg}), retrying in {delay} s"
                    ));
                    tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
                    delay = (delay * 2).min(16);
                };
                let v: Value = serde_json::from_slice(&body)?;
                let e = pki.join("etcd");
                std::fs::create_dir_all(&e)?;
                util::write_mode(
                    &e.join("ca.crt"),
                    v["ca"]["cert"].as_str().unwrap_or("").as_bytes(),
                    0o644,
                )?;
                util::write_mode(
                    &e.join("ca.key"),
                    v["ca"]["key"].as_str().unwrap_or("").as_bytes(),
                    0o600,
                )?;
                initial_cluster = Some(
                    v["initialCluster"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect::<Vec<_>>(),
                );
            }
        } else if !pki.join("ca.crt").exists() {
            super::pki::ensure_ca(&pki)?;
        }
        if !pki.join("admin.crt").exists() {
            let (c, k) = super::pki::issue(
                &pki,
                "kubernetes-admin",
                &["system:masters"],
                &[],
                false,
                true,
            )?;
            util::write_mode(&pki.join("admin.crt"), c.as_bytes(), 0o644)?;
            util::write_mode(&pki.join("admin.key"), k.as_bytes(), 0o600)?;
        }
        let ca = std::fs::read_to_string(pki.join("ca.crt"))?;
        let admin = kubeconfig_yaml(
            &d.cfg.local_url(),
            &ca,
            &std::fs::read_to_string(pki.join("admin.crt"))?,
            &std::fs::read_to_string(pki.join("admin.key"))?,
            "local",
            "Default",
            "user",
        );
        util::write_mode(&pki.join("admin.conf"), admin.as_bytes(), 0o600)?;
        let mut sans: Vec<String> = vec![
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            "localhost".into(),
            "127.0.0.1".into(),
            "10.96.0.1".into(),
        ];
        sans.extend(util::host_ipv4s());
        sans.push(util::hostname());
        sans.extend(d.cfg.sans());
        sans.sort();
        sans.dedup();
        let api_port = d.cfg.api_port();
        let k0s_port = d.cfg.k0s_api_port();
        {
            let store = if etcd_storage {
                super::etcd::ensure_pki(&pki, &peer)?;
                let start = if super::etcd::is_member(&data_dir) {
                    super::etcd::Start::Restart
                } else if let Some(l) = initial_cluster.take() {
                    super::etcd::Start::Existing(l)
                } else {
                    super::etcd::Start::New
                };
                *d.member.lock().unwrap() = Some(super::etcd::spawn(&data_dir, &peer, start)?);
                tokio::task::spawn_blocking(|| super::etcd::wait_ready(180)).await??;
                tokio::task::spawn_blocking(Store::etcd).await??
            } else {
                let store = Arc::new(Store::load(data_dir.join("db/state.json"))?);
                store.save()?;
                // Persist changes every 200 ms.
                let st = store.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        if st.dirty.swap(false, std::sync::atomic::Ordering::Relaxed)
                            && let Err(e) = st.save()
                        {
                            eprintln!("persist state: {e:#}");
                        }
                    }
                });
                store
            };
            let ctx = Arc::new(ApiCtx {
                store: store.clone(),
                k8s_version: k8s_version(&version),
                pki: pki.clone(),
                advertise: d.cfg.api_address(),
            });
            let tls = server_tls(&pki, &sans)?;
            let c1 = ctx.clone();
            let api_tls = tls.clone();
            let api_bind = format!("{}:{api_port}", bracket(&d.cfg.api_bind_host()));
            let serve = async move {
                serve_https(&api_bind, api_tls, move |caller, req| {
                    let ctx = c1.clone();
                    async move {
                        // etcd storage: without a linearizable read there is no answer (as
                        // kube-apiserver without etcd quorum); `/version` and `/livez` do not
                        // touch storage.
                        let path = req.uri().path().to_string();
                        if ctx.store.is_etcd() && path != "/version" && path != "/livez" {
                            let st = ctx.store.clone();
                            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || st.sync()).await
                            {
                                return Ok(etcd_unavailable(&format!("{e:#}")));
                            }
                        }
                        super::store::ETCD_FAILED
                            .scope(std::cell::Cell::new(false), async move {
                                let caller = match caller {
                                    Caller::Bootstrap(t, _) => api::check_token(&ctx.store, &t),
                                    c => c,
                                };
                                let r = api::handle(ctx, caller, req).await;
                                if super::store::ETCD_FAILED.with(|c| c.get()) {
                                    return Ok(etcd_unavailable(
                                        "etcdserver: request timed out (etcd unavailable)",
                                    ));
                                }
                                r
                            })
                            .await
                    }
                })
                .await
            };
            // TESTENV_API_START_DELAY_SECONDS: the API answers only that long after the start.
            match api_start_delay() {
                None => serve.await?,
                Some(delay) => {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        if let Err(e) = serve.await {
                            util::log_info(&format!("kube-apiserver failed to start: {e:#}"));
                            std::process::exit(1);
                        }
                    });
                }
            }
            super::controllers::ensure_system_workloads(&store, &k8s_version(&version));
            if d.flags.bool("enable-dynamic-config") {
                publish_cluster_config(&store, &d.cfg);
            }
            d.store = Some(store.clone());
            tokio::spawn(super::controllers::run(store.clone()));
        }
        let d2 = Arc::new(d);
        if d2.member.lock().unwrap().is_some() {
            // k0s supervises etcd: a member that exited (e.g. after it was removed from the
            // cluster) is started again on its data directory.
            let dm = d2.clone();
            let peer = d2.cfg.peer_address();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    let restarted = {
                        let mut m = dm.member.lock().unwrap();
                        match m.as_mut().and_then(|x| x.exited()) {
                            None => false,
                            Some(st) => {
                                util::log_warn(&format!("etcd exited ({st}), restarting it"));
                                match super::etcd::spawn(
                                    &dm.data_dir,
                                    &peer,
                                    super::etcd::Start::Restart,
                                ) {
                                    Ok(n) => *m = Some(n),
                                    Err(e) => util::log_warn(&format!("restarting etcd: {e:#}")),
                                }
                                true
                            }
                        }
                    };
                    if !restarted {
                        continue;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
                }
            });
        }
        let dk = d2.clone();
        let tls9443 = server_tls(&pki, &sans)?;
        serve_https(
            &format!("0.0.0.0:{k0s_port}"),
            tls9443,
            move |caller, req| {
                let d = dk.clone();
                async move { Ok(k0s_api(d, caller, req).await) }
            },
        )
        .await?;
        if workloads {
            let node = d2.flags.clone();
            let (c, k) = super::pki::issue(
                &pki,
                &format!("system:node:{}", node_name(&node)),
                &["system:nodes"],
                &[],
                false,
                true,
            )?;
            worker_api = Some((
                // With onlyBindToAddress nothing listens on 127.0.0.1: k0s's local URL.
                if d2.cfg.only_bind_to_address() {
                    d2.cfg.local_url()
                } else {
                    format!("https://127.0.0.1:{api_port}")
                },
                TlsClient {
                    ca_pem: std::fs::read_to_string(pki.join("ca.crt"))?,
                    cert_pem: Some(c),
                    key_pem: Some(k),
                    insecure: false,
                },
            ));
        }
        return finish(d2, worker_api).await;
    }
    // Worker.
    let kc = data_dir.join("kubelet.conf");
    if !kc.exists() {
        let tok = token.context(
            "no join token given: pass it as an argument, via --token-file or K0S_TOKEN",
        )?;
        let (url, ca, user, bt) = super::token::decode(&tok)?;
        if user != "kubelet-bootstrap" {
            bail!("wrong token type {user}, expected type: kubelet-bootstrap");
        }
        let tls = TlsClient {
            ca_pem: ca.clone(),
            cert_pem: None,
            key_pem: None,
            insecure: false,
        };
        let name = node_name(&flags);
        let body = serde_json::to_vec(&json!({"nodeName":name}))?;
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match util::https_request(
                &tls,
                "POST",
                &format!("{url}/api/testenv/kubelet-bootstrap"),
                &[
                    ("Authorization", &format!("Bearer {bt}")),
                    ("Content-Type", "application/json"),
                ],
                Some(&body),
            )
            .await
            {
                Ok((200, b)) => break b,
                Ok((code, b)) if attempt > 60 => bail!(
                    "kubelet TLS bootstrap failed: HTTP {code}: {}",
                    String::from_utf8_lossy(&b)
                ),
                Err(e) if attempt > 60 => return Err(e),
                _ => tokio::time::sleep(std::time::Duration::from_secs(2)).await,
            }
        };
        let v: Value = serde_json::from_slice(&resp)?;
        let y = kubeconfig_yaml(
            &url,
            &ca,
            v["cert"].as_str().unwrap_or(""),
            v["key"].as_str().unwrap_or(""),
            "default-cluster",
            "default-context",
            "default-auth",
        );
        util::write_mode(&kc, y.as_bytes(), 0o600)?;
    }
    let (server, ca, cert, key, _) = parse_kubeconfig(&std::fs::read_to_string(&kc)?)?;
    worker_api = Some((
        server,
        TlsClient {
            ca_pem: ca,
            cert_pem: cert,
            key_pem: key,
            insecure: false,
        },
    ));
    finish(Arc::new(d), worker_api).await
}

async fn retry_req(tls: &TlsClient, method: &str, url: &str, auth: &str) -> Result<(u16, Vec<u8>)> {
    let mut last = None;
    for _ in 0..30 {
        match util::https_request(tls, method, url, &[("Authorization", auth)], None).await {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    Err(last.unwrap())
}

fn node_name(flags: &Flags) -> String {
    kubelet_extra(flags)
        .1
        .unwrap_or_else(util::hostname)
        .to_lowercase()
}

async fn finish(d: Arc<Daemon>, worker_api: Option<(String, TlsClient)>) -> Result<()> {
    if let Some((server, tls)) = worker_api {
        tokio::spawn(kubelet(d.clone(), server, tls));
    } else {
        *d.api_ok.lock().unwrap() = (false, String::new());
    }
    let sock = format!("{RUN_DIR}/status.sock");
    let _ = std::fs::remove_file(&sock);
    let l = tokio::net::UnixListener::bind(&sock).with_context(|| format!("listen {sock}"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
    }
    util::log_info("k0s is up");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            c = l.accept() => {
                if let Ok((s, _)) = c {
                    let d = d.clone();
                    tokio::spawn(async move { let _ = status_conn(d, s).await; });
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    util::log_info("shutting down");
    if let Some(s) = &d.store {
        let _ = s.save();
        let st = s.clone();
        let _ = tokio::task::spawn_blocking(move || super::controllers::release(&st)).await;
    }
    let member = d.member.lock().unwrap().take();
    if let Some(mut m) = member {
        let _ = tokio::task::spawn_blocking(move || m.stop()).await;
    }
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

/// Status socket: HTTP/1.x over a unix socket.
async fn status_conn(d: Arc<Daemon>, mut s: tokio::net::UnixStream) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let q: std::collections::HashMap<String, String> = qs
        .split('&')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), super::util::percent_decode(v))
        })
        .collect();
    let (code, body) = if path == "/status" {
        (200, serde_json::to_string(&d.status_json())?)
    } else if let Some(op) = path.strip_prefix("/testenv/") {
        if d.role == "worker" {
            (
                400,
                "this command must be run on a controller node".to_string(),
            )
        } else {
            match d.controller_op(op, &q).await {
                Ok(r) => r,
                Err(e) => (500, format!("{e:#}")),
            }
        }
    } else {
        (404, "404 page not found".into())
    };
    let resp = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    Ok(())
}

/// k0s API (:9443).
async fn k0s_api(
    d: Arc<Daemon>,
    caller: Caller,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<api::Body> {
    let path = req.uri().path().to_string();
    let q: std::collections::HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), super::util::percent_decode(v))
        })
        .collect();
    let store = d.store.clone().expect("store");
    let caller = match caller {
        Caller::Bootstrap(t, _) => api::check_token(&store, &t),
        c => c,
    };
    let controller_token = matches!(caller, Caller::Bootstrap(_, true));
    let go_away = || api::full(hyper::StatusCode::UNAUTHORIZED, "text/plain", "go away");
    match path.as_str() {
        "/v1beta1/ca" => {
            if !controller_token && caller != Caller::Cert {
                return go_away();
            }
            let pki = d.data_dir.join("pki");
            let r = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap_or_default();
            api::json_resp(
                hyper::StatusCode::OK,
                &json!({"ca.crt":r("ca.crt"),"ca.key":r("ca.key")}),
            )
        }
        "/v1beta1/etcd/members" => {
            if !controller_token && caller != Caller::Cert {
                return go_away();
            }
            if req.method() != hyper::Method::POST {
                return api::full(
                    hyper::StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    "method not allowed",
                );
            }
            match d.controller_op("etcd-join", &q).await {
                Ok((code, body)) => api::full(
                    hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK),
                    "application/json",
                    body,
                ),
                Err(e) => api::full(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e:#}"),
                ),
            }
        }
        p if p.starts_with("/testenv/") && caller == Caller::Cert => {
            match d.controller_op(&p[9..], &q).await {
                Ok((code, body)) => api::full(
                    hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK),
                    "application/json",
                    body,
                ),
                Err(e) => api::full(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e:#}"),
                ),
            }
        }
        _ => api::full(
            hyper::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n",
        ),
    }
}

/// The kubelet part of a worker: register the Node, then post Ready heartbeats.
async fn kubelet(d: Arc<Daemon>, server: String, tls: TlsClient) {
    let name = node_name(&d.flags);
    let (node_ip, _) = kubelet_extra(&d.flags);
    // InternalIP: `--node-ip` (k0s passes `--kubelet-extra-args` on to the kubelet), else the
    // kubelet's own default (see `util::kubelet_default_node_ip`).
    let ip = node_ip
        .or_else(|| util::kubelet_default_node_ip(&name))
        .or_else(|| util::host_ipv4s().into_iter().next())
        .unwrap_or_else(|| "127.0.0.1".into());
    let started = util::now_rfc3339();
    let kv = k8s_version(&d.version);
    let mut labels = json!({"beta.kubernetes.io/arch":"amd64","beta.kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","kubernetes.io/hostname":name,"kubernetes.io/os":"linux"});
    let mut taints = Vec::<Value>::new();
    if d.role == "controller" {
        labels["node.k0sproject.io/role"] = json!("control-plane");
        labels["node-role.kubernetes.io/control-plane"] = json!("true");
        if !d.single && !d.flags.bool("no-taints") {
            taints
                .push(json!({"key":"node-role.kubernetes.io/control-plane","effect":"NoSchedule"}));
        }
    }
    if let Some(l) = d.flags.get("labels") {
        for kv in l.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                labels[k] = json!(v);
            }
        }
    }
    if let Some(t) = d.flags.get("taints") {
        for t in t.split(',').filter(|s| !s.is_empty()) {
            let (kv, eff) = t.split_once(':').unwrap_or((t, "NoSchedule"));
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let mut tj = json!({"key":k,"effect":eff});
            if !v.is_empty() {
                tj["value"] = json!(v);
            }
            taints.push(tj);
        }
    }
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into());
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // A real kubelet registers its Node NotReady and turns Ready only once the container
    // runtime's network (the CNI) is up, tens of seconds on real hosts; the stand-in waits
    // TESTENV_NODE_READY_DELAY_SECONDS (default 0) after every start.
    let ready_delay = std::time::Duration::from_secs(
        util::knob("TESTENV_NODE_READY_DELAY_SECONDS", 0).max(0) as u64,
    );
    let ready_at = std::time::Instant::now() + ready_delay;
    let ready_since = std::sync::Mutex::new(None::<String>);
    let status = |hb: &str| {
        let ready = std::time::Instant::now() >= ready_at;
        let ready_ltt = if ready {
            ready_since
                .lock()
                .unwrap()
                .get_or_insert_with(|| hb.to_string())
                .clone()
        } else {
            started.clone()
        };
        let cond = |t: &str, st: &str, reason: &str, msg: &str| json!({"type":t,"status":st,"lastHeartbeatTime":hb,"lastTransitionTime":started,"reason":reason,"message":msg});
        let mut ready_cond = if ready {
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            cond(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            )
        };
        ready_cond["lastTransitionTime"] = json!(ready_ltt);
        json!({
            "conditions":[
                cond("MemoryPressure","False","KubeletHasSufficientMemory","kubelet has sufficient memory available"),
                cond("DiskPressure","False","KubeletHasNoDiskPressure","kubelet has no disk pressure"),
                cond("PIDPressure","False","KubeletHasSufficientPID","kubelet has sufficient PID available"),
                ready_cond],
            "addresses":[{"type":"InternalIP","address":ip},{"type":"Hostname","address":name}],
            "capacity":{"cpu":"2","ephemeral-storage":"20Gi","memory":"2Gi","pods":"110"},
            "allocatable":{"cpu":"2","ephemeral-storage":"20Gi","memory":"2Gi","pods":"110"},
            "daemonEndpoints":{"kubeletEndpoint":{"Port":10250}},
            "nodeInfo":{"machineID":machine_id,"systemUUID":machine_id,"bootID":d.invocation_id,"kernelVersion":kernel,"osImage":os_image,
                "containerRuntimeVersion":"containerd://1.7.22","kubeletVersion":kv,"kubeProxyVersion":kv,"operatingSystem":"linux","architecture":"amd64"}
        })
    };
    let base = server.trim_end_matches('/').to_string();
    let mut registered = false;
    loop {
        let hb = util::now_rfc3339();
        let res: Result<()> = async {
            if !registered {
                let (code, _) = util::https_request(&tls, "GET", &format!("{base}/api/v1/nodes/{name}"), &[], None).await?;
                if code == 404 {
                    let node = json!({"apiVersion":"v1","kind":"Node","metadata":{"name":name,"labels":labels,"annotations":{"node.alpha.kubernetes.io/ttl":"0","volumes.kubernetes.io/controller-managed-attach-detach":"true"}},
                        "spec":{"taints":taints},"status":status(&hb)});
                    let (c, b) = util::https_request(&tls, "POST", &format!("{base}/api/v1/nodes"), &[("Content-Type", "application/json")], Some(&serde_json::to_vec(&node)?)).await?;
                    if c != 201 && c != 409 {
                        bail!("register node: HTTP {c}: {}", String::from_utf8_lossy(&b));
                    }
                } else if code == 200 {
                    let patch = json!({"metadata":{"labels":labels}});
                    util::https_request(&tls, "PATCH", &format!("{base}/api/v1/nodes/{name}"), &[("Content-Type", "application/merge-patch+json")], Some(&serde_json::to_vec(&patch)?)).await?;
                } else {
                    bail!("get node: HTTP {code}");
                }
                registered = true;
            }
            let patch = json!({"status":status(&hb)});
            let (c, b) = util::https_request(&tls, "PATCH", &format!("{base}/api/v1/nodes/{name}/status"), &[("Content-Type", "application/merge-patch+json")], Some(&serde_json::to_vec(&patch)?)).await?;
            if c == 404 {
                registered = false;
            } else if c != 200 {
                bail!("node status: HTTP {c}: {}", String::from_utf8_lossy(&b));
            }
            Ok(())
        }
        .await;
        *d.api_ok.lock().unwrap() = match &res {
            Ok(()) => (true, String::new()),
            Err(e) => (
                false,
                format!(
                    "failed to create kube-api client required for kube-api status reports, probably kubelet failed to init: {e:#}"
                ),
            ),
        };
        let mut pause =
            std::time::Duration::from_secs(if res.is_ok() { HEARTBEAT_SECS } else { 2 });
        // Report Ready as soon as it is, not at the next heartbeat.
        let until_ready = ready_at.saturating_duration_since(std::time::Instant::now());
        if !until_ready.is_zero() {
            pause = pause.min(until_ready + std::time::Duration::from_millis(50));
        }
        tokio::time::sleep(pause).await;
    }
}

/// Dynamic config (`--enable-dynamic-config`): the ClusterConfig `kube-system/k0s` object and the
/// `SuccessfulReconcile` event k0sctl waits for (k0s `pkg/component/controller/clusterconfig.go`).
fn publish_cluster_config(store: &Store, cfg: &K0sConfig) {
    let mut cc = cfg.cluster_config_json();
    cc["metadata"] = json!({"name": "k0s", "namespace": "kube-system"});
    if store
        .get("k0s.k0sproject.io/clusterconfigs", "kube-system", "k0s")
        .is_none()
    {
        let _ = store.create("k0s.k0sproject.io/clusterconfigs", "kube-system", cc);
    }
    let now = util::now_rfc3339();
    let _ = store.create(
        "events",
        "kube-system",
        json!({"apiVersion":"v1","kind":"Event",
            "metadata":{"name":format!("k0s.{}", super::api::rand_suffix(10)),"generateName":"k0s.","namespace":"kube-system"},
            "involvedObject":{"kind":"ClusterConfig","name":"k0s","namespace":"kube-system","apiVersion":"k0s.k0sproject.io/v1beta1"},
            "reason":"SuccessfulReconcile","message":"Successfully reconciled cluster config","type":"Normal",
            "action":"ConfigReconciling","reportingComponent":"k0s-controller","reportingInstance":util::hostname(),
            "source":{"component":"k0s-controller"},"firstTimestamp":now,"lastTimestamp":now,"count":1}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_version_of_a_k0s_release() {
        assert_eq!(k8s_version("v1.31.2+k0s.0"), "v1.31.2+k0s");
        assert_eq!(k8s_version("v1.36.3-rc.0+k0s.0"), "v1.36.3+k0s");
        assert_eq!(k8s_version("v1.36.3-rc.0+k0s.1"), "v1.36.3+k0s");
    }

    #[test]
    fn only_v1_35_1_decodes_the_token_at_every_start() {
        assert!(worker_decodes_token_at_every_start("v1.35.1+k0s.0"));
        assert!(!worker_decodes_token_at_every_start("v1.35.2+k0s.0"));
        assert!(!worker_decodes_token_at_every_start("v1.34.1+k0s.0"));
        assert!(!worker_decodes_token_at_every_start("v1.35.1-rc.0+k0s.0"));
    }
}
