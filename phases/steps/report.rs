//! Reporting what happened to a node: drain events, for humans (log lines) and for
//! `--output json` (events).

use crate::kube::{self, DrainEvent};

use super::State;

/// Logs a drain event for humans and emits it for `--output json`.
pub fn report(state: &State, host: &str, ev: &DrainEvent) {
    let mut j = ev.to_json();
    j["host"] = serde_json::Value::String(host.to_string());
    state.emit(j);
    match ev {
        DrainEvent::Cordoned { node, already } => {
            if *already {
                tracing::info!("{host}: node {node} was already cordoned");
            } else {
                tracing::info!("{host}: cordoned node {node}");
            }
        }
        DrainEvent::Warning { message, pods, .. } => {
            tracing::warn!("{host}: {message}: {}", pods.join(", "))
        }
        DrainEvent::Evicting { pods, .. } => {
            tracing::info!(
                "{host}: evicting {} pod{}: {}",
                pods.len(),
                if pods.len() == 1 { "" } else { "s" },
                pods.join(", ")
            )
        }
        DrainEvent::Blocked {
            pod,
            pdb,
            message,
            retry_every,
            keep_trying_for,
            ..
        } => {
            let by = pdb
                .as_ref()
                .map(|p| format!(" by PodDisruptionBudget {p}"))
                .unwrap_or_default();
            let until = keep_trying_for
                .map(|d| format!("for up to {}", kube::drain::fmt_duration(d)))
                .unwrap_or_else(|| "without a time limit".into());
            tracing::warn!(
                "{host}: eviction of pod {pod} refused{by}: {message}; retrying when the budget allows (at least every {}) {until}",
                kube::drain::fmt_duration(*retry_every)
            );
        }
        DrainEvent::Progress {
            elapsed,
            evicted,
            pending,
            blockers,
            ..
        } => {
            let who: Vec<String> = blockers
                .iter()
                .map(|b| match &b.pdb {
                    Some(p) => format!("{}/{} (PodDisruptionBudget {p})", b.namespace, b.pod),
                    None => format!("{}/{}", b.namespace, b.pod),
                })
                .collect();
            tracing::info!(
                "{host}: draining for {}: {evicted} evicted, {pending} waiting{}",
                kube::drain::fmt_duration(*elapsed),
                if who.is_empty() {
                    String::new()
                } else {
                    format!("; blocked: {}", who.join(", "))
                }
            );
        }
        DrainEvent::Evicted { pod, .. } => tracing::debug!("{host}: pod {pod} is gone"),
        DrainEvent::Done {
            node,
            evicted,
            elapsed,
        } => tracing::info!(
            "{host}: drained node {node} ({evicted} pods evicted in {})",
            kube::drain::fmt_duration(*elapsed)
        ),
    }
}
