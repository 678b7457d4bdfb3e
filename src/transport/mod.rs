//! The transport boundary: how bytes reach a host.
//!
//! Phases ask a [`Remote`] to "run this" ([`Remote::run`], [`Remote::exec`]), "put these bytes
//! there" ([`Remote::upload`], [`Remote::write_file`]), "read that file" ([`Remote::download`],
//! [`Remote::read_file`]) or "what is at this path" ([`Remote::stat`]); they never learn how.
//! A [`Remote`] is a shared [`Connection`] plus the privilege wrapper detected for the host
//! ([`privilege::Privilege`]) plus the process-wide [`Limits`].
//!
//! Three transports implement [`Transport`]:
//! - [`ssh`]: native SSH (russh) with keys, agent, certificates, `~/.ssh/config`, known_hosts
//!   (accept-new, `@cert-authority`, `@revoked`, hashed) and bastions sharing one connection;
//! - [`openssh`]: the system `ssh` binary with ControlMaster, for `~/.ssh/config` features we do
//!   not implement (ProxyCommand, Match, ...);
//! - [`local`]: `sh -c` on this machine.
//!
//! [`Remote::open_tunnel`] gives a TCP stream to an address as the host sees it (its own
//! `127.0.0.1:6443`, say) through the same connection ([`tunnel`]).
//!
//! A [`Pool`] keeps one connection per host, reused by every phase, and enforces the global
//! `--concurrency` limit on connection set-up and the `--concurrent-uploads` limit on uploads.
//!
//! The transport knows nothing of operating systems or k0s: that is [`crate::host`].
//!
//! Measured on this 2-core VM against OpenSSH 9.2 on loopback, release build
//! (`cargo test --release --test transport_bench -- --ignored --nocapture --test-threads 1`):
//! one command on an open connection 1.8 ms (median of 50; a remote login shell that reads a
//! heavy rc file adds its own cost: root's bashrc here added ~90 ms per command); 8 parallel
//! commands on one connection 14 ms; 50 hosts cold (connect + auth + `true`) 0.57-0.64 s vs
//! 3.1 s for 50 parallel OpenSSH `ssh` processes (ratio 0.18-0.20); 100 open connections
//! +4 MiB RSS (about 40 KiB each); 200 MiB upload verified (stream + remote digest + rename)
//! 152 MiB/s vs `scp` 124 MiB/s (1.2x); raw exec stream 272 MiB/s vs russh-sftp (16 writes in
//! flight) 207 MiB/s, hence uploads over an exec stream.

#![allow(clippy::result_large_err)] // rich error context (host, command, stderr) is the point; cold path

pub mod error;
pub mod files;
pub mod local;
pub mod openssh;
pub mod output;
pub mod privilege;
pub mod relay;
#[cfg(test)]
pub mod scripted;
pub mod ssh;
pub mod tunnel;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, OnceCell, OwnedSemaphorePermit, Semaphore};

pub use error::{ExitStatus, HostKeyError, TransportError, redact};
pub use files::{FileStat, UploadOptions, UploadProgress, UploadReport};
pub use privilege::Privilege;
pub use tunnel::{Tunnel, TunnelStream};

/// Chunk size for streaming stdin and uploads (an 8 KiB buffer halves SSH throughput).
pub const IO_CHUNK: usize = 256 * 1024;

/// Default for [`stall_timeout`].
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);

/// Run-wide settings of the transports given on the command line (`--stall-timeout`,
/// `--keepalive-interval`, `--keepalive-count-max`), set once by the CLI with [`set_tuning`].
/// `None` leaves a setting to the environment and the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    pub stall_timeout: Option<Duration>,
    /// ServerAliveInterval for every host (zero disables keepalives).
    pub keepalive_interval: Option<Duration>,
    /// ServerAliveCountMax for every host.
    pub keepalive_count_max: Option<u32>,
}

static TUNING: std::sync::OnceLock<Tuning> = std::sync::OnceLock::new();

/// Sets the run's [`Tuning`] (first call wins; before any connection is made).
pub fn set_tuning(t: Tuning) {
    let _ = TUNING.set(t);
}

/// The run's [`Tuning`] with the environment filled in: `K0SCTL_STALL_TIMEOUT`,
/// `K0SCTL_KEEPALIVE_INTERVAL` (seconds, or a duration such as 10s; 0 disables keepalives) and
/// `K0SCTL_KEEPALIVE_COUNT_MAX` apply where no flag was given.
pub fn tuning() -> Tuning {
    static MERGED: std::sync::OnceLock<Tuning> = std::sync::OnceLock::new();
    *MERGED.get_or_init(|| {
        merge_tuning(TUNING.get().copied().unwrap_or_default(), &|k| {
            std::env::var(k).ok()
        })
    })
}

