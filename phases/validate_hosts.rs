//! "Validate hosts": checks across the probed hosts before anything is changed — unique node
//! names, private addresses and (for k0s < 1.30) machine IDs, a way to become root, clocks
//! within 30 s of the hosts' median, and not every controller marked for reset.

use std::collections::BTreeMap;

use crate::exit::Code;
use crate::k0s::version::K0sVersion;

use super::{Failure, Phase, PhaseError, PhaseFuture, State};

pub struct ValidateHosts;

pub const TITLE: &str = "Validate hosts";

/// Largest allowed deviation of a host's clock from the median of all hosts.
pub const MAX_CLOCK_SKEW_SECS: f64 = 30.0;

impl Phase for ValidateHosts {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let mut problems: Vec<(String, String)> = Vec::new();

            let controllers: Vec<_> = state
                .hosts
                .iter()
                .filter(|h| h.config.is_controller())
                .collect();
            if !controllers.is_empty() && controllers.iter().all(|h| h.config.reset) {
                return Err(PhaseError::new(
                    Code::InvalidConfig,
                    TITLE,
                    "all controllers are marked to be reset - this will break the cluster. use `k0sctl reset` instead",
                ));
            }

            let names: Vec<(String, Option<String>)> = state
                .hosts
                .iter()
                .map(|h| (h.name.clone(), h.node_name().ok()))
                .collect();
            for (value, hosts) in duplicates(&names) {
                problems.push((hosts.join(", "), format!("hostname {value:?} is not unique: node names must differ (set hostname: on one of them)")));
            }
            let addrs: Vec<(String, Option<String>)> = state
                .hosts
                .iter()
                .map(|h| (h.name.clone(), h.private_address()))
                .collect();
            for (value, hosts) in duplicates(&addrs) {
                problems.push((hosts.join(", "), format!("private address {value} is not unique (set privateAddress: or privateInterface:)")));
            }
            let before_130 = state
                .target_version()
                .is_some_and(|v| v < K0sVersion::parse("v1.30.0").expect("constant"));
            if before_130 {
                let ids: Vec<(String, Option<String>)> = state
                    .hosts
                    .iter()
                    .map(|h| {
                        (
                            h.name.clone(),
                            h.host
                                .as_ref()
                                .map(|p| p.facts.machine_id.clone())
                                .filter(|m| !m.is_empty()),
                        )
                    })
                    .collect();
                for (value, hosts) in duplicates(&ids) {
                    problems.push((hosts.join(", "), format!("machine-id {value} is not unique (k0s before v1.30 requires unique /etc/machine-id)")));
                }
            }

            let mut skews = Vec::new();
            for h in &state.hosts {
                let Ok(p) = h.probed() else { continue };
                if !p.remote.privilege().can_escalate() {
                    let why = p
                        .remote
                        .privilege()
                        .wrap("true", &h.name)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    problems.push((h.name.clone(), why));
                }
                skews.push((h.name.clone(), p.facts.clock_skew_secs));
            }
            for (host, off) in skewed(&skews, MAX_CLOCK_SKEW_SECS) {
                problems.push((
                    host,
                    format!("clock is {off:+.0} s off the median of the hosts (more than {MAX_CLOCK_SKEW_SECS:.0} s); synchronise the clocks (e.g. NTP)"),
                ));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(PhaseError::failed_on(
                    TITLE,
                    problems
                        .into_iter()
                        .map(|(h, m)| (h, Failure::other(m)))
                        .collect(),
                ))
            }
        })
    }
}

/// Values shared by more than one host: (value, hosts), in a stable order.
pub fn duplicates(values: &[(String, Option<String>)]) -> Vec<(String, Vec<String>)> {
    let mut by_value: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (host, v) in values {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            by_value
                .entry(v.to_lowercase())
                .or_default()
                .push(host.clone());
        }
    }
    by_value
        .into_iter()
        .filter(|(_, hosts)| hosts.len() > 1)
        .collect()
}

/// Hosts whose clock deviates from the median skew by more than `limit` seconds, with the
/// deviation (as k0sctl: a median, so one wrong clock does not move the reference).
pub fn skewed(skews: &[(String, f64)], limit: f64) -> Vec<(String, f64)> {
    if skews.len() < 2 {
        return Vec::new();
    }
    let mut v: Vec<f64> = skews.iter().map(|(_, s)| *s).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    skews
        .iter()
        .filter(|(_, s)| (s - median).abs() > limit)
        .map(|(h, s)| (h.clone(), s - median))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_values() {
        let v = vec![
            ("a".to_string(), Some("Node".to_string())),
            ("b".to_string(), Some("node".to_string())),
            ("c".to_string(), Some("other".to_string())),
            ("d".to_string(), None),
            ("e".to_string(), None),
        ];
        assert_eq!(
            duplicates(&v),
            vec![("node".to_string(), vec!["a".to_string(), "b".to_string()])]
        );
    }

    #[test]
    fn clock_skew_against_median() {
        let s = |v: &[f64]| -> Vec<(String, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, x)| (format!("h{i}"), *x))
                .collect()
        };
        assert!(skewed(&s(&[0.5, 1.0, -2.0]), 30.0).is_empty());
        let out = skewed(&s(&[0.0, 1.0, 45.0, 0.5]), 30.0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "h2");
        assert!((out[0].1 - 44.25).abs() < 1e-9);
        // One host alone is never skewed (it is its own median).
        assert!(skewed(&s(&[100.0]), 30.0).is_empty());
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::Kit;

    #[tokio::test]
    async fn distinct_hosts_pass_without_running_anything() {
        let mut k = Kit::new(&["controller", "worker", "worker"]);
        k.run(&ValidateHosts).await.unwrap();
        k.assert_nothing_ran();
    }

    /// Duplicate node names (case-insensitive) and a skewed clock are reported per host.
    #[tokio::test]
    async fn reports_duplicate_names_and_clock_skew() {
        let mut k = Kit::new(&["controller", "worker", "worker"]);
        k.state.hosts[2].host.as_mut().unwrap().facts.hostname = "node-2".into();
        k.state.hosts[0]
            .host
            .as_mut()
            .unwrap()
            .facts
            .clock_skew_secs = 120.0;
        let e = k.run(&ValidateHosts).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22, 10.0.0.3:22: hostname \"node-2\" is not unique"),
            "{e}"
        );
        assert!(
            e.contains("10.0.0.1:22: clock is +120 s off the median"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refuses_to_reset_every_controller_and_needs_root() {
        let mut k = Kit::new(&["controller", "worker"]);
        k.state.hosts[0].config.reset = true;
        let e = k.run(&ValidateHosts).await.unwrap_err().to_string();
        assert!(e.contains("all controllers are marked to be reset"), "{e}");

        let mut k = Kit::new(&["controller", "worker"]);
        let p = k.state.hosts[1].host.as_mut().unwrap();
        p.remote.set_privilege(crate::transport::Privilege::None);
        let e = k.run(&ValidateHosts).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22") && e.contains("neither passwordless `sudo -n`"),
            "{e}"
        );
    }
}
