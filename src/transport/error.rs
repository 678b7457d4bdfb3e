//! Transport errors: every failure names the host, the command (with secrets redacted), the exit
//! status and the remote stderr, and says what to do next. [`TransportError::is_transient`] tells
//! the retry logic which failures are worth retrying (network hiccups) and which are final
//! (authentication, host keys, remote command failures).

use std::path::PathBuf;
use std::time::Duration;

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(u32),
    /// Killed by this signal (SSH signal name, e.g. `KILL`).
    Signal(String),
    /// The channel closed without reporting a status.
    Unknown,
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }
    /// The exit code, if the command exited normally.
    pub fn code(&self) -> Option<u32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => write!(f, "unknown exit status (channel closed)"),
        }
    }
}

/// Host key verification failures. Always final: never retried, never silently accepted.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "{host}: HOST KEY CHANGED: the server presented {alg} key {fingerprint}, but {file}:{line} \
         records a different {alg} key for this host. This can mean someone is intercepting the \
         connection, or the host was reinstalled. If you know the host was reinstalled, remove the \
         old entry with `ssh-keygen -R '{pattern}' -f {file}` (or delete line {line}) and retry."
    )]
    Changed {
        host: String,
        pattern: String,
        alg: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },
    #[error(
        "{host}: the server's host key {fingerprint} is marked @revoked in {file}:{line}; refusing \
         to connect. Ask the host's administrator for its current key."
    )]
    Revoked {
        host: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },
    #[error(
        "{host}: unknown host key {fingerprint} ({alg}) and StrictHostKeyChecking is 'yes'. Verify \
         the fingerprint out of band, then add it with `ssh-keyscan -p {port} {address} >> {file}`, \
         or use StrictHostKeyChecking accept-new."
    )]
    Unknown {
        host: String,
        address: String,
        port: u16,
        alg: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error("{host}: host certificate rejected: {reason}")]
    BadCertificate { host: String, reason: String },
    #[error("{host}: cannot record the host key in {file}: {reason}")]
    Record {
        host: String,
        file: PathBuf,
        reason: String,
    },
}

/// Errors from connecting to hosts and running things on them.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "{host}: cannot connect to {addr}: {reason}. Check that the host is up and that address and port are right."
    )]
    Connect {
        host: String,
        addr: String,
        reason: String,
        transient: bool,
    },
    #[error(
        "{host}: connecting to {addr} timed out after {after:?}. Check the address, firewalls, or raise ConnectTimeout."
    )]
    ConnectTimeout {
        host: String,
        addr: String,
        after: Duration,
    },
    #[error(
        "{host}: authentication failed for user '{user}' (tried: {tried}). Check the user name, \
         ssh.keyPath, the agent's keys (`ssh-add -l`) and the host's authorized_keys."
    )]
    Auth {
        host: String,
        user: String,
        tried: String,
    },
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    #[error("{host}: key {path}: {reason}")]
    Key {
        host: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{host}: command failed ({status}): {cmd}{}", fmt_stderr(stderr))]
    Command {
        host: String,
        cmd: String,
        status: ExitStatus,
        stderr: String,
        stdout: String,
    },
    #[error("{host}: command timed out after {after:?}: {cmd}")]
    Timeout {
        host: String,
        cmd: String,
        after: Duration,
    },
    #[error("{host}: {what}")]
    Privilege { host: String, what: String },
    #[error(
        "{host}: upload to {dst} failed verification: sent sha256 {sent} but the host has {got}; \
         nothing was installed at {dst}. Retry; if it persists check the host's disk and memory."
    )]
    UploadVerify {
        host: String,
        dst: String,
        sent: String,
        got: String,
    },
    #[error(
        "{host}: download of {src} failed verification: the host reports sha256 {want} but {got} \
         arrived; {dst} was not written. Retry."
    )]
    DownloadVerify {
        host: String,
        src: String,
        dst: String,
        want: String,
        got: String,
    },
    #[error("{host}: {what}: {reason}")]
    Io {
        host: String,
        what: String,
        reason: String,
    },
    #[error("{host}: connection lost: {reason}")]
    Disconnected { host: String, reason: String },
    #[error("{host}: SSH protocol error: {reason}")]
    Protocol { host: String, reason: String },
    #[error("invalid transport configuration: {0}")]
    Config(String),
}

fn fmt_stderr(s: &str) -> String {
    let s = s.trim_end();
    if s.is_empty() {
        String::new()
    } else {
        let mut out = String::from("\n  remote stderr:");
        for l in s.lines().take(40) {
            out.push_str("\n    ");
            out.push_str(l);
        }
        out
    }
}

impl TransportError {
    /// Worth retrying with backoff: network-level connection failures only.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Connect { transient, .. } => *transient,
            TransportError::ConnectTimeout { .. } | TransportError::Disconnected { .. } => true,
            _ => false,
        }
    }

    /// The host this error is about (empty for configuration errors).
    pub fn host(&self) -> &str {
        match self {
            TransportError::Connect { host, .. }
            | TransportError::ConnectTimeout { host, .. }
            | TransportError::Auth { host, .. }
            | TransportError::Key { host, .. }
            | TransportError::Command { host, .. }
            | TransportError::Timeout { host, .. }
            | TransportError::Privilege { host, .. }
            | TransportError::UploadVerify { host, .. }
            | TransportError::DownloadVerify { host, .. }
            | TransportError::Io { host, .. }
            | TransportError::Disconnected { host, .. }
            | TransportError::Protocol { host, .. } => host,
            TransportError::HostKey(e) => match e {
                HostKeyError::Changed { host, .. }
                | HostKeyError::Revoked { host, .. }
                | HostKeyError::Unknown { host, .. }
                | HostKeyError::BadCertificate { host, .. }
                | HostKeyError::Record { host, .. } => host,
            },
            TransportError::Config(_) => "",
        }
    }

    /// The remote exit status, for command failures.
    pub fn exit_status(&self) -> Option<&ExitStatus> {
        match self {
            TransportError::Command { status, .. } => Some(status),
            _ => None,
        }
    }

    pub(crate) fn io(host: &str, what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        TransportError::Io {
            host: host.to_string(),
            what: what.into(),
            reason: e.to_string(),
        }
    }
}

/// The words every lost-connection error carries (see [`TransportError::Disconnected`]), so
/// callers that only kept the message can still tell a lost host from a failed command.
pub const CONNECTION_LOST: &str = "connection lost";

/// True when `message` (a rendered error) says a host's connection was lost.
pub fn is_connection_lost(message: &str) -> bool {
    message.contains(CONNECTION_LOST)
}

/// " while running `<first line of the command>`" (at most 80 characters), to say what a host
/// was doing when its connection was lost without repeating a whole script.
pub fn doing(display: &str) -> String {
    let first = display
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.is_empty() {
        return String::new();
    }
    let mut shown: String = first.chars().take(80).collect();
    if shown.len() < first.len() || display.trim().lines().count() > 1 {
        shown.push('…');
    }
    format!(" while running `{shown}`")
}

/// Replace every occurrence of each secret in `s` with `[REDACTED]`.
pub fn redact(s: &str, secrets: &[String]) -> String {
    let mut out = s.to_string();
    for sec in secrets {
        if !sec.is_empty() {
            out = out.replace(sec.as_str(), "[REDACTED]");
        }
    }
    out
}
