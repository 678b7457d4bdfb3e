//! A PodDisruptionBudget-aware drain with `kubectl drain`'s semantics (kubectl `pkg/drain`):
//! cordon; list the node's pods (optionally filtered by `podSelector`); refuse, before evicting
//! anything, when a pod may not be deleted without an option (DaemonSet pods without
//! `ignoreDaemonSets`, emptyDir pods without `deleteEmptyDirData`, pods without a controller
//! without `force`); skip DaemonSet and mirror pods; evict the rest concurrently with a typed
//! policy/v1 `Eviction` carrying the grace period (kube's `Api::evict` drops it); retry refused
//! evictions (HTTP 429, a PDB allows no disruption) as soon as the named budget's status allows
//! a disruption again (polled every `poll_interval`), and at least every `retry_interval` (5 s,
//! kubectl's fixed beat), until the overall `timeout`; then wait until each evicted pod is gone
//! (or, with `skipWaitForDeleteTimeout`, has been terminating for longer than that).
//!
//! What the user sees comes through [`DrainEvent`]s: the first refusal of each pod names the
//! pod, the PDB (parsed from the 429's cause) and how long we will keep trying; while waiting, a
//! [`DrainEvent::Progress`] every `progress_interval` instead of a line per retry. If the
//! timeout passes while evictions are still refused the result is [`KubeError::Blocked`] with
//! every blocking pod and PDB and the ways out.
//!
//! **The drain never uncordons.** On failure the node stays cordoned (as with kubectl); the
//! caller (the upgrade phase) restores the cordon and taint state it found, with
//! [`super::uncordon`] and [`super::remove_taint`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::kube::api::{Api, ListParams, PostParams};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta};
use serde_json::json;

use super::pdb::parse_refusal;
use super::{Client, KubeError};
use crate::config::duration::format as go_duration;
use crate::config::model::DrainOption;

/// A duration for messages, rounded to whole seconds (`7s`, `5m0s`); below a second as is.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        go_duration(d)
    } else {
        go_duration(Duration::from_secs(d.as_secs_f64().round() as u64))
    }
}

/// How to drain (k0sctl's `spec.options.drain` plus the loop's timing).
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Grace period for each pod (`None`: the pod's own). k0sctl: 2m.
    pub grace_period: Option<Duration>,
    /// Overall time for the drain; zero means no limit. k0sctl: 5m.
    pub timeout: Duration,
    /// Delete pods that declare no controller.
    pub force: bool,
    /// Skip DaemonSet-managed pods instead of refusing to drain.
    pub ignore_daemon_sets: bool,
    /// Delete pods with emptyDir volumes (their data is lost).
    pub delete_empty_dir_data: bool,
    /// Only pods matching this label selector (kubectl `--pod-selector`); empty: all.
    pub pod_selector: String,
    /// Pods terminating for longer than this count as gone (and are not evicted again); zero:
    /// always wait.
    pub skip_wait_for_delete_timeout: Duration,
    /// Wait between attempts of a refused eviction (kubectl: 5 s).
    pub retry_interval: Duration,
    /// How often [`DrainEvent::Progress`] is reported while waiting.
    pub progress_interval: Duration,
    /// How often an evicted pod is checked for being gone (kubectl: 1 s).
    pub poll_interval: Duration,
}

impl Default for DrainOptions {
    /// k0sctl's defaults (`--force --grace-period=120 --timeout=5m0s --delete-emptydir-data
    /// --ignore-daemonsets`).
    fn default() -> Self {
        DrainOptions::from(&DrainOption::default())
    }
}

