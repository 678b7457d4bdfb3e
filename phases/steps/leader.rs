//! The leader's Kubernetes client (the API reached through the leader's own host
//! connection).

use super::{HostState, State};
use crate::phases::{Context, Failure};

/// A Kubernetes client for the cluster, reaching the leader's API server through the leader's
/// own host connection ([`host_client`]); `spec.api.port` of the k0s config (default 6443)
/// serves an admin kubeconfig whose URL has no port.
pub async fn leader_client(state: &State) -> Result<crate::kube::Client, Failure> {
    let l = state
        .leader
        .ok_or("no leader (internal error: phase order)")?;
    let port = state
        .k0s_spec(&["api", "port"])
        .and_then(serde_json::Value::as_u64)
        .map_or(DEFAULT_API_PORT, |p| p as u16);
    host_client(&state.hosts[l], port).await
}

/// [`leader_client`] when `needed`, else `None`; a client that cannot be had fails `phase`
/// ("connecting to the cluster API: …") before the phase changes anything.
pub async fn leader_client_if(
    state: &State,
    needed: bool,
    phase: &'static str,
) -> Result<Option<crate::kube::Client>, crate::phases::PhaseError> {
    if !needed {
        return Ok(None);
    }
    leader_client(state).await.map(Some).map_err(|e| {
        crate::phases::PhaseError::new(
            crate::exit::Code::PhaseFailed,
            phase,
            format!("connecting to the cluster API: {e}"),
        )
    })
}

/// k0s's default API port (`spec.api.port`).
pub const DEFAULT_API_PORT: u16 = 6443;

/// A Kubernetes client for the cluster through `h`'s own host connection
/// ([`crate::kube::client`]: a tunnel to the API server's local address), authenticated with
/// `h`'s admin kubeconfig (read over SSH; never logged or written locally). k0s writes the
/// API address with its port into `pki/admin.conf`; `api_port` only serves a URL without one.
pub async fn host_client(h: &HostState, api_port: u16) -> Result<crate::kube::Client, Failure> {
    let p = h.probed()?;
    let admin = p
        .remote
        .read_file(&format!("{}/pki/admin.conf", h.data_dir()), true)
        .await
        .context("reading the admin kubeconfig")?;
    let secret = crate::transport::Secret::new(String::from_utf8_lossy(&admin).into_owned());
    // Where k0s says its API listens (`onlyBindToAddress` moves it off 127.0.0.1).
    let endpoint = crate::kube::ApiEndpoint::from_kubeconfig(&secret, api_port)?;
    let (client, _) = crate::kube::client(&p.remote, &secret, &endpoint).await?;
    Ok(client)
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::Kit;

    /// The admin kubeconfig is read from the leader's data dir; without a leader, or when it
    /// cannot be read, the error says which.
    #[tokio::test]
    async fn the_client_needs_the_leaders_admin_kubeconfig() {
        let mut k = Kit::new(&["controller", "worker"]);
        let e = leader_client(&k.state).await.err().unwrap().to_string();
        assert!(e.contains("no leader"), "{e}");
        k.leader(0);
        let e = leader_client(&k.state).await.err().unwrap().to_string();
        assert!(e.contains("reading the admin kubeconfig"), "{e}");
        assert!(
            e.contains("/var/lib/k0s/pki/admin.conf: No such file"),
            "{e}"
        );
        assert_eq!(
            k.script(0).commands(),
            ["cat -- /var/lib/k0s/pki/admin.conf"]
        );
        assert!(k.script(1).commands().is_empty());
    }
}
