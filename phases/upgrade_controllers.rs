//! "Upgrade controllers": controllers running another k0s version than the target are
//! upgraded strictly one at a time, in manifest order, each serving again (API ready; for
//! controller+worker also node Ready) before the next starts, so an etcd quorum is never at
//! risk. Around each: its `upgrade.before`/`upgrade.after` hooks. Controllers running
//! workloads are not drained (as in k0sctl); with `evictTaint.enabled` and
//! `evictTaint.controllerWorkers` they get the evict taint while they are upgraded.
//!
//! Before each controller is touched, the other controllers on etcd storage are checked live
//! (`k0s status`): if some are down and stopping this one would leave fewer than a quorum of
//! etcd members running, the run stops with an error naming the controllers that are down,
//! before anything on this controller is changed.

use crate::exit::Code;
use crate::kube::{self, EvictTaint};
use crate::phases::{Failure, HostFailure, each_host};
use crate::transport::Cmd;

use super::steps::hooks::{plan_host_hooks, run_host_hooks};
use super::steps::leader::leader_client_if;
use super::steps::reset_host::uses_etcd;
use super::steps::upgrade_host::{mark_converged, needs_upgrade, running_version, upgrade_node};
use super::steps::wait::WAIT;
use super::{Phase, PhaseError, PhaseFuture, State};

pub struct UpgradeControllers;

/// Would stopping one of `members` etcd members, with `down` of the others already down, leave
/// fewer than a quorum running? (Only when some are down: a one- or two-member cluster has no
/// quorum during an upgrade anyway, and that is expected.)
pub fn loses_quorum(members: usize, down: usize) -> bool {
    down > 0 && members.saturating_sub(down + 1) < members / 2 + 1
}

/// The controllers on etcd storage other than `skip` where k0s does not answer `k0s status`
/// (or the host cannot be reached), with the reason; and how many etcd controllers there are.
async fn down_controllers(state: &State, skip: usize) -> (usize, Vec<HostFailure>) {
    let members: Vec<&super::state::HostState> = state
        .hosts
        .iter()
        .filter(|h| h.config.is_controller() && !h.config.reset && uses_etcd(state, h))
        .collect();
    let checks = each_host(
        state.pool.limits(),
        members.iter().copied().filter(|h| h.index != skip),
        |h| async move {
            let p = h.probed()?;
            p.remote.run(Cmd::new(p.k0s_cmd("status")).sudo()).await?;
            Ok(())
        },
    )
    .await;
    let down = checks.into_iter().filter_map(Result::err).collect();
    (members.len(), down)
}

pub const TITLE: &str = "Upgrade controllers";

fn todo(state: &State) -> Vec<usize> {
    let Some(t) = state.target_version() else {
        return Vec::new();
    };
    state
        .hosts
        .iter()
        .filter(|h| h.config.is_controller() && needs_upgrade(h, &t))
        .map(|h| h.index)
        .collect()
}

