//! More hosts than `--concurrency`: `exec` and `apply` on 12 testenv hosts with
//! `--concurrency 3` finish (a task holding a host slot never waits for a second one).
//! Each run is bounded so that a deadlock fails the test instead of hanging it.

mod common;

use common::cli::*;

use std::process::Output;
use std::time::Duration;

use testenv::{Env, Options};

/// Runs `k0sctl <args>`, killing it (and failing) if it has not finished within `bound`.
fn bounded(cache: &std::path::Path, args: &[&str], bound: Duration) -> Output {
    let mut c = k0sctl_cmd(cache, args);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let ended = common::poll::poll_until_or(
        "k0sctl to finish",
        bound,
        Duration::from_millis(200),
        || child.try_wait().unwrap().map(drop),
    );
    if ended.is_err() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "k0sctl {args:?} still running after {bound:?} (deadlock?)\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

#[test]
fn exec_and_apply_on_more_hosts_than_concurrency() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-conc-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 12)).expect("testenv up");
    let cache = dir.path().join("cache");
    let manifest = env.manifest.display().to_string();

    let out = bounded(
        &cache,
        &[
            "exec",
            "-c",
            &manifest,
            "--concurrency",
            "3",
            "--",
            "hostname",
        ],
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for h in &env.hosts {
        let want = format!("{}:{}: {}", h.ip, h.ssh_port, h.name);
        assert!(
            stdout.lines().any(|l| l == want),
            "missing {want:?} in:\n{stdout}"
        );
    }
    let err = text(&out.stderr);
    assert!(
        err.contains("==> 12 hosts: 12 succeeded, 0 failed, 0 unreachable"),
        "{err}"
    );

    let kc = dir.path().join("admin.conf");
    let out = bounded(
        &cache,
        &[
            "apply",
            "-c",
            &manifest,
            "--concurrency",
            "3",
            "--kubeconfig-out",
            kc.to_str().unwrap(),
        ],
        Duration::from_secs(1200),
    );
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let nodes = kubectl(&kc, &["get", "nodes", "-o", "name"], None);
    assert_eq!(nodes.lines().count(), 11, "{nodes}");
}
