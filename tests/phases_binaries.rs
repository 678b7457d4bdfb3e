//! k0s binaries end to end on testenv: stage (host download verified against sha256sums.txt,
//! or upload of k0sBinaryPath) and install, dry run, idempotence, downgrade guard.

mod common;

use common::phases::{load, opts};
use k0sctl::exit::Code;
use k0sctl::phases::{self, Manager, State};
use k0sctl::transport::ssh::SshConfig;
use testenv::{Env, Options};

async fn apply(
    text: &str,
    dir: &std::path::Path,
    dry_run: bool,
) -> (State, Result<Vec<phases::PhaseReport>, phases::PhaseError>) {
    let mut state = State::new(load(text, dir), opts(dry_run), SshConfig::parse(""));
    let r = Manager::new(binaries_pipeline()).run(&mut state).await;
    (state, r)
}

/// The front of the apply pipeline: preflight, k0s facts, and the binaries.
fn binaries_pipeline() -> Vec<Box<dyn phases::Phase>> {
    let mut p = phases::preflight();
    p.push(Box::new(phases::gather_k0s_facts::GatherK0sFacts));
    p.push(Box::new(phases::validate_facts::ValidateFacts));
    p.push(Box::new(phases::stage_binaries::StageBinaries));
    p.push(Box::new(phases::install_binaries::InstallBinaries));
    p.push(Box::new(phases::disconnect::Disconnect));
    p
}

fn ran(r: &[phases::PhaseReport], title: &str) -> bool {
    r.iter().any(|p| p.title == title && p.ran)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_and_install_k0s_binaries() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-binaries-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 2)).expect("testenv up");
    let manifest = std::fs::read_to_string(&env.manifest).unwrap();
    let (oldest, newest) = (
        env.versions[0].clone(),
        env.versions.last().unwrap().clone(),
    );
    let on = |i: usize, cmd: &str| env.exec(&env.hosts[i], cmd).unwrap().trim().to_string();
    let leftovers = "ls /usr/local/bin | grep -c 'k0s.tmp' || true";

    // Dry run: a plan, and nothing on the hosts.
    let (state, r) = apply(&manifest, dir.path(), true).await;
    r.expect("dry run");
    let plan = state.plan.to_string();
    assert_eq!(
        plan.matches(&format!("download k0s {oldest} from")).count(),
        2,
        "{plan}"
    );
    assert_eq!(
        plan.matches(&format!("install k0s {oldest} at /usr/local/bin/k0s"))
            .count(),
        2,
        "{plan}"
    );
    assert_eq!(
        on(0, "test -e /usr/local/bin/k0s && echo yes || echo no"),
        "no"
    );

    // Real run: downloaded by the hosts, verified, installed.
    let (_, r) = apply(&manifest, dir.path(), false).await;
    let r = r.expect("apply binaries");
    assert!(ran(&r, "Stage k0s binaries on hosts") && ran(&r, "Install k0s binaries on hosts"));
    for i in 0..2 {
        assert_eq!(on(i, "/usr/local/bin/k0s version"), oldest);
        assert_eq!(on(i, leftovers), "0");
    }
    let mtime = on(0, "stat -c %Y /usr/local/bin/k0s");

    // Again: nothing to stage or install, the binary is untouched.
    let (_, r) = apply(&manifest, dir.path(), false).await;
    let r = r.expect("idempotent");
    assert!(
        !ran(&r, "Stage k0s binaries on hosts") && !ran(&r, "Install k0s binaries on hosts"),
        "{r:?}"
    );
    assert_eq!(on(0, "stat -c %Y /usr/local/bin/k0s"), mtime);

    // A release whose sha256sums.txt disagrees with the binary: refused, nothing left behind.
    let sums = env.dir.join(format!(
        "bin/k0sproject/k0s/releases/download/{newest}/sha256sums.txt"
    ));
    let good = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(
        &sums,
        good.replacen(|c: char| c.is_ascii_hexdigit(), "0", 8),
    )
    .unwrap();
    let bumped = manifest.replace(
        &format!("version: \"{oldest}\""),
        &format!("version: \"{newest}\""),
    );
    assert_ne!(bumped, manifest, "manifest pins the oldest version");
    let (_, r) = apply(&bumped, dir.path(), false).await;
    let e = r.expect_err("checksum mismatch");
    assert_eq!(e.code, Code::PhaseFailed);
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert_eq!(on(0, leftovers), "0");
    assert_eq!(on(0, "/usr/local/bin/k0s version"), oldest);
    std::fs::write(&sums, good).unwrap();

    // The newer version, now verifiable, replaces the installed one (k0s not running).
    let (_, r) = apply(&bumped, dir.path(), false).await;
    r.expect("upgrade binaries");
    assert_eq!(on(1, "/usr/local/bin/k0s version"), newest);

    // k0sBinaryPath: the local file is uploaded, verified, installed; then left alone.
    let local = env.k0s_binaries[0].display().to_string();
    let with_local = bumped.replace(
        "  - role: worker\n",
        &format!("  - role: worker\n    k0sBinaryPath: {local}\n"),
    );
    let with_local = drop_download_url_of_worker(&with_local);
    let (_, r) = apply(&with_local, dir.path(), false).await;
    r.expect("k0sBinaryPath upload");
    assert_eq!(on(1, "/usr/local/bin/k0s version"), oldest);
    let want = testenv::stamp::sha256_file(&env.k0s_binaries[0]).unwrap();
    assert_eq!(on(1, "sha256sum /usr/local/bin/k0s | cut -c1-64"), want);

    // A running k0s newer than the target: the downgrade is refused before anything changes.
    env.ssh(
        &env.hosts[0],
        "k0s install controller --data-dir=/var/lib/k0s && systemctl start k0scontroller",
    )
    .unwrap();
    common::poll::poll(
        "k0s to start",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(300),
        || env.ssh(&env.hosts[0], "k0s status -o json").is_ok(),
    );
    let (_, r) = apply(&manifest, dir.path(), false).await;
    let e = r.expect_err("downgrade");
    assert_eq!(e.code, Code::InvalidConfig);
    assert!(
        e.to_string()
            .contains(&format!("can't perform a downgrade: {newest} > {oldest}")),
        "{e}"
    );
    assert_eq!(on(0, "/usr/local/bin/k0s version"), newest);
}

/// The worker entry gets k0sBinaryPath; k0sctl does not allow mixing it with k0sDownloadURL
/// semantics, so drop the worker's download URL line.
fn drop_download_url_of_worker(manifest: &str) -> String {
    let mut out = String::new();
    let mut in_worker = false;
    for line in manifest.lines() {
        if line.starts_with("  - role: ") {
            in_worker = line.contains("worker");
        }
        if in_worker && line.trim_start().starts_with("k0sDownloadURL:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