impl Phase for UpgradeControllers {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        !todo(state).is_empty()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state
                .require_target()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let wait = !state.opts.no_wait && state.config.cluster.spec.options.wait.enabled;
            let hosts = todo(state);
            // The evict taint for controllers that run workloads (k0sctl's
            // `evictTaint.controllerWorkers`): their pods leave before k0s stops.
            let et = &state.config.cluster.spec.options.evict_taint;
            let taint = if et.enabled && et.controller_workers {
                Some(
                    EvictTaint::parse(&et.taint, &et.effect)
                        .map_err(|e| PhaseError::new(Code::InvalidConfig, TITLE, e.to_string()))?,
                )
            } else {
                None
            };
            let needs_client =
                taint.is_some() && hosts.iter().any(|&i| state.hosts[i].config.is_worker());
            let client = leader_client_if(state, needs_client, TITLE).await?;
            tracing::info!(
                "upgrading {} controller{} to k0s {target}, one at a time",
                hosts.len(),
                if hosts.len() == 1 { "" } else { "s" }
            );
            for i in hosts {
                let from = running_version(&state.hosts[i])
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let (h, leader) = (&state.hosts[i], &state.hosts[l]);
                let fail = |e: Failure| PhaseError::on_host(TITLE, h.name.clone(), e);
                if uses_etcd(state, h) {
                    let (members, down) = down_controllers(state, i).await;
                    if loses_quorum(members, down.len()) {
                        let names: Vec<&str> = down.iter().map(|(n, _)| n.as_str()).collect();
                        for (n, e) in &down {
                            tracing::error!(about = %n, "k0s is down: {e}");
                        }
                        return Err(fail(format!(
                            "not upgrading: {} of {members} controllers {} down ({}), so stopping this one would leave etcd without a quorum ({} of {members} members needed). Nothing was changed on it; start k0s on {} (or remove {} with reset: true) and run apply again",
                            down.len(),
                            if down.len() == 1 { "is" } else { "are" },
                            names.join(", "),
                            members / 2 + 1,
                            names.join(", "),
                            if down.len() == 1 { "it" } else { "them" },
                        ).into()));
                    }
                }
                run_host_hooks(h, "upgrade", "before")
                    .await
                    .map_err(&fail)?;
                let tainted = match (&client, &taint) {
                    (Some(c), Some(t)) if h.config.is_worker() => {
                        let node = h.node_name().unwrap_or_default();
                        kube::add_taint(c, &node, t, WAIT).await.map_err(|e| {
                            fail(Failure::from(e).context(format!("tainting node {node}")))
                        })?;
                        tracing::info!(about = %h.name, "tainted node {node} with {t}");
                        Some((c, t, node))
                    }
                    _ => None,
                };
                let upgraded = upgrade_node(h, leader, i == l, &target, wait).await;
                if let Some((c, t, node)) = tainted
                    && let Err(e) = kube::remove_taint(c, &node, t).await
                {
                    // As k0sctl: a taint left behind is reported, not fatal.
                    tracing::warn!(about = %h.name, "removing the evict taint from node {node}: {e}");
                }
                upgraded.map_err(&fail)?;
                run_host_hooks(h, "upgrade", "after").await.map_err(fail)?;
                let h = &mut state.hosts[i];
                mark_converged(h, i == l, &target);
                let name = h.name.clone();
                state.changed(name, format!("upgraded k0s controller {from} to {target}"));
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state
                .require_target()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            for i in todo(state) {
                plan_host_hooks(state, i, "upgrade", "before");
                let h = &state.hosts[i];
                let what = format!(
                    "upgrade k0s controller {} to {target} (stop, replace the binary, reinstall, start)",
                    running_version(h)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                );
                let name = h.name.clone();
                state.planned(name, what);
                plan_host_hooks(state, i, "upgrade", "after");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::loses_quorum;

    #[test]
    fn quorum_is_lost_only_when_others_are_down_too() {
        // Three members: one down + the one being upgraded leaves 1 of the 2 needed.
        assert!(loses_quorum(3, 1));
        assert!(!loses_quorum(3, 0));
        // Five members: one down + one upgraded leaves 3, a quorum; two down do not.
        assert!(!loses_quorum(5, 1));
        assert!(loses_quorum(5, 2));
        // One or two members lose quorum in any upgrade: not refused for that alone.
        assert!(!loses_quorum(1, 0));
        assert!(!loses_quorum(2, 0));
        assert!(loses_quorum(2, 1));
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};
    use crate::transport::scripted::{Pattern, Reply};

    const MARK: &str = "/etc/k0s/.k0sctl-upgrade-incomplete";
    const SWAP: &str = "set -e; chmod 0755 /usr/local/bin/k0s.tmp.9; mv -f /usr/local/bin/k0s.tmp.9 /usr/local/bin/k0s; /usr/local/bin/k0s version";

    fn kit(n: usize, opts: super::super::RunOptions) -> Kit {
        let roles = vec!["controller"; n];
        let mut k = Kit::with_opts(&roles, opts);
        for i in 0..n {
            k.running(i, "v1.30.0+k0s.0");
        }
        k.leader(0).target("v1.31.1+k0s.0");
        k.state.hosts[0].staged = Some("/usr/local/bin/k0s.tmp.9".into());
        k
    }

    /// Stop answers "stopped" once, then the service runs again.
    fn script_upgrade(k: &Kit, version: &str) {
        k.script(0)
            .on(&format!("[ -e {MARK} ] ||"), "")
            .on("systemctl stop k0scontroller", "")
            .on("systemctl is-active --quiet k0scontroller", "")
            .rule(
                Pattern::Contains("systemctl is-active --quiet k0scontroller".into()),
                Reply::fail(3, ""),
                Some(1),
            )
            .on(SWAP, version)
            .on("/usr/local/bin/k0s install controller", "")
            .on("systemctl daemon-reload", "")
            .on("systemctl start k0scontroller", "")
            .on("get --raw=/readyz", "ok")
            .on(&format!("= upgrade ]; then rm -f {MARK}"), "");
    }

    #[test]
    fn upgrades_controllers_older_than_the_target() {
        let mut k = kit(1, Default::default());
        assert!(UpgradeControllers.should_run(&k.state));
        k.target("v1.30.0+k0s.0");
        assert!(!UpgradeControllers.should_run(&k.state));
    }

    /// Marker, stop, wait stopped, swap the binary, reinstall --force, reload, start, API
    /// ready, marker removed: in that order.
    #[tokio::test]
    async fn upgrades_one_controller_in_order() {
        let mut k = kit(1, Default::default());
        script_upgrade(&k, "v1.31.1+k0s.0\n");
        k.run(&UpgradeControllers).await.unwrap();
        let s = k.script(0);
        let steps = [
            "[ -e /etc/k0s/.k0sctl-upgrade-incomplete ] ||",
            "systemctl stop k0scontroller",
            SWAP,
            "/usr/local/bin/k0s install controller",
            "systemctl daemon-reload",
            "systemctl start k0scontroller",
            "get --raw=/readyz",
            "then rm -f /etc/k0s/.k0sctl-upgrade-incomplete",
        ];
        let at: Vec<usize> = steps.iter().map(|x| s.position(x)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{:#?}", s.commands());
        assert!(s.ran_matching("install controller")[0].contains("--force=true"));
        assert_eq!(
            k.changes_for(0),
            ["upgraded k0s controller v1.30.0+k0s.0 to v1.31.1+k0s.0"]
        );
        assert_eq!(
            k.state.hosts[0]
                .k0s
                .as_ref()
                .unwrap()
                .status
                .as_ref()
                .unwrap()
                .version
                .to_string(),
            "v1.31.1+k0s.0"
        );
    }

    /// A binary of the wrong version fails the host, and the stopped service is started
    /// again so the node is not left down.
    #[tokio::test]
    async fn a_wrong_binary_fails_and_the_service_is_started_again() {
        let mut k = kit(1, Default::default());
        script_upgrade(&k, "v1.30.5+k0s.0\n");
        k.script(0)
            .fail("systemctl is-active --quiet k0scontroller", 3, "");
        let e = k.run(&UpgradeControllers).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "10.0.0.1:22: the new k0s binary is version v1.30.5+k0s.0, not v1.31.1+k0s.0"
            ),
            "{e}"
        );
        let s = k.script(0);
        assert!(s.position(SWAP) < s.position("systemctl start k0scontroller"));
        assert!(!s.has_run("install controller"));
        assert!(
            !s.has_run("then rm -f"),
            "the marker stays for the next run"
        );
        assert!(k.changes_for(0).is_empty());
    }

    /// With two of three etcd members down, stopping the third would lose quorum: refused
    /// before anything changes.
    #[tokio::test]
    async fn refuses_to_break_etcd_quorum() {
        let mut k = kit(3, Default::default());
        for i in [1, 2] {
            k.script(i)
                .fail("/usr/local/bin/k0s status", 1, "Error: k0s is not running");
        }
        let e = k.run(&UpgradeControllers).await.unwrap_err().to_string();
        assert!(
            e.contains("not upgrading: 2 of 3 controllers are down"),
            "{e}"
        );
        assert!(k.script(0).commands().is_empty());
    }

    #[tokio::test]
    async fn dry_run_plans_each_controller() {
        let mut k = kit(2, dry());
        k.run(&UpgradeControllers).await.unwrap();
        for i in [0, 1] {
            assert_eq!(
                k.plan_for(i),
                [
                    "upgrade k0s controller v1.30.0+k0s.0 to v1.31.1+k0s.0 (stop, replace the binary, reinstall, start)"
                ]
            );
        }
        k.assert_nothing_ran();
    }
}
