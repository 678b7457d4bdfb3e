//! What every command that runs a pipeline shares, in one place: run options, connecting
//! (the whole cluster, or only the first controller), running the phase manager under
//! `--timeout` and Ctrl-C, the live display and `--output json` events, and rendering the end
//! (changes, timings, summary, the error with its exit code).

use std::time::Instant;

use crate::config::Loaded;
use crate::exit::{CliError, Code};
use crate::phases::pipeline::{self, Phases};
use crate::phases::state::ProgressSink;
use crate::phases::{Manager, PhaseError, PhaseReport, RunOptions, State};
use crate::transport::privilege::sudo_password;
use crate::transport::ssh::SshConfig;

use super::Context;

/// A whole-cluster pipeline that has run, for its command to report.
pub(super) struct Finished {
    pub state: State,
    /// The phases' reports, or the failure (clean-ups have run).
    pub result: Result<Vec<PhaseReport>, PhaseError>,
    pub started: Instant,
    pub dry_run: bool,
    pub json: bool,
}

/// Runs a whole-cluster pipeline (`apply`, `reset`, `backup`): the run state from `loaded`
/// and `opts`, the live display, `--output json` events (`json`), the phase manager under
/// `--timeout` and Ctrl-C/SIGTERM (either stops the running phase and runs the clean-ups),
/// then the final `summary` event; `report` renders the rest from what ran.
pub(super) fn run_pipeline<T>(
    ctx: &Context,
    loaded: Loaded,
    opts: RunOptions,
    phases: Phases,
    json: bool,
    report: impl FnOnce(Finished) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let started = Instant::now();
    let dry_run = opts.dry_run;
    let limit = ctx.global.timeout;
    super::block_on_interruptible(move |interrupt| async move {
        let mut state = State::new(loaded, opts, SshConfig::load_default());
        attach_display(&mut state);
        if json {
            json_events(&mut state);
        }
        let result = Manager::new(phases)
            .with_timeout(
                limit,
                format!("--timeout {}", crate::config::duration::format(limit)),
            )
            .with_interrupt(interrupt)
            .run(&mut state)
            .await;
        crate::display::finish();
        emit_summary(&state, &result, dry_run, started);
        report(Finished {
            state,
            result,
            started,
            dry_run,
            json,
        })
    })
}

/// Connects to the manifest's first controller only (as k0sctl's `kubeconfig` and `config`
/// commands do; `loaded` keeps only it, see [`only_first_controller`]) and returns the run
/// state with it as host 0 and leader. A failure is `<what> failed: …`.
pub(super) async fn connect_first_controller(
    loaded: Loaded,
    opts: RunOptions,
    what: &str,
) -> Result<State, CliError> {
    let mut state = State::new(loaded, opts, SshConfig::load_default());
    Manager::new(pipeline::first_controller())
        .run(&mut state)
        .await
        .map_err(|e| phase_error(what, e))?;
    state.leader = Some(0);
    Ok(state)
}

pub(super) fn phase_error(what: &str, e: PhaseError) -> CliError {
    CliError::new(e.code, format!("{what} failed: {e}"))
}

pub(super) fn with_timeout<T>(
    ctx: &Context,
    fut: impl std::future::Future<Output = Result<T, CliError>>,
) -> impl std::future::Future<Output = Result<T, CliError>> {
    let limit = ctx.global.timeout;
    async move {
        if limit.is_zero() {
            return fut.await;
        }
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            Err(CliError::new(
                Code::Timeout,
                format!(
                    "--timeout {} expired",
                    crate::config::duration::format(limit)
                ),
            ))
        })
    }
}

/// `--output json`: every event of the run as one JSON line on stdout (the schema is the
/// same for apply, reset and backup: `phase_start`, `phase_end`, `change`, `plan`, `error`,
/// and a final `summary`).
pub(super) fn json_events(state: &mut State) {
    let out = std::sync::Mutex::new(());
    state.events = Some(std::sync::Arc::new(move |ev: serde_json::Value| {
        let _g = out.lock().expect("stdout lock");
        println!("{ev}");
    }));
}

