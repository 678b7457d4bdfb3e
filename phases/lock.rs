//! "Acquire exclusive host lock" / "Release exclusive host lock": one k0sctl at a time per host.
//!
//! The lock is a file (`/run/lock/k0sctl`, or `/tmp/k0sctl.lock` without `/run/lock`) created
//! exclusively (`set -C`), holding who took it: user, machine, pid and start time. While held,
//! its mtime is refreshed every 10 s; a lock not refreshed for 30 s is stale and taken over
//! (k0sctl's timings). A lock whose holder ran on this same machine (same hostname and boot
//! id) as a process that no longer exists — a k0sctl killed with SIGKILL, say — is taken
//! over at once, saying so. Another live holder stops the run with the "locked" exit code,
//! naming it. A dry run takes no lock (that would change the host) but reports a live one.

use crate::phases::Failure;
use std::time::Duration;

use crate::transport::{Cmd, Remote, shell_quote};

use super::{Phase, PhaseFuture, State, collect, each_host};

pub const TITLE: &str = "Acquire exclusive host lock";
use super::steps::host_lock::lock_path;
use super::steps::host_lock::{STALE_SECS, acquire_script, check_script, probed_attempt};
pub use super::steps::host_lock::{dead_local_holder, holder, release};
const REFRESH: Duration = Duration::from_secs(10);

pub struct AcquireLock;

impl Phase for AcquireLock {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let me = holder();
            let dry = state.opts.dry_run;
            let locks: Vec<(String, Remote, String)> = state
                .hosts
                .iter()
                .filter_map(|h| lock_path(h).map(|(r, p)| (h.name.clone(), r, p)))
                .collect();
            // What the host probe's lock attempt printed, where it made one.
            let probed: Vec<Option<String>> = state
                .hosts
                .iter()
                .filter(|h| lock_path(h).is_some())
                .map(probed_attempt)
                .collect();
            let results = each_host(state.pool.limits(), locks.iter().zip(probed), |((name, r, path), probed)| {
                let me = me.clone();
                async move {
                    let mut out = match probed {
                        // The host probe already tried, in its round trip.
                        Some(out) => out,
                        None => {
                            let script = if dry {
                                // Read only: report a live holder, take nothing.
                                check_script(path)
                            } else {
                                acquire_script(path, &me, None)
                            };
                            r.run_str(Cmd::new(script).sudo().display_as(format!("lock {path}"))).await?
                        }
                    };
                    if let Some(rest) = out.trim().strip_prefix("held ") {
                        let who = rest.split_once(' ').map(|(_, w)| w).unwrap_or("").to_string();
                        if let Some(pid) = dead_local_holder(&who) {
                            if dry {
                                tracing::info!(about = %name, "the lock {path} is held by {who}, a process on this machine that is gone (pid {pid}); a real run takes it over");
                                return Ok(());
                            }
                            out = r.run_str(Cmd::new(acquire_script(path, &me, Some(&who))).sudo().display_as(format!("lock {path} (take over)"))).await?;
                            if out.trim() == "acquired" {
                                tracing::warn!(about = %name, "took over the lock {path} from {who}: pid {pid} on this machine is gone (killed or crashed)");
                            }
                        }
                    }
                    let out = out.trim();
                    if let Some(rest) = out.strip_prefix("held ") {
                        let (age, who) = rest.split_once(' ').unwrap_or((rest, ""));
                        let age: u64 = age.parse().unwrap_or(0);
                        if !dry || age < STALE_SECS {
                            return Err(Failure::locked(format!(
                                "another k0sctl is operating on this host: {who} (lock {path}, refreshed {age}s ago); wait for it to finish, or if it is gone the lock expires {STALE_SECS}s after its last refresh"
                            )));
                        }
                    }
                    Ok(())
                }
            })
            .await;
            let res = collect(TITLE, results);
            if !dry {
                // Also after a partial failure: release removes only files holding our line.
                state.lock_held = true;
            }
            if res.is_ok() && !dry {
                // Keep the locks fresh until released. `touch -c` never creates the file: a
                // refresh already on its way when the release removes the lock must not bring
                // back an empty lock file that would block the next run.
                let task = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(REFRESH).await;
                        for (_, r, path) in &locks {
                            let _ = r
                                .exec(
                                    Cmd::new(format!("touch -c {}", shell_quote(path)))
                                        .sudo()
                                        .short_lived()
                                        .display_as(format!("refresh lock {path}")),
                                )
                                .await;
                        }
                    }
                });
                state.lock_refresh = Some(task.abort_handle());
            }
            res
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            release(state).await;
            Ok(())
        })
    }
}

pub struct ReleaseLock;

