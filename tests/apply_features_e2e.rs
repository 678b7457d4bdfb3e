//! `k0sctl apply` with files, hooks and environment, end to end on testenv (real SSH, systemd,
//! the k0s stand-in): everything lands where and how the manifest says; a re-apply sends no
//! file again; a changed `environment` restarts only that host's service; a controller whose
//! k0s config drifted is the only controller restarted.

mod common;

use common::cli::*;

use indexmap::IndexMap;
use k0sctl::config::{self, Perm, UploadFile};
use testenv::{Env, Options};

fn main_pid(env: &Env, h: &testenv::Host, svc: &str) -> String {
    env.exec(h, &format!("systemctl show -p MainPID --value {svc}"))
        .unwrap()
        .trim()
        .to_string()
}

fn file(src: &str, dst: &str, dst_dir: &str) -> UploadFile {
    UploadFile {
        src: src.into(),
        dst: dst.into(),
        dst_dir: dst_dir.into(),
        ..Default::default()
    }
}

fn perm(s: &str) -> Option<Perm> {
    Some(Perm {
        octal: s.into(),
        error: None,
    })
}

/// The worker's k0s process's own environment.
fn environ(env: &Env, h: &testenv::Host) -> String {
    let pid = main_pid(env, h, "k0sworker");
    env.exec(h, &format!("tr '\\0' '\\n' < /proc/{pid}/environ"))
        .unwrap()
}

/// 2 controllers and a worker with files, hooks and environment, installed by `apply`.
struct Features {
    // Fields drop in this order: the hosts go before the directory they live in.
    env: Env,
    _dir: tempfile::TempDir,
    cache: std::path::PathBuf,
    manifest: std::path::PathBuf,
    /// The manifest as written.
    cluster: config::Cluster,
}

#[test]
fn files_hooks_environment_and_targeted_restarts() {
    let t = installed();
    files_hooks_and_environment_land_as_written(&t);
    let pids = reapply_runs_only_the_apply_hooks(&t);
    changed_environment_restarts_the_worker_alone(&t, &pids);
    drifted_controller_config_restarts_that_controller_alone(&t, &pids);
    drop(t);
}

