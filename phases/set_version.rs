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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, manifest};

    /// Only an unpinned version is looked up (the lookup itself needs the network and is
    /// covered by the e2e tests).
    #[test]
    fn runs_only_without_a_pinned_version() {
        let k = Kit::new(&["controller"]);
        assert!(SetK0sVersion.should_run(&k.state));
        let pinned = manifest(&["controller"], "  k0s:\n    version: v1.31.1+k0s.0\n");
        let mut k = Kit::from_yaml(&pinned, Default::default());
        assert!(!SetK0sVersion.should_run(&k.state));
        k.state.config.cluster.spec.k0s.version = None;
        assert!(SetK0sVersion.should_run(&k.state));
        k.target("v1.30.0+k0s.0");
        assert!(!SetK0sVersion.should_run(&k.state));
        assert_eq!(SetK0sVersion.title(), "Set k0s version");
    }
}
