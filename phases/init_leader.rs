//! "Initialize the k0s cluster": install and start k0s on the leader when no controller runs
//! it yet, and wait for the API to be ready. Clean-up resets a leader installed by this run.

use crate::exit::Code;
use crate::transport::{Cmd, shell_quote};

use super::hooks::run_host_hooks;
use super::k0s_ops::{install_and_start, plan_install, wait_api_ready, wait_config_reconciled};
use super::{Phase, PhaseError, PhaseFuture, State};

pub struct InitLeader;

pub const TITLE: &str = "Initialize the k0s cluster";

impl Phase for InitLeader {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.leader.is_some_and(|l| !state.hosts[l].is_running())
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state.leader.expect("should_run checked the leader");
            let force = state.opts.force;
            state.unfinished.push(l);
            let leader = &state.hosts[l];
            let fail = |e: String| {
                PhaseError::hosts(Code::PhaseFailed, TITLE, vec![(leader.name.clone(), e)])
            };
            install_and_start(leader, true, force, None)
                .await
                .map_err(fail)?;
            wait_api_ready(leader).await.map_err(fail)?;
            tracing::info!("{}: the kubernetes API is ready", leader.name);
            if leader.dynamic_config {
                wait_config_reconciled(leader).await.map_err(fail)?;
                tracing::info!("{}: k0s reconciled the dynamic cluster config", leader.name);
            }
            run_host_hooks(leader, "install", "after")
                .await
                .map_err(fail)?;
            state.unfinished.retain(|&i| i != l);
            let name = state.hosts[l].name.clone();
            state.changed(
                name,
                "installed and started k0s controller (initialised the cluster)",
            );
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state.leader.expect("should_run checked the leader");
            plan_install(
                state,
                vec![l],
                "controller (the cluster's first)",
                "k0scontroller",
            );
            Ok(())
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let Some(l) = state.leader.filter(|l| state.unfinished.contains(l)) else {
                return Ok(());
            };
            reset_installed(&state.hosts[l]).await;
            Ok(())
        })
    }
}

/// The `k0s reset` of the clean-up: the same flags as every other reset (`--data-dir`, and
/// `--kubelet-root-dir` when the host has one, or a custom kubelet root dir is left behind).
fn cleanup_reset_command(h: &super::HostState, k0s: &str) -> String {
    crate::k0s::install::reset_command(&h.config, k0s, &h.data_dir())
}

/// Best-effort undo of a fresh install: stop the service and `k0s reset`.
pub async fn reset_installed(h: &super::HostState) {
    let Ok(p) = h.probed() else { return };
    tracing::warn!("{}: resetting k0s installed by this run", h.name);
    let svc = h.service_name();
    let unit = match p.init_system() {
        Ok(crate::host::InitSystem::OpenRc) => format!("/etc/init.d/{svc}"),
        _ => format!("/etc/systemd/system/{svc}.service"),
    };
    let cmd = cleanup_reset_command(h, &p.k0s_binary_path);
    // A run stopped by --timeout or Ctrl-C may have left its `k0s install` running on the
    // host (dropping the SSH request does not stop it), and that could write the service
    // after our reset: look again, a few times, until the service is gone.
    let _ = p
        .remote
        .exec(
            Cmd::new(
                "i=0; while [ $i -lt 50 ] && pgrep -f 'k0s install (controller|worker)' >/dev/null 2>&1; do sleep 0.2; i=$((i+1)); done",
            )
            .sudo(),
        )
        .await;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        if let Ok(init) = p.init_system() {
            let _ = init.stop(&p.remote, svc).await;
        }
        if let Err(e) = p.remote.run(Cmd::new(cmd.clone()).sudo()).await {
            tracing::warn!("{}: k0s reset failed: {e}", h.name);
        }
        let left = p
            .remote
            .exec(Cmd::new(format!("[ -e {} ]", shell_quote(&unit))).sudo())
            .await
            .map(|o| o.success())
            .unwrap_or(false);
        if !left {
            return;
        }
    }
    tracing::warn!(
        "{}: the {svc} service is still installed after k0s reset; the next apply needs --force (or k0sctl reset)",
        h.name
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_reset_keeps_the_kubelet_root_dir() {
        let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller+worker\n    kubeletRootDir: /srv/kubelet\n    dataDir: /srv/k0s\n    ssh:\n      address: 10.0.0.1\n";
        let cfg = crate::config::load_str(text, "t.yaml", &|_| None).unwrap();
        let state = State::new(
            cfg,
            Default::default(),
            crate::transport::ssh::SshConfig::parse(""),
        );
        assert_eq!(
            cleanup_reset_command(&state.hosts[0], "/usr/local/bin/k0s"),
            "/usr/local/bin/k0s reset --data-dir=/srv/k0s --kubelet-root-dir=/srv/kubelet"
        );
    }
}