/// The cluster, with local sources (a directory tree and a glob), a data file, a URL, the
/// environment and hooks on the worker.
fn installed() -> Features {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-features-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 2;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    assert_eq!(env.hosts[2].role, "worker");

    // Local sources: a directory tree and a glob.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("conf/sub")).unwrap();
    std::fs::write(src.join("conf/a.conf"), "alpha\n").unwrap();
    std::fs::write(src.join("conf/sub/b.conf"), "beta\n").unwrap();
    std::fs::write(src.join("conf/skip.txt"), "not globbed\n").unwrap();

    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let mut loaded = config::load_str(&base, "k0sctl.yaml", &|_| None).unwrap();
    let binserver = env.binserver_url.clone().expect("binary server");
    {
        let wh = &mut loaded.cluster.spec.hosts[2];
        let mut data = file("", "/etc/k0sctl-test/motd", "");
        data.data = "hello from k0sctl\n".into();
        data.perm = perm("0640");
        data.group = "adm".into();
        let mut tree = file(&src.join("conf").display().to_string(), "", "/opt/tree");
        tree.dir_perm = perm("0750");
        let glob = file(
            &format!("{}/conf/**/*.conf", src.display()),
            "",
            "/opt/glob",
        );
        let url = file(&format!("{binserver}/stable.txt"), "", "/opt/url");
        wh.files = vec![data, tree, glob, url];
        wh.environment = IndexMap::from([("K0SCTL_TEST".to_string(), "one".to_string())]);
        let mut hooks: IndexMap<String, IndexMap<String, Vec<String>>> = IndexMap::new();
        for (action, stage) in [
            ("apply", "before"),
            ("install", "before"),
            ("install", "after"),
            ("apply", "after"),
        ] {
            hooks.entry(action.into()).or_default().insert(
                stage.into(),
                vec![format!("echo {action}.{stage} >> /root/hooks.log")],
            );
        }
        wh.hooks = hooks;
    }
    let manifest = dir.path().join("k0sctl.yaml");
    std::fs::write(&manifest, config::to_yaml(&loaded.cluster)).unwrap();

    // Install.
    let out = k0sctl(&cache, &["apply", "-c", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    Features {
        env,
        _dir: dir,
        cache,
        manifest,
        cluster: loaded.cluster,
    }
}

fn files_hooks_and_environment_land_as_written(t: &Features) {
    let Features {
        env,
        cache: _,
        manifest,
        ..
    } = t;
    let _m = manifest.to_str().unwrap();
    let (_c0, _c1, w) = (&env.hosts[0], &env.hosts[1], &env.hosts[2]);
    // Files: content, modes, owners, tree layout; the glob skipped skip.txt.
    let stat = |p: &str| {
        env.exec(w, &format!("stat -c '%a %U:%G' {p}"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        env.exec(w, "cat /etc/k0sctl-test/motd").unwrap(),
        "hello from k0sctl\n"
    );
    assert_eq!(stat("/etc/k0sctl-test/motd"), "640 root:adm");
    assert_eq!(
        env.exec(w, "cat /opt/tree/a.conf /opt/tree/sub/b.conf")
            .unwrap(),
        "alpha\nbeta\n"
    );
    assert_eq!(stat("/opt/tree").split(' ').next(), Some("750"));
    assert_eq!(
        env.exec(w, "cd /opt/glob && find . -type f | sort")
            .unwrap()
            .trim(),
        "./a.conf\n./sub/b.conf"
    );
    assert_eq!(
        env.exec(w, "cat /opt/url/stable.txt").unwrap().trim(),
        env.versions.last().unwrap().as_str()
    );
    // Hooks ran in order, once each; install hooks only where something was installed.
    assert_eq!(
        env.exec(w, "cat /root/hooks.log").unwrap(),
        "apply.before\ninstall.before\ninstall.after\napply.after\n"
    );
    // Environment: /etc/environment, the drop-in, and the running k0s process itself.
    assert!(
        env.exec(w, "cat /etc/environment")
            .unwrap()
            .contains("K0SCTL_TEST=one\n")
    );
    assert_eq!(
        env.exec(w, "cat /etc/systemd/system/k0sworker.service.d/env.conf")
            .unwrap(),
        "[Service]\nEnvironment=\"K0SCTL_TEST=one\"\n"
    );
    assert!(environ(env, w).contains("K0SCTL_TEST=one\n"));
}

/// Re-apply: nothing but the apply hooks happens; no file is re-sent. Returns the k0s PIDs
/// (controller 0, controller 1, worker).
fn reapply_runs_only_the_apply_hooks(t: &Features) -> [String; 3] {
    let Features {
        env,
        cache,
        manifest,
        ..
    } = t;
    let m = manifest.to_str().unwrap();
    let (c0, c1, w) = (&env.hosts[0], &env.hosts[1], &env.hosts[2]);
    let pids = [
        main_pid(env, c0, "k0scontroller"),
        main_pid(env, c1, "k0scontroller"),
        main_pid(env, w, "k0sworker"),
    ];
    let mtimes = |h| {
        env.exec(h, "stat -c '%n %Y %i' /etc/k0sctl-test/motd /opt/tree/a.conf /opt/glob/sub/b.conf /opt/url/stable.txt /etc/environment /etc/systemd/system/k0sworker.service.d/env.conf")
            .unwrap()
    };
    let before = mtimes(w);
    let out = k0sctl(cache, &["apply", "-c", m, "--output", "json"]);
    assert!(
        out.status.success(),
        "re-apply failed:\n{}",
        text(&out.stderr)
    );
    let ch = changes(&text(&out.stdout));
    assert!(
        ch.iter()
            .all(|(_, a)| a.starts_with("ran ") && a.contains(" apply hook")),
        "{ch:?}"
    );
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert_eq!(mtimes(w), before);
    pids
}

/// A changed environment: the worker alone is restarted, with the new value.
fn changed_environment_restarts_the_worker_alone(t: &Features, pids: &[String; 3]) {
    let Features {
        env,
        cache,
        manifest,
        ..
    } = t;
    let m = manifest.to_str().unwrap();
    let (c0, c1, w) = (&env.hosts[0], &env.hosts[1], &env.hosts[2]);
    let mut changed = t.cluster.clone();
    changed.spec.hosts[2]
        .environment
        .insert("K0SCTL_TEST".into(), "two".into());
    std::fs::write(manifest, config::to_yaml(&changed)).unwrap();
    let out = k0sctl(cache, &["apply", "-c", m, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("update /etc/environment"), "{plan}");
    assert!(
        plan.contains("update the k0sworker service environment and restart k0sworker"),
        "{plan}"
    );
    assert_eq!(
        main_pid(env, w, "k0sworker"),
        pids[2],
        "the dry run restarted nothing"
    );
    let out = k0sctl(cache, &["apply", "-c", m]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    assert!(environ(env, w).contains("K0SCTL_TEST=two\n"));
    assert!(
        env.exec(w, "cat /etc/environment")
            .unwrap()
            .contains("K0SCTL_TEST=two\n")
    );
    assert_ne!(main_pid(env, w, "k0sworker"), pids[2]);
    assert_eq!(main_pid(env, c0, "k0scontroller"), pids[0]);
    assert_eq!(main_pid(env, c1, "k0scontroller"), pids[1]);
}

/// A controller whose k0s config drifted: only that controller is rewritten and restarted.
fn drifted_controller_config_restarts_that_controller_alone(t: &Features, pids: &[String; 3]) {
    let Features {
        env,
        cache,
        manifest,
        ..
    } = t;
    let m = manifest.to_str().unwrap();
    let (c0, c1, w) = (&env.hosts[0], &env.hosts[1], &env.hosts[2]);
    env.exec(
        c1,
        "sed -i 's#podCIDR: 10.244.0.0/16#podCIDR: 10.245.0.0/16#' /etc/k0s/k0s.yaml",
    )
    .unwrap();
    let drifted = env.exec(c1, "cat /etc/k0s/k0s.yaml").unwrap();
    assert!(
        drifted.contains("10.245.0.0/16"),
        "the drift was not made:\n{drifted}"
    );
    let w_pid = main_pid(env, w, "k0sworker");
    let out = k0sctl(cache, &["apply", "-c", m, "--output", "json"]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));
    let ch = changes(&text(&out.stdout));
    let c1_name = format!("{}:{}", c1.ip, c1.ssh_port);
    assert!(
        ch.iter()
            .any(|(h, a)| h == &c1_name && a.contains("config")),
        "{ch:?}"
    );
    assert!(
        !ch.iter()
            .any(|(h, _)| h == &format!("{}:{}", c0.ip, c0.ssh_port)),
        "{ch:?}"
    );
    assert!(
        !env.exec(c1, "cat /etc/k0s/k0s.yaml")
            .unwrap()
            .contains("10.245.0.0/16")
    );
    assert_ne!(main_pid(env, c1, "k0scontroller"), pids[1]);
    assert_eq!(main_pid(env, c0, "k0scontroller"), pids[0]);
    assert_eq!(main_pid(env, w, "k0sworker"), w_pid);
}

#[test]
fn dynamic_config_cluster_installs_and_stays_converged() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-dynamic-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 2;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let m = dir.path().join("k0sctl.yaml");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    std::fs::write(&m, format!("{base}    dynamicConfig: true\n")).unwrap();
    let ms = m.to_str().unwrap();
    let out = k0sctl(&cache, &["apply", "-c", ms]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "apply failed:\n{err}");
    assert!(
        err.contains("k0s reconciled the dynamic cluster config"),
        "{err}"
    );
    let (c0, c1) = (&env.hosts[0], &env.hosts[1]);
    for c in [c0, c1] {
        let unit = env
            .exec(c, "cat /etc/systemd/system/k0scontroller.service")
            .unwrap();
        assert!(
            unit.contains("--enable-dynamic-config"),
            "{}: {unit}",
            c.name
        );
    }
    // The leader got the whole config; the joining controller only its node part.
    let full = env.exec(c0, "cat /etc/k0s/k0s.yaml").unwrap();
    let node = env.exec(c1, "cat /etc/k0s/k0s.yaml").unwrap();
    assert!(full.contains("telemetry"), "{full}");
    assert!(
        !node.contains("telemetry") && !node.contains("extensions"),
        "{node}"
    );
    assert!(
        node.contains("peerAddress") && node.contains("sans"),
        "{node}"
    );
    // k0s reports the reconcile; a re-apply changes nothing (no reinstall loop over the flag).
    let out = k0sctl(&cache, &["config", "status", "-c", ms, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("SuccessfulReconcile"));
    let out = k0sctl(&cache, &["apply", "-c", ms, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(changes(&text(&out.stdout)), Vec::<(String, String)>::new());
}
