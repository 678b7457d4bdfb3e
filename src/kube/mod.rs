//! The Kubernetes client room: a kube-rs [`Client`] that reaches the leader's API server
//! through the leader's existing host connection, and the node operations upgrades need
//! (cordon, taints, readiness, PodDisruptionBudgets, a PDB-aware drain).
//!
//! Arrows: phases → `kube` → [`crate::transport`]; this module knows nothing of phases, the
//! manifest model is used only for the drain/taint option structs ([`DrainOptions::from`]).
//!
//! - [`client`] (this file): kubeconfig + [`Remote`] → [`Client`]. Every HTTP connection is a
//!   [`Remote::open_tunnel`] to the API server *as the leader sees it* (`127.0.0.1:6443` by
//!   default), so it works when 6443 is not reachable from the operator's machine and needs no
//!   kubectl on any host. TLS is verified against the kubeconfig's CA with the server name
//!   `localhost` (k0s puts `localhost` and `127.0.0.1` in the API server certificate's SANs;
//!   `pki/admin.conf` itself uses `https://localhost:6443`). kube's retry layer is off
//!   (`default_retry = false`): it would hide a PodDisruptionBudget's 429 for minutes
//!   (kube's retry layer retries 429 with backoff); the drain has its own retry loop.
//!   With `spec.api.onlyBindToAddress` the API server listens only on `spec.api.address` and
//!   k0s writes that address into `pki/admin.conf` (k0s's "local URL"); [`ApiEndpoint::
//!   from_kubeconfig`] takes the endpoint from there, so the tunnel goes where the API is bound.
//! - No TCP forwarding: when the host's sshd refuses `direct-tcpip` channels ("administratively
//!   prohibited", `AllowTcpForwarding no`), each connection is instead an exec channel running a
//!   byte relay to the same `host:port` on the leader (`bash`'s `/dev/tcp`, else `nc`, else
//!   `socat`; see [`relay_command`]). The HTTP, TLS, drain and its events are unchanged; only
//!   the carrier differs. This needs no forwarding permission: sshd's `AllowTcpForwarding`
//!   documents that it does not restrict users with shell access, and k0sctl itself reaches the
//!   API from an exec channel (`k0s kubectl` on the leader). Said once per host at info level.
//! - [`node`]: cordon/uncordon, evict taint, Ready wait, versions.
//! - [`pdb`]: label selectors, which PDBs block which pods, 429 cause parsing.
//! - [`drain`]: kubectl-compatible drain with PDB-aware events and a typed "blocked" error.

pub mod drain;
pub mod node;
pub mod pdb;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

pub use ::kube::Client;
use ::kube::client::ConfigExt;
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use drain::{Blocked, Blocker, DrainEvent, DrainOptions, DrainReport, drain};
pub use node::{
    EvictTaint, add_taint, cordon, list_nodes, node_ready, node_ready_with, node_version,
    remove_taint, taint_strings, uncordon, wait_node_ready,
};
pub use pdb::{BlockingPdb, blocking_pdbs};

use crate::transport::{Remote, Secret, TransportError, Tunnel};

/// Errors of the Kubernetes room. Each names what was being done; none carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The admin kubeconfig could not be used (the text itself is never shown).
    #[error("admin kubeconfig: {0}")]
    Kubeconfig(String),
    /// An API call failed (the message includes the whole cause chain: tunnel, TLS, HTTP).
    #[error("{what}: {}", error_chain(source))]
    Api {
        what: String,
        #[source]
        source: ::kube::Error,
    },
    /// Waiting for something ran out of time.
    #[error("{what}: not done after {}", drain::fmt_duration(*after))]
    Timeout { what: String, after: Duration },
    /// kubectl's drain pre-check: pods that may not be deleted without an option.
    #[error("cannot drain node {node}: {}", reasons.join("; "))]
    Refused { node: String, reasons: Vec<String> },
    /// A drain did not finish before its timeout because evictions kept being refused
    /// (PodDisruptionBudgets). Exit code "blocked by the cluster".
    #[error(transparent)]
    Blocked(Box<drain::Blocked>),
    /// A value from the configuration is malformed (taint, pod selector).
    #[error("{0}")]
    Invalid(String),
}

