//! Atomic verified uploads, downloads, stat, write-with-mode, over native SSH.

mod common;

use std::time::Duration;

use common::sshd::Sshd;
use k0sctl::transport::{ConnectSpec, Limits, Pool, Remote, TransportError, UploadOptions};
use sha2::Digest;

async fn connect(sshd: &Sshd) -> Remote {
    let mut r = Pool::new(Limits::default())
        .connect(&ConnectSpec::Ssh(sshd.target("root").ssh_options()))
        .await
        .expect("connect");
    r.detect_privilege(None).await.unwrap();
    r
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::fill(&mut v[..]);
    v
}

#[tokio::test]
async fn upload_download_stat_roundtrip() {
    let sshd = Sshd::start();
    let r = connect(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("blob").display().to_string();
    let data = random_bytes(5 * 1024 * 1024 + 17);
    let rep = r
        .upload(
            std::io::Cursor::new(data.clone()),
            &dst,
            &UploadOptions::default().mode(0o640),
        )
        .await
        .unwrap();
    assert_eq!(rep.sha256, hex::encode(sha2::Sha256::digest(&data)));
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    let st = r.stat(&dst, false).await.unwrap().unwrap();
    assert_eq!(
        (st.size, st.mode, st.is_dir),
        (data.len() as u64, 0o640, false)
    );
    assert!(
        r.stat(&format!("{dst}.nope"), false)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        r.stat(&dir.path().display().to_string(), false)
            .await
            .unwrap()
            .unwrap()
            .is_dir
    );

    // Overwrite in place (atomic rename over the old file).
    r.write_file(&dst, "small", 0o600, false).await.unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), b"small");
    assert_eq!(r.stat(&dst, false).await.unwrap().unwrap().mode, 0o600);

    // Download with verification, local file created with the mode.
    let local = dir.path().join("downloaded");
    let n = r.download(&dst, &local, 0o600, false).await.unwrap();
    assert_eq!(n, 5);
    assert_eq!(std::fs::read(&local).unwrap(), b"small");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&local).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(r.read_file(&dst, false).await.unwrap(), b"small");
    // Only the two files: no temp leftovers.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[tokio::test]
async fn corrupted_in_flight_is_detected_and_not_installed() {
    let sshd = Sshd::start();
    let r = connect(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("k0s").display().to_string();
    std::fs::write(&dst, b"old version").unwrap();
    let data = random_bytes(2 * 1024 * 1024);
    let opts = UploadOptions {
        corrupt_byte_at: Some(1_234_567),
        ..UploadOptions::default().mode(0o755)
    };
    let e = r
        .upload(std::io::Cursor::new(data), &dst, &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::UploadVerify { .. }), "{e}");
    assert!(e.to_string().contains("nothing was installed"), "{e}");
    // The old file is untouched and no temp file is left.
    assert_eq!(std::fs::read(&dst).unwrap(), b"old version");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn remote_exit_early_does_not_hang() {
    let sshd = Sshd::start();
    let r = connect(&sshd).await;
    let data = random_bytes(64 * 1024 * 1024);
    let res = tokio::time::timeout(
        Duration::from_secs(300),
        r.upload(
            std::io::Cursor::new(data),
            "/nonexistent-dir/k0s",
            &UploadOptions::default(),
        ),
    )
    .await
    .expect("upload hung after the remote command exited");
    let e = res.unwrap_err();
    assert!(e.to_string().contains("No such file or directory"), "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    // Connection still fine.
    assert_eq!(r.run_str("echo ok").await.unwrap(), "ok");
}

#[tokio::test]
async fn large_download_streams_and_verifies() {
    let sshd = Sshd::start();
    let r = connect(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    let remote_path = dir.path().join("backup.tar.gz");
    let data = random_bytes(24 * 1024 * 1024 + 3);
    std::fs::write(&remote_path, &data).unwrap();
    let local = dir.path().join("local-copy");
    let n = r
        .download(&remote_path.display().to_string(), &local, 0o600, false)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(&local).unwrap() == data);
    // Missing remote file: an error with the remote stderr, and no local leftovers.
    let e = r
        .download("/nonexistent/file", &dir.path().join("x"), 0o600, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("No such file"), "{e}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn upload_creates_parent_sets_mtime_and_owner() {
    let sshd = Sshd::start();
    let r = connect(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("a/b/k0s").display().to_string();
    r.upload(
        std::io::Cursor::new(b"bin".to_vec()),
        &dst,
        &UploadOptions::default()
            .mode(0o755)
            .create_parent(true)
            .mtime(1_600_000_000)
            .owner("nobody"),
    )
    .await
    .unwrap();
    let st = r.stat(&dst, false).await.unwrap().unwrap();
    assert_eq!((st.mode, st.mtime, st.size), (0o755, 1_600_000_000, 3));
    let nobody = r.run_str("id -u nobody").await.unwrap();
    assert_eq!(st.uid.to_string(), nobody);
    let parent = r
        .stat(&dir.path().join("a/b").display().to_string(), false)
        .await
        .unwrap()
        .unwrap();
    assert!(parent.is_dir);
    assert_eq!(parent.mode, 0o755);
}

#[tokio::test]
async fn upload_file_reports_byte_progress() {
    use std::sync::{Arc, Mutex};
    let sshd = Sshd::start();
    let r = connect(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("src");
    let data = random_bytes(3 * 1024 * 1024 + 5);
    std::fs::write(&local, &data).unwrap();
    type Seen = Vec<(u64, Option<u64>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s2 = seen.clone();
    let progress = k0sctl::transport::UploadProgress(Arc::new(move |sent, total| {
        s2.lock().unwrap().push((sent, total));
    }));
    let dst = dir.path().join("dst").display().to_string();
    r.upload_file(
        &local,
        &dst,
        &UploadOptions::default().progress(Some(progress)),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    let seen = seen.lock().unwrap();
    let total = data.len() as u64;
    assert!(seen.len() > 1, "{seen:?}");
    assert!(seen.iter().all(|&(_, t)| t == Some(total)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert_eq!(seen.last().unwrap().0, total);
}
