//! The leader's Kubernetes client (the API reached through the leader's own host
//! connection).

use super::State;
use crate::phases::{Context, Failure};

/// A Kubernetes client for the cluster, reaching the leader's API server through the leader's
/// own host connection ([`crate::kube::client`]), authenticated with the leader's admin
/// kubeconfig (read over SSH; never logged or written locally).
pub async fn leader_client(state: &State) -> Result<crate::kube::Client, Failure> {
    let l = state
        .leader
        .ok_or("no leader (internal error: phase order)")?;
    let leader = &state.hosts[l];
    let p = leader.probed()?;
    let admin = p
        .remote
        .read_file(&format!("{}/pki/admin.conf", leader.data_dir()), true)
        .await
        .context("reading the admin kubeconfig")?;
    let secret = crate::transport::Secret::new(String::from_utf8_lossy(&admin).into_owned());
    let port = state
        .config
        .cluster
        .spec
        .k0s
        .config
        .get("spec")
        .and_then(|s| s.get("api"))
        .and_then(|a| a.get("port"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(6443) as u16;
    // Where k0s says its API listens (`onlyBindToAddress` moves it off 127.0.0.1).
    let endpoint = crate::kube::ApiEndpoint::from_kubeconfig(&secret, port)?;
    let (client, _) = crate::kube::client(&p.remote, &secret, &endpoint).await?;
    Ok(client)
}
