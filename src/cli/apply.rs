//! `k0sctl apply` and `k0sctl kubeconfig`: build the run state from flags and manifest, run
//! the phases, report (plan for `--dry-run`, timings, what to do next).

use std::time::Instant;

use crate::exit::{CliError, Code};
use crate::phases::kubeconfig::{GetKubeconfig, KubeconfigOptions, admin_kubeconfig};
use crate::phases::state::ProgressSink;
use crate::phases::{self, Manager, PhaseError, PhaseReport, RunOptions, State};
use crate::transport::privilege::sudo_password;
use crate::transport::ssh::SshConfig;

use super::{ApplyArgs, Context, KubeconfigArgs};

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

pub fn apply(ctx: &Context, a: ApplyArgs) -> Result<(), CliError> {
    let mut loaded = ctx.load_config(&a.config)?;
    if let Some((taint, effect)) = &a.evict_taint {
        // `--evict-taint key[=value]:Effect` turns the evict taint on for this run.
        let t = &mut loaded.cluster.spec.options.evict_taint;
        t.enabled = true;
        t.taint = taint.clone();
        t.effect = effect.clone();
    }
    // Checked before any host is touched (the restore itself comes late in the pipeline).
    if let Some(f) = &a.restore_from
        && let Err(e) = std::fs::File::open(f).and_then(|h| h.metadata())
    {
        return Err(CliError::new(
            Code::Usage,
            format!("--restore-from {}: {e}", f.display()),
        ));
    }
    let c = &loaded.cluster;
    let opts = RunOptions {
        dry_run: ctx.global.dry_run,
        force: ctx.global.force,
        concurrency: a.concurrency.unwrap_or(c.spec.options.concurrency.limit) as usize,
        uploads: a
            .concurrent_uploads
            .unwrap_or(c.spec.options.concurrency.uploads) as usize,
        sudo_password: sudo_password(None, false).map_err(|e| CliError::new(Code::Usage, e))?,
        disable_downgrade_check: a.disable_downgrade_check,
        no_wait: a.no_wait || !c.spec.options.wait.enabled,
        no_drain: a.no_drain || !c.spec.options.drain.enabled,
        prune: a.prune,
        restore_from: a.restore_from.clone(),
    };
    let kubeconfig = a.kubeconfig_out.clone().map(|out| GetKubeconfig {
        out,
        options: KubeconfigOptions {
            address: a.kubeconfig_api_address.clone(),
            user: a.kubeconfig_user.clone(),
            cluster: a.kubeconfig_cluster.clone(),
        },
    });
    let dry_run = opts.dry_run;
    let detailed = a.detailed_exitcode;
    let json = a.output == "json";
    let started = Instant::now();
    let limit = ctx.global.timeout;
    super::block_on_interruptible(move |interrupt| async move {
        let mut state = State::new(loaded, opts, SshConfig::load_default());
        attach_display(&mut state);
        if json {
            json_events(&mut state);
        }
        let result = Manager::new(phases::apply(kubeconfig))
            .with_timeout(
                limit,
                format!("--timeout {}", crate::config::duration::format(limit)),
            )
            .with_interrupt(interrupt)
            .run(&mut state)
            .await;
        crate::display::finish();
        emit_summary(&state, &result, dry_run, started);
        if dry_run && !json {
            // The plan is the output of a dry run, also when it stopped early.
            print!("{}", state.plan);
        }
        if !dry_run {
            report_changes(&state, result.is_err());
        }
        report_timings(&result.map_err(|e| phase_error("apply", e))?);
        if dry_run && detailed && !state.plan.is_empty() {
            return Err(CliError::new(
                Code::ChangesPending,
                "dry-run: changes are pending (--detailed-exitcode)",
            ));
        }
        tracing::info!("==> Finished in {}s", started.elapsed().as_secs());
        if !dry_run {
            if let Some(v) = state.target_version() {
                tracing::info!("k0s cluster version {v} is now installed");
            }
            if a.kubeconfig_out.is_none() {
                tracing::info!(
                    "Tip: To access the cluster you can now fetch the admin kubeconfig using:"
                );
                tracing::info!("     k0sctl kubeconfig{}", config_args(&a.config.config));
            }
        }
        Ok(())
    })
}

/// `--output json`: every event of the run as one JSON line on stdout (the schema is the
/// same for apply, reset and backup: `phase_start`, `phase_end`, `cleanup_start`, `change`,
/// `plan`, `error`, and a final `summary`).
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

/// Shows the run on the live display, when there is one (see [`crate::display`]): the run's
/// events (before any other receiver of them), the hosts it shows, and upload byte progress.
pub(super) fn attach_display(state: &mut State) {
    if crate::display::enabled() {
        crate::display::set_hosts(state.hosts.iter().map(|h| h.name.clone()).collect());
        state.progress = ProgressSink::new(crate::display::upload_progress);
        let next = state.events.take();
        state.events = Some(std::sync::Arc::new(move |ev: serde_json::Value| {
            crate::display::on_event(&ev);
            if let Some(next) = &next {
                next(ev);
            }
        }));
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

fn config_args(args: &[String]) -> String {
    if args.len() == 1 && args[0] == "k0sctl.yaml" {
        String::new()
    } else {
        args.iter().map(|a| format!(" --config {a}")).collect()
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

pub fn kubeconfig(ctx: &Context, a: KubeconfigArgs) -> Result<(), CliError> {
    let mut loaded = ctx.load_config(&a.config)?;
    // Only the first controller is contacted (as k0sctl does).
    let opts = only_first_controller(&mut loaded)?;
    let o = KubeconfigOptions {
        address: a.address.clone(),
        user: a.user.clone(),
        cluster: a.cluster.clone(),
    };
    let kc = super::block_on_value(with_timeout(ctx, async move {
        let mut state = State::new(loaded, opts, SshConfig::load_default());
        let mut p = phases::preflight();
        p.retain(|ph| {
            ph.title() != phases::validate_hosts::TITLE && ph.title() != phases::set_version::TITLE
        });
        Manager::new(p)
            .run(&mut state)
            .await
            .map_err(|e| phase_error("getting kubeconfig", e))?;
        state.leader = Some(0);
        let kc = admin_kubeconfig(&state, &o)
            .await
            .map_err(|e| phase_error("getting kubeconfig", e));
        state.pool.close_all().await;
        kc
    }))?;
    if !a.merge {
        println!("{kc}");
        return Ok(());
    }
    let home = dirs::home_dir();
    let kubeconfig_env = std::env::var("KUBECONFIG").ok();
    let path = super::kubeconfig_merge::target_path(kubeconfig_env.as_deref(), home.as_deref())
        .ok_or_else(|| {
            CliError::new(
                Code::Failure,
                "--merge: neither KUBECONFIG nor a home directory is set; set KUBECONFIG to the file to merge into",
            )
        })?;
    let m = super::kubeconfig_merge::merge_into_file(&path, &kc, a.set_current)
        .map_err(|e| CliError::new(Code::Failure, format!("kubeconfig --merge: {e}")))?;
    let what = if m.replaced { "Updated" } else { "Added" };
    let (ctx_name, file) = (&m.context, path.display());
    if m.current {
        eprintln!("{what} context {ctx_name:?} in {file} (the current context)");
    } else {
        eprintln!(
            "{what} context {ctx_name:?} in {file}; use it with: kubectl config use-context {ctx_name}"
        );
    }
    Ok(())
}
