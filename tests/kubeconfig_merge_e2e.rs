//! `k0sctl kubeconfig --merge` against a testenv cluster (1 controller + 1 worker), checked
//! with the real `kubectl`: the context is added next to what the file had, kubectl reaches the
//! cluster through it, a re-run replaces its entries, `--set-current` switches to it. The same
//! cluster then goes through `backup --output-format json` and `reset --output json`, whose
//! event lines follow apply's schema.

mod common;

use common::cli::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use testenv::{Env, Options};

fn kubectl_env(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl (the machine image ships it)");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

const OTHER: &str = "apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://192.0.2.1:6443
  name: elsewhere
contexts:
- context:
    cluster: elsewhere
    user: admin
  name: elsewhere
current-context: elsewhere
users:
- name: admin
  user:
    token: not-a-real-token
";

/// The JSON event lines of a run; every stdout line must be one.
fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn check_json_run(stdout: &str, first_phase: &str, changes: bool) {
    let ev = events(stdout);
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"phase_start"), "{stdout}");
    assert_eq!(ev[0]["phase"], first_phase, "{stdout}");
    assert_eq!(kinds.last(), Some(&"summary"), "{stdout}");
    let summary = ev.last().unwrap();
    assert_eq!(summary["ok"], true, "{stdout}");
    assert_eq!(summary["exit_code"], 0, "{stdout}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "phase_start").count(),
        kinds.iter().filter(|k| **k == "phase_end").count(),
        "{stdout}"
    );
    assert_eq!(kinds.contains(&"change"), changes, "{stdout}");
    assert_eq!(
        summary["changes"].as_u64().unwrap() > 0,
        changes,
        "{stdout}"
    );
}

#[test]
fn kubeconfig_merge_with_kubectl_then_json_backup_and_reset() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-kcmerge-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 2)).expect("testenv up");
    let cache = dir.path().join("cache");
    let manifest = env.manifest.display().to_string();
    let out = k0sctl(&cache, &["apply", "-c", &manifest]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    // A kubeconfig with another cluster in it, mode 0640, named second in KUBECONFIG.
    let kdir = dir.path().join("kube");
    std::fs::create_dir(&kdir).unwrap();
    let file = kdir.join("config");
    std::fs::write(&file, OTHER).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let merge = |extra: &[&str]| {
        let mut args = vec!["kubeconfig", "-c", &manifest, "--merge", "-n", "lab"];
        args.extend_from_slice(extra);
        let out = k0sctl_cmd(&cache, &args)
            .env("KUBECONFIG", format!(":{}:/nonexistent", file.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "", "--merge prints no kubeconfig");
        text(&out.stderr)
    };
    let err = merge(&[]);
    assert!(err.contains("Added context \"lab\""), "{err}");
    let ctx = kubectl_env(&file, &["config", "get-contexts", "-o", "name"]);
    let mut names: Vec<&str> = ctx.lines().collect();
    names.sort();
    assert_eq!(names, ["elsewhere", "lab"]);
    assert_eq!(
        kubectl_env(&file, &["config", "current-context"]).trim(),
        "elsewhere"
    );
    let nodes = kubectl_env(&file, &["--context", "lab", "get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/worker0");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "an existing file keeps its mode");

    // A re-run with --set-current: same entries (replaced, not added), now current.
    let err = merge(&["--set-current"]);
    assert!(err.contains("Updated context \"lab\""), "{err}");
    assert_eq!(
        kubectl_env(&file, &["config", "current-context"]).trim(),
        "lab"
    );
    let view: serde_json::Value =
        serde_json::from_str(&kubectl_env(&file, &["config", "view", "-o", "json"])).unwrap();
    let count = |k: &str| view[k].as_array().unwrap().len();
    assert_eq!(
        (count("clusters"), count("contexts"), count("users")),
        (2, 2, 2)
    );
    let nodes = kubectl_env(&file, &["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/worker0");
    // Nothing but the file in its directory (the temp file was renamed over it).
    assert_eq!(std::fs::read_dir(&kdir).unwrap().count(), 1);

    // A new file is created 0600.
    let fresh = dir.path().join("fresh/config");
    let out = k0sctl_cmd(&cache, &["kubeconfig", "-c", &manifest, "--merge"])
        .env("KUBECONFIG", &fresh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // backup and reset with JSON events on stdout.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let archive = work.join("b.tar.gz");
    let out = k0sctl(
        &cache,
        &[
            "backup",
            "-c",
            &manifest,
            "--output-format",
            "json",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "backup: {}", text(&out.stderr));
    // A backup changes nothing on the hosts.
    check_json_run(&text(&out.stdout), "Connect to hosts", false);
    assert!(archive.is_file());
    let out = k0sctl(
        &cache,
        &["reset", "-c", &manifest, "--force", "--output", "json"],
    );
    assert!(out.status.success(), "reset: {}", text(&out.stderr));
    check_json_run(&text(&out.stdout), "Connect to hosts", true);
}
