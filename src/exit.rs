//! The exit-code table. Every command ends through [`CliError`], so CI can tell an invalid
//! config from an unreachable host from a drain blocked by a PodDisruptionBudget without
//! parsing messages (k0sctl exits 1 for all of them).

use std::fmt;

/// Exit codes; the numbers are part of the command-line contract (see README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// An unexpected error (a bug, a local I/O problem).
    Failure = 1,
    /// Bad command-line usage (unknown flag, missing argument).
    Usage = 2,
    /// The configuration is invalid; every problem is printed with file:line:column.
    InvalidConfig = 3,
    /// A host or service could not be reached: connection, authentication or host-key failure,
    /// or an online lookup that failed.
    Unreachable = 4,
    /// A phase failed on one or more hosts (the error names host, phase and remote stderr).
    PhaseFailed = 5,
    /// The cluster refused: e.g. a PodDisruptionBudget blocked a drain until its timeout.
    BlockedByCluster = 6,
    /// Another k0sctl holds the lock on a host (the holder is named).
    Locked = 7,
    /// Confirmation was declined or is required (`--force` when not on a terminal).
    Aborted = 8,
    /// `--dry-run --detailed-exitcode`: the run would change something.
    ChangesPending = 9,
    /// `--timeout` expired.
    Timeout = 124,
    /// Interrupted by SIGINT/SIGTERM: `apply`, `reset` and `backup` first stop the running
    /// phase and run their clean-ups, other commands stop at once; a second signal exits
    /// immediately.
    Interrupted = 130,
}

impl Code {
    pub const ALL: [Code; 12] = [
        Code::Ok,
        Code::Failure,
        Code::Usage,
        Code::InvalidConfig,
        Code::Unreachable,
        Code::PhaseFailed,
        Code::BlockedByCluster,
        Code::Locked,
        Code::Aborted,
        Code::ChangesPending,
        Code::Timeout,
        Code::Interrupted,
    ];

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    pub fn description(self) -> &'static str {
        match self {
            Code::Ok => "success",
            Code::Failure => "unexpected error",
            Code::Usage => "bad command-line usage",
            Code::InvalidConfig => "invalid configuration",
            Code::Unreachable => {
                "a host or service could not be reached (connection, authentication, host key)"
            }
            Code::PhaseFailed => "a phase failed on one or more hosts",
            Code::BlockedByCluster => "blocked by the cluster (e.g. a PodDisruptionBudget)",
            Code::Locked => "another k0sctl holds a host lock",
            Code::Aborted => "confirmation declined or required",
            Code::ChangesPending => "dry-run found changes (with --detailed-exitcode)",
            Code::Timeout => "--timeout expired",
            Code::Interrupted => "interrupted by SIGINT/SIGTERM (after the clean-ups)",
        }
    }
}

/// An error that ends the process with a specific exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: Code,
    pub message: String,
}

impl CliError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::new(Code::InvalidConfig, e.to_string())
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<CliError>() {
            Ok(c) => c,
            Err(e) => CliError::new(Code::Failure, format!("{e:#}")),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(Code::Failure, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let mut v: Vec<i32> = Code::ALL.iter().map(|c| c.as_i32()).collect();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), Code::ALL.len());
    }
}
