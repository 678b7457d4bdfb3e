//! Running user hooks (`hooks: {<action>: {<stage>: [commands]}}`): each host's commands in
//! order, as the connection user (no sudo, as in k0sctl), hosts in parallel. A failing hook
//! stops the run and names the hook, the host and the remote stderr. A dry run lists the hooks.

use crate::phases::Context;
use crate::transport::Cmd;

use super::steps::hooks::host_hooks;
use super::{Phase, PhaseFuture, State, collect, each_host};

pub struct RunHooks {
    pub title: &'static str,
    pub action: &'static str,
    pub stage: &'static str,
}

impl RunHooks {
    fn commands<'s>(&self, h: &'s crate::config::Host) -> &'s [String] {
        host_hooks(h, self.action, self.stage)
    }
}

impl Phase for RunHooks {
    fn title(&self) -> &'static str {
        self.title
    }

    fn should_run(&self, state: &State) -> bool {
        state
            .hosts
            .iter()
            .any(|h| h.remote.is_some() && !self.commands(&h.config).is_empty())
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let limits = state.pool.limits().clone();
            let results = each_host(
                &limits,
                state.hosts.iter().filter(|h| h.remote.is_some()),
                |h| async move {
                    let Some(remote) = &h.remote else {
                        return Ok(());
                    };
                    for cmd in self.commands(&h.config) {
                        tracing::info!(
                            about = %h.name,
                            "running {} {} hook: {cmd:?}",
                            self.stage,
                            self.action
                        );
                        remote.run(Cmd::new(cmd.as_str())).await.with_context(|| {
                            format!(
                                "failed to execute hook {cmd:?} for action {:?} stage {:?}",
                                self.action, self.stage
                            )
                        })?;
                    }
                    Ok(())
                },
            )
            .await;
            let ok = results.iter().all(Result::is_ok);
            collect(self.title, results)?;
            if ok {
                let ran: Vec<(String, String)> = state
                    .hosts
                    .iter()
                    .filter(|h| h.remote.is_some())
                    .flat_map(|h| {
                        self.commands(&h.config)
                            .iter()
                            .map(|c| {
                                (
                                    h.name.clone(),
                                    format!("ran {} {} hook: {c:?}", self.stage, self.action),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for (h, what) in ran {
                    state.changed(h, what);
                }
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let mut planned = Vec::new();
            for h in &state.hosts {
                for cmd in self.commands(&h.config) {
                    planned.push((
                        h.name.clone(),
                        format!("run {} {} hook: {cmd:?}", self.stage, self.action),
                    ));
                }
            }
            for (h, what) in planned {
                state.planned(h, what);
            }
            Ok(())
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry, manifest_with};

    const BEFORE: RunHooks = RunHooks {
        title: "Run Before Apply Hooks",
        action: "apply",
        stage: "before",
    };

    fn kit(opts: super::super::RunOptions) -> Kit {
        let y = manifest_with(
            &[
                (
                    "controller",
                    "    hooks:\n      apply:\n        before:\n        - echo one\n        - echo two\n",
                ),
                ("worker", ""),
            ],
            "",
        );
        Kit::from_yaml(&y, opts)
    }

    #[tokio::test]
    async fn runs_each_hosts_hooks_in_order_without_sudo() {
        let mut k = kit(Default::default());
        assert!(BEFORE.should_run(&k.state));
        let after = RunHooks {
            title: "x",
            action: "apply",
            stage: "after",
        };
        assert!(!after.should_run(&k.state));
        k.script(0).on("echo one", "one").on("echo two", "two");
        k.run(&BEFORE).await.unwrap();
        assert_eq!(k.script(0).commands(), ["echo one", "echo two"]);
        assert!(k.script(1).commands().is_empty());
        assert_eq!(
            k.changes_for(0),
            [
                "ran before apply hook: \"echo one\"",
                "ran before apply hook: \"echo two\""
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_hook_stops_that_host_and_keeps_stderr() {
        let mut k = kit(Default::default());
        k.script(0).fail("echo one", 7, "hook went wrong");
        let e = k.run(&BEFORE).await.unwrap_err().to_string();
        assert!(
            e.contains("failed to execute hook \"echo one\" for action \"apply\" stage \"before\""),
            "{e}"
        );
        assert!(e.contains("hook went wrong"), "{e}");
        assert_eq!(
            k.script(0).commands(),
            ["echo one"],
            "the second hook does not run"
        );
        assert!(k.changes_for(0).is_empty());
    }

    #[tokio::test]
    async fn dry_run_lists_the_hooks_and_runs_none() {
        let mut k = kit(dry());
        k.run(&BEFORE).await.unwrap();
        assert_eq!(
            k.plan_for(0),
            [
                "run before apply hook: \"echo one\"",
                "run before apply hook: \"echo two\""
            ]
        );
        k.assert_nothing_ran();
    }
}
