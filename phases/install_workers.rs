//! "Install workers": join every worker that does not run k0s yet — a worker join token per
//! host (created on the leader, written 0600, invalidated and overwritten after the join),
//! `k0s install worker`, start, and (unless `--no-wait`) wait for the node to be Ready.

use crate::phases::{Context, each_host};

use super::steps::hooks::run_host_hooks;
use super::steps::markers::install_finished;
use super::steps::service::{install_and_start, plan_install};
use super::steps::tokens::{create_token, retire_token, write_token};
use super::steps::undo_install::reset_unfinished;
use super::steps::wait::{connection_lost, wait_node_ready};
use super::{HostState, Phase, PhaseError, PhaseFuture, State, collect};

pub struct InstallWorkers;

pub const TITLE: &str = "Install workers";

fn joins(h: &HostState) -> bool {
    h.config.role == "worker" && !h.config.reset && !h.is_running()
}

impl Phase for InstallWorkers {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(joins)
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let force = state.opts.force;
            let wait = !state.opts.no_wait && state.config.cluster.spec.options.wait.enabled;
            let todo: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(h))
                .map(|h| h.index)
                .collect();
            // Tokens one by one on the leader, then the joins in parallel.
            let mut tokens = Vec::new();
            for &i in &todo {
                let leader = &state.hosts[l];
                let t = create_token(leader, "worker", "10m0s")
                    .await
                    .context("creating a worker join token")
                    .map_err(|e| PhaseError::on_host(TITLE, leader.name.clone(), e))?;
                tokens.push((i, t));
            }
            state.unfinished.extend(todo.iter().copied());
            let limits = state.pool.limits().clone();
            let target = state.target_version();
            let hosts = &state.hosts;
            let results = each_host(&limits, tokens.iter().map(|(i, token)| (&hosts[*i], token)), |(h, token)| {
                let target = target.as_ref();
                let leader = &hosts[l];
                async move {
                    write_token(h, token).await?;
                    install_and_start(h, false, force, Some(&token.url)).await?;
                    if wait {
                        let node = h.node_name()?;
                        // While the leader waits for the node, a lost worker is noticed
                        // (its keepalives) instead of waiting out the whole Ready timeout.
                        tokio::select! {
                            r = wait_node_ready(leader, &node, None) => r?,
                            e = connection_lost(h) => return Err(e),
                        }
                        tracing::info!("{}: node {node} is Ready", h.name);
                        retire_token(leader, h, token, target).await;
                    } else {
                        tracing::warn!("{}: --no-wait given, the join token stays valid until it expires (10 minutes)", h.name);
                    }
                    run_host_hooks(h, "install", "after").await?;
                    install_finished(h).await?;
                    Ok(())
                }
            })
            .await;
            let done: Vec<usize> = tokens
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|((i, _), _)| *i)
                .collect();
            state.unfinished.retain(|i| !done.contains(i));
            for i in done {
                let name = state.hosts[i].name.clone();
                state.changed(
                    name,
                    "installed and started k0s worker (joined the cluster)",
                );
            }
            collect(TITLE, results)
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(h))
                .map(|h| h.index)
                .collect();
            plan_install(state, idx, "worker (join the cluster)", "k0sworker");
            Ok(())
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| h.config.role == "worker" && state.unfinished.contains(&h.index))
                .map(|h| h.index)
                .collect();
            reset_unfinished(state, &idx).await;
            Ok(())
        })
    }
}