/// Flags win over the environment; unparsable or zero stall values in the environment are
/// ignored (the default applies).
fn merge_tuning(flags: Tuning, env: &dyn Fn(&str) -> Option<String>) -> Tuning {
    let secs = |v: String| -> Option<Duration> {
        let v = v.trim();
        v.parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .or_else(|| crate::config::duration::parse(v).ok())
    };
    Tuning {
        stall_timeout: flags.stall_timeout.or_else(|| {
            env("K0SCTL_STALL_TIMEOUT")
                .and_then(secs)
                .filter(|d| !d.is_zero())
        }),
        keepalive_interval: flags
            .keepalive_interval
            .or_else(|| env("K0SCTL_KEEPALIVE_INTERVAL").and_then(secs)),
        keepalive_count_max: flags
            .keepalive_count_max
            .or_else(|| env("K0SCTL_KEEPALIVE_COUNT_MAX").and_then(|v| v.trim().parse().ok())),
    }
}

/// How long a transfer (an upload, or a download the host makes) may make no progress before
/// it fails: `--stall-timeout`, else `K0SCTL_STALL_TIMEOUT` (seconds or a duration, at least
/// 1 s), else 60 s.
pub fn stall_timeout() -> Duration {
    tuning()
        .stall_timeout
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_STALL)
}

/// A secret string (password, passphrase). Its `Debug` output is redacted; it is never put in
/// argv, logs or error messages by this module.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Arc::from(s.into()))
    }
    /// The secret value. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Read a secret from an environment variable, if set and non-empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret::new)
    }
    /// Read a secret from a file (first line, trailing newline removed).
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let s = std::fs::read_to_string(path)?;
        Ok(Secret::new(s.lines().next().unwrap_or("").to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Called with each chunk of output as it arrives (for streaming to the user).
pub type OutputCallback = Arc<dyn Fn(StreamKind, &[u8]) + Send + Sync>;

/// Standard input for a remote command.
#[derive(Default)]
pub enum Stdin {
    /// No input: stdin is closed immediately.
    #[default]
    Null,
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
    /// Streamed from this reader in 256 KiB chunks, then EOF.
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

impl std::fmt::Debug for Stdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stdin::Null => f.write_str("Null"),
            Stdin::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Stdin::Reader(_) => f.write_str("Reader"),
        }
    }
}

/// One low-level execution request as a transport sees it: the command line is final
/// (privilege-wrapped) and `display` is its redacted form for errors and logs.
pub struct ExecRequest {
    pub command: String,
    pub display: String,
    /// Written to stdin before `stdin` (the sudo password); never logged.
    pub stdin_prefix: Option<Secret>,
    pub stdin: Stdin,
    pub timeout: Option<Duration>,
    pub on_output: Option<OutputCallback>,
    /// Do not keep stdout in [`Output::stdout`] (it still goes to `on_output`): for streaming
    /// large outputs (downloads) without holding them in memory.
    pub discard_stdout: bool,
}

impl ExecRequest {
    /// A request with no stdin, timeout or streaming; `display` = `command`.
    pub fn new(command: impl Into<String>) -> Self {
        let command = command.into();
        ExecRequest {
            display: command.clone(),
            command,
            stdin_prefix: None,
            stdin: Stdin::Null,
            timeout: None,
            on_output: None,
            discard_stdout: false,
        }
    }
}

/// Captured result of a command. A non-zero exit is not an error at this level.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

