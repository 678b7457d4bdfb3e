//! Native SSH transport (russh 0.65, ring), behaving the way OpenSSH users expect: keys
//! (ed25519, ecdsa, rsa-sha2), encrypted keys, user certificates and ssh-agent ([`auth`]),
//! `~/.ssh/config` ([`config`]), known_hosts with accept-new, hashed names, `@cert-authority`
//! and `@revoked` ([`known_hosts`]), bastions / ProxyJump sharing one connection per bastion
//! ([`bastion`]), keepalive, connect timeout and retries with backoff for transient failures
//! only (authentication and host-key errors are final).
//!
//! Commands run on session channels of one shared connection. The channel is split and the
//! stdin writer runs in its own task that is aborted as soon as the remote side closes, so a
//! command that exits before reading its input never hangs the upload (russh's channel writer otherwise blocks forever once the ~2 MiB window is used up).

pub mod auth;
pub mod bastion;
pub mod config;
pub mod known_hosts;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::Algorithm;
use russh::{ChannelMsg, Disconnect, Sig};

pub use bastion::BastionPool;
pub use config::{HostConfig, SshConfig};
pub use known_hosts::{KnownHostsConfig, StrictHostKeyChecking};

use super::{
    ExecRequest, ExitStatus, HostKeyError, Output, Secret, StreamKind, Transport, TransportError,
    pump_stdin,
};

/// Default ServerAliveInterval of the native transport.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);
/// Default ServerAliveCountMax of the native transport.
pub const DEFAULT_KEEPALIVE_MAX: u32 = 2;

/// Connection options of the native transport (k0sctl.yaml `ssh:` block, after merging
/// `~/.ssh/config` with [`SshOptions::resolve`]).
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Address to connect to (IP or DNS name); also the name looked up in known_hosts.
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Identity files, tried in order before agent keys.
    pub key_paths: Vec<PathBuf>,
    /// Extra certificate files (besides `<key>-cert.pub`).
    pub certificates: Vec<PathBuf>,
    /// Only the configured keys, no other agent keys.
    pub identities_only: bool,
    /// Use ssh-agent.
    pub use_agent: bool,
    /// Agent socket (default `$SSH_AUTH_SOCK`).
    pub agent_socket: Option<PathBuf>,
    /// Passphrase for encrypted keys (else env, else TTY prompt).
    pub passphrase: Option<Secret>,
    pub known_hosts: KnownHostsConfig,
    pub connect_timeout: Duration,
    /// ServerAliveInterval; `None` disables keepalives.
    pub keepalive_interval: Option<Duration>,
    /// ServerAliveCountMax: keepalives that may go unanswered; the connection is declared
    /// lost when the next one is due, so a dead peer is noticed after about
    /// `keepalive_interval × (keepalive_max + 1)` (default 5 s × 3 = 15 s).
    pub keepalive_max: u32,
    /// Extra attempts for transient failures (refused, reset, dropped handshakes), with
    /// backoff from 250 ms doubling to 5 s; a connect timeout is retried once at most.
    pub retries: u32,
    /// Jump host (recursive), from `ssh.bastion` or ProxyJump.
    pub bastion: Option<Box<SshOptions>>,
    /// Concurrent handshakes through one bastion (keep below the target sshd's MaxStartups).
    pub bastion_handshakes: usize,
}

impl SshOptions {
    /// Defaults: port 22, agent on, accept-new with the default known_hosts files, 10 s connect
    /// timeout, a keepalive every 5 s of which 2 may go unanswered (a dead peer is noticed
    /// within about 15 s), 3 retries.
    pub fn new(address: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        SshOptions {
            address: address.into(),
            port,
            user: user.into(),
            key_paths: vec![],
            certificates: vec![],
            identities_only: false,
            use_agent: true,
            agent_socket: None,
            passphrase: None,
            known_hosts: KnownHostsConfig::default(),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Some(DEFAULT_KEEPALIVE),
            keepalive_max: DEFAULT_KEEPALIVE_MAX,
            retries: 3,
            bastion: None,
            bastion_handshakes: 8,
        }
    }

    pub fn key(mut self, p: impl Into<PathBuf>) -> Self {
        self.key_paths.push(p.into());
        self
    }
    pub fn known_hosts_file(mut self, p: impl Into<PathBuf>) -> Self {
        self.known_hosts.user_files = vec![p.into()];
        self.known_hosts.global_files.clear();
        self
    }
    pub fn bastion(mut self, b: SshOptions) -> Self {
        self.bastion = Some(Box::new(b));
        self
    }

