//! `k0sctl apply` and `k0sctl kubeconfig`: build the run state from flags and manifest, run
//! the phases, report (plan for `--dry-run`, timings, what to do next).

use crate::exit::{CliError, Code};
use crate::phases::kubeconfig::{GetKubeconfig, KubeconfigOptions, admin_kubeconfig};
use crate::phases::{self, RunOptions};
use crate::transport::privilege::sudo_password;

use super::run::{
    Finished, connect_first_controller, only_first_controller, phase_error, report_changes,
    report_timings, with_timeout,
};
use super::{ApplyArgs, Context, KubeconfigArgs};

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
    let detailed = a.detailed_exitcode;
    let json = a.output == "json";
    let pipeline = phases::pipeline::apply(kubeconfig);
    super::run::run_pipeline(ctx, loaded, opts, pipeline, json, move |f| {
        let Finished {
            state,
            result,
            started,
            dry_run,
            json,
        } = f;
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

fn config_args(args: &[String]) -> String {
    if args.len() == 1 && args[0] == "k0sctl.yaml" {
        String::new()
    } else {
        args.iter().map(|a| format!(" --config {a}")).collect()
    }
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
        let state = connect_first_controller(loaded, opts, "getting kubeconfig").await?;
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
