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
                tracing::info!("{}: reinstalling k0s (its install flags changed)", h.name);
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
                                "{}: reinstalling k0s (its install flags changed)",
                                h.name
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
