//! How `k0sctl apply` runs, end to end on testenv: a dry run changes nothing on any host
//! (checked on the hosts' overlay upper directories, fresh and converged), `uploadBinary`
//! downloads once into the local cache and reuses it (and refetches a damaged copy), a second
//! apply while one runs is refused naming the holder, and `--timeout` stops a run with its
//! exit code and gives the locks back.

mod common;

use common::cli::*;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testenv::{Env, Options};

/// Paths that change on a host whatever k0sctl does: sshd's login records and the journal
/// (an SSH login writes them), and — on a converged cluster — the running k0s stand-in's own
/// state (its API store and node heartbeats).
fn volatile(path: &str, converged: bool) -> bool {
    const ALWAYS: [&str; 6] = [
        "var/log/",
        "var/lib/systemd/",
        "run/",
        "var/cache/ldconfig/",
        "var/lib/sudo/",
        "root/.cache/",
    ];
    ALWAYS
        .iter()
        .any(|p| path.starts_with(p) || format!("{path}/") == *p)
        || (converged && (path.starts_with("var/lib/k0s/") || path == "var/lib/k0s"))
}

/// Every entry of each host's overlay upper directory: path → (kind, size, mtime, mode).
fn snapshot(env: &Env, converged: bool) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for h in &env.hosts {
        let upper = env.dir.join("hosts").join(&h.name).join("upper");
        assert!(upper.is_dir(), "{} has no upper dir", upper.display());
        for e in walkdir::WalkDir::new(&upper).min_depth(1) {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(&upper)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if volatile(&rel, converged) {
                continue;
            }
            let md = e.path().symlink_metadata().unwrap();
            use std::os::unix::fs::MetadataExt;
            all.insert(
                format!("{}:{rel}", h.name),
                format!(
                    "{:?} {} {} {:o}",
                    md.file_type(),
                    md.len(),
                    md.mtime(),
                    md.mode()
                ),
            );
        }
    }
    all
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("removed {k}")),
            Some(w) if w != v => d.push(format!("changed {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        d.push(format!("added {k}"));
    }
    d
}

/// Waits until the apply `child` holds the first host's lock (its pid is in the lock file);
/// panics with its stderr if it ends or a minute passes first.
fn wait_for_lock(env: &Env, child: &mut std::process::Child) {
    let pid = child.id();
    let mut held = String::new();
    let took = common::poll::poll_until_or(
        "the apply to take the lock",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            held = env
                .exec(&env.hosts[0], "cat /run/lock/k0sctl 2>/dev/null || true")
                .unwrap();
            if held.contains(&format!(" pid {pid} ")) {
                return Some(true);
            }
            child.try_wait().unwrap().map(|_| false)
        },
    );
    if took != Ok(true) {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("the apply never took the lock (lock file: {held:?}):\n{err}");
    }
}

#[test]
fn dry_run_changes_no_host_file_fresh_or_converged() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-dryrun-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let cache = dir.path().join("cache");
    let m = env.manifest.display().to_string();

    for converged in [false, true] {
        let before = snapshot(&env, converged);
        let out = k0sctl(
            &cache,
            &["apply", "-c", &m, "--dry-run", "--detailed-exitcode"],
        );
        let code = out.status.code();
        let after = snapshot(&env, converged);
        assert_eq!(
            diff(&before, &after),
            Vec::<String>::new(),
            "dry run (converged: {converged}) changed host files; stderr:\n{}",
            text(&out.stderr)
        );
        if converged {
            assert_eq!(code, Some(0), "{}", text(&out.stderr));
        } else {
            assert_eq!(code, Some(9), "changes are pending: {}", text(&out.stderr));
            let out = k0sctl(&cache, &["apply", "-c", &m]);
            assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
        }
    }
}

#[test]
fn upload_binary_uses_the_local_cache() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-cache-")
        .tempdir()
        .unwrap();
    let cache = dir.path().join("cache");
    let with_upload = |env: &Env, url: Option<&str>| {
        let mut lines = Vec::new();
        for l in std::fs::read_to_string(&env.manifest).unwrap().lines() {
            if let (Some(u), true) = (url, l.trim_start().starts_with("k0sDownloadURL:")) {
                lines.push(format!("    k0sDownloadURL: \"{u}\""));
            } else {
                lines.push(l.to_string());
            }
            if l.trim_start().starts_with("k0sDownloadURL:") {
                lines.push("    uploadBinary: true".into());
            }
        }
        let p = env.dir.join("upload.yaml");
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p.display().to_string()
    };

    // Two hosts, one download.
    let env = Env::up(Options::new(dir.path().join("one"), 2)).expect("testenv up");
    let m = with_upload(&env, None);
    let out = k0sctl(&cache, &["apply", "-c", &m]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "apply failed:\n{err}");
    assert_eq!(err.matches("into the local cache").count(), 1, "{err}");
    let version = env.versions[0].trim_start_matches('v').to_string();
    let cached = cache.join(format!("k0sctl/k0s/linux/amd64/k0s-{version}"));
    let record = std::fs::read_to_string(cached.with_extension("sha256")).unwrap();
    for h in &env.hosts {
        let on_host = env
            .exec(h, "sha256sum /usr/local/bin/k0s | cut -c1-64")
            .unwrap();
        assert_eq!(on_host.trim(), record.trim(), "{}", h.name);
    }
    drop(env);

    // New hosts, a download URL that cannot answer (a closed loopback port): served from the
    // cache, so no request is made.
    let dead = "http://127.0.0.1:9/k0s-%v-%p";
    let env = Env::up(Options::new(dir.path().join("two"), 1)).expect("testenv up");
    let m = with_upload(&env, Some(dead));
    let m = {
        let t =
            std::fs::read_to_string(&m)
                .unwrap()
                .replacen("role: controller", "role: single", 1);
        std::fs::write(&m, t).unwrap();
        m
    };
    // A damaged cache is not trusted: it is fetched again (and here that fails).
    let good = std::fs::read(&cached).unwrap();
    let mut bad = good.clone();
    bad[1000] ^= 0xff;
    std::fs::write(&cached, &bad).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", &m]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("does not match its recorded SHA-256"), "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert_eq!(
        env.exec(&env.hosts[0], "ls /usr/local/bin/k0s 2>/dev/null | wc -l")
            .unwrap()
            .trim(),
        "0"
    );
    std::fs::write(&cached, &good).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", &m]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "apply from the cache failed:\n{err}");
    assert!(err.contains("from the local cache"), "{err}");
    assert!(!err.contains("into the local cache"), "{err}");
}