impl KubeError {
    pub(crate) fn api(what: impl Into<String>, source: ::kube::Error) -> Self {
        KubeError::Api {
            what: what.into(),
            source,
        }
    }
    /// The drain was blocked by the cluster (PodDisruptionBudgets) until its timeout.
    pub fn is_blocked(&self) -> bool {
        matches!(self, KubeError::Blocked(_))
    }

    /// The API call failed because the connection to the host carrying the API tunnel was
    /// lost: the typed [`KubeTunnelError`] somewhere in kube's cause chain (hyper and tower
    /// wrap a connector's error but keep it as a `source`) says so.
    pub fn connection_lost(&self) -> bool {
        let KubeError::Api { source, .. } = self else {
            return false;
        };
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source as _);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<KubeTunnelError>() {
                return t.lost;
            }
            cur = e.source();
        }
        false
    }
}

/// `e: its source: its source…`, skipping a source already contained in the text so far.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

/// Where the API server is from the tunnel host's point of view, and the TLS name to verify.
#[derive(Debug, Clone)]
pub struct ApiEndpoint {
    /// Address the host connects to (default `127.0.0.1`).
    pub host: String,
    /// API port (default 6443, k0s's `spec.api.port`).
    pub port: u16,
    /// Name checked against the server certificate (default `localhost`, which k0s always
    /// includes in the API server's SANs).
    pub tls_name: String,
    /// Time to open one tunnel (default 30 s).
    pub connect_timeout: Duration,
}

