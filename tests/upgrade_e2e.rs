//! Upgrades end to end on testenv (real SSH, systemd, the k0s stand-in's v1.30.x → v1.31.x):
//! changed install flags reinstall each host once without a drain; a downgrade is refused
//! before anything changes; controllers are upgraded one at a time.

mod common;

use common::cli::*;

use std::path::Path;
use std::process::{Command, Stdio};

use testenv::{Env, Options};

fn with_version(manifest: &str, from: &str, to: &str) -> String {
    manifest.replace(
        &format!("version: \"{from}\""),
        &format!("version: \"{to}\""),
    )
}

fn running_version(env: &Env, h: &testenv::Host) -> String {
    let out = env.exec(h, "/usr/local/bin/k0s status -o json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Version"].as_str().unwrap_or("").to_string()
}

#[test]
fn install_flag_drift_reinstalls_each_host_once_and_downgrades_are_refused() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-reinstall-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let cache = dir.path().join("cache");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    // New install flags on every host: each is reinstalled exactly once, nothing is drained.
    let flagged: String = base
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("- role:") {
                format!("{l}\n    installFlags:\n    - --labels=k0sctl.test/flag=yes\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&m, &flagged).unwrap();
    let pids: Vec<String> = env
        .hosts
        .iter()
        .map(|h| {
            let svc = if h.role == "controller" {
                "k0scontroller"
            } else {
                "k0sworker"
            };
            env.exec(h, &format!("systemctl show -p MainPID --value {svc}"))
                .unwrap()
        })
        .collect();
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let ch = changes(&text(&out.stdout));
    for h in &env.hosts {
        let name = format!("{}:{}", h.ip, h.ssh_port);
        let mine: Vec<&String> = ch
            .iter()
            .filter(|(x, _)| *x == name)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(mine.len(), 1, "{}: {ch:?}", h.name);
        assert!(mine[0].starts_with("reinstalled k0s"), "{ch:?}");
        let st = env.exec(h, "/usr/local/bin/k0s status -o json").unwrap();
        assert!(
            st.contains("--labels=k0sctl.test/flag=yes"),
            "{}: {st}",
            h.name
        );
    }
    assert!(
        !text(&out.stderr).contains("drain"),
        "{}",
        text(&out.stderr)
    );
    for (h, pid) in env.hosts.iter().zip(&pids) {
        let svc = if h.role == "controller" {
            "k0scontroller"
        } else {
            "k0sworker"
        };
        let now = env
            .exec(h, &format!("systemctl show -p MainPID --value {svc}"))
            .unwrap();
        assert_ne!(&now, pid, "{} was not restarted", h.name);
    }
    // Converged: the next apply changes nothing.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(changes(&text(&out.stdout)), Vec::<(String, String)>::new());

    // A downgrade is refused before anything changes.
    let older = with_version(&flagged, &env.versions[0], "v1.29.9+k0s.0");
    std::fs::write(&m, older).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "can't perform a downgrade: {} > v1.29.9+k0s.0",
            env.versions[0]
        )),
        "{err}"
    );
    for h in &env.hosts {
        assert_eq!(running_version(&env, h), env.versions[0]);
    }
}

