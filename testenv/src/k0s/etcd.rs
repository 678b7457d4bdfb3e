//! The stand-in controller's etcd: a real etcd member (the machine's `/usr/bin/etcd`, Debian's
//! etcd 3.4), run and joined the way k0s runs its etcd (upstream `pkg/component/controller/
//! etcd.go`, `pkg/etcd/client.go`, `cmd/api/api.go`):
//!
//! * member name = the host name, data in `<data-dir>/etcd`, peer URL
//!   `https://<spec.storage.etcd.peerAddress>:2380` with peer TLS (certificates from the etcd CA in
//!   `<data-dir>/pki/etcd`, client certificates required between peers);
//! * the first controller starts a one-member cluster (`--initial-cluster-state=new`);
//! * a joining controller asks an existing controller's k0s API (`POST /v1beta1/etcd/members`)
//!   to add it as a member with its peer URL (etcd `MemberAdd`), gets the initial-cluster list and
//!   the etcd CA back, and starts with `--initial-cluster-state=existing`;
//! * once `<data-dir>/etcd/member` exists, a restart just starts etcd on that data directory.
//!
//! Deviation: the client port listens on `http://127.0.0.1:2379` without TLS (k0s uses TLS with
//! client certificates there); it is reachable only inside the host's network namespace. The
//! stand-in talks to it through etcd's JSON gateway (`/v3/...`) with a small blocking HTTP/1.0
//! client.

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CLIENT: &str = "127.0.0.1:2379";
pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

pub fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// int64 fields of the gateway's JSON are strings; missing ones are 0.
pub fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The key after every key with this prefix (etcd's `range_end` for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return b;
        }
    }
    vec![0]
}

/// An error from etcd (`etcdserver: …`) or from reaching it.
#[derive(Debug)]
pub struct EtcdError(pub String);
impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for EtcdError {}

/// Send one request to the gateway; returns the open stream positioned after the headers and
/// the HTTP status.
fn open(path: &str, body: &Value, timeout: Option<Duration>) -> Result<(u16, std::net::TcpStream)> {
    let addr: std::net::SocketAddr = CLIENT.parse()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| EtcdError(format!("dial tcp {CLIENT}: {e}")))?;
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let b = serde_json::to_vec(body)?;
    // HTTP/1.0: the server answers without chunking and closes the connection.
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {CLIENT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        b.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(&b)?;
    // Read the header byte by byte (small), leaving the body in the stream.
    let mut h = Vec::new();
    let mut one = [0u8; 1];
    while !h.ends_with(b"\r\n\r\n") {
        let n = s
            .read(&mut one)
            .map_err(|e| EtcdError(format!("etcd {path}: {e}")))?;
        if n == 0 {
            bail!(EtcdError(format!("etcd {path}: connection closed")));
        }
        h.push(one[0]);
        if h.len() > 16384 {
            bail!("etcd {path}: header too long");
        }
    }
    let head = String::from_utf8_lossy(&h);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, s))
}

/// One unary gateway call (`/v3/kv/range`, `/v3/cluster/member/list`, …). Errors carry etcd's
/// message (`etcdserver: request timed out`, `etcdserver: unhealthy cluster`, …).
pub fn call(path: &str, body: &Value, timeout: Duration) -> Result<Value> {
    let (code, mut s) = open(path, body, Some(timeout))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            EtcdError(format!(
                "etcdserver: request timed out (no answer from etcd in {} s; is a quorum of members up?)",
                timeout.as_secs()
            ))
        } else {
            EtcdError(format!("etcd {path}: {e}"))
        }
    })?;
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    if code != 200 {
        let msg = v["error"]
            .as_str()
            .or(v["message"].as_str())
            .map(|s| s.to_string())
            .unwrap_or_else(|| String::from_utf8_lossy(&out).into_owned());
        bail!(EtcdError(msg));
    }
    Ok(v)
}

/// Default timeout of a store request: a little more than etcd's own request timeout for a
/// cluster without quorum, so that its `etcdserver: request timed out` comes through.
pub const REQ_TIMEOUT: Duration = Duration::from_secs(8);