impl From<&DrainOption> for DrainOptions {
    fn from(o: &DrainOption) -> Self {
        DrainOptions {
            grace_period: Some(o.grace_period.0),
            timeout: o.timeout.0,
            force: o.force,
            ignore_daemon_sets: o.ignore_daemon_sets,
            delete_empty_dir_data: o.delete_empty_dir_data,
            pod_selector: o.pod_selector.clone(),
            skip_wait_for_delete_timeout: o.skip_wait_for_delete_timeout.0,
            retry_interval: Duration::from_secs(5),
            progress_interval: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A pod whose eviction was still refused when the drain gave up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocker {
    pub namespace: String,
    pub pod: String,
    /// The PodDisruptionBudget named by the refusal, when it names one.
    pub pdb: Option<String>,
    /// The API server's reason (the 429 cause message).
    pub message: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}/{}", self.namespace, self.pod)?;
        if let Some(p) = &self.pdb {
            write!(f, " (PodDisruptionBudget {}/{p})", self.namespace)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The drain of `node` gave up after `waited` because evictions kept being refused.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub node: String,
    pub blockers: Vec<Blocker>,
    pub waited: Duration,
    /// The drain timeout that ran out.
    pub timeout: Duration,
    /// Pods that were evicted before giving up.
    pub evicted: usize,
}

impl Blocked {
    /// The distinct PDBs (`namespace/name`) named by the blockers.
    pub fn pdbs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .blockers
            .iter()
            .filter_map(|b| b.pdb.as_ref().map(|p| format!("{}/{p}", b.namespace)))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl std::error::Error for Blocked {}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pdbs = self.pdbs();
        write!(
            f,
            "drain of node {} blocked: evictions were refused for {}",
            self.node,
            fmt_duration(self.waited)
        )?;
        if !pdbs.is_empty() {
            write!(f, " by PodDisruptionBudget {}", pdbs.join(", "))?;
        }
        for b in &self.blockers {
            write!(f, "\n  - {b}")?;
        }
        write!(
            f,
            "\nWays out: raise the replicas of the workload behind these pods so the budget \
             allows a disruption; relax the PodDisruptionBudget (a lower minAvailable or a \
             higher maxUnavailable); skip draining with --no-drain or \
             spec.options.drain.enabled: false; or allow more time with a longer \
             spec.options.drain.timeout (now {}).",
            fmt_duration(self.timeout)
        )
    }
}

/// What a drain reports while it runs. Pods are named `namespace/name`.
#[derive(Debug, Clone, PartialEq)]
pub enum DrainEvent {
    /// The node was cordoned (`already`: it was cordoned before).
    Cordoned { node: String, already: bool },
    /// Pods skipped or deleted with a warning (kubectl's `Warning: ignoring DaemonSet-managed
    /// Pods: …`).
    Warning {
        node: String,
        message: String,
        pods: Vec<String>,
    },
    /// These pods are about to be evicted.
    Evicting { node: String, pods: Vec<String> },
    /// The first refusal of this pod's eviction: the PDB it names and how long the drain keeps
    /// trying (`None`: no timeout).
    Blocked {
        node: String,
        pod: String,
        pdb: Option<String>,
        message: String,
        retry_every: Duration,
        keep_trying_for: Option<Duration>,
    },
    /// Periodic while pods are pending: how many are evicted/left, and the current blockers.
    Progress {
        node: String,
        elapsed: Duration,
        evicted: usize,
        pending: usize,
        blockers: Vec<Blocker>,
    },
    /// The pod was evicted and is gone.
    Evicted { node: String, pod: String },
    /// Every pod is gone.
    Done {
        node: String,
        evicted: usize,
        elapsed: Duration,
    },
}

impl DrainEvent {
    /// The event for `--output json` (durations in seconds).
    pub fn to_json(&self) -> serde_json::Value {
        let s = |d: &Duration| d.as_secs_f64();
        match self {
            DrainEvent::Cordoned { node, already } => {
                json!({"event": "drain_cordoned", "node": node, "already": already})
            }
            DrainEvent::Warning {
                node,
                message,
                pods,
            } => json!({"event": "drain_warning", "node": node, "message": message, "pods": pods}),
            DrainEvent::Evicting { node, pods } => {
                json!({"event": "drain_evicting", "node": node, "pods": pods})
            }
            DrainEvent::Blocked {
                node,
                pod,
                pdb,
                message,
                retry_every,
                keep_trying_for,
            } => json!({"event": "drain_blocked", "node": node, "pod": pod, "pdb": pdb,
                "message": message, "retry_every_seconds": s(retry_every),
                "keep_trying_seconds": keep_trying_for.as_ref().map(s)}),
            DrainEvent::Progress {
                node,
                elapsed,
                evicted,
                pending,
                blockers,
            } => json!({"event": "drain_progress", "node": node, "elapsed_seconds": s(elapsed),
                "evicted": evicted, "pending": pending, "blockers": blockers}),
            DrainEvent::Evicted { node, pod } => {
                json!({"event": "drain_evicted", "node": node, "pod": pod})
            }
            DrainEvent::Done {
                node,
                evicted,
                elapsed,
            } => json!({"event": "drain_done", "node": node, "evicted": evicted,
                "elapsed_seconds": s(elapsed)}),
        }
    }
}

impl std::fmt::Display for DrainEvent {
    /// One line for humans.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainEvent::Cordoned { node, already } => {
                if *already {
                    write!(f, "node/{node} already cordoned")
                } else {
                    write!(f, "node/{node} cordoned")
                }
            }
            DrainEvent::Warning { message, pods, .. } => {
                write!(f, "Warning: {message}: {}", pods.join(", "))
            }
            DrainEvent::Evicting { node, pods } => {
                write!(
                    f,
                    "node/{node}: evicting {} pods: {}",
                    pods.len(),
                    pods.join(", ")
                )
            }
            DrainEvent::Blocked {
                node,
                pod,
                pdb,
                message,
                retry_every,
                keep_trying_for,
            } => {
                write!(f, "node/{node}: eviction of pod {pod} refused")?;
                if let Some(p) = pdb {
                    write!(f, " by PodDisruptionBudget {p}")?;
                }
                write!(
                    f,
                    " ({message}); retrying every {}",
                    fmt_duration(*retry_every)
                )?;
                match keep_trying_for {
                    Some(d) => write!(f, " for up to {}", fmt_duration(*d)),
                    None => write!(f, " with no time limit"),
                }
            }
            DrainEvent::Progress {
                node,
                elapsed,
                evicted,
                pending,
                blockers,
            } => {
                write!(
                    f,
                    "node/{node}: draining for {}: {evicted} evicted, {pending} pending",
                    fmt_duration(*elapsed)
                )?;
                if !blockers.is_empty() {
                    let b: Vec<String> = blockers
                        .iter()
                        .map(|b| match &b.pdb {
                            Some(p) => format!("{}/{} by {p}", b.namespace, b.pod),
                            None => format!("{}/{}", b.namespace, b.pod),
                        })
                        .collect();
                    write!(f, "; still refused: {}", b.join(", "))?;
                }
                Ok(())
            }
            DrainEvent::Evicted { pod, .. } => write!(f, "pod/{pod} evicted"),
            DrainEvent::Done {
                node,
                evicted,
                elapsed,
            } => write!(
                f,
                "node/{node} drained ({evicted} pods evicted in {})",
                fmt_duration(*elapsed)
            ),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Pods evicted (`namespace/name`).
    pub evicted: Vec<String>,
    /// Pods left alone (DaemonSet, mirror, long-terminating).
    pub skipped: Vec<String>,
    pub elapsed: Duration,
}

/// What a drain does with a pod (kubectl's filters, in kubectl's order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    /// Evict it (with these warnings, e.g. "deleting Pods with local storage").
    Evict(Vec<&'static str>),
    /// Leave it (with a warning for DaemonSet pods; silently for mirror pods and pods
    /// terminating longer than `skipWaitForDeleteTimeout`).
    Skip(Option<&'static str>),
    /// The drain must not proceed without an option.
    Refuse(&'static str),
}

pub const DAEMONSET_FATAL: &str =
    "DaemonSet-managed Pods (set spec.options.drain.ignoreDaemonSets: true to ignore them)";
pub const DAEMONSET_WARNING: &str = "ignoring DaemonSet-managed Pods";
pub const LOCAL_STORAGE_FATAL: &str =
    "Pods with local storage (set spec.options.drain.deleteEmptyDirData: true to delete them)";
pub const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
pub const UNMANAGED_FATAL: &str =
    "Pods that declare no controller (set spec.options.drain.force: true to delete them)";
pub const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";

/// The coarse kind of a pod, for deciding what blocks a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodKind {
    /// A drain evicts it and a PDB may refuse that.
    Evictable,
    /// Managed by a DaemonSet (not evicted with ignoreDaemonSets).
    DaemonSet,
    /// A static pod's mirror (never evicted).
    Mirror,
    /// Succeeded/Failed, or already terminating: eviction is not checked against PDBs.
    Finished,
}

fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn controller_kind(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.kind.as_str())
}

fn is_mirror(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
}

fn has_empty_dir(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()))
}