impl Output {
    /// stdout as UTF-8 (lossy), trailing whitespace trimmed.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_string()
    }
    /// stderr as UTF-8 (lossy), trailing whitespace trimmed.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim_end().to_string()
    }
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// What every transport can do. Implemented by [`Connection`] (enum dispatch over the three
/// transports), so phases hold an `Arc<Connection>` and never a concrete type.
pub trait Transport: Send + Sync {
    /// Run a command: stream `stdin` in, capture (and optionally stream out) stdout/stderr,
    /// return the exit status. Honours `timeout`. Never hangs when the remote command exits
    /// before consuming its stdin.
    fn exec(&self, req: ExecRequest)
    -> impl Future<Output = Result<Output, TransportError>> + Send;
    /// Human-readable host name used in errors and logs (`user@address:port`).
    fn name(&self) -> &str;
    /// Close the connection (best effort).
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A connection to one host over one of the transports.
pub enum Connection {
    Ssh(ssh::SshConnection),
    OpenSsh(openssh::OpenSshConnection),
    Local(local::LocalConnection),
    /// Unit tests: answers from a script, records what ran ([`scripted`]).
    #[cfg(test)]
    Scripted(scripted::ScriptedConnection),
}

impl Connection {
    /// True when the connection is known to be gone (native SSH only; the others reconnect per
    /// command or have no connection).
    pub fn is_closed(&self) -> bool {
        match self {
            Connection::Ssh(c) => c.handle().is_closed(),
            _ => false,
        }
    }
}

impl Transport for Connection {
    async fn exec(&self, req: ExecRequest) -> Result<Output, TransportError> {
        match self {
            Connection::Ssh(c) => c.exec(req).await,
            Connection::OpenSsh(c) => c.exec(req).await,
            Connection::Local(c) => c.exec(req).await,
            #[cfg(test)]
            Connection::Scripted(c) => c.exec(req).await,
        }
    }
    fn name(&self) -> &str {
        match self {
            Connection::Ssh(c) => c.name(),
            Connection::OpenSsh(c) => c.name(),
            Connection::Local(c) => c.name(),
            #[cfg(test)]
            Connection::Scripted(c) => c.name(),
        }
    }
    async fn close(&self) {
        match self {
            Connection::Ssh(c) => c.close().await,
            Connection::OpenSsh(c) => c.close().await,
            Connection::Local(c) => c.close().await,
            #[cfg(test)]
            Connection::Scripted(c) => c.close().await,
        }
    }
}

/// How to reach a host: the input of [`Pool::connect`]. The config model maps a k0sctl.yaml
/// host's `ssh:` / `openSSH:` / `localhost:` block to one of these.
#[derive(Debug, Clone)]
pub enum ConnectSpec {
    Ssh(ssh::SshOptions),
    OpenSsh(openssh::OpenSshOptions),
    Localhost,
}

impl ConnectSpec {
    /// Pool key: one connection per distinct key.
    pub fn key(&self) -> String {
        match self {
            ConnectSpec::Ssh(o) => format!("ssh://{}@{}:{}", o.user, o.address, o.port),
            ConnectSpec::OpenSsh(o) => format!(
                "openssh://{}@{}:{}",
                o.user.as_deref().unwrap_or(""),
                o.address,
                o.port.unwrap_or(0)
            ),
            ConnectSpec::Localhost => "localhost".into(),
        }
    }
}

/// Process-wide limits: `--concurrency` (0 = unlimited) and `--concurrent-uploads`.
#[derive(Debug)]
pub struct Limits {
    concurrency: Option<Arc<Semaphore>>,
    uploads: Arc<Semaphore>,
}

impl Limits {
    /// `concurrency` 0 means unlimited; `uploads` 0 means "same as concurrency" (k0sctl rule).
    pub fn new(concurrency: usize, uploads: usize) -> Self {
        let concurrency_sem = (concurrency > 0).then(|| Arc::new(Semaphore::new(concurrency)));
        let uploads = match (uploads, concurrency) {
            (0, 0) => Semaphore::MAX_PERMITS,
            (0, c) => c,
            (u, 0) => u,
            (u, c) => u.min(c),
        };
        Limits {
            concurrency: concurrency_sem,
            uploads: Arc::new(Semaphore::new(uploads)),
        }
    }
    /// A slot for per-host work, taken once at the outermost level of that work (a phase's
    /// per-host future, `exec`'s per-host task, the connect phase) and held until it ends.
    ///
    /// Nothing below that level takes one: not [`Pool::connect`], not the uploads. A task that
    /// held a slot while waiting for a second one of the same semaphore would starve as soon as
    /// there are more hosts than `--concurrency` (every slot held by a task waiting for another).
    pub async fn host_slot(&self) -> Option<OwnedSemaphorePermit> {
        match &self.concurrency {
            Some(s) => Some(s.clone().acquire_owned().await.expect("semaphore closed")),
            None => None,
        }
    }
    /// A slot for one upload. Taken inside [`Remote::upload`] only, never while holding another
    /// upload slot; its holders never wait for a host slot.
    pub async fn upload_slot(&self) -> OwnedSemaphorePermit {
        self.uploads
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore closed")
    }
}

impl Default for Limits {
    /// k0sctl defaults: concurrency 30, uploads 5.
    fn default() -> Self {
        Limits::new(30, 5)
    }
}

/// One connection per host, shared by all phases.
pub struct Pool {
    limits: Arc<Limits>,
    conns: Mutex<HashMap<String, Arc<OnceCell<Arc<Connection>>>>>,
    bastions: ssh::BastionPool,
}

impl Pool {
    pub fn new(limits: Limits) -> Self {
        Pool {
            limits: Arc::new(limits),
            conns: Mutex::new(HashMap::new()),
            bastions: ssh::BastionPool::default(),
        }
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Connect (or reuse the existing connection) and return a [`Remote`] with no privilege
    /// wrapper yet; call [`Remote::detect_privilege`] before running things with sudo. A cached
    /// connection that has died is replaced.
    ///
    /// Takes no host slot: the caller's per-host task holds one (see [`Limits::host_slot`]).
    pub async fn connect(&self, spec: &ConnectSpec) -> Result<Remote, TransportError> {
        let key = spec.key();
        let cell = {
            let mut m = self.conns.lock().await;
            let cell = m.entry(key.clone()).or_default();
            if cell.get().is_some_and(|c| c.is_closed()) {
                *cell = Arc::default();
            }
            cell.clone()
        };
        let conn = cell
            .get_or_try_init(|| async {
                let c = match spec {
                    ConnectSpec::Ssh(o) => {
                        Connection::Ssh(ssh::SshConnection::connect_via(o, &self.bastions).await?)
                    }
                    ConnectSpec::OpenSsh(o) => {
                        Connection::OpenSsh(openssh::OpenSshConnection::connect(o).await?)
                    }
                    ConnectSpec::Localhost => Connection::Local(local::LocalConnection::new()),
                };
                Ok::<_, TransportError>(Arc::new(c))
            })
            .await?
            .clone();
        Ok(Remote::new(conn, self.limits.clone()))
    }

    /// Connect to every host at once (bounded by `--concurrency`), results in input order.
    /// One unreachable host fails alone; the others proceed.
    pub async fn connect_all(
        self: &Arc<Self>,
        specs: Vec<ConnectSpec>,
    ) -> Vec<Result<Remote, TransportError>> {
        let pool = self.clone();
        parallel_map(specs, 0, move |spec| {
            let pool = pool.clone();
            Box::pin(async move {
                let _slot = pool.limits.host_slot().await;
                pool.connect(&spec).await
            })
        })
        .await
    }

    /// Drop the host's connection (closing it) and connect again, e.g. after changing
    /// `/etc/environment`. Existing [`Remote`]s keep the old connection until dropped.
    pub async fn reconnect(&self, spec: &ConnectSpec) -> Result<Remote, TransportError> {
        let old = self.conns.lock().await.remove(&spec.key());
        if let Some(c) = old.as_ref().and_then(|c| c.get()) {
            c.close().await;
        }
        self.connect(spec).await
    }

    /// Close every connection (and the bastions).
    pub async fn close_all(&self) {
        let conns: Vec<_> = self.conns.lock().await.drain().collect();
        for (_, cell) in conns {
            if let Some(c) = cell.get() {
                c.close().await;
            }
        }
        self.bastions.close_all().await;
    }
}

/// A command for [`Remote::exec`] / [`Remote::run`]: builder style.
///
/// ```no_run
/// # use k0sctl::transport::Cmd;
/// let c = Cmd::new("systemctl restart k0scontroller").sudo().timeout(std::time::Duration::from_secs(60));
/// ```
#[derive(Default)]
pub struct Cmd {
    pub(crate) cmd: String,
    pub(crate) sudo: bool,
    pub(crate) stdin: Stdin,
    pub(crate) timeout: Option<Duration>,
    pub(crate) redact: Vec<String>,
    pub(crate) on_output: Option<OutputCallback>,
    pub(crate) shown: Option<String>,
    pub(crate) discard_stdout: bool,
    pub(crate) short_lived: bool,
}

impl Cmd {
    pub fn new(cmd: impl Into<String>) -> Self {
        Cmd {
            cmd: cmd.into(),
            ..Default::default()
        }
    }
    /// Run with the host's privilege wrapper (root: as is; else sudo/doas).
    pub fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }
    pub fn sudo_if(mut self, yes: bool) -> Self {
        self.sudo = yes;
        self
    }
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Stdin::Bytes(bytes.into());
        self
    }
    pub fn stdin_reader(mut self, r: impl AsyncRead + Send + Unpin + 'static) -> Self {
        self.stdin = Stdin::Reader(Box::new(r));
        self
    }
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// Hide this string wherever the command is shown (errors, logs).
    pub fn redact(mut self, secret: impl Into<String>) -> Self {
        self.redact.push(secret.into());
        self
    }
    pub fn on_output(mut self, cb: OutputCallback) -> Self {
        self.on_output = Some(cb);
        self
    }
    /// Stream stdout to the [`Cmd::on_output`] callback only, without keeping it in memory.
    pub fn discard_stdout(mut self) -> Self {
        self.discard_stdout = true;
        self
    }
    /// A command that ends by itself at once (shell builtins, `rm` or `touch` of a local file):
    /// run as is, not tied to its session by [`session_bound`]'s wrapper, which costs the host
    /// two more processes (`setsid`, `sh`) for nothing a short command can need.
    pub fn short_lived(mut self) -> Self {
        self.short_lived = true;
        self
    }
    /// Show this instead of the command line in errors and logs (for long generated scripts).
    pub fn display_as(mut self, shown: impl Into<String>) -> Self {
        self.shown = Some(shown.into());
        self
    }
    /// The command as shown in errors and logs (secrets redacted).
    pub fn display(&self) -> String {
        redact(self.shown.as_deref().unwrap_or(&self.cmd), &self.redact)
    }
}