impl Phase for ReleaseLock {
    fn title(&self) -> &'static str {
        "Release exclusive host lock"
    }

    fn should_run(&self, state: &State) -> bool {
        state.lock_held
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            release(state).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    /// Every host's lock file is created exclusively with our holder line; the release
    /// removes only a file that holds our line.
    #[tokio::test]
    async fn acquires_on_every_host_and_releases_only_ours() {
        let mut k = Kit::new(&["controller", "worker"]);
        for s in &k.scripts {
            s.on("set -C; printf", "acquired\n");
        }
        k.run(&AcquireLock).await.unwrap();
        assert!(k.state.lock_held);
        for s in &k.scripts {
            let c = s.commands();
            assert_eq!(c.len(), 1);
            assert!(c[0].contains("> /run/lock/k0sctl"), "{}", c[0]);
            assert!(c[0].contains(&shell_quote(&holder())), "{}", c[0]);
        }
        assert!(ReleaseLock.should_run(&k.state));
        for s in &k.scripts {
            s.on("rm -f /run/lock/k0sctl.staging \"$p\"", "");
        }
        k.run(&ReleaseLock).await.unwrap();
        assert!(!k.state.lock_held && k.state.lock_refresh.is_none());
        for s in &k.scripts {
            let rel = s.ran_matching("rm -f /run/lock/k0sctl.staging \"$p\"");
            assert_eq!(rel.len(), 1);
            assert!(
                rel[0].starts_with(
                    "p=/run/lock/k0sctl; c=; read -r c 2>/dev/null < \"$p\"; if [ \"$c\" = "
                ),
                "{}",
                rel[0]
            );
            // Under our lock, the staging files the record names go first, then the record
            // and the lock (one `rm`).
            assert!(
                rel[0].contains("rm -f /run/lock/k0sctl.staging \"$p\"; fi"),
                "{}",
                rel[0]
            );
            let (staging, lock) = (
                rel[0]
                    .find("done < \"$r\"")
                    .expect("recorded files removed"),
                rel[0]
                    .find("rm -f /run/lock/k0sctl.staging \"$p\"")
                    .unwrap(),
            );
            assert!(staging < lock, "{}", rel[0]);
        }
        assert!(!ReleaseLock.should_run(&k.state));
    }

    /// Another live holder stops the run, naming it, on that host only.
    #[tokio::test]
    async fn a_live_holder_elsewhere_fails_with_its_name() {
        let mut k = Kit::new(&["controller", "worker"]);
        k.script(0).on("set -C; printf", "acquired\n");
        k.script(1).on(
            "set -C; printf",
            "held 3 k0sctl alice@laptop pid 42 since 2026-01-01T00:00:00Z\n",
        );
        let e = k.run(&AcquireLock).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "10.0.0.2:22: another k0sctl is operating on this host: k0sctl alice@laptop pid 42"
            ),
            "{e}"
        );
        assert!(!e.contains("10.0.0.1:22"), "{e}");
        assert!(k.state.lock_held, "the clean-up releases what was taken");
        k.script(0).on("rm -f /run/lock/k0sctl.staging \"$p\"", "");
        k.script(1).on("rm -f /run/lock/k0sctl.staging \"$p\"", "");
        AcquireLock.clean_up(&mut k.state).await.unwrap();
        assert!(k.script(0).has_run("rm -f /run/lock/k0sctl.staging \"$p\""));
    }

    /// A dry run reads the lock (no `set -C` create) and takes nothing.
    #[tokio::test]
    async fn dry_run_only_reads() {
        let mut k = Kit::with_opts(&["controller"], dry());
        k.script(0).on("echo free", "free\n");
        k.run(&AcquireLock).await.unwrap();
        assert!(!k.state.lock_held && k.state.lock_refresh.is_none());
        assert!(!k.script(0).has_run("set -C"));
        k.script(0)
            .on("echo free", "held 2 k0sctl bob@ci pid 7 since x\n");
        let e = k.run(&AcquireLock).await.unwrap_err().to_string();
        assert!(e.contains("k0sctl bob@ci pid 7"), "{e}");
    }

    /// The host probe's lock attempt is used as is: no second command; a live holder it saw
    /// still stops the run. An attempt on another lock file than the facts chose is not used.
    #[tokio::test]
    async fn the_probes_attempt_is_used() {
        let mut k = Kit::new(&["controller", "worker"]);
        k.state.hosts[0].probe_out =
            Some("@@lockpath\n/run/lock/k0sctl\n@@lock\nacquired\n".into());
        k.state.hosts[1].probe_out = Some(
            "@@lockpath\n/run/lock/k0sctl\n@@lock\nheld 3 k0sctl alice@laptop pid 42 since x\n"
                .into(),
        );
        let e = k.run(&AcquireLock).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "10.0.0.2:22: another k0sctl is operating on this host: k0sctl alice@laptop pid 42"
            ),
            "{e}"
        );
        assert!(!e.contains("10.0.0.1:22"), "{e}");
        assert!(k.script(0).commands().is_empty());
        assert!(k.script(1).commands().is_empty());
        let mut k = Kit::new(&["controller"]);
        k.state.hosts[0].probe_out =
            Some("@@lockpath\n/tmp/k0sctl.lock\n@@lock\nacquired\n".into());
        k.script(0).on("set -C; printf", "acquired\n");
        k.run(&AcquireLock).await.unwrap();
        let c = k.script(0).commands();
        assert_eq!(c.len(), 1);
        assert!(c[0].contains("> /run/lock/k0sctl"), "{}", c[0]);
    }
}
