//! "Initialize the k0s cluster": install and start k0s on the leader when no controller runs
//! it yet, and wait for the API to be ready. Clean-up resets a leader installed by this run.

use crate::phases::Failure;

use super::steps::hooks::run_host_hooks;
use super::steps::markers::install_finished;
use super::steps::service::{install_and_start, plan_install};
use super::steps::undo_install::reset_unfinished;
use super::steps::wait::{wait_api_ready, wait_config_reconciled};
use super::{Phase, PhaseError, PhaseFuture, State};

pub struct InitLeader;

pub const TITLE: &str = "Initialize the k0s cluster";

impl Phase for InitLeader {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.leader.is_some_and(|l| !state.hosts[l].is_running())
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let force = state.opts.force;
            state.unfinished.push(l);
            let leader = &state.hosts[l];
            let fail = |e: Failure| PhaseError::on_host(TITLE, leader.name.clone(), e);
            install_and_start(leader, true, force, None)
                .await
                .map_err(&fail)?;
            wait_api_ready(leader).await.map_err(&fail)?;
            tracing::info!("{}: the kubernetes API is ready", leader.name);
            if leader.dynamic_config {
                wait_config_reconciled(leader).await.map_err(&fail)?;
                tracing::info!("{}: k0s reconciled the dynamic cluster config", leader.name);
            }
            run_host_hooks(leader, "install", "after")
                .await
                .map_err(&fail)?;
            install_finished(leader).await.map_err(fail)?;
            state.unfinished.retain(|&i| i != l);
            let name = state.hosts[l].name.clone();
            state.changed(
                name,
                "installed and started k0s controller (initialised the cluster)",
            );
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            plan_install(
                state,
                vec![l],
                "controller (the cluster's first)",
                "k0scontroller",
            );
            Ok(())
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let Some(l) = state.leader.filter(|l| state.unfinished.contains(l)) else {
                return Ok(());
            };
            reset_unfinished(state, &[l]).await;
            Ok(())
        })
    }
}