    /// Merge the k0sctl.yaml fields with `~/.ssh/config` the way `ssh` merges command-line
    /// options: explicit values win, then the first matching config value, then defaults
    /// (user `root` as in k0sctl). ProxyJump becomes the bastion when none is given.
    pub fn resolve(
        address: &str,
        port: Option<u16>,
        user: Option<&str>,
        key_path: Option<PathBuf>,
        cfg: &SshConfig,
    ) -> Result<Self, TransportError> {
        Self::resolve_depth(address, port, user, key_path, cfg, 0)
    }

    fn resolve_depth(
        address: &str,
        port: Option<u16>,
        user: Option<&str>,
        key_path: Option<PathBuf>,
        cfg: &SshConfig,
        depth: usize,
    ) -> Result<Self, TransportError> {
        if depth > 8 {
            return Err(TransportError::Config(format!(
                "ProxyJump chain for {address} is too deep (loop?)"
            )));
        }
        let hc = cfg.query(address);
        let mut o = SshOptions::new(
            hc.host_name.clone().unwrap_or_else(|| address.to_string()),
            port.or(hc.port).unwrap_or(22),
            user.map(str::to_string)
                .or(hc.user.clone())
                .unwrap_or_else(|| "root".into()),
        );
        o.key_paths = match key_path {
            Some(k) => vec![k],
            None => hc.identity_files.clone(),
        };
        o.certificates = hc.certificate_files.clone();
        o.identities_only = hc.identities_only.unwrap_or(false);
        if !hc.user_known_hosts_files.is_empty() {
            o.known_hosts.user_files = hc.user_known_hosts_files.clone();
        }
        if !hc.global_known_hosts_files.is_empty() {
            o.known_hosts.global_files = hc.global_known_hosts_files.clone();
        }
        if let Some(s) = &hc.strict_host_key_checking {
            o.known_hosts.policy = s.parse().map_err(TransportError::Config)?;
        }
        if let Some(t) = hc.connect_timeout {
            o.connect_timeout = Duration::from_secs(t);
        }
        if let Some(t) = hc.server_alive_interval {
            o.keepalive_interval = (t > 0).then(|| Duration::from_secs(t));
        }
        if let Some(n) = hc.server_alive_count_max {
            o.keepalive_max = n;
        }
        if let Some(pj) = hc.proxy_jump.as_deref().filter(|p| *p != "none") {
            let first = pj.split(',').next().unwrap_or(pj);
            let (u, hp) = match first.split_once('@') {
                Some((u, hp)) => (Some(u), hp),
                None => (None, first),
            };
            let (h, p) = match hp.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
                    h.trim_matches(['[', ']']),
                    Some(p.parse::<u16>().map_err(|_| {
                        TransportError::Config(format!("ProxyJump {pj}: bad port"))
                    })?),
                ),
                _ => (hp, None),
            };
            o.bastion = Some(Box::new(Self::resolve_depth(
                h,
                p,
                u,
                None,
                cfg,
                depth + 1,
            )?));
        }
        Ok(o)
    }

    /// Apply one `ssh.options` directive (k0sctl.yaml) — the subset the native transport
    /// understands; anything else is an error naming the directive.
    pub fn set_option(&mut self, key: &str, value: &str) -> Result<(), TransportError> {
        let bad = |what: &str| TransportError::Config(format!("ssh option {key}: {what}"));
        match key.to_ascii_lowercase().as_str() {
            "stricthostkeychecking" => {
                self.known_hosts.policy = value.parse().map_err(TransportError::Config)?
            }
            "userknownhostsfile" => {
                self.known_hosts.user_files =
                    value.split_whitespace().map(config::expand_tilde).collect()
            }
            "globalknownhostsfile" => {
                self.known_hosts.global_files =
                    value.split_whitespace().map(config::expand_tilde).collect()
            }
            "connecttimeout" => {
                self.connect_timeout =
                    Duration::from_secs(value.parse().map_err(|_| bad("not a number"))?)
            }
            "serveraliveinterval" => {
                let s: u64 = value.parse().map_err(|_| bad("not a number"))?;
                self.keepalive_interval = (s > 0).then(|| Duration::from_secs(s));
            }
            "serveralivecountmax" => {
                self.keepalive_max = value.parse().map_err(|_| bad("not a number"))?;
            }
            "identitiesonly" => {
                self.identities_only = matches!(value.to_ascii_lowercase().as_str(), "yes" | "true")
            }
            "identityfile" => self.key_paths.push(config::expand_tilde(value)),
            "certificatefile" => self.certificates.push(config::expand_tilde(value)),
            "port" => self.port = value.parse().map_err(|_| bad("not a port"))?,
            "user" => self.user = value.to_string(),
            _ => {
                return Err(bad(
                    "not supported by the native SSH transport (use openSSH:)",
                ));
            }
        }
        Ok(())
    }

    /// `user@address:port`.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