impl Default for ApiEndpoint {
    fn default() -> Self {
        ApiEndpoint {
            host: "127.0.0.1".into(),
            port: 6443,
            tls_name: "localhost".into(),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl ApiEndpoint {
    /// The leader's own API server on `port`.
    pub fn local(port: u16) -> Self {
        ApiEndpoint {
            port,
            ..Default::default()
        }
    }

    /// Where the API server listens, from the leader's own admin kubeconfig (`pki/admin.conf`):
    /// k0s writes its local URL there, `https://localhost:<port>` normally and
    /// `https://<spec.api.address>:<port>` with `spec.api.onlyBindToAddress` (then nothing
    /// listens on 127.0.0.1). `localhost` becomes `127.0.0.1`; a URL without a port keeps
    /// `default_port`. The TLS name stays `localhost` (always in k0s's API certificate).
    pub fn from_kubeconfig(kubeconfig: &Secret, default_port: u16) -> Result<Self, KubeError> {
        let server = kubeconfig_server(kubeconfig)?;
        let uri: http::Uri = server
            .parse()
            .map_err(|_| KubeError::Kubeconfig("the cluster's server is not a URL".into()))?;
        let host = uri
            .host()
            .ok_or_else(|| KubeError::Kubeconfig("the cluster's server has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let host = if host.eq_ignore_ascii_case("localhost") {
            "127.0.0.1".to_string()
        } else {
            host
        };
        Ok(ApiEndpoint {
            host,
            port: uri.port_u16().unwrap_or(default_port),
            ..Default::default()
        })
    }
}

/// The server URL of the kubeconfig's current context (never shows the kubeconfig).
fn kubeconfig_server(kubeconfig: &Secret) -> Result<String, KubeError> {
    let kc = Kubeconfig::from_yaml(kubeconfig.expose()).map_err(|_| {
        KubeError::Kubeconfig("not a valid kubeconfig (the YAML could not be read)".into())
    })?;
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let cluster = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .or_else(|| (kc.clusters.len() == 1).then(|| kc.clusters[0].name.clone()))
        .ok_or_else(|| KubeError::Kubeconfig("no current context".into()))?;
    kc.clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| KubeError::Kubeconfig("the cluster has no server".into()))
}

/// How API connections reach the API server from the tunnel host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// SSH `direct-tcpip` channels (or `ssh -W`, or plain TCP for localhost).
    Tunnel,
    /// Exec channels running `bash` with `/dev/tcp`.
    Bash,
    /// Exec channels running `nc host port`.
    Nc,
    /// Exec channels running `socat - TCP:host:port`.
    Socat,
}

impl Carrier {
    fn describe(self) -> &'static str {
        match self {
            Carrier::Tunnel => "SSH TCP forwarding",
            Carrier::Bash => "a relay over an SSH exec channel (bash /dev/tcp)",
            Carrier::Nc => "a relay over an SSH exec channel (nc)",
            Carrier::Socat => "a relay over an SSH exec channel (socat)",
        }
    }
}

/// The exec-channel command that relays stdin/stdout to `host:port` as seen from the host.
/// bash: both directions in the background, the first to end (server closed, or the channel's
/// stdin closed) ends the other, so no relay outlives its connection.
/// `None` for [`Carrier::Tunnel`] and for a host that is not a plain name or address.
pub fn relay_command(carrier: Carrier, host: &str, port: u16) -> Option<String> {
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-_".contains(c))
    {
        return None;
    }
    let h = crate::transport::shell_quote(host);
    match carrier {
        Carrier::Tunnel => None,
        Carrier::Bash => Some(format!(
            "exec bash -c {}",
            crate::transport::shell_quote(&format!(
                "exec 3<>/dev/tcp/{host}/{port} || exit 1; exec 4<&0; \
                 cat <&4 >&3 & a=$!; cat <&3 & b=$!; wait -n; kill $a $b 2>/dev/null; exit 0"
            ))
        )),
        Carrier::Nc => Some(format!("exec nc {h} {port}")),
        Carrier::Socat => Some(format!(
            "exec socat - {}",
            crate::transport::shell_quote(&format!("TCP:{host}:{port}"))
        )),
    }
}

/// Which relay the host can run: the first of bash (with `wait -n`), nc, socat.
const RELAY_DETECT: &str = "if command -v bash >/dev/null 2>&1 && bash -c ': & wait -n' 2>/dev/null; then echo bash; \
elif command -v nc >/dev/null 2>&1; then echo nc; \
elif command -v socat >/dev/null 2>&1; then echo socat; else echo none; fi";

/// The carrier chosen per host for this process (so a refused tunnel is tried once per host
/// and the switch is said once).
fn carriers() -> &'static std::sync::Mutex<std::collections::HashMap<String, Carrier>> {
    static M: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Carrier>>> =
        std::sync::OnceLock::new();
    M.get_or_init(Default::default)
}

/// Counts the tunnels a client opened (each is one TCP connection the leader made to the API
/// server); for logs and tests.
#[derive(Debug, Clone, Default)]
pub struct TunnelStats(Arc<AtomicUsize>);