#[test]
fn a_second_apply_is_refused_and_timeout_stops_a_run() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-concurrent-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 2)).expect("testenv up");
    let cache = dir.path().join("cache");
    let m = env.manifest.display().to_string();

    // --timeout: a run cut short exits 124, undoes half-done installs and gives its locks
    // back, wherever it was stopped; the next run carries on from there.
    for limit in ["1s", "2s", "3s"] {
        let started = Instant::now();
        let out = k0sctl(&cache, &["apply", "-c", &m, "--timeout", limit]);
        let err = text(&out.stderr);
        eprintln!("apply --timeout {limit} took {:?}", started.elapsed());
        if out.status.code() == Some(124) {
            assert!(err.contains(&format!("--timeout {limit} expired")), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{err}");
        }
        for h in &env.hosts {
            assert_eq!(
                env.exec(h, "ls /run/lock/k0sctl 2>/dev/null | wc -l")
                    .unwrap()
                    .trim(),
                "0",
                "{} still locked after --timeout {limit}",
                h.name
            );
        }
    }
    // Start again from nothing for the concurrency check.
    for h in &env.hosts {
        env.exec(
            h,
            "systemctl stop k0scontroller k0sworker 2>/dev/null; /usr/local/bin/k0s reset >/dev/null 2>&1; rm -rf /etc/k0s /usr/local/bin/k0s /etc/systemd/system/k0s*; systemctl daemon-reload; true",
        )
        .unwrap();
    }

    // A real concurrent apply: the first one holds the locks while it installs.
    let mut first = k0sctl_cmd(&cache, &["apply", "-c", &m])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    wait_for_lock(&env, &mut first);
    let second = k0sctl(&cache, &["apply", "-c", &m]);
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(7), "{err}");
    assert!(err.contains(&pid.to_string()), "the holder is named: {err}");
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first apply failed:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn use_existing_k0s_installs_with_the_hosts_own_binary() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-existing-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 1)).expect("testenv up");
    let cache = dir.path().join("cache");
    let h = &env.hosts[0];
    let manifest = std::fs::read_to_string(&env.manifest).unwrap().replacen(
        "role: controller",
        "role: single\n    useExistingK0s: true",
        1,
    );
    let manifest: String = manifest
        .lines()
        .filter(|l| !l.trim_start().starts_with("k0sDownloadURL:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let m = dir.path().join("existing.yaml");
    std::fs::write(&m, manifest).unwrap();
    let m = m.to_str().unwrap();

    // Without k0s on the PATH the run stops before changing anything, and says why.
    let out = k0sctl(&cache, &["apply", "-c", m]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("no k0s on the host's PATH"), "{err}");

    // Put one there by other means; apply uses it and stages nothing.
    let bin = std::fs::read(&env.k0s_binaries[0]).unwrap();
    let mut c = env.ssh_command(h);
    c.arg("cat > /usr/bin/k0s && chmod 755 /usr/bin/k0s")
        .stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&bin).unwrap();
    assert!(child.wait().unwrap().success());
    let out = k0sctl(&cache, &["apply", "-c", m]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "apply failed:\n{err}");
    assert!(
        err.contains("using the existing k0s at /usr/bin/k0s"),
        "{err}"
    );
    assert_eq!(
        env.exec(h, "ls /usr/local/bin/k0s 2>/dev/null | wc -l")
            .unwrap()
            .trim(),
        "0"
    );
    let unit = env
        .exec(h, "cat /etc/systemd/system/k0scontroller.service")
        .unwrap();
    assert!(unit.contains("/usr/bin/k0s controller"), "{unit}");
}

#[test]
fn ctrl_c_stops_the_run_and_cleans_up() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-sigint-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 2)).expect("testenv up");
    let cache = dir.path().join("cache");
    let m = env.manifest.display().to_string();
    // Interrupt at a few points of the install; each time the locks are given back and the
    // next run carries on from what is left.
    let mut interrupted = 0;
    for delay_ms in [200u64, 900, 1600] {
        let mut child = k0sctl_cmd(&cache, &["apply", "-c", &m])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        wait_for_lock(&env, &mut child);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        match out.status.code() {
            Some(130) => {
                assert!(err.contains("interrupted by SIGINT"), "{err}");
                interrupted += 1;
            }
            // It may have finished before the signal arrived.
            Some(0) => {}
            other => panic!("exit {other:?}:\n{err}"),
        }
        for h in &env.hosts {
            assert_eq!(
                env.exec(h, "ls /run/lock/k0sctl 2>/dev/null | wc -l")
                    .unwrap()
                    .trim(),
                "0",
                "{} still locked after SIGINT at {delay_ms} ms:\n{err}",
                h.name
            );
        }
    }
    assert!(interrupted >= 1, "no run was interrupted");
    let out = k0sctl(&cache, &["apply", "-c", &m]);
    assert!(
        out.status.success(),
        "apply after the interrupts failed:\n{}",
        text(&out.stderr)
    );
}
