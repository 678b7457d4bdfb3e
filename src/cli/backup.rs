//! `k0sctl backup`: the leader's cluster state into a local archive (`-o`, default
//! `k0s_backup_<unix time>.tar.gz` in the current directory), created 0600; a failed backup
//! leaves no file behind (the download goes to a temp name renamed only when complete).

use std::time::Instant;

use crate::exit::{CliError, Code};
use crate::phases::backup::default_output;
use crate::phases::{self, Manager, State};
use crate::transport::ssh::SshConfig;

use super::run::{
    attach_display, emit_summary, json_events, phase_error, report_changes, report_timings,
};
use super::{BackupArgs, Context};

pub fn run(ctx: &Context, a: BackupArgs) -> Result<(), CliError> {
    let loaded = ctx.load_config(&a.config)?;
    let cwd = std::env::current_dir()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let output = cwd.join(a.output.clone().unwrap_or_else(|| default_output(now)));
    if let Some(dir) = output.parent()
        && !dir.is_dir()
    {
        return Err(CliError::new(
            Code::Usage,
            format!(
                "backup output {}: the directory {} does not exist",
                output.display(),
                dir.display()
            ),
        ));
    }
    let c = &loaded.cluster;
    let dry_run = ctx.global.dry_run;
    let opts = super::run::lifecycle_opts(ctx, c, a.concurrency)?;
    let started = Instant::now();
    let json = a.output_format == "json";
    let limit = ctx.global.timeout;
    super::block_on_interruptible(move |interrupt| async move {
        let mut state = State::new(loaded, opts, SshConfig::load_default());
        attach_display(&mut state);
        if json {
            json_events(&mut state);
        }
        let result = Manager::new(phases::backup(output.clone()))
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
            print!("{}", state.plan);
        } else if !state.changes.is_empty() {
            report_changes(&state, result.is_err());
        }
        report_timings(&result.map_err(|e| phase_error("backup", e))?);
        tracing::info!("==> Finished in {}s", started.elapsed().as_secs());
        if !dry_run {
            tracing::info!("Backup saved to {}", output.display());
        }
        Ok(())
    })
}