impl TunnelStats {
    pub fn opened(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Builds a [`Client`] for the cluster whose admin kubeconfig is `kubeconfig` (the output of
/// `k0s kubeconfig admin` or `pki/admin.conf`; its current context, CA and client certificate
/// are used, its server URL is not), connecting through `remote` to `endpoint`. No request is
/// made here; the first API call opens the first tunnel. Connections are pooled by hyper and
/// reused.
pub async fn client(
    remote: &Remote,
    kubeconfig: &Secret,
    endpoint: &ApiEndpoint,
) -> Result<(Client, TunnelStats), KubeError> {
    // main() installs ring; library users (tests) may not have. Installing twice is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Errors of the YAML parser may quote the input: never show them.
    let kc = Kubeconfig::from_yaml(kubeconfig.expose()).map_err(|_| {
        KubeError::Kubeconfig("not a valid kubeconfig (the YAML could not be read)".into())
    })?;
    let mut cfg = ::kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| KubeError::Kubeconfig(kubeconfig_error(&e)))?;
    let url = format!("https://{}:{}", bracket(&endpoint.tls_name), endpoint.port);
    cfg.cluster_url = url
        .parse()
        .map_err(|_| KubeError::Invalid(format!("invalid API URL {url}")))?;
    cfg.default_retry = false;
    cfg.tls_server_name = None;
    cfg.proxy_url = None;
    let stats = TunnelStats::default();
    let connector = TunnelConnector {
        remote: remote.clone(),
        host: endpoint.host.clone().into(),
        port: endpoint.port,
        timeout: endpoint.connect_timeout,
        stats: stats.clone(),
        relays: Arc::new(tokio::sync::Semaphore::new(MAX_RELAYS)),
    };
    let map = |e: ::kube::Error| KubeError::Kubeconfig(format!("cannot set up TLS: {e}"));
    let https = cfg
        .rustls_https_connector_with_connector(connector)
        .map_err(map)?;
    let http: hyper_util::client::legacy::Client<_, ::kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(cfg.base_uri_layer())
        .option_layer(cfg.auth_layer().map_err(map)?)
        .layer(cfg.extra_headers_layer().map_err(map)?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok((Client::new(service, cfg.default_namespace), stats))
}

/// A kubeconfig loading error without any of the kubeconfig's content.
fn kubeconfig_error(e: &::kube::config::KubeconfigError) -> String {
    use ::kube::config::KubeconfigError as K;
    match e {
        K::CurrentContextNotSet => "no current-context".into(),
        K::LoadContext(c) => format!("context {c:?} not found"),
        K::LoadClusterOfContext(c) => format!("the cluster of context {c:?} not found"),
        K::MissingClusterUrl => "the cluster has no server".into(),
        K::LoadCertificateAuthority(_) => "the certificate authority could not be read".into(),
        K::LoadClientCertificate(_) | K::LoadClientKey(_) | K::ParseCertificates(_) => {
            "the client certificate or key could not be read".into()
        }
        _ => "the cluster or user entry is unusable".into(),
    }
}

fn bracket(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

/// At most this many relay exec channels at once per client: each is an SSH session, and
/// sshd's `MaxSessions` (10 by default) is shared with the tool's own commands.
const MAX_RELAYS: usize = 4;

/// hyper connector whose every connection is a tunnel through the host (or a relay over an
/// exec channel when the host refuses tunnels).
#[derive(Clone)]
struct TunnelConnector {
    remote: Remote,
    host: Arc<str>,
    port: u16,
    timeout: Duration,
    stats: TunnelStats,
    relays: Arc<tokio::sync::Semaphore>,
}

impl TunnelConnector {
    fn err(&self, reason: String) -> KubeTunnelError {
        KubeTunnelError {
            host: self.remote.name().to_string(),
            reason,
            lost: false,
        }
    }

    /// A transport failure, keeping whether it was the host's connection that was lost.
    fn transport_err(&self, e: TransportError) -> KubeTunnelError {
        KubeTunnelError {
            lost: matches!(e, TransportError::Disconnected { .. }),
            ..self.err(e.to_string())
        }
    }

    /// The carrier for this host: a tunnel unless one was refused before.
    fn carrier(&self) -> Carrier {
        carriers()
            .lock()
            .unwrap()
            .get(self.remote.name())
            .copied()
            .unwrap_or(Carrier::Tunnel)
    }

    /// After a refused tunnel: find a relay the host can run, remember it, say so once.
    async fn switch_to_relay(&self, refusal: &str) -> Result<Carrier, KubeTunnelError> {
        if let Some(c) = carriers().lock().unwrap().get(self.remote.name()).copied()
            && c != Carrier::Tunnel
        {
            return Ok(c);
        }
        let out = self
            .remote
            .run_str(
                crate::transport::Cmd::new(RELAY_DETECT).display_as("(detect a relay command)"),
            )
            .await
            .map_err(|e| {
                let lost = matches!(e, TransportError::Disconnected { .. });
                KubeTunnelError {
                    lost,
                    ..self.err(format!("{refusal}; looking for a relay command: {e}"))
                }
            })?;
        let c = match out.trim() {
            "bash" => Carrier::Bash,
            "nc" => Carrier::Nc,
            "socat" => Carrier::Socat,
            _ => {
                return Err(self.err(format!(
                    "{refusal}, and the host has none of bash, nc or socat to relay the \
                     Kubernetes API over an exec channel: allow TCP forwarding for this user \
                     (sshd `AllowTcpForwarding`) or install one of them"
                )));
            }
        };
        let mut m = carriers().lock().unwrap();
        if !m.contains_key(self.remote.name()) {
            tracing::info!(
                about = %self.remote.name(),
                "SSH TCP forwarding is off (the server refused a direct-tcpip channel); \
                 reaching the Kubernetes API at {}:{} through {}",
                self.host,
                self.port,
                c.describe()
            );
        }
        m.insert(self.remote.name().to_string(), c);
        Ok(c)
    }

    async fn open_relay(&self, c: Carrier) -> Result<crate::transport::Tunnel, KubeTunnelError> {
        let permit = self
            .relays
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let cmd = relay_command(c, &self.host, self.port).ok_or_else(|| {
            self.err(format!(
                "cannot relay to {:?}: not a host name or address",
                self.host
            ))
        })?;
        let t = self
            .remote
            .open_exec_stream(&cmd)
            .await
            .map_err(|e| self.transport_err(e))?;
        Ok(Box::new(Permitted { t, _permit: permit }))
    }
}

/// A stream that holds a semaphore permit while it lives.
struct Permitted {
    t: crate::transport::Tunnel,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.t).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.t).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.t).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.t).poll_shutdown(cx)
    }
}

