//! Chaos on testenv: faults injected while `k0sctl apply` installs workers, each followed by
//! a plain re-apply (no `--force`) that must converge.
//!
//! One environment (1 controller + 5 workers); each fault hits a worker that joins in that
//! step (the manifest grows by one worker per step):
//!
//! 1. SIGKILL of k0sctl itself while the worker's install runs, its k0s service then left
//!    installed but stopped (what a double Ctrl-C or a killed run leaves): the next apply takes
//!    the dead run's lock over at once and resets and reinstalls the unfinished worker.
//! 2. sshd killed on the worker mid-install: exit 4 naming the host, the phase and
//!    "connection lost", no script dump; the clean-up reconnects and undoes the install.
//! 3. the worker's link down mid-install: noticed by SSH keepalives (exit 4, the time is
//!    printed), then the link comes back.
//! 4. the next worker's link flapping mid-install: passes or exits 4, then converges; then a
//!    double SIGINT while the next worker installs (exit 130 at once, no clean-up).
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
//!
//! A third: the same faults (sshd killed, link down, link flapping, double SIGINT; SIGKILL) at the
//! two other points of a run, while binaries are staged and in a worker upgrade batch, plus
//! SIGKILL while `files:` are uploaded (the record of staging files).
//!
//! A fourth: a controller join interrupted after etcd added the member; the next apply removes
//! that member before the controller joins again.

mod common;

use common::chaos::*;
use common::cli::*;
use common::poll::poll_until_or;

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

