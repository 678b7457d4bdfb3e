//! "Prune nodes not in the configuration": the cluster may know nodes (and etcd members) that
//! no host of the manifest is — machines that were removed from `k0sctl.yaml` instead of being
//! marked `reset: true`, or that died. Every apply lists them (a warning, a `stray` event, and
//! a plan line in a dry run); with `--prune` they are removed: a node is drained (when it is
//! still Ready; pods of a NotReady node are collected by Kubernetes once its Node is gone) and
//! deleted from the API, a stray etcd member leaves etcd. A node that is still Ready is not
//! pruned without `--force`: its kubelet would only register it again — stop k0s on it first,
//! or put the host back in the manifest with `reset: true`.
//!
//! One read on the leader per run finds them (`kubectl get nodes`, `k0s etcd member-list`).

use crate::exit::Code;
use crate::host::facts::parse_sections;
use crate::kube::{self, DrainOptions};
use crate::phases::{Context, Failure};
use crate::transport::{Cmd, shell_quote};

use super::steps::kubectl::kubectl;
use super::steps::probe::{list_script, probed_leader_read};
use super::steps::reset_host::peer_host;
use super::steps::reset_host::{etcd_leave_command, peer_address, uses_etcd};
use super::{Phase, PhaseError, PhaseFuture, State};

pub struct PruneNodes;

pub const TITLE: &str = "Prune nodes not in the configuration";

/// What the cluster has that the manifest does not name.
#[derive(Debug, Default, PartialEq)]
pub struct Strays {
    /// (node name, Ready)
    pub nodes: Vec<(String, bool)>,
    /// (member name, peer address)
    pub members: Vec<(String, String)>,
    /// Controllers of the manifest running k0s whose peer address is no etcd member (removed
    /// by hand, or lost): (host name, peer address). Reported only; resetting the controller
    /// (`reset: true`) and applying again makes it join anew.
    pub missing: Vec<(String, String)>,
}

/// The fields of `kubectl get nodes -o json` read here (a NodeList of core/v1 Node objects).
/// A typed read keeps only these: a whole JSON tree of a few hundred Nodes (labels, images,
/// addresses, ...) takes megabytes at the run's peak, when every host's connection is open.
/// Every field may be missing or null, as in a generic JSON read.
#[derive(serde::Deserialize)]
struct NodeList {
    items: Option<Vec<Node>>,
}

#[derive(serde::Deserialize)]
struct Node {
    metadata: Option<NodeMeta>,
    status: Option<NodeStatus>,
}

#[derive(serde::Deserialize)]
struct NodeMeta {
    name: Option<String>,
}

#[derive(serde::Deserialize)]
struct NodeStatus {
    conditions: Option<Vec<NodeCondition>>,
}

#[derive(serde::Deserialize)]
struct NodeCondition {
    #[serde(rename = "type")]
    type_: Option<String>,
    status: Option<String>,
}

/// Compares what the leader reported with the manifest's hosts.
pub fn strays(
    nodes_json: &str,
    members_json: &str,
    known_nodes: &[String],
    known_peers: &[String],
) -> Strays {
    let mut s = Strays::default();
    if let Ok(list) = serde_json::from_str::<NodeList>(nodes_json) {
        for n in list.items.into_iter().flatten() {
            let name = n.metadata.and_then(|m| m.name).unwrap_or_default();
            if name.is_empty() || known_nodes.contains(&name) {
                continue;
            }
            let ready = n
                .status
                .and_then(|st| st.conditions)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_.as_deref() == Some("Ready") && c.status.as_deref() == Some("True")
                });
            s.nodes.push((name, ready));
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(members_json)
        && let Some(m) = v["members"].as_object()
    {
        for (name, url) in m {
            let host = peer_host(url.as_str().unwrap_or(""));
            if !host.is_empty() && !known_peers.contains(&host) {
                s.members.push((name.clone(), host));
            }
        }
    }
    s.nodes.sort();
    s.members.sort();
    s
}

/// Controllers (host name, peer address) whose peer is not among the members of `members_json`
/// (nothing when the list could not be read).
pub fn missing_members(
    members_json: &str,
    controllers: &[(String, String)],
) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(members_json) else {
        return Vec::new();
    };
    let Some(m) = v["members"].as_object() else {
        return Vec::new();
    };
    let peers: Vec<String> = m
        .values()
        .map(|u| peer_host(u.as_str().unwrap_or("")))
        .collect();
    let mut out: Vec<(String, String)> = controllers
        .iter()
        .filter(|(_, p)| !peers.contains(p))
        .cloned()
        .collect();
    out.sort();
    out
}

