//! `k0sctl exec` end to end, over real SSH to testenv hosts (root, Linux namespaces).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use testenv::{Env, Options, SudoMode};

const BIN: &str = env!("CARGO_BIN_EXE_k0sctl");

fn env_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("k0sctl-{name}-"))
        .tempdir()
        .unwrap()
}

fn k0sctl(env: &Env, cache: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("exec").arg("-c").arg(&env.manifest).args(args);
    c.env("XDG_CACHE_HOME", cache)
        .env_remove("DEBUG")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(c: impl std::borrow::BorrowMut<Command>) -> Output {
    let mut c = c;
    c.borrow_mut().output().unwrap()
}

#[test]
fn exec_runs_everywhere_selects_pipes_and_reports() {
    let dir = env_dir("exec");
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let cache = dir.path().join("cache");

    // Every host, each line prefixed with the host.
    let out = run(k0sctl(&env, &cache, &["--", "hostname"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for h in &env.hosts {
        let want = format!("{}:{}: {}", h.ip, h.ssh_port, h.name);
        assert!(
            stdout.lines().any(|l| l == want),
            "missing {want:?} in:\n{stdout}"
        );
    }
    assert!(text(&out.stderr).contains("==> 3 hosts: 3 succeeded, 0 failed, 0 unreachable"));

    // --role, a failing command, the exit-code summary and exit code 5.
    let out = run(k0sctl(
        &env,
        &cache,
        &[
            "--role",
            "worker",
            "--",
            "sh",
            "-c",
            "'echo oops >&2; exit 3'",
        ],
    ));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("==> 2 hosts: 0 succeeded, 2 failed, 0 unreachable"),
        "{err}"
    );
    assert_eq!(err.matches(": oops").count(), 2, "{err}");
    assert_eq!(err.matches("exit status 3").count(), 2, "{err}");

    // --hosts glob on the address.
    let first = &env.hosts[0];
    let out = run(k0sctl(
        &env,
        &cache,
        &["--hosts", &format!("{}*", first.ip), "--", "true"],
    ));
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("==> 1 host: 1 succeeded"));

    // Piped stdin goes to every host.
    let mut child = k0sctl(&env, &cache, &["--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).matches(": hello from stdin").count(), 3);

    // An unreachable host fails fast with a clear error while the others proceed: add a host
    // on a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manifest = std::fs::read_to_string(&env.manifest).unwrap().replace(
        "  hosts:\n",
        &format!("  hosts:\n  - role: worker\n    ssh:\n      address: 127.0.0.1\n      port: {port}\n      keyPath: {}\n", env.key_path.display()),
    );
    let extra = dir.path().join("with-unreachable.yaml");
    std::fs::write(&extra, manifest).unwrap();
    let started = std::time::Instant::now();
    let mut c = Command::new(BIN);
    c.args(["exec", "-c"])
        .arg(&extra)
        .args(["--", "true"])
        .env("XDG_CACHE_HOME", &cache)
        .stdin(Stdio::null());
    let out = run(c);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("==> 4 hosts: 3 succeeded, 0 failed, 1 unreachable"),
        "{err}"
    );
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot connect"),
        "{err}"
    );
    // Refused connections are retried with backoff; how long that takes is a speed claim and is
    // printed, not asserted.
    eprintln!("run with an unreachable host took {:?}", started.elapsed());
}

#[test]
fn exec_with_sudo_password_never_shows_it() {
    let dir = env_dir("exec-sudo");
    let mut o = Options::new(dir.path().join("env"), 1);
    o.user = Some("alice".into());
    o.sudo = SudoMode::Password;
    let env = Env::up(o).expect("testenv up");
    let password = env.password.clone().expect("testenv sets a password");
    let cache = dir.path().join("cache");

    // Without --sudo: runs as the user.
    let out = run(k0sctl(&env, &cache, &["--", "id", "-un"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim_end().ends_with(": alice"));

    // With --sudo and the password from the environment: root, and the password appears
    // nowhere: not in output, not in the log file.
    let out = run(
        k0sctl(&env, &cache, &["--sudo", "--debug", "--", "id", "-u"])
            .env("K0SCTL_SUDO_PASSWORD", &password),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).trim_end().ends_with(": 0"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains(&password) && !text(&out.stderr).contains(&password));
    for e in std::fs::read_dir(cache.join("k0sctl/logs")).unwrap() {
        let log = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!log.contains(&password), "password in log file");
    }

    // A wrong password fails on that host with an explanation, exit 5.
    let out = run(k0sctl(&env, &cache, &["--sudo", "--", "id", "-u"])
        .env("K0SCTL_SUDO_PASSWORD", "wrong-password"));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}
