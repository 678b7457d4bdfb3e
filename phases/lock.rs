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
use futures::future::join_all;
use std::time::Duration;

use crate::transport::{Cmd, Remote, shell_quote};

use super::{Phase, PhaseFuture, State, collect, each_host};

pub const TITLE: &str = "Acquire exclusive host lock";
const STALE_SECS: u64 = 30;
const REFRESH: Duration = Duration::from_secs(10);

/// The holder line written into the lock file (the same for the whole process).
pub fn holder() -> String {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(make_holder).clone()
}

fn make_holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "k0sctl {user}@{} pid {} boot {} since {}",
        local_hostname(),
        std::process::id(),
        boot_id(),
        crate::logging::rfc3339(now)
    )
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The first 8 characters of this boot's id (a reboot, or another machine, has another one).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().chars().take(8).collect())
        .unwrap_or_else(|_| "unknown".into())
}

/// The pid of a holder line written by a k0sctl on this machine, in this boot, whose process
/// is gone; `None` for anything else (another machine, an older holder line without a boot
/// id, a live process). Such a lock can be taken over at once: nothing can refresh it.
pub fn dead_local_holder(who: &str) -> Option<u32> {
    let mut it = who.split_whitespace();
    if it.next()? != "k0sctl" {
        return None;
    }
    let (_, host) = it.next()?.rsplit_once('@')?;
    let (mut pid, mut boot) = (None, None);
    while let Some(w) = it.next() {
        match w {
            "pid" => pid = it.next().and_then(|p| p.parse::<u32>().ok()),
            "boot" => boot = it.next(),
            _ => {}
        }
    }
    let (pid, boot) = (pid?, boot?);
    if host != local_hostname() || boot == "unknown" || boot != boot_id() {
        return None;
    }
    (pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .then_some(pid)
}

/// One round trip: create the lock unless a live one exists; a stale one is replaced, and so
/// is one whose holder line is exactly `dead` (a holder known to be gone).
/// Prints `acquired`, or `held <age> <holder>`.
fn acquire_script(path: &str, me: &str, dead: Option<&str>) -> String {
    let (p, m) = (shell_quote(path), shell_quote(me));
    let dead = dead
        .map(|d| {
            format!(
                "if [ \"$cur\" = {} ]; then rm -f {p}; if ( set -C; printf '%s\\n' {m} > {p} ) 2>/dev/null; then echo acquired; exit 0; fi; fi\n",
                shell_quote(d)
            )
        })
        .unwrap_or_default();
    format!(
        "if ( set -C; printf '%s\\n' {m} > {p} ) 2>/dev/null; then echo acquired; exit 0; fi\n\
         age=$(( $(date +%s) - $(stat -c %Y {p} 2>/dev/null || date +%s) ))\n\
         cur=$(head -n1 {p} 2>/dev/null)\n\
         if [ \"$cur\" = {m} ]; then echo acquired; exit 0; fi\n\
         {dead}\
         if [ \"$age\" -ge {STALE_SECS} ]; then rm -f {p}; if ( set -C; printf '%s\\n' {m} > {p} ) 2>/dev/null; then echo acquired; exit 0; fi; fi\n\
         echo \"held $age $cur\"\n"
    )
}

fn lock_path(h: &super::HostState) -> Option<(Remote, String)> {
    let p = h.host.as_ref()?;
    Some((p.remote.clone(), p.facts.lock_file.clone()))
}

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
            let results = each_host(state.pool.limits(), locks.iter(), |(name, r, path)| {
                let me = me.clone();
                async move {
                                        let script = if dry {
                        // Read only: report a live holder, take nothing.
                        format!(
                            "p={}; [ -f \"$p\" ] || {{ echo free; exit 0; }}; echo \"held $(( $(date +%s) - $(stat -c %Y \"$p\") )) $(head -n1 \"$p\")\"",
                            shell_quote(path)
                        )
                    } else {
                        acquire_script(path, &me, None)
                    };
                    let mut out = r.run_str(Cmd::new(script).sudo().display_as(format!("lock {path}"))).await?;
                    if let Some(rest) = out.trim().strip_prefix("held ") {
                        let who = rest.split_once(' ').map(|(_, w)| w).unwrap_or("").to_string();
                        if let Some(pid) = dead_local_holder(&who) {
                            if dry {
                                tracing::info!("{name}: the lock {path} is held by {who}, a process on this machine that is gone (pid {pid}); a real run takes it over");
                                return Ok(());
                            }
                            out = r.run_str(Cmd::new(acquire_script(path, &me, Some(&who))).sudo().display_as(format!("lock {path} (take over)"))).await?;
                            if out.trim() == "acquired" {
                                tracing::warn!("{name}: took over the lock {path} from {who}: pid {pid} on this machine is gone (killed or crashed)");
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
                                .exec(Cmd::new(format!("touch -c {}", shell_quote(path))).sudo())
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

/// Stops the refresh and removes the lock files this run holds (only ours).
pub async fn release(state: &mut State) {
    if let Some(h) = state.lock_refresh.take() {
        h.abort();
    }
    if !std::mem::take(&mut state.lock_held) {
        return;
    }
    let me = holder();
    join_all(state.hosts.iter().filter_map(lock_path).map(|(r, path)| {
        // Under our lock, the files this run recorded as staged go first (those moved into
        // place are gone already; anything else is a leftover), then the record, then the lock.
        let cmd = format!(
            "p={q}; if [ \"$(head -n1 \"$p\" 2>/dev/null)\" = {m} ]; then {rm}; rm -f \"$p\"; fi; true",
            q = shell_quote(&path),
            m = shell_quote(&me),
            rm = super::steps::staging::remove_script(&path)
        );
        async move {
            let _ = r.exec(Cmd::new(cmd).sudo()).await;
        }
    }))
    .await;
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
mod tests {
    use super::*;

    #[test]
    fn dead_local_holders_are_recognised() {
        let me = holder();
        // Our own line: alive.
        assert_eq!(dead_local_holder(&me), None);
        // A pid that cannot exist (above pid_max), same host and boot: dead.
        let dead = me.replace(&format!("pid {} ", std::process::id()), "pid 4999999 ");
        assert_eq!(dead_local_holder(&dead), Some(4_999_999));
        // Another boot, another machine, or no boot id: not ours to judge.
        let other_boot = dead.replace(&format!("boot {} ", boot_id()), "boot 00000000 ");
        assert_eq!(dead_local_holder(&other_boot), None);
        let other_host = dead.replace(&format!("@{} ", local_hostname()), "@elsewhere.example ");
        assert_eq!(dead_local_holder(&other_host), None);
        assert_eq!(
            dead_local_holder("k0sctl someone@elsewhere pid 4242 since 2026-11-22T00:00:00Z"),
            None
        );
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
            s.on("rm -f \"$p\"", "");
        }
        k.run(&ReleaseLock).await.unwrap();
        assert!(!k.state.lock_held && k.state.lock_refresh.is_none());
        for s in &k.scripts {
            let rel = s.ran_matching("rm -f \"$p\"");
            assert_eq!(rel.len(), 1);
            assert!(
                rel[0]
                    .starts_with("p=/run/lock/k0sctl; if [ \"$(head -n1 \"$p\" 2>/dev/null)\" = "),
                "{}",
                rel[0]
            );
            // Under our own lock, what the staging record names goes first, then the lock.
            let (staging, lock) = (
                rel[0]
                    .find("rm -f /run/lock/k0sctl.staging")
                    .expect("record removed"),
                rel[0].find("rm -f \"$p\"").unwrap(),
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
        k.script(0).on("rm -f \"$p\"", "");
        k.script(1).on("rm -f \"$p\"", "");
        AcquireLock.clean_up(&mut k.state).await.unwrap();
        assert!(k.script(0).has_run("rm -f \"$p\""));
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
}