#[test]
fn controllers_upgrade_one_at_a_time() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-upgrade-ctl-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 3;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    let (old, new) = (&env.versions[0], env.versions.last().unwrap());
    std::fs::write(&m, with_version(&base, old, new)).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert_eq!(
        plan.matches(&format!("upgrade k0s controller {old} to {new}"))
            .count(),
        3,
        "{plan}"
    );
    for h in &env.hosts {
        assert_eq!(
            &running_version(&env, h),
            old,
            "the dry run upgraded {}",
            h.name
        );
    }

    // While the controllers are upgraded, a sampler asks every controller's API every 0.5 s.
    let sampler = Sampler::start(&env, dir.path());
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    let samples = sampler.stop();
    let err = text(&out.stderr);
    assert!(out.status.success(), "upgrade failed:\n{err}");
    for h in &env.hosts {
        assert_eq!(&running_version(&env, h), new, "{}", h.name);
    }
    // Real etcd behind every controller. The figures (how often no controller answered in
    // time, the longest gaps) depend on the machine's load and are printed only. What HA
    // guarantees does not: one controller at a time is stopped, so no sampled moment finds
    // two API servers not listening (connection refused; a probe that timed out or got an
    // error status proves nothing either way).
    let up = |p: &Probe| *p == Probe::Up;
    let none = samples.iter().filter(|s| !s.iter().any(up)).count();
    println!(
        "API sampler: {} samples at 0.5 s; samples with no controller answering: {none}; longest gap with no controller answering: {:.1} s; longest gap per controller: {:?} s",
        samples.len(),
        longest_gap(&samples, |s| s.iter().any(up)),
        (0..3)
            .map(|i| longest_gap(&samples, |s| up(&s[i])))
            .collect::<Vec<_>>()
    );
    assert!(!samples.is_empty(), "the sampler took no sample");
    let two_down = samples
        .iter()
        .filter(|s| s.iter().filter(|p| **p == Probe::Down).count() >= 2)
        .count();
    assert_eq!(
        two_down, 0,
        "two controllers' API servers were down at once: {samples:?}"
    );
    // One at a time: each controller's upgrade finished before the next one started.
    let events: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(": upgrading k0s ") || l.contains(": upgraded to k0s "))
        .collect();
    assert_eq!(events.len(), 6, "{err}");
    for pair in events.chunks(2) {
        let host = |l: &str| {
            l.split(": ")
                .next()
                .unwrap_or("")
                .rsplit(' ')
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert!(pair[0].contains("upgrading"), "{events:?}");
        assert!(pair[1].contains("upgraded"), "{events:?}");
        assert_eq!(host(pair[0]), host(pair[1]), "{events:?}");
    }
    // Converged.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(changes(&text(&out.stdout)), Vec::<(String, String)>::new());
}

/// `manifest` with `extra` appended under `spec:` (it ends with the `k0s:` block).
fn with_options(manifest: &str, extra: &str) -> String {
    format!(
        "{}{extra}",
        manifest.trim_end_matches('\n').to_string() + "\n"
    )
}

fn workload(name: &str, replicas: u32, pdb: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}-pdb\n  namespace: default\nspec:\n  {pdb}\n  selector:\n    matchLabels:\n      app: {name}\n"
    )
}

fn wait_ready_pods(kc: &Path, app: &str, n: usize) {
    common::poll::poll(
        &format!("{n} {app} pods to be Ready"),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(300),
        || ready_pods(kc, app).map(|v| v.len()) == Some(n),
    );
}

/// Runs `k0sctl` with `--output json`, timestamping each stdout line as it arrives.
fn k0sctl_stream(
    cache: &Path,
    args: &[&str],
) -> (
    Option<i32>,
    Vec<(std::time::Instant, serde_json::Value)>,
    String,
) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--output", "json"])
        .env("XDG_CACHE_HOME", cache)
        .env_remove("DEBUG")
        .env_remove("DRY_RUN")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut s).unwrap();
        s
    });
    let mut events = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            events.push((std::time::Instant::now(), v));
        }
    }
    let status = child.wait().unwrap();
    (status.code(), events, err.join().unwrap())
}

/// A testenv cluster installed at the oldest version by `k0sctl apply --kubeconfig-out`, from
/// the environment's manifest passed through `edit`.
struct Installed {
    // Dropped last: the environment lives in it.
    env: Env,
    cache: std::path::PathBuf,
    kc: std::path::PathBuf,
    m: std::path::PathBuf,
    base: String,
    _dir: tempfile::TempDir,
}

