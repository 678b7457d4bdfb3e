//! "Install controllers": join the other controllers in quorum-aware batches (k0sctl's rule,
//! [`quorum_batches`]: never more at once than the running members can absorb without losing
//! etcd quorum; each batch's APIs are ready before the next starts), with a controller join
//! token per host that is invalidated afterwards.

use crate::phases::{Context, each_host};

use super::steps::hooks::run_host_hooks;
use super::steps::markers::install_finished;
use super::steps::service::{install_and_start, plan_install};
use super::steps::tokens::{create_token, retire_token, write_token};
use super::steps::undo_install::reset_unfinished;
use super::steps::wait::wait_api_ready;

use super::{HostState, Phase, PhaseError, PhaseFuture, State, collect};

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
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let force = state.opts.force;
            let todo: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(state, h))
                .map(|h| h.index)
                .collect();
            let running = state
                .hosts
                .iter()
                .filter(|h| h.config.is_controller() && h.is_running())
                .count()
                .max(1); // the leader runs by now
            let batches = quorum_batches(running, todo.len(), state.opts.concurrency);
            let mut rest = todo.as_slice();
            for size in batches {
                let (batch, tail) = rest.split_at(size);
                rest = tail;
                if size > 1 {
                    tracing::info!("joining {size} controllers in parallel");
                }
                // Tokens one by one on the leader, then the batch joins in parallel.
                let mut tokens = Vec::new();
                for &i in batch {
                    let leader = &state.hosts[l];
                    let t = create_token(leader, "controller", "30m0s")
                        .await
                        .context("creating a controller join token")
                        .map_err(|e| PhaseError::on_host(TITLE, leader.name.clone(), e))?;
                    tokens.push((i, t));
                }
                state.unfinished.extend(batch.iter().copied());
                let hosts = &state.hosts;
                let results = each_host(
                    state.pool.limits(),
                    tokens.iter().map(|(i, token)| (&hosts[*i], token)),
                    |(h, token)| {
                        let leader = &hosts[l];
                        async move {
                            write_token(h, token).await?;
                            install_and_start(h, false, force, Some(&token.url)).await?;
                            wait_api_ready(h).await?;
                            retire_token(leader, h, token, None).await;
                            tracing::info!("{}: controller joined", h.name);
                            run_host_hooks(h, "install", "after").await?;
                            install_finished(h).await?;
                            Ok(())
                        }
                    },
                )
                .await;
                for (&i, r) in batch.iter().zip(&results) {
                    if r.is_ok() {
                        state.unfinished.retain(|&x| x != i);
                        let name = state.hosts[i].name.clone();
                        state.changed(
                            name,
                            "installed and started k0s controller (joined the cluster)",
                        );
                    }
                }
                collect(TITLE, results)?;
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
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| {
                    h.config.is_controller()
                        && Some(h.index) != state.leader
                        && state.unfinished.contains(&h.index)
                })
                .map(|h| h.index)
                .collect();
            reset_unfinished(state, &idx).await;
            Ok(())
        })
    }
}

/// Batch sizes for joining `remaining` controllers to `running` ones (as k0sctl's `phase/install_controllers.go`):
/// one host, or `concurrency` < 2 (0 = unlimited) → one at a time; exactly one running and at
/// least two to go → first two together; an even number running → one alone (to make it odd);
/// then batches of `min(max(quorum/2, 1), concurrency, remaining)` with
/// `quorum = (running + remaining)/2 + 1`.
pub fn quorum_batches(mut running: usize, mut remaining: usize, concurrency: usize) -> Vec<usize> {
    let conc = if concurrency == 0 {
        usize::MAX
    } else {
        concurrency
    };
    let mut out = Vec::new();
    if remaining == 0 {
        return out;
    }
    if remaining == 1 || conc < 2 {
        return vec![1; remaining];
    }
    if running == 1 && remaining >= 2 {
        let n = 2.min(conc);
        out.push(n);
        running += n;
        remaining -= n;
    } else if running.is_multiple_of(2) {
        out.push(1);
        running += 1;
        remaining -= 1;
    }
    while remaining > 0 {
        let quorum = (running + remaining) / 2 + 1;
        let n = (quorum / 2).max(1).min(conc).min(remaining);
        out.push(n);
        running += n;
        remaining -= n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::quorum_batches;

    #[test]
    fn batches_keep_quorum() {
        assert_eq!(quorum_batches(1, 0, 30), Vec::<usize>::new());
        assert_eq!(quorum_batches(1, 1, 30), [1]);
        assert_eq!(quorum_batches(1, 2, 30), [2]);
        assert_eq!(quorum_batches(1, 4, 30), [2, 1, 1]);
        assert_eq!(quorum_batches(2, 3, 30), [1, 1, 1]);
        assert_eq!(quorum_batches(1, 6, 30), [2, 2, 2]);
        assert_eq!(quorum_batches(1, 4, 1), [1, 1, 1, 1]);
        assert_eq!(quorum_batches(3, 4, 30), [2, 2]);
        // Never more in one batch than the members already running.
        for running in 1..6 {
            for remaining in 0..10 {
                let mut r = running;
                let b = quorum_batches(running, remaining, 30);
                assert_eq!(b.iter().sum::<usize>(), remaining);
                for n in b {
                    assert!(
                        n <= r.max(2),
                        "{running}+{remaining}: batch {n} with {r} running"
                    );
                    r += n;
                }
            }
        }
    }
}