/// Seconds since the pod's deletionTimestamp, if it is terminating.
fn terminating_for(p: &Pod, now: i64) -> Option<i64> {
    p.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| now - t.0.as_second())
}

/// The coarse kind (used by [`super::blocking_pdbs`]).
pub fn classify_kind(p: &Pod) -> PodKind {
    if is_terminal(p) || p.metadata.deletion_timestamp.is_some() {
        PodKind::Finished
    } else if controller_kind(p) == Some("DaemonSet") {
        PodKind::DaemonSet
    } else if is_mirror(p) {
        PodKind::Mirror
    } else {
        PodKind::Evictable
    }
}

/// kubectl's filters: skip-deleted, DaemonSet, mirror, local storage, unreplicated. `now` is
/// in Unix seconds. (kubectl also looks up a DaemonSet pod's DaemonSet and deletes orphans with
/// `--force`; this treats every DaemonSet-controlled pod as managed.)
pub fn pod_action(p: &Pod, o: &DrainOptions, now: i64) -> PodAction {
    let skip_after = o.skip_wait_for_delete_timeout.as_secs() as i64;
    if skip_after > 0 && terminating_for(p, now).is_some_and(|s| s > skip_after) {
        return PodAction::Skip(None);
    }
    let terminal = is_terminal(p);
    if controller_kind(p) == Some("DaemonSet") && !terminal {
        return if o.ignore_daemon_sets {
            PodAction::Skip(Some(DAEMONSET_WARNING))
        } else {
            PodAction::Refuse(DAEMONSET_FATAL)
        };
    }
    if is_mirror(p) {
        return PodAction::Skip(None);
    }
    let mut warnings = Vec::new();
    if has_empty_dir(p) && !terminal {
        if !o.delete_empty_dir_data {
            return PodAction::Refuse(LOCAL_STORAGE_FATAL);
        }
        warnings.push(LOCAL_STORAGE_WARNING);
    }
    if !terminal && controller_kind(p).is_none() {
        if !o.force {
            return PodAction::Refuse(UNMANAGED_FATAL);
        }
        warnings.push(UNMANAGED_WARNING);
    }
    PodAction::Evict(warnings)
}

