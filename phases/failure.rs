//! Why a phase failed on one host, with its cause kept typed until the edge.
//!
//! A [`Failure`] carries the cause (a transport error, a host/OS problem, a Kubernetes error,
//! a refusal by the cluster, a fact an earlier phase should have established, or something
//! else) plus the steps it happened in ("restarting k0s", "draining node w1"). It is rendered
//! once, by [`super::PhaseError`]'s `Display`, under the host's name, so the host is not
//! repeated (the transport's own `user@host:port:` prefix is left out), and the exit code of
//! the whole phase is derived from the causes by [`exit_code`], not carried by hand.

use std::fmt;

use crate::exit::Code;
use crate::host::HostError;
use crate::kube::KubeError;
use crate::transport::TransportError;
use crate::transport::error::is_connection_lost;

/// A fact an earlier phase establishes that a later one needs (a phase-order invariant).
/// Reaching a phase without it is a bug in the pipeline, reported as such instead of a panic
/// or an empty string reaching a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No leader controller was chosen ("Gather k0s facts" chooses it).
    Leader,
    /// The node name k0s registers is unknown or empty (needs the host probed or
    /// `hostname:` in the manifest).
    NodeName,
    /// No staged k0s binary to move into place ("Stage k0s binaries" records it).
    Staged,
    /// The host was not probed ("Detect host operating systems").
    Probed,
    /// The host is not connected ("Connect to hosts").
    Connection,
    /// No target k0s version ("Set k0s version" or `spec.k0s.version`).
    TargetVersion,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, by) = match self {
            Missing::Leader => ("no leader controller was chosen", "Gather k0s facts"),
            Missing::NodeName => (
                "the node name is unknown or empty",
                "Detect host operating systems",
            ),
            Missing::Staged => ("no staged k0s binary is recorded", "Stage k0s binaries"),
            Missing::Probed => ("the host was not probed", "Detect host operating systems"),
            Missing::Connection => ("the host is not connected", "Connect to hosts"),
            Missing::TargetVersion => ("the target k0s version is not known", "Set k0s version"),
        };
        write!(
            f,
            "{what} (phase \"{by}\" should have established it; internal error: phase order, please report it)"
        )
    }
}

impl std::error::Error for Missing {}

/// What went wrong, typed.
#[derive(Debug)]
pub enum Cause {
    /// Reaching the host or running something there: connection, authentication, host key,
    /// a command's exit status with its remote stderr, a lost connection.
    Transport(TransportError),
    /// Connecting to the host failed, whatever the transport's reason (the "Connect to hosts"
    /// phase): the host could not be reached.
    Connect(TransportError),
    /// The host itself: not Linux, unsupported OS, no init system, facts.
    Host(HostError),
    /// A Kubernetes API call (through the leader's tunnel).
    Kube(KubeError),
    /// The cluster refused (e.g. a PodDisruptionBudget kept a drain from finishing).
    Blocked(String),
    /// Another k0sctl holds the host's lock.
    Locked(String),
    /// The manifest contradicts what the host runs (e.g. a version older than the running one).
    Config(String),
    /// A fact an earlier phase should have established.
    Missing(Missing),
    /// Anything else, already worded for the operator.
    Other(String),
}

/// The class of a cause, which decides the exit code (see [`exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The host's connection was lost mid-phase.
    Lost,
    /// The host could not be reached at all (connect, authentication, host key).
    Unreachable,
    /// Blocked by the cluster.
    Blocked,
    /// Locked by another k0sctl.
    Locked,
    /// The manifest is wrong for what runs.
    Config,
    /// A command or step failed.
    Failed,
}

/// One host's failure: the cause and the steps it happened in (outermost first).
#[derive(Debug)]
pub struct Failure {
    /// Boxed: a `Result<_, Failure>` stays small.
    cause: Box<Cause>,
    context: Vec<String>,
    /// Lines said after the cause (what the run did about it, what to do).
    notes: Vec<String>,
}

