//! `k0sctl backup`: the leader's cluster state into a local archive (`-o`, default
//! `k0s_backup_<unix time>.tar.gz` in the current directory), created 0600; a failed backup
//! leaves no file behind (the download goes to a temp name renamed only when complete).

use crate::exit::{CliError, Code};
use crate::phases;
use crate::phases::backup::default_output;

use super::run::{phase_error, report_changes, report_timings};
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
    let opts = super::run::lifecycle_opts(ctx, c, a.concurrency)?;
    let json = a.output_format == "json";
    let pipeline = phases::pipeline::backup(output.clone());
    super::run::run_pipeline(ctx, loaded, opts, pipeline, json, |f| {
        if f.dry_run && !f.json {
            print!("{}", f.state.plan);
        } else if !f.state.changes.is_empty() {
            report_changes(&f.state, f.result.is_err());
        }
        report_timings(&f.result.map_err(|e| phase_error("backup", e))?);
        tracing::info!("==> Finished in {}s", f.started.elapsed().as_secs());
        if !f.dry_run {
            tracing::info!("Backup saved to {}", output.display());
        }
        Ok(())
    })
}
