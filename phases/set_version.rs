//! "Set k0s version": when `spec.k0s.version` is not set, look up the newest k0s on the
//! configured channel (stable, or latest for pre-releases) — k0sctl does the same.

use crate::exit::Code;
use crate::k0s::release;

use super::{Phase, PhaseError, PhaseFuture, State};

pub struct SetK0sVersion;

pub const TITLE: &str = "Set k0s version";

impl Phase for SetK0sVersion {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.target_version().is_none()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let pre = state.config.cluster.spec.k0s.version_channel == "latest";
            tracing::info!(
                "Looking up latest {} k0s version",
                if pre {
                    "k0s version including pre-releases"
                } else {
                    "stable"
                }
            );
            let v = release::latest_k0s(pre).await.map_err(|e| {
                PhaseError::new(
                    Code::Unreachable,
                    TITLE,
                    format!("failed to look up k0s version online - try setting spec.k0s.version manually: {e:#}"),
                )
            })?;
            tracing::info!("Using k0s version {v}");
            state.target = Some(v);
            Ok(())
        })
    }
}