fn pod_ref(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Shared progress of one drain.
#[derive(Default)]
struct Shared {
    evicted: Vec<String>,
    pending: usize,
    /// Current refusals by pod.
    blockers: BTreeMap<String, Blocker>,
}

enum Outcome {
    Gone(String),
    Blocked(Blocker),
    Failed(KubeError),
}

struct Ctx<'a> {
    client: &'a Client,
    node: &'a str,
    o: &'a DrainOptions,
    start: Instant,
    deadline: Option<Instant>,
    on_event: &'a (dyn Fn(&DrainEvent) + Send + Sync),
    shared: Mutex<Shared>,
}

impl Ctx<'_> {
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
    /// Sleep `d`, but not past the deadline.
    async fn pause(&self, d: Duration) {
        let d = match self.deadline {
            Some(dl) => d.min(dl.saturating_duration_since(Instant::now())),
            None => d,
        };
        tokio::time::sleep(d).await;
    }
}

/// Drains `node`: cordon, then evict its pods as `kubectl drain` would (see the module doc).
/// Events go to `on_event` as they happen. On success every evicted pod is gone. The node is
/// left cordoned whatever the outcome.
pub async fn drain(
    client: &Client,
    node: &str,
    o: &DrainOptions,
    on_event: &(dyn Fn(&DrainEvent) + Send + Sync),
) -> Result<DrainReport, KubeError> {
    let start = Instant::now();
    let changed = super::cordon(client, node).await?;
    on_event(&DrainEvent::Cordoned {
        node: node.to_string(),
        already: !changed,
    });

    let mut lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    if !o.pod_selector.trim().is_empty() {
        lp = lp.labels(o.pod_selector.trim());
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&lp)
        .await
        .map_err(|e| KubeError::api(format!("list pods on node {node}"), e))?;

    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let mut refused: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut warned: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut to_evict = Vec::new();
    let mut report = DrainReport::default();
    for p in list.items {
        match pod_action(&p, o, now) {
            PodAction::Refuse(why) => refused.entry(why).or_default().push(pod_ref(&p)),
            PodAction::Skip(w) => {
                if let Some(w) = w {
                    warned.entry(w).or_default().push(pod_ref(&p));
                }
                report.skipped.push(pod_ref(&p));
            }
            PodAction::Evict(ws) => {
                for w in ws {
                    warned.entry(w).or_default().push(pod_ref(&p));
                }
                to_evict.push(p);
            }
        }
    }
    if !refused.is_empty() {
        return Err(KubeError::Refused {
            node: node.to_string(),
            reasons: refused
                .into_iter()
                .map(|(why, pods)| format!("cannot delete {why}: {}", pods.join(", ")))
                .collect(),
        });
    }
    for (message, pods) in warned {
        on_event(&DrainEvent::Warning {
            node: node.to_string(),
            message: message.to_string(),
            pods,
        });
    }
    if !to_evict.is_empty() {
        on_event(&DrainEvent::Evicting {
            node: node.to_string(),
            pods: to_evict.iter().map(pod_ref).collect(),
        });
    }

    let ctx = Ctx {
        client,
        node,
        o,
        start,
        deadline: (!o.timeout.is_zero()).then(|| start + o.timeout),
        on_event,
        shared: Mutex::new(Shared {
            pending: to_evict.len(),
            ..Default::default()
        }),
    };
    let all = futures::future::join_all(to_evict.iter().map(|p| evict_and_wait(&ctx, p)));
    let outcomes = {
        tokio::pin!(all);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + o.progress_interval,
            o.progress_interval.max(Duration::from_millis(100)),
        );
        loop {
            tokio::select! {
                r = &mut all => break r,
                _ = tick.tick() => {
                    let sh = ctx.shared.lock().expect("lock");
                    on_event(&DrainEvent::Progress {
                        node: node.to_string(),
                        elapsed: start.elapsed(),
                        evicted: sh.evicted.len(),
                        pending: sh.pending,
                        blockers: sh.blockers.values().cloned().collect(),
                    });
                }
            }
        }
    };

    let mut blockers = Vec::new();
    let mut failures = Vec::new();
    for r in outcomes {
        match r {
            Outcome::Gone(p) => report.evicted.push(p),
            Outcome::Blocked(b) => blockers.push(b),
            Outcome::Failed(e) => failures.push(e),
        }
    }
    report.elapsed = start.elapsed();
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    if !blockers.is_empty() {
        return Err(KubeError::Blocked(Box::new(Blocked {
            node: node.to_string(),
            blockers,
            waited: report.elapsed,
            timeout: o.timeout,
            evicted: report.evicted.len(),
        })));
    }
    on_event(&DrainEvent::Done {
        node: node.to_string(),
        evicted: report.evicted.len(),
        elapsed: report.elapsed,
    });
    Ok(report)
}

