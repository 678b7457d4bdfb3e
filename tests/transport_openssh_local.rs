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

#[tokio::test]
async fn openssh_transport_with_controlmaster() {
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let o = OpenSshOptions {
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
    };
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

#[tokio::test]
async fn localhost_transport() {
    let pool = Pool::new(Limits::default());
    let mut r = pool.connect(&ConnectSpec::Localhost).await.unwrap();
    r.detect_privilege(None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    exercise(&r, dir.path()).await;
}
