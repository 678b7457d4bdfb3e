//! `k0sctl reset`: take k0s off every host of the configuration. Asks for confirmation on a
//! terminal (listing the hosts) unless `--force`; without a terminal `--force` is required.
//! `--dry-run` plans without asking and without changing anything.

use std::io::{BufRead, IsTerminal, Write};

use crate::config::Loaded;
use crate::exit::{CliError, Code};
use crate::phases;

use super::run::{phase_error, report_changes, report_timings};
use super::{Context, ResetArgs};

/// Asks on the terminal; refuses (exit code "aborted") without one.
fn confirm(loaded: &Loaded) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(CliError::new(
            Code::Aborted,
            "reset requires --force when not run on a terminal (stdin and stdout must be a terminal to confirm); nothing was changed",
        ));
    }
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "Going to reset all of the hosts, which will destroy all configuration and data:"
    )?;
    for h in &loaded.cluster.spec.hosts {
        writeln!(err, "  {} ({})", h.display_address(), h.role)?;
    }
    write!(err, "Are you sure? [y/N] ")?;
    err.flush()?;
    drop(err);
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::new(
            Code::Aborted,
            "confirmation or --force required to proceed; nothing was changed",
        ))
    }
}

pub fn run(ctx: &Context, a: ResetArgs) -> Result<(), CliError> {
    let mut loaded = ctx.load_config(&a.config)?;
    // As k0sctl does: every host is reset.
    for h in &mut loaded.cluster.spec.hosts {
        h.reset = true;
    }
    let dry_run = ctx.global.dry_run;
    if !dry_run && !ctx.global.force {
        crate::display::suspend(|| confirm(&loaded))?;
    }
    let c = &loaded.cluster;
    let opts = super::run::lifecycle_opts(ctx, c, a.concurrency)?;
    let json = a.output == "json";
    super::run::run_pipeline(ctx, loaded, opts, phases::pipeline::reset(), json, |f| {
        if f.dry_run && !f.json {
            print!("{}", f.state.plan);
        } else {
            report_changes(&f.state, f.result.is_err());
        }
        report_timings(&f.result.map_err(|e| phase_error("reset", e))?);
        tracing::info!("==> Finished in {}s", f.started.elapsed().as_secs());
        Ok(())
    })
}
