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

use futures::future::join_all;

use crate::exit::Code;
use crate::kube::{self, Client, DrainEvent, DrainOptions, EvictTaint, KubeError};

use super::steps::hooks::{plan_host_hooks, run_host_hooks};
use super::steps::markers::{upgrade_finished, upgrade_started};
use super::steps::report::report;
use super::steps::upgrade_host::{
    mark_converged, needs_upgrade, running_version, upgrade_node, worker_batch_size,
};
use super::{HostState, Phase, PhaseError, PhaseFuture, State};

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

/// What went wrong with one node, and whether the cluster refused (PDB) or something broke.
struct NodeFailure {
    host: String,
    message: String,
    blocked: bool,
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

async fn upgrade_one(cx: &Ctx<'_>, h: &HostState) -> Result<(), NodeFailure> {
    let target = cx.state.target_version().expect("phase checked");
    let node = h.node_name().unwrap_or_default();
    let fail = |message: String, blocked: bool| NodeFailure {
        host: h.name.clone(),
        message,
        blocked,
    };
    run_host_hooks(h, "upgrade", "before")
        .await
        .map_err(|e| fail(e, false))?;
    if cx.client.is_some() && cx.drain.is_some() && !cx.cordoned_before.contains(&node) {
        // This run cordons the node: a run that dies before `restore` leaves the next one a
        // note to make it schedulable again.
        upgrade_started(h, "upgrade uncordon")
            .await
            .map_err(|e| fail(e, false))?;
    }
    if let (Some(client), Some(o)) = (cx.client, &cx.drain) {
        if let Some(t) = &cx.taint {
            kube::add_taint(client, &node, t, Duration::from_secs(60))
                .await
                .map_err(|e| fail(format!("tainting node {node}: {e}"), false))?;
        }
        let state = cx.state;
        let name = h.name.clone();
        let on_event = move |ev: &DrainEvent| report(state, &name, ev);
        kube::drain(client, &node, o, &on_event)
            .await
            .map_err(|e| match e {
                KubeError::Blocked(b) => fail(b.to_string(), true),
                other => fail(format!("draining node {node}: {other}"), false),
            })?;
    }
    upgrade_node(h, &cx.state.hosts[cx.leader], false, &target, cx.wait)
        .await
        .map_err(|e| fail(e, false))?;
    restore(cx, h).await.map_err(|e| fail(e, false))?;
    upgrade_finished(h, false)
        .await
        .map_err(|e| fail(e, false))?;
    run_host_hooks(h, "upgrade", "after")
        .await
        .map_err(|e| fail(e, false))?;
    Ok(())
}

/// Makes the node schedulable again (unless it was cordoned before the run) and removes the
/// evict taint.
async fn restore(cx: &Ctx<'_>, h: &HostState) -> Result<(), String> {
    let Some(client) = cx.client else {
        return Ok(());
    };
    let node = h.node_name().unwrap_or_default();
    if cx.drain.is_some() && !cx.cordoned_before.contains(&node) {
        kube::uncordon(client, &node)
            .await
            .map_err(|e| format!("uncordoning node {node}: {e}"))?;
    }
    if let Some(t) = &cx.taint {
        kube::remove_taint(client, &node, t)
            .await
            .map_err(|e| format!("removing the evict taint from node {node}: {e}"))?;
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
            let target = state.target_version().expect("should_run checked");
            let l = state.leader.expect("a running cluster has a leader");
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
                        .map_err(|e| {
                            PhaseError::hosts(
                                Code::PhaseFailed,
                                TITLE,
                                vec![(state.hosts[l].name.clone(), e)],
                            )
                        })?,
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
                    .map(|&i| state.hosts[i].node_name().unwrap_or_default())
                    .collect();
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
                let results =
                    join_all(batch.iter().map(|&i| upgrade_one(&cx, &state.hosts[i]))).await;
                let failed = results.iter().any(Result::is_err);
                if failed {
                    // Nothing of this batch stays cordoned or tainted because of us.
                    for &i in batch {
                        if let Err(e) = restore(&cx, &state.hosts[i]).await {
                            tracing::warn!("{}: {e}", state.hosts[i].name);
                        }
                    }
                }
                let mut failures = Vec::new();
                let mut blocked = false;
                let mut done = Vec::new();
                for (&i, r) in batch.iter().zip(results) {
                    match r {
                        Ok(()) => done.push(i),
                        Err(f) => {
                            blocked |= f.blocked;
                            let mut m = f.message;
                            if f.blocked {
                                m.push_str("\nThe node was made schedulable again; nodes already upgraded keep the new version, and a re-run continues with the rest.");
                            }
                            failures.push((f.host, m));
                        }
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
                    let code = if blocked {
                        Code::BlockedByCluster
                    } else {
                        Code::PhaseFailed
                    };
                    let mut e = PhaseError::hosts(code, TITLE, failures);
                    if blocked {
                        e.message = format!("{} (blocked by PodDisruptionBudgets)", e.message);
                    }
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state.target_version().expect("should_run checked");
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
