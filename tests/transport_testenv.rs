//! The transport against testenv hosts (real sshd + systemd in namespaces): manifest-driven
//! connections through a bastion, sudo with a password, a corrupted upload that is refused,
//! and known_hosts accept-new followed by a changed host key that is refused.

use std::path::Path;

use k0sctl::config;
use k0sctl::connect::spec_for;
use k0sctl::transport::error::HostKeyError;
use k0sctl::transport::files::UploadOptions;
use k0sctl::transport::ssh::{SshConfig, SshOptions, StrictHostKeyChecking};
use k0sctl::transport::{Cmd, ConnectSpec, Limits, Pool, Privilege, Secret, TransportError};
use testenv::{Env, Options, SudoMode};

fn loaded(manifest: &Path) -> config::Loaded {
    let text = std::fs::read_to_string(manifest).unwrap();
    config::load_str(&text, "k0sctl.yaml", &|_| None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bastion_sudo_password_and_corrupted_upload() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-transport-te-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 2);
    o.bastion = true;
    o.user = Some("alice".into());
    o.sudo = SudoMode::Password;
    let env = Env::up(o).expect("testenv up");
    let password = env.password.clone().expect("password");
    let cfg = loaded(&env.manifest);
    // The manifest's per-environment known_hosts covers the bastion too: the user's own file
    // is never written.
    let user_kh = dirs::home_dir().unwrap().join(".ssh/known_hosts");
    let user_kh_before = std::fs::read(&user_kh).ok();
    let pool = Pool::new(Limits::new(30, 5));
    for (h, t) in cfg.cluster.spec.hosts.iter().zip(&env.hosts) {
        // Hosts sit behind the bastion: the manifest's ssh.bastion is the only way in.
        assert!(h.ssh.as_ref().unwrap().bastion.is_some());
        let spec = spec_for(h, Path::new("/"), &SshConfig::parse("")).unwrap();
        let mut r = pool
            .connect(&spec)
            .await
            .expect("connect through the bastion");
        assert_eq!(r.run_str("hostname").await.unwrap().trim(), t.name);
        assert_eq!(r.run_str("id -un").await.unwrap().trim(), "alice");
        let p = r
            .detect_privilege(Some(Secret::new(password.clone())))
            .await
            .unwrap()
            .clone();
        assert!(matches!(p, Privilege::SudoPassword(_)), "{p:?}");
        assert_eq!(
            r.run_str(Cmd::new("id -u").sudo()).await.unwrap().trim(),
            "0"
        );

        // A corrupted upload into a root-owned directory is detected and nothing is installed.
        let data = vec![7u8; 3 * 1024 * 1024];
        let opts = UploadOptions {
            corrupt_byte_at: Some(1_000_000),
            ..UploadOptions::default().mode(0o755).sudo(true)
        };
        let e = r
            .upload(
                std::io::Cursor::new(data.clone()),
                "/usr/local/bin/k0s-upload-test",
                &opts,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::UploadVerify { .. }), "{e}");
        assert_eq!(
            env.exec(t, "ls /usr/local/bin | grep -c k0s-upload-test || true")
                .unwrap()
                .trim(),
            "0"
        );
        // The same upload, uncorrupted, lands with its mode and owner root.
        r.upload(
            std::io::Cursor::new(data),
            "/usr/local/bin/k0s-upload-test",
            &UploadOptions::default().mode(0o755).sudo(true),
        )
        .await
        .expect("upload");
        assert_eq!(
            env.exec(t, "stat -c '%a %U %s' /usr/local/bin/k0s-upload-test")
                .unwrap()
                .trim(),
            "755 root 3145728"
        );
    }
    // The password never reached argv on the hosts (checked while nothing runs: the sudo
    // logs record the command lines sudo saw).
    for t in &env.hosts {
        let journal = env
            .exec(
                t,
                "journalctl -q --no-pager 2>/dev/null | tail -n 200 || true",
            )
            .unwrap();
        assert!(!journal.contains(&password), "password in the host journal");
    }
    pool.close_all().await;
    assert_eq!(
        std::fs::read(&user_kh).ok(),
        user_kh_before,
        "~/.ssh/known_hosts was modified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_then_changed_host_key_is_refused() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-hostkey-")
        .tempdir()
        .unwrap();
    let env = Env::up(Options::new(dir.path().join("env"), 1)).expect("testenv up");
    let t = &env.hosts[0];
    let kh = dir.path().join("known_hosts");
    let mut o = SshOptions::new(t.ip.to_string(), t.ssh_port, "root")
        .key(&env.key_path)
        .known_hosts_file(&kh);
    o.known_hosts.policy = StrictHostKeyChecking::AcceptNew;
    o.retries = 0;
    let spec = ConnectSpec::Ssh(o);

    // First contact: the key is recorded, and OpenSSH's own ssh-keygen finds it.
    let pool = Pool::new(Limits::new(30, 5));
    pool.connect(&spec)
        .await
        .expect("accept-new records the key")
        .run("true")
        .await
        .unwrap();
    pool.close_all().await;
    let recorded = std::fs::read_to_string(&kh).unwrap();
    let host_pub = env
        .exec(t, "cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub")
        .unwrap();
    assert!(recorded.contains(host_pub.trim()), "{recorded}");
    let found = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(t.ip.to_string())
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(found.status.success());

    // The host is "reinstalled": new host key.
    env.exec(t, "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh").unwrap();
    let pool = Pool::new(Limits::new(30, 5));
    let e = pool
        .connect(&spec)
        .await
        .err()
        .expect("a changed host key must be refused");
    assert!(
        matches!(e, TransportError::HostKey(HostKeyError::Changed { .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains(&format!("{}:1", kh.display())), "{msg}");
    assert!(msg.contains("ssh-keygen -R"), "{msg}");
    // Never silently accepted.
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded);
}
