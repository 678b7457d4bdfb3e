//! Encrypted key decrypted with the passphrase from `$K0SCTL_SSH_KEY_PASSPHRASE` (CI), and the
//! sudo password from `$K0SCTL_SUDO_PASSWORD`. Own test binary: it sets process environment.

mod common;

use common::sshd::{Sshd, keygen};
use k0sctl::transport::ssh::auth::PASSPHRASE_ENV;
use k0sctl::transport::{ConnectSpec, Limits, Pool, privilege};

#[tokio::test]
async fn passphrase_and_sudo_password_from_env() {
    // SAFETY: the only test in this binary; set before any thread reads the environment.
    unsafe {
        std::env::set_var(PASSPHRASE_ENV, "from the environment");
        std::env::set_var(privilege::SUDO_PASSWORD_ENV, "sudo-pw");
    }
    let sshd = Sshd::start();
    let k = keygen(sshd.path(), "id_enc_env", "ecdsa", "from the environment");
    sshd.authorize("root", &k);
    let t = sshd.target_with_key("root", k);
    let r = Pool::new(Limits::default())
        .connect(&ConnectSpec::Ssh(t.ssh_options()))
        .await
        .expect("encrypted key via env");
    assert_eq!(r.run_str("echo ok").await.unwrap(), "ok");

    let pw = privilege::sudo_password(None, false).unwrap().unwrap();
    assert_eq!(pw.expose(), "sudo-pw");
    assert_eq!(format!("{pw:?}"), "Secret([REDACTED])");
    unsafe { std::env::remove_var(privilege::SUDO_PASSWORD_ENV) };
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("pw");
    std::fs::write(&f, "file-pw\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        privilege::sudo_password(Some(&f), false).is_err(),
        "world-readable refused"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        privilege::sudo_password(Some(&f), false)
            .unwrap()
            .unwrap()
            .expose(),
        "file-pw"
    );
}
