//! The OpenSSH (system `ssh` with ControlMaster) and localhost transports behave like the
//! native one behind the same [`Remote`] API.

mod common;

use common::sshd::Sshd;
use k0sctl::transport::openssh::OpenSshOptions;
use k0sctl::transport::{Cmd, ConnectSpec, ExitStatus, Limits, Pool, Remote, UploadOptions};

async fn exercise(r: &Remote, dir: &std::path::Path) {
    let out = r.exec("echo out; echo err >&2; exit 7").await.unwrap();
    assert_eq!(
        (
            out.stdout_str().as_str(),
            out.stderr_str().as_str(),
            out.status.clone()
        ),
        ("out", "err", ExitStatus::Code(7))
    );
    assert_eq!(
        r.run_str(Cmd::new("tr a-z A-Z").stdin("hello"))
            .await
            .unwrap(),
        "HELLO"
    );
    let dst = dir.join("up").display().to_string();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    r.upload(
        std::io::Cursor::new(data.clone()),
        &dst,
        &UploadOptions::default().mode(0o600),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    assert_eq!(r.stat(&dst, false).await.unwrap().unwrap().mode, 0o600);
    let e = r
        .upload(
            std::io::Cursor::new(vec![0u8; 8 << 20]),
            "/nonexistent-dir/x",
            &UploadOptions::default(),
        )
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("No such file") || m.contains("nonexistent"),
        "{m}"
    );
}

/// OpenSSH options for `t`: its key only, no agent, its own known_hosts, no ssh config.
fn openssh_options(t: &common::sshd::Target) -> OpenSshOptions {
    OpenSshOptions {
        address: t.address.clone(),
        user: Some(t.user.clone()),
        port: Some(t.port),
        key_path: Some(t.key.clone()),
        config_path: Some("/dev/null".into()),
        options: vec![
            (
                "UserKnownHostsFile".into(),
                t.known_hosts.display().to_string(),
            ),
            ("GlobalKnownHostsFile".into(), "/dev/null".into()),
            ("StrictHostKeyChecking".into(), "accept-new".into()),
            ("IdentitiesOnly".into(), "yes".into()),
            ("IdentityAgent".into(), "none".into()),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn openssh_transport_with_controlmaster() {
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let o = openssh_options(&t);
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::OpenSsh(o))
        .await
        .expect("openssh connect");
    let dir = tempfile::tempdir().unwrap();
    exercise(&r, dir.path()).await;
    pool.close_all().await;
    // One authenticated connection (the master) served every command.
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "{}",
        sshd.log()
    );
}

/// A command run over OpenSSH is tied to its session as over native SSH: when the `ssh`
/// client goes away (the run is interrupted: the exec future is dropped and its `ssh` child
/// killed), the host kills the command's process group instead of letting it run on.
#[tokio::test]
async fn openssh_command_dies_with_its_session() {
    use std::time::Duration;
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::OpenSsh(openssh_options(&t)))
        .await
        .expect("openssh connect");
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!(
        "sh -c 'echo $$ > {}.tmp && mv {0}.tmp {0}; exec sleep 300'",
        pidfile.display()
    );
    let run = tokio::spawn({
        let r = r.clone();
        async move { r.exec(cmd.as_str()).await }
    });
    let pid: i32 = common::poll::poll_until_async(
        "the remote command to start",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok() },
    )
    .await;
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z'))
    };
    assert!(alive(pid), "the command runs while its session is open");
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    common::poll::poll_until_async(
        "the remote command to be killed after its ssh client went away",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
    // The connection still serves the next command.
    assert_eq!(r.run_str("echo again").await.unwrap(), "again");
    pool.close_all().await;
}

/// The PIDs of `pid`'s descendants (from /proc).
fn descendants(pid: u32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut out = vec![pid as i32];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.remove(0);
    out
}

/// A peer that stops answering (its sshd processes frozen: TCP still acknowledges, so only
/// keepalives can tell) is declared lost by the `ssh` client through the run's keepalive
/// settings, and the command fails as a lost connection instead of hanging.
#[tokio::test]
async fn openssh_keepalives_notice_a_dead_peer() {
    use k0sctl::transport::TransportError;
    use std::time::Duration;
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let mut o = openssh_options(&t);
    o.keepalive_interval = Some(Duration::from_secs(1));
    o.keepalive_count_max = Some(1);
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::OpenSsh(o))
        .await
        .expect("openssh connect");
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let cmd = format!("touch {}; sleep 600", started.display());
    let run = tokio::spawn({
        let r = r.clone();
        async move { r.exec(cmd.as_str()).await }
    });
    common::poll::poll_until_async(
        "the remote command to start",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { started.exists().then_some(()) },
    )
    .await;
    // Freeze every per-connection sshd process (not the listener, not the command).
    let frozen: Vec<i32> = descendants(sshd.pid())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sshd")
        })
        .collect();
    assert!(!frozen.is_empty(), "no per-connection sshd process found");
    for p in &frozen {
        // SAFETY: signalling processes of the sshd this test started.
        unsafe { libc::kill(*p, libc::SIGSTOP) };
    }
    // A bound, not a speed claim: keepalives every 1 s, 1 unanswered.
    let res = tokio::time::timeout(Duration::from_secs(120), run).await;
    for p in &frozen {
        // SAFETY: as above.
        unsafe { libc::kill(*p, libc::SIGCONT) };
    }
    let res = res.expect("the command still hangs: keepalives did not declare the peer lost");
    match res.unwrap() {
        Err(TransportError::Disconnected { .. }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    pool.close_all().await;
}

#[tokio::test]
async fn localhost_transport() {
    let pool = Pool::new(Limits::default());
    let mut r = pool.connect(&ConnectSpec::Localhost).await.unwrap();
    r.detect_privilege(None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    exercise(&r, dir.path()).await;
}
