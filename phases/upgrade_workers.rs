//! "Upgrade workers": workers running another k0s version than the target are upgraded in
//! batches of `workerDisruptionPercent` of them (at least 1, at most `concurrency.limit`; the
//! log says "upgrading 2 of 8 workers at a time"). Per batch, each node in parallel:
//! `upgrade.before` hooks, the evict taint (when enabled), a PodDisruptionBudget-aware drain
//! through the Kubernetes API (the leader's API server reached through the leader's own SSH
//! connection, see [`crate::kube`]), the node upgrade ([`super::steps::upgrade_host::upgrade_node`]),
//! uncordon and taint removal, `upgrade.after` hooks. The next batch starts when the whole
//! batch serves again.
//!
//! Before a batch is drained, PDBs that allow no disruption right now and cover its pods are
//! listed. While draining, the first refused eviction names the pod and the PDB and how long
//! the drain keeps trying; then progress, not noise. When a drain gives up, every blocking PDB
//! and pod is named with the ways out, the batch's nodes are made schedulable again (unless an
//! operator had cordoned them before), and the run ends with the "blocked by the cluster" exit
//! code. A node already on the target is not touched, so a re-run resumes where it stopped.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::exit::Code;
use crate::kube::{self, Client, DrainEvent, DrainOptions, EvictTaint, KubeError};

use super::steps::hooks::{plan_host_hooks, run_host_hooks};
use super::steps::markers::{upgrade_finished, upgrade_started};
use super::steps::report::report;
use super::steps::upgrade_host::{
    mark_converged, needs_upgrade, running_version, upgrade_node, worker_batch_size,
};
use super::{Context, Failure, HostState, Phase, PhaseError, PhaseFuture, State, each_host};

pub struct UpgradeWorkers;

pub const TITLE: &str = "Upgrade workers";

fn todo(state: &State) -> Vec<usize> {
    let Some(t) = state.target_version() else {
        return Vec::new();
    };
    state
        .hosts
        .iter()
        .filter(|h| h.config.role == "worker" && needs_upgrade(h, &t))
        .map(|h| h.index)
        .collect()
}

struct Ctx<'a> {
    state: &'a State,
    client: Option<&'a Client>,
    drain: Option<DrainOptions>,
    taint: Option<EvictTaint>,
    leader: usize,
    wait: bool,
    /// Nodes an operator had cordoned before this run: left cordoned.
    cordoned_before: &'a BTreeSet<String>,
}

async fn upgrade_one(cx: &Ctx<'_>, h: &HostState) -> Result<(), Failure> {
    let target = cx.state.require_target()?;
    let node = h.node_name()?;
    run_host_hooks(h, "upgrade", "before").await?;
    if cx.client.is_some() && cx.drain.is_some() && !cx.cordoned_before.contains(&node) {
        // This run cordons the node: a run that dies before `restore` leaves the next one a
        // note to make it schedulable again.
        upgrade_started(h, "upgrade uncordon").await?;
    }
    if let (Some(client), Some(o)) = (cx.client, &cx.drain) {
        if let Some(t) = &cx.taint {
            kube::add_taint(client, &node, t, Duration::from_secs(60))
                .await
                .with_context(|| format!("tainting node {node}"))?;
        }
        let state = cx.state;
        let name = h.name.clone();
        let on_event = move |ev: &DrainEvent| report(state, &name, ev);
        kube::drain(client, &node, o, &on_event)
            .await
            .map_err(|e| match e {
                // The batch is restored before the run ends (see `run`).
                KubeError::Blocked(_) => Failure::from(e).note("The node was made schedulable again; nodes already upgraded keep the new version, and a re-run continues with the rest."),
                other => Failure::from(other).context(format!("draining node {node}")),
            })?;
    }
    upgrade_node(h, &cx.state.hosts[cx.leader], false, &target, cx.wait).await?;
    restore(cx, h).await?;
    upgrade_finished(h, false).await?;
    run_host_hooks(h, "upgrade", "after").await?;
    Ok(())
}

/// Makes the node schedulable again (unless it was cordoned before the run) and removes the
/// evict taint.
async fn restore(cx: &Ctx<'_>, h: &HostState) -> Result<(), Failure> {
    let Some(client) = cx.client else {
        return Ok(());
    };
    let node = h.node_name()?;
    if cx.drain.is_some() && !cx.cordoned_before.contains(&node) {
        kube::uncordon(client, &node)
            .await
            .with_context(|| format!("uncordoning node {node}"))?;
    }
    if let Some(t) = &cx.taint {
        kube::remove_taint(client, &node, t)
            .await
            .with_context(|| format!("removing the evict taint from node {node}"))?;
    }
    Ok(())
}