/// Whether a failed eviction is worth retrying: refused by a PDB (429), the namespace is
/// terminating (403 with that cause), or the API was unreachable for a moment.
fn retryable(e: &::kube::Error) -> bool {
    match e {
        ::kube::Error::Api(s) => {
            s.code == 429
                || (s.code == 403
                    && s.details.as_ref().is_some_and(|d| {
                        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
                    }))
        }
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => true,
        _ => false,
    }
}

async fn evict_and_wait(ctx: &Ctx<'_>, pod: &Pod) -> Outcome {
    let r = pod_ref(pod);
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let out = evict(ctx, &api, &r, &ns, &name).await;
    let out = match out {
        Ok(true) => wait_gone(ctx, &api, pod, &r).await,
        Ok(false) => Outcome::Gone(r.clone()),
        Err(o) => o,
    };
    let mut sh = ctx.shared.lock().expect("lock");
    sh.pending = sh.pending.saturating_sub(1);
    if let Outcome::Gone(_) = out {
        sh.blockers.remove(&r);
        sh.evicted.push(r.clone());
        drop(sh);
        (ctx.on_event)(&DrainEvent::Evicted {
            node: ctx.node.to_string(),
            pod: r,
        });
    }
    out
}

/// Posts the eviction until accepted (`Ok(true)`), the pod is gone (`Ok(false)`), or the drain
/// gives up.
async fn evict(
    ctx: &Ctx<'_>,
    api: &Api<Pod>,
    r: &str,
    ns: &str,
    name: &str,
) -> Result<bool, Outcome> {
    let ev = Eviction {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        delete_options: Some(DeleteOptions {
            grace_period_seconds: ctx.o.grace_period.map(|g| g.as_secs() as i64),
            ..Default::default()
        }),
    };
    let mut first_refusal = true;
    loop {
        let res = api
            .create_subresource::<_, serde_json::Value>(
                "eviction",
                name,
                &PostParams::default(),
                &ev,
            )
            .await;
        let e = match res {
            Ok(_) => return Ok(true),
            Err(::kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => e,
        };
        let failed = |e| {
            Outcome::Failed(KubeError::api(
                format!("evict pod {r} from node {}", ctx.node),
                e,
            ))
        };
        if let ::kube::Error::Api(st) = &e
            && st.code == 500
            && st.message.contains("more than one PodDisruptionBudget")
        {
            // The API does not say which budgets: name them, so they can be fixed.
            let pod = api.get(name).await.ok();
            let names = match pod {
                Some(p) => super::pdb::budgets_covering(ctx.client, &p)
                    .await
                    .map(|v| v.join(", "))
                    .unwrap_or_else(|_| "could not list them".into()),
                None => "could not list them".into(),
            };
            return Err(Outcome::Failed(KubeError::api(
                format!(
                    "evict pod {r} from node {}: the pod is covered by more than one PodDisruptionBudget ({names}), which the eviction API refuses; leave one budget per pod",
                    ctx.node
                ),
                e,
            )));
        }
        if !retryable(&e) {
            return Err(failed(e));
        }
        let ::kube::Error::Api(st) = &e else {
            // The API was unreachable for a moment: retry quietly until the deadline.
            tracing::debug!(node = ctx.node, pod = r, "eviction failed, retrying: {e}");
            if ctx.expired() {
                return Err(failed(e));
            }
            ctx.pause(ctx.o.retry_interval).await;
            continue;
        };
        let (pdb, message) = parse_refusal(st);
        let blocker = Blocker {
            namespace: ns.to_string(),
            pod: name.to_string(),
            pdb: pdb.clone(),
            message: message.clone(),
        };
        ctx.shared
            .lock()
            .expect("lock")
            .blockers
            .insert(r.to_string(), blocker.clone());
        if first_refusal {
            first_refusal = false;
            (ctx.on_event)(&DrainEvent::Blocked {
                node: ctx.node.to_string(),
                pod: r.to_string(),
                pdb,
                message,
                retry_every: ctx.o.retry_interval,
                keep_trying_for: ctx
                    .deadline
                    .map(|d| d.saturating_duration_since(Instant::now())),
            });
        } else {
            tracing::debug!(
                node = ctx.node,
                pod = r,
                "eviction still refused: {message}"
            );
        }
        if ctx.expired() {
            return Err(Outcome::Blocked(blocker));
        }
        wait_budget(ctx, ns, blocker.pdb.as_deref()).await;
    }
}

/// Waits until the budget `pdb` allows a disruption again (its status polled every
/// `poll_interval`), at most `retry_interval`: a refused eviction is then retried as soon as it
/// can succeed instead of on kubectl's fixed 5 s beat (with one pod allowed away at a time,
/// that beat alone made every evicted pod cost 5 s). Without a PDB name, just waits.
async fn wait_budget(ctx: &Ctx<'_>, ns: &str, pdb: Option<&str>) {
    let Some(pdb) = pdb else {
        return ctx.pause(ctx.o.retry_interval).await;
    };
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    let until = Instant::now() + ctx.o.retry_interval;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || ctx.expired() {
            return;
        }
        ctx.pause(ctx.o.poll_interval.min(left)).await;
        if let Ok(p) = api.get(pdb).await
            && p.status
                .is_some_and(|s| s.disruptions_allowed.unwrap_or(0) > 0)
        {
            return;
        }
    }
}

