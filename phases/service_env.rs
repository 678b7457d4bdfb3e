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
    tracing::info!(about = %h.name, "restarting {svc} for its new environment");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry, manifest_with};

    const ENV: &str = "[Service]\nEnvironment=\"HTTP_PROXY=http://proxy:3128\"\n";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let e = "    environment:\n      HTTP_PROXY: http://proxy:3128\n";
        let y = manifest_with(&[("worker", e), ("controller", e), ("worker", "")], "");
        let mut k = Kit::from_yaml(&y, opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.31.1+k0s.0")
            .running(2, "v1.31.1+k0s.0")
            .leader(1);
        k
    }

    /// Drift: a missing or different drop-in is written; a drop-in left after `environment`
    /// was emptied is removed; a matching one is left alone.
    #[test]
    fn should_run_on_drift_only() {
        let mut k = kit(Default::default());
        assert!(ConfigureServiceEnv.should_run(&k.state));
        for i in [0, 1] {
            k.state.hosts[i].k0s.as_mut().unwrap().service_env = Some(ENV.into());
        }
        assert!(!ConfigureServiceEnv.should_run(&k.state));
        k.state.hosts[2].k0s.as_mut().unwrap().service_env = Some(ENV.into());
        assert!(
            ConfigureServiceEnv.should_run(&k.state),
            "host 2 has none in the manifest"
        );
    }

    /// Controllers first (the controller is host 1), one at a time; write, reload, restart.
    #[tokio::test]
    async fn rewrites_controllers_first_and_restarts() {
        let mut k = kit(super::super::RunOptions {
            no_wait: true,
            ..Default::default()
        });
        k.state.hosts[2].k0s.as_mut().unwrap().service_env = Some("old".into());
        for s in &k.scripts {
            s.on("mkdir -p /etc/systemd/system/", "")
                .on("systemctl daemon-reload", "")
                .on("systemctl restart", "")
                .on("systemctl is-active --quiet", "")
                .on("get --raw=/readyz", "ok")
                .on("rm -f /etc/systemd/system/k0sworker.service.d/env.conf && systemctl daemon-reload", "");
        }
        k.run(&ConfigureServiceEnv).await.unwrap();
        let u = k
            .script(1)
            .uploaded("/etc/systemd/system/k0scontroller.service.d/env.conf")
            .unwrap();
        assert_eq!((u.mode, u.text().as_str()), (0o644, ENV));
        let c = k.script(1);
        assert!(
            c.position("systemctl daemon-reload") < c.position("systemctl restart k0scontroller")
        );
        assert!(c.position("systemctl restart k0scontroller") < c.position("get --raw=/readyz"));
        assert!(
            k.script(0)
                .uploaded("/etc/systemd/system/k0sworker.service.d/env.conf")
                .is_some()
        );
        assert!(
            k.script(2)
                .has_run("rm -f /etc/systemd/system/k0sworker.service.d/env.conf")
        );
        assert!(k.script(2).uploads().is_empty());
        let order: Vec<String> = k
            .state
            .changes
            .changes
            .iter()
            .map(|(h, _)| h.clone())
            .collect();
        assert_eq!(
            order[0], "10.0.0.2:22",
            "the controller goes first: {order:?}"
        );
        assert_eq!(
            k.changes_for(2),
            ["removed the k0sworker service environment and restarted it"]
        );
    }

    #[tokio::test]
    async fn a_failed_restart_stops_the_phase_with_stderr() {
        let mut k = kit(super::super::RunOptions {
            no_wait: true,
            ..Default::default()
        });
        k.script(1)
            .on("mkdir -p", "")
            .on("systemctl daemon-reload", "")
            .fail(
                "systemctl restart k0scontroller",
                1,
                "Job for k0scontroller.service failed",
            );
        let e = k.run(&ConfigureServiceEnv).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22") && e.contains("Job for k0scontroller.service failed"),
            "{e}"
        );
        assert!(
            k.script(0).commands().is_empty(),
            "workers wait for the controllers"
        );
    }

    #[tokio::test]
    async fn dry_run_plans_update_and_removal() {
        let mut k = kit(dry());
        k.state.hosts[2].k0s.as_mut().unwrap().service_env = Some("old".into());
        k.run(&ConfigureServiceEnv).await.unwrap();
        assert_eq!(
            k.plan_for(1),
            ["update the k0scontroller service environment and restart k0scontroller"]
        );
        assert_eq!(
            k.plan_for(2),
            ["remove the k0sworker service environment and restart k0sworker"]
        );
        k.assert_nothing_ran();
    }
}