/// A `k0sctl` run in the background, its stderr collected line by line. Killed when dropped
/// unfinished (a failed test leaves no k0sctl behind).
struct Running {
    child: std::process::Child,
    log: Arc<Mutex<String>>,
    /// When the first line saying "connection lost", or that the clean-ups start, came.
    lost_at: Arc<Mutex<Option<Instant>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `cmd` (stdout discarded, stderr into the log).
    fn spawn(cmd: &mut std::process::Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let lost_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let reader = {
            let (log, lost_at) = (log.clone(), lost_at.clone());
            let err = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                    // The failure is noticed when the clean-ups start (the error itself is
                    // printed once, when the command ends).
                    if line.contains("connection lost")
                        || line.contains("Running clean-up for phase")
                    {
                        lost_at.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            })
        };
        Running {
            child,
            log,
            lost_at,
            reader: Some(reader),
        }
    }

    /// What it printed on stderr so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether it printed `s` on stderr so far. (The log is locked only for the look: a
    /// caller's slow check must not keep the reader, and so k0sctl's stderr, waiting.)
    fn printed(&self, s: &str) -> bool {
        self.log.lock().unwrap().contains(s)
    }

    /// Waits (bounded by `within`) until `ready()` holds; panics with the log when k0sctl
    /// ends first or the time is up (`what` names the awaited point).
    fn wait_for(&mut self, what: &str, within: Duration, mut ready: impl FnMut(&Running) -> bool) {
        let r = poll_until_or(what, within, Duration::from_millis(20), || {
            if ready(self) {
                return Some(None);
            }
            self.child.try_wait().unwrap().map(Some)
        });
        match r {
            Ok(None) => {}
            Ok(Some(st)) => {
                self.finish_log();
                panic!("k0sctl ended ({st}) before {what}:\n{}", self.log());
            }
            Err(e) => panic!("{e}:\n{}", self.log()),
        }
    }

    /// Waits (bounded by `within`) for the exit and the rest of its log; past `within`, kills
    /// k0sctl and panics with the log (`what` names the wait).
    fn wait_exit(&mut self, what: &str, within: Duration) -> (std::process::ExitStatus, String) {
        let r = poll_until_or(what, within, Duration::from_millis(50), || {
            self.child.try_wait().unwrap()
        });
        let status = r.unwrap_or_else(|e| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("{e}:\n{}", self.log())
        });
        self.finish_log();
        (status, self.log())
    }

    fn finish_log(&mut self) {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `k0sctl apply -c manifest`; once "Install workers" runs and `host`'s install has
/// started (`path` exists there), injects `fault` aimed at `host`; waits (bounded) for the
/// exit and puts the host back ([`Fault::repair`]).
fn apply_with_fault(c: &Chaos, manifest: &str, host: &Host, path: &str, fault: Fault) -> Faulted {
    let test = format!("test -e {path} && echo yes || true");
    let env = &c.env;
    let f = apply_when(
        &c.cache,
        manifest,
        "Install workers",
        || env.exec(host, &test).unwrap_or_default().trim() == "yes",
        |pid| fault.inject(env, host, pid),
    );
    fault.repair(env, host);
    f
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
    let mut run = Running::spawn(&mut k0sctl_cmd(cache, &["apply", "-c", manifest]));
    let running = format!("Running phase: {phase}");
    run.wait_for(
        &format!("the fault point in {phase}"),
        Duration::from_secs(300),
        |r| r.printed(&running) && ready(),
    );
    fault(run.child.id());
    let at = Instant::now();
    let (status, stderr) = run.wait_exit("k0sctl to end after the fault", Duration::from_secs(240));
    let after_fault = at.elapsed();
    for l in stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
    {
        eprintln!("    | {l}");
    }
    let lost_after = run
        .lost_at
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

/// No process of the faulted run left on `host` (waited for up to `within`), and no lock
/// file naming a live process on any host.
fn settled(env: &Env, host: &Host, within: Duration, what: &str) {
    assert_eq!(
        leftover_processes(env, host, within),
        "",
        "{}: processes left after {what}",
        host.name
    );
    no_live_lock(env);
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

/// One environment a test's chaos cases run on in order (the hosts go before their
/// directory).
struct Chaos {
    env: Env,
    cache: std::path::PathBuf,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Chaos {
    /// An environment of `hosts` hosts in a fresh directory named `prefix…`, its options
    /// adjusted by `tune`.
    fn up(prefix: &str, hosts: usize, tune: impl FnOnce(&mut Options)) -> Chaos {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let mut opts = Options::new(dir.path().join("env"), hosts);
        tune(&mut opts);
        let env = Env::up(opts).expect("testenv up");
        Chaos {
            cache: dir.path().join("cache"),
            env,
            dir,
            started: Instant::now(),
        }
    }
}

#[test]
fn faults_during_worker_install_then_plain_reapply_converges() {
    let c = Chaos::up("k0sctl-chaos-", 6, |_| {});
    sigkill_during_install(&c);
    sshd_killed_during_install(&c);
    link_down_during_install(&c);
    link_flapping_during_install(&c);
    let m = double_sigint_during_install(&c);
    upgrade_interrupted_twice(&c, &m);
    nothing_left_behind(&c);
}

fn sigkill_during_install(c: &Chaos) {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    // 1. SIGKILL of k0sctl during the first worker's install; its service left stopped.
    let m = write_manifest(dir.path(), env, &[0, 1]);
    let w = &env.hosts[1];
    // Once the worker's service is written (k0s install ran), before it is known to run.
    let unit = "/etc/systemd/system/k0sworker.service";
    let f = apply_with_fault(c, &m, w, unit, Fault::Sigkill);
    Fault::Sigkill.check_exit(&f, w, "Install workers");
    // What an interrupted start leaves: the service installed but not running.
    env.exec(w, "systemctl stop k0sworker 2>/dev/null; true")
        .unwrap();
    settled(env, w, Duration::from_secs(15), "the killed run");
    let err = converges(cache, &m, "SIGKILL");
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
}

fn sshd_killed_during_install(c: &Chaos) {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    // 2. sshd killed on the second worker mid-install: exit 4 naming the host, the phase and
    // "connection lost", no script dump.
    let m = write_manifest(dir.path(), env, &[0, 1, 2]);
    let w = &env.hosts[2];
    let f = apply_with_fault(c, &m, w, MARKER, Fault::SshdKilled);
    Fault::SshdKilled.check_exit(&f, w, "Install workers");
    settled(env, w, Duration::from_secs(15), "sshd killed");
    converges(cache, &m, "sshd killed");
    eprintln!(
        "sshd killed during worker install: exit 4 {:?} after the kill; converged ({:?} so far)",
        f.after_fault,
        started.elapsed()
    );
}

fn link_down_during_install(c: &Chaos) {
    let (dir, env, cache) = (&c.dir, &c.env, &c.cache);
    // 3. The third worker's link goes down mid-install: noticed by SSH keepalives (exit 4).
    let m = write_manifest(dir.path(), env, &[0, 1, 2, 3]);
    let w = &env.hosts[3];
    let f = apply_with_fault(c, &m, w, MARKER, Fault::LinkDown);
    Fault::LinkDown.check_exit(&f, w, "Install workers");
    eprintln!(
        "link down during worker install: connection lost reported {:?} after the link went down (SSH keepalives), k0sctl ended after {:?} (with the bounded clean-up)",
        f.lost_after, f.after_fault
    );
    no_live_lock(env);
    converges(cache, &m, "link down");
    settled(env, w, Duration::from_secs(20), "link down and a re-apply");
}

fn link_flapping_during_install(c: &Chaos) {
    let (dir, env, cache) = (&c.dir, &c.env, &c.cache);
    // 4. The fourth worker's link flaps mid-install: the run rides it out or reports the lost
    // connection; either way a plain re-apply converges.
    let m = write_manifest(dir.path(), env, &[0, 1, 2, 3, 4]);
    let w = &env.hosts[4];
    let f = apply_with_fault(c, &m, w, MARKER, Fault::LinkFlapping);
    Fault::LinkFlapping.check_exit(&f, w, "Install workers");
    no_live_lock(env);
    converges(cache, &m, "link flapping");
    settled(
        env,
        w,
        Duration::from_secs(20),
        "link flapping and a re-apply",
    );
    eprintln!(
        "link flapping during worker install: exit {:?}; converged",
        f.code
    );
}

fn double_sigint_during_install(c: &Chaos) -> String {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    // 4b. A double Ctrl-C while the fifth worker's install runs: k0sctl exits 130 at once,
    // without clean-ups; its service may be left installed and stopped. A plain re-apply
    // recognises the unfinished install as ours and converges.
    let m = write_manifest(dir.path(), env, &[0, 1, 2, 3, 4, 5]);
    let w = &env.hosts[5];
    let f = apply_with_fault(c, &m, w, MARKER, Fault::DoubleSigint);
    Fault::DoubleSigint.check_exit(&f, w, "Install workers");
    settled(env, w, Duration::from_secs(15), "the interrupted run");
    converges(cache, &m, "double SIGINT during worker install");
    eprintln!(
        "double SIGINT during worker install: exit 130; converged ({:?} so far)",
        started.elapsed()
    );
    m
}

/// Whether `w`'s worker service is stopped for an upgrade that has not finished.
fn stopped_for_upgrade(env: &Env, w: &Host) -> bool {
    env.exec(
        w,
        &format!(
            "test -e {UPGRADE_MARKER} && ! systemctl is-active -q k0sworker && echo yes || true"
        ),
    )
    .unwrap_or_default()
    .trim()
        == "yes"
}

fn upgrade_interrupted_twice(c: &Chaos, m: &str) {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    // 5. Upgrade to the next version: a double SIGINT while the binaries are staged (exits at
    // once, no clean-up), then SIGKILL in a worker upgrade batch once a worker's service was
    // stopped for its upgrade. The plain re-apply starts it again, finishes the upgrade and
    // leaves no node cordoned.
    let (old, new) = (&env.versions[0], env.versions.last().unwrap());
    assert_ne!(old, new, "testenv offers two k0s versions");
    let up = dir.path().join("k0sctl-upgrade.yaml");
    std::fs::write(
        &up,
        std::fs::read_to_string(m).unwrap().replace(
            &format!("version: \"{old}\""),
            &format!("version: \"{new}\""),
        ),
    )
    .unwrap();
    let up = up.display().to_string();
    let (w, workers) = (&env.hosts[1], &env.hosts[1..]);
    let f = apply_when(
        cache,
        &up,
        "Stage k0s binaries",
        || true,
        |pid| Fault::DoubleSigint.inject(env, w, pid),
    );
    Fault::DoubleSigint.check_exit(&f, w, "Stage k0s binaries");
    no_orphans(env, "a double SIGINT at staging");
    no_live_lock(env);
    let f = apply_when(
        cache,
        &up,
        "Upgrade workers",
        || workers.iter().any(|w| stopped_for_upgrade(env, w)),
        |pid| Fault::Sigkill.inject(env, w, pid),
    );
    Fault::Sigkill.check_exit(&f, w, "Upgrade workers");
    let err = converges(cache, &up, "SIGKILL in an upgrade batch");
    assert!(
        err.contains("stopped by an upgrade that did not finish"),
        "the stopped worker is started again:\n{err}"
    );
    // Every worker is a node (the controller is not), schedulable and on the new version.
    nodes_ready_on(env, cache, &up, new);
    eprintln!(
        "upgrade interrupted twice: converged ({:?} so far)",
        started.elapsed()
    );
}

/// No staging file of the k0s binary, no unfinished-install or -upgrade marker and no lock on
/// any host.
fn no_marker_lock_or_staging_file(env: &Env) {
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
    }
}

fn nothing_left_behind(c: &Chaos) {
    let (env, started) = (&c.env, c.started);
    no_marker_lock_or_staging_file(env);
    for h in &env.hosts {
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
    // A shaped uplink makes the binary upload take seconds, so the link can drop during it.
    let c = Chaos::up("k0sctl-stall-", 1, |o| o.uplink_mbit = Some(16));
    stalled_host_download(&c);
    stalled_upload(&c);
    plain_apply_after_stalls_converges(&c);
}

/// The k0s staging files on `h` (`ls`; fails the test if the host does not answer).
fn staging_files_strict(env: &Env, h: &Host) -> String {
    env.exec(h, "ls /usr/local/bin/k0s.tmp.* 2>/dev/null || true")
        .unwrap()
        .trim()
        .to_string()
}

/// The host downloads k0s from a server that stops sending: exit 5 naming the host, the URL,
/// the stall limit and the bytes received; no staging file stays.
fn stalled_host_download(c: &Chaos) {
    let (dir, env, cache) = (&c.dir, &c.env, &c.cache);
    let h = &env.hosts[0];
    let base = env.binserver_url.clone().expect("binary server");
    let ip = base
        .trim_start_matches("http://")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let (stall_url, stop) = stalling_server(&ip);
    let m = dir.path().join("stall.yaml");
    std::fs::write(&m, env.manifest_yaml().replace(&base, &stall_url)).unwrap();
    let m = m.display().to_string();
    let t = Instant::now();
    let out = k0sctl_cmd(cache, &["apply", "-c", &m])
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
    assert_eq!(staging_files_strict(env, h), "", "no staging file left");
}

/// The link drops while the binary is uploaded (`uploadBinary`): the upload fails as stalled,
/// naming the bytes so far, before the keepalives give up on the connection.
fn stalled_upload(c: &Chaos) {
    let (dir, env, cache) = (&c.dir, &c.env, &c.cache);
    let h = &env.hosts[0];
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
    let mut run =
        Running::spawn(k0sctl_cmd(cache, &["apply", "-c", &m]).env("K0SCTL_STALL_TIMEOUT", "3"));
    run.wait_for(
        "the upload to start (\"uploading k0s\")",
        Duration::from_secs(180),
        |r| r.printed("uploading k0s"),
    );
    // Not a wait for a condition: lets some bytes go through before the link drops.
    std::thread::sleep(Duration::from_millis(300));
    link_down(env, h);
    let t = Instant::now();
    let (status, err) = run.wait_exit(
        "k0sctl to end after the link went down",
        Duration::from_secs(180),
    );
    link_up(env, h);
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("stalled: no progress for 3s after") && err.contains("bytes"),
        "the upload stall is named with the bytes so far:\n{err}"
    );
    eprintln!(
        "stalled upload: k0sctl ended {:?} after the link went down",
        t.elapsed()
    );
}

/// A plain apply after the stalls converges and leaves no staging file.
fn plain_apply_after_stalls_converges(c: &Chaos) {
    let (env, cache) = (&c.env, &c.cache);
    converges(cache, &env.manifest.display().to_string(), "stalls");
    assert_eq!(staging_files_strict(env, &env.hosts[0]), "");
}

/// The faults of one kind, injected into a run on `host`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Sigkill,
    SshdKilled,
    LinkDown,
    LinkFlapping,
    /// Ctrl-C twice: the second one ends k0sctl at once, without clean-ups.
    DoubleSigint,
}

impl Fault {
    /// Injects the fault into the run of k0sctl `pid`, aimed at `host`.
    fn inject(self, env: &Env, host: &Host, pid: u32) {
        match self {
            Fault::Sigkill => {
                std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .unwrap();
            }
            Fault::SshdKilled => kill_sshd(env, host),
            Fault::LinkDown => link_down(env, host),
            Fault::DoubleSigint => {
                for _ in 0..2 {
                    std::process::Command::new("kill")
                        .args(["-INT", &pid.to_string()])
                        .status()
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            // Down 2 s, up 2 s, three times.
            Fault::LinkFlapping => {
                for _ in 0..3 {
                    link_down(env, host);
                    std::thread::sleep(Duration::from_secs(2));
                    ip_link_up(env, host);
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
    }

    /// Puts the host back (link up, sshd running) once k0sctl has ended.
    fn repair(self, env: &Env, host: &Host) {
        match self {
            Fault::Sigkill | Fault::DoubleSigint => {}
            Fault::SshdKilled => ensure_sshd(env, host),
            Fault::LinkDown | Fault::LinkFlapping => link_up(env, host),
        }
    }

    /// The exit code and message of the faulted run: SIGKILL ends it by the signal; a killed
    /// sshd or a link down is a lost connection (exit 4) naming the host, the phase and the
    /// cause, without the script; a flapping link is ridden out or is a lost connection.
    fn check_exit(self, f: &Faulted, host: &Host, phase: &str) {
        let ip = host.ip.to_string();
        let lost = || {
            assert!(
                f.stderr.contains(phase)
                    && f.stderr
                        .lines()
                        .any(|l| l.contains(&ip) && l.contains("connection lost")),
                "{self:?} in {phase}: host, phase and cause named:\n{}",
                f.stderr
            );
            assert!(
                !f.stderr.contains("#!/") && !f.stderr.contains("while :; do"),
                "{self:?} in {phase}: no script dump:\n{}",
                f.stderr
            );
        };
        match self {
            Fault::Sigkill => assert_eq!(f.code, None, "killed by a signal:\n{}", f.stderr),
            Fault::DoubleSigint => assert_eq!(
                f.code,
                Some(130),
                "double SIGINT in {phase}: exit 130 at once:\n{}",
                f.stderr
            ),
            Fault::SshdKilled | Fault::LinkDown => {
                assert_eq!(
                    f.code,
                    Some(4),
                    "{self:?} in {phase}: lost connection is exit 4:\n{}",
                    f.stderr
                );
                lost();
            }
            Fault::LinkFlapping => {
                assert!(
                    matches!(f.code, Some(0) | Some(4)),
                    "a flapping link in {phase} either passes or is a lost connection ({:?}):\n{}",
                    f.code,
                    f.stderr
                );
                if f.code == Some(4) {
                    lost();
                }
            }
        }
    }
}

/// The manifest of `env` (all hosts) at k0s `version`.
fn manifest_at(dir: &std::path::Path, env: &Env, version: &str) -> String {
    let p = dir.join(format!("k0sctl-{}.yaml", version.replace('+', "_")));
    let y = std::fs::read_to_string(&env.manifest).unwrap().replace(
        &format!("version: \"{}\"", env.versions[0]),
        &format!("version: \"{version}\""),
    );
    assert!(y.contains(version), "{y}");
    std::fs::write(&p, y).unwrap();
    p.display().to_string()
}

/// Every worker is a node, Ready, schedulable and on `version`.
fn nodes_ready_on(env: &Env, cache: &std::path::Path, manifest: &str, version: &str) {
    let kc = cache.with_file_name("kubeconfig");
    let out = k0sctl(cache, &["kubeconfig", "-c", manifest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(&kc, &out.stdout).unwrap();
    let nodes = kubectl(
        &kc,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.unschedulable} {.status.nodeInfo.kubeletVersion} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ],
        None,
    );
    let want = version.split('+').next().unwrap();
    for line in nodes.lines() {
        assert!(
            !line.contains("true") && line.contains(want) && line.ends_with(" True"),
            "every node Ready, schedulable and on {want}:\n{nodes}"
        );
    }
    assert_eq!(nodes.lines().count(), env.hosts.len() - 1, "{nodes}");
}

/// No staging file of the k0s binary on any host.
fn no_staging_file(env: &Env, what: &str) {
    for h in &env.hosts {
        let left = staging_files(env, h);
        assert_eq!(left, "", "{}: staging files left after {what}", h.name);
    }
}

/// No process of a k0sctl run left on any host.
fn no_orphans(env: &Env, what: &str) {
    for h in &env.hosts {
        assert_eq!(
            leftover_processes(env, h, Duration::from_secs(20)),
            "",
            "{}: processes left after {what}",
            h.name
        );
    }
}

/// Faults at the two other points of a run, "Stage k0s binaries" (while the first worker's
/// host-side download runs) and an upgrade batch of "Upgrade workers" (once a worker's service
/// was stopped for its upgrade): SIGKILL of k0sctl at staging (in the first install) and while
/// `files:` are uploaded, then per fault kind (sshd killed, link down, link flapping, double
/// SIGINT) an upgrade to the next version faulted at staging, the same upgrade faulted in a
/// worker batch, and a plain re-apply. A run that rides a flapping link out finishes its
/// upgrade; the next point then upgrades to the version after.
///
/// One environment (1 controller + 2 workers) and a chain of stand-in versions (one upgrade per
/// fault kind, two when a flapping link is ridden out at staging); the operator's direction of
/// the bridge is shaped so that a host-side download takes seconds.
#[test]
fn faults_at_staging_and_in_an_upgrade_batch_then_plain_reapply_converges() {
    let c = Chaos::up("k0sctl-chaos2-", 3, |o| {
        o.versions = [
            "v1.30.5+k0s.0",
            "v1.31.2+k0s.0",
            "v1.32.4+k0s.0",
            "v1.33.4+k0s.0",
            "v1.34.1+k0s.0",
            "v1.34.2+k0s.0",
        ]
        .map(String::from)
        .to_vec();
        o.uplink_mbit = Some(200);
    });
    let m = sigkill_at_staging(&c);
    sigkill_during_upload_files(&c, &m);
    // The index of the version the cluster is on.
    let mut at = 0;
    for fault in [
        Fault::SshdKilled,
        Fault::LinkDown,
        Fault::LinkFlapping,
        Fault::DoubleSigint,
    ] {
        at += 1;
        if fault_at_staging(&c, fault, at) {
            at += 1;
        }
        fault_in_an_upgrade_batch(&c, fault, at);
    }
    no_marker_lock_or_staging_file(&c.env);
    eprintln!("staging/upgrade-batch chaos took {:?}", c.started.elapsed());
}

const STAGE: &str = "Stage k0s binaries";
const BATCH: &str = "Upgrade workers";

/// Whether `h` has a staging file of the k0s binary (a host-side download runs).
fn staging(env: &Env, h: &Host) -> bool {
    !staging_files(env, h).is_empty()
}

/// SIGKILL at staging, in the first install: the next apply removes the killed run's staging
/// files and converges. Returns the manifest of the first version.
fn sigkill_at_staging(c: &Chaos) -> String {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    let w = &env.hosts[1];
    let m = manifest_at(dir.path(), env, &env.versions[0]);
    let f = apply_when(
        cache,
        &m,
        STAGE,
        || staging(env, w),
        |pid| Fault::Sigkill.inject(env, w, pid),
    );
    Fault::Sigkill.check_exit(&f, w, STAGE);
    no_orphans(env, "SIGKILL at staging");
    no_live_lock(env);
    let err = converges(cache, &m, "SIGKILL at staging");
    assert!(
        err.contains("removed stale staging files"),
        "the killed run's staging files are removed by the next apply:\n{err}"
    );
    no_staging_file(env, "SIGKILL at staging and a re-apply");
    nodes_ready_on(env, cache, &m, &env.versions[0]);
    eprintln!(
        "SIGKILL at staging: converged ({:?} so far)",
        started.elapsed()
    );
    m
}

/// SIGKILL while `files:` are uploaded: the record next to the lock names the upload's
/// temporary files (written before the upload began) and the relayed upload's per-transfer
/// directories, and the next apply removes exactly those.
fn sigkill_during_upload_files(c: &Chaos, m: &str) {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    let (w, workers) = (&env.hosts[1], &env.hosts[1..]);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 48 << 20]).unwrap();
    let mf = dir.path().join("k0sctl-files.yaml");
    std::fs::write(
        &mf,
        std::fs::read_to_string(m).unwrap().replace(
            "  - role: worker\n",
            &format!(
                "  - role: worker\n    files:\n    - name: big\n      src: {}\n      dstDir: /opt/chaos\n      perm: \"0600\"\n",
                big.display()
            ),
        ),
    )
    .unwrap();
    let mf = mf.display().to_string();
    let uploading = |h: &Host| {
        env.exec(h, "ls /opt/chaos/big.bin.tmp.* 2>/dev/null || true")
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let relay_dirs = |h: &Host| {
        env.exec(
            h,
            "ls -d /root/.k0sctl-relay-* /home/*/.k0sctl-relay-* 2>/dev/null || true",
        )
        .unwrap_or_default()
        .trim()
        .to_string()
    };
    // Bytes are arriving on `w`: streamed into its relay directory's `data` (a relayed upload,
    // for the whole transfer) or into the temporary file next to the destination (a direct
    // upload, or the short install step of a relayed one).
    let receiving = |h: &Host| {
        !uploading(h).is_empty()
            || !env
                .exec(
                    h,
                    "ls /root/.k0sctl-relay-*/data /home/*/.k0sctl-relay-*/data 2>/dev/null || true",
                )
                .unwrap_or_default()
                .trim()
                .is_empty()
    };
    // Something another program left that merely looks like a staging file: not ours.
    env.exec(w, "mkdir -p /opt/chaos && echo x > /opt/chaos/other.tmp.1")
        .unwrap();
    let f = apply_when(
        cache,
        &mf,
        "Upload files",
        || receiving(w),
        |pid| Fault::Sigkill.inject(env, w, pid),
    );
    Fault::Sigkill.check_exit(&f, w, "Upload files");
    // A relayed upload's per-transfer directory (key, known_hosts, data) is recorded too.
    let relayed: Vec<(String, String)> = workers
        .iter()
        .map(|h| (h.name.clone(), relay_dirs(h)))
        .collect();
    for (h, (name, dirs)) in workers.iter().zip(&relayed) {
        let rec = env
            .exec(h, "cat /run/lock/k0sctl.staging 2>/dev/null || true")
            .unwrap();
        for d in dirs.lines() {
            assert!(
                rec.lines().any(|l| l == d),
                "{name}: the relay directory {d} is in the record:\n{rec}"
            );
        }
    }
    let record = env
        .exec(
            w,
            "stat -c '%a %U' /run/lock/k0sctl.staging; cat /run/lock/k0sctl.staging",
        )
        .unwrap();
    assert!(
        record.starts_with("600 root\n") && record.contains("/opt/chaos/big.bin.tmp.*"),
        "the upload's temporary files are recorded (0600) before it starts:\n{record}"
    );
    // What the kill left on `w`: the temporary file or (relayed) the transfer directory; which
    // one depends on where the bytes were when the kill landed, but something is left.
    let (left_tmp, left_relay) = (uploading(w), relay_dirs(w));
    assert!(
        !left_tmp.is_empty() || !left_relay.is_empty(),
        "the killed upload left its temporary file or its relay directory on {}",
        w.name
    );
    no_orphans(env, "SIGKILL during Upload files");
    no_live_lock(env);
    let err = converges(cache, &mf, "SIGKILL during Upload files");
    assert!(
        err.contains("removed stale staging files")
            && (left_tmp.is_empty() || err.contains("/opt/chaos/big.bin.tmp."))
            && (left_relay.is_empty() || err.contains(".k0sctl-relay-")),
        "what the killed upload left ({left_tmp:?}, {left_relay:?}) is removed by the next \
         apply as recorded:\n{err}"
    );
    for h in workers {
        assert_eq!(uploading(h), "", "{}", h.name);
        assert_eq!(
            env.exec(
                h,
                "stat -c %s /opt/chaos/big.bin; ls /run/lock/k0sctl.staging 2>/dev/null || true"
            )
            .unwrap()
            .trim(),
            (48u64 << 20).to_string(),
            "{}: the file is in place and no record is left",
            h.name
        );
    }
    assert_eq!(
        env.exec(w, "cat /opt/chaos/other.tmp.1").unwrap().trim(),
        "x",
        "a file the record does not name stays"
    );
    for h in workers {
        assert_eq!(relay_dirs(h), "", "{}: relay directories left", h.name);
    }
    eprintln!(
        "SIGKILL during Upload files: converged, relay directories left by the kill {relayed:?} removed ({:?} so far)",
        started.elapsed()
    );
}

/// `fault` while the first worker's download of version `at` is staged: the exit `fault`
/// brings, no process or live lock left, and after sshd was killed (exit 4) the clean-up has
/// reconnected and removed what was staged. Returns whether the run finished its upgrade
/// anyway (a flapping link ridden out).
fn fault_at_staging(c: &Chaos, fault: Fault, at: usize) -> bool {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    let w = &env.hosts[1];
    let m = manifest_at(dir.path(), env, &env.versions[at]);
    let f = apply_when(
        cache,
        &m,
        STAGE,
        || staging(env, w),
        |pid| fault.inject(env, w, pid),
    );
    fault.repair(env, w);
    fault.check_exit(&f, w, STAGE);
    no_orphans(env, &format!("{fault:?} at staging"));
    no_live_lock(env);
    if f.code == Some(4) && fault == Fault::SshdKilled {
        no_staging_file(env, &format!("{fault:?} at staging"));
    }
    eprintln!(
        "{fault:?} at staging: exit {:?} {:?} after the fault ({:?} so far)",
        f.code,
        f.after_fault,
        started.elapsed()
    );
    f.code == Some(0)
}

/// `fault` aimed at the worker whose service an upgrade to version `at` stopped: the exit
/// `fault` brings, no process or live lock left, and a plain re-apply converges with no
/// staging file and every node Ready, schedulable and on version `at`.
fn fault_in_an_upgrade_batch(c: &Chaos, fault: Fault, at: usize) {
    let (dir, env, cache, started) = (&c.dir, &c.env, &c.cache, c.started);
    let workers = &env.hosts[1..];
    let m = manifest_at(dir.path(), env, &env.versions[at]);
    let stopped: Mutex<Option<usize>> = Mutex::new(None);
    let f = apply_when(
        cache,
        &m,
        BATCH,
        || {
            let i = workers.iter().position(|w| stopped_for_upgrade(env, w));
            *stopped.lock().unwrap() = i;
            i.is_some()
        },
        |pid| {
            let i = stopped.lock().unwrap().unwrap();
            fault.inject(env, &workers[i], pid)
        },
    );
    let hit = &workers[stopped.lock().unwrap().unwrap()];
    fault.repair(env, hit);
    fault.check_exit(&f, hit, BATCH);
    no_orphans(env, &format!("{fault:?} in an upgrade batch"));
    no_live_lock(env);
    converges(cache, &m, &format!("{fault:?} in an upgrade batch"));
    no_staging_file(env, &format!("{fault:?} and a re-apply"));
    nodes_ready_on(env, cache, &m, &env.versions[at]);
    eprintln!(
        "{fault:?} in an upgrade batch: exit {:?} {:?} after the fault; converged ({:?} so far)",
        f.code,
        f.after_fault,
        started.elapsed()
    );
}

/// The etcd members the first controller lists, as (name, peer URL), from `k0s etcd
/// member-list` (its JSON is the last line).
fn etcd_members(env: &Env) -> Vec<(String, String)> {
    let out = env
        .exec(
            &env.hosts[0],
            "/usr/local/bin/k0s etcd member-list 2>/dev/null || true",
        )
        .unwrap_or_default();
    let json = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("{}");
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut m: Vec<(String, String)> = v["members"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, u)| (k.clone(), u.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    m.sort();
    m
}

/// A controller join interrupted after the leader added its etcd member (k0sctl killed, the
/// service left stopped): the next plain apply resets and reinstalls the controller and removes
/// the member of the interrupted join first (`k0s etcd leave --peer-address` on the leader), so
/// that etcd ends with exactly one started member per controller.
#[test]
fn interrupted_controller_join_leaves_no_stale_etcd_member() {
    let chaos = Chaos::up("k0sctl-chaos-etcd-", 3, |o| o.controllers = 3);
    let (dir, env, cache, started) = (&chaos.dir, &chaos.env, &chaos.cache, chaos.started);

    // Two controllers first.
    let m2 = write_manifest(dir.path(), env, &[0, 1]);
    let out = k0sctl(cache, &["apply", "-c", &m2]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The third joins; once etcd lists its peer, k0sctl is killed and the service stopped.
    let c = &env.hosts[2];
    let peer = format!("https://{}:2380", c.ip);
    let m3 = write_manifest(dir.path(), env, &[0, 1, 2]);
    let f = apply_when(
        cache,
        &m3,
        "Install controllers",
        || etcd_members(env).iter().any(|(_, u)| *u == peer),
        |pid| Fault::Sigkill.inject(env, c, pid),
    );
    Fault::Sigkill.check_exit(&f, c, "Install controllers");
    env.exec(c, "systemctl stop k0scontroller 2>/dev/null; true")
        .unwrap();
    assert!(
        etcd_members(env).iter().any(|(_, u)| *u == peer),
        "the interrupted join's member is in etcd: {:?}",
        etcd_members(env)
    );
    settled(env, c, Duration::from_secs(15), "the killed join");

    let err = converges(cache, &m3, "an interrupted controller join");
    assert!(
        err.contains("was installed by an earlier k0sctl run that did not finish"),
        "the unfinished controller is reset and reinstalled:\n{err}"
    );
    assert!(
        err.contains(&format!(
            "etcd lists the member {} of an earlier join",
            c.ip
        )),
        "the member of the interrupted join is removed before the join:\n{err}"
    );
    // One started member per controller, each with its own peer.
    let members = etcd_members(env);
    let mut peers: Vec<String> = members.iter().map(|(_, u)| u.clone()).collect();
    peers.sort();
    let mut want: Vec<String> = env
        .hosts
        .iter()
        .map(|h| format!("https://{}:2380", h.ip))
        .collect();
    want.sort();
    assert_eq!(peers, want, "{members:?}");
    assert!(
        members.iter().all(|(n, _)| !n.is_empty()),
        "every member started: {members:?}"
    );
    eprintln!(
        "interrupted controller join: converged, etcd members {members:?} ({:?})",
        started.elapsed()
    );
}
