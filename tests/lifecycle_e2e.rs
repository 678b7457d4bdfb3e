//! `k0sctl reset`, `backup`, `apply --restore-from`, `config status` and `config edit` end to
//! end on testenv (real SSH, systemd, the k0s stand-in), driving the CLI binary. One cluster
//! (1 controller + 2 workers) goes through the whole life: installed with `apply`; `reset`
//! without `--force` off a terminal is refused and changes nothing; `config status` and
//! `config edit` (under a pseudo-terminal, with a scripted `EDITOR`); a backup, the
//! controller's data destroyed, a restore through `apply --restore-from` that keeps the
//! cluster ID and the worker Node UIDs; finally `reset --force`, after which the hosts' overlay
//! upper directories hold nothing k0s or k0sctl put there (only what k0s documents to remain).
//! A second test drives the reusable per-host reset (`reset_host`) with the node-removal steps
//! on an HA cluster: the node is deleted from the API and the controller leaves etcd.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::phases::{load, opts};
use k0sctl::phases::steps::reset_host::{ResetSteps, plan_reset_host, reset_host};
use k0sctl::phases::{self, Manager, State};
use k0sctl::transport::ssh::SshConfig;
use sha2::{Digest, Sha256};
use testenv::{Env, Options};

const BIN: &str = env!("CARGO_BIN_EXE_k0sctl");