impl From<&str> for Cmd {
    fn from(s: &str) -> Self {
        Cmd::new(s)
    }
}
impl From<String> for Cmd {
    fn from(s: String) -> Self {
        Cmd::new(s)
    }
}

/// A host as phases see it: a shared connection, the privilege wrapper and the limits.
/// Cheap to clone.
#[derive(Clone)]
pub struct Remote {
    conn: Arc<Connection>,
    privilege: Privilege,
    limits: Arc<Limits>,
}

impl Remote {
    pub fn new(conn: Arc<Connection>, limits: Arc<Limits>) -> Self {
        Remote {
            conn,
            privilege: Privilege::Unknown,
            limits,
        }
    }
    /// Host name for messages (`user@address:port`).
    pub fn name(&self) -> &str {
        self.conn.name()
    }
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }
    pub fn privilege(&self) -> &Privilege {
        &self.privilege
    }
    /// Set the privilege wrapper in place.
    pub fn set_privilege(&mut self, p: Privilege) {
        self.privilege = p;
    }

    /// Find out how to become root on this host: root already, `sudo -n`, `doas -n`, or sudo
    /// with `password` (fed on stdin). Fails with a clear message when none works.
    pub async fn detect_privilege(
        &mut self,
        password: Option<Secret>,
    ) -> Result<&Privilege, TransportError> {
        self.privilege = Privilege::detect(&self.conn, password).await?;
        Ok(&self.privilege)
    }

    /// Run a command; a non-zero exit is returned in [`Output::status`], not as an error.
    pub async fn exec(&self, cmd: impl Into<Cmd>) -> Result<Output, TransportError> {
        let cmd = cmd.into();
        let shown = cmd.display();
        let sudo = cmd.sudo;
        let mut stdin = cmd.stdin;
        // On an SSH connection (native or OpenSSH) a command that takes no input is tied to
        // its session (see [`session_bound`]): it runs in its own process group, and its stdin
        // stays open until the command ends, so that when the channel or the connection
        // closes — the run is interrupted, the tool is killed, the `ssh` child dies — a
        // watcher on the host sees end of input and kills the group instead of letting the
        // work run on.
        let bound = matches!(&*self.conn, Connection::Ssh(_) | Connection::OpenSsh(_))
            && matches!(stdin, Stdin::Null)
            && !cmd.short_lived;
        let pidfile = match (&cmd.timeout, &*self.conn) {
            (Some(_), Connection::Ssh(_) | Connection::OpenSsh(_)) => {
                Some(format!("/tmp/.k0sctl-{:016x}.pid", rand::random::<u64>()))
            }
            _ => None,
        };
        let inner = if bound {
            stdin = Stdin::Reader(Box::new(OpenInput));
            session_bound(&cmd.cmd, pidfile.as_deref())
        } else {
            cmd.cmd
        };
        let (mut command, stdin_prefix) = if cmd.sudo {
            self.privilege.wrap(&inner, self.name())?
        } else {
            (inner, None)
        };
        // With a timeout on a remote host, record the process group so the command can be
        // killed when it times out: sshd refuses "signal" requests for root sessions
        // ("session signalling requires privilege separation") and closing the channel does
        // not stop a process that does not read or write.
        if let (Some(f), false) = (&pidfile, bound) {
            command = format!(
                "{{ echo $$ > {f}; }} 2>/dev/null; sh -c {}; rc=$?; rm -f {f}; exit $rc",
                shell_quote(&command)
            );
        }
        tracing::debug!(host = self.name(), cmd = %shown, "exec");
        let res = self
            .conn
            .exec(ExecRequest {
                command,
                display: shown,
                stdin_prefix,
                stdin,
                timeout: cmd.timeout,
                on_output: cmd.on_output,
                discard_stdout: cmd.discard_stdout,
            })
            .await;
        if let (Err(TransportError::Timeout { .. }), Some(f)) = (&res, pidfile) {
            // TERM first, then KILL, the whole process group (`kill -SIG -PGID`: dash rejects `--`); as root when the command ran
            // as root (the user cannot signal what sudo started).
            let kill = format!(
                "p=$(cat {f} 2>/dev/null) && [ -n \"$p\" ] && {{ kill -TERM -$p 2>/dev/null; \
                 sleep 1; kill -KILL -$p 2>/dev/null; }}; rm -f {f}; true"
            );
            let (kill, prefix) = if sudo {
                self.privilege.wrap(&kill, self.name())?
            } else {
                (kill, None)
            };
            let _ = self
                .conn
                .exec(ExecRequest {
                    command: kill,
                    display: "(kill timed-out command)".into(),
                    stdin_prefix: prefix,
                    stdin: Stdin::Null,
                    timeout: Some(Duration::from_secs(30)),
                    on_output: None,
                    discard_stdout: false,
                })
                .await;
        }
        res
    }

    /// Run a command; a non-zero exit is a [`TransportError::Command`] carrying host, the
    /// redacted command, the status and the remote stderr.
    pub async fn run(&self, cmd: impl Into<Cmd>) -> Result<Output, TransportError> {
        let cmd = cmd.into();
        let display = cmd.display();
        let secrets = cmd.redact.clone();
        let out = self.exec(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(TransportError::Command {
                host: self.name().to_string(),
                cmd: display,
                status: out.status.clone(),
                stderr: redact(&out.stderr_str(), &secrets),
                stdout: redact(&out.stdout_str(), &secrets),
            })
        }
    }

    /// [`Remote::run`] and return stdout trimmed.
    pub async fn run_str(&self, cmd: impl Into<Cmd>) -> Result<String, TransportError> {
        Ok(self.run(cmd).await?.stdout_str())
    }

    /// A TCP connection to `host:port` made by the remote host (e.g. `127.0.0.1`, `6443` for
    /// the host's own API server), carried over this host's connection: a `direct-tcpip`
    /// channel (native SSH), `ssh -W` through the ControlMaster (OpenSSH) or a plain TCP
    /// connection (localhost). See [`tunnel`].
    pub async fn open_tunnel(&self, host: &str, port: u16) -> Result<Tunnel, TransportError> {
        tracing::trace!(host = self.name(), target = %format!("{host}:{port}"), "open tunnel");
        tunnel::open(&self.conn, host, port).await
    }

    /// `Some(message)` when the host's SSH server refuses to forward to `host:port`, for the
    /// transport that can only tell this way (OpenSSH, see [`tunnel::probe_refusal`]).
    pub async fn probe_forwarding_refusal(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Option<String>, TransportError> {
        tunnel::probe_refusal(&self.conn, host, port).await
    }

    /// A byte stream to the stdin/stdout of `command` on the host, as the login user (see
    /// [`tunnel::open_exec`]).
    pub async fn open_exec_stream(&self, command: &str) -> Result<Tunnel, TransportError> {
        tracing::trace!(host = self.name(), "open exec stream");
        tunnel::open_exec(&self.conn, command).await
    }
}

