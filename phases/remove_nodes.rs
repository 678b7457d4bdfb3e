//! "Remove nodes marked reset": hosts with `reset: true` leave the running cluster the careful
//! way — drained with the PodDisruptionBudget-aware drain (nodes that run workloads; skipped
//! with `--no-drain`), deleted from the API, controllers leaving etcd (`k0s etcd leave
//! --peer-address --data-dir`, on the leader), then reset ([`super::steps::reset_host::reset_host`]).
//! Workers go in parallel, controllers one at a time. Hosts on which k0s left nothing are
//! passed over, so re-applying the same manifest changes nothing. (Removing every controller
//! is refused earlier, by "Validate hosts".)

use crate::phases::{Failure, HostFailure, each_host};

use crate::exit::Code;
use crate::kube::{self, Client, DrainOptions, KubeError};

use super::steps::reset_host::{ResetSteps, plan_reset_host, reset_host};
use super::{HostState, Phase, PhaseError, PhaseFuture, State};

pub struct RemoveNodes;

pub const TITLE: &str = "Remove nodes marked reset";

/// Something of k0s is on the host (as "Gather k0s facts" found it).
fn has_k0s(h: &HostState) -> bool {
    h.k0s.as_ref().is_some_and(|k| {
        k.binary_version.is_some() || k.status.is_some() || k.service.is_some() || k.config_exists
    })
}

fn todo(state: &State) -> Vec<usize> {
    state
        .hosts
        .iter()
        .filter(|h| h.config.reset && has_k0s(h) && Some(h.index) != state.leader)
        .map(|h| h.index)
        .collect()
}

const STEPS: ResetSteps = ResetSteps {
    delete_node: true,
    etcd_leave: true,
};

/// Drains the host's node when it runs workloads and k0s runs there.
async fn drain_node(
    state: &State,
    client: Option<&Client>,
    o: Option<&DrainOptions>,
    h: &HostState,
) -> Result<(), Failure> {
    let (Some(client), Some(o)) = (client, o) else {
        return Ok(());
    };
    if !h.config.is_worker() || !h.is_running() {
        return Ok(());
    }
    let node = h.node_name()?;
    let name = h.name.clone();
    let on_event = move |ev: &kube::DrainEvent| super::steps::report::report(state, &name, ev);
    kube::drain(client, &node, o, &on_event)
        .await
        .map(drop)
        .map_err(|e| match e {
            KubeError::Blocked(_) => Failure::from(e)
                .note("The node stays cordoned and in the cluster; nothing was reset."),
            other => Failure::from(other).context(format!("draining node {node}")),
        })
}

impl Phase for RemoveNodes {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        !todo(state).is_empty()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let hosts = todo(state);
            let o = &state.config.cluster.spec.options;
            let drain =
                (!state.opts.no_drain && o.drain.enabled).then(|| DrainOptions::from(&o.drain));
            let needs_client = drain.is_some()
                && hosts
                    .iter()
                    .any(|&i| state.hosts[i].config.is_worker() && state.hosts[i].is_running());
            let client = if needs_client {
                Some(
                    super::steps::leader::leader_client(state)
                        .await
                        .map_err(|e| {
                            PhaseError::new(
                                Code::PhaseFailed,
                                TITLE,
                                format!("connecting to the cluster API: {e}"),
                            )
                        })?,
                )
            } else {
                None
            };
            let (controllers, workers): (Vec<usize>, Vec<usize>) = hosts
                .into_iter()
                .partition(|&i| state.hosts[i].config.is_controller());
            let mut failures: Vec<HostFailure> = Vec::new();
            let mut changes: Vec<(String, String)> = Vec::new();
            // Workers in parallel.
            let st: &State = state;
            let results = each_host(
                st.pool.limits(),
                workers.iter().map(|&i| &st.hosts[i]),
                |h| {
                    let (client, drain) = (client.as_ref(), drain.as_ref());
                    async move {
                        drain_node(st, client, drain, h).await?;
                        Ok(reset_host(st, h.index, STEPS).await)
                    }
                },
            )
            .await;
            for (&i, r) in workers.iter().zip(results) {
                match r {
                    Ok(r) => {
                        let name = st.hosts[i].name.clone();
                        changes.extend(r.changes.into_iter().map(|c| (name.clone(), c)));
                        if let Some(e) = r.error {
                            failures.push((name, e));
                        }
                    }
                    Err(f) => failures.push(f),
                }
            }
            // Controllers one at a time (etcd membership changes one by one).
            if failures.is_empty() {
                for i in controllers {
                    let h = &st.hosts[i];
                    if let Err(e) = drain_node(st, client.as_ref(), drain.as_ref(), h).await {
                        failures.push((h.name.clone(), e));
                        break;
                    }
                    let r = reset_host(st, i, STEPS).await;
                    let name = h.name.clone();
                    changes.extend(r.changes.into_iter().map(|c| (name.clone(), c)));
                    if let Some(e) = r.error {
                        failures.push((name, e));
                        break;
                    }
                }
            }
            for (h, c) in changes {
                state.changed(h, c);
            }
            if failures.is_empty() {
                tracing::info!(
                    "the hosts marked reset: true are out of the cluster; remove them from the configuration"
                );
                return Ok(());
            }
            // "Blocked by the cluster" when a PodDisruptionBudget held a drain: from the causes.
            Err(PhaseError::failed_on(TITLE, failures))
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let drain = !state.opts.no_drain && state.config.cluster.spec.options.drain.enabled;
            let mut planned = Vec::new();
            let mut failures = Vec::new();
            for i in todo(state) {
                let h = &state.hosts[i];
                let name = h.name.clone();
                if drain && h.config.is_worker() && h.is_running() {
                    match h.node_name() {
                        Ok(node) => planned.push((name.clone(), format!("drain node {node}"))),
                        Err(m) => {
                            failures.push((name, m.into()));
                            continue;
                        }
                    }
                }
                match plan_reset_host(state, i, STEPS).await {
                    Ok(p) => planned.extend(p.into_iter().map(|w| (name.clone(), w))),
                    Err(e) => failures.push((name, e)),
                }
            }
            for (h, w) in planned {
                state.planned(h, w);
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(PhaseError::failed_on(TITLE, failures))
            }
        })
    }
}