fn k0sctl_in(cwd: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("DEBUG")
        .env_remove("DRY_RUN")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `k0s kubectl` on the controller (inside the host, no SSH), with its cache on the host's
/// tmpfs so the test's own calls leave nothing in the overlay the reset check looks at.
fn kubectl(env: &Env, args: &str) -> String {
    env.exec(
        &env.hosts[0],
        &format!("k0s kubectl --cache-dir=/tmp/test-kubectl-cache {args}"),
    )
    .unwrap_or_else(|e| panic!("k0s kubectl {args}: {e:#}"))
}

/// The cluster ID and the worker nodes' UIDs.
fn identity(env: &Env) -> (String, BTreeMap<String, String>) {
    let ns = kubectl(env, "get namespace kube-system -o jsonpath={.metadata.uid}");
    let nodes: serde_json::Value =
        serde_json::from_str(&kubectl(env, "get nodes -o json")).unwrap();
    let uids = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["metadata"]["uid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (ns.trim().to_string(), uids)
}

fn sha256_file(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

/// Every entry of an overlay upper directory: path (as seen in the host) → what it is
/// (`dir`, `link:<target>`, `file:<sha256>`, `whiteout`, `other`).
fn snapshot(upper: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::FileTypeExt;
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(upper).min_depth(1) {
        let e = e.unwrap();
        let rel = format!("/{}", e.path().strip_prefix(upper).unwrap().display());
        let ft = e.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("link:{}", std::fs::read_link(e.path()).unwrap().display())
        } else if ft.is_file() {
            format!("file:{}", sha256_file(e.path()).unwrap_or_default())
        } else if ft.is_char_device() {
            "whiteout".to_string()
        } else {
            "other".to_string()
        };
        m.insert(rel, what);
    }
    m
}

/// What changed in an upper directory between two snapshots and is not the same as the
/// machine's own file (the lower layer, `/`), i.e. what the run left on the host.
fn changed(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut v = Vec::new();
    for (p, what) in after {
        if before.get(p) == Some(what) {
            continue;
        }
        let lower = PathBuf::from(p);
        if what == "dir" && lower.is_dir() {
            continue;
        }
        if let Some(sum) = what.strip_prefix("file:")
            && sha256_file(&lower).as_deref() == Some(sum)
        {
            continue;
        }
        v.push(format!("{p} ({})", what.split(':').next().unwrap()));
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        // Removed from the upper layer: back to the machine's version, or gone.
        if !before[p].starts_with("dir") && Path::new(p).exists() {
            continue;
        }
        if before[p] == "dir" {
            continue;
        }
        v.push(format!("{p} (removed)"));
    }
    v
}

/// Changes that are the host OS going about its business (logins, systemd's own state,
/// shadow-utils' backup and lock files), not k0s or k0sctl state.
fn os_noise(entry: &str) -> bool {
    let p = entry.split(' ').next().unwrap();
    [
        "/var/log/",
        "/var/lib/systemd/",
        "/etc/passwd-",
        "/etc/group-",
        "/etc/shadow-",
        "/etc/gshadow-",
        "/etc/.pwd.lock",
    ]
    .iter()
    .any(|n| p == n.trim_end_matches('/') || p.starts_with(n))
}

#[test]
fn reset_backup_restore_and_config_commands() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-lifecycle-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 3)).expect("testenv up");
    let cache = dir.path().join("cache");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let uppers: Vec<PathBuf> = env
        .hosts
        .iter()
        .map(|h| env.dir.join("hosts").join(&h.name).join("upper"))
        .collect();
    let before: Vec<_> = uppers.iter().map(|u| snapshot(u)).collect();

    // The testenv manifest (pinned k0s version, testenv addresses only), with dynamic config
    // on the controller so that the ClusterConfig object `config edit` edits exists.
    let manifest = dir.path().join("k0sctl.yaml");
    let y = env.manifest_yaml().replacen(
        "  - role: controller\n",
        "  - role: controller\n    installFlags:\n    - --enable-dynamic-config\n",
        1,
    );
    assert!(y.contains("--enable-dynamic-config"), "{y}");
    std::fs::write(&manifest, &y).unwrap();
    let m = manifest.display().to_string();
    let k0sctl = |args: &[&str]| k0sctl_in(&work, &cache, args);

    let out = k0sctl(&["apply", "-c", &m]);
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    // (c) Reset without --force and without a terminal: refused before connecting.
    let stamp = "stat -c '%n %Y' /usr/local/bin/k0s /etc/k0s/* /etc/systemd/system/k0s*.service /var/lib/k0s 2>/dev/null; systemctl is-active k0scontroller k0sworker; ls /run/lock/k0sctl 2>&1";
    let stamps = |env: &Env| -> Vec<String> {
        env.hosts
            .iter()
            .map(|h| env.exec(h, &format!("{stamp}; true")).unwrap())
            .collect()
    };
    let s0 = stamps(&env);
    let out = k0sctl(&["reset", "-c", &m]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("reset requires --force"), "{err}");
    assert!(!err.contains("Running phase"), "{err}");
    assert_eq!(stamps(&env), s0);
    // On a terminal it asks, listing the hosts; anything but yes declines (exit 8).
    let mut child = Command::new("script")
        .args(["-qec", &format!("{BIN} reset -c {m}"), "/dev/null"])
        .current_dir(&work)
        .env("XDG_CACHE_HOME", &cache)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let tty = text(&out.stdout);
    assert_eq!(out.status.code(), Some(8), "{tty}");
    assert!(tty.contains("Going to reset all of the hosts"), "{tty}");
    for h in &env.hosts {
        assert!(tty.contains(&format!("{}:22 ({})", h.ip, h.role)), "{tty}");
    }
    assert!(tty.contains("confirmation or --force required"), "{tty}");
    assert_eq!(stamps(&env), s0);

    // (d) config status: the reconciliation events, in kubectl's formats.
    let out = k0sctl(&["config", "status", "-c", &m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("SuccessfulReconcile"),
        "{}",
        text(&out.stdout)
    );
    let out = k0sctl(&["config", "status", "-c", &m, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "SuccessfulReconcile"),
        "{ev}"
    );

    // (d) config edit under a pseudo-terminal: an editor that changes nothing applies nothing;
    // one that changes a value gets it applied.
    let level = || {
        kubectl(
            &env,
            "-n kube-system get clusterconfig k0s -o jsonpath={.spec.extensions.helm.concurrencyLevel}",
        )
        .trim()
        .to_string()
    };
    assert_eq!(level(), "5");
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nstat -c %a \"$1\" > \"$(dirname \"$0\")/edited-mode\"\nsed -i 's/concurrencyLevel: 5/concurrencyLevel: 7/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let edit = |editor: &str| {
        Command::new("script")
            .args(["-qec", &format!("{BIN} config edit -c {m}"), "/dev/null"])
            .current_dir(&work)
            .env("XDG_CACHE_HOME", &cache)
            .env("EDITOR", editor)
            .env_remove("VISUAL")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = edit("true");
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("configuration was not changed"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(level(), "5");
    let out = edit(editor.to_str().unwrap());
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(level(), "7");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("edited-mode"))
            .unwrap()
            .trim(),
        "600"
    );
    let temps: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("k0s-config."))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");

    // (a) Backup (default name, 0600), destroy the controller's data, restore through apply.
    // An object written before the backup comes back from the etcd snapshot; one written
    // after it does not.
    kubectl(
        &env,
        "create configmap before-backup -n default --from-literal=k=v",
    );
    let out = k0sctl(&["backup", "-c", &m]);
    assert!(
        out.status.success(),
        "backup failed:\n{}",
        text(&out.stderr)
    );
    let backups: Vec<PathBuf> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("k0s_backup_")
                && n.ends_with(".tar.gz")
                && n["k0s_backup_".len()..n.len() - 7]
                    .chars()
                    .all(|c| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup = &backups[0];
    assert_eq!(mode(backup), 0o600);
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(backup)
        .output()
        .unwrap();
    assert!(listing.status.success());
    assert!(text(&listing.stdout).contains("etcd-snapshot.db"));
    let ctrl = &env.hosts[0];
    assert_eq!(
        env.exec(ctrl, "ls -d /tmp/k0sctl.* 2>/dev/null | wc -l")
            .unwrap()
            .trim(),
        "0",
        "remote temp dir left behind"
    );
    // `-o` and a dry run that writes nothing.
    let named = dir.path().join("named.tar.gz");
    let out = k0sctl(&[
        "backup",
        "-c",
        &m,
        "-o",
        named.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!named.exists());
    assert!(
        text(&out.stdout).contains("take a backup"),
        "{}",
        text(&out.stdout)
    );

    kubectl(
        &env,
        "create configmap after-backup -n default --from-literal=k=v",
    );
    let (cluster_id, nodes) = identity(&env);
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    env.exec(ctrl, "systemctl stop k0scontroller && rm -rf /var/lib/k0s")
        .unwrap();
    assert!(
        env.exec(
            ctrl,
            "k0s kubectl --cache-dir=/tmp/test-kubectl-cache get nodes"
        )
        .is_err()
    );
    // The k0scontroller unit is still installed but k0s does not run: apply needs --force
    // for that, as it says.
    let out = k0sctl(&[
        "apply",
        "-c",
        &m,
        "--restore-from",
        backup.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let out = k0sctl(&[
        "apply",
        "-c",
        &m,
        "--force",
        "--restore-from",
        backup.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "restore failed:\n{}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    let restore_at = err
        .find("Running phase: Restore cluster state")
        .expect(&err);
    let init_at = err
        .find("Running phase: Initialize the k0s cluster")
        .expect(&err);
    assert!(restore_at < init_at, "{err}");
    assert_eq!(identity(&env), (cluster_id, nodes));
    assert_eq!(
        kubectl(
            &env,
            "get configmap before-backup -n default -o jsonpath={.data.k}"
        )
        .trim(),
        "v"
    );
    let gone = env.exec(
        &env.hosts[0],
        "k0s kubectl --cache-dir=/tmp/test-kubectl-cache get configmap after-backup -n default",
    );
    assert!(gone.is_err(), "not from the snapshot: {gone:?}");
    // The restored etcd is a one-member cluster of the restored controller.
    let members = env.exec(&env.hosts[0], "k0s etcd member-list").unwrap();
    assert_eq!(
        members.trim(),
        format!(
            "{{\"members\":{{\"controller0\":\"https://{}:2380\"}}}}",
            env.hosts[0].ip
        )
    );
    assert_eq!(
        env.exec(
            ctrl,
            "ls -d /tmp/k0sctl.* /root/k0s_*.yaml 2>/dev/null | wc -l"
        )
        .unwrap()
        .trim(),
        "0",
        "restore left files behind"
    );
    // A re-apply with --restore-from on the running cluster restores nothing.
    let out = k0sctl(&[
        "apply",
        "-c",
        &m,
        "--restore-from",
        backup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("Running phase: Restore cluster state"));

    // (b) Reset: a dry run plans it for every host and changes nothing; the reset leaves the
    // hosts as k0s documents; a second dry run finds nothing to do.
    let s1 = stamps(&env);
    let out = k0sctl(&["reset", "-c", &m, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert_eq!(plan.matches("run k0s reset").count(), 3, "{plan}");
    assert_eq!(stamps(&env), s1);
    let out = k0sctl(&["reset", "-c", &m, "--force"]);
    assert!(out.status.success(), "reset failed:\n{}", text(&out.stderr));
    let err = text(&out.stderr);
    let w = err.find("Running phase: Reset workers").expect(&err);
    let l = err.find("Running phase: Reset leader").expect(&err);
    assert!(w < l, "{err}");
    let out = k0sctl(&["reset", "-c", &m, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "dry-run: no cluster state altering actions would be performed\n"
    );
    let mut report = Vec::new();
    for ((h, u), b) in env.hosts.iter().zip(&uppers).zip(&before) {
        let all = changed(b, &snapshot(u));
        let left: Vec<&String> = all.iter().filter(|e| !os_noise(e)).collect();
        eprintln!("{}: changed since boot: {all:?}", h.name);
        if !left.is_empty() {
            report.push(format!("{}: {left:?}", h.name));
        }
        // The k0s system users are gone too (k0s reset deletes them).
        assert_eq!(
            env.exec(
                h,
                "getent passwd etcd kube-apiserver konnectivity-server kube-scheduler; true"
            )
            .unwrap()
            .trim(),
            "",
            "{}",
            h.name
        );
    }
    assert!(
        report.is_empty(),
        "left after reset:\n{}",
        report.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_host_deletes_the_node_and_leaves_etcd() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-reset-host-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 3);
    o.controllers = 2;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let m = env.manifest.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        k0sctl_in(Path::new("/"), &cache, &["apply", "-c", &m])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "apply failed:\n{}", text(&out.stderr));

    let manifest = std::fs::read_to_string(&env.manifest).unwrap();
    let mut state = State::new(
        load(&manifest, dir.path()),
        opts(false),
        SshConfig::parse(""),
    );
    let mut front = phases::preflight();
    front.retain(|p| p.title() != phases::set_version::TITLE);
    front.push(Box::new(phases::gather_k0s_facts::GatherK0sFacts));
    Manager::new(front).run(&mut state).await.expect("facts");
    assert_eq!(state.leader, Some(0));
    let (ctrl0, ctrl1, worker) = (&env.hosts[0], &env.hosts[1], &env.hosts[2]);
    let members = || env.exec(ctrl0, "k0s etcd member-list").unwrap();
    assert!(
        members().contains(&format!("https://{}:2380", ctrl1.ip)),
        "{}",
        members()
    );
    let steps = ResetSteps {
        delete_node: true,
        etcd_leave: true,
    };

    // The plan names every step and changes nothing.
    let plan = plan_reset_host(&state, 1, steps).await.unwrap();
    assert!(
        plan.contains(&format!("remove the etcd member {}", ctrl1.ip)),
        "{plan:?}"
    );
    assert!(
        plan.iter().any(|p| p.starts_with("run k0s reset")),
        "{plan:?}"
    );
    let plan = plan_reset_host(&state, 2, steps).await.unwrap();
    assert!(
        plan.contains(&"delete node worker0 from the cluster".to_string()),
        "{plan:?}"
    );
    assert!(members().contains(&ctrl1.ip.to_string()));

    // The controller leaves etcd (through the leader) and is reset.
    let r = reset_host(&state, 1, steps).await;
    assert!(r.error.is_none(), "{r:?}");
    assert!(
        r.changes
            .contains(&format!("removed the etcd member {}", ctrl1.ip)),
        "{r:?}"
    );
    assert!(!members().contains(&ctrl1.ip.to_string()), "{}", members());
    assert_eq!(
        env.exec(ctrl1, "ls -d /var/lib/k0s /etc/k0s /usr/local/bin/k0s /etc/systemd/system/k0scontroller.service 2>/dev/null | wc -l")
            .unwrap()
            .trim(),
        "0"
    );

    // The worker is deleted from the API and reset.
    let r = reset_host(&state, 2, steps).await;
    assert!(r.error.is_none(), "{r:?}");
    assert!(
        r.changes
            .contains(&"deleted node worker0 from the cluster".to_string()),
        "{r:?}"
    );
    let nodes = env
        .exec(
            ctrl0,
            "k0s kubectl --cache-dir=/tmp/test-kubectl-cache get nodes -o name",
        )
        .unwrap();
    assert!(!nodes.contains("worker0"), "{nodes}");
    assert_eq!(
        env.exec(worker, "ls -d /var/lib/k0s /etc/k0s /usr/local/bin/k0s /etc/systemd/system/k0sworker.service 2>/dev/null | wc -l")
            .unwrap()
            .trim(),
        "0"
    );
    // The leader is untouched.
    assert_eq!(
        env.exec(ctrl0, "systemctl is-active k0scontroller")
            .unwrap()
            .trim(),
        "active"
    );
    state.pool.close_all().await;
}
