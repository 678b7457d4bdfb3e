//! Chaos on testenv: faults injected while `k0sctl apply` installs workers, each followed by
//! a plain re-apply (no `--force`) that must converge.
//!
//! One environment (1 controller + 4 workers); each fault hits a worker that joins in that
//! step (the manifest grows by one worker per step):
//!
//! 1. SIGKILL of k0sctl itself while the worker's install runs, its k0s service then left
//!    installed but stopped (what a double Ctrl-C or a killed run leaves): the next apply takes
//!    the dead run's lock over at once and resets and reinstalls the unfinished worker.
//! 2. sshd killed on the worker mid-install: exit 4 naming the host, the phase and
//!    "connection lost", no script dump; the clean-up reconnects and undoes the install.
//! 3. the worker's link down mid-install: noticed by SSH keepalives (exit 4, the time is
//!    printed), then the link comes back.
//! 4. the next worker's link flapping mid-install: passes or exits 4, then converges.
//! 5. an upgrade to the next version: a double SIGINT while binaries are staged (exit 130 at
//!    once, nothing cleaned up), then SIGKILL in a worker upgrade batch once a worker's service
//!    was stopped: the next apply starts it again, finishes the upgrade, no node stays cordoned.
//!
//! After each: no k0sctl process left on the host, no lock file naming a live process, and a
//! plain re-apply converges; at the end no staging file, no unfinished-install marker, no lock
//! on any host, and a detailed dry run has nothing to do.
//!
//! A second test: stalled transfers (a host-side download from a server that stops sending, an
//! upload whose link drops) fail naming host, URL and bytes.

mod common;

use common::chaos::*;
use common::cli::*;

use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testenv::{Env, Host, Options};

const MARKER: &str = "/etc/k0s/.k0sctl-install-incomplete";
const UPGRADE_MARKER: &str = "/etc/k0s/.k0sctl-upgrade-incomplete";

struct Faulted {
    code: Option<i32>,
    stderr: String,
    /// From the fault to the exit of k0sctl.
    after_fault: Duration,
    /// From the fault to the first line saying "connection lost", or that the clean-ups start.
    lost_after: Option<Duration>,
}

/// Runs `k0sctl apply -c manifest`; once "Install workers" runs and `host`'s install has
/// started (`path` exists there), calls `fault(pid)`; waits (bounded) for the exit.
fn apply_with_fault(
    env: &Env,
    cache: &std::path::Path,
    manifest: &str,
    host: &Host,
    path: &str,
    fault: impl FnOnce(u32),
) -> Faulted {
    let test = format!("test -e {path} && echo yes || true");
    apply_when(
        cache,
        manifest,
        "Install workers",
        || env.exec(host, &test).unwrap_or_default().trim() == "yes",
        fault,
    )
}