fn installed(prefix: &str, hosts: usize, edit: impl Fn(String) -> String) -> Installed {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), hosts)).expect("testenv up");
    let cache = dir.path().join("cache");
    let kc = dir.path().join("admin.conf");
    let base = edit(std::fs::read_to_string(&env.manifest).unwrap());
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let out = k0sctl(
        &cache,
        &[
            "apply",
            "-c",
            m.to_str().unwrap(),
            "--kubeconfig-out",
            kc.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    Installed {
        env,
        cache,
        kc,
        m,
        base,
        _dir: dir,
    }
}

#[test]
fn workers_upgrade_in_batches_without_breaking_the_pdb() {
    // `_dir` first: bindings drop in reverse order, so the environment goes before its dir.
    let Installed {
        _dir,
        env,
        cache,
        kc,
        m,
        base,
    } = installed("k0sctl-upgrade-w-", 9, |t| {
        with_options(
            &t,
            "  options:\n    concurrency:\n      workerDisruptionPercent: 25\n    drain:\n      gracePeriod: 5s\n",
        )
    });
    let ms = m.to_str().unwrap();

    // A replicated workload whose budget allows one pod away at a time.
    kubectl(
        &kc,
        &["apply", "-f", "-"],
        Some(&workload("web", 8, "maxUnavailable: 1")),
    );
    wait_ready_pods(&kc, "web", 8);

    let (old, new) = (&env.versions[0], env.versions.last().unwrap().clone());
    std::fs::write(&m, with_version(&base, old, &new)).unwrap();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (kc, sampling) = (kc.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut min = usize::MAX;
            let mut samples = 0;
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                min = min.min(ready_pods(&kc, "web").map_or(usize::MAX, |v| v.len()));
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            (min, samples)
        })
    };
    let (code, events, err) = k0sctl_stream(&cache, &["apply", "-c", ms]);
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (min, samples) = sampler.join().unwrap();
    assert_eq!(code, Some(0), "upgrade failed:\n{err}");
    assert!(err.contains("upgrading 2 of 8 workers at a time"), "{err}");

    // Batches of two, four of them, every worker in exactly one.
    let batches: Vec<&serde_json::Value> = events
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["event"] == "upgrade_batch")
        .collect();
    assert_eq!(batches.len(), 4, "{batches:?}");
    let mut seen = Vec::new();
    for b in &batches {
        let hosts = b["hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 2, "{b}");
        seen.extend(hosts.iter().map(|h| h.as_str().unwrap().to_string()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8);
    // Every node runs the new version (k0s, and the kubelet the API reports); none is left
    // cordoned.
    for h in &env.hosts {
        assert_eq!(running_version(&env, h), new, "{}", h.name);
    }
    let kubelets = kubectl(
        &kc,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
        ],
        None,
    );
    let base = new.split('+').next().unwrap();
    assert_eq!(kubelets.split_whitespace().count(), 8, "{kubelets}");
    assert!(
        kubelets
            .split_whitespace()
            .all(|k| k.split('+').next() == Some(base)),
        "{kubelets}"
    );
    let unschedulable = kubectl(
        &kc,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].spec.unschedulable}",
        ],
        None,
    );
    assert!(
        !unschedulable.contains("true"),
        "cordoned nodes left: {unschedulable}"
    );
    // The workload never went below its budget (7 of 8), sampled through the whole run.
    assert!(samples > 0, "the sampler took no sample");
    assert!(min >= 7, "the workload dropped to {min} Ready pods");
    wait_ready_pods(&kc, "web", 8);
}

