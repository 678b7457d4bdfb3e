//! "Check what this build can do": refuse, before anything changes, manifests and cluster
//! states that need pipeline parts not built yet, instead of silently skipping them.

use crate::exit::Code;

use super::{Phase, PhaseError, PhaseFuture, State};

pub struct CheckSupported;

pub const TITLE: &str = "Check what this build can do";

impl Phase for CheckSupported {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let mut missing: Vec<(String, String)> = Vec::new();
            let c = &state.config.cluster;
            if c.spec.k0s.dynamic_config {
                missing.push(("spec.k0s".into(), "dynamicConfig: true".into()));
            }
            if missing.is_empty() {
                return Ok(());
            }
            let mut e = PhaseError::hosts(Code::NotImplemented, TITLE, missing);
            e.message = "found what this build cannot do yet (nothing was changed)".into();
            Err(e)
        })
    }
}