/// Copy `prefix` then `stdin` into `w` in 256 KiB chunks, then shut `w` down.
pub(crate) async fn pump_stdin<W: AsyncWrite + Unpin>(
    w: &mut W,
    prefix: Option<Secret>,
    stdin: Stdin,
) -> std::io::Result<u64> {
    let mut n = 0u64;
    if let Some(p) = prefix {
        let mut line = p.expose().as_bytes().to_vec();
        line.push(b'\n');
        w.write_all(&line).await?;
    }
    match stdin {
        Stdin::Null => {}
        Stdin::Bytes(b) => {
            for c in b.chunks(IO_CHUNK) {
                w.write_all(c).await?;
            }
            n += b.len() as u64;
        }
        Stdin::Reader(mut r) => {
            // A small buffer until the first bytes came: most commands keep an input open that
            // never yields a byte (see `OpenInput`), some (the lock refresh) on every host for
            // a whole run, and a full chunk each would cost IO_CHUNK × hosts of memory.
            let mut buf = vec![0u8; 4096];
            loop {
                let k = read_full(&mut r, &mut buf).await?;
                if k == 0 {
                    break;
                }
                w.write_all(&buf[..k]).await?;
                n += k as u64;
                if buf.len() < IO_CHUNK {
                    buf = vec![0u8; IO_CHUNK];
                }
            }
        }
    }
    w.flush().await?;
    w.shutdown().await?;
    Ok(n)
}

