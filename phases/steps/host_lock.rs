//! The host lock's primitives: the holder line, the one-round-trip acquire (and read-only
//! check) scripts, and the part of the host probe that takes the lock in the probe's round
//! trip. The phases "Acquire exclusive host lock" and "Detect host operating systems" use them.

use crate::transport::{Cmd, Remote, shell_quote};

use super::State;
use crate::phases::{Failure, each_host};

/// A lock not refreshed for this long is stale and taken over (k0sctl's timing).
pub const STALE_SECS: u64 = 30;

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
pub fn acquire_script(path: &str, me: &str, dead: Option<&str>) -> String {
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

/// The read-only check of a dry run: prints `free`, or `held <age> <holder>`.
pub fn check_script(path: &str) -> String {
    format!(
        "p={}; [ -f \"$p\" ] || {{ echo free; exit 0; }}; echo \"held $(( $(date +%s) - $(stat -c %Y \"$p\") )) $(head -n1 \"$p\")\"",
        shell_quote(path)
    )
}

/// The lock attempt (or, in a dry run, the read-only check) as part of the host probe's root
/// script: prints `@@lockpath` (the lock file it used, chosen as the facts choose it: under
/// `/run/lock` when that exists) and `@@lock` (what [`acquire_script`] or [`check_script`]
/// printed), and leaves that result in `$K0SCTL_LOCK` for the rest of the script.
pub fn probe_part(dry: bool) -> String {
    let me = holder();
    let attempt = |path: &str| {
        let s = if dry {
            check_script(path)
        } else {
            acquire_script(path, &me, None)
        };
        format!(
            "K0SCTL_LOCKPATH={}; K0SCTL_LOCK=$(eval {})",
            shell_quote(path),
            shell_quote(&s)
        )
    };
    use crate::host::configurer::paths::{LOCK, LOCK_FALLBACK};
    format!(
        "if [ -d /run/lock ]; then {}; else {}; fi\n\
         echo @@lockpath; echo \"$K0SCTL_LOCKPATH\"\n\
         echo @@lock; printf '%s\\n' \"$K0SCTL_LOCK\"\n",
        attempt(LOCK),
        attempt(LOCK_FALLBACK)
    )
}

/// What the probe's lock attempt printed on `h`, when it used the lock file the facts chose.
pub fn probed_attempt(h: &super::HostState) -> Option<String> {
    let s = crate::host::facts::parse_sections(h.probe_out.as_deref()?);
    let path = s.get("lockpath")?.trim();
    let out = s.get("lock")?.trim();
    (path == h.host.as_ref()?.facts.lock_file && !out.is_empty()).then(|| out.to_string())
}

/// After a probe that may have taken the lock failed on `remote` (an unsupported OS, say):
/// find out how to become root and remove a lock file holding our line (best effort).
pub async fn release_after_failed_probe(
    mut remote: Remote,
    password: Option<crate::transport::Secret>,
) {
    if remote.detect_privilege(password).await.is_err() || !remote.privilege().can_escalate() {
        return;
    }
    use crate::host::configurer::paths::{LOCK, LOCK_FALLBACK};
    let me = shell_quote(&holder());
    let cmd = format!(
        "for p in {LOCK} {LOCK_FALLBACK}; do [ \"$(head -n1 \"$p\" 2>/dev/null)\" = {me} ] && rm -f \"$p\"; done; true"
    );
    let _ = remote.exec(Cmd::new(cmd).sudo()).await;
}

/// The connection and lock file of a probed host.
pub fn lock_path(h: &super::HostState) -> Option<(Remote, String)> {
    let p = h.host.as_ref()?;
    Some((p.remote.clone(), p.facts.lock_file.clone()))
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
    let locks: Vec<(String, Remote, String)> = state
        .hosts
        .iter()
        .filter_map(|h| lock_path(h).map(|(r, path)| (h.name.clone(), r, path)))
        .collect();
    // Best effort: a host where the removal fails keeps a lock that goes stale on its own.
    let _ = each_host(state.pool.limits(), &locks, |(_, r, path)| {
        // Under our lock, the files this run recorded as staged go first (those moved into
        // place are gone already; anything else is a leftover), then the record, then the lock.
        // Shell builtins but for the one `rm`: this runs on every host at the end of every run.
        let cmd = format!(
            "p={q}; c=; read -r c 2>/dev/null < \"$p\"; if [ \"$c\" = {m} ]; then {rm}; fi; true",
            q = shell_quote(path),
            m = shell_quote(&me),
            rm = super::staging::remove_script_and(path, "\"$p\"")
        );
        async move {
            let _ = r.exec(Cmd::new(cmd).sudo().short_lived()).await;
            Ok::<_, Failure>(())
        }
    })
    .await;
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
