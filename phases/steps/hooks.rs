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
        tracing::info!(about = %h.name, "running {stage} {action} hook: {cmd:?}");
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

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::{Kit, manifest_with};

    #[tokio::test]
    async fn host_hooks_run_in_order_and_stop_at_the_first_failure() {
        let y = manifest_with(
            &[(
                "controller",
                "    hooks:\n      install:\n        before:\n        - \"true\"\n        - exit 3\n        - echo never\n",
            )],
            "",
        );
        let k = Kit::from_yaml(&y, Default::default());
        k.script(0).on("true", "").fail("exit 3", 3, "nope");
        let e = run_host_hooks(&k.state.hosts[0], "install", "before")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("failed to execute hook \"exit 3\"") && e.contains("nope"),
            "{e}"
        );
        assert_eq!(k.script(0).commands(), ["true", "exit 3"]);
        run_host_hooks(&k.state.hosts[0], "install", "after")
            .await
            .unwrap();
        assert_eq!(
            k.script(0).commands().len(),
            2,
            "no after hooks: nothing runs"
        );
    }
}
