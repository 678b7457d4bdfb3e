//! "Validate facts": decisions that need both the manifest and what runs — no downgrades
//! (unless `--disable-downgrade-check`), and an unpinned version keeps what the cluster runs.

use crate::exit::Code;

use super::{Failure, Phase, PhaseError, PhaseFuture, State};

pub struct ValidateFacts;

pub const TITLE: &str = "Validate facts";

impl Phase for ValidateFacts {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let Some(target) = state.target_version() else {
                return Err(PhaseError::new(
                    Code::Failure,
                    TITLE,
                    "no target k0s version (internal error: phase order)",
                ));
            };
            // An unpinned version (looked up online) never upgrades a running cluster by
            // surprise: keep what the leader runs, as k0sctl does.
            if state.config.cluster.spec.k0s.version.is_none()
                && let Some(running) = state
                    .leader
                    .and_then(|l| state.hosts[l].k0s.as_ref()?.status.as_ref())
                    .map(|s| s.version.clone())
                && running < target
            {
                tracing::warn!(
                    "spec.k0s.version is not set: keeping the running k0s {running} (the newest release is {target}); set spec.k0s.version to upgrade"
                );
                state.target = Some(running);
                return Ok(());
            }
            if state.opts.disable_downgrade_check {
                return Ok(());
            }
            let newer: Vec<(String, Failure)> = state
                .hosts
                .iter()
                .filter(|h| !h.config.reset)
                .filter_map(|h| {
                    let running = h.k0s.as_ref()?.status.as_ref()?.version.clone();
                    (running > target).then(|| {
                        (
                            h.name.clone(),
                            Failure::config(format!(
                                "can't perform a downgrade: {running} > {target}"
                            )),
                        )
                    })
                })
                .collect();
            if newer.is_empty() {
                Ok(())
            } else {
                let mut e = PhaseError::failed_on(TITLE, newer);
                e.message = format!(
                    "refuses to downgrade {} (raise spec.k0s.version, or pass --disable-downgrade-check if you really mean it)",
                    e.message.trim_start_matches("failed on ")
                );
                Err(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, manifest};

    fn kit(version: &str) -> Kit {
        let y = manifest(
            &["controller", "worker"],
            &format!("  k0s:\n    version: {version}\n"),
        );
        Kit::from_yaml(&y, Default::default())
    }

    #[tokio::test]
    async fn refuses_a_downgrade_naming_the_host_and_versions() {
        let mut k = kit("v1.30.0+k0s.0");
        k.running(0, "v1.30.0+k0s.0")
            .running(1, "v1.31.2+k0s.0")
            .leader(0);
        let e = k.run(&ValidateFacts).await.unwrap_err().to_string();
        assert!(e.contains("refuses to downgrade 1 host"), "{e}");
        assert!(
            e.contains("10.0.0.2:22: can't perform a downgrade: v1.31.2+k0s.0 > v1.30.0+k0s.0"),
            "{e}"
        );
        assert!(!e.contains("10.0.0.1:22"), "{e}");
        k.assert_nothing_ran();
    }

    #[tokio::test]
    async fn downgrade_check_can_be_disabled_and_reset_hosts_are_ignored() {
        let mut k = kit("v1.30.0+k0s.0");
        k.running(0, "v1.30.0+k0s.0")
            .running(1, "v1.31.2+k0s.0")
            .leader(0);
        k.state.hosts[1].config.reset = true;
        k.run(&ValidateFacts).await.unwrap();
        k.state.hosts[1].config.reset = false;
        k.state.opts.disable_downgrade_check = true;
        k.run(&ValidateFacts).await.unwrap();
    }

    /// An unpinned version keeps what the leader runs instead of upgrading by surprise.
    #[tokio::test]
    async fn unpinned_version_keeps_the_running_one() {
        let mut k = Kit::new(&["controller"]);
        k.running(0, "v1.30.0+k0s.0")
            .leader(0)
            .target("v1.31.2+k0s.0");
        k.run(&ValidateFacts).await.unwrap();
        assert_eq!(
            k.state.target.as_ref().unwrap().to_string(),
            "v1.30.0+k0s.0"
        );
        let mut none = Kit::new(&["controller"]);
        let e = none.run(&ValidateFacts).await.unwrap_err().to_string();
        assert!(e.contains("no target k0s version"), "{e}");
    }
}