/// Errors out of the russh handler: protocol errors and our host-key verdicts (internal).
#[derive(Debug)]
pub enum HandlerError {
    Russh(russh::Error),
    HostKey(HostKeyError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Russh(e) => write!(f, "{e}"),
            HandlerError::HostKey(e) => write!(f, "{e}"),
        }
    }
}

/// The russh client handler: host key verification.
pub struct ClientHandler {
    host: String,
    port: u16,
    label: String,
    lines: Vec<known_hosts::KnownHostLine>,
    cfg: KnownHostsConfig,
    /// The accepted plain server key in OpenSSH form (`alg base64`); not set for certificates.
    accepted_key: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = known_hosts::verify(
            &self.lines,
            &self.host,
            self.port,
            key,
            self.cfg.policy,
            &self.label,
        )
        .map_err(HandlerError::HostKey)?;
        let pk = key.public_key();
        let fp = pk.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        if verdict == known_hosts::Verdict::Unknown {
            if self.cfg.policy == StrictHostKeyChecking::Yes {
                return Err(HandlerError::HostKey(HostKeyError::Unknown {
                    host: self.label.clone(),
                    address: self.host.clone(),
                    port: self.port,
                    alg: pk.algorithm().to_string(),
                    fingerprint: fp,
                    file: self.cfg.user_files.first().cloned().unwrap_or_default(),
                }));
            }
            if let Some(file) = self.cfg.user_files.first() {
                known_hosts::record(file, &self.host, self.port, &pk).map_err(|e| {
                    HandlerError::HostKey(HostKeyError::Record {
                        host: self.label.clone(),
                        file: file.clone(),
                        reason: e.to_string(),
                    })
                })?;
                tracing::info!(
                    about = %self.label,
                    "new host key {fp} recorded in {}",
                    file.display()
                );
            }
        }
        if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.accepted_key.lock().expect("lock") = key.to_openssh().ok();
        }
        Ok(true)
    }
}

/// A stream whose writes fail once they have made no progress for `limit` (see its use in
/// `connect_once`).
struct WatchedStream<S> {
    inner: S,
    limit: Option<Duration>,
    stuck: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WatchedStream<S> {
    fn new(inner: S, limit: Option<Duration>) -> Self {
        WatchedStream {
            inner,
            limit,
            stuck: None,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WatchedStream<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WatchedStream<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::future::Future;
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => {
                if let Some(limit) = self.limit {
                    let timer = self
                        .stuck
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the peer accepted no data for {limit:?}"),
                        )));
                    }
                }
                Poll::Pending
            }
            done => {
                self.stuck = None;
                done
            }
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Commands running at once on one connection: sshd refuses sessions beyond its MaxSessions
/// (default 10) with "administratively prohibited"; more commands wait for a free session.
pub const MAX_SESSIONS: usize = 8;

/// How often a refused session is asked for again (see `exec_inner`).
const SESSION_RETRIES: u32 = 5;

/// A native SSH connection to one host; commands open channels on it.
pub struct SshConnection {
    handle: Arc<Handle<ClientHandler>>,
    name: String,
    /// Concurrent sessions on this connection, kept below sshd's default MaxSessions (10).
    sessions: Arc<tokio::sync::Semaphore>,
    /// The bastion connection this one is tunnelled through (kept alive).
    _via: Option<Arc<SshConnection>>,
    /// That key in OpenSSH public-key form, when it was a plain key (not a certificate).
    host_key_openssh: Option<String>,
}

