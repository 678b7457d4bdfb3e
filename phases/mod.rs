//! The pipeline phases, one per file, and the manager that runs them.
//!
//! Each phase is small and has a title, a "should run" decision from the state gathered so
//! far, a run, an optional clean-up (called for every phase that ran when a later one fails)
//! and a dry-run (which must change nothing and describes what would change in the [`Plan`]).
//! State is passed explicitly: every phase gets `&mut` [`State`]; there are no globals.
//!
//! Phases know *what* to do; how bytes reach a host is [`crate::transport`]'s business, what
//! kind of OS is there is [`crate::host`]'s, and k0s command lines come from [`crate::k0s`].
//!
//! Layout (arrows point one way: pipeline → phases → steps → host/transport/k0s/kube):
//! - one file per phase (`connect.rs`, `install_workers.rs`, …): its title, should-run,
//!   run, dry run and clean-up. No phase file imports another phase file.
//! - [`steps`]: what several phases share, one small module per kind of step (service,
//!   tokens, waits, one host's upgrade, one host's reset, the leader's Kubernetes client,
//!   drain reports, …). Steps never import phases.
//! - [`pipeline`]: each command's pipeline composed from named parts (`connect_and_gather`,
//!   `install`, `upgrade`, `finish`, …); nothing is looked up by title.
//! - [`state`]: the run state every phase gets; this file: the [`Phase`] trait, the
//!   [`Manager`], [`PhaseError`] and the dry-run [`Plan`].

pub mod backup;
pub mod configure_k0s;
pub mod connect;
pub mod detect_os;
pub mod disconnect;
pub mod failure;
pub mod fanout;
pub mod gather_k0s_facts;
pub mod hooks;
pub mod init_leader;
pub mod install_binaries;
pub mod install_controllers;
pub mod install_workers;
pub mod kubeconfig;
pub mod lock;
pub mod manifests;
pub mod pipeline;
pub mod prepare_hosts;
pub mod prune_nodes;
pub mod reinstall;
pub mod remove_nodes;
pub mod reset;
pub mod service_env;
pub mod set_version;
pub mod stage_binaries;
pub mod state;
pub mod steps;
#[cfg(test)]
pub mod testkit;
pub mod token_workaround;
pub mod upgrade_controllers;
pub mod upgrade_workers;
pub mod upload_files;
pub mod validate_facts;
pub mod validate_hosts;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::exit::Code;

pub use failure::{Cause, Context, Failure, Missing};
pub use fanout::{HostFailure, all_ok, each_host};
pub use state::{HostState, RunOptions, State};

/// A boxed future borrowed from the phase and the state.
pub type PhaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PhaseError>> + Send + 'a>>;

/// One step of a pipeline.
pub trait Phase: Send + Sync {
    /// Shown as `==> Running phase: <title>`; k0sctl's titles are kept.
    fn title(&self) -> &'static str;

    /// Whether there is anything to do, decided from the state gathered so far.
    fn should_run(&self, _state: &State) -> bool {
        true
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a>;

    /// What `--dry-run` does instead of [`Phase::run`]. Phases that change hosts must override
    /// it to record their intent in `state.plan` without changing anything; read-only phases
    /// keep this default, which runs them.
    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        self.run(state)
    }

    /// Undo what this phase did, after a later phase failed (best effort).
    fn clean_up<'a>(&'a self, _state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// A phase failure: which phase, which hosts and why (typed, see [`Failure`]), and the exit
/// code it maps to. Per-host failures get their exit code from their causes
/// ([`failure::exit_code`]); cluster-wide ones (timeout, interrupt, lookups) name theirs.
#[derive(Debug)]
pub struct PhaseError {
    pub code: Code,
    pub phase: &'static str,
    /// (host, failure) for per-host failures; empty for cluster-wide ones.
    pub hosts: Vec<HostFailure>,
    pub message: String,
}

impl PhaseError {
    pub fn new(code: Code, phase: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            phase,
            hosts: Vec::new(),
            message: message.into(),
        }
    }