impl Phase for UpgradeWorkers {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        !todo(state).is_empty()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state
                .require_target()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let spec = &state.config.cluster.spec.options;
            let wait = !state.opts.no_wait && spec.wait.enabled;
            let drain = (!state.opts.no_drain && spec.drain.enabled)
                .then(|| DrainOptions::from(&spec.drain));
            let taint = if spec.evict_taint.enabled {
                Some(
                    EvictTaint::parse(&spec.evict_taint.taint, &spec.evict_taint.effect)
                        .map_err(|e| PhaseError::new(Code::InvalidConfig, TITLE, e.to_string()))?,
                )
            } else {
                None
            };
            let workers = todo(state);
            let size = worker_batch_size(
                workers.len(),
                spec.concurrency.worker_disruption_percent,
                spec.concurrency.limit,
            );
            let batches: Vec<Vec<usize>> = workers.chunks(size).map(<[usize]>::to_vec).collect();
            tracing::info!(
                "upgrading {size} of {} workers at a time to k0s {target} (workerDisruptionPercent {}%, {} batch{})",
                workers.len(),
                spec.concurrency.worker_disruption_percent,
                batches.len(),
                if batches.len() == 1 { "" } else { "es" }
            );
            state.emit(serde_json::json!({
                "event": "upgrade_workers", "workers": workers.len(), "batch_size": size,
                "batches": batches.len(), "drain": drain.is_some(),
            }));
            let client = if drain.is_some() || taint.is_some() {
                Some(
                    super::steps::leader::leader_client(state)
                        .await
                        .map_err(|e| PhaseError::on_host(TITLE, state.hosts[l].name.clone(), e))?,
                )
            } else {
                None
            };
            let cordoned_before: BTreeSet<String> = match &client {
                Some(c) => kube::list_nodes(c)
                    .await
                    .map_err(|e| PhaseError::new(Code::PhaseFailed, TITLE, e.to_string()))?
                    .into_iter()
                    .filter(|(_, n)| {
                        n.spec
                            .as_ref()
                            .and_then(|s| s.unschedulable)
                            .unwrap_or(false)
                    })
                    .map(|(name, _)| name)
                    .collect(),
                None => BTreeSet::new(),
            };
            for (b, batch) in batches.iter().enumerate() {
                let nodes: Vec<String> = batch
                    .iter()
                    .map(|&i| {
                        let h = &state.hosts[i];
                        h.node_name()
                            .map_err(|m| PhaseError::on_host(TITLE, h.name.clone(), m))
                    })
                    .collect::<Result<_, _>>()?;
                tracing::info!(
                    "upgrading worker batch {}/{}: {}",
                    b + 1,
                    batches.len(),
                    nodes.join(", ")
                );
                state.emit(serde_json::json!({
                    "event": "upgrade_batch", "batch": b + 1, "of": batches.len(),
                    "hosts": batch.iter().map(|&i| state.hosts[i].name.clone()).collect::<Vec<_>>(),
                    "nodes": nodes,
                }));
                if let (Some(c), Some(o)) = (&client, &drain) {
                    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
                    match kube::blocking_pdbs(c, &refs).await {
                        Ok(pdbs) => {
                            for p in &pdbs {
                                tracing::warn!(
                                    "{p} — it allows no disruption now; the drain will retry for up to {}",
                                    kube::drain::fmt_duration(o.timeout)
                                );
                                let mut j = serde_json::to_value(p).unwrap_or_default();
                                j["event"] = "pdb_blocking".into();
                                state.emit(j);
                            }
                        }
                        Err(e) => tracing::warn!("could not list PodDisruptionBudgets: {e}"),
                    }
                }
                let cx = Ctx {
                    state,
                    client: client.as_ref(),
                    drain: drain.clone(),
                    taint: taint.clone(),
                    leader: l,
                    wait,
                    cordoned_before: &cordoned_before,
                };
                let results = each_host(
                    state.pool.limits(),
                    batch.iter().map(|&i| &state.hosts[i]),
                    |h| upgrade_one(&cx, h),
                )
                .await;
                let failed = results.iter().any(Result::is_err);
                if failed {
                    // Nothing of this batch stays cordoned or tainted because of us.
                    for &i in batch {
                        if let Err(e) = restore(&cx, &state.hosts[i]).await {
                            tracing::warn!(about = %state.hosts[i].name, "{e}");
                        }
                    }
                }
                let mut failures = Vec::new();
                let mut done = Vec::new();
                for (&i, r) in batch.iter().zip(results) {
                    match r {
                        Ok(()) => done.push(i),
                        Err(f) => failures.push(f),
                    }
                }
                for i in done {
                    let from = running_version(&state.hosts[i])
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    mark_converged(&mut state.hosts[i], false, &target);
                    let name = state.hosts[i].name.clone();
                    state.changed(name, format!("upgraded k0s worker {from} to {target}"));
                }
                if !failures.is_empty() {
                    // Exit code "blocked by the cluster" when a PodDisruptionBudget held a
                    // drain: derived from the causes.
                    return Err(PhaseError::failed_on(TITLE, failures));
                }
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state
                .require_target()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let o = &state.config.cluster.spec.options;
            let drain = !state.opts.no_drain && o.drain.enabled;
            let workers = todo(state);
            let size = worker_batch_size(
                workers.len(),
                o.concurrency.worker_disruption_percent,
                o.concurrency.limit,
            );
            for (b, batch) in workers.chunks(size).enumerate() {
                for &i in batch {
                    plan_host_hooks(state, i, "upgrade", "before");
                    let h = &state.hosts[i];
                    let what = format!(
                        "upgrade k0s worker {} to {target} in batch {} ({}stop, replace the binary, reinstall, start{})",
                        running_version(h)
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        b + 1,
                        if drain { "drain, " } else { "" },
                        if drain { ", uncordon" } else { "" },
                    );
                    let name = h.name.clone();
                    state.planned(name, what);
                    plan_host_hooks(state, i, "upgrade", "after");
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};
    use crate::transport::scripted::{Pattern, Reply};

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.30.0+k0s.0")
            .running(2, "v1.30.0+k0s.0")
            .leader(0)
            .target("v1.31.1+k0s.0");
        k
    }

    #[test]
    fn upgrades_workers_older_than_the_target() {
        let mut k = kit(Default::default());
        assert!(UpgradeWorkers.should_run(&k.state));
        k.running(1, "v1.31.1+k0s.0").running(2, "v1.31.1+k0s.0");
        assert!(!UpgradeWorkers.should_run(&k.state));
    }

    /// Without drain or taint no API client is needed: each worker is stopped, reinstalled
    /// and started (here without a staged binary: an earlier run put it in place).
    #[tokio::test]
    async fn upgrades_workers_without_drain() {
        let mut k = kit(super::super::RunOptions {
            no_drain: true,
            no_wait: true,
            ..Default::default()
        });
        k.state.config.cluster.spec.options.evict_taint.enabled = false;
        for i in [1, 2] {
            k.script(i)
                .on(".k0sctl-upgrade-incomplete ] ||", "")
                .on("systemctl stop k0sworker", "")
                .on("systemctl is-active --quiet k0sworker", "")
                .rule(
                    Pattern::Contains("systemctl is-active --quiet k0sworker".into()),
                    Reply::fail(3, ""),
                    Some(1),
                )
                .on("/usr/local/bin/k0s install worker", "")
                .on("systemctl daemon-reload", "")
                .on("systemctl start k0sworker", "")
                .on("rm -f /etc/k0s/.k0sctl-upgrade-incomplete", "");
        }
        k.run(&UpgradeWorkers).await.unwrap();
        for i in [1, 2] {
            let s = k.script(i);
            assert!(s.position("systemctl stop k0sworker") < s.position("install worker"));
            assert!(s.position("install worker") < s.position("systemctl start k0sworker"));
            assert!(
                s.position("systemctl start k0sworker")
                    < s.position("rm -f /etc/k0s/.k0sctl-upgrade-incomplete")
            );
            assert_eq!(
                k.changes_for(i),
                ["upgraded k0s worker v1.30.0+k0s.0 to v1.31.1+k0s.0"]
            );
        }
        assert!(k.script(0).commands().is_empty());
    }

    /// Draining needs the cluster API; when the leader's admin kubeconfig cannot be read the
    /// phase fails on the leader before any worker is touched.
    #[tokio::test]
    async fn drain_without_api_fails_before_touching_workers() {
        let mut k = kit(Default::default());
        let e = k.run(&UpgradeWorkers).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.1:22") && e.contains("reading the admin kubeconfig"),
            "{e}"
        );
        assert!(k.script(1).commands().is_empty() && k.script(2).commands().is_empty());
    }

    /// Batches follow workerDisruptionPercent (default 10 %: one worker at a time).
    #[tokio::test]
    async fn dry_run_plans_batches() {
        let mut k = kit(dry());
        k.run(&UpgradeWorkers).await.unwrap();
        assert_eq!(
            k.plan_for(1),
            [
                "upgrade k0s worker v1.30.0+k0s.0 to v1.31.1+k0s.0 in batch 1 (drain, stop, replace the binary, reinstall, start, uncordon)"
            ]
        );
        assert_eq!(
            k.plan_for(2),
            [
                "upgrade k0s worker v1.30.0+k0s.0 to v1.31.1+k0s.0 in batch 2 (drain, stop, replace the binary, reinstall, start, uncordon)"
            ]
        );
        k.assert_nothing_ran();
    }
}
