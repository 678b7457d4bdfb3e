//! Node operations for upgrades: cordon/uncordon, the evict taint (`key=value:Effect`, added
//! and waited for until the API shows it, removed again), waiting for Ready, and versions.
//!
//! All are idempotent: cordoning a cordoned node, adding a taint that is there or removing one
//! that is not succeed without change and report whether anything changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ::kube::api::{Api, ListParams, Patch, PatchParams};
use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::json;

use super::{Client, KubeError};
use crate::config::model::{EvictTaintOption, TAINT_EFFECTS};

/// Marks the node unschedulable. Returns `false` when it already was (kubectl's
/// "already cordoned").
pub async fn cordon(client: &Client, node: &str) -> Result<bool, KubeError> {
    set_unschedulable(client, node, true).await
}

/// Marks the node schedulable again. Returns `false` when it already was.
pub async fn uncordon(client: &Client, node: &str) -> Result<bool, KubeError> {
    set_unschedulable(client, node, false).await
}

async fn set_unschedulable(client: &Client, node: &str, on: bool) -> Result<bool, KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let what = if on { "cordon" } else { "uncordon" };
    let n = nodes
        .get(node)
        .await
        .map_err(|e| KubeError::api(format!("{what} node {node}"), e))?;
    let current = n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if current == on {
        return Ok(false);
    }
    let r = if on {
        nodes.cordon(node).await
    } else {
        nodes.uncordon(node).await
    };
    r.map_err(|e| KubeError::api(format!("{what} node {node}"), e))?;
    tracing::debug!(node, "node {what}ed");
    Ok(true)
}

/// A taint as k0sctl's `spec.options.evictTaint` describes it: `key[=value]` and an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictTaint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl EvictTaint {
    /// `taint` is `key=value` or `key`; `effect` one of NoExecute, NoSchedule,
    /// PreferNoSchedule.
    pub fn parse(taint: &str, effect: &str) -> Result<Self, KubeError> {
        let (key, value) = match taint.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
            None => (taint.trim(), None),
        };
        if key.is_empty() {
            return Err(KubeError::Invalid(format!(
                "evict taint {taint:?}: the key is empty (expected key=value)"
            )));
        }
        if !TAINT_EFFECTS.contains(&effect) {
            return Err(KubeError::Invalid(format!(
                "evict taint effect {effect:?}: expected one of {}",
                TAINT_EFFECTS.join(", ")
            )));
        }
        Ok(EvictTaint {
            key: key.to_string(),
            value: value.filter(|v| !v.is_empty()),
            effect: effect.to_string(),
        })
    }

    fn to_taint(&self) -> Taint {
        Taint {
            key: self.key.clone(),
            value: self.value.clone(),
            effect: self.effect.clone(),
            time_added: None,
        }
    }

    /// Same key and effect (how kubectl matches a taint to overwrite or remove).
    fn same_slot(&self, t: &Taint) -> bool {
        t.key == self.key && t.effect == self.effect
    }
}

impl TryFrom<&EvictTaintOption> for EvictTaint {
    type Error = KubeError;
    fn try_from(o: &EvictTaintOption) -> Result<Self, KubeError> {
        EvictTaint::parse(&o.taint, &o.effect)
    }
}

impl std::fmt::Display for EvictTaint {
    /// `key=value:Effect` (kubectl's notation).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect),
            None => write!(f, "{}:{}", self.key, self.effect),
        }
    }
}

/// Adds (or overwrites, as `kubectl taint --overwrite`) the taint, then waits up to `timeout`
/// until a fresh read of the node shows it. Returns `false` when it was already there.
pub async fn add_taint(
    client: &Client,
    node: &str,
    taint: &EvictTaint,
    timeout: Duration,
) -> Result<bool, KubeError> {
    let what = format!("taint node {node} with {taint}");
    let changed = edit_taints(client, node, &what, |ts| {
        let want = taint.to_taint();
        if ts
            .iter()
            .any(|t| taint.same_slot(t) && t.value == want.value)
        {
            return false;
        }
        ts.retain(|t| !taint.same_slot(t));
        ts.push(want);
        true
    })
    .await?;
    wait_for(
        timeout,
        &format!("taint {taint} to show on node {node}"),
        || async {
            Ok(taints(client, node)
                .await?
                .iter()
                .any(|t| taint.same_slot(t) && t.value == taint.value))
        },
    )
    .await?;
    Ok(changed)
}

/// Removes the taint (key and effect, any value). Returns `false` when it was not there.
pub async fn remove_taint(
    client: &Client,
    node: &str,
    taint: &EvictTaint,
) -> Result<bool, KubeError> {
    let what = format!("remove taint {taint} from node {node}");
    edit_taints(client, node, &what, |ts| {
        let before = ts.len();
        ts.retain(|t| !taint.same_slot(t));
        ts.len() != before
    })
    .await
}

/// The node's taints as `key=value:Effect` strings (kubectl's jsonpath form).
pub async fn taint_strings(client: &Client, node: &str) -> Result<Vec<String>, KubeError> {
    Ok(taints(client, node)
        .await?
        .iter()
        .map(|t| {
            format!(
                "{}={}:{}",
                t.key,
                t.value.as_deref().unwrap_or(""),
                t.effect
            )
        })
        .collect())
}

async fn taints(client: &Client, node: &str) -> Result<Vec<Taint>, KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .get(node)
        .await
        .map_err(|e| KubeError::api(format!("read node {node}"), e))?;
    Ok(n.spec.and_then(|s| s.taints).unwrap_or_default())
}