/// Input that never ends (and never yields a byte): keeps a command's stdin open until the
/// command is done, so its end means the session is gone.
struct OpenInput;

impl AsyncRead for OpenInput {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

/// Wraps `cmd` so that it cannot outlive its SSH session: it runs in a session and process
/// group of its own (`setsid`, where the host has it) with `/dev/null` as input, while a
/// watcher reads the real stdin — which the client keeps open until the command ends — and
/// kills the whole group (TERM, then KILL after 2 s) when that input ends, i.e. when the
/// channel or the connection closed. With `pidfile`, the group id is written there (for the
/// kill after a timeout) and removed at the end. The exit status is the command's; a command
/// killed by a signal ends the wrapper with the same signal, so it is still reported as one.
pub fn session_bound(cmd: &str, pidfile: Option<&str>) -> String {
    let q = shell_quote(cmd);
    let (rec, unrec) = match pidfile {
        Some(f) => (
            format!("{{ echo $c > {f}; }} 2>/dev/null; "),
            format!("rm -f {f}; "),
        ),
        None => (String::new(), String::new()),
    };
    // The command is quoted once into a variable, not once per branch: the command line
    // stays small (russh keeps a connection's packet buffers at the size of its largest
    // packet, so a large command costs memory on every connection for its whole life).
    format!(
        "k0sctl_cmd={q}; exec 3<&0; if command -v setsid >/dev/null 2>&1; then setsid sh -c \"$k0sctl_cmd\" </dev/null & \
         else sh -c \"$k0sctl_cmd\" </dev/null & fi; c=$!; {rec}\
         ( read -r _ <&3; kill -TERM -$c 2>/dev/null || kill -TERM $c 2>/dev/null; sleep 2 >/dev/null 2>&1; kill -KILL -$c 2>/dev/null ) & w=$!; \
         exec 3<&-; wait $c; rc=$?; kill $w 2>/dev/null; {unrec}\
         if [ $rc -gt 128 ] && [ $rc -le 192 ]; then kill -$((rc - 128)) $$ 2>/dev/null; fi; exit $rc"
    )
}

/// Fill `buf` as far as possible (fewer bytes only at EOF).
pub(crate) async fn read_full<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut k = 0;
    while k < buf.len() {
        let n = r.read(&mut buf[k..]).await?;
        if n == 0 {
            break;
        }
        k += n;
    }
    Ok(k)
}

