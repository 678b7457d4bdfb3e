//! "Install controllers": join the other controllers one at a time (each waits for its API to
//! be ready before the next starts, so etcd never loses quorum while members join), with a
//! controller join token per host that is invalidated afterwards.

use crate::exit::Code;

use super::hooks::run_host_hooks;
use super::init_leader::reset_installed;
use super::k0s_ops::{
    create_token, install_and_start, plan_install, retire_token, wait_api_ready, write_token,
};
use super::{HostState, Phase, PhaseError, PhaseFuture, State};

pub struct InstallControllers;

pub const TITLE: &str = "Install controllers";

fn joins(state: &State, h: &HostState) -> bool {
    h.config.is_controller() && !h.config.reset && !h.is_running() && Some(h.index) != state.leader
}

impl Phase for InstallControllers {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(|h| joins(state, h))
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state.leader.expect("a leader exists when controllers join");
            let force = state.opts.force;
            let todo: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(state, h))
                .map(|h| h.index)
                .collect();
            for i in todo {
                let (leader, h) = (&state.hosts[l], &state.hosts[i]);
                let fail = |e: String| {
                    PhaseError::hosts(Code::PhaseFailed, TITLE, vec![(h.name.clone(), e)])
                };
                let token = create_token(leader, "controller", "30m0s")
                    .await
                    .map_err(|e| {
                        PhaseError::hosts(
                            Code::PhaseFailed,
                            TITLE,
                            vec![(
                                leader.name.clone(),
                                format!("creating a controller join token: {e}"),
                            )],
                        )
                    })?;
                write_token(h, &token).await.map_err(fail)?;
                state.unfinished.push(i);
                let (leader, h) = (&state.hosts[l], &state.hosts[i]);
                let fail = |e: String| {
                    PhaseError::hosts(Code::PhaseFailed, TITLE, vec![(h.name.clone(), e)])
                };
                install_and_start(h, false, force, Some(&token.url))
                    .await
                    .map_err(fail)?;
                wait_api_ready(h).await.map_err(fail)?;
                retire_token(leader, h, &token).await;
                tracing::info!("{}: controller joined", h.name);
                run_host_hooks(h, "install", "after").await.map_err(fail)?;
                state.unfinished.retain(|&x| x != i);
                let name = state.hosts[i].name.clone();
                state.changed(
                    name,
                    "installed and started k0s controller (joined the cluster)",
                );
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(state, h))
                .map(|h| h.index)
                .collect();
            plan_install(state, idx, "controller (join the cluster)", "k0scontroller");
            Ok(())
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            for h in state
                .hosts
                .iter()
                .filter(|h| h.config.is_controller() && Some(h.index) != state.leader)
            {
                if state.unfinished.contains(&h.index) {
                    reset_installed(h).await;
                }
            }
            Ok(())
        })
    }
}
