//! "Reinstall": hosts whose k0s runs with other install flags than the manifest now gives
//! (as k0sctl's `phase/reinstall.go`: `installFlags`, role flags, kubelet extra args; flags k0sctl manages
//! itself are ignored) get `k0s install … --force` and a restart — each host once (k0sctl
//! reinstalls controllers twice), controllers one at a time, then workers in batches of
//! `workerDisruptionPercent`. No drain: a restarted k0s keeps its pods. Needs k0s v1.27.4+
//! (`install --force`); older hosts are reported instead.

use crate::phases::each_host;

use crate::k0s::version::K0sVersion;

use super::steps::upgrade_host::{
    flags_drift, mark_converged, reinstall_and_start, running_version, worker_batch_size,
};
use super::{Phase, PhaseError, PhaseFuture, State, collect};

pub struct Reinstall;

pub const TITLE: &str = "Reinstall";

fn candidates(state: &State) -> Vec<usize> {
    let min = K0sVersion::parse("v1.27.4+k0s.0").expect("constant");
    state
        .hosts
        .iter()
        .filter(|h| !h.config.reset && running_version(h).is_some_and(|v| *v >= min))
        .filter(|h| flags_drift(h, Some(h.index) == state.leader).unwrap_or(None) == Some(true))
        .map(|h| h.index)
        .collect()
}

impl Phase for Reinstall {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        !candidates(state).is_empty()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let wait = !state.opts.no_wait && state.config.cluster.spec.options.wait.enabled;
            let all = candidates(state);
            let (controllers, workers): (Vec<usize>, Vec<usize>) = all
                .into_iter()
                .partition(|&i| state.hosts[i].config.is_controller());
            if !controllers.is_empty() {
                tracing::info!(
                    "reinstalling {} controllers one at a time",
                    controllers.len()
                );
            }
            for i in controllers {
                let (h, leader) = (&state.hosts[i], &state.hosts[l]);
                tracing::info!(about = %h.name, "reinstalling k0s (its install flags changed)");
                let version = running_version(h).cloned().expect("candidates run k0s");
                reinstall_and_start(h, leader, i == l, &version, wait, true)
                    .await
                    .map_err(|e| PhaseError::on_host(TITLE, h.name.clone(), e))?;
                let name = h.name.clone();
                mark_converged(&mut state.hosts[i], i == l, &version);
                state.changed(
                    name,
                    "reinstalled k0s with the new install flags and restarted it",
                );
            }
            let o = &state.config.cluster.spec.options.concurrency;
            let size = worker_batch_size(workers.len(), o.worker_disruption_percent, o.limit);
            if !workers.is_empty() {
                tracing::info!(
                    "reinstalling {} of {} workers at a time",
                    size,
                    workers.len()
                );
            }
            for batch in workers.chunks(size) {
                let hosts = &state.hosts;
                let results =
                    each_host(state.pool.limits(), batch.iter().map(|&i| &hosts[i]), |h| {
                        let leader = &hosts[l];
                        async move {
                            tracing::info!(
                                about = %h.name,
                                "reinstalling k0s (its install flags changed)"
                            );
                            let version = running_version(h).cloned().expect("candidates run k0s");
                            reinstall_and_start(h, leader, false, &version, wait, true).await
                        }
                    })
                    .await;
                for (&i, r) in batch.iter().zip(&results) {
                    if r.is_ok() {
                        let version = running_version(&state.hosts[i]).cloned().expect("runs k0s");
                        mark_converged(&mut state.hosts[i], false, &version);
                        let name = state.hosts[i].name.clone();
                        state.changed(
                            name,
                            "reinstalled k0s with the new install flags and restarted it",
                        );
                    }
                }
                collect(TITLE, results)?;
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            for i in candidates(state) {
                let name = state.hosts[i].name.clone();
                state.planned(
                    name,
                    "reinstall k0s with the new install flags and restart it",
                );
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry, manifest_with};

    fn kit(opts: super::super::RunOptions) -> Kit {
        let y = manifest_with(
            &[
                ("controller", ""),
                ("worker", "    installFlags:\n    - --debug\n"),
            ],
            "",
        );
        let mut k = Kit::from_yaml(&y, opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.31.1+k0s.0")
            .leader(0);
        k
    }

    /// A host is reinstalled when its running flags differ from the manifest's, only from
    /// k0s v1.27.4 on (`install --force`), and never when it is being reset.
    #[test]
    fn should_run_follows_flag_drift() {
        let mut k = kit(Default::default());
        // The flags `k0s status` says the worker runs with.
        let runs_with = |k: &mut Kit, args: &[&str]| {
            let status = k.state.hosts[1].k0s.as_mut().unwrap().status.as_mut();
            status.unwrap().args = args.iter().map(|a| a.to_string()).collect();
        };
        assert!(Reinstall.should_run(&k.state), "--debug is not running yet");
        runs_with(&mut k, &["--debug=true"]);
        assert!(!Reinstall.should_run(&k.state), "converged");
        runs_with(&mut k, &[]);
        k.state.hosts[1].config.reset = true;
        assert!(!Reinstall.should_run(&k.state));
        k.state.hosts[1].config.reset = false;
        k.running(1, "v1.27.3+k0s.0");
        assert!(
            !Reinstall.should_run(&k.state),
            "too old for install --force"
        );
    }

    #[tokio::test]
    async fn dry_run_plans_the_drifted_host_only() {
        let mut k = kit(dry());
        k.run(&Reinstall).await.unwrap();
        assert_eq!(
            k.plan_for(1),
            ["reinstall k0s with the new install flags and restart it"]
        );
        assert!(k.plan_for(0).is_empty());
        k.assert_nothing_ran();
    }

    /// `k0s install worker … --force=true`, then reload and restart (the unit was rewritten),
    /// then wait for the service; no node wait with --no-wait.
    #[tokio::test]
    async fn reinstalls_then_reloads_and_restarts_in_that_order() {
        let mut k = kit(super::super::RunOptions {
            no_wait: true,
            ..Default::default()
        });
        let s = k.script(1);
        s.on("install worker", "")
            .on("systemctl daemon-reload", "")
            .on("systemctl restart k0sworker", "")
            .on("systemctl is-active --quiet k0sworker", "");
        k.run(&Reinstall).await.unwrap();
        let c = k.script(1).commands();
        let install = k.script(1).position("install worker");
        assert!(
            c[install].contains("--debug") && c[install].contains("--force=true"),
            "{c:#?}"
        );
        assert!(install < k.script(1).position("daemon-reload"));
        assert!(k.script(1).position("daemon-reload") < k.script(1).position("restart k0sworker"));
        assert!(k.script(0).commands().is_empty());
        assert_eq!(
            k.changes_for(1),
            ["reinstalled k0s with the new install flags and restarted it"]
        );
    }

    #[tokio::test]
    async fn a_failed_reinstall_keeps_stderr_and_records_no_change() {
        let mut k = kit(super::super::RunOptions {
            no_wait: true,
            ..Default::default()
        });
        k.script(1)
            .fail("install worker", 1, "Error: unknown flag: --bogus");
        let e = k.run(&Reinstall).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22") && e.contains("unknown flag: --bogus"),
            "{e}"
        );
        assert!(k.changes_for(1).is_empty());
    }
}