#[test]
fn a_pdb_that_allows_nothing_blocks_with_names_and_exit_6() {
    // `_dir` first: bindings drop in reverse order, so the environment goes before its dir.
    let Installed {
        _dir,
        env,
        cache,
        kc,
        m,
        base,
    } = installed("k0sctl-upgrade-pdb-", 3, |t| {
        with_options(
            &t,
            "  options:\n    drain:\n      timeout: 12s\n      gracePeriod: 5s\n",
        )
    });
    let ms = m.to_str().unwrap();
    kubectl(
        &kc,
        &["apply", "-f", "-"],
        Some(&workload("solid", 2, "minAvailable: 2")),
    );
    wait_ready_pods(&kc, "solid", 2);
    // Where the PDB's pods run: the stand-in schedules to the least loaded node, so both may
    // be on one worker, and that worker's batch may come second.
    let solid_nodes = kubectl(
        &kc,
        &[
            "get",
            "pods",
            "-l",
            "app=solid",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        None,
    );

    let (old, new) = (&env.versions[0], env.versions.last().unwrap().clone());
    std::fs::write(&m, with_version(&base, old, &new)).unwrap();
    let (code, events, err) = k0sctl_stream(&cache, &["apply", "-c", ms]);
    // What a user sees (run with --nocapture; the README quotes it).
    eprintln!("{err}");
    assert_eq!(code, Some(6), "{err}");
    // Named after the batch starts and before the run gives up (order, not speed: how soon it is
    // named is a speed claim and belongs to a benchmark).
    let pos = |name: &str| {
        events
            .iter()
            .position(|(_, v)| v["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event: {events:?}"))
    };
    let at = |name: &str| &events[pos(name)];
    let (batch, blocked_at, error_at) = (pos("upgrade_batch"), pos("drain_blocked"), pos("error"));
    assert!(
        batch < blocked_at && blocked_at < error_at,
        "events out of order (batch {batch}, blocked {blocked_at}, error {error_at}): {events:?}"
    );
    let (_, blocked) = at("drain_blocked");
    assert_eq!(blocked["pdb"], "solid-pdb", "{blocked}");
    assert!(
        blocked["pod"]
            .as_str()
            .unwrap()
            .starts_with("default/solid-"),
        "{blocked}"
    );
    // The PDB was listed before the drain, and the error names it, the pod and the ways out.
    assert!(
        events
            .iter()
            .any(|(_, v)| v["event"] == "pdb_blocking" && v["name"] == "solid-pdb")
    );
    for want in [
        "PodDisruptionBudget default/solid-pdb",
        "pod default/solid-",
        "--no-drain",
        "spec.options.drain.timeout",
        "made schedulable again",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    let error = at("error").1.clone();
    assert_eq!(error["exit_code"], 6, "{error}");
    // The node is schedulable again and still runs the old version; a worker without the
    // PDB's pods whose batch came first may have been upgraded, nothing else moved.
    let unschedulable = kubectl(
        &kc,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].spec.unschedulable}",
        ],
        None,
    );
    assert!(!unschedulable.contains("true"), "{unschedulable}");
    let workers: Vec<&testenv::Host> = env.hosts.iter().filter(|h| h.role == "worker").collect();
    for w in &workers {
        let v = running_version(&env, w);
        if solid_nodes.split_whitespace().any(|n| n == w.name) {
            assert_eq!(&v, old, "{} runs the PDB's pods ({solid_nodes})", w.name);
        } else {
            assert!(&v == old || v == new, "{}: {v}", w.name);
        }
    }
    assert!(
        workers
            .iter()
            .any(|w| solid_nodes.split_whitespace().any(|n| n == w.name)),
        "the PDB's pods run on a worker: {solid_nodes}"
    );
    wait_ready_pods(&kc, "solid", 2);

    // The way out the message offers: --no-drain. The run resumes (the controller is already
    // upgraded) and finishes the workers.
    let out = k0sctl(&cache, &["apply", "-c", ms, "--no-drain"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for h in &env.hosts {
        assert_eq!(running_version(&env, h), new, "{}", h.name);
    }
}

#[test]
fn evict_taint_on_controller_workers_and_workers_while_upgrading() {
    // `_dir` first: bindings drop in reverse order, so the environment goes before its dir.
    let Installed {
        _dir,
        env,
        cache,
        kc,
        m,
        base,
    } = installed("k0sctl-upgrade-taint-", 2, |t| {
        with_options(
            &t.replacen("role: controller", "role: controller+worker", 1),
            "  options:\n    evictTaint:\n      enabled: true\n      controllerWorkers: true\n",
        )
    });
    let ms = m.to_str().unwrap();

    let (old, new) = (&env.versions[0], env.versions.last().unwrap().clone());
    std::fs::write(&m, with_version(&base, old, &new)).unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "upgrade failed:\n{err}");
    assert!(
        err.contains("tainted node controller0 with k0sctl.k0sproject.io/evict=true:NoExecute"),
        "{err}"
    );
    for h in &env.hosts {
        assert_eq!(running_version(&env, h), new, "{}", h.name);
    }
    // Nothing of the taint (or the cordon) is left.
    let taints = kubectl(
        &kc,
        &["get", "nodes", "-o", "jsonpath={.items[*].spec.taints}"],
        None,
    );
    assert!(!taints.contains("k0sctl.k0sproject.io/evict"), "{taints}");
}

/// Reads `GET /api/v1/namespaces/kube-system` through each controller's own API server every
/// 0.5 s (admin client certificate, 2 s timeout) until stopped; one `[bool; 3]` per sample.
/// One controller's answer to one probe of the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// HTTP 200.
    Up,
    /// Connection refused: nothing listens on the API port.
    Down,
    /// Timed out or another status: says nothing certain about the server.
    Unknown,
}

struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<Probe>>>,
}