impl Failure {
    pub fn new(cause: Cause) -> Self {
        Failure {
            cause: Box::new(cause),
            context: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A failure worded for the operator with no more specific cause.
    pub fn other(message: impl Into<String>) -> Self {
        Failure::new(Cause::Other(message.into()))
    }

    /// Connecting failed (exit code "unreachable" whatever the transport's reason).
    pub fn connect(e: TransportError) -> Self {
        Failure::new(Cause::Connect(e))
    }

    /// The cluster refused (exit code "blocked by the cluster").
    pub fn blocked(message: impl Into<String>) -> Self {
        Failure::new(Cause::Blocked(message.into()))
    }

    /// Another k0sctl holds the lock (exit code "locked").
    pub fn locked(message: impl Into<String>) -> Self {
        Failure::new(Cause::Locked(message.into()))
    }

    /// The manifest contradicts the host (exit code "invalid configuration").
    pub fn config(message: impl Into<String>) -> Self {
        Failure::new(Cause::Config(message.into()))
    }

    /// Says what was being done: rendered as `what: <cause>`.
    pub fn context(mut self, what: impl Into<String>) -> Self {
        self.context.insert(0, what.into());
        self
    }

    /// Adds a line after the cause (what was done about it, what to do next).
    pub fn note(mut self, line: impl Into<String>) -> Self {
        self.notes.push(line.into());
        self
    }

    pub fn cause(&self) -> &Cause {
        &self.cause
    }

    /// The class of the cause.
    pub fn kind(&self) -> Kind {
        match &*self.cause {
            Cause::Transport(e) => transport_kind(e),
            Cause::Connect(_) => Kind::Unreachable,
            Cause::Host(HostError::Transport(e)) => transport_kind(e),
            Cause::Host(_) => Kind::Failed,
            Cause::Kube(KubeError::Blocked(_)) | Cause::Blocked(_) => Kind::Blocked,
            // The API is reached through the leader's SSH connection; the tunnel's typed error
            // in kube's cause chain says when that connection was lost.
            Cause::Kube(e) if e.connection_lost() => Kind::Lost,
            Cause::Kube(_) => Kind::Failed,
            Cause::Locked(_) => Kind::Locked,
            Cause::Config(_) => Kind::Config,
            Cause::Missing(_) => Kind::Failed,
            // Helpers that still return worded errors keep the transport's words.
            Cause::Other(m) if is_connection_lost(m) => Kind::Lost,
            Cause::Other(_) => Kind::Failed,
        }
    }

    /// The exit code this failure alone would end the run with.
    pub fn code(&self) -> Code {
        match self.kind() {
            Kind::Lost | Kind::Unreachable => Code::Unreachable,
            Kind::Blocked => Code::BlockedByCluster,
            Kind::Locked => Code::Locked,
            Kind::Config => Code::InvalidConfig,
            Kind::Failed => Code::PhaseFailed,
        }
    }

    /// The cause's message without the host it names first (the edge prints the host once).
    fn cause_message(&self) -> String {
        match &*self.cause {
            Cause::Transport(e) | Cause::Connect(e) => strip_host(&e.to_string(), e.host()),
            Cause::Host(e) => {
                let host = match e {
                    HostError::Transport(t) => t.host(),
                    HostError::NotLinux { host, .. }
                    | HostError::UnsupportedOs { host, .. }
                    | HostError::Facts { host, .. }
                    | HostError::NoInitSystem { host }
                    | HostError::NoPackageManager { host, .. } => host,
                };
                strip_host(&e.to_string(), host)
            }
            Cause::Kube(e) => e.to_string(),
            Cause::Missing(m) => m.to_string(),
            Cause::Blocked(m) | Cause::Locked(m) | Cause::Config(m) | Cause::Other(m) => m.clone(),
        }
    }
}

fn transport_kind(e: &TransportError) -> Kind {
    match e {
        TransportError::Disconnected { .. } => Kind::Lost,
        TransportError::Connect { .. }
        | TransportError::ConnectTimeout { .. }
        | TransportError::Auth { .. }
        | TransportError::HostKey(_)
        | TransportError::Key { .. } => Kind::Unreachable,
        _ => Kind::Failed,
    }
}

/// `message` without a leading `host: `.
fn strip_host(message: &str, host: &str) -> String {
    if host.is_empty() {
        return message.to_string();
    }
    message
        .strip_prefix(host)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message)
        .to_string()
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.context {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.cause_message())?;
        for n in &self.notes {
            write!(f, "\n{n}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.cause {
            Cause::Transport(e) | Cause::Connect(e) => Some(e),
            Cause::Host(e) => Some(e),
            Cause::Kube(e) => Some(e),
            Cause::Missing(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        Failure::new(Cause::Transport(e))
    }
}

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Transport(t) => Failure::new(Cause::Transport(t)),
            e => Failure::new(Cause::Host(e)),
        }
    }
}

impl From<KubeError> for Failure {
    fn from(e: KubeError) -> Self {
        Failure::new(Cause::Kube(e))
    }
}

impl From<Missing> for Failure {
    fn from(m: Missing) -> Self {
        Failure::new(Cause::Missing(m))
    }
}

impl From<String> for Failure {
    fn from(m: String) -> Self {
        Failure::other(m)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::other(e.to_string())
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::other(e.to_string())
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        Failure::other(e.to_string())
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure::other(e.to_string())
    }
}

impl From<&str> for Failure {
    fn from(m: &str) -> Self {
        Failure::other(m)
    }
}