impl tower::Service<http::Uri> for TunnelConnector {
    type Response = TokioIo<TunnelConn>;
    type Error = KubeTunnelError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        // The URI names the TLS server (localhost); the bytes go to the configured endpoint.
        let me = self.clone();
        Box::pin(async move {
            let timed_out = || {
                me.err(format!(
                    "opening a connection to {}:{} timed out after {:?}",
                    me.host, me.port, me.timeout
                ))
            };
            // OpenSSH's `ssh -W` cannot report a refusal when it is opened: ask once per host.
            let mut carrier = me.carrier();
            if carrier == Carrier::Tunnel
                && matches!(
                    **me.remote.connection(),
                    crate::transport::Connection::OpenSsh(_)
                )
                && !carriers().lock().unwrap().contains_key(me.remote.name())
            {
                match tokio::time::timeout(
                    me.timeout,
                    me.remote.probe_forwarding_refusal(&me.host, me.port),
                )
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| me.transport_err(e))?
                {
                    Some(refusal) => carrier = me.switch_to_relay(&refusal).await?,
                    None => {
                        carriers()
                            .lock()
                            .unwrap()
                            .insert(me.remote.name().to_string(), Carrier::Tunnel);
                    }
                }
            }
            let t = match carrier {
                Carrier::Tunnel => {
                    match tokio::time::timeout(me.timeout, me.remote.open_tunnel(&me.host, me.port))
                        .await
                        .map_err(|_| timed_out())?
                    {
                        Ok(t) => t,
                        Err(e) if crate::transport::tunnel::is_forwarding_refused(&e) => {
                            let c = me.switch_to_relay(&e.to_string()).await?;
                            tokio::time::timeout(me.timeout, me.open_relay(c))
                                .await
                                .map_err(|_| timed_out())??
                        }
                        Err(e) => return Err(me.transport_err(e)),
                    }
                }
                c => tokio::time::timeout(me.timeout, me.open_relay(c))
                    .await
                    .map_err(|_| timed_out())??,
            };
            me.stats.0.fetch_add(1, Ordering::SeqCst);
            tracing::trace!(host = me.remote.name(), "API tunnel opened");
            Ok(TokioIo::new(TunnelConn(t)))
        })
    }
}

