//! PodDisruptionBudgets: label-selector matching (matchLabels and matchExpressions, as the
//! eviction subresource matches them), the PDBs that currently allow no disruption and cover
//! pods on given nodes ([`blocking_pdbs`], printed before a batch is drained), and parsing the
//! PDB name out of an eviction's 429 Status.

use std::collections::BTreeMap;

use ::kube::api::{Api, ListParams};
use ::kube::core::Status;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::drain::{PodKind, classify_kind};
use super::{Client, KubeError};

/// A PDB that allows no disruption right now and covers pods on the nodes asked about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockingPdb {
    pub namespace: String,
    pub name: String,
    /// The selector in kubectl's notation (`app=web,tier in (a,b)`).
    pub selector: String,
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub disruptions_allowed: i32,
    pub expected_pods: i32,
    /// The covered pods on those nodes, as `(node, pod)` (pod names are in `namespace`).
    pub pods: Vec<(String, String)>,
}

impl std::fmt::Display for BlockingPdb {
    /// `PodDisruptionBudget default/web-pdb (selector app=web): 2 healthy, 2 needed, 0
    /// disruptions allowed; pods: web-1 on worker0, web-2 on worker0`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PodDisruptionBudget {}/{} (selector {}): {} healthy, {} needed, {} disruptions allowed; pods: {}",
            self.namespace,
            self.name,
            if self.selector.is_empty() {
                "<none>"
            } else {
                &self.selector
            },
            self.current_healthy,
            self.desired_healthy,
            self.disruptions_allowed,
            self.pods
                .iter()
                .map(|(n, p)| format!("{p} on {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The PDBs that currently allow 0 disruptions and select pods a drain of `nodes` would evict
/// (DaemonSet, mirror and finished pods are not evicted, so they are not counted).
pub async fn blocking_pdbs(client: &Client, nodes: &[&str]) -> Result<Vec<BlockingPdb>, KubeError> {
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    let all = pdbs
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::api("list PodDisruptionBudgets", e))?;
    let stuck: Vec<_> = all
        .items
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.disruptions_allowed)
                .unwrap_or(0)
                <= 0
        })
        .collect();
    if stuck.is_empty() {
        return Ok(Vec::new());
    }
    let pods_api: Api<Pod> = Api::all(client.clone());
    let mut pods = Vec::new();
    for n in nodes {
        let l = pods_api
            .list(&ListParams::default().fields(&format!("spec.nodeName={n}")))
            .await
            .map_err(|e| KubeError::api(format!("list pods on node {n}"), e))?;
        pods.extend(
            l.items
                .into_iter()
                // A Pending pod is evicted without a budget check (the eviction handler's
                // canIgnorePDB), so no budget blocks it.
                .filter(|p| classify_kind(p) == PodKind::Evictable && !is_pending(p))
                .map(|p| (n.to_string(), p)),
        );
    }
    let mut out = Vec::new();
    for pdb in stuck {
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let sel = pdb.spec.as_ref().and_then(|s| s.selector.clone());
        let covered: Vec<(String, String)> = pods
            .iter()
            .filter(|(_, p)| p.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|(_, p)| {
                sel.as_ref().is_some_and(|s| {
                    selector_matches(s, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
                })
            })
            .map(|(n, p)| (n.clone(), p.metadata.name.clone().unwrap_or_default()))
            .collect();
        if covered.is_empty() {
            continue;
        }
        let st = pdb.status.clone().unwrap_or_default();
        out.push(BlockingPdb {
            namespace: ns,
            name: pdb.metadata.name.clone().unwrap_or_default(),
            selector: sel.as_ref().map(selector_string).unwrap_or_default(),
            current_healthy: st.current_healthy.unwrap_or(0),
            desired_healthy: st.desired_healthy.unwrap_or(0),
            disruptions_allowed: st.disruptions_allowed.unwrap_or(0),
            expected_pods: st.expected_pods.unwrap_or(0),
            pods: covered,
        });
    }
    Ok(out)
}

fn is_pending(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
}

/// Whether a PDB's selector selects a pod with these labels, as policy/v1 defines it and the
/// eviction subresource decides it: an empty selector (`{}`) selects every pod of the
/// budget's namespace (a missing one, nothing: callers pass only present selectors); an
/// unknown operator selects nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel.match_labels.as_ref().filter(|m| !m.is_empty());
    if let Some(ml) = ml
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|r| {
        let have = labels.get(&r.key);
        let values = r.values.as_deref().unwrap_or(&[]);
        match r.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    })
}