pub fn range(key: &str, end: Option<&[u8]>, extra: Value) -> Result<Value> {
    let mut b = json!({"key": b64(key.as_bytes())});
    if let Some(e) = end {
        b["range_end"] = json!(b64(e));
    }
    if let Value::Object(m) = extra {
        for (k, v) in m {
            b[k] = v;
        }
    }
    call("/v3/kv/range", &b, REQ_TIMEOUT)
}

/// A linearizable read: succeeds only while the cluster has quorum. Returns the revision.
pub fn quorum_revision() -> Result<u64> {
    let v = range("health", None, json!({}))?;
    Ok(num(&v["header"]["revision"]))
}

pub fn txn(body: &Value) -> Result<Value> {
    call("/v3/kv/txn", body, REQ_TIMEOUT)
}

/// etcd members: (id, name, first peer URL, is learner).
pub fn member_list() -> Result<Vec<(u64, String, String, bool)>> {
    let v = call("/v3/cluster/member/list", &json!({}), REQ_TIMEOUT)?;
    Ok(members_of(&v["members"]))
}

fn members_of(v: &Value) -> Vec<(u64, String, String, bool)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                num(&m["ID"]),
                m["name"].as_str().unwrap_or("").to_string(),
                m["peerURLs"][0].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// `MemberAdd` of a voting member, as k0s's join API does; returns the initial-cluster list
/// (`name=peerURL`, the new member under `name`) in etcd's member order.
pub fn member_add(name: &str, peer_url: &str) -> Result<Vec<String>> {
    let v = call(
        "/v3/cluster/member/add",
        &json!({"peerURLs": [peer_url]}),
        REQ_TIMEOUT,
    )?;
    let new_id = num(&v["member"]["ID"]);
    Ok(members_of(&v["members"])
        .into_iter()
        .map(|(id, n, url, _)| {
            let n = if id == new_id { name.to_string() } else { n };
            format!("{n}={url}")
        })
        .collect())
}

pub fn member_remove(id: u64) -> Result<()> {
    call(
        "/v3/cluster/member/remove",
        &json!({"ID": id.to_string()}),
        REQ_TIMEOUT,
    )?;
    Ok(())
}

/// k0s's `GetPeerIDByAddress`: the member whose first peer URL is `peer_url`.
pub fn peer_id(peer_url: &str) -> Result<u64> {
    for (id, _, url, _) in member_list()? {
        if url == peer_url {
            return Ok(id);
        }
    }
    bail!("peer not found: {peer_url}")
}

/// Open a watch stream from `start` over `prefix` (with previous values for deletes); yields the
/// gateway's JSON messages one after another. No read timeout: the stream ends when etcd goes.
pub fn watch(prefix: &str, start: u64) -> Result<impl Iterator<Item = Value>> {
    let body = json!({"create_request": {
        "key": b64(prefix.as_bytes()),
        "range_end": b64(&prefix_end(prefix)),
        "start_revision": start.to_string(),
        "prev_kv": true,
    }});
    let (code, s) = open("/v3/watch", &body, None)?;
    if code != 200 {
        bail!(EtcdError(format!("etcd watch: HTTP {code}")));
    }
    Ok(
        serde_json::Deserializer::from_reader(std::io::BufReader::new(s))
            .into_iter::<Value>()
            .map_while(|r| r.ok()),
    )
}

/// `https://<peer>:2380` (IPv6 in brackets).
pub fn peer_url(peer: &str) -> String {
    if peer.contains(':') && !peer.starts_with('[') {
        format!("https://[{peer}]:2380")
    } else {
        format!("https://{peer}:2380")
    }
}