fn client_config(opts: &SshOptions, lines: &[known_hosts::KnownHostLine]) -> client::Config {
    let mut preferred = russh::Preferred::default();
    let known = known_hosts::known_algorithms(lines, &opts.address, opts.port);
    if !known.is_empty() {
        let mut keys: Vec<Algorithm> = Vec::new();
        for a in known.iter().chain(preferred.key.iter()) {
            // A known RSA key may be verified with any rsa-sha2 variant.
            let variants: Vec<Algorithm> = if a.clone().is_rsa() {
                preferred
                    .key
                    .iter()
                    .filter(|k| (*k).clone().is_rsa())
                    .cloned()
                    .collect()
            } else {
                vec![a.clone()]
            };
            for v in variants {
                if !keys.contains(&v) {
                    keys.push(v);
                }
            }
        }
        preferred.key = keys.into();
    }
    if known_hosts::has_cert_authority(lines, &opts.address, opts.port) {
        preferred.host_key_certificates = preferred.key.clone();
    }
    client::Config {
        inactivity_timeout: None,
        keepalive_interval: opts.keepalive_interval,
        // russh counts keepalives without an answer and gives up on the one after the max
        // (OpenSSH's ServerAliveCountMax); 0 would mean "never", which OpenSSH does not do.
        keepalive_max: opts.keepalive_max.max(1) as usize,
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        preferred,
        ..Default::default()
    }
}

fn map_handshake_err(e: HandlerError, label: &str, addr: &str) -> TransportError {
    match e {
        HandlerError::HostKey(h) => TransportError::HostKey(h),
        HandlerError::Russh(russh::Error::IO(io)) => TransportError::Connect {
            host: label.to_string(),
            addr: addr.to_string(),
            transient: is_transient_io(&io),
            reason: io.to_string(),
        },
        HandlerError::Russh(russh::Error::Disconnect) | HandlerError::Russh(russh::Error::HUP) => {
            TransportError::Connect {
                host: label.to_string(),
                addr: addr.to_string(),
                reason: "the server closed the connection during the handshake (MaxStartups?)"
                    .into(),
                transient: true,
            }
        }
        HandlerError::Russh(e) => TransportError::Protocol {
            host: label.to_string(),
            reason: e.to_string(),
        },
    }
}

fn is_transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | TimedOut
            | UnexpectedEof
            | BrokenPipe
    )
}

impl SshConnection {
    /// Connect directly or through the bastion chain (bastion connections are not shared).
    pub async fn connect(opts: &SshOptions) -> Result<Self, TransportError> {
        Self::connect_via(opts, &BastionPool::default()).await
    }

    /// Connect with retries, sharing bastion connections through `bastions`.
    pub fn connect_via<'a>(
        opts: &'a SshOptions,
        bastions: &'a BastionPool,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self, TransportError>> + Send + 'a>,
    > {
        Box::pin(Self::connect_retrying(opts, bastions))
    }

    async fn connect_retrying(
        opts: &SshOptions,
        bastions: &BastionPool,
    ) -> Result<Self, TransportError> {
        auth::prepare(opts, &opts.label()).await?;
        let mut attempt = 0;
        let mut timeouts = 0;
        let mut delay = Duration::from_millis(250);
        loop {
            match Self::connect_once(opts, bastions).await {
                Ok(c) => return Ok(c),
                // A silent host is retried once at most: unreachable hosts fail fast.
                Err(e @ TransportError::ConnectTimeout { .. }) if timeouts >= 1 => return Err(e),
                Err(e) if e.is_transient() && attempt < opts.retries => {
                    if matches!(e, TransportError::ConnectTimeout { .. }) {
                        timeouts += 1;
                    }
                    tracing::debug!(about = %opts.label(), "{e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect_once(
        opts: &SshOptions,
        bastions: &BastionPool,
    ) -> Result<Self, TransportError> {
        let label = opts.label();
        let addr = format!("{}:{}", opts.address, opts.port);
        // Only this host's lines (the handler keeps them for the connection's life).
        let lines = known_hosts::load_for(&opts.known_hosts, &opts.address, opts.port);
        let cfg = Arc::new(client_config(opts, &lines));
        let accepted_key: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let handler = ClientHandler {
            accepted_key: accepted_key.clone(),
            host: opts.address.clone(),
            port: opts.port,
            label: label.clone(),
            lines,
            cfg: opts.known_hosts.clone(),
        };
        let timeout = opts.connect_timeout;
        let to_err = || TransportError::ConnectTimeout {
            host: label.clone(),
            addr: addr.clone(),
            after: timeout,
        };
        let (mut handle, via, permit) = match &opts.bastion {
            Some(b) => {
                let (jump, permit) = bastions.get(b).await?;
                let fut = async {
                    let ch = jump
                        .handle
                        .channel_open_direct_tcpip(
                            opts.address.clone(),
                            opts.port as u32,
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| TransportError::Connect {
                            host: label.clone(),
                            addr: addr.clone(),
                            reason: format!("bastion {} could not open a tunnel: {e}", jump.name),
                            transient: false,
                        })?;
                    client::connect_stream(cfg, ch.into_stream(), handler)
                        .await
                        .map_err(|e| map_handshake_err(e, &label, &addr))
                };
                let h = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| to_err())??;
                (h, Some(jump), Some(permit))
            }
            None => {
                let fut = async {
                    let sock = tokio::net::TcpStream::connect((opts.address.as_str(), opts.port))
                        .await
                        .map_err(|e| TransportError::Connect {
                            host: label.clone(),
                            addr: addr.clone(),
                            transient: is_transient_io(&e),
                            reason: e.to_string(),
                        })?;
                    let _ = sock.set_nodelay(true);
                    // Keepalives cannot notice a dead peer while the session is stuck writing
                    // into a full socket (a link that went down during an upload): a write
                    // that makes no progress for as long as the keepalives allow fails the
                    // connection instead.
                    let sock = WatchedStream::new(
                        sock,
                        opts.keepalive_interval
                            .map(|i| i * (opts.keepalive_max.max(1) + 1)),
                    );
                    client::connect_stream(cfg, sock, handler)
                        .await
                        .map_err(|e| map_handshake_err(e, &label, &addr))
                };
                let h = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| to_err())??;
                (h, None, None)
            }
        };
        tokio::time::timeout(timeout * 3, auth::authenticate(&mut handle, opts, &label))
            .await
            .map_err(|_| to_err())??;
        drop(permit);
        tracing::debug!(about = %label, "connected");
        Ok(SshConnection {
            handle: Arc::new(handle),
            name: label,
            sessions: Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS)),
            _via: via,
            host_key_openssh: accepted_key.lock().expect("lock").clone(),
        })
    }

