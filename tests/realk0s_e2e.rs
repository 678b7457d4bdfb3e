//! End to end on testenv, where the k0s stand-in behaves like real k0s in ways our tool once
//! got wrong (each step fails without the matching fix):
//! * k0s v1.35.1 decodes the worker's join-token file at every start: after the join the tool
//!   leaves a valid dummy token there, and repairs a file an earlier run overwrote with a
//!   comment, so the worker restarts;
//! * k0s records install flags in pflag's rendering (`-l kubelet=2` → every component's level
//!   under `--logging`, `--labels` sorted from v1.34): a converged cluster is not reinstalled;
//! * a pre-release's kubelet reports the Kubernetes version without `-rc.N`
//!   (`v1.36.3+k0s` for k0s `v1.36.3-rc.0+k0s.0`): the upgrade's Ready wait accepts it.

mod common;

use common::cli::*;

use std::time::{Duration, Instant};

use testenv::{Env, Options};

const LONG: Duration = Duration::from_secs(90);

fn status(env: &Env, h: &testenv::Host) -> Option<serde_json::Value> {
    let out = env.exec(h, "/usr/local/bin/k0s status -o json").ok()?;
    serde_json::from_str(&out).ok()
}

fn node_json(env: &Env, name: &str) -> serde_json::Value {
    let c = env.hosts.iter().find(|h| h.role == "controller").unwrap();
    let out = env
        .exec(
            c,
            &format!("/usr/local/bin/k0s kubectl get node {name} -o json"),
        )
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Restarts the worker's service and waits (bounded) until k0s runs again and its node is
/// Ready with a heartbeat newer than the restart.
fn restart_worker_and_wait(env: &Env, w: &testenv::Host, within: Duration) -> Result<(), String> {
    let pid_before = env
        .exec(w, "systemctl show -p MainPID --value k0sworker")
        .unwrap();
    env.exec(w, "systemctl restart k0sworker").unwrap();
    let deadline = Instant::now() + within;
    loop {
        let pid = env
            .exec(w, "systemctl show -p MainPID --value k0sworker")
            .unwrap_or_default();
        // Running under a new PID for a few seconds (a worker that cannot start exits at once
        // and systemd restarts it every 10 s).
        if pid.trim() != "0" && pid != pid_before && status(env, w).is_some() {
            std::thread::sleep(Duration::from_secs(3));
            let pid2 = env
                .exec(w, "systemctl show -p MainPID --value k0sworker")
                .unwrap_or_default();
            if pid2 == pid {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let log = env
                .exec(w, "journalctl -u k0sworker --no-pager -n 20")
                .unwrap_or_default();
            return Err(format!("k0sworker did not come back:\n{log}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn v1_35_1_token_file_recorded_flags_and_a_prerelease_upgrade() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-realk0s-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 2);
    o.versions = vec![
        testenv::stamp::TOKEN_AT_EVERY_START_VERSION.to_string(),
        testenv::stamp::PRERELEASE_VERSION.to_string(),
    ];
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let w = env.hosts.iter().find(|h| h.role == "worker").unwrap();
    // Flags that k0s records differently from how they are written.
    let base: String = std::fs::read_to_string(&env.manifest)
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start() == "- role: worker" {
                format!("{l}\n    installFlags:\n    - -l kubelet=2\n    - --labels=zz.example/b=1,aa.example/a=2\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(base.contains("installFlags"), "{base}");
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    // The stand-in records the flags as k0s v1.35 does.
    let st = status(&env, w).expect("k0s status on the worker");
    let args: Vec<String> = serde_json::from_value(st["Args"].clone()).unwrap();
    assert!(
        args.contains(&"--labels=aa.example/a=2,zz.example/b=1".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--logging=containerd=info,etcd=info,konnectivity-server=1,kube-apiserver=1,kube-controller-manager=1,kube-scheduler=1,kubelet=2".to_string()),
        "{args:?}"
    );
    // Converged: the next apply changes nothing (no reinstall for a false flag drift).
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        changes(&text(&out.stdout)),
        Vec::<(String, String)>::new(),
        "{}",
        text(&out.stderr)
    );

    // v1.35.1: the token file holds a decodable token after the join, so the worker restarts.
    let tok = env.exec(w, "cat /etc/k0s/k0stoken").unwrap();
    assert!(
        !tok.trim().is_empty() && !tok.starts_with('#'),
        "token file after the join: {tok:?}"
    );
    restart_worker_and_wait(&env, w, LONG).unwrap();
    // With a comment in the file (what the tool wrote after a join before), a v1.35.1
    // worker cannot start, as real k0s v1.35.1 …
    let comment = "printf '# overwritten by k0sctl after join\\n' > /etc/k0s/k0stoken";
    env.exec(w, comment).unwrap();
    assert!(
        restart_worker_and_wait(&env, w, Duration::from_secs(25)).is_err(),
        "a v1.35.1 worker started with a comment as its token file"
    );
    env.exec(
        w,
        &format!("printf '%s' '{}' > /etc/k0s/k0stoken", tok.trim()),
    )
    .unwrap();
    restart_worker_and_wait(&env, w, LONG).unwrap();
    // … so apply repairs such a file on a running v1.35.1 worker.
    env.exec(w, comment).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ch = changes(&text(&out.stdout));
    assert!(
        ch.iter().any(|(_, a)| a.contains("dummy join token")),
        "{ch:?}\n{}",
        text(&out.stderr)
    );
    restart_worker_and_wait(&env, w, LONG).unwrap();

    // Upgrade to a pre-release: its kubelet reports v1.36.3+k0s.
    let (old, new) = (&env.versions[0], &env.versions[1]);
    std::fs::write(
        &m,
        base.replace(
            &format!("version: \"{old}\""),
            &format!("version: \"{new}\""),
        ),
    )
    .unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(
        out.status.success(),
        "upgrade failed:\n{}",
        text(&out.stderr)
    );
    for h in &env.hosts {
        assert_eq!(
            status(&env, h).unwrap()["Version"].as_str(),
            Some(new.as_str())
        );
    }
    let node = node_json(&env, &w.name);
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.36.3+k0s");
    let c = env.hosts.iter().find(|h| h.role == "controller").unwrap();
    let v = env
        .exec(c, "/usr/local/bin/k0s kubectl get --raw /version")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["gitVersion"], "v1.36.3+k0s");
}
