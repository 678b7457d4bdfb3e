//! "Apply additional manifests": every document of the configuration that is neither the
//! Cluster nor a k0s ClusterConfig is applied on the leader with `kubectl apply -f -` (the YAML
//! on stdin, as written). kubectl's "unchanged" is not counted as a change.

use crate::phases::Failure;
use crate::transport::Cmd;

use super::steps::kubectl::kubectl;
use super::{Phase, PhaseError, PhaseFuture, State};

pub struct ApplyManifests;

pub const TITLE: &str = "Apply additional manifests";

impl Phase for ApplyManifests {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        !state.config.manifests.is_empty() && state.leader.is_some()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let mut changed = Vec::new();
            {
                let leader = &state.hosts[l];
                let fail = |e: Failure| PhaseError::on_host(TITLE, leader.name.clone(), e);
                let p = leader.probed().map_err(|e| fail(e.into()))?;
                let cmd = kubectl(leader, "apply -f -").map_err(&fail)?;
                for m in &state.config.manifests {
                    let out = p
                        .remote
                        .run(
                            Cmd::new(cmd.clone())
                                .sudo()
                                .stdin(m.raw.clone().into_bytes()),
                        )
                        .await
                        .map_err(|e| {
                            fail(
                                format!(
                                    "applying {} (from {} line {}): {e}",
                                    m.name,
                                    m.origin.display(),
                                    m.line
                                )
                                .into(),
                            )
                        })?;
                    let said = out.stdout_str();
                    tracing::info!("{}: kubectl apply {}: {}", leader.name, m.name, said.trim());
                    if said
                        .lines()
                        .any(|l| !l.trim().is_empty() && !l.trim_end().ends_with("unchanged"))
                    {
                        changed.push((
                            leader.name.clone(),
                            format!("applied {} ({}): {}", m.name, m.kind, said.trim()),
                        ));
                    }
                }
            }
            for (h, what) in changed {
                state.changed(h, what);
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let name = state.hosts[l].name.clone();
            let items: Vec<String> = state
                .config
                .manifests
                .iter()
                .map(|m| {
                    format!(
                        "apply manifest {} ({} from {})",
                        m.name,
                        m.kind,
                        m.origin.display()
                    )
                })
                .collect();
            for what in items {
                state.planned(name.clone(), what);
            }
            Ok(())
        })
    }
}