    /// The host key accepted at connect in OpenSSH form (`ssh-ed25519 AAAA…`), when it was a
    /// plain key verified against known_hosts (not a host certificate).
    pub fn host_key_openssh(&self) -> Option<&str> {
        self.host_key_openssh.as_deref()
    }

    /// The underlying russh handle (for direct-tcpip tunnels and SFTP).
    pub fn handle(&self) -> &Arc<Handle<ClientHandler>> {
        &self.handle
    }

    async fn exec_inner(&self, req: ExecRequest) -> Result<Output, TransportError> {
        let _session = self.sessions.acquire().await.expect("semaphore closed");
        let host = self.name.as_str();
        let handle = self.handle.clone();
        let doing = super::error::doing(&req.display);
        let lost = |e: russh::Error| TransportError::Disconnected {
            host: host.to_string(),
            reason: if handle.is_closed() {
                format!("the SSH connection is closed ({e}){doing}")
            } else {
                format!("{e}{doing}")
            },
        };
        let mut refused = 0u32;
        let ch = loop {
            match self.handle.channel_open_session().await {
                Ok(ch) => break ch,
                // sshd frees a closed session's slot only after it has handled the close, so
                // a session opened right after others closed can find every MaxSessions slot
                // still taken (seen with hundreds of workers reading the leader's files at
                // once): ask again a few times, 0.1 s doubling to 1.6 s, before giving up.
                Err(russh::Error::ChannelOpenFailure(r)) if refused < SESSION_RETRIES => {
                    refused += 1;
                    tracing::debug!("{host}: the server refused a new session ({r:?}); retrying");
                    tokio::time::sleep(Duration::from_millis(50 << refused)).await;
                }
                Err(russh::Error::ChannelOpenFailure(r)) => {
                    return Err(TransportError::Protocol {
                        host: host.to_string(),
                        reason: format!(
                            "the server refused a new session ({r:?}, {} times); is its MaxSessions below {MAX_SESSIONS}?",
                            refused + 1
                        ),
                    });
                }
                Err(e) => return Err(lost(e)),
            }
        };
        ch.exec(true, req.command.as_bytes()).await.map_err(lost)?;
        let (mut rd, wr) = ch.split();
        let wr = Arc::new(wr);
        let has_stdin = req.stdin_prefix.is_some() || !matches!(req.stdin, super::Stdin::Null);
        let mut wtask = {
            let wr = wr.clone();
            let (prefix, stdin) = (req.stdin_prefix, req.stdin);
            tokio::spawn(async move {
                if has_stdin {
                    let mut w = wr.make_writer();
                    pump_stdin(&mut w, prefix, stdin).await.map(|_| ())
                } else {
                    wr.eof().await.map_err(std::io::Error::other)
                }
            })
        };
        let mut writer_done = false;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut status = ExitStatus::Unknown;
        let cb = req.on_output.clone();
        let discard = req.discard_stdout;
        let body = async {
            loop {
                tokio::select! {
                    r = &mut wtask, if !writer_done => {
                        writer_done = true;
                        if let Ok(Err(e)) = r {
                            tracing::debug!(about = %host, "stdin writer ended: {e}");
                        }
                    }
                    m = rd.wait() => match m {
                        Some(ChannelMsg::Data { data }) => {
                            if let Some(cb) = &cb { cb(StreamKind::Stdout, &data); }
                            if !discard { stdout.extend_from_slice(&data); }
                        }
                        Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                            if let Some(cb) = &cb { cb(StreamKind::Stderr, &data); }
                            stderr.extend_from_slice(&data);
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => status = ExitStatus::Code(exit_status),
                        Some(ChannelMsg::ExitSignal { signal_name, .. }) => status = ExitStatus::Signal(format!("{signal_name:?}")),
                        Some(ChannelMsg::Failure) => {
                            return Err(TransportError::Protocol { host: host.to_string(), reason: format!("the server refused to run the command: {}", req.display) });
                        }
                        Some(ChannelMsg::Close) | None => break,
                        Some(_) => {}
                    }
                }
            }
            Ok(())
        };
        let r = match req.timeout {
            Some(t) => match tokio::time::timeout(t, body).await {
                Ok(r) => r,
                Err(_) => {
                    wtask.abort();
                    let _ = wr.signal(Sig::KILL).await;
                    let _ = wr.close().await;
                    return Err(TransportError::Timeout {
                        host: host.to_string(),
                        cmd: req.display,
                        after: t,
                    });
                }
            },
            None => body.await,
        };
        if !writer_done {
            wtask.abort();
        }
        r?;
        if status == ExitStatus::Unknown {
            // The channel ended without an exit status: when the connection itself is gone
            // (keepalives unanswered, the server closed it, the link dropped), say so rather
            // than report a command failure with an unknown status.
            tokio::task::yield_now().await;
            if self.handle.is_closed() {
                return Err(TransportError::Disconnected {
                    host: host.to_string(),
                    reason: format!("the SSH connection was closed{doing}"),
                });
            }
        }
        Ok(Output {
            stdout,
            stderr,
            status,
        })
    }
}

