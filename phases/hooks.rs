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
                            "{}: running {} {} hook: {cmd:?}",
                            h.name,
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