/// Why a tunnel for an API connection failed (inside kube's error chain).
#[derive(Debug, thiserror::Error)]
#[error("tunnel through {host}: {reason}")]
pub struct KubeTunnelError {
    host: String,
    reason: String,
    /// The host's connection was lost (the transport said so, typed): no tunnel can be opened
    /// through it any more.
    lost: bool,
}

/// A tunnel as a hyper connection.
struct TunnelConn(Tunnel);

impl Connection for TunnelConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for TunnelConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kc(server: &str) -> Secret {
        Secret::new(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\ncontexts:\n- name: Default\n  context:\n    cluster: local\n    user: user\ncurrent-context: Default\nusers:\n- name: user\n  user: {{}}\n"
        ))
    }

    // k0s's local URL (`APISpec.LocalURL`): localhost normally, the bound address with
    // onlyBindToAddress.
    #[test]
    fn endpoint_follows_the_admin_kubeconfig() {
        let e = ApiEndpoint::from_kubeconfig(&kc("https://localhost:6443"), 1).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 6443));
        let e = ApiEndpoint::from_kubeconfig(&kc("https://10.1.0.5:7443"), 1).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.1.0.5", 7443));
        assert_eq!(e.tls_name, "localhost");
        let e = ApiEndpoint::from_kubeconfig(&kc("https://[fd00::5]:6443"), 1).unwrap();
        assert_eq!(e.host, "fd00::5");
        let e = ApiEndpoint::from_kubeconfig(&kc("https://10.1.0.5"), 6444).unwrap();
        assert_eq!(e.port, 6444);
    }

    /// A client over a scripted host whose tunnels fail: lost (a `lose` rule) or refused.
    async fn list_nodes_through(name: &str, lose: bool) -> KubeError {
        use crate::transport::scripted::{Script, ScriptedConnection};
        let s = Script::new();
        if lose {
            s.lose("open tunnel to 127.0.0.1:6443");
        }
        let conn = crate::transport::Connection::Scripted(ScriptedConnection::new(name, s.clone()));
        let remote = Remote::new(
            Arc::new(conn),
            Arc::new(crate::transport::Limits::default()),
        );
        let kc = kc("https://localhost:6443");
        let endpoint = ApiEndpoint::from_kubeconfig(&kc, 1).unwrap();
        let (client, _) = client(&remote, &kc, &endpoint).await.unwrap();
        let e = list_nodes(&client).await.unwrap_err();
        assert!(
            s.has_run("open tunnel to 127.0.0.1:6443"),
            "{:?}",
            s.commands()
        );
        e
    }

    // The typed cause survives hyper's and tower's wrapping: a lost leader connection during an
    // API call is told apart from any other API failure without reading words.
    #[tokio::test]
    async fn a_lost_tunnel_host_is_a_lost_connection() {
        let e = list_nodes_through("root@lost-host", true).await;
        assert!(e.connection_lost(), "{e}");
        let e = list_nodes_through("root@refusing-host", false).await;
        assert!(!e.connection_lost(), "{e}");
        assert!(!KubeError::Invalid("connection lost".into()).connection_lost());
    }

    #[test]
    fn relay_commands() {
        let b = relay_command(Carrier::Bash, "10.1.0.5", 6443).unwrap();
        assert!(b.contains("/dev/tcp/10.1.0.5/6443"), "{b}");
        assert_eq!(
            relay_command(Carrier::Nc, "127.0.0.1", 6443).unwrap(),
            "exec nc 127.0.0.1 6443"
        );
        assert!(relay_command(Carrier::Tunnel, "127.0.0.1", 6443).is_none());
        assert!(relay_command(Carrier::Bash, "a;rm -rf /", 6443).is_none());
    }
}