impl Transport for SshConnection {
    async fn exec(&self, req: ExecRequest) -> Result<Output, TransportError> {
        self.exec_inner(req).await
    }
    fn name(&self) -> &str {
        &self.name
    }
    async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_merges_explicit_config_and_defaults() {
        let cfg = SshConfig::parse(
            "Host web*\n  User deploy\n  Port 2200\n  ProxyJump ops@jump.example:2222\n\
             Host jump.example\n  IdentityFile /k/jump\n\
             Host *\n  StrictHostKeyChecking no\n  ServerAliveInterval 0\n",
        );
        let o = SshOptions::resolve("web1", None, None, Some("/k/web".into()), &cfg).unwrap();
        assert_eq!((o.user.as_str(), o.port), ("deploy", 2200));
        assert_eq!(o.key_paths, vec![PathBuf::from("/k/web")]);
        assert_eq!(o.known_hosts.policy, StrictHostKeyChecking::No);
        assert_eq!(o.keepalive_interval, None);
        let b = o.bastion.as_ref().unwrap();
        assert_eq!(
            (b.address.as_str(), b.port, b.user.as_str()),
            ("jump.example", 2222, "ops")
        );
        assert_eq!(b.key_paths, vec![PathBuf::from("/k/jump")]);
        // Explicit values win over the config; k0sctl's default user is root.
        let o = SshOptions::resolve("web1", Some(22), Some("admin"), None, &cfg).unwrap();
        assert_eq!((o.user.as_str(), o.port), ("admin", 22));
        let o = SshOptions::resolve("db1", None, None, None, &SshConfig::default()).unwrap();
        assert_eq!(
            (o.user.as_str(), o.port, o.bastion.is_none()),
            ("root", 22, true)
        );
        let mut o = o;
        o.set_option("StrictHostKeyChecking", "yes").unwrap();
        assert_eq!(o.known_hosts.policy, StrictHostKeyChecking::Yes);
        assert!(o.set_option("ProxyCommand", "nc %h %p").is_err());
        assert!(
            format!(
                "{:?}",
                SshOptions {
                    passphrase: Some(Secret::new("pp")),
                    ..o
                }
            )
            .contains("REDACTED")
        );
    }
}
