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
                    tracing::info!(about = %leader.name, "kubectl apply {}: {}", m.name, said.trim());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry, manifest};

    const CM: &str =
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\ndata:\n  a: b\n";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::from_yaml(
            &format!("{}{CM}", manifest(&["controller", "worker"], "")),
            opts,
        );
        k.leader(0);
        k
    }

    #[test]
    fn runs_only_with_manifests_and_a_leader() {
        let mut k = kit(Default::default());
        assert!(ApplyManifests.should_run(&k.state));
        k.state.leader = None;
        assert!(!ApplyManifests.should_run(&k.state));
        let mut none = Kit::new(&["controller"]);
        none.leader(0);
        assert!(!ApplyManifests.should_run(&none.state));
    }

    /// The YAML goes on kubectl's stdin on the leader only; "unchanged" is no change.
    #[tokio::test]
    async fn applies_on_the_leader_with_the_yaml_on_stdin() {
        let mut k = kit(Default::default());
        k.script(0)
            .on_times("apply -f -", "configmap/cm1 created\n", 1);
        k.run(&ApplyManifests).await.unwrap();
        let ran = k.script(0).ran();
        assert_eq!(ran.len(), 1);
        assert!(
            ran[0].command.starts_with("env KUBECONFIG=/var/lib/k0s/pki/admin.conf /usr/local/bin/k0s kubectl --cache-dir=/var/lib/k0s/kubectl-cache apply -f -"),
            "{}",
            ran[0].command
        );
        let stdin = String::from_utf8(ran[0].stdin.clone()).unwrap();
        assert!(
            stdin.contains("name: cm1") && stdin.contains("kind: ConfigMap"),
            "{stdin}"
        );
        assert!(k.script(1).commands().is_empty());
        let c = k.changes_for(0);
        assert_eq!(c.len(), 1);
        assert!(c[0].contains("configmap/cm1 created"), "{c:?}");

        k.state.changes = Default::default();
        k.script(0).on("apply -f -", "configmap/cm1 unchanged\n");
        k.run(&ApplyManifests).await.unwrap();
        assert!(k.changes_for(0).is_empty());
    }

    #[tokio::test]
    async fn a_failed_apply_names_the_manifest_and_keeps_stderr() {
        let mut k = kit(Default::default());
        k.script(0)
            .fail("apply -f -", 1, "error: resource mapping not found");
        let e = k.run(&ApplyManifests).await.unwrap_err().to_string();
        assert!(e.contains("10.0.0.1:22"), "{e}");
        assert!(e.contains("applying "), "{e}");
        assert!(e.contains("resource mapping not found"), "{e}");
    }

    #[tokio::test]
    async fn dry_run_plans_each_manifest_on_the_leader() {
        let mut k = kit(dry());
        k.run(&ApplyManifests).await.unwrap();
        let p = k.plan_for(0);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("apply manifest ") && p[0].contains("(ConfigMap from"),
            "{p:?}"
        );
        k.assert_nothing_ran();
    }
}
