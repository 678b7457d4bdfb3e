//! The "Reset workers" / "Reset controllers" / "Reset leader" phases of `k0sctl reset`
//! (workers in parallel, controllers one at a time, the leader last); each host's reset is
//! [`reset_host`] (see [`super::steps::reset_host`] for the steps).

use crate::phases::{Failure, each_host, fail_if_any};

use super::steps::reset_host::{HostReset, ResetSteps, plan_reset_host, reset_host};
use super::{Phase, PhaseFuture, State};

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
            fail_if_any(self.title(), failures)
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
            fail_if_any(self.title(), failures)
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};
    use crate::transport::scripted::{Pattern, Reply};

    const PROBE: &str = "echo @@binary;";
    const FOUND: &str = "@@binary\nyes\n@@datadir\nyes\n@@config\n@@token\nyes\n@@services\nk0sworker\n@@env\n@@markers\n@@end\n";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.31.1+k0s.0")
            .leader(0);
        for h in &mut k.state.hosts {
            h.config.reset = true;
        }
        k
    }

    /// The running service reports running once, then stopped.
    fn script_worker(k: &Kit) {
        let s = k.script(1);
        s.on(PROBE, FOUND)
            .fail("systemctl is-active --quiet k0sworker", 3, "")
            .rule(
                Pattern::Contains("systemctl is-active --quiet k0sworker".into()),
                Reply::ok(""),
                Some(1),
            )
            .on("systemctl stop k0sworker", "")
            .on("/usr/local/bin/k0s reset --data-dir=/var/lib/k0s", "")
            .on(
                "rm -f -- /etc/k0s/k0stoken /usr/local/bin/k0s; rmdir /etc/k0s 2>/dev/null || true",
                "",
            )
            .on("systemctl daemon-reload", "");
    }

    #[test]
    fn each_phase_takes_its_kind_of_host() {
        let k = kit(Default::default());
        let steps = ResetSteps::default();
        assert!(ResetHosts::workers(steps).should_run(&k.state));
        assert!(
            !ResetHosts::controllers(steps).should_run(&k.state),
            "the only controller leads"
        );
        assert!(ResetHosts::leader(steps).should_run(&k.state));
        let mut k = kit(Default::default());
        k.state.hosts[1].config.reset = false;
        assert!(!ResetHosts::workers(steps).should_run(&k.state));
    }

    /// Stop, `k0s reset`, remove what k0s leaves (token file, binary, empty /etc/k0s), reload:
    /// in that order, each recorded as a change.
    #[tokio::test]
    async fn resets_a_worker_in_order() {
        let mut k = kit(Default::default());
        script_worker(&k);
        k.run(&ResetHosts::workers(ResetSteps::default()))
            .await
            .unwrap();
        let s = k.script(1);
        assert!(s.position("systemctl stop k0sworker") < s.position("k0s reset"));
        assert!(s.position("k0s reset") < s.position("rm -f -- /etc/k0s/k0stoken"));
        assert!(s.position("rm -f -- /etc/k0s/k0stoken") < s.position("systemctl daemon-reload"));
        assert!(
            k.script(0).commands().is_empty(),
            "no node deletion in a cluster reset"
        );
        assert_eq!(
            k.changes_for(1),
            [
                "stopped the k0sworker service",
                "ran k0s reset (removed the k0s services and /var/lib/k0s)",
                "removed /etc/k0s/k0stoken",
                "removed /usr/local/bin/k0s",
                "reloaded the service manager",
            ]
        );
    }

    /// A failed `k0s reset` keeps its stderr, keeps the binary for a retry, and what was done
    /// before is still reported.
    #[tokio::test]
    async fn a_failed_k0s_reset_keeps_the_binary() {
        let mut k = kit(Default::default());
        script_worker(&k);
        k.script(1).fail(
            "k0s reset",
            1,
            "Error: failed to remove /var/lib/k0s: device busy",
        );
        let e = k
            .run(&ResetHosts::workers(ResetSteps::default()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10.0.0.2:22") && e.contains("device busy"),
            "{e}"
        );
        assert!(!k.script(1).has_run("rm -f -- /etc/k0s/k0stoken"));
        assert_eq!(k.changes_for(1), ["stopped the k0sworker service"]);
    }

    #[tokio::test]
    async fn dry_run_reads_and_plans() {
        let mut k = kit(dry());
        k.script(1)
            .on(PROBE, FOUND)
            .on("systemctl is-active --quiet k0sworker", "");
        k.run(&ResetHosts::workers(ResetSteps::default()))
            .await
            .unwrap();
        assert_eq!(
            k.plan_for(1),
            [
                "stop the k0sworker service",
                "run k0s reset (remove the k0s services and /var/lib/k0s)",
                "remove /etc/k0s/k0stoken",
                "remove /usr/local/bin/k0s",
                "reload the service manager",
            ]
        );
        assert!(!k.script(1).has_run("systemctl stop"));
        assert!(!k.script(1).has_run("k0s reset"));
    }
}
