//! Upgrades end to end on testenv (real SSH, systemd, the k0s stand-in's v1.30.x → v1.31.x):
//! changed install flags reinstall each host once without a drain; a downgrade is refused
//! before anything changes; controllers are upgraded one at a time.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use testenv::{Env, Options};

const BIN: &str = env!("CARGO_BIN_EXE_k0sctl");

fn k0sctl(cache: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("DEBUG")
        .env_remove("DRY_RUN")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `change` events of a `--output json` run, as (host, action).
fn changes(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "change")
        .map(|v| {
            (
                v["host"].as_str().unwrap_or("").to_string(),
                v["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn with_version(manifest: &str, from: &str, to: &str) -> String {
    manifest.replace(
        &format!("version: \"{from}\""),
        &format!("version: \"{to}\""),
    )
}

fn running_version(env: &Env, h: &testenv::Host) -> String {
    let out = env.exec(h, "/usr/local/bin/k0s status -o json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Version"].as_str().unwrap_or("").to_string()
}

#[test]
fn install_flag_drift_reinstalls_each_host_once_and_downgrades_are_refused() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-reinstall-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let cache = dir.path().join("cache");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    // New install flags on every host: each is reinstalled exactly once, nothing is drained.
    let flagged: String = base
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("- role:") {
                format!("{l}\n    installFlags:\n    - --labels=k0sctl.test/flag=yes\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&m, &flagged).unwrap();
    let pids: Vec<String> = env
        .hosts
        .iter()
        .map(|h| {
            let svc = if h.role == "controller" {
                "k0scontroller"
            } else {
                "k0sworker"
            };
            env.exec(h, &format!("systemctl show -p MainPID --value {svc}"))
                .unwrap()
        })
        .collect();
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let ch = changes(&text(&out.stdout));
    for h in &env.hosts {
        let name = format!("{}:{}", h.ip, h.ssh_port);
        let mine: Vec<&String> = ch
            .iter()
            .filter(|(x, _)| *x == name)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(mine.len(), 1, "{}: {ch:?}", h.name);
        assert!(mine[0].starts_with("reinstalled k0s"), "{ch:?}");
        let st = env.exec(h, "/usr/local/bin/k0s status -o json").unwrap();
        assert!(
            st.contains("--labels=k0sctl.test/flag=yes"),
            "{}: {st}",
            h.name
        );
    }
    assert!(
        !text(&out.stderr).contains("drain"),
        "{}",
        text(&out.stderr)
    );
    for (h, pid) in env.hosts.iter().zip(&pids) {
        let svc = if h.role == "controller" {
            "k0scontroller"
        } else {
            "k0sworker"
        };
        let now = env
            .exec(h, &format!("systemctl show -p MainPID --value {svc}"))
            .unwrap();
        assert_ne!(&now, pid, "{} was not restarted", h.name);
    }
    // Converged: the next apply changes nothing.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(changes(&text(&out.stdout)), Vec::<(String, String)>::new());

    // A downgrade is refused before anything changes.
    let older = with_version(&flagged, &env.versions[0], "v1.29.9+k0s.0");
    std::fs::write(&m, older).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "can't perform a downgrade: {} > v1.29.9+k0s.0",
            env.versions[0]
        )),
        "{err}"
    );
    for h in &env.hosts {
        assert_eq!(running_version(&env, h), env.versions[0]);
    }
}

#[test]
fn controllers_upgrade_one_at_a_time() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-upgrade-ctl-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 3;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    let (old, new) = (&env.versions[0], env.versions.last().unwrap());
    std::fs::write(&m, with_version(&base, old, new)).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert_eq!(
        plan.matches(&format!("upgrade k0s controller {old} to {new}"))
            .count(),
        3,
        "{plan}"
    );
    for h in &env.hosts {
        assert_eq!(
            &running_version(&env, h),
            old,
            "the dry run upgraded {}",
            h.name
        );
    }

    let out = k0sctl(&cache, &["apply", "-c", ms]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "upgrade failed:\n{err}");
    for h in &env.hosts {
        assert_eq!(&running_version(&env, h), new, "{}", h.name);
    }
    // One at a time: each controller's upgrade finished before the next one started.
    let events: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(": upgrading k0s ") || l.contains(": upgraded to k0s "))
        .collect();
    assert_eq!(events.len(), 6, "{err}");
    for pair in events.chunks(2) {
        let host = |l: &str| {
            l.split(": ")
                .next()
                .unwrap_or("")
                .rsplit(' ')
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert!(pair[0].contains("upgrading"), "{events:?}");
        assert!(pair[1].contains("upgraded"), "{events:?}");
        assert_eq!(host(pair[0]), host(pair[1]), "{events:?}");
    }
    // Converged.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(changes(&text(&out.stdout)), Vec::<(String, String)>::new());
}
