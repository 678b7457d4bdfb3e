//! The "Reset workers" / "Reset controllers" / "Reset leader" phases of `k0sctl reset`
//! (workers in parallel, controllers one at a time, the leader last); each host's reset is
//! [`reset_host`] (see [`super::steps::reset_host`] for the steps).

use crate::phases::{Failure, each_host};

use super::steps::reset_host::{HostReset, ResetSteps, plan_reset_host, reset_host};
use super::{Phase, PhaseError, PhaseFuture, State};

/// Which hosts a reset phase takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Workers,
    Controllers,
    Leader,
}

fn selected(state: &State, which: Which) -> Vec<usize> {
    state
        .hosts
        .iter()
        .filter(|h| h.config.reset)
        .filter(|h| match which {
            Which::Workers => !h.config.is_controller(),
            Which::Controllers => h.config.is_controller() && state.leader != Some(h.index),
            Which::Leader => state.leader == Some(h.index),
        })
        .map(|h| h.index)
        .collect()
}

fn title(which: Which) -> &'static str {
    match which {
        Which::Workers => "Reset workers",
        Which::Controllers => "Reset controllers",
        Which::Leader => "Reset leader",
    }
}

/// "Reset workers", "Reset controllers" or "Reset leader": resets the hosts marked
/// `reset: true` of that kind (workers in parallel, controllers one at a time). Every selected
/// host is attempted; the failures are reported together.
pub struct ResetHosts {
    which: Which,
    pub steps: ResetSteps,
}

impl ResetHosts {
    pub fn workers(steps: ResetSteps) -> Self {
        Self {
            which: Which::Workers,
            steps,
        }
    }
    pub fn controllers(steps: ResetSteps) -> Self {
        Self {
            which: Which::Controllers,
            steps,
        }
    }
    pub fn leader(steps: ResetSteps) -> Self {
        Self {
            which: Which::Leader,
            steps,
        }
    }
}

impl Phase for ResetHosts {
    fn title(&self) -> &'static str {
        title(self.which)
    }

    fn should_run(&self, state: &State) -> bool {
        !selected(state, self.which).is_empty()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let todo = selected(state, self.which);
            let results: Vec<(usize, HostReset)> = if self.which == Which::Workers {
                let limits = state.pool.limits().clone();
                let st: &State = state;
                // A host's reset carries its own failure (with what it did before it).
                each_host(
                    &limits,
                    todo.iter().map(|&i| &st.hosts[i]),
                    |h| async move {
                        Ok::<_, Failure>((h.index, reset_host(st, h.index, self.steps).await))
                    },
                )
                .await
                .into_iter()
                .filter_map(Result::ok)
                .collect()
            } else {
                let mut v = Vec::new();
                for &i in &todo {
                    v.push((i, reset_host(state, i, self.steps).await));
                }
                v
            };
            let mut failures = Vec::new();
            for (i, r) in results {
                let name = state.hosts[i].name.clone();
                for c in r.changes {
                    state.changed(name.clone(), c);
                }
                if let Some(e) = r.error {
                    failures.push((name, e));
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(PhaseError::failed_on(self.title(), failures))
            }
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let mut planned = Vec::new();
            let mut failures = Vec::new();
            for i in selected(state, self.which) {
                let name = state.hosts[i].name.clone();
                match plan_reset_host(state, i, self.steps).await {
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
                Err(PhaseError::failed_on(self.title(), failures))
            }
        })
    }
}