/// Runs `k0sctl apply -c manifest`; once `phase` runs and `ready()` holds, calls
/// `fault(pid)`; waits (bounded) for the exit.
fn apply_when(
    cache: &std::path::Path,
    manifest: &str,
    phase: &str,
    ready: impl Fn() -> bool,
    fault: impl FnOnce(u32),
) -> Faulted {
    let mut child = k0sctl_cmd(cache, &["apply", "-c", manifest])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let log = Arc::new(Mutex::new(String::new()));
    let lost_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let reader = {
        let (log, lost_at) = (log.clone(), lost_at.clone());
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                // The failure is noticed when the clean-ups start (the error itself is
                // printed once, when the command ends).
                if line.contains("connection lost") || line.contains("Running clean-up for phase") {
                    lost_at.lock().unwrap().get_or_insert_with(Instant::now);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let running = log
            .lock()
            .unwrap()
            .contains(&format!("Running phase: {phase}"));
        if running && ready() {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            reader.join().unwrap();
            panic!(
                "apply ended ({st}) before the fault point:\n{}",
                log.lock().unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the fault point in {phase} never came:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fault(pid);
    let at = Instant::now();
    let deadline = at + Duration::from_secs(240);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "k0sctl did not end within 240 s of the fault:\n{}",
                log.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let after_fault = at.elapsed();
    reader.join().unwrap();
    let stderr = log.lock().unwrap().clone();
    for l in stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
    {
        eprintln!("    | {l}");
    }
    let lost_after = lost_at
        .lock()
        .unwrap()
        .map(|t| t.saturating_duration_since(at));
    Faulted {
        code: status.code(),
        stderr,
        after_fault,
        lost_after,
    }
}

/// No lock file on any host names a process that is alive on this machine.
fn no_live_lock(env: &Env) {
    for h in &env.hosts {
        let held = env
            .exec(h, "cat /run/lock/k0sctl 2>/dev/null || true")
            .unwrap();
        if let Some(pid) = held.split_whitespace().skip_while(|w| *w != "pid").nth(1) {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{}: lock held by a live process: {held}",
                h.name
            );
        }
    }
}

fn converges(cache: &std::path::Path, manifest: &str, what: &str) -> String {
    let out = k0sctl(cache, &["apply", "-c", manifest]);
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "plain re-apply after {what} failed ({:?}):\n{err}",
        out.status.code()
    );
    let out = k0sctl(
        cache,
        &["apply", "-c", manifest, "--dry-run", "--detailed-exitcode"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "changes still pending after {what}:\n{}",
        text(&out.stderr)
    );
    err
}

fn write_manifest(dir: &std::path::Path, env: &Env, idx: &[usize]) -> String {
    let p = dir.join(format!("k0sctl-{}.yaml", idx.len()));
    std::fs::write(&p, manifest_with(env, idx)).unwrap();
    p.display().to_string()
}

#[test]
fn faults_during_worker_install_then_plain_reapply_converges() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-chaos-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 5)).expect("testenv up");
    let cache = dir.path().join("cache");
    let started = Instant::now();

    // 1. SIGKILL of k0sctl during the first worker's install; its service left stopped.
    let m = write_manifest(dir.path(), &env, &[0, 1]);
    let w = &env.hosts[1];
    // Once the worker's service is written (k0s install ran), before it is known to run.
    let unit = "/etc/systemd/system/k0sworker.service";
    let f = apply_with_fault(&env, &cache, &m, w, unit, |pid| {
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    });
    assert_eq!(f.code, None, "killed by a signal:\n{}", f.stderr);
    // What an interrupted start leaves: the service installed but not running.
    env.exec(w, "systemctl stop k0sworker 2>/dev/null; true")
        .unwrap();
    assert_eq!(
        leftover_processes(&env, w, Duration::from_secs(15)),
        "",
        "processes of the killed run left on {}",
        w.name
    );
    no_live_lock(&env);
    let err = converges(&cache, &m, "SIGKILL");
    assert!(
        err.contains("took over the lock") && err.contains("is gone"),
        "the dead run's lock is taken over at once, saying so:\n{err}"
    );
    assert!(
        err.contains("was installed by an earlier k0sctl run that did not finish"),
        "the unfinished worker is reset and reinstalled:\n{err}"
    );
    eprintln!(
        "SIGKILL during worker install: converged ({:?} so far)",
        started.elapsed()
    );

    // 2. sshd killed on the second worker mid-install.
    let m = write_manifest(dir.path(), &env, &[0, 1, 2]);
    let w = &env.hosts[2];
    let f = apply_with_fault(&env, &cache, &m, w, MARKER, |_| kill_sshd(&env, w));
    assert_eq!(f.code, Some(4), "lost connection is exit 4:\n{}", f.stderr);
    let ip = w.ip.to_string();
    assert!(
        f.stderr.contains("Install workers")
            && f.stderr.contains("connection lost")
            && f.stderr
                .lines()
                .any(|l| l.contains(&ip) && l.contains("connection lost")),
        "host, phase and cause named:\n{}",
        f.stderr
    );
    assert!(
        !f.stderr.contains("#!/") && !f.stderr.contains("while :; do"),
        "no script dump:\n{}",
        f.stderr
    );
    ensure_sshd(&env, w);
    assert_eq!(leftover_processes(&env, w, Duration::from_secs(15)), "");
    no_live_lock(&env);
    converges(&cache, &m, "sshd killed");
    eprintln!(
        "sshd killed during worker install: exit 4 {:?} after the kill; converged ({:?} so far)",
        f.after_fault,
        started.elapsed()
    );

    // 3. The third worker's link goes down mid-install.
    let m = write_manifest(dir.path(), &env, &[0, 1, 2, 3]);
    let w = &env.hosts[3];
    let f = apply_with_fault(&env, &cache, &m, w, MARKER, |_| link_down(&env, w));
    link_up(&env, w);
    assert_eq!(f.code, Some(4), "lost connection is exit 4:\n{}", f.stderr);
    assert!(
        f.stderr.contains("Install workers") && f.stderr.contains("connection lost"),
        "{}",
        f.stderr
    );
    eprintln!(
        "link down during worker install: connection lost reported {:?} after the link went down (SSH keepalives), k0sctl ended after {:?} (with the bounded clean-up)",
        f.lost_after, f.after_fault
    );
    no_live_lock(&env);
    converges(&cache, &m, "link down");
    assert_eq!(leftover_processes(&env, w, Duration::from_secs(20)), "");

    // 4. The fourth worker's link flaps (down 2 s, up 2 s, three times) mid-install: the run
    // rides it out or reports the lost connection; either way a plain re-apply converges.
    let m = write_manifest(dir.path(), &env, &[0, 1, 2, 3, 4]);
    let w = &env.hosts[4];
    let f = apply_with_fault(&env, &cache, &m, w, MARKER, |_| {
        for _ in 0..3 {
            link_down(&env, w);
            std::thread::sleep(Duration::from_secs(2));
            ip_link_up(&env, w);
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    link_up(&env, w);
    assert!(
        matches!(f.code, Some(0) | Some(4)),
        "a flapping link either passes or is a lost connection ({:?}):\n{}",
        f.code,
        f.stderr
    );
    if f.code == Some(4) {
        assert!(f.stderr.contains("connection lost"), "{}", f.stderr);
    }
    no_live_lock(&env);
    converges(&cache, &m, "link flapping");
    assert_eq!(leftover_processes(&env, w, Duration::from_secs(20)), "");
    eprintln!(
        "link flapping during worker install: exit {:?}; converged",
        f.code
    );

    // 5. Upgrade to the next version: a double SIGINT while the binaries are staged (exits at
    // once, no clean-up), then SIGKILL in a worker upgrade batch once a worker's service was
    // stopped for its upgrade. The plain re-apply starts it again, finishes the upgrade and
    // leaves no node cordoned.
    let (old, new) = (&env.versions[0], env.versions.last().unwrap());
    assert_ne!(old, new, "testenv offers two k0s versions");
    let up = dir.path().join("k0sctl-upgrade.yaml");
    std::fs::write(
        &up,
        std::fs::read_to_string(&m).unwrap().replace(
            &format!("version: \"{old}\""),
            &format!("version: \"{new}\""),
        ),
    )
    .unwrap();
    let up = up.display().to_string();
    let f = apply_when(
        &cache,
        &up,
        "Stage k0s binaries",
        || true,
        |pid| {
            for _ in 0..2 {
                std::process::Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        },
    );
    assert_eq!(f.code, Some(130), "double SIGINT:\n{}", f.stderr);
    for h in &env.hosts {
        assert_eq!(
            leftover_processes(&env, h, Duration::from_secs(15)),
            "",
            "{}",
            h.name
        );
    }
    no_live_lock(&env);
    let workers = &env.hosts[1..];
    let f = apply_when(
        &cache,
        &up,
        "Upgrade workers",
        || {
            workers.iter().any(|w| {
                env.exec(
                    w,
                    &format!("test -e {UPGRADE_MARKER} && ! systemctl is-active -q k0sworker && echo yes || true"),
                )
                .unwrap_or_default()
                .trim()
                    == "yes"
            })
        },
        |pid| {
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        },
    );
    assert_eq!(f.code, None, "killed by a signal:\n{}", f.stderr);
    let err = converges(&cache, &up, "SIGKILL in an upgrade batch");
    assert!(
        err.contains("stopped by an upgrade that did not finish"),
        "the stopped worker is started again:\n{err}"
    );
    let kc = dir.path().join("kubeconfig");
    let out = k0sctl(&cache, &["kubeconfig", "-c", &up]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(&kc, &out.stdout).unwrap();
    let nodes = kubectl(
        &kc,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.unschedulable} {.status.nodeInfo.kubeletVersion}{\"\\n\"}{end}",
        ],
        None,
    );
    let want = new.split('+').next().unwrap();
    for line in nodes.lines() {
        assert!(
            !line.contains("true") && line.contains(want),
            "every node schedulable and on {want}:\n{nodes}"
        );
    }
    // Every worker is a node (the controller is not).
    assert_eq!(nodes.lines().count(), env.hosts.len() - 1, "{nodes}");
    eprintln!(
        "upgrade interrupted twice: converged ({:?} so far)",
        started.elapsed()
    );

    // Nothing left behind anywhere.
    for h in &env.hosts {
        let left = env
            .exec(
                h,
                &format!(
                    "ls /usr/local/bin/k0s.tmp.* {MARKER} {UPGRADE_MARKER} /run/lock/k0sctl 2>/dev/null || true"
                ),
            )
            .unwrap();
        assert_eq!(left.trim(), "", "{} keeps {left}", h.name);
        let token = env
            .exec(h, "cat /etc/k0s/k0stoken 2>/dev/null || true")
            .unwrap();
        assert!(
            token.trim().is_empty() || token.starts_with('#'),
            "{}: a live join token stays in /etc/k0s/k0stoken",
            h.name
        );
    }
    eprintln!("chaos suite took {:?}", started.elapsed());
}

/// An HTTP server on `ip` that answers every request with the headers of a 10 MB body, 64 KiB
/// of it, and then nothing (the connection stays open): a stalled download. Stops when the
/// returned flag is set.
fn stalling_server(ip: &str) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf);
                    let _ = c.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n",
                    );
                    let _ = c.write_all(&vec![0u8; 64 * 1024]);
                    held.push(c);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    (url, stop)
}

#[test]
fn stalled_transfers_fail_naming_host_url_and_bytes() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-stall-")
        .tempdir()
        .unwrap();
    let mut opts = Options::new(dir.path().join("env"), 1);
    // A shaped uplink makes the binary upload take seconds, so the link can drop during it.
    opts.uplink_mbit = Some(16);
    let env = Env::up(opts).expect("testenv up");
    let cache = dir.path().join("cache");
    let h = &env.hosts[0];
    let base = env.binserver_url.clone().expect("binary server");
    let ip = base
        .trim_start_matches("http://")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();

    // 1. The host downloads k0s from a server that stops sending.
    let (stall_url, stop) = stalling_server(&ip);
    let m = dir.path().join("stall.yaml");
    std::fs::write(&m, env.manifest_yaml().replace(&base, &stall_url)).unwrap();
    let m = m.display().to_string();
    let t = Instant::now();
    let out = k0sctl_cmd(&cache, &["apply", "-c", &m])
        .env("K0SCTL_STALL_TIMEOUT", "3")
        .output()
        .unwrap();
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("stalled")
            && err.contains(&stall_url)
            && err.contains("no progress for 3s")
            && err.contains("bytes received")
            && err.contains(&h.ip.to_string()),
        "host, URL and bytes named:\n{err}"
    );
    eprintln!("stalled host download failed after {took:?} (limit 3 s)");
    assert_eq!(
        env.exec(h, "ls /usr/local/bin/k0s.tmp.* 2>/dev/null || true")
            .unwrap()
            .trim(),
        "",
        "no staging file left"
    );

    // 2. The link drops while the binary is uploaded (uploadBinary): the upload fails as
    // stalled before the keepalives give up on the connection.
    let m = dir.path().join("upload.yaml");
    std::fs::write(
        &m,
        env.manifest_yaml().replace(
            "    k0sDownloadURL:",
            "    uploadBinary: true\n    k0sDownloadURL:",
        ),
    )
    .unwrap();
    let m = m.display().to_string();
    let mut child = k0sctl_cmd(&cache, &["apply", "-c", &m])
        .env("K0SCTL_STALL_TIMEOUT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let e = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(e).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while !log.lock().unwrap().contains("uploading k0s") {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the upload never started:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    link_down(&env, h);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "no end after the link went down"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    link_up(&env, h);
    reader.join().unwrap();
    let err = log.lock().unwrap().clone();
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("stalled: no progress for 3s after") && err.contains("bytes"),
        "the upload stall is named with the bytes so far:\n{err}"
    );
    eprintln!(
        "stalled upload: k0sctl ended {:?} after the link went down",
        t.elapsed()
    );

    // A plain apply afterwards converges and leaves no staging file.
    converges(&cache, &env.manifest.display().to_string(), "stalls");
    assert_eq!(
        env.exec(h, "ls /usr/local/bin/k0s.tmp.* 2>/dev/null || true")
            .unwrap()
            .trim(),
        ""
    );
}