/// Run `f` on every item with at most `limit` running at once (0 = all at once); results in
/// input order. For per-host fan-out such as `k0sctl exec`.
pub async fn parallel_map<T, R, F>(items: Vec<T>, limit: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Pin<Box<dyn Future<Output = R> + Send>> + Send + Sync + 'static,
{
    let sem = Arc::new(Semaphore::new(if limit == 0 {
        Semaphore::MAX_PERMITS
    } else {
        limit
    }));
    let f = Arc::new(f);
    let mut set = tokio::task::JoinSet::new();
    let n = items.len();
    for (i, it) in items.into_iter().enumerate() {
        let sem = sem.clone();
        let f = f.clone();
        set.spawn(async move {
            let _p = sem.acquire_owned().await.expect("semaphore closed");
            (i, f(it).await)
        });
    }
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, v)) => out[i] = Some(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out.into_iter().map(|o| o.expect("task result")).collect()
}

/// Quote a string for a POSIX shell (single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A bound on each test so that a deadlock fails the test instead of hanging it.
    const BOUND: Duration = Duration::from_secs(60);

    /// Many per-host tasks with a tiny `--concurrency`, each holding its host slot while it
    /// connects and runs a command (as `exec` and the phases do): all finish, and never more
    /// than the limit at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_tasks_than_host_slots_finish() {
        for limit in [1usize, 2, 3] {
            let pool = Arc::new(Pool::new(Limits::new(limit, 0)));
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let (p, r, pk) = (pool.clone(), running.clone(), peak.clone());
            let done = tokio::time::timeout(
                BOUND,
                parallel_map((0..24).collect(), 0, move |i: usize| {
                    let (pool, running, peak) = (p.clone(), r.clone(), pk.clone());
                    Box::pin(async move {
                        let _slot = pool.limits().host_slot().await;
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        let remote = pool.connect(&ConnectSpec::Localhost).await.unwrap();
                        let out = remote.run(format!("echo {i}")).await.unwrap();
                        tokio::task::yield_now().await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        out.stdout_str().trim().to_string()
                    })
                }),
            )
            .await
            .unwrap_or_else(|_| panic!("limit {limit}: deadlock, tasks still waiting"));
            let want: Vec<String> = (0..24).map(|i| i.to_string()).collect();
            assert_eq!(done, want, "limit {limit}");
            let peak = peak.load(Ordering::SeqCst);
            assert!(
                peak <= limit,
                "limit {limit}: {peak} tasks held slots at once"
            );
            pool.close_all().await;
        }
    }

    /// `connect_all` takes one slot per connection and finishes with more hosts than slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_all_with_more_hosts_than_slots() {
        let pool = Arc::new(Pool::new(Limits::new(1, 0)));
        let specs = vec![ConnectSpec::Localhost; 10];
        let r = tokio::time::timeout(BOUND, pool.connect_all(specs))
            .await
            .expect("connect_all deadlocked");
        assert_eq!(r.len(), 10);
        assert!(r.iter().all(|r| r.is_ok()));
    }

    /// Upload slots are bounded by the host limit and released after each upload, so tasks
    /// holding host slots and uploading one after another all finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_under_host_slots_finish() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(Pool::new(Limits::new(2, 1)));
        let base = dir.path().to_path_buf();
        let p = pool.clone();
        let r = tokio::time::timeout(
            BOUND,
            parallel_map((0..8).collect(), 0, move |i: usize| {
                let (pool, base) = (p.clone(), base.clone());
                Box::pin(async move {
                    let _slot = pool.limits().host_slot().await;
                    let remote = pool.connect(&ConnectSpec::Localhost).await.unwrap();
                    for j in 0..2 {
                        let dst = base.join(format!("f{i}-{j}"));
                        remote
                            .upload(
                                std::io::Cursor::new(format!("{i}-{j}").into_bytes()),
                                dst.to_str().unwrap(),
                                &UploadOptions::default(),
                            )
                            .await
                            .unwrap();
                    }
                })
            }),
        )
        .await
        .expect("uploads deadlocked");
        assert_eq!(r.len(), 8);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 16);
    }
}

