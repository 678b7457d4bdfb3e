//! The live terminal display end to end: `k0sctl apply` on testenv under a pseudo-terminal
//! (`script`) draws the phase spinner, a line per host, an upload byte bar and the phase
//! timing table, and succeeds; without a terminal, and with `--output json` on one, the
//! output is the plain lines without any of it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use testenv::{Env, Options};

const BIN: &str = env!("CARGO_BIN_EXE_k0sctl");
/// The phase spinner's frames (src/display.rs).
const TICKS: &str = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Drops ANSI escape sequences (colours, cursor movement, line clearing).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if it.peek() == Some(&'[') {
            it.next();
            for c in it.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            it.next();
        }
    }
    out
}

/// `k0sctl <args>` on a pseudo-terminal; returns the exit status and what the terminal got.
fn on_tty(cache: &Path, args: &str) -> (Option<i32>, String) {
    let out = Command::new("script")
        .args(["-qec", &format!("{BIN} {args}"), "/dev/null"])
        .env("XDG_CACHE_HOME", cache)
        .env("TERM", "xterm-256color")
        .env_remove("DEBUG")
        .env_remove("TRACE")
        .env_remove("DRY_RUN")
        .env_remove("NO_COLOR")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    (out.status.code(), text(&out.stdout))
}

fn plain(cache: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("DEBUG")
        .env_remove("TRACE")
        .env_remove("DRY_RUN")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The phase titles of the timing table in `out` (between its header and `Total`).
fn timed_phases(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.contains("==> Phase timings:"))
        .skip(1)
        .map(|l| l.split_once(" INFO ").map_or(l, |(_, m)| m).trim())
        .take_while(|l| !l.starts_with("Total"))
        .filter_map(|l| l.rsplit_once("  ").map(|(t, _)| t.trim().to_string()))
        .collect()
}

#[test]
fn apply_on_a_terminal_draws_and_plain_output_is_unchanged() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-display-")
        .tempdir()
        .unwrap();
    let mut opts = Options::new(dir.path().join("env"), 2);
    // Slow enough uploads of the k0s stand-in that the byte bars are drawn.
    opts.uplink_mbit = Some(200);
    let env = Env::up(opts).expect("testenv up");
    let cache = dir.path().join("cache");
    // `uploadBinary`: k0sctl downloads the binary once and uploads it to every host.
    let mut lines = Vec::new();
    for l in std::fs::read_to_string(&env.manifest).unwrap().lines() {
        lines.push(l.to_string());
        if l.trim_start().starts_with("k0sDownloadURL:") {
            lines.push("    uploadBinary: true".into());
        }
    }
    let upload = dir.path().join("upload.yaml");
    std::fs::write(&upload, lines.join("\n") + "\n").unwrap();
    let manifest = upload.display().to_string();
    let hosts: Vec<String> = env
        .hosts
        .iter()
        .map(|h| format!("{}:{}", h.ip, h.ssh_port))
        .collect();

    // The install on a terminal.
    let (code, raw) = on_tty(&cache, &format!("apply -c {manifest}"));
    let out = strip_ansi(&raw);
    assert_eq!(code, Some(0), "apply failed on a terminal:\n{out}");
    // The log lines are all there, whole (printed above the bars, not into them).
    assert!(
        out.lines().any(|l| l
            .trim_end()
            .ends_with("INFO ==> Running phase: Connect to hosts")),
        "{out}"
    );
    assert!(out.contains("==> Changes made:"), "{out}");
    assert!(out.contains("==> Finished in"), "{out}");
    // The timing table, with the phases that ran.
    let timed = timed_phases(&out);
    assert!(
        timed.iter().any(|t| t == "Connect to hosts")
            && timed.iter().any(|t| t == "Install workers"),
        "timing table: {timed:?}\n{out}"
    );
    assert!(out.contains("Total"), "{out}");
    // The phase spinner: a frame, then the title of a phase (no `==>`).
    assert!(
        timed
            .iter()
            .any(|t| TICKS.chars().any(|c| out.contains(&format!("{c} {t}")))),
        "no phase spinner line drawn:\n{out}"
    );
    // A line per host (`<host> <action>`, where log lines have `<host>: `).
    for h in &hosts {
        assert!(
            out.contains(&format!("  {h} ")),
            "no display line for {h}:\n{out}"
        );
    }
    assert!(
        out.contains(&format!("  {} connected", hosts[0]))
            || out
                .lines()
                .any(|l| l.starts_with(&format!("  {} ", hosts[0]))),
        "{out}"
    );
    // Host lines show the actions of the log lines about the host (their `about` field), not
    // only the changes of the `change` events: one of these, which only log lines say, is drawn.
    const LOGGED: &[&str] = &[
        "connected",
        "is running ",
        "is the leader",
        "will be the leader",
        "uploading k0s",
        "installing k0s",
        "installed k0s ",
        "wrote k0s config",
        "the kubernetes API is ready",
        "k0s reconciled",
        "controller joined",
        "node ",
    ];
    // (A log line reads `<host>: <action>`, a host line `  <host> <action>`.)
    let logged_action = hosts
        .iter()
        .any(|h| LOGGED.iter().any(|a| out.contains(&format!("  {h} {a}"))));
    assert!(logged_action, "no host line with a logged action:\n{out}");
    // The upload byte bar.
    assert!(
        out.contains("MiB/") && out.contains("] "),
        "no upload byte bar drawn:\n{out}"
    );

    // Not a terminal: exactly the plain lines, no spinner, no host lines, no timings.
    let o = plain(&cache, &["apply", "-c", &manifest]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("==> Running phase: Connect to hosts"), "{err}");
    assert!(!err.chars().any(|c| TICKS.contains(c)), "{err}");
    assert!(!err.contains("Phase timings"), "{err}");
    assert!(!err.contains('\x1b'), "{err}");
    for h in &hosts {
        assert!(!err.contains(&format!("  {h} ")), "{err}");
    }

    // `--output json` on a terminal: events and plain lines, no display.
    let (code, raw) = on_tty(&cache, &format!("apply -c {manifest} --output json"));
    let out = strip_ansi(&raw);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"event\":\"summary\""), "{out}");
    assert!(!out.chars().any(|c| TICKS.contains(c)), "{out}");
    assert!(!out.contains("Phase timings"), "{out}");

    // `--debug` on a terminal: plain lines too, the timings at debug level.
    let (code, raw) = on_tty(&cache, &format!("apply -c {manifest} --debug"));
    let out = strip_ansi(&raw);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.chars().any(|c| TICKS.contains(c)), "{out}");
    assert!(out.contains("==> Phase timings:"), "{out}");

    // reset on a terminal with --force: the display too, and its timings.
    let (code, raw) = on_tty(&cache, &format!("reset -c {manifest} --force"));
    let out = strip_ansi(&raw);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("==> Phase timings:"), "{out}");
    assert!(
        timed_phases(&out).iter().any(|t| t.starts_with("Reset")),
        "{out}"
    );
    drop(env);
}
