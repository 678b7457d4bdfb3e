//! The `k0sctl` binary's command-line contract: init output, validate, exit codes, version
//! lookups (against a loopback HTTP server), completion, log files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_k0sctl");

fn k0sctl(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("DEBUG")
        .env_remove("TRACE")
        .env_remove("DRY_RUN")
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run k0sctl")
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn yaml_value(s: &str) -> serde_json::Value {
    serde_saphyr::from_str(s).unwrap()
}

fn expected(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/init")
        .join(name);
    yaml_value(&std::fs::read_to_string(p).unwrap())
}

#[test]
fn init_outputs_match_k0sctl() {
    let out = run(&mut k0sctl(&["init"]));
    assert!(out.status.success());
    assert_eq!(yaml_value(&text(&out.stdout)), expected("default.yaml"));

    let out = run(&mut k0sctl(&[
        "init",
        "10.0.0.1",
        "10.0.0.2",
        "ubuntu@10.0.0.3:8022",
    ]));
    assert!(out.status.success());
    assert_eq!(yaml_value(&text(&out.stdout)), expected("addresses.yaml"));

    let out = run(&mut k0sctl(&["init", "--k0s"]));
    assert!(out.status.success());
    assert_eq!(yaml_value(&text(&out.stdout)), expected("k0s.yaml"));
}

#[test]
fn init_reads_addresses_from_stdin_then_args() {
    let out = run_with_stdin(
        &mut k0sctl(&[
            "init", "-C", "2", "-u", "admin", "-i", "/keys/id", "-n", "prod", "10.0.0.9",
        ]),
        "# controllers first\n10.0.0.1\n\nroot@10.0.0.2:2222 # second controller\n10.0.0.3\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = yaml_value(&text(&out.stdout));
    assert_eq!(v["metadata"]["name"], "prod");
    let hosts = v["spec"]["hosts"].as_array().unwrap();
    let summary: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                "{} {}@{}:{} {}",
                h["role"].as_str().unwrap(),
                h["ssh"]["user"].as_str().unwrap(),
                h["ssh"]["address"].as_str().unwrap(),
                h["ssh"]["port"],
                h["ssh"]["keyPath"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "controller admin@10.0.0.1:22 /keys/id",
            "controller root@10.0.0.2:2222 /keys/id",
            "worker admin@10.0.0.3:22 /keys/id",
            "worker admin@10.0.0.9:22 /keys/id",
        ]
    );
}

#[test]
fn init_output_validates() {
    for args in [
        &["init"][..],
        &["init", "--k0s", "10.0.0.1", "10.0.0.2"][..],
    ] {
        let init = run(&mut k0sctl(args));
        let out = run_with_stdin(
            &mut k0sctl(&["config", "validate", "-c", "-"]),
            &text(&init.stdout),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("valid configuration"));
    }
}

#[test]
fn examples_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let out = run(k0sctl(&["config", "validate", "-c", p.to_str().unwrap()])
                .env("K0S_VERSION", "v1.33.1+k0s.0"));
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                text(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 3, "expected example manifests under examples/");
}

#[test]
fn invalid_config_lists_every_error_and_exits_3() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("k0sctl.yaml"),
        "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    ssh:\n      adress: 10.0.0.1\n  - role: wrker\n    ssh:\n      address: 10.0.0.2\n",
    )
    .unwrap();
    let out = run(k0sctl(&["config", "validate"]).current_dir(d.path()));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("k0sctl.yaml:6:5: spec.hosts[0].ssh.address: required"),
        "{err}"
    );
    assert!(
        err.contains(
            "k0sctl.yaml:7:7: spec.hosts[0].ssh.adress: unknown field (did you mean \"address\"?)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "k0sctl.yaml:8:11: spec.hosts[1].role: unknown role wrker (did you mean \"worker\"?)"
        ),
        "{err}"
    );
    assert!(err.contains("invalid configuration: 3 errors"), "{err}");
}

/// A valid manifest whose only host is a loopback port nobody listens on (so commands that
/// connect fail fast without ever leaving this machine), with a pinned version (so no online
/// lookup happens).
fn unreachable_manifest(dir: &Path) -> (std::path::PathBuf, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = dir.join("id_ed25519");
    if !key.exists() {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let p = dir.join("k0sctl.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    ssh:\n      address: 127.0.0.1\n      port: {port}\n      keyPath: {}\n  k0s:\n    version: v1.33.1+k0s.0\n",
            key.display()
        ),
    )
    .unwrap();
    (p, port)
}