async fn find(state: &State) -> Result<Strays, Failure> {
    let l = state.leader.ok_or("no leader")?;
    let leader = &state.hosts[l];
    let p = leader.probed()?;
    // The host probe read them in its round trip (see `steps::probe::k0s_part`); that read
    // still holds when this run changed nothing.
    let probed = state
        .changes
        .is_empty()
        .then(|| probed_leader_read(leader, "prune"))
        .flatten();
    let out = match probed {
        Some(out) => out,
        None => p
            .remote
            .run(
                Cmd::new(list_script(state, leader, &p.k0s_binary_path))
                    .sudo()
                    .display_as("list nodes and etcd members"),
            )
            .await
            .context("listing the cluster's nodes on the leader")?
            .stdout_str(),
    };
    let s = parse_sections(&out);
    let known_nodes: Vec<String> = state
        .hosts
        .iter()
        .filter_map(|h| h.node_name().ok())
        .collect();
    let known_peers: Vec<String> = state
        .hosts
        .iter()
        .filter(|h| h.config.is_controller())
        .flat_map(|h| [peer_address(h), h.config.address().to_string()])
        .collect();
    let members = s.get("etcd").cloned().unwrap_or_default();
    // member-list prints its JSON on the last line (after any log lines).
    let members = members
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    let mut found = strays(
        s.get("nodes").map(String::as_str).unwrap_or(""),
        members,
        &known_nodes,
        &known_peers,
    );
    // Running controllers of the manifest (not being reset) that etcd does not list.
    let running: Vec<(String, String)> = state
        .hosts
        .iter()
        .filter(|h| h.config.is_controller() && !h.config.reset && uses_etcd(state, h))
        .filter(|h| h.k0s.as_ref().is_some_and(|k| k.status.is_some()))
        .map(|h| (h.name.clone(), peer_address(h)))
        .collect();
    found.missing = missing_members(members, &running);
    Ok(found)
}

fn describe(s: &Strays) -> Vec<String> {
    let mut v: Vec<String> = s
        .nodes
        .iter()
        .map(|(n, ready)| {
            format!(
                "node {n} ({}) is not in the configuration",
                if *ready { "Ready" } else { "NotReady" }
            )
        })
        .collect();
    v.extend(
        s.members.iter().map(|(m, p)| {
            format!("etcd member {m} ({p}) is not a controller of the configuration")
        }),
    );
    v.extend(s.missing.iter().map(|(h, p)| {
        format!(
            "controller {h} ({p}) is not an etcd member (removed from etcd by hand?); reset it (reset: true) and apply again to rejoin it"
        )
    }));
    v
}

