//! "Validate facts": decisions that need both the manifest and what runs — no downgrades
//! (unless `--disable-downgrade-check`), and an unpinned version keeps what the cluster runs.

use crate::exit::Code;

use super::{Phase, PhaseError, PhaseFuture, State};

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
            let newer: Vec<(String, String)> = state
                .hosts
                .iter()
                .filter(|h| !h.config.reset)
                .filter_map(|h| {
                    let running = h.k0s.as_ref()?.status.as_ref()?.version.clone();
                    (running > target).then(|| {
                        (
                            h.name.clone(),
                            format!("can't perform a downgrade: {running} > {target}"),
                        )
                    })
                })
                .collect();
            if newer.is_empty() {
                Ok(())
            } else {
                let mut e = PhaseError::hosts(Code::InvalidConfig, TITLE, newer);
                e.message = format!(
                    "refuses to downgrade {} (raise spec.k0s.version, or pass --disable-downgrade-check if you really mean it)",
                    e.message.trim_start_matches("failed on ")
                );
                Err(e)
            }
        })
    }
}