impl Sampler {
    fn start(env: &Env, dir: &Path) -> Sampler {
        let c: Vec<&testenv::Host> = env
            .hosts
            .iter()
            .filter(|h| h.role == "controller")
            .collect();
        for f in ["ca.crt", "admin.crt", "admin.key"] {
            let pem = env
                .exec(c[0], &format!("cat /var/lib/k0s/pki/{f}"))
                .unwrap();
            std::fs::write(dir.join(f), pem).unwrap();
        }
        let urls: Vec<String> = c
            .iter()
            .map(|h| format!("https://{}:6443/api/v1/namespaces/kube-system", h.ip))
            .collect();
        let dir = dir.to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                let children: Vec<_> = urls
                    .iter()
                    .map(|u| {
                        Command::new("curl")
                            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2"])
                            .arg("--cacert")
                            .arg(dir.join("ca.crt"))
                            .arg("--cert")
                            .arg(dir.join("admin.crt"))
                            .arg("--key")
                            .arg(dir.join("admin.key"))
                            .arg(u)
                            .stdout(Stdio::piped())
                            .stderr(Stdio::null())
                            .spawn()
                            .unwrap()
                    })
                    .collect();
                samples.push(
                    children
                        .into_iter()
                        .map(|c| {
                            let out = c.wait_with_output().unwrap();
                            match (out.status.code(), text(&out.stdout).as_str()) {
                                (_, "200") => Probe::Up,
                                // curl: "Failed to connect to host".
                                (Some(7), _) => Probe::Down,
                                _ => Probe::Unknown,
                            }
                        })
                        .collect(),
                );
                if let Some(rest) = std::time::Duration::from_millis(500).checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Vec<Vec<Probe>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Longest run of samples where `ok` is false, in seconds (0.5 s per sample).
fn longest_gap(samples: &[Vec<Probe>], ok: impl Fn(&Vec<Probe>) -> bool) -> f64 {
    let (mut run, mut max) = (0usize, 0usize);
    for s in samples {
        run = if ok(s) { 0 } else { run + 1 };
        max = max.max(run);
    }
    max as f64 * 0.5
}

/// A controller goes down while the controllers are upgraded: before stopping the next one,
/// the run stops with an error naming the controller that is down, and touches nothing more.
#[test]
fn quorum_loss_during_a_controller_upgrade_stops_the_run() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-upgrade-quorum-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 3;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let m = dir.path().join("k0sctl.yaml");
    std::fs::write(&m, &base).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    // controller0 (upgraded first) waits in its upgrade.after hook until the test has stopped
    // k0s on controller2.
    let (old, new) = (&env.versions[0], env.versions.last().unwrap());
    let hook = "    hooks:\n      upgrade:\n        after:\n        - 'touch /tmp/upgraded; while [ ! -e /tmp/go ]; do sleep 0.2; done'\n    ssh:\n";
    let upgraded = with_version(&base, old, new).replacen("    ssh:\n", hook, 1);
    assert!(upgraded.contains("/tmp/go"), "{upgraded}");
    std::fs::write(&m, upgraded).unwrap();
    let child = k0sctl_cmd(&cache, &["apply", "-c", ms])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (c0, c1, c2) = (&env.hosts[0], &env.hosts[1], &env.hosts[2]);
    common::poll::poll(
        "controller0 to be upgraded",
        std::time::Duration::from_secs(300),
        std::time::Duration::from_millis(300),
        || env.exec(c0, "test -e /tmp/upgraded").is_ok(),
    );
    env.exec(c2, "systemctl stop k0scontroller").unwrap();
    env.exec(c0, "touch /tmp/go").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the upgrade went on without quorum:\n{err}"
    );
    // Hosts are named by their SSH address.
    assert!(err.contains("without a quorum"), "{err}");
    assert!(
        err.contains(&format!("1 of 3 controllers is down ({}:22)", c2.ip)),
        "{err}"
    );
    // controller0 was upgraded; controller1 was not touched and still serves; controller2 was
    // not touched either.
    assert_eq!(&running_version(&env, c0), new);
    assert_eq!(&running_version(&env, c1), old);
    assert_eq!(
        env.exec(c1, "systemctl is-active k0scontroller")
            .unwrap()
            .trim(),
        "active"
    );
    assert_eq!(
        env.exec(c2, "/usr/local/bin/k0s version").unwrap().trim(),
        old.as_str()
    );
}
