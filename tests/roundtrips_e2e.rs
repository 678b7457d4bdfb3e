//! How many commands `k0sctl apply` sends each host, end to end on testenv (1 controller + 2
//! workers): a fresh worker join costs at most 8, a no-op re-apply one command per host for
//! OS detection, host facts, the lock and the k0s facts (the host probe) plus the lock's
//! release, and a dry run only the probe. Counted from the run's log file, where the transport
//! writes one `exec` line per remote command (with the host and the command as shown); the
//! lock's refresh, which a slow run sends every 10 s, is not counted.

mod common;

use common::cli::*;

use testenv::{Env, Options};

/// The newest run log in `cache` (their names start with the run's UTC time).
fn newest_log(cache: &std::path::Path) -> String {
    let mut logs: Vec<_> = std::fs::read_dir(cache.join("k0sctl/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    logs.sort();
    std::fs::read_to_string(logs.last().expect("a run log")).unwrap()
}

/// The commands the run of `log` sent to the host at `ip` (as the log shows them).
fn commands(log: &str, ip: &str) -> Vec<String> {
    let host = format!("@{ip}:22\"");
    log.lines()
        .filter(|l| l.contains(" exec ") && l.contains(&host))
        // The lock's refresh every 10 s counts the run's length, not its work.
        .filter(|l| !l.contains("cmd=refresh lock "))
        .map(|l| l.split_once("cmd=").map_or(l, |(_, c)| c).to_string())
        .collect()
}

#[test]
fn fresh_join_and_no_op_reapply_round_trips() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-roundtrips-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let cache = dir.path().join("cache");
    let m = env.manifest.display().to_string();
    let ips: Vec<String> = env.hosts.iter().map(|h| h.ip.to_string()).collect();

    let out = k0sctl(&cache, &["apply", "-c", &m]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let log = newest_log(&cache);
    for ip in &ips[1..] {
        let c = commands(&log, ip);
        assert!(
            c.len() <= 8,
            "a fresh worker join sent {} commands to {ip} (at most 8):\n{}",
            c.len(),
            c.join("\n")
        );
        assert!(c.len() >= 4, "too few commands logged for {ip}: {c:?}");
    }

    // No-op re-apply: the probe and the lock's release, nothing else, on every host (the
    // leader's cluster ID and node list come with its probe).
    let out = k0sctl(&cache, &["apply", "-c", &m]);
    assert!(
        out.status.success(),
        "re-apply failed:\n{}",
        text(&out.stderr)
    );
    let log = newest_log(&cache);
    assert!(
        log.contains("No changes"),
        "the re-apply changed something:\n{log}"
    );
    for ip in &ips {
        let c = commands(&log, ip);
        assert_eq!(
            c.len(),
            2,
            "a no-op re-apply sent {} commands to {ip} (probe + lock release):\n{}",
            c.len(),
            c.join("\n")
        );
        assert!(c[0].starts_with("(probe host"), "{c:?}");
    }

    // A dry run takes no lock: the probe (which only looks at the lock) and nothing else.
    let out = k0sctl(&cache, &["apply", "-c", &m, "--dry-run"]);
    assert!(
        out.status.success(),
        "dry run failed:\n{}",
        text(&out.stderr)
    );
    let log = newest_log(&cache);
    for ip in &ips {
        let c = commands(&log, ip);
        assert_eq!(c.len(), 1, "a dry run sent to {ip}:\n{}", c.join("\n"));
    }
}
