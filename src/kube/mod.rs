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
//!   (rust-deps.md §5); the drain has its own retry loop.
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
    EvictTaint, add_taint, cordon, list_nodes, node_ready, node_version, remove_taint,
    taint_strings, uncordon, wait_node_ready,
};
pub use pdb::{BlockingPdb, blocking_pdbs};

use crate::transport::{Remote, Secret, Tunnel};

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
    /// True when the API could not be reached at all (tunnel or connection failures).
    pub fn is_unreachable(&self) -> bool {
        match self {
            KubeError::Api { source, .. } => matches!(
                source,
                ::kube::Error::HyperError(_) | ::kube::Error::Service(_)
            ),
            _ => false,
        }
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

/// hyper connector whose every connection is a tunnel through the host.
#[derive(Clone)]
struct TunnelConnector {
    remote: Remote,
    host: Arc<str>,
    port: u16,
    timeout: Duration,
    stats: TunnelStats,
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
            let t = tokio::time::timeout(me.timeout, me.remote.open_tunnel(&me.host, me.port))
                .await
                .map_err(|_| KubeTunnelError {
                    host: me.remote.name().to_string(),
                    reason: format!(
                        "opening a tunnel to {}:{} timed out after {:?}",
                        me.host, me.port, me.timeout
                    ),
                })?
                .map_err(|e| KubeTunnelError {
                    host: me.remote.name().to_string(),
                    reason: e.to_string(),
                })?;
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