/// Read-modify-write of `spec.taints` with the node's resourceVersion as precondition;
/// retried on conflicts.
async fn edit_taints(
    client: &Client,
    node: &str,
    what: &str,
    edit: impl Fn(&mut Vec<Taint>) -> bool,
) -> Result<bool, KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        let n = nodes
            .get(node)
            .await
            .map_err(|e| KubeError::api(what.to_string(), e))?;
        let mut ts = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if !edit(&mut ts) {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": n.metadata.resource_version},
            "spec": {"taints": ts},
        });
        match nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(::kube::Error::Api(s)) if s.is_conflict() && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(KubeError::api(what.to_string(), e)),
        }
    }
}

/// The node's Ready condition: `Some((true, ..))` when Ready is True; the reason and message
/// otherwise; `None` when the node has no Ready condition yet.
pub fn node_ready(n: &Node) -> Option<(bool, String)> {
    let c = n
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    let why = [c.reason.as_deref(), c.message.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    Some((c.status == "True", why))
}

/// The node's state as a readiness wait sees it: `Ok(())` when its Ready condition is True and
/// (with `kubelet`) it reports that kubelet version, compared before the `+` (`v1.36.3` for
/// `v1.36.3+k0s`); otherwise what is missing, for the wait's last-seen message.
pub fn node_ready_with(n: &Node, kubelet: Option<&str>) -> Result<(), String> {
    match node_ready(n) {
        Some((true, _)) => {}
        Some((false, why)) => return Err(format!("not Ready ({why})")),
        None => return Err("no Ready condition yet".into()),
    }
    let Some(want) = kubelet else { return Ok(()) };
    let want = want.split('+').next().unwrap_or(want);
    let has = n
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.as_str())
        .unwrap_or("");
    if has.split('+').next() == Some(want) {
        Ok(())
    } else {
        Err(format!("Ready, but the node still reports kubelet {has}"))
    }
}

/// How long one read of the node may take before the wait counts it as an error and reads
/// again (a tunnel through a dead connection must not hang the wait past its timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits until the node exists, its Ready condition is True and, with `kubelet` (the
/// Kubernetes version a k0s release embeds, `v1.36.3+k0s`), it reports that kubelet
/// version: right after a restart the Node object still says Ready from before, and only a
/// kubelet that came back reports the new version. Polled every second; API errors (a
/// controller restarting) are retried until `timeout`.
pub async fn wait_node_ready(
    client: &Client,
    node: &str,
    kubelet: Option<&str>,
    timeout: Duration,
) -> Result<(), KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let last = match tokio::time::timeout(READ_TIMEOUT, nodes.get_opt(node)).await {
            Ok(Ok(Some(n))) => match node_ready_with(&n, kubelet) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            },
            Ok(Ok(None)) => "node not registered yet".into(),
            // The API may be briefly unavailable while a controller restarts: keep waiting.
            Ok(Err(e)) => format!("API error: {}", KubeError::api("read node", e)),
            Err(_) => format!("reading the node took over {READ_TIMEOUT:?}"),
        };
        if start.elapsed() >= timeout {
            let what = match kubelet {
                Some(v) => format!("wait for node {node} to be Ready with kubelet {v}"),
                None => format!("wait for node {node} to be Ready"),
            };
            return Err(KubeError::Timeout {
                what: format!("{what} (last seen: {last})"),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The kubelet version the node reports (`v1.31.2+k0s`), if any.
pub async fn node_version(client: &Client, node: &str) -> Result<Option<String>, KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .get(node)
        .await
        .map_err(|e| KubeError::api(format!("read node {node}"), e))?;
    Ok(n.status
        .and_then(|s| s.node_info)
        .map(|i| i.kubelet_version))
}

/// All nodes by name.
pub async fn list_nodes(client: &Client) -> Result<BTreeMap<String, Node>, KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let l = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::api("list nodes", e))?;
    Ok(l.items
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n)))
        .collect())
}

/// Polls `check` every 250 ms until it returns true or `timeout` passes.
async fn wait_for<F, Fut>(timeout: Duration, what: &str, check: F) -> Result<(), KubeError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, KubeError>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(KubeError::Timeout {
                what: format!("wait for {what}"),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k0sctl_taints() {
        let t = EvictTaint::try_from(&EvictTaintOption::default()).unwrap();
        assert_eq!(t.key, "k0sctl.k0sproject.io/evict");
        assert_eq!(t.value.as_deref(), Some("true"));
        assert_eq!(t.to_string(), "k0sctl.k0sproject.io/evict=true:NoExecute");
        let t = EvictTaint::parse("dedicated", "NoSchedule").unwrap();
        assert_eq!(t.to_string(), "dedicated:NoSchedule");
        assert!(EvictTaint::parse("=x", "NoSchedule").is_err());
        assert!(EvictTaint::parse("a=b", "Sometimes").is_err());
    }

    #[test]
    fn ready_condition() {
        let n: Node = serde_json::from_value(json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "cni"}
        ]}}))
        .unwrap();
        assert_eq!(node_ready(&n), Some((false, "KubeletNotReady: cni".into())));
        assert_eq!(node_ready(&Node::default()), None);
    }

    #[test]
    fn ready_with_kubelet_version() {
        let n: Node = serde_json::from_value(json!({"status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"kubeletVersion": "v1.35.1+k0s"}
        }}))
        .unwrap();
        assert_eq!(node_ready_with(&n, None), Ok(()));
        assert_eq!(node_ready_with(&n, Some("v1.35.1+k0s")), Ok(()));
        // Still Ready from before the restart: the old kubelet is not the awaited one.
        assert_eq!(
            node_ready_with(&n, Some("v1.36.3+k0s")),
            Err("Ready, but the node still reports kubelet v1.35.1+k0s".into())
        );
        assert_eq!(
            node_ready_with(&Node::default(), None),
            Err("no Ready condition yet".into())
        );
    }
}
