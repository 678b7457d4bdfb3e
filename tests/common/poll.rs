//! Bounded polling: the one way tests wait for something to become true.
//!
//! `what` names the awaited fact; on timeout the test panics naming it and the last
//! observation, so a failure says what never happened. The bound is a timeout, not a speed
//! claim: it only has to be generous enough that a loaded machine still gets there.

use std::time::{Duration, Instant};

/// Calls `check` every `every` until it returns `Some`, and returns that value; panics after
/// `within` naming `what`.
pub fn poll_until<T>(
    what: &str,
    within: Duration,
    every: Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    poll_until_or(what, within, every, check).unwrap_or_else(|e| panic!("{e}"))
}

/// [`poll_until`] for callers that must clean up (kill a child, say why) before failing, or
/// that must not panic (in `Drop`): the timeout is an `Err` naming `what`.
pub fn poll_until_or<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        std::thread::sleep(every);
    }
}

/// [`poll_until`] for a condition.
pub fn poll(what: &str, within: Duration, every: Duration, mut ok: impl FnMut() -> bool) {
    poll_until(what, within, every, || ok().then_some(()))
}

/// The async form of [`poll_until`] (sleeps with tokio, so the runtime keeps running).
pub async fn poll_until_async<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}