/// The final `summary` event (only emitted with `--output json`).
pub(super) fn emit_summary(
    state: &State,
    result: &Result<Vec<PhaseReport>, crate::phases::PhaseError>,
    dry_run: bool,
    started: Instant,
) {
    state.emit(serde_json::json!({
        "event": "summary",
        "ok": result.is_ok(),
        "dry_run": dry_run,
        "changes": state.changes.changes.len(),
        "planned": state.plan.changes.len(),
        "duration_ms": started.elapsed().as_millis() as u64,
        "exit_code": result.as_ref().map(|_| 0).unwrap_or_else(|e| e.code.as_i32()),
    }));
}

/// Shows the run on the live display, when there is one (see [`crate::display`]): the hosts
/// it recognises in log lines, and upload byte progress.
pub(super) fn attach_display(state: &mut State) {
    if crate::display::enabled() {
        crate::display::set_hosts(state.hosts.iter().map(|h| h.name.clone()).collect());
        state.progress = ProgressSink::new(crate::display::upload_progress);
    }
}

/// The phases that ran and how long each took: on the screen with the live display, at
/// debug level otherwise (so plain output stays as it was; the log file always has it).
pub(super) fn report_timings(reports: &[PhaseReport]) {
    let rows: Vec<(&str, std::time::Duration)> = reports
        .iter()
        .filter(|r| r.ran)
        .map(|r| (r.title, r.duration))
        .collect();
    let table = crate::display::timings_table(&rows);
    let on_screen = crate::display::enabled();
    for line in table.lines() {
        if on_screen {
            tracing::info!("{line}");
        } else {
            tracing::debug!("{line}");
        }
    }
}

/// What this run changed, per host (also when it failed part way: `failed`).
pub(super) fn report_changes(state: &State, failed: bool) {
    if state.changes.is_empty() {
        if failed {
            // Not "the hosts already match": the run stopped before it could tell.
            tracing::info!("==> No changes were made before the run stopped");
        } else {
            tracing::info!("==> No changes: the hosts already match the configuration");
        }
        return;
    }
    tracing::info!("==> Changes made:");
    let mut hosts: Vec<&str> = Vec::new();
    for (h, _) in &state.changes.changes {
        if !hosts.contains(&h.as_str()) {
            hosts.push(h);
        }
    }
    for h in hosts {
        for (_, what) in state.changes.changes.iter().filter(|(x, _)| x == h) {
            tracing::info!("    {h}: {what}");
        }
    }
}

/// Keeps only the first controller of the manifest (commands that talk to the cluster through
/// one controller, as k0sctl's do) and returns run options for that single connection.
pub(super) fn only_first_controller(
    loaded: &mut crate::config::Loaded,
) -> Result<RunOptions, CliError> {
    let first = loaded
        .cluster
        .spec
        .hosts
        .iter()
        .position(|h| h.is_controller())
        .ok_or_else(|| CliError::new(Code::InvalidConfig, "no controller in the configuration"))?;
    let leader = loaded.cluster.spec.hosts.swap_remove(first);
    loaded.cluster.spec.hosts = vec![leader];
    Ok(RunOptions {
        concurrency: 1,
        uploads: 1,
        sudo_password: sudo_password(None, false).map_err(|e| CliError::new(Code::Usage, e))?,
        ..RunOptions::default()
    })
}

/// Run options of the whole-cluster lifecycle commands (`reset`, `backup`): the global flags,
/// `--concurrency` (else `spec.options.concurrency.limit`) and the sudo password.
pub(super) fn lifecycle_opts(
    ctx: &Context,
    c: &crate::config::Cluster,
    concurrency: Option<u32>,
) -> Result<RunOptions, CliError> {
    Ok(RunOptions {
        dry_run: ctx.global.dry_run,
        force: ctx.global.force,
        concurrency: concurrency.unwrap_or(c.spec.options.concurrency.limit) as usize,
        uploads: c.spec.options.concurrency.uploads as usize,
        sudo_password: sudo_password(None, false).map_err(|e| CliError::new(Code::Usage, e))?,
        ..RunOptions::default()
    })
}