#[test]
fn lifecycle_commands_report_unreachable_hosts_and_refuse_without_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    unreachable_manifest(d.path());
    let cache = d.path().join("cache");
    for args in [
        &["reset", "--force"][..],
        &["backup"],
        &["config", "status"],
    ] {
        let out = run(k0sctl(args)
            .current_dir(d.path())
            .env("XDG_CACHE_HOME", &cache));
        assert_eq!(
            out.status.code(),
            Some(4),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        // The per-run log file is named on failure and private to the user.
        let line = err
            .lines()
            .find(|l| l.starts_with("log file saved to "))
            .expect("log path printed");
        let path = Path::new(line.trim_start_matches("log file saved to "));
        assert!(
            path.starts_with(cache.join("k0sctl/logs")),
            "{}",
            path.display()
        );
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // No backup file is left by a failed backup.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("k0s_backup_"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Without a terminal: reset needs --force (exit 8), config edit refuses (exit 2); neither
    // connects anywhere.
    let out = run(k0sctl(&["reset"])
        .current_dir(d.path())
        .env("XDG_CACHE_HOME", &cache));
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("reset requires --force"));
    let out = run(k0sctl(&["config", "edit"])
        .current_dir(d.path())
        .env("XDG_CACHE_HOME", &cache));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("needs a terminal"));
    // An invalid config is reported before anything else.
    std::fs::write(d.path().join("k0sctl.yaml"), "kind: Cluster\n").unwrap();
    let out = run(k0sctl(&["apply"])
        .current_dir(d.path())
        .env("XDG_CACHE_HOME", &cache));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn apply_and_kubeconfig_report_unreachable_hosts_with_exit_4() {
    let d = tempfile::tempdir().unwrap();
    let (_, port) = unreachable_manifest(d.path());
    for args in [&["apply"][..], &["apply", "--dry-run"], &["kubeconfig"]] {
        let out = run(k0sctl(args)
            .current_dir(d.path())
            .env("XDG_CACHE_HOME", d.path().join("cache")));
        assert_eq!(
            out.status.code(),
            Some(4),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(
            err.contains("Connect to hosts") && err.contains("cannot connect"),
            "{err}"
        );
        assert!(err.contains("log file saved to "), "{err}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        run(&mut k0sctl(&["apply", "--bogus"])).status.code(),
        Some(2)
    );
    assert_eq!(run(&mut k0sctl(&["nosuchcommand"])).status.code(), Some(2));
    let out = run(&mut k0sctl(&["apply", "--evict-taint", "k=v"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid evict-taint format, expected <key>:<effect>, got k=v")
    );
    assert_eq!(
        run(&mut k0sctl(&["apply", "--timeout", "5"])).status.code(),
        Some(2)
    );
    assert_eq!(run(&mut k0sctl(&["--help"])).status.code(), Some(0));
}

#[test]
fn global_flags_and_env() {
    let d = tempfile::tempdir().unwrap();
    let (m, _) = unreachable_manifest(d.path());
    std::fs::rename(&m, d.path().join("c.yaml")).unwrap();
    std::fs::write(d.path().join("b.tar.gz"), b"not really").unwrap();
    // A missing --restore-from archive is a usage error, found before connecting.
    let out = run(
        k0sctl(&["apply", "-c", "c.yaml", "--restore-from", "missing.tar.gz"])
            .current_dir(d.path())
            .env("XDG_CACHE_HOME", d.path()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--restore-from missing.tar.gz"));
    // Flags before or after the command, hidden deprecated flags, env DEBUG/DRY_RUN (the host
    // is a closed loopback port: parsing is what is tested here).
    let out = run(k0sctl(&[
        "--debug",
        "apply",
        "-c",
        "c.yaml",
        "--no-redact",
        "--dry-run",
        "--force",
        "--timeout",
        "10m",
        "--concurrency",
        "5",
        "--concurrent-uploads",
        "2",
        "--no-wait",
        "--no-drain",
        "--kubeconfig-out",
        "kc",
        "--kubeconfig-api-address",
        "https://x:6443",
        "--kubeconfig-user",
        "u",
        "--kubeconfig-cluster",
        "c",
        "--disable-downgrade-check",
        "--evict-taint",
        "k=v:NoSchedule",
        "--default-timeout",
        "2m",
        "--retry-interval",
        "5s",
        "--restore-from",
        "b.tar.gz",
    ])
    .current_dir(d.path())
    .env("XDG_CACHE_HOME", d.path()));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = run(k0sctl(&[
        "kubeconfig",
        "-c",
        "c.yaml",
        "--address",
        "https://x:6443",
        "-u",
        "u",
        "-n",
        "c",
    ])
    .current_dir(d.path())
    .env("DEBUG", "1")
    .env("DRY_RUN", "true")
    .env("XDG_CACHE_HOME", d.path()));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = run(k0sctl(&[
        "backup",
        "-c",
        "c.yaml",
        "-o",
        "out.tar.gz",
        "--concurrency",
        "3",
    ])
    .current_dir(d.path())
    .env("XDG_CACHE_HOME", d.path()));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = run(k0sctl(&["config", "status", "-c", "c.yaml", "-o", "json"])
        .current_dir(d.path())
        .env("XDG_CACHE_HOME", d.path()));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[test]
fn version_prints_version_and_commit() {
    let out = run(&mut k0sctl(&["version"]));
    assert!(out.status.success());
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[0].starts_with("version: v"), "{s}");
    assert!(lines[1].starts_with("commit: "), "{s}");
}

/// A loopback HTTP server answering `routes` (path → body) for `n` requests; returns its URL
/// and the paths it was asked for.
fn serve(
    routes: Vec<(&'static str, &'static str)>,
    n: usize,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => ("200 OK", *b),
                None => ("404 Not Found", "not found"),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            seen.push(path);
        }
        seen
    });
    (url, h)
}

#[test]
fn version_k0s_lookup() {
    let (url, h) = serve(
        vec![
            ("/stable.txt", "v1.33.1+k0s.0\n"),
            ("/latest.txt", "v1.34.0-rc.1+k0s.0\n"),
        ],
        2,
    );
    let out = run(k0sctl(&["version", "--k0s"]).env("K0SCTL_K0S_VERSION_BASE_URL", &url));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1.33.1+k0s.0\n");
    let out = run(k0sctl(&["version", "--k0s", "--pre"]).env("K0SCTL_K0S_VERSION_BASE_URL", &url));
    assert_eq!(text(&out.stdout), "1.34.0-rc.1+k0s.0\n");
    assert_eq!(h.join().unwrap(), ["/stable.txt", "/latest.txt"]);
}

#[test]
fn version_k0sctl_lookup_skips_prereleases() {
    let (url, h) = serve(
        vec![
            (
                "/repos/k0sproject/k0sctl/releases/latest",
                r#"{"tag_name":"v0.33.0-rc.1","prerelease":true}"#,
            ),
            (
                "/repos/k0sproject/k0sctl/releases",
                r#"[{"tag_name":"v0.33.0-rc.1","prerelease":true},{"tag_name":"v0.32.2","prerelease":false},{"tag_name":"v0.31.1","prerelease":false}]"#,
            ),
        ],
        2,
    );
    let out = run(k0sctl(&["version", "--k0sctl"]).env("K0SCTL_GITHUB_API_URL", &url));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v0.32.2\n");
    h.join().unwrap();
}

#[test]
fn version_lookup_fails_cleanly_offline() {
    // A loopback port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(k0sctl(&["version", "--k0s"]).env(
        "K0SCTL_K0S_VERSION_BASE_URL",
        format!("http://127.0.0.1:{port}"),
    ));
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(
        err.contains("failed to look up the latest k0s version"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn completion_scripts() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef k0sctl"),
        ("fish", "complete -c k0sctl"),
    ] {
        let out = run(&mut k0sctl(&["completion", "--shell", shell]));
        assert!(out.status.success());
        let s = text(&out.stdout);
        assert!(s.contains(marker), "{shell}");
        assert!(s.contains("kubeconfig"), "{shell}");
    }
    let out = run(k0sctl(&["completion"]).env("SHELL", "/usr/bin/zsh"));
    assert!(text(&out.stdout).contains("#compdef k0sctl"));
    let out = run(&mut k0sctl(&["completion", "-s", "tcsh"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no completion script available for tcsh"));
}

#[test]
fn config_from_stdin_dash() {
    let mut child = k0sctl(&["config", "validate", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: single\n    localhost: true\n")
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(out.starts_with("<stdin>: valid configuration"), "{out}");
}

#[test]
fn sigint_interrupts_with_exit_130() {
    // A loopback server that accepts and never answers, so the lookup hangs until interrupted.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = l.accept().map(|(s, _)| s);
        accepted_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(conn);
    });
    let child = k0sctl(&["version", "--k0s"])
        .env("K0SCTL_K0S_VERSION_BASE_URL", &url)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the request has arrived, the signal handlers are installed.
    accepted
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("k0sctl connected");
    // SAFETY: signalling the child process we spawned, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Aborting"));
    holder.join().unwrap();
}

/// A failed run: the error is printed once, no "the hosts already match" outcome line, and
/// `--output json` on reset/backup gives apply's event schema with the exit code.
#[test]
fn failed_runs_report_once_and_json_events() {
    let d = tempfile::tempdir().unwrap();
    let (_, port) = unreachable_manifest(d.path());
    let cache = d.path().join("cache");
    let out = run(k0sctl(&["apply"])
        .current_dir(d.path())
        .env("XDG_CACHE_HOME", &cache));
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("phase \"Connect to hosts\"").count(),
        1,
        "the error once:\n{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("already match"), "{err}");
    for args in [
        &["reset", "--force", "--output", "json"][..],
        &["backup", "--output-format", "json"],
    ] {
        let out = run(k0sctl(args)
            .current_dir(d.path())
            .env("XDG_CACHE_HOME", &cache));
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let events: Vec<serde_json::Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        // The failed phase ran, so its clean-up runs (and says so) before the summary.
        assert_eq!(
            kinds,
            [
                "phase_start",
                "phase_end",
                "error",
                "cleanup_start",
                "summary"
            ],
            "{args:?}"
        );
        assert_eq!(events[3]["phase"], "Connect to hosts");
        assert_eq!(events[2]["exit_code"], 4);
        assert_eq!(events[2]["phase"], "Connect to hosts");
        assert_eq!(events[2]["hosts"][0]["host"], format!("127.0.0.1:{port}"));
        assert_eq!(events[4]["ok"], false);
        assert_eq!(events[4]["exit_code"], 4);
    }
}

/// `--help` lists exactly the exit codes commands return (no 10), and 130 as what happens.
#[test]
fn help_lists_the_exit_codes() {
    let out = run(&mut k0sctl(&["--help"]));
    // clap wraps the text; compare it as one line.
    let help = text(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("9 changes pending (--dry-run --detailed-exitcode), 124 --timeout expired, 130 interrupted by SIGINT/SIGTERM (apply, reset and backup first stop the running phase and clean up; a second signal exits at once)"),
        "{help}"
    );
    assert!(!help.contains("10 not implemented"), "{help}");
}

/// A warning reads the same whether the configuration then loads or not; a winRM host is an
/// invalid configuration (exit 3), not an unreachable host.
#[test]
fn warnings_look_the_same_on_success_and_failure() {
    let d = tempfile::tempdir().unwrap();
    let ok = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: single\n    localhost: true\n    hooks:\n      apply:\n        before: [\"echo $NOT_SET_ANYWHERE\"]\n";
    std::fs::write(d.path().join("k0sctl.yaml"), ok).unwrap();
    let out = run(k0sctl(&["config", "validate"])
        .current_dir(d.path())
        .env_remove("NOT_SET_ANYWHERE"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let warning = "k0sctl.yaml:9:24: warning: environment variable NOT_SET_ANYWHERE is not set; using an empty value";
    let ok_err = text(&out.stderr);
    let line = ok_err
        .lines()
        .find(|l| l.contains("NOT_SET_ANYWHERE"))
        .unwrap_or_else(|| panic!("{ok_err}"));
    assert!(line.starts_with(warning), "{line}");
    let bad =
        format!("{ok}  - role: worker\n    winRM:\n      address: 10.0.0.9\n      password: x\n");
    std::fs::write(d.path().join("k0sctl.yaml"), bad).unwrap();
    let out = run(k0sctl(&["config", "validate"])
        .current_dir(d.path())
        .env_remove("NOT_SET_ANYWHERE"));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.lines().any(|l| l == line), "same warning line:\n{err}");
    assert!(
        err.contains(
            "k0sctl.yaml:11:5: spec.hosts[1].winRM: Windows hosts are not supported by this build"
        ),
        "{err}"
    );
}
