//! "Upgrade controllers": controllers running another k0s version than the target are
//! upgraded strictly one at a time, in manifest order, each serving again (API ready; for
//! controller+worker also node Ready) before the next starts, so an etcd quorum is never at
//! risk. Around each: its `upgrade.before`/`upgrade.after` hooks. Controllers running
//! workloads are not drained (as in k0sctl); with `evictTaint.enabled` and
//! `evictTaint.controllerWorkers` they get the evict taint while they are upgraded.

use crate::exit::Code;
use crate::kube::{self, EvictTaint};

use super::hooks::{plan_host_hooks, run_host_hooks};
use super::k0s_ops::WAIT;
use super::upgrade::{mark_converged, needs_upgrade, running_version, upgrade_node};
use super::{Phase, PhaseError, PhaseFuture, State};

pub struct UpgradeControllers;

pub const TITLE: &str = "Upgrade controllers";

fn todo(state: &State) -> Vec<usize> {
    let Some(t) = state.target_version() else {
        return Vec::new();
    };
    state
        .hosts
        .iter()
        .filter(|h| h.config.is_controller() && needs_upgrade(h, &t))
        .map(|h| h.index)
        .collect()
}

impl Phase for UpgradeControllers {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        !todo(state).is_empty()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state.target_version().expect("should_run checked");
            let l = state.leader.expect("a running cluster has a leader");
            let wait = !state.opts.no_wait && state.config.cluster.spec.options.wait.enabled;
            let hosts = todo(state);
            // The evict taint for controllers that run workloads (k0sctl's
            // `evictTaint.controllerWorkers`): their pods leave before k0s stops.
            let et = &state.config.cluster.spec.options.evict_taint;
            let taint = if et.enabled && et.controller_workers {
                Some(
                    EvictTaint::parse(&et.taint, &et.effect)
                        .map_err(|e| PhaseError::new(Code::InvalidConfig, TITLE, e.to_string()))?,
                )
            } else {
                None
            };
            let client =
                if taint.is_some() && hosts.iter().any(|&i| state.hosts[i].config.is_worker()) {
                    Some(super::kubeconfig::leader_client(state).await.map_err(|e| {
                        PhaseError::new(
                            Code::PhaseFailed,
                            TITLE,
                            format!("connecting to the cluster API: {e}"),
                        )
                    })?)
                } else {
                    None
                };
            tracing::info!(
                "upgrading {} controller{} to k0s {target}, one at a time",
                hosts.len(),
                if hosts.len() == 1 { "" } else { "s" }
            );
            for i in hosts {
                let from = running_version(&state.hosts[i])
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let (h, leader) = (&state.hosts[i], &state.hosts[l]);
                let fail = |e: String| {
                    PhaseError::hosts(Code::PhaseFailed, TITLE, vec![(h.name.clone(), e)])
                };
                run_host_hooks(h, "upgrade", "before").await.map_err(fail)?;
                let tainted = match (&client, &taint) {
                    (Some(c), Some(t)) if h.config.is_worker() => {
                        let node = h.node_name().unwrap_or_default();
                        kube::add_taint(c, &node, t, WAIT)
                            .await
                            .map_err(|e| fail(format!("tainting node {node}: {e}")))?;
                        tracing::info!("{}: tainted node {node} with {t}", h.name);
                        Some((c, t, node))
                    }
                    _ => None,
                };
                let upgraded = upgrade_node(h, leader, i == l, &target, wait).await;
                if let Some((c, t, node)) = tainted
                    && let Err(e) = kube::remove_taint(c, &node, t).await
                {
                    // As k0sctl: a taint left behind is reported, not fatal.
                    tracing::warn!("{}: removing the evict taint from node {node}: {e}", h.name);
                }
                upgraded.map_err(fail)?;
                run_host_hooks(h, "upgrade", "after").await.map_err(fail)?;
                let h = &mut state.hosts[i];
                mark_converged(h, i == l, &target);
                let name = h.name.clone();
                state.changed(name, format!("upgraded k0s controller {from} to {target}"));
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state.target_version().expect("should_run checked");
            for i in todo(state) {
                plan_host_hooks(state, i, "upgrade", "before");
                let h = &state.hosts[i];
                let what = format!(
                    "upgrade k0s controller {} to {target} (stop, replace the binary, reinstall, start)",
                    running_version(h)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                );
                let name = h.name.clone();
                state.planned(name, what);
                plan_host_hooks(state, i, "upgrade", "after");
            }
            Ok(())
        })
    }
}