    /// Per-host failures: the exit code comes from the causes, the message says how many
    /// hosts failed (and, when that is the whole story, that their connections were lost or
    /// that the cluster refused).
    pub fn failed_on(phase: &'static str, hosts: Vec<HostFailure>) -> Self {
        let code = failure::exit_code(hosts.iter().map(|(_, f)| f));
        Self::with_code(code, phase, hosts)
    }

    /// A cluster-wide failure (not tied to one host's line), its exit code from its cause.
    pub fn cluster(phase: &'static str, f: impl Into<Failure>) -> Self {
        let f = f.into();
        Self::new(f.code(), phase, f.to_string())
    }

    /// A fact an earlier phase should have established is missing (a phase-order bug).
    pub fn missing(phase: &'static str, m: Missing) -> Self {
        Self::new(Code::PhaseFailed, phase, format!("cannot run: {m}"))
    }

    /// One host's failure (see [`PhaseError::failed_on`]).
    pub fn on_host(phase: &'static str, host: impl Into<String>, f: impl Into<Failure>) -> Self {
        Self::failed_on(phase, vec![(host.into(), f.into())])
    }

    fn with_code(code: Code, phase: &'static str, hosts: Vec<HostFailure>) -> Self {
        let n = hosts.len();
        let s = if n == 1 { "" } else { "s" };
        let all_lost = n > 0 && hosts.iter().all(|(_, f)| f.kind() == failure::Kind::Lost);
        let message = if code == Code::Unreachable && all_lost {
            // A phase that failed only because hosts' connections were lost is an
            // "unreachable" failure, not a failed command: the message says so, and each
            // host's line says what it was doing.
            format!(
                "failed: connection lost to {n} host{s} (check the network and that sshd runs there; a plain re-apply continues)"
            )
        } else if code == Code::BlockedByCluster {
            let pdbs = hosts
                .iter()
                .any(|(_, f)| matches!(f.cause(), Cause::Kube(crate::kube::KubeError::Blocked(_))));
            let by = if pdbs {
                "PodDisruptionBudgets"
            } else {
                "the cluster"
            };
            format!("failed on {n} host{s} (blocked by {by})")
        } else {
            format!("failed on {n} host{s}")
        };
        Self {
            code,
            phase,
            hosts,
            message,
        }
    }
}

/// `message` without a leading `host: ` or `user@host: ` (the host line already names it).
fn without_host<'m>(message: &'m str, host: &str) -> &'m str {
    match message.split_once(": ") {
        Some((first, rest))
            if first == host || first.rsplit_once('@').is_some_and(|(_, h)| h == host) =>
        {
            rest
        }
        _ => message,
    }
}

impl fmt::Display for PhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase \"{}\" {}", self.phase, self.message)?;
        for (h, m) in &self.hosts {
            write!(f, "\n - {h}: ")?;
            let m = m.to_string();
            // Keep multi-line messages (remote stderr) indented under their host.
            for (i, line) in without_host(&m, h).lines().enumerate() {
                if i > 0 {
                    f.write_str("\n   ")?;
                }
                f.write_str(line)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for PhaseError {}

/// What a dry run would change, per host, in the order it was found.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub changes: Vec<(String, String)>,
}

impl Plan {
    pub fn add(&mut self, host: impl Into<String>, what: impl Into<String>) {
        self.changes.push((host.into(), what.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    /// k0sctl's dry-run report format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(
                f,
                "dry-run: no cluster state altering actions would be performed"
            );
        }
        writeln!(
            f,
            "dry-run: cluster state altering actions would be performed:"
        )?;
        let mut hosts: Vec<&str> = Vec::new();
        for (h, _) in &self.changes {
            if !hosts.contains(&h.as_str()) {
                hosts.push(h);
            }
        }
        for h in hosts {
            writeln!(f, "dry-run: * {h} :")?;
            for (_, what) in self.changes.iter().filter(|(x, _)| x == h) {
                writeln!(f, "dry-run:  - {what}")?;
            }
        }
        Ok(())
    }
}

/// How a phase went, for the timing summary.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    pub title: &'static str,
    pub ran: bool,
    pub duration: Duration,
}

