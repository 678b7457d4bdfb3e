//! Undoing an install this run started but did not finish (the clean-up of the install
//! phases, and of a half-installed host found by "Gather k0s facts"): reconnect once if the
//! connection was lost, stop the service, `k0s reset`, remove the join token file and the
//! marker.

use crate::phases::Failure;
use crate::transport::{Cmd, shell_quote};

use super::State;
use super::markers::incomplete_marker;

/// The `k0s reset` of the clean-up: the same flags as every other reset (`--data-dir`, and
/// `--kubelet-root-dir` when the host has one, or a custom kubelet root dir is left behind).
fn cleanup_reset_command(h: &super::HostState, k0s: &str) -> String {
    crate::k0s::install::reset_command(&h.config, k0s, &h.data_dir())
}

/// How long a clean-up waits to reconnect to a host whose connection was lost.
const RECONNECT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reconnects once (bounded by [`RECONNECT`]) to host `i` when its connection is closed, keeping
/// the privilege method already detected. Clean-ups call it so that a host that dropped out
/// mid-phase can still be put back in order.
pub async fn reconnect_if_lost(state: &mut State, i: usize) -> Result<(), Failure> {
    let h = &state.hosts[i];
    let (Some(p), Some(spec)) = (h.host.as_ref(), h.spec.clone()) else {
        return Err("the host was never connected".into());
    };
    if !p.remote.connection().is_closed() {
        return Ok(());
    }
    tracing::info!(about = %h.name, "connection lost; reconnecting once to clean up");
    let privilege = p.remote.privilege().clone();
    let mut fresh = tokio::time::timeout(RECONNECT, state.pool.reconnect(&spec))
        .await
        .map_err(|_| format!("reconnecting timed out after {RECONNECT:?}"))??;
    fresh.set_privilege(privilege);
    let h = &mut state.hosts[i];
    if let Some(p) = h.host.as_mut() {
        p.remote = fresh.clone();
    }
    h.remote = Some(fresh);
    tracing::info!(about = %h.name, "reconnected");
    Ok(())
}

/// Clean-up of the hosts `idx` whose install this run started but did not finish: reset
/// each (see [`reset_installed`]); a host whose connection was lost is reconnected once
/// first, and once more if it is lost during the reset. A host that cannot be reached is
/// named with what stays on it; its install is marked unfinished on the host, so the next
/// apply resets and reinstalls it without `--force`.
pub async fn reset_unfinished(state: &mut State, idx: &[usize]) {
    for &i in idx {
        let mut result: Result<(), Failure> = Ok(());
        for attempt in 0..2 {
            if let Err(e) = reconnect_if_lost(state, i).await {
                result = Err(e);
                break;
            }
            result = reset_installed(&state.hosts[i]).await;
            match &result {
                Err(e) if attempt == 0 && e.kind() == crate::phases::failure::Kind::Lost => {
                    // Let the transport notice the dead connection, then reconnect once.
                    continue;
                }
                _ => break,
            }
        }
        if let Err(e) = result {
            let h = &state.hosts[i];
            tracing::warn!(
                about = %h.name,
                "could not undo the unfinished k0s install ({e}); left on the host: the {} service (installed, maybe not running), the join token file {} and the marker {}; the next apply resets and reinstalls it",
                h.service_name(),
                h.token_path(),
                incomplete_marker(h)
            );
        }
    }
}

/// Best-effort undo of a fresh install: stop the service, `k0s reset`, and remove the join
/// token file and the unfinished-install marker. Fails only when the host cannot be reached
/// (so that the caller may reconnect and retry); other failures are logged.
pub async fn reset_installed(h: &super::HostState) -> Result<(), Failure> {
    let p = h.probed()?;
    tracing::warn!(
        about = %h.name,
        "resetting the k0s install this run did not finish"
    );
    let svc = h.service_name();
    // Where the init system is unknown, look for a systemd unit (the most common).
    let init = p.init_system().unwrap_or(crate::host::InitSystem::Systemd);
    let lost = |e: &crate::transport::TransportError| {
        matches!(e, crate::transport::TransportError::Disconnected { .. })
    };
    let cmd = cleanup_reset_command(h, &p.k0s_binary_path);
    // A run stopped by --timeout or Ctrl-C may have left its `k0s install` running on the
    // host (over a transport that cannot tie it to the session), and that could write the
    // service after our reset: look again, a few times, until the service is gone.
    if let Err(e) = p
        .remote
        .exec(
            Cmd::new(
                "i=0; while [ $i -lt 50 ] && pgrep -f 'k0s install (controller|worker)' >/dev/null 2>&1; do sleep 0.2; i=$((i+1)); done",
            )
            .sudo(),
        )
        .await
        && lost(&e)
    {
        return Err(e.into());
    }
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        if let Ok(init) = p.init_system() {
            let _ = init.stop(&p.remote, svc).await;
        }
        match p.remote.run(Cmd::new(cmd.clone()).sudo()).await {
            Err(e) if lost(&e) => return Err(e.into()),
            Err(e) => tracing::warn!(about = %h.name, "k0s reset failed: {e}"),
            Ok(_) => {}
        }
        let left = match init.is_installed(&p.remote, svc).await {
            Ok(installed) => installed,
            Err(e) if lost(&e) => return Err(e.into()),
            Err(_) => false,
        };
        if !left {
            // The join token of the interrupted join must not stay on the host.
            let rm = format!(
                "rm -f {} {}",
                shell_quote(&h.token_path()),
                shell_quote(&incomplete_marker(h))
            );
            if let Err(e) = p.remote.run(Cmd::new(rm).sudo()).await {
                if lost(&e) {
                    return Err(e.into());
                }
                tracing::warn!(about = %h.name, "removing the join token file: {e}");
            }
            return Ok(());
        }
    }
    tracing::warn!(
        about = %h.name,
        "the {svc} service is still installed after k0s reset; the next apply resets it again"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::state_of;

    #[test]
    fn cleanup_reset_keeps_the_kubelet_root_dir() {
        let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller+worker\n    kubeletRootDir: /srv/kubelet\n    dataDir: /srv/k0s\n    ssh:\n      address: 10.0.0.1\n";
        let state = state_of(text, Default::default());
        assert_eq!(
            cleanup_reset_command(&state.hosts[0], "/usr/local/bin/k0s"),
            "/usr/local/bin/k0s reset --data-dir=/srv/k0s --kubelet-root-dir=/srv/kubelet"
        );
    }
}
