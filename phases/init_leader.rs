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
            tracing::info!(about = %leader.name, "the kubernetes API is ready");
            if leader.dynamic_config {
                wait_config_reconciled(leader).await.map_err(&fail)?;
                tracing::info!(about = %leader.name, "k0s reconciled the dynamic cluster config");
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.fresh(0).fresh(1).leader(0);
        k
    }

    #[test]
    fn runs_only_when_the_leader_does_not_run_k0s() {
        let mut k = kit(Default::default());
        assert!(InitLeader.should_run(&k.state));
        k.running(0, "v1.31.1+k0s.0");
        assert!(!InitLeader.should_run(&k.state));
        k.state.leader = None;
        assert!(!InitLeader.should_run(&k.state));
    }

    /// Marker, install and start in one round trip (no service environment to write first),
    /// a wait for the service when that round trip did not see it running yet, then the API,
    /// then the marker goes: in that order, on the leader only.
    #[tokio::test]
    async fn installs_starts_and_waits_in_order() {
        let mut k = kit(Default::default());
        k.controller_install_succeeds(0);
        k.run(&InitLeader).await.unwrap();
        let s = k.script(0);
        let c = s.commands();
        assert_eq!(c.len(), 4, "{c:#?}");
        assert!(
            c[0].starts_with("mkdir -p \"$(dirname /etc/k0s/.k0sctl-install-incomplete)\""),
            "{}",
            c[0]
        );
        assert!(
            c[0].contains("\n/usr/local/bin/k0s install controller "),
            "{}",
            c[0]
        );
        assert!(
            c[0].ends_with("\nsystemctl start k0scontroller || exit $?\nif systemctl is-active --quiet k0scontroller; then echo @@k0sctl-service-running; fi"),
            "{}",
            c[0]
        );
        assert_eq!(c[1], "systemctl is-active --quiet k0scontroller");
        assert!(c[2].ends_with("get --raw=/readyz"), "{}", c[2]);
        assert_eq!(c[3], "rm -f /etc/k0s/.k0sctl-install-incomplete");
        assert!(k.script(1).commands().is_empty());
        assert!(k.state.unfinished.is_empty());
        assert_eq!(
            k.changes_for(0),
            ["installed and started k0s controller (initialised the cluster)"]
        );
    }

    /// When the install's round trip already saw the service running, nothing waits for it.
    #[tokio::test]
    async fn a_service_seen_running_by_the_install_is_not_waited_for() {
        let mut k = kit(Default::default());
        k.controller_install_succeeds(0);
        k.script(0).on(
            "/usr/local/bin/k0s install controller",
            "@@k0sctl-service-running\n",
        );
        k.run(&InitLeader).await.unwrap();
        let c = k.script(0).commands();
        assert_eq!(c.len(), 3, "{c:#?}");
        assert!(c[1].ends_with("get --raw=/readyz"), "{}", c[1]);
        assert_eq!(c[2], "rm -f /etc/k0s/.k0sctl-install-incomplete");
    }

    /// A failed install keeps k0s's stderr, leaves the leader marked unfinished, and the
    /// clean-up stops and resets it and removes the token file and the marker.
    #[tokio::test]
    async fn a_failed_install_is_reported_and_cleaned_up() {
        let mut k = kit(Default::default());
        k.controller_install_succeeds(0);
        k.script(0).fail(
            "/usr/local/bin/k0s install controller",
            1,
            "Error: invalid config: spec.network",
        );
        let e = k.run(&InitLeader).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.1:22") && e.contains("Error: invalid config: spec.network"),
            "{e}"
        );
        assert_eq!(k.state.unfinished, [0]);
        k.script(0).clear_record();
        k.script(0)
            .on("pgrep -f 'k0s install", "")
            .on("systemctl stop k0scontroller", "")
            .on("/usr/local/bin/k0s reset --data-dir=/var/lib/k0s", "")
            .fail("[ -e /etc/systemd/system/k0scontroller.service ]", 1, "")
            .on(
                "rm -f /etc/k0s/k0stoken /etc/k0s/.k0sctl-install-incomplete",
                "",
            );
        InitLeader.clean_up(&mut k.state).await.unwrap();
        let s = k.script(0);
        assert!(s.position("systemctl stop k0scontroller") < s.position("k0s reset"));
        assert!(s.position("k0s reset") < s.position("rm -f /etc/k0s/k0stoken"));
    }

    #[tokio::test]
    async fn clean_up_leaves_a_finished_leader_alone() {
        let mut k = kit(Default::default());
        InitLeader.clean_up(&mut k.state).await.unwrap();
        k.assert_nothing_ran();
    }

    #[tokio::test]
    async fn dry_run_plans_install_and_start() {
        let mut k = kit(dry());
        k.run(&InitLeader).await.unwrap();
        assert_eq!(
            k.plan_for(0),
            [
                "install k0s controller (the cluster's first)",
                "start the k0scontroller service"
            ]
        );
        k.assert_nothing_ran();
    }
}
