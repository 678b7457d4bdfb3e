//! "Configure k0s service environment": the manifest's `environment` reaches k0s through the
//! service's environment drop-in (systemd `<svc>.service.d/env.conf`, OpenRC
//! `/etc/conf.d/<svc>`). New installs get it before their first start ([`super::steps::service`]);
//! this phase converges hosts that already ran k0s: when the drop-in differs from the manifest
//! (or `environment` was emptied and a drop-in is left), it is rewritten (or removed) and the
//! service restarted — controllers one at a time, each waiting for its API to be ready,
//! then workers, each waiting for its node to be Ready (unless `--no-wait`). Hosts whose
//! drop-in already matches are not touched.

use crate::phases::{Context, Failure};

use super::steps::service::service_env;
use super::steps::wait::{WAIT, wait_api_ready, wait_node_ready};
use super::{HostState, Phase, PhaseError, PhaseFuture, State};

pub struct ConfigureServiceEnv;

pub const TITLE: &str = "Configure k0s service environment";

/// What must happen to a host's drop-in: `Some(Some(text))` write, `Some(None)` remove.
fn drift(h: &HostState) -> Option<Option<String>> {
    if h.config.reset || !h.is_running() {
        return None;
    }
    let init = h.host.as_ref()?.facts.init?;
    let current = h.k0s.as_ref()?.service_env.as_deref();
    let env = service_env(h);
    if env.is_empty() {
        return current.map(|_| None);
    }
    let want = init.env_content(&env);
    (current != Some(want.as_str())).then_some(Some(want))
}

async fn converge(state: &State, i: usize, change: Option<String>) -> Result<String, Failure> {
    let h = &state.hosts[i];
    let p = h.probed()?;
    let init = p.init_system()?;
    let svc = h.service_name();
    let what = match &change {
        Some(_) => {
            let env = service_env(h);
            init.set_env(&p.remote, svc, &env)
                .await
                .with_context(|| format!("writing the {svc} service environment"))?;
            format!("updated the {svc} service environment and restarted it")
        }
        None => {
            init.remove_env(&p.remote, svc).await?;
            format!("removed the {svc} service environment and restarted it")
        }
    };
    tracing::info!("{}: restarting {svc} for its new environment", h.name);
    init.restart(&p.remote, svc).await?;
    init.wait_state(&p.remote, svc, true, WAIT).await?;
    if h.config.is_controller() {
        wait_api_ready(h).await?;
    }
    let wait = !state.opts.no_wait && state.config.cluster.spec.options.wait.enabled;
    if wait && h.config.role != "controller" {
        let leader = state
            .leader
            .map(|l| &state.hosts[l])
            .ok_or("no leader to ask for node readiness")?;
        let node = h.node_name().unwrap_or_default();
        wait_node_ready(leader, &node, None).await?;
    }
    Ok(what)
}

impl Phase for ConfigureServiceEnv {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(|h| drift(h).is_some())
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            // Controllers first, then workers; one host at a time keeps the control plane and
            // the workloads available while services restart.
            let mut order: Vec<(usize, Option<String>)> = state
                .hosts
                .iter()
                .filter_map(|h| drift(h).map(|d| (h.index, d)))
                .collect();
            order.sort_by_key(|(i, _)| !state.hosts[*i].config.is_controller());
            for (i, change) in order {
                let what = converge(state, i, change)
                    .await
                    .map_err(|e| PhaseError::on_host(TITLE, state.hosts[i].name.clone(), e))?;
                let name = state.hosts[i].name.clone();
                state.changed(name, what);
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let plans: Vec<(String, String)> = state
                .hosts
                .iter()
                .filter_map(|h| {
                    let svc = h.service_name();
                    drift(h).map(|d| {
                        (
                            h.name.clone(),
                            match d {
                                Some(_) => format!(
                                    "update the {svc} service environment and restart {svc}"
                                ),
                                None => format!(
                                    "remove the {svc} service environment and restart {svc}"
                                ),
                            },
                        )
                    })
                })
                .collect();
            for (h, what) in plans {
                state.planned(h, what);
            }
            Ok(())
        })
    }
}