/// A request to stop a run (SIGINT/SIGTERM), given to [`Manager::with_interrupt`].
#[derive(Clone)]
pub struct Interrupt(tokio::sync::watch::Receiver<Option<&'static str>>);

impl Interrupt {
    pub fn new(rx: tokio::sync::watch::Receiver<Option<&'static str>>) -> Self {
        Interrupt(rx)
    }

    /// Resolves with the signal's name once a stop was requested (never, if it never is).
    pub async fn requested(&self) -> &'static str {
        let mut rx = self.0.clone();
        loop {
            if let Some(sig) = *rx.borrow_and_update() {
                return sig;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs phases in order. On the first failure, calls `clean_up` of every phase that ran (in
/// the order they ran) and returns the failure.
pub struct Manager {
    phases: Vec<Box<dyn Phase>>,
    /// `--timeout`: when it passes, the running phase is stopped where it is and the
    /// clean-ups run as after any failure (so locks are released and half-done installs are
    /// undone), and the run fails with the timeout exit code.
    deadline: Option<(tokio::time::Instant, String)>,
    /// Ctrl-C / SIGTERM: handled like the deadline (exit code "interrupted").
    interrupt: Option<Interrupt>,
}

impl Manager {
    pub fn new(phases: Vec<Box<dyn Phase>>) -> Self {
        Self {
            phases,
            deadline: None,
            interrupt: None,
        }
    }

    /// Stop the running phase and run the clean-ups when `i` is requested.
    pub fn with_interrupt(mut self, i: Interrupt) -> Self {
        self.interrupt = Some(i);
        self
    }

    /// Stop the run `limit` from now (zero: no limit); `what` names the limit in the error.
    pub fn with_timeout(mut self, limit: Duration, what: impl Into<String>) -> Self {
        if !limit.is_zero() {
            self.deadline = Some((tokio::time::Instant::now() + limit, what.into()));
        }
        self
    }

    pub async fn run(&self, state: &mut State) -> Result<Vec<PhaseReport>, PhaseError> {
        let mut reports = Vec::new();
        let mut ran: Vec<usize> = Vec::new();
        for (i, phase) in self.phases.iter().enumerate() {
            if !phase.should_run(state) {
                reports.push(PhaseReport {
                    title: phase.title(),
                    ran: false,
                    duration: Duration::ZERO,
                });
                continue;
            }
            tracing::info!("==> Running phase: {}", phase.title());
            state.emit(serde_json::json!({"event": "phase_start", "phase": phase.title()}));
            let started = Instant::now();
            ran.push(i);
            let fut = if state.opts.dry_run {
                phase.dry_run(state)
            } else {
                phase.run(state)
            };
            let limited = async {
                match &self.deadline {
                    None => fut.await,
                    Some((at, what)) => {
                        tokio::time::timeout_at(*at, fut).await.unwrap_or_else(|_| {
                            Err(PhaseError::new(
                                Code::Timeout,
                                phase.title(),
                                format!("was stopped: {what} expired"),
                            ))
                        })
                    }
                }
            };
            let result = match &self.interrupt {
                None => limited.await,
                Some(i) => tokio::select! {
                    r = limited => r,
                    sig = i.requested() => Err(PhaseError::new(
                        Code::Interrupted,
                        phase.title(),
                        format!("was stopped: interrupted by {sig}"),
                    )),
                },
            };
            reports.push(PhaseReport {
                title: phase.title(),
                ran: true,
                duration: started.elapsed(),
            });
            state.emit(serde_json::json!({
                "event": "phase_end",
                "phase": phase.title(),
                "duration_ms": started.elapsed().as_millis() as u64,
                "ok": result.is_ok(),
            }));
            if let Err(e) = result {
                // On the screen the command prints the error once, when it ends; the log
                // file keeps it here, in its place among the phases.
                tracing::debug!("{e}");
                state.emit(serde_json::json!({
                    "event": "error",
                    "phase": e.phase,
                    "exit_code": e.code.as_i32(),
                    "message": e.message,
                    "hosts": e.hosts.iter().map(|(h, f)| serde_json::json!({"host": h, "error": without_host(&f.to_string(), h)})).collect::<Vec<_>>(),
                }));
                for &j in &ran {
                    let p = &self.phases[j];
                    tracing::info!("* Running clean-up for phase: {}", p.title());
                    state.emit(serde_json::json!({"event": "cleanup_start", "phase": p.title()}));
                    if let Err(ce) = p.clean_up(state).await {
                        tracing::warn!("clean-up for phase \"{}\" failed: {ce}", p.title());
                    }
                }
                return Err(e);
            }
        }
        Ok(reports)
    }
}

/// Collects per-host results of a parallel step into one [`PhaseError`] naming every host
/// that failed (the others' work is kept: all hosts run to completion); the exit code comes
/// from the causes.
pub fn collect(
    phase: &'static str,
    results: impl IntoIterator<Item = Result<(), HostFailure>>,
) -> Result<(), PhaseError> {
    fail_if_any(phase, results.into_iter().filter_map(Result::err).collect())
}

/// `Ok` when no host failed, else one [`PhaseError`] naming every host in `failures`.
pub fn fail_if_any(phase: &'static str, failures: Vec<HostFailure>) -> Result<(), PhaseError> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(PhaseError::failed_on(phase, failures))
    }
}

/// The pipelines most callers want, under their old paths (see [`pipeline`] for all).
pub use pipeline::{apply, backup, preflight, reset};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_format_matches_k0sctl() {
        let mut p = Plan::default();
        assert_eq!(
            p.to_string(),
            "dry-run: no cluster state altering actions would be performed\n"
        );
        p.add("10.0.0.1:22", "install k0s controller");
        p.add("10.0.0.2:22", "install k0s worker");
        p.add("10.0.0.1:22", "start the k0scontroller service");
        assert_eq!(
            p.to_string(),
            "dry-run: cluster state altering actions would be performed:\ndry-run: * 10.0.0.1:22 :\ndry-run:  - install k0s controller\ndry-run:  - start the k0scontroller service\ndry-run: * 10.0.0.2:22 :\ndry-run:  - install k0s worker\n"
        );
    }

    #[test]
    fn phase_error_lists_hosts_with_indented_stderr() {
        let e = PhaseError::failed_on(
            "Validate hosts",
            vec![("a:22".into(), Failure::other("bad\nremote stderr:\n  x"))],
        );
        assert_eq!(
            e.to_string(),
            "phase \"Validate hosts\" failed on 1 host\n - a:22: bad\n   remote stderr:\n     x"
        );
    }

    #[test]
    fn a_host_is_named_once() {
        let typed = crate::transport::TransportError::Connect {
            host: "root@127.0.0.1:38051".into(),
            addr: "127.0.0.1:38051".into(),
            reason: "connection refused".into(),
            transient: true,
        };
        let e = PhaseError::failed_on(
            "Connect to hosts",
            vec![("127.0.0.1:38051".into(), Failure::connect(typed))],
        );
        assert_eq!(e.code, Code::Unreachable);
        let s = e.to_string();
        assert!(
            s.starts_with("phase \"Connect to hosts\" failed on 1 host\n - 127.0.0.1:38051: cannot connect to 127.0.0.1:38051: connection refused."),
            "{s}"
        );
        assert_eq!(s.matches("- 127.0.0.1:38051").count(), 1, "{s}");
        assert!(!s.contains("root@"), "{s}");
        // A worded message that still starts with the transport's name loses it too.
        let e = PhaseError::failed_on(
            "Connect to hosts",
            vec![(
                "127.0.0.1:38051".into(),
                Failure::other("root@127.0.0.1:38051: cannot connect"),
            )],
        );
        assert_eq!(
            e.to_string(),
            "phase \"Connect to hosts\" failed on 1 host\n - 127.0.0.1:38051: cannot connect"
        );
    }

    #[test]
    fn exit_code_and_message_come_from_the_causes() {
        let lost = |h: &str| {
            Failure::from(crate::transport::TransportError::Disconnected {
                host: format!("root@{h}"),
                reason: "eof".into(),
            })
            .context("installing k0s")
        };
        let e = PhaseError::failed_on(
            "Install workers",
            vec![("a:22".into(), lost("a:22")), ("b:22".into(), lost("b:22"))],
        );
        assert_eq!(e.code, Code::Unreachable);
        assert!(
            e.message.starts_with("failed: connection lost to 2 hosts"),
            "{}",
            e.message
        );
        assert!(
            e.to_string()
                .contains(" - a:22: installing k0s: connection lost: eof"),
            "{e}"
        );

        let e = PhaseError::failed_on(
            "Upgrade workers",
            vec![
                ("a:22".into(), lost("a:22")),
                (
                    "b:22".into(),
                    Failure::blocked("drain of node b blocked by default/pdb"),
                ),
            ],
        );
        assert_eq!(e.code, Code::BlockedByCluster);
        assert!(
            e.message.contains("blocked by the cluster"),
            "{}",
            e.message
        );

        let e = PhaseError::failed_on(
            "Install workers",
            vec![
                ("a:22".into(), lost("a:22")),
                ("b:22".into(), Failure::other("k0s install failed")),
            ],
        );
        assert_eq!(e.code, Code::PhaseFailed);
        assert_eq!(e.message, "failed on 2 hosts");
    }
}

#[cfg(test)]
mod manager_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};
    use std::sync::{Arc, Mutex};

    /// A phase that records what the manager called on it.
    struct Probe {
        title: &'static str,
        runs: bool,
        fails: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Probe {
        fn boxed(
            title: &'static str,
            runs: bool,
            fails: bool,
            log: &Arc<Mutex<Vec<String>>>,
        ) -> Box<dyn Phase> {
            Box::new(Probe {
                title,
                runs,
                fails,
                log: log.clone(),
            })
        }
        fn note(&self, what: &str) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{what} {}", self.title));
        }
    }

    impl Phase for Probe {
        fn title(&self) -> &'static str {
            self.title
        }
        fn should_run(&self, _state: &State) -> bool {
            self.runs
        }
        fn run<'a>(&'a self, _state: &'a mut State) -> PhaseFuture<'a> {
            Box::pin(async move {
                self.note("run");
                if self.fails {
                    return Err(PhaseError::on_host(
                        self.title,
                        "10.0.0.1:22",
                        Failure::other("boom\nremote stderr"),
                    ));
                }
                Ok(())
            })
        }
        fn dry_run<'a>(&'a self, _state: &'a mut State) -> PhaseFuture<'a> {
            Box::pin(async move {
                self.note("dry");
                Ok(())
            })
        }
        fn clean_up<'a>(&'a self, _state: &'a mut State) -> PhaseFuture<'a> {
            Box::pin(async move {
                self.note("clean");
                Ok(())
            })
        }
    }

    /// Phases run in order, skipped ones are reported as not run; after a failure every
    /// phase that ran is cleaned up in the order it ran, later phases never start.
    #[tokio::test]
    async fn runs_in_order_and_cleans_up_what_ran_after_a_failure() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let m = Manager::new(vec![
            Probe::boxed("a", true, false, &log),
            Probe::boxed("skipped", false, false, &log),
            Probe::boxed("b", true, true, &log),
            Probe::boxed("never", true, false, &log),
        ]);
        let mut k = Kit::new(&["controller"]);
        let e = m.run(&mut k.state).await.unwrap_err().to_string();
        assert!(
            e.contains("phase \"b\" failed on 1 host") && e.contains("remote stderr"),
            "{e}"
        );
        assert_eq!(
            *log.lock().unwrap(),
            ["run a", "run b", "clean a", "clean b"]
        );
    }

    #[tokio::test]
    async fn a_dry_run_calls_dry_run_and_reports_each_phase() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let m = Manager::new(vec![
            Probe::boxed("a", true, false, &log),
            Probe::boxed("skipped", false, false, &log),
        ]);
        let mut k = Kit::with_opts(&["controller"], dry());
        let reports = m.run(&mut k.state).await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["dry a"]);
        let ran: Vec<(&str, bool)> = reports.iter().map(|r| (r.title, r.ran)).collect();
        assert_eq!(ran, [("a", true), ("skipped", false)]);
    }
}
