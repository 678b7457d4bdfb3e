//! Privilege: root, `sudo -n`, sudo with a password fed on stdin (never in argv or logs), and
//! uploads into root-owned directories through sudo. Creates throw-away users (removed after).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::sshd::{Sshd, SshdSetup, TestUser};
use k0sctl::transport::{
    Cmd, ConnectSpec, Limits, Pool, Privilege, Remote, Secret, TransportError, UploadOptions,
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// All tracing output of this test binary (a process-wide subscriber, so events from every
/// runtime thread are seen), at TRACE level.
fn global_logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        // try_init also bridges the `log` crate, so russh's own TRACE output is checked too.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .try_init()
            .expect("global subscriber");
        logs
    })
    .clone()
}

/// A root-owned 0755 directory outside the sshd dir (which is 0700); removed on drop.
fn root_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("k0sctl-rootdir-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

async fn connect(sshd: &Sshd, user: &str) -> Remote {
    let t = sshd.target(user);
    Pool::new(Limits::default())
        .connect(&ConnectSpec::Ssh(t.ssh_options()))
        .await
        .expect("connect")
}

#[tokio::test]
async fn root_needs_no_wrapper() {
    let sshd = Sshd::start();
    let mut r = connect(&sshd, "root").await;
    assert!(matches!(
        r.detect_privilege(None).await.unwrap(),
        Privilege::Root
    ));
    assert_eq!(r.run_str(Cmd::new("id -u").sudo()).await.unwrap(), "0");
}

#[tokio::test]
async fn sudo_nopasswd_and_upload_into_root_dir() {
    let sshd = Sshd::start();
    let user = TestUser::create(Some(true));
    let mut r = connect(&sshd, &user.name).await;
    assert!(matches!(
        r.detect_privilege(None).await.unwrap(),
        Privilege::SudoNoPassword
    ));
    assert_eq!(r.run_str(Cmd::new("id -u").sudo()).await.unwrap(), "0");
    assert_ne!(r.run_str("id -u").await.unwrap(), "0");

    let dir = root_dir();
    let dst = dir.path().join("k0s").display().to_string();
    // Without sudo: permission denied, with the remote stderr, nothing left behind.
    let e = r
        .upload(
            std::io::Cursor::new(b"x".to_vec()),
            &dst,
            &UploadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");
    // With sudo.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let rep = r
        .upload(
            std::io::Cursor::new(data.clone()),
            &dst,
            &UploadOptions::default().mode(0o755).sudo(true),
        )
        .await
        .expect("sudo upload");
    assert_eq!(rep.bytes, data.len() as u64);
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    let st = r.stat(&dst, false).await.unwrap().unwrap();
    assert_eq!((st.mode, st.uid, st.size), (0o755, 0, data.len() as u64));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp files left"
    );
}

#[tokio::test]
async fn sudo_with_password_never_leaks() {
    let sshd = Sshd::start_with(SshdSetup {
        log_level: "DEBUG3".into(),
        ..Default::default()
    });
    let user = TestUser::create(Some(false));
    let pw = user.password.clone();
    let logs = global_logs();

    let mut r = connect(&sshd, &user.name).await;
    // No password given: detected as "cannot escalate", and using sudo explains what to do.
    assert!(matches!(
        r.detect_privilege(None).await.unwrap(),
        Privilege::None
    ));
    let e = r.run(Cmd::new("id -u").sudo()).await.unwrap_err();
    assert!(e.to_string().contains("sudo password"), "{e}");

    // Wrong password: a clear error without the password.
    let e = r
        .detect_privilege(Some(Secret::new("not-the-password")))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Privilege { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("not-the-password"), "{e:?}");

    // Right password.
    let p = r
        .detect_privilege(Some(Secret::new(pw.clone())))
        .await
        .unwrap();
    assert!(matches!(p, Privilege::SudoPassword(_)));
    assert!(!format!("{p:?}").contains(&pw));
    assert_eq!(r.run_str(Cmd::new("id -u").sudo()).await.unwrap(), "0");
    // The command's own stdin follows the password line.
    assert_eq!(
        r.run_str(Cmd::new("cat").sudo().stdin("payload\n"))
            .await
            .unwrap(),
        "payload"
    );
    // What the remote side sees as argv of sudo and of every process: no password.
    let seen = r
        .run_str(Cmd::new("ps -eo args; tr '\\0' ' ' < /proc/$PPID/cmdline").sudo())
        .await
        .unwrap();
    assert!(seen.contains("sudo -k -S -p"), "{seen}");
    assert!(!seen.contains(&pw), "password visible in argv");
    // A failing sudo command: the error carries stderr, not the password.
    let e = r
        .run(Cmd::new("echo nope >&2; exit 4").sudo())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(!format!("{e} {e:?}").contains(&pw));
    // Upload into a root-owned directory through sudo with password.
    let dir = root_dir();
    let dst = dir.path().join("secret.yaml").display().to_string();
    r.write_file(&dst, "token: abc\n", 0o600, true)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "token: abc\n");
    let st = r.stat(&dst, true).await.unwrap().unwrap();
    assert_eq!((st.mode, st.uid), (0o600, 0));

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(logs.contains("exec"), "tracing captured nothing: {logs}");
    assert!(logs.contains("russh"), "russh's log output not captured");
    assert!(!logs.contains(&pw), "password in our logs");
    let slog = sshd.log();
    assert!(
        slog.contains("sudo -k -S"),
        "sshd DEBUG3 log should show commands"
    );
    assert!(!slog.contains(&pw), "password in sshd log");
}

#[tokio::test]
async fn no_sudo_rights() {
    let sshd = Sshd::start();
    let user = TestUser::create(None);
    let mut r = connect(&sshd, &user.name).await;
    assert!(matches!(
        r.detect_privilege(None).await.unwrap(),
        Privilege::None
    ));
    assert!(!r.privilege().can_escalate());
}

/// Restores /etc/doas.conf on drop.
struct DoasRule {
    original: Option<Vec<u8>>,
}

impl DoasRule {
    fn permit_nopass(user: &str) -> DoasRule {
        let original = std::fs::read("/etc/doas.conf").ok();
        let mut text = original.clone().unwrap_or_default();
        text.extend_from_slice(format!("permit nopass {user} as root\n").as_bytes());
        std::fs::write("/etc/doas.conf", text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions("/etc/doas.conf", std::fs::Permissions::from_mode(0o400)).unwrap();
        DoasRule { original }
    }
}

impl Drop for DoasRule {
    fn drop(&mut self) {
        match &self.original {
            Some(t) => {
                let _ = std::fs::write("/etc/doas.conf", t);
            }
            None => {
                let _ = std::fs::remove_file("/etc/doas.conf");
            }
        }
    }
}

#[tokio::test]
async fn doas_nopass() {
    if std::process::Command::new("sh")
        .args(["-c", "command -v doas"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("SKIPPED: doas is not installed (apt-get install opendoas)");
        return;
    }
    let sshd = Sshd::start();
    let user = TestUser::create(None);
    let _rule = DoasRule::permit_nopass(&user.name);
    let mut r = connect(&sshd, &user.name).await;
    assert!(matches!(
        r.detect_privilege(None).await.unwrap(),
        Privilege::Doas
    ));
    assert_eq!(r.run_str(Cmd::new("id -u").sudo()).await.unwrap(), "0");
    let dir = root_dir();
    let dst = dir.path().join("via-doas").display().to_string();
    r.write_file(&dst, "doas\n", 0o640, true).await.unwrap();
    let st = r.stat(&dst, true).await.unwrap().unwrap();
    assert_eq!((st.mode, st.uid), (0o640, 0));
}