impl Phase for PruneNodes {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        // Only a cluster that ran before this apply can have strays.
        state.leader.is_some() && state.cluster_id.is_some()
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let fail = |e: Failure| PhaseError::cluster(TITLE, e);
            let s = find(state).await.map_err(&fail)?;
            for line in describe(&s) {
                state.emit(serde_json::json!({"event": "stray", "what": line}));
                if line.starts_with("controller ") {
                    tracing::warn!("{line}");
                } else if !state.opts.prune {
                    tracing::warn!("{line}; `k0sctl apply --prune` removes it");
                }
            }
            if !state.opts.prune || (s.nodes.is_empty() && s.members.is_empty()) {
                return Ok(());
            }
            let live: Vec<&String> = s.nodes.iter().filter(|(_, r)| *r).map(|(n, _)| n).collect();
            if !live.is_empty() && !state.opts.force {
                return Err(PhaseError::new(
                    Code::PhaseFailed,
                    TITLE,
                    format!(
                        "not pruning node{} {}: still Ready, so its kubelet would register it again. Stop k0s on it first (or list the host with reset: true), or re-run with --force",
                        if live.len() == 1 { "" } else { "s" },
                        live.iter()
                            .map(|n| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let leader_name = state.hosts[l].name.clone();
            let o = &state.config.cluster.spec.options;
            let drain =
                (!state.opts.no_drain && o.drain.enabled).then(|| DrainOptions::from(&o.drain));
            let client = if drain.is_some() && !live.is_empty() {
                Some(
                    super::steps::leader::leader_client(state)
                        .await
                        .map_err(&fail)?,
                )
            } else {
                None
            };
            for (node, ready) in &s.nodes {
                if let (true, Some(c), Some(o)) = (*ready, &client, &drain) {
                    let st: &State = state;
                    let name = leader_name.clone();
                    let on_event =
                        move |ev: &kube::DrainEvent| super::steps::report::report(st, &name, ev);
                    // "Blocked by the cluster" when a PodDisruptionBudget held it: from the cause.
                    kube::drain(c, node, o, &on_event).await.map_err(|e| {
                        PhaseError::cluster(
                            TITLE,
                            Failure::from(e).context(format!("draining node {node}")),
                        )
                    })?;
                }
                let leader = &state.hosts[l];
                let cmd = kubectl(
                    leader,
                    &format!("delete node --ignore-not-found=true {}", shell_quote(node)),
                )
                .map_err(&fail)?;
                leader
                    .probed()
                    .map_err(|e| fail(e.into()))?
                    .remote
                    .run(Cmd::new(cmd).sudo())
                    .await
                    .map_err(|e| fail(Failure::from(e).context(format!("deleting node {node}"))))?;
                tracing::info!("pruned node {node} (not in the configuration)");
                state.changed(
                    leader_name.clone(),
                    format!("pruned node {node} (not in the configuration)"),
                );
            }
            for (member, peer) in &s.members {
                let leader = &state.hosts[l];
                let p = leader.probed().map_err(|e| fail(e.into()))?;
                let cmd = etcd_leave_command(&p.k0s_binary_path, peer, &leader.data_dir());
                p.remote.run(Cmd::new(cmd).sudo()).await.map_err(|e| {
                    fail(
                        Failure::from(e).context(format!("removing etcd member {member} ({peer})")),
                    )
                })?;
                tracing::info!(
                    "removed etcd member {member} ({peer}), not a controller of the configuration"
                );
                state.changed(
                    leader_name.clone(),
                    format!("removed etcd member {member} ({peer})"),
                );
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let s = find(state)
                .await
                .map_err(|e| PhaseError::cluster(TITLE, e))?;
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let leader = state.hosts[l].name.clone();
            for line in describe(&s) {
                state.emit(serde_json::json!({"event": "stray", "what": line}));
                if line.starts_with("controller ") {
                    tracing::warn!("{line}");
                } else if state.opts.prune {
                    state.planned(leader.clone(), format!("prune: {line}"));
                } else {
                    tracing::warn!("{line}; `k0sctl apply --prune` removes it");
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nodes_and_members_the_manifest_does_not_name() {
        let nodes = r#"{"items":[
            {"metadata":{"name":"worker0"},"status":{"conditions":[{"type":"Ready","status":"True"}]}},
            {"metadata":{"name":"old-1"},"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}},
            {"metadata":{"name":"old-2"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}]}"#;
        let members = r#"{"members":{"c0":"https://10.0.0.1:2380","gone":"https://10.0.0.9:2380","v6":"https://[fd00::5]:2380"}}"#;
        let s = strays(
            nodes,
            members,
            &["worker0".into()],
            &["10.0.0.1".into(), "fd00::5".into()],
        );
        assert_eq!(
            s.nodes,
            [("old-1".to_string(), false), ("old-2".to_string(), true)]
        );
        assert_eq!(s.members, [("gone".to_string(), "10.0.0.9".to_string())]);
        assert_eq!(strays("", "", &[], &[]), Strays::default());
    }

    /// Missing or null fields (a Node without status yet) still list the node, as not Ready;
    /// the fields not read (labels, addresses, ...) are skipped.
    #[test]
    fn nodes_with_missing_fields_are_listed_as_not_ready() {
        let nodes = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
            {"metadata":{"name":"new","labels":{"a":"b"}},"status":null},
            {"metadata":{"name":"bare"}},
            {"metadata":{"name":"odd"},"status":{"conditions":[{"type":"MemoryPressure","status":"True"},{"type":"Ready"}],
             "addresses":[{"type":"InternalIP","address":"10.0.0.3"}]}},
            {"metadata":{},"status":{"conditions":[{"type":"Ready","status":"True"}]}}]}"#;
        let s = strays(nodes, "", &[], &[]);
        assert_eq!(
            s.nodes,
            [
                ("bare".to_string(), false),
                ("new".to_string(), false),
                ("odd".to_string(), false)
            ]
        );
        let nodes = r#"{"kind":"List","items":null}"#;
        assert_eq!(strays(nodes, "", &[], &[]), Strays::default());
    }

    #[test]
    fn finds_controllers_etcd_does_not_list() {
        let members = r#"{"members":{"c0":"https://10.0.0.1:2380","c1":"https://10.0.0.2:2380"}}"#;
        let ctl = |h: &str, p: &str| (h.to_string(), p.to_string());
        let all = [
            ctl("c0", "10.0.0.1"),
            ctl("c1", "10.0.0.2"),
            ctl("c2", "10.0.0.3"),
        ];
        assert_eq!(missing_members(members, &all), [ctl("c2", "10.0.0.3")]);
        assert_eq!(missing_members(members, &all[..2]), []);
        // An unreadable list reports nothing.
        assert_eq!(missing_members("Error: …", &all), []);
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const LIST: &str = "echo @@nodes;";

    fn listing(ghost_ready: bool) -> String {
        format!(
            "@@nodes\n{{\"items\":[\
             {{\"metadata\":{{\"name\":\"node-1\"}},\"status\":{{\"conditions\":[{{\"type\":\"Ready\",\"status\":\"True\"}}]}}}},\
             {{\"metadata\":{{\"name\":\"node-2\"}},\"status\":{{\"conditions\":[{{\"type\":\"Ready\",\"status\":\"True\"}}]}}}},\
             {{\"metadata\":{{\"name\":\"ghost\"}},\"status\":{{\"conditions\":[{{\"type\":\"Ready\",\"status\":\"{}\"}}]}}}}]}}\n\
             @@etcd\nsome log line\n{{\"members\":{{\"node-1\":\"https://10.0.0.1:2380\",\"old\":\"https://10.0.0.9:2380\"}}}}\n",
            if ghost_ready { "True" } else { "Unknown" }
        )
    }

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.31.1+k0s.0")
            .leader(0);
        k.state.cluster_id = Some("uid".into());
        k
    }

    #[test]
    fn runs_only_on_a_cluster_that_ran_before() {
        let mut k = kit(Default::default());
        assert!(PruneNodes.should_run(&k.state));
        k.state.cluster_id = None;
        assert!(!PruneNodes.should_run(&k.state));
    }

    /// Without --prune strays are only reported: one read on the leader, nothing removed.
    #[tokio::test]
    async fn without_prune_nothing_is_removed() {
        let mut k = kit(Default::default());
        k.script(0).on(LIST, &listing(false));
        k.run(&PruneNodes).await.unwrap();
        assert_eq!(k.script(0).commands().len(), 1);
        assert!(k.script(0).commands()[0].contains("etcd member-list --data-dir=/var/lib/k0s"));
        assert!(k.script(1).commands().is_empty());
        assert!(k.state.changes.is_empty());
    }

    /// The leader's node and etcd lists read by the host probe are used while this run has
    /// changed nothing (no command); once it changed something, the leader is asked again.
    #[tokio::test]
    async fn the_probes_listing_is_used_while_nothing_changed() {
        let mut k = kit(Default::default());
        let env = crate::host::InitSystem::Systemd.env_file("k0scontroller");
        k.state.hosts[0].probe_out = Some(format!(
            "@@k0sprobe\n/usr/local/bin/k0s\n{env}\n/run/lock/k0sctl\n@@end\n@@clusterid\nok uid\n@@prune\nok\n{}@@prune-end\n",
            listing(false)
        ));
        k.run(&PruneNodes).await.unwrap();
        k.assert_nothing_ran();
        k.state.changed(k.state.hosts[1].name.clone(), "something");
        k.script(0).on(LIST, &listing(false));
        k.run(&PruneNodes).await.unwrap();
        assert_eq!(k.script(0).commands().len(), 1);
    }

    /// With --prune: the NotReady stray node is deleted and the stray etcd member removed,
    /// through the leader.
    #[tokio::test]
    async fn prune_deletes_the_stray_node_and_member() {
        let mut k = kit(super::super::RunOptions {
            prune: true,
            ..Default::default()
        });
        k.script(0)
            .on(LIST, &listing(false))
            .on("delete node --ignore-not-found=true ghost", "")
            .on(
                "/usr/local/bin/k0s etcd leave --peer-address=10.0.0.9 --data-dir=/var/lib/k0s",
                "",
            );
        k.run(&PruneNodes).await.unwrap();
        let s = k.script(0);
        assert!(s.position("delete node") < s.position("etcd leave"));
        assert_eq!(
            k.changes_for(0),
            [
                "pruned node ghost (not in the configuration)",
                "removed etcd member old (10.0.0.9)"
            ]
        );
    }

    #[tokio::test]
    async fn a_ready_stray_is_not_pruned_without_force() {
        let mut k = kit(super::super::RunOptions {
            prune: true,
            ..Default::default()
        });
        k.script(0).on(LIST, &listing(true));
        let e = k.run(&PruneNodes).await.unwrap_err().to_string();
        assert!(e.contains("not pruning node ghost: still Ready"), "{e}");
        assert_eq!(k.script(0).commands().len(), 1);
    }

    #[tokio::test]
    async fn dry_run_plans_with_prune() {
        let mut k = kit(super::super::RunOptions {
            prune: true,
            dry_run: true,
            ..Default::default()
        });
        k.script(0).on(LIST, &listing(false));
        k.run(&PruneNodes).await.unwrap();
        assert_eq!(
            k.plan_for(0),
            [
                "prune: node ghost (NotReady) is not in the configuration",
                "prune: etcd member old (10.0.0.9) is not a controller of the configuration",
            ]
        );
        let mut k = kit(dry());
        k.script(0).fail(
            LIST,
            1,
            "error: the server is currently unable to handle the request",
        );
        let e = k.run(&PruneNodes).await.unwrap_err().to_string();
        assert!(
            e.contains("listing the cluster's nodes on the leader")
                && e.contains("unable to handle"),
            "{e}"
        );
    }
}