#[cfg(test)]
mod tuning_tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let e = env(&[
            ("K0SCTL_STALL_TIMEOUT", "5"),
            ("K0SCTL_KEEPALIVE_INTERVAL", "7"),
            ("K0SCTL_KEEPALIVE_COUNT_MAX", "4"),
        ]);
        let flags = Tuning {
            stall_timeout: Some(Duration::from_secs(90)),
            keepalive_interval: Some(Duration::ZERO),
            keepalive_count_max: Some(1),
        };
        assert_eq!(merge_tuning(flags, &e), flags);
    }

    #[test]
    fn the_environment_fills_what_no_flag_gave() {
        let e = env(&[
            ("K0SCTL_STALL_TIMEOUT", "5"),
            ("K0SCTL_KEEPALIVE_INTERVAL", "1m"),
            ("K0SCTL_KEEPALIVE_COUNT_MAX", " 4 "),
        ]);
        let t = merge_tuning(
            Tuning {
                stall_timeout: Some(Duration::from_secs(9)),
                ..Tuning::default()
            },
            &e,
        );
        assert_eq!(
            t,
            Tuning {
                stall_timeout: Some(Duration::from_secs(9)),
                keepalive_interval: Some(Duration::from_secs(60)),
                keepalive_count_max: Some(4),
            }
        );
        let t = merge_tuning(Tuning::default(), &e);
        assert_eq!(t.stall_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn nothing_set_leaves_the_defaults_and_bad_values_are_ignored() {
        assert_eq!(
            merge_tuning(Tuning::default(), &env(&[])),
            Tuning::default()
        );
        let e = env(&[
            ("K0SCTL_STALL_TIMEOUT", "0"),
            ("K0SCTL_KEEPALIVE_INTERVAL", "soon"),
            ("K0SCTL_KEEPALIVE_COUNT_MAX", "-1"),
        ]);
        assert_eq!(merge_tuning(Tuning::default(), &e), Tuning::default());
    }
}
