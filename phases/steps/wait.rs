//! Waiting: the shared timeout, a poll-until loop, the API server's readiness, the dynamic
//! config's reconciliation, a node's readiness, and noticing a host's connection is gone.

use crate::phases::Failure;
use std::time::{Duration, Instant};

use crate::transport::Cmd;

use super::HostState;
use super::kubectl::kubectl;
use super::probed;

/// How long k0sctl waits for services, readiness and nodes.
pub const WAIT: Duration = Duration::from_secs(120);

/// Resolves (with a "connection lost" failure) once the host's connection is closed; never
/// while it is open. Raced against waits that run elsewhere (on the leader) so a host that
/// dropped out is reported at once.
pub async fn connection_lost(h: &HostState) -> Failure {
    let Ok(p) = probed(h) else {
        return std::future::pending().await;
    };
    loop {
        if p.remote.connection().is_closed() {
            return crate::transport::TransportError::Disconnected {
                host: p.remote.name().to_string(),
                reason: "the SSH connection was closed while waiting for the node to become Ready"
                    .into(),
            }
            .into();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Polls `check` every second until it returns Ok(true) or `WAIT` passes; the last error (or
/// `what`) explains a timeout (and keeps its cause: a connection lost while waiting stays
/// one).
pub async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Failure>>,
{
    let deadline = Instant::now() + WAIT;
    let mut last: Option<Failure> = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            let timed_out = format!("timed out after {WAIT:?} waiting for {what}");
            return Err(match last {
                None => Failure::other(timed_out),
                Some(e) => e.context(timed_out),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until the controller's API server answers `/readyz` with `ok`.
pub async fn wait_api_ready(h: &HostState) -> Result<(), Failure> {
    let p = probed(h)?;
    let cmd = kubectl(h, "get --raw=/readyz")?;
    wait_until("the kubernetes API to become ready", || async {
        let out = p.remote.exec(Cmd::new(cmd.clone()).sudo()).await?;
        Ok(out.success() && out.stdout_str().trim() == "ok")
    })
    .await
}

/// Waits until k0s reports that it reconciled the cluster config (dynamic config mode): an
/// event with reason `SuccessfulReconcile` about the `kube-system/k0s` ClusterConfig.
pub async fn wait_config_reconciled(h: &HostState) -> Result<(), Failure> {
    let p = probed(h)?;
    let cmd = kubectl(
        h,
        "-n kube-system get event --field-selector involvedObject.name=k0s -o json",
    )?;
    wait_until("k0s to reconcile the dynamic cluster config", || async {
        let out = p.remote.exec(Cmd::new(cmd.clone()).sudo()).await?;
        if !out.success() {
            return Err(out.stderr_str().trim().into());
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout_str())?;
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "SuccessfulReconcile"))
    })
    .await
}

/// Waits until the node `name` reports Ready, asking the leader's API server with the same
/// Kubernetes client that drains and cordons ([`crate::kube::wait_node_ready`], through the
/// leader's connection). With `version`, the node must also report the Kubernetes version that
/// k0s release embeds (`status.nodeInfo.kubeletVersion`, `v1.36.3+k0s` for k0s
/// `v1.36.3-rc.0+k0s.0`): right after a restart the Node object still says Ready from before
/// it, and only a kubelet that came back reports the new version.
pub async fn wait_node_ready(
    leader: &HostState,
    name: &str,
    version: Option<&crate::k0s::version::K0sVersion>,
) -> Result<(), Failure> {
    let client = super::leader::host_client(leader, super::leader::DEFAULT_API_PORT).await?;
    let kubelet = version.map(|v| v.kubelet_version());
    crate::kube::wait_node_ready(&client, name, kubelet.as_deref(), WAIT).await?;
    Ok(())
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::Kit;

    /// Readiness is asked of the leader's API server with the Kubernetes client, so the wait
    /// starts by reading the leader's admin kubeconfig (and names it when it cannot), and
    /// nothing runs on the node itself.
    #[tokio::test]
    async fn node_ready_asks_the_leaders_api() {
        let k = Kit::new(&["controller", "worker"]);
        let v = crate::k0s::version::K0sVersion::parse("v1.31.1+k0s.0").unwrap();
        let e = wait_node_ready(&k.state.hosts[0], "node-2", Some(&v))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("reading the admin kubeconfig"), "{e}");
        assert!(e.contains("/var/lib/k0s/pki/admin.conf"), "{e}");
        assert!(k.script(1).commands().is_empty());
    }

    #[tokio::test]
    async fn api_ready_is_one_readyz_when_it_answers_ok() {
        let k = Kit::new(&["controller"]);
        k.script(0).on("get --raw=/readyz", "ok\n");
        wait_api_ready(&k.state.hosts[0]).await.unwrap();
        assert_eq!(
            k.script(0).commands(),
            [
                "env KUBECONFIG=/var/lib/k0s/pki/admin.conf /usr/local/bin/k0s kubectl --cache-dir=/var/lib/k0s/kubectl-cache get --raw=/readyz"
            ]
        );
    }
}
