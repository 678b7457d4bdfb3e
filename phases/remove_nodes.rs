//! "Remove nodes marked reset": hosts with `reset: true` leave the running cluster the careful
//! way — drained with the PodDisruptionBudget-aware drain (nodes that run workloads; skipped
//! with `--no-drain`), deleted from the API, controllers leaving etcd (`k0s etcd leave
//! --peer-address --data-dir`, on the leader), then reset ([`super::steps::reset_host::reset_host`]).
//! Workers go in parallel, controllers one at a time. Hosts on which k0s left nothing are
//! passed over, so re-applying the same manifest changes nothing. (Removing every controller
//! is refused earlier, by "Validate hosts".)

use crate::phases::{Failure, HostFailure, each_host, fail_if_any};

use crate::kube::{self, Client, DrainOptions, KubeError};

use super::steps::leader::leader_client_if;
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
            let client = leader_client_if(state, needs_client, TITLE).await?;
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
            fail_if_any(TITLE, failures)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const NOTHING: &str =
        "@@binary\n@@datadir\n@@config\n@@token\n@@services\n@@env\n@@markers\n@@end\n";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "controller", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.31.1+k0s.0")
            .running(2, "v1.31.1+k0s.0")
            .leader(0);
        k.state.hosts[1].config.reset = true;
        k.state.hosts[2].config.reset = true;
        k
    }

    #[test]
    fn takes_hosts_marked_reset_that_have_k0s_but_never_the_leader() {
        let mut k = kit(Default::default());
        assert!(RemoveNodes.should_run(&k.state));
        k.state.hosts[1].config.reset = false;
        k.state.hosts[2].k0s = Some(Default::default());
        assert!(!RemoveNodes.should_run(&k.state));
        k.state.hosts[0].config.reset = true;
        assert!(!RemoveNodes.should_run(&k.state));
    }

    /// Through the leader: the worker's node is deleted and the controller leaves etcd (a
    /// "peer not found" is no error); then each host is reset.
    #[tokio::test]
    async fn deletes_the_node_and_leaves_etcd_through_the_leader() {
        let mut k = kit(super::super::RunOptions {
            no_drain: true,
            ..Default::default()
        });
        k.script(0)
            .on(
                "delete node --ignore-not-found=true node-3",
                "node \"node-3\" deleted\n",
            )
            .fail(
                "/usr/local/bin/k0s etcd leave --peer-address=10.0.0.2 --data-dir=/var/lib/k0s",
                1,
                "Error: peer not found: https://10.0.0.2:2380",
            );
        for i in [1, 2] {
            k.script(i).on("echo @@binary;", NOTHING);
        }
        k.run(&RemoveNodes).await.unwrap();
        assert!(k.script(0).has_run("kubectl --cache-dir=/var/lib/k0s/kubectl-cache delete node --ignore-not-found=true node-3"));
        assert!(k.script(0).has_run("etcd leave --peer-address=10.0.0.2"));
        assert_eq!(k.changes_for(2), ["deleted node node-3 from the cluster"]);
        assert!(k.changes_for(1).is_empty(), "nothing was removed from etcd");
    }

    #[tokio::test]
    async fn an_etcd_refusal_fails_the_controller_with_stderr() {
        let mut k = kit(super::super::RunOptions {
            no_drain: true,
            ..Default::default()
        });
        k.script(0).on("delete node", "").fail(
            "etcd leave",
            1,
            "Error: etcdserver: permission denied",
        );
        for i in [1, 2] {
            k.script(i).on("echo @@binary;", NOTHING);
        }
        let e = k.run(&RemoveNodes).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "10.0.0.2:22: removing the etcd member 10.0.0.2 (on the leader 10.0.0.1:22)"
            ),
            "{e}"
        );
        assert!(e.contains("permission denied"), "{e}");
    }

    /// With drain on, a running worker needs the cluster API; a leader whose admin
    /// kubeconfig cannot be read fails the phase before anything is reset.
    #[tokio::test]
    async fn no_api_means_nothing_is_reset() {
        let mut k = kit(Default::default());
        let e = k.run(&RemoveNodes).await.unwrap_err().to_string();
        assert!(e.contains("connecting to the cluster API"), "{e}");
        assert!(e.contains("/var/lib/k0s/pki/admin.conf"), "{e}");
        assert!(k.script(1).commands().is_empty() && k.script(2).commands().is_empty());
    }

    #[tokio::test]
    async fn dry_run_plans_drain_and_reset() {
        let mut k = kit(dry());
        for i in [1, 2] {
            k.script(i).on("echo @@binary;", NOTHING);
        }
        k.run(&RemoveNodes).await.unwrap();
        assert_eq!(
            k.plan_for(2),
            ["drain node node-3", "delete node node-3 from the cluster"]
        );
        assert_eq!(k.plan_for(1), ["remove the etcd member 10.0.0.2"]);
        assert!(k.script(0).commands().is_empty());
    }
}
