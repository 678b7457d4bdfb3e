//! The one per-host fan-out: run a step on many hosts at once, at most `--concurrency` at a
//! time, each failure kept under its host's name.
//!
//! Every host runs to completion (a failure on one host does not stop the others: their
//! work is kept), and the results come back in the order the hosts were given. The slot is
//! the run's host slot ([`Limits::host_slot`]), taken once per host at this outermost level
//! and held until the host's step ends; nothing below it takes another.

use std::future::Future;

use futures::future::join_all;

use crate::transport::Limits;

use super::failure::Failure;
use super::{HostState, PhaseError};

/// One host's failure under its name (`address:port`, as messages name hosts).
pub type HostFailure = (String, Failure);

/// What a fan-out works on: something that names its host.
pub trait Named {
    fn host_name(&self) -> &str;
}

impl Named for &HostState {
    fn host_name(&self) -> &str {
        &self.name
    }
}

impl Named for &mut HostState {
    fn host_name(&self) -> &str {
        &self.name
    }
}

/// A lock's (host name, connection, path).
impl<R, P> Named for &(String, R, P) {
    fn host_name(&self) -> &str {
        &self.0
    }
}

/// A host with something that goes with it (its token, its plan…).
impl<A: Named, B> Named for (A, B) {
    fn host_name(&self) -> &str {
        self.0.host_name()
    }
}

/// Runs `step` for every item, at most `limits`' `--concurrency` at a time; returns each
/// host's result in the order given, failures named by host.
pub async fn each_host<T, R, F, Fut>(
    limits: &Limits,
    items: impl IntoIterator<Item = T>,
    step: F,
) -> Vec<Result<R, HostFailure>>
where
    T: Named,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R, Failure>>,
{
    join_all(items.into_iter().map(|item| {
        let name = item.host_name().to_string();
        // Futures do nothing until polled: the step starts once the slot is held.
        let fut = step(item);
        async move {
            let _slot = limits.host_slot().await;
            fut.await.map_err(|e| (name, e))
        }
    }))
    .await
}

/// The hosts' results as the phase's result: `Ok` with every value, or one [`PhaseError`]
/// naming every host that failed, its exit code derived from the causes.
pub fn all_ok<R>(
    phase: &'static str,
    results: Vec<Result<R, HostFailure>>,
) -> Result<Vec<R>, PhaseError> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(f) => failed.push(f),
        }
    }
    if failed.is_empty() {
        Ok(ok)
    } else {
        Err(PhaseError::failed_on(phase, failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Code;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct H(String);
    impl Named for &H {
        fn host_name(&self) -> &str {
            &self.0
        }
    }

    fn hosts(n: usize) -> Vec<H> {
        (0..n).map(|i| H(format!("10.0.0.{i}:22"))).collect()
    }

    #[tokio::test]
    async fn applies_the_concurrency_limit() {
        let hs = hosts(7);
        let limits = Limits::new(2, 0);
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let r = each_host(&limits, &hs, |h| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Failure>(h.0.clone())
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        let names = all_ok("t", r).unwrap();
        assert_eq!(names, hs.iter().map(|h| h.0.clone()).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn unlimited_runs_all_at_once() {
        let hs = hosts(5);
        let limits = Limits::new(0, 0);
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let _ = each_host(&limits, &hs, |_| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Failure>(())
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn every_host_runs_and_failures_are_named() {
        let hs = hosts(3);
        let ran = AtomicUsize::new(0);
        let r = each_host(&Limits::new(1, 0), &hs, |h| {
            let ran = &ran;
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                if h.0.ends_with(".1:22") {
                    Err(Failure::blocked("pdb default/x"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(ran.load(Ordering::SeqCst), 3);
        let e = all_ok("Upgrade workers", r).unwrap_err();
        assert_eq!(e.code, Code::BlockedByCluster);
        assert_eq!(e.hosts.len(), 1);
        assert_eq!(e.hosts[0].0, "10.0.0.1:22");
    }
}