/// The names of the PodDisruptionBudgets of the pod's namespace whose selector selects it
/// (several make the eviction API answer 500, without naming them).
pub async fn budgets_covering(client: &Client, pod: &Pod) -> Result<Vec<String>, KubeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::api(format!("list PodDisruptionBudgets in {ns}"), e))?;
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    Ok(list
        .items
        .into_iter()
        .filter(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|s| selector_matches(s, labels))
        })
        .filter_map(|b| b.metadata.name)
        .collect())
}

/// kubectl's notation of a selector: `a=b,c in (d,e),f notin (g),h,!i`.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for r in sel.match_expressions.iter().flatten() {
        let mut vals = r.values.clone().unwrap_or_default();
        vals.sort();
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({})", r.key, vals.join(",")),
            "NotIn" => format!("{} notin ({})", r.key, vals.join(",")),
            "Exists" => r.key.clone(),
            "DoesNotExist" => format!("!{}", r.key),
            op => format!("{} {op} ({})", r.key, vals.join(",")),
        });
    }
    parts.join(",")
}

/// What a refused eviction says: the PDB named in the `DisruptionBudget` cause (`The
/// disruption budget web-pdb needs 2 healthy pods and has 2 currently`, or the newer `… does
/// not allow evicting pods currently …` / `… is still being processed by the server.`) and the
/// most specific message available.
pub fn parse_refusal(st: &Status) -> (Option<String>, String) {
    let causes = st
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or(&[]);
    let cause = causes
        .iter()
        .find(|c| c.reason == "DisruptionBudget")
        .or_else(|| {
            causes
                .iter()
                .find(|c| c.message.contains("disruption budget"))
        });
    match cause {
        Some(c) => (pdb_name_in(&c.message), c.message.clone()),
        None => (pdb_name_in(&st.message), st.message.clone()),
    }
}

fn pdb_name_in(msg: &str) -> Option<String> {
    let rest = msg.split_once("disruption budget ")?.1;
    let name = rest.split_whitespace().next()?;
    let name = name.trim_end_matches(['.', ',', ':']);
    // "Cannot evict pod as it would violate the pod's disruption budget." has no name.
    (!name.is_empty() && !rest.starts_with('.')).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }
    fn labels(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let s = sel(json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["x"]},
            {"key": "team", "operator": "Exists"}
        ]}));
        let ok = labels(&[("app", "web"), ("tier", "a"), ("team", "t"), ("zone", "y")]);
        assert!(selector_matches(&s, &ok));
        let mut l = ok.clone();
        l.insert("canary".into(), "1".into());
        assert!(!selector_matches(&s, &l));
        let mut l = ok.clone();
        l.insert("zone".into(), "x".into());
        assert!(!selector_matches(&s, &l));
        let mut l = ok.clone();
        l.remove("zone");
        assert!(selector_matches(&s, &l), "NotIn matches a missing key");
        let mut l = ok.clone();
        l.remove("team");
        assert!(!selector_matches(&s, &l));
        let mut l = ok.clone();
        l.insert("tier".into(), "c".into());
        assert!(!selector_matches(&s, &l));
        assert!(!selector_matches(&s, &labels(&[("app", "db")])));
        assert_eq!(
            selector_string(&s),
            "app=web,tier in (a,b),!canary,zone notin (x),team"
        );
        // policy/v1: an empty selector selects every pod of the namespace.
        assert!(selector_matches(&sel(json!({})), &ok));
        assert!(selector_matches(&sel(json!({"matchLabels": {}})), &ok));
        assert!(selector_matches(&sel(json!({})), &labels(&[])));
        let bad = sel(json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}));
        assert!(!selector_matches(&bad, &ok));
    }

    #[test]
    fn refusal_names_the_pdb() {
        let st: Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests",
            "details": {"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]},
            "code": 429
        }))
        .unwrap();
        assert_eq!(
            parse_refusal(&st),
            (
                Some("web-pdb".into()),
                "The disruption budget web-pdb needs 2 healthy pods and has 2 currently".into()
            )
        );
        for (m, want) in [
            (
                "The disruption budget db does not allow evicting pods currently because it failed sync: x",
                Some("db"),
            ),
            (
                "The disruption budget q.pdb is still being processed by the server.",
                Some("q.pdb"),
            ),
            ("The disruption budget z.", Some("z")),
        ] {
            let st: Status = serde_json::from_value(json!({"code": 429, "message": "m",
                "details": {"causes": [{"reason": "DisruptionBudget", "message": m}]}}))
            .unwrap();
            assert_eq!(parse_refusal(&st).0.as_deref(), want, "{m}");
        }
        // No cause: the top-level message, no name.
        let st: Status = serde_json::from_value(json!({"code": 429,
            "message": "Cannot evict pod as it would violate the pod's disruption budget."}))
        .unwrap();
        assert_eq!(parse_refusal(&st).0, None);
    }
}