/// Waits until the evicted pod is gone (or replaced by a new pod of the same name, or
/// terminating for longer than `skip_wait_for_delete_timeout`).
async fn wait_gone(ctx: &Ctx<'_>, api: &Api<Pod>, pod: &Pod, r: &str) -> Outcome {
    let uid = pod.metadata.uid.clone();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let skip_after = ctx.o.skip_wait_for_delete_timeout.as_secs() as i64;
    loop {
        match api.get_opt(&name).await {
            Ok(None) => return Outcome::Gone(r.to_string()),
            Ok(Some(p)) if p.metadata.uid != uid => return Outcome::Gone(r.to_string()),
            Ok(Some(p)) => {
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                if skip_after > 0 && terminating_for(&p, now).is_some_and(|s| s > skip_after) {
                    return Outcome::Gone(r.to_string());
                }
            }
            Err(e) if retryable(&e) => {}
            Err(e) => {
                return Outcome::Failed(KubeError::api(
                    format!("wait for pod {r} to terminate"),
                    e,
                ));
            }
        }
        if ctx.expired() {
            return Outcome::Failed(KubeError::Timeout {
                what: format!(
                    "drain node {}: wait for evicted pod {r} to terminate",
                    ctx.node
                ),
                after: ctx.start.elapsed(),
            });
        }
        ctx.pause(ctx.o.poll_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }
    fn owned(kind: &str) -> serde_json::Value {
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": "x", "uid": "u", "controller": true}])
    }

    #[test]
    fn kubectl_filters() {
        let o = DrainOptions::default();
        let now = 1_000_000;
        let rs = pod(json!({"metadata": {"name": "a", "ownerReferences": owned("ReplicaSet")}}));
        assert_eq!(pod_action(&rs, &o, now), PodAction::Evict(vec![]));
        assert_eq!(classify_kind(&rs), PodKind::Evictable);

        let ds = pod(json!({"metadata": {"name": "d", "ownerReferences": owned("DaemonSet")}}));
        assert_eq!(
            pod_action(&ds, &o, now),
            PodAction::Skip(Some(DAEMONSET_WARNING))
        );
        assert_eq!(classify_kind(&ds), PodKind::DaemonSet);
        let strict = DrainOptions {
            ignore_daemon_sets: false,
            force: false,
            delete_empty_dir_data: false,
            ..DrainOptions::default()
        };
        assert_eq!(
            pod_action(&ds, &strict, now),
            PodAction::Refuse(DAEMONSET_FATAL)
        );
        // A finished DaemonSet pod is simply deleted.
        let ds_done = pod(json!({"metadata": {"ownerReferences": owned("DaemonSet")},
            "status": {"phase": "Succeeded"}}));
        assert_eq!(pod_action(&ds_done, &strict, now), PodAction::Evict(vec![]));
        assert_eq!(classify_kind(&ds_done), PodKind::Finished);

        let mirror =
            pod(json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "h"}}}));
        assert_eq!(pod_action(&mirror, &strict, now), PodAction::Skip(None));
        assert_eq!(classify_kind(&mirror), PodKind::Mirror);

        let bare = pod(json!({"metadata": {"name": "b"}}));
        assert_eq!(
            pod_action(&bare, &o, now),
            PodAction::Evict(vec![UNMANAGED_WARNING])
        );
        assert_eq!(
            pod_action(&bare, &strict, now),
            PodAction::Refuse(UNMANAGED_FATAL)
        );
        let bare_done = pod(json!({"metadata": {}, "status": {"phase": "Failed"}}));
        assert_eq!(
            pod_action(&bare_done, &strict, now),
            PodAction::Evict(vec![])
        );

        let ed = pod(json!({"metadata": {"ownerReferences": owned("ReplicaSet")},
            "spec": {"containers": [], "volumes": [{"name": "v", "emptyDir": {}}]}}));
        assert_eq!(
            pod_action(&ed, &o, now),
            PodAction::Evict(vec![LOCAL_STORAGE_WARNING])
        );
        assert_eq!(
            pod_action(&ed, &strict, now),
            PodAction::Refuse(LOCAL_STORAGE_FATAL)
        );

        // Terminating for 100 s: skipped only when skipWaitForDeleteTimeout is below that.
        let t = k8s_openapi::jiff::Timestamp::from_second(now - 100).unwrap();
        let term = pod(json!({"metadata": {"deletionTimestamp": t.to_string(),
            "ownerReferences": owned("ReplicaSet")}}));
        assert_eq!(pod_action(&term, &o, now), PodAction::Evict(vec![]));
        assert_eq!(classify_kind(&term), PodKind::Finished);
        let skip = DrainOptions {
            skip_wait_for_delete_timeout: Duration::from_secs(30),
            ..DrainOptions::default()
        };
        assert_eq!(pod_action(&term, &skip, now), PodAction::Skip(None));
    }

    #[test]
    fn options_from_config() {
        let o = DrainOptions::default();
        assert_eq!(o.grace_period, Some(Duration::from_secs(120)));
        assert_eq!(o.timeout, Duration::from_secs(300));
        assert!(o.force && o.ignore_daemon_sets && o.delete_empty_dir_data);
        assert_eq!(o.retry_interval, Duration::from_secs(5));
    }

    #[test]
    fn blocked_message_names_everything_and_the_ways_out() {
        let b = Blocked {
            node: "worker0".into(),
            blockers: vec![
                Blocker {
                    namespace: "default".into(),
                    pod: "web-1".into(),
                    pdb: Some("web-pdb".into()),
                    message:
                        "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
                            .into(),
                },
                Blocker {
                    namespace: "db".into(),
                    pod: "pg-0".into(),
                    pdb: None,
                    message: "Cannot evict pod".into(),
                },
            ],
            waited: Duration::from_secs_f64(300.4),
            timeout: Duration::from_secs(300),
            evicted: 3,
        };
        let m = KubeError::Blocked(Box::new(b.clone())).to_string();
        for want in [
            "node worker0",
            "5m0s",
            "PodDisruptionBudget default/web-pdb",
            "pod default/web-1",
            "pod db/pg-0",
            "replicas",
            "relax the PodDisruptionBudget",
            "--no-drain",
            "spec.options.drain.enabled: false",
            "spec.options.drain.timeout",
        ] {
            assert!(m.contains(want), "{want:?} missing in {m}");
        }
        assert_eq!(b.pdbs(), vec!["default/web-pdb".to_string()]);
        let ev = DrainEvent::Blocked {
            node: "worker0".into(),
            pod: "default/web-1".into(),
            pdb: Some("web-pdb".into()),
            message: "m".into(),
            retry_every: Duration::from_secs(5),
            keep_trying_for: Some(Duration::from_secs(300)),
        };
        assert_eq!(
            ev.to_string(),
            "node/worker0: eviction of pod default/web-1 refused by PodDisruptionBudget web-pdb (m); retrying every 5s for up to 5m0s"
        );
        assert_eq!(ev.to_json()["keep_trying_seconds"], 300.0);
    }
}
