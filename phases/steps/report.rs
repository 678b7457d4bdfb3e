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
                tracing::info!(about = %host, "node {node} was already cordoned");
            } else {
                tracing::info!(about = %host, "cordoned node {node}");
            }
        }
        DrainEvent::Warning { message, pods, .. } => {
            tracing::warn!(about = %host, "{message}: {}", pods.join(", "))
        }
        DrainEvent::Evicting { pods, .. } => {
            tracing::info!(
                about = %host,
                "evicting {} pod{}: {}",
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
                about = %host,
                "eviction of pod {pod} refused{by}: {message}; retrying when the budget allows (at least every {}) {until}",
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
                about = %host,
                "draining for {}: {evicted} evicted, {pending} waiting{}",
                kube::drain::fmt_duration(*elapsed),
                if who.is_empty() {
                    String::new()
                } else {
                    format!("; blocked: {}", who.join(", "))
                }
            );
        }
        DrainEvent::Evicted { pod, .. } => tracing::debug!(about = %host, "pod {pod} is gone"),
        DrainEvent::Done {
            node,
            evicted,
            elapsed,
        } => tracing::info!(
            about = %host,
            "drained node {node} ({evicted} pods evicted in {})",
            kube::drain::fmt_duration(*elapsed)
        ),
    }
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::Kit;

    /// Drain events go to `--output json` with the host that asked for the drain.
    #[test]
    fn drain_events_carry_the_host() {
        let mut k = Kit::new(&["controller"]);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        k.state.events = Some(std::sync::Arc::new(move |v| s.lock().unwrap().push(v)));
        let ev = DrainEvent::Cordoned {
            node: "node-2".into(),
            already: false,
        };
        report(&k.state, "10.0.0.2:22", &ev);
        let got = seen.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["event"], "drain_cordoned");
        assert_eq!(got[0]["node"], "node-2");
        assert_eq!(got[0]["host"], "10.0.0.2:22");
        k.assert_nothing_ran();
    }
}
