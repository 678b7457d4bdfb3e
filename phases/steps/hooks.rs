//! One host's user hooks (`hooks: {<action>: {<stage>: [commands]}}`): which commands, running
//! them in order as the connection user, and a dry run's plan of them.

use crate::phases::{Context, Failure};
use crate::transport::Cmd;

use super::State;

/// The `<action>.<stage>` hook commands of one host.
pub fn host_hooks<'s>(h: &'s crate::config::Host, action: &str, stage: &str) -> &'s [String] {
    h.hooks
        .get(action)
        .and_then(|s| s.get(stage))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Runs one host's `<action>.<stage>` hooks in order (as the connection user, like the hook
/// phases); the first failure names the hook and carries the remote stderr.
pub async fn run_host_hooks(
    h: &super::HostState,
    action: &str,
    stage: &str,
) -> Result<(), Failure> {
    let cmds = host_hooks(&h.config, action, stage);
    if cmds.is_empty() {
        return Ok(());
    }
    let p = h.probed()?;
    for cmd in cmds {
        tracing::info!("{}: running {stage} {action} hook: {cmd:?}", h.name);
        p.remote
            .run(Cmd::new(cmd.as_str()))
            .await
            .with_context(|| {
                format!("failed to execute hook {cmd:?} for action {action:?} stage {stage:?}")
            })?;
    }
    Ok(())
}

/// Records a dry run's intent to run one host's `<action>.<stage>` hooks.
pub fn plan_host_hooks(state: &mut State, i: usize, action: &str, stage: &str) {
    let h = &state.hosts[i];
    let lines: Vec<String> = host_hooks(&h.config, action, stage)
        .iter()
        .map(|c| format!("run {stage} {action} hook: {c:?}"))
        .collect();
    let name = h.name.clone();
    for l in lines {
        state.planned(name.clone(), l);
    }
}