/// The etcd CA (`pki/etcd/ca.{crt,key}`) and this member's peer certificate
/// (`pki/etcd/peer.{crt,key}`, server and client use, SANs: peer address, host name, localhost).
pub fn ensure_pki(pki: &Path, peer: &str) -> Result<()> {
    let dir = pki.join("etcd");
    std::fs::create_dir_all(&dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    }
    super::pki::ensure_ca(&dir)?;
    if !dir.join("peer.crt").exists() {
        let sans = vec![
            peer.to_string(),
            super::util::hostname(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        let (c, k) = super::pki::issue(&dir, "etcd-peer", &[], &sans, true, true)?;
        super::util::write_mode(&dir.join("peer.crt"), c.as_bytes(), 0o644)?;
        super::util::write_mode(&dir.join("peer.key"), k.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// How this member starts.
pub enum Start {
    /// First controller: a new one-member cluster.
    New,
    /// Joined through an existing member: the initial-cluster list from `MemberAdd`.
    Existing(Vec<String>),
    /// Data directory exists already.
    Restart,
}

/// A running etcd child process; stopped (SIGTERM, then SIGKILL) when dropped or with `stop`.
pub struct Member {
    child: Option<std::process::Child>,
}

pub fn data_dir(k0s_data_dir: &Path) -> PathBuf {
    k0s_data_dir.join("etcd")
}

pub fn is_member(k0s_data_dir: &Path) -> bool {
    data_dir(k0s_data_dir).join("member").exists()
}

pub fn spawn(k0s_data_dir: &Path, peer: &str, start: Start) -> Result<Member> {
    let pki = k0s_data_dir.join("pki/etcd");
    let dd = data_dir(k0s_data_dir);
    std::fs::create_dir_all(&dd)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dd, std::fs::Permissions::from_mode(0o700))?;
    }
    let name = super::util::hostname();
    let url = peer_url(peer);
    let p = |f: &str| pki.join(f).display().to_string();
    let mut args: Vec<String> = vec![
        format!("--name={name}"),
        format!("--data-dir={}", dd.display()),
        format!("--listen-client-urls=http://{CLIENT}"),
        format!("--advertise-client-urls=http://{CLIENT}"),
        format!("--listen-peer-urls={url}"),
        format!("--initial-advertise-peer-urls={url}"),
        format!("--peer-cert-file={}", p("peer.crt")),
        format!("--peer-key-file={}", p("peer.key")),
        format!("--peer-trusted-ca-file={}", p("ca.crt")),
        "--peer-client-cert-auth=true".into(),
        "--logger=zap".into(),
        "--log-level=warn".into(),
    ];
    match start {
        Start::New => {
            args.push(format!("--initial-cluster={name}={url}"));
            args.push("--initial-cluster-state=new".into());
        }
        Start::Existing(list) => {
            args.push(format!("--initial-cluster={}", list.join(",")));
            args.push("--initial-cluster-state=existing".into());
        }
        Start::Restart => {}
    }
    let mut c = std::process::Command::new(ETCD_BIN);
    c.args(&args).stdin(std::process::Stdio::null());
    // etcd must not outlive the k0s process that supervises it.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = c
        .spawn()
        .with_context(|| format!("start {ETCD_BIN} (install Debian's etcd-server package)"))?;
    super::util::log_info(&format!(
        "etcd member {name} started (pid {}, peer {url})",
        child.id()
    ));
    Ok(Member { child: Some(child) })
}

impl Member {
    /// Has the process exited? (e.g. after its member was removed from the cluster)
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            for _ in 0..100 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until this member serves linearizable reads (the cluster has quorum), up to `secs`.
pub fn wait_ready(secs: u64) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match quorum_revision() {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => {
                bail!("etcd did not become ready in {secs} s: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `etcdctl snapshot save` against this member (what k0s's backup does with the etcd client).
pub fn snapshot_save(path: &Path) -> Result<()> {
    let out = std::process::Command::new(ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{CLIENT}"))
        .arg("snapshot")
        .arg("save")
        .arg(path)
        .output()
        .with_context(|| format!("run {ETCDCTL_BIN} (install Debian's etcd-client package)"))?;
    if !out.status.success() {
        bail!(
            "etcd snapshot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Restore a snapshot into `<data-dir>/etcd` as a one-member cluster of this host (member name =
/// host name, peer `https://<peer>:2380`), as k0s's restore does.
pub fn snapshot_restore(snapshot: &Path, k0s_data_dir: &Path, peer: &str) -> Result<()> {
    let dd = data_dir(k0s_data_dir);
    if dd.exists() {
        std::fs::remove_dir_all(&dd)?;
    }
    let name = super::util::hostname();
    let url = peer_url(peer);
    let out = std::process::Command::new(ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg(format!("--data-dir={}", dd.display()))
        .arg(format!("--name={name}"))
        .arg(format!("--initial-cluster={name}={url}"))
        .arg(format!("--initial-advertise-peer-urls={url}"))
        .output()
        .with_context(|| format!("run {ETCDCTL_BIN} (install Debian's etcd-client package)"))?;
    if !out.status.success() {
        bail!(
            "etcd snapshot restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
