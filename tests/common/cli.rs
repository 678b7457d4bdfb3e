//! Driving the `k0sctl` binary in the end-to-end tests: run it with a private cache directory
//! (and none of the caller's DEBUG/DRY_RUN/agent), read its `--output json` change events, and
//! ask the cluster with the machine's real `kubectl`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_k0sctl");

/// `k0sctl <args>` with `XDG_CACHE_HOME=cache`, stdin closed; not started yet.
pub fn k0sctl_cmd(cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("DEBUG")
        .env_remove("DRY_RUN")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    c
}

/// Runs `k0sctl <args>` to completion.
pub fn k0sctl(cache: &Path, args: &[&str]) -> Output {
    k0sctl_cmd(cache, args).output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `change` events of a `--output json` run, as (host, action).
pub fn changes(stdout: &str) -> Vec<(String, String)> {
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

/// `kubectl --kubeconfig kc <args>` (with `stdin` piped in); panics unless it succeeds.
pub fn kubectl(kc: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(kc).args(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("kubectl");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The nodes of the Ready, not terminating pods labelled `app=<app>` in `default`; `None` when
/// kubectl failed (a sample that says nothing).
pub fn ready_pods(kc: &Path, app: &str) -> Option<Vec<String>> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args([
            "get",
            "pods",
            "-n",
            "default",
            "-l",
            &format!("app={app}"),
            "-o",
            "json",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .collect(),
    )
}