/// Adds [`Failure::context`] to any error that converts into a [`Failure`].
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, Failure>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, Failure>;
}

impl<T, E: Into<Failure>> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, Failure> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, Failure> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// The exit code of a phase that failed on these hosts:
/// - any host blocked by the cluster → "blocked by the cluster" (6): the run could not
///   finish for a reason the operator must settle in the cluster;
/// - else any host locked by another k0sctl → "locked" (7);
/// - else any manifest contradiction → "invalid configuration" (3);
/// - else every host lost its connection or could not be reached → "unreachable" (4);
/// - else "a phase failed" (5).
pub fn exit_code<'a>(failures: impl IntoIterator<Item = &'a Failure>) -> Code {
    let kinds: Vec<Kind> = failures.into_iter().map(Failure::kind).collect();
    if kinds.is_empty() {
        return Code::PhaseFailed;
    }
    let any = |k: Kind| kinds.contains(&k);
    if any(Kind::Blocked) {
        Code::BlockedByCluster
    } else if any(Kind::Locked) {
        Code::Locked
    } else if any(Kind::Config) {
        Code::InvalidConfig
    } else if kinds
        .iter()
        .all(|k| matches!(k, Kind::Lost | Kind::Unreachable))
    {
        Code::Unreachable
    } else {
        Code::PhaseFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::error::ExitStatus;

    fn lost() -> Failure {
        TransportError::Disconnected {
            host: "root@10.0.0.1:22".into(),
            reason: "keepalive timeout".into(),
        }
        .into()
    }

    fn command_failed() -> Failure {
        TransportError::Command {
            host: "root@10.0.0.2:22".into(),
            cmd: "k0s install".into(),
            status: ExitStatus::Code(1),
            stderr: "boom".into(),
            stdout: String::new(),
        }
        .into()
    }

    fn refused() -> Failure {
        TransportError::Connect {
            host: "root@10.0.0.3:22".into(),
            addr: "10.0.0.3:22".into(),
            reason: "connection refused".into(),
            transient: true,
        }
        .into()
    }

    #[test]
    fn lost_connections_exit_4() {
        assert_eq!(exit_code([&lost()]), Code::Unreachable);
        assert_eq!(exit_code([&lost(), &refused()]), Code::Unreachable);
        // Context does not hide the cause.
        let f = lost().context("restarting k0s");
        assert_eq!(f.kind(), Kind::Lost);
        assert_eq!(exit_code([&f]), Code::Unreachable);
    }

    #[test]
    fn blocked_exit_6_even_mixed() {
        assert_eq!(
            exit_code([&Failure::blocked("pdb x")]),
            Code::BlockedByCluster
        );
        assert_eq!(
            exit_code([&Failure::blocked("pdb x"), &command_failed(), &lost()]),
            Code::BlockedByCluster
        );
    }

    #[test]
    fn mixed_lost_and_failed_is_a_failed_phase() {
        assert_eq!(exit_code([&lost(), &command_failed()]), Code::PhaseFailed);
        assert_eq!(exit_code([&command_failed()]), Code::PhaseFailed);
        assert_eq!(
            exit_code([&Failure::from(Missing::Leader)]),
            Code::PhaseFailed
        );
        assert_eq!(exit_code(std::iter::empty::<&Failure>()), Code::PhaseFailed);
    }

    #[test]
    fn locked_and_config_causes() {
        assert_eq!(exit_code([&Failure::locked("held by x")]), Code::Locked);
        assert_eq!(
            exit_code([&Failure::locked("held by x"), &lost()]),
            Code::Locked
        );
        assert_eq!(exit_code([&Failure::config("older")]), Code::InvalidConfig);
    }

    #[test]
    fn worded_errors_with_transport_words_still_count_as_lost() {
        let f = Failure::other("root@h:22: connection lost: eof");
        assert_eq!(f.kind(), Kind::Lost);
    }

    #[test]
    fn renders_without_the_transports_host_and_keeps_stderr() {
        assert_eq!(
            refused().to_string(),
            "cannot connect to 10.0.0.3:22: connection refused. Check that the host is up and that address and port are right."
        );
        let f = command_failed().context("installing k0s");
        let s = f.to_string();
        assert!(
            s.starts_with("installing k0s: command failed (exit code 1): k0s install"),
            "{s}"
        );
        assert!(s.contains("remote stderr:\n    boom"), "{s}");
        assert!(!s.contains("root@10.0.0.2:22"), "{s}");
    }

    #[test]
    fn missing_facts_name_the_fact_and_the_phase() {
        let s = Failure::from(Missing::NodeName).to_string();
        assert!(s.contains("node name"), "{s}");
        assert!(s.contains("Detect host operating systems"), "{s}");
    }
}
