//! Native SSH transport against a real OpenSSH sshd on loopback: authentication (keys of every
//! type, encrypted keys, agent, certificates), exec semantics, known_hosts policy.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sshd::{Agent, Sshd, SshdSetup, keygen, sign};
use k0sctl::transport::ssh::SshConnection;
use k0sctl::transport::{
    Cmd, ConnectSpec, ExitStatus, HostKeyError, Limits, Pool, Remote, Secret, StreamKind,
    TransportError,
};

async fn remote(o: &k0sctl::transport::ssh::SshOptions) -> Result<Remote, TransportError> {
    let pool = Pool::new(Limits::default());
    pool.connect(&ConnectSpec::Ssh(o.clone())).await
}

#[tokio::test]
async fn key_auth_and_exec_semantics() {
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let r = remote(&t.ssh_options()).await.expect("connect");

    let out = r.exec("echo out; echo err >&2; exit 3").await.unwrap();
    assert_eq!(out.stdout_str(), "out");
    assert_eq!(out.stderr_str(), "err");
    assert_eq!(out.status, ExitStatus::Code(3));

    // run() turns a failure into an error with host, command and remote stderr.
    let e = r.run("echo boom >&2; false").await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.1"), "{msg}");
    assert!(msg.contains("echo boom >&2; false"), "{msg}");
    assert!(msg.contains("boom"), "{msg}");
    assert_eq!(e.exit_status(), Some(&ExitStatus::Code(1)));

    // stdin piping, 3 MiB (bigger than the channel window).
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let out = r.run(Cmd::new("wc -c").stdin(data.clone())).await.unwrap();
    assert_eq!(out.stdout_str(), data.len().to_string());

    // Streaming callback sees the output as it arrives.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    r.run(
        Cmd::new("echo a; echo b >&2").on_output(Arc::new(move |k, b| {
            s2.lock().unwrap().push((k, b.to_vec()));
        })),
    )
    .await
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(k, b)| *k == StreamKind::Stdout && b == b"a\n")
    );
    assert!(
        seen.iter()
            .any(|(k, b)| *k == StreamKind::Stderr && b == b"b\n")
    );

    // Per-command timeout; the connection stays usable.
    let e = r
        .run(Cmd::new("sleep 30").timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
    assert_eq!(r.run_str("echo still-here").await.unwrap(), "still-here");

    // Remote command exits without reading a large stdin: must not hang.
    let big = vec![7u8; 32 * 1024 * 1024];
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        r.exec(Cmd::new("exit 5").stdin(big)),
    )
    .await
    .expect("exec hung on early remote exit")
    .unwrap();
    assert_eq!(out.status, ExitStatus::Code(5));
    assert_eq!(r.run_str("echo ok").await.unwrap(), "ok");

    // Signals are reported.
    let out = r.exec("kill -9 $$").await.unwrap();
    assert!(
        matches!(out.status, ExitStatus::Signal(_)),
        "{:?}",
        out.status
    );
}

#[tokio::test]
async fn rsa_and_ecdsa_keys() {
    let sshd = Sshd::start();
    for kind in ["rsa", "ecdsa"] {
        let k = keygen(sshd.path(), &format!("id_{kind}"), kind, "");
        sshd.authorize("root", &k);
        let t = sshd.target_with_key("root", k);
        let r = remote(&t.ssh_options())
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(r.run_str("echo hi").await.unwrap(), "hi");
    }
    // OpenSSH 9.x refuses SHA-1 `ssh-rsa` signatures by default, so the RSA login above proves
    // rsa-sha2-256/512 was used.
}

#[tokio::test]
async fn encrypted_key_with_passphrase() {
    let sshd = Sshd::start();
    let k = keygen(sshd.path(), "id_enc", "ed25519", "correct horse");
    sshd.authorize("root", &k);
    let t = sshd.target_with_key("root", k.clone());

    // Wrong passphrase: a clear, final key error (not an endless retry).
    let mut o = t.ssh_options();
    // Use a copy of the key file so the per-process key cache does not interfere.
    let k2 = sshd.path().join("id_enc_copy");
    std::fs::copy(&k, &k2).unwrap();
    o.key_paths = vec![k2.clone()];
    o.passphrase = Some(Secret::new("wrong"));
    let e = SshConnection::connect(&o).await.err().expect("must fail");
    assert!(matches!(e, TransportError::Key { .. }), "{e}");
    assert!(!e.is_transient());
    assert!(
        !format!("{e:?}").contains("wrong\""),
        "passphrase leaked: {e:?}"
    );

    let mut o = t.ssh_options();
    o.passphrase = Some(Secret::new("correct horse"));
    let r = remote(&o).await.expect("connect");
    assert_eq!(r.run_str("echo ok").await.unwrap(), "ok");
}

#[tokio::test]
async fn agent_auth_and_configured_key_first() {
    let sshd = Sshd::start_with(SshdSetup {
        extra: vec!["MaxAuthTries 3".into()],
        ..Default::default()
    });
    let agent = Agent::start();
    // Ten unrelated keys in the agent, then the right one.
    for i in 0..10 {
        agent.add(&keygen(sshd.path(), &format!("noise{i}"), "ed25519", ""));
    }
    let good = keygen(sshd.path(), "good", "ed25519", "");
    agent.add(&good);
    sshd.authorize("root", &good);
    let t = sshd.target_with_key("root", good.clone());

    // Configured key first: succeeds although the agent holds 11 keys and MaxAuthTries is 3.
    let mut o = t.ssh_options();
    o.use_agent = true;
    o.agent_socket = Some(agent.socket.clone());
    // Private key file removed: the agent must do the signing.
    std::fs::remove_file(&good).unwrap();
    let r = remote(&o).await.expect("agent-signed configured key");
    assert_eq!(r.run_str("echo agent").await.unwrap(), "agent");

    // Agent only, no configured key: the matching identity is found (sshd allows 3 tries, so
    // this only works if we stop at success; put the good key first by using a fresh agent).
    let agent2 = Agent::start();
    let k = keygen(sshd.path(), "only", "ed25519", "");
    agent2.add(&k);
    sshd.authorize("root", &k);
    let mut o = t.ssh_options();
    o.key_paths.clear();
    o.use_agent = true;
    o.agent_socket = Some(agent2.socket.clone());
    let r = remote(&o).await.expect("agent auth");
    assert_eq!(r.run_str("whoami").await.unwrap(), "root");
}

#[tokio::test]
async fn user_certificate_auth() {
    let d = tempfile::tempdir().unwrap();
    let ca = keygen(d.path(), "user_ca", "ed25519", "");
    let sshd = Sshd::start_with(SshdSetup {
        extra: vec![format!("TrustedUserCAKeys {}.pub", ca.display())],
        ..Default::default()
    });
    let k = keygen(sshd.path(), "certkey", "ed25519", "");
    sign(&ca, &k, false, "root");
    // Not in authorized_keys: only the certificate can work.
    let t = sshd.target_with_key("root", k);
    let r = remote(&t.ssh_options()).await.expect("cert auth");
    assert_eq!(r.run_str("echo cert").await.unwrap(), "cert");
    assert!(sshd.log().contains("ED25519-CERT"), "{}", sshd.log());

    // The same certificate held by an agent (ssh-add loads key-cert.pub with the key), with no
    // key file configured: agent certificate identities are tried too.
    let agent = Agent::start();
    agent.add(&t.key);
    let mut o = t.ssh_options();
    o.key_paths.clear();
    o.use_agent = true;
    o.agent_socket = Some(agent.socket.clone());
    let r = remote(&o).await.expect("agent cert auth");
    assert_eq!(r.run_str("echo agent-cert").await.unwrap(), "agent-cert");
}

#[tokio::test]
async fn wrong_key_fails_fast_and_final() {
    let sshd = Sshd::start();
    let k = keygen(sshd.path(), "stranger", "ed25519", "");
    let t = sshd.target_with_key("root", k);
    let mut o = t.ssh_options();
    o.retries = 5;
    let e = SshConnection::connect(&o).await.err().expect("must fail");
    assert!(matches!(e, TransportError::Auth { .. }), "{e}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("stranger"), "{e}");
}

#[tokio::test]
async fn accept_new_then_changed_key_refused() {
    let sshd = Sshd::start();
    // Client key and known_hosts outlive the first sshd (its dir goes away with it).
    let client = tempfile::tempdir().unwrap();
    let key = keygen(client.path(), "id", "ed25519", "");
    sshd.authorize("root", &key);
    let mut t = sshd.target_with_key("root", key);
    t.known_hosts = client.path().join("known_hosts");
    let o = t.ssh_options();
    remote(&o).await.expect("first connect records the key");
    let kh = std::fs::read_to_string(&t.known_hosts).unwrap();
    let want = sshd.host_pub();
    let want_b64 = want.split_whitespace().nth(1).unwrap();
    assert!(
        kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 {want_b64}", sshd.port)),
        "{kh}"
    );
    // OpenSSH finds the entry we wrote.
    let found = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", sshd.port))
        .arg("-f")
        .arg(&t.known_hosts)
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "ssh-keygen -F did not find our entry"
    );
    // Second connection: trusted, nothing appended.
    remote(&o).await.expect("second connect");
    assert_eq!(std::fs::read_to_string(&t.known_hosts).unwrap(), kh);

    // Same port, new host key (host "reinstalled").
    let port = sshd.port;
    let key = t.key.clone();
    let kh_path = t.known_hosts.clone();
    drop(sshd);
    let sshd2 = Sshd::start_with(SshdSetup {
        port: Some(port),
        ..Default::default()
    });
    sshd2.authorize("root", &key);
    let mut t2 = sshd2.target_with_key("root", key);
    t2.known_hosts = kh_path.clone();
    let e = SshConnection::connect(&t2.ssh_options())
        .await
        .err()
        .expect("must refuse");
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            TransportError::HostKey(HostKeyError::Changed { line: 1, .. })
        ),
        "{msg}"
    );
    assert!(msg.contains(&format!("{}:1", kh_path.display())), "{msg}");
    assert!(msg.contains("ssh-keygen -R"), "{msg}");
    assert!(!e.is_transient());
    // Not silently accepted: file unchanged.
    assert_eq!(std::fs::read_to_string(&kh_path).unwrap(), kh);

    // StrictHostKeyChecking yes refuses unknown hosts.
    let mut o = t2.ssh_options();
    o.known_hosts.user_files = vec![sshd2.path().join("empty_known_hosts")];
    o.known_hosts.policy = k0sctl::transport::ssh::StrictHostKeyChecking::Yes;
    let e = SshConnection::connect(&o)
        .await
        .err()
        .expect("unknown refused");
    assert!(
        matches!(e, TransportError::HostKey(HostKeyError::Unknown { .. })),
        "{e}"
    );
}

#[tokio::test]
async fn hashed_and_wildcard_entries_and_revoked() {
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let hp = sshd.host_pub();
    // Hashed entry (ssh-keygen -H).
    std::fs::write(&t.known_hosts, format!("[127.0.0.1]:{} {hp}\n", sshd.port)).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&t.known_hosts)
        .output()
        .unwrap();
    assert!(st.status.success());
    let hashed = std::fs::read_to_string(&t.known_hosts).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    remote(&t.ssh_options()).await.expect("hashed entry");
    assert_eq!(
        std::fs::read_to_string(&t.known_hosts).unwrap(),
        hashed,
        "no new entry"
    );

    // Wildcard with negation.
    std::fs::write(
        &t.known_hosts,
        format!("[127.0.0.*]:{},!10.0.0.1 {hp}\n", sshd.port),
    )
    .unwrap();
    remote(&t.ssh_options()).await.expect("wildcard entry");

    // @revoked wins over a matching entry.
    std::fs::write(
        &t.known_hosts,
        format!("[127.0.0.1]:{p} {hp}\n@revoked * {hp}\n", p = sshd.port),
    )
    .unwrap();
    let e = SshConnection::connect(&t.ssh_options())
        .await
        .err()
        .expect("revoked");
    assert!(
        matches!(
            e,
            TransportError::HostKey(HostKeyError::Revoked { line: 2, .. })
        ),
        "{e}"
    );
}

#[tokio::test]
async fn cert_authority_host_certificates() {
    let d = tempfile::tempdir().unwrap();
    let host_ca = keygen(d.path(), "host_ca", "ed25519", "");
    let other_ca = keygen(d.path(), "other_ca", "ed25519", "");
    let sshd = Sshd::start_with(SshdSetup {
        host_ca: Some((host_ca.clone(), "127.0.0.1".into())),
        ..Default::default()
    });
    let t = sshd.target("root");
    let ca_pub = common::sshd::pubkey(&host_ca);
    std::fs::write(
        &t.known_hosts,
        format!("@cert-authority [127.0.0.*]:* {ca_pub}\n"),
    )
    .unwrap();
    let mut o = t.ssh_options();
    o.known_hosts.policy = k0sctl::transport::ssh::StrictHostKeyChecking::Yes;
    let r = remote(&o)
        .await
        .expect("host cert trusted via @cert-authority");
    assert_eq!(r.run_str("echo ca").await.unwrap(), "ca");
    assert_eq!(
        std::fs::read_to_string(&t.known_hosts)
            .unwrap()
            .lines()
            .count(),
        1,
        "nothing recorded"
    );

    // A different CA: refused with a reason, never accepted.
    let other_pub = common::sshd::pubkey(&other_ca);
    std::fs::write(&t.known_hosts, format!("@cert-authority * {other_pub}\n")).unwrap();
    let e = SshConnection::connect(&t.ssh_options())
        .await
        .err()
        .expect("wrong CA");
    assert!(
        matches!(
            e,
            TransportError::HostKey(HostKeyError::BadCertificate { .. })
        ),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_host_fails_fast_others_proceed() {
    let sshd = Sshd::start();
    let good = sshd.target("root").ssh_options();
    // A loopback port with nothing listening.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut bad = good.clone();
    bad.port = dead_port;
    bad.retries = 1;
    let pool = Arc::new(Pool::new(Limits::default()));
    let (p1, p2) = (pool.clone(), pool.clone());
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        async move { p1.connect(&ConnectSpec::Ssh(bad)).await },
        async move { p2.connect(&ConnectSpec::Ssh(good)).await },
    );
    let e = a.err().expect("unreachable must fail");
    let msg = e.to_string();
    assert!(matches!(e, TransportError::Connect { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{dead_port}")), "{msg}");
    let r = b.expect("the good host connects");
    assert_eq!(r.run_str("echo fine").await.unwrap(), "fine");
    eprintln!("unreachable host failed after {:?}", started.elapsed());
}

#[tokio::test]
async fn pool_reuses_one_connection_per_host() {
    let sshd = Sshd::start();
    let o = sshd.target("root").ssh_options();
    let pool = Pool::new(Limits::new(2, 1));
    let a = pool.connect(&ConnectSpec::Ssh(o.clone())).await.unwrap();
    let b = pool.connect(&ConnectSpec::Ssh(o)).await.unwrap();
    assert!(Arc::ptr_eq(a.connection(), b.connection()));
    // Parallel commands on the shared connection.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let r = a.clone();
        set.spawn(async move { r.run_str(format!("echo {i}")).await.unwrap() });
    }
    let mut got: Vec<String> = set.join_all().await;
    got.sort();
    assert_eq!(got, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
    pool.close_all().await;
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "{}",
        sshd.log()
    );
}

#[tokio::test]
async fn reconnect_replaces_the_connection() {
    let sshd = Sshd::start();
    let spec = ConnectSpec::Ssh(sshd.target("root").ssh_options());
    let pool = Pool::new(Limits::default());
    let a = pool.connect(&spec).await.unwrap();
    let b = pool.reconnect(&spec).await.unwrap();
    assert!(!Arc::ptr_eq(a.connection(), b.connection()));
    assert_eq!(b.run_str("echo again").await.unwrap(), "again");
    // The old one was closed: using it fails with a connection error, not a hang.
    let e = tokio::time::timeout(Duration::from_secs(60), a.run("true"))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(e, TransportError::Disconnected { .. }), "{e}");
    // A dead cached connection is replaced transparently.
    let c = pool.connect(&spec).await.unwrap();
    assert!(Arc::ptr_eq(b.connection(), c.connection()));
}

#[tokio::test]
async fn global_known_hosts_file_is_read_not_written() {
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let global = sshd.path().join("ssh_known_hosts");
    std::fs::write(
        &global,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_pub()),
    )
    .unwrap();
    let mut o = t.ssh_options();
    o.known_hosts.global_files = vec![global.clone()];
    o.known_hosts.policy = k0sctl::transport::ssh::StrictHostKeyChecking::Yes;
    remote(&o).await.expect("trusted through the global file");
    assert!(!t.known_hosts.exists(), "nothing recorded in the user file");
}

#[tokio::test]
async fn more_parallel_commands_than_max_sessions() {
    let sshd = Sshd::start_with(SshdSetup {
        extra: vec!["MaxSessions 10".into()],
        ..Default::default()
    });
    let r = remote(&sshd.target("root").ssh_options()).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let r = r.clone();
        set.spawn(async move { r.run_str(format!("sleep 0.2; echo {i}")).await });
    }
    let mut got: Vec<String> = set
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("no session refused"))
        .collect();
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, (0..30).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// A server that allows fewer sessions than the tool opens at once (`MaxSessions 2`): a
/// refused session is asked for again (0.1 s doubling, 5 times) and gets in when another ends;
/// one still refused after that fails, saying which sshd setting to look at.
#[tokio::test]
async fn a_refused_session_is_asked_for_again() {
    let sshd = Sshd::start_with(SshdSetup {
        extra: vec!["MaxSessions 2".into()],
        ..Default::default()
    });
    let r = remote(&sshd.target("root").ssh_options()).await.unwrap();
    let run_all = |cmd: &'static str| {
        let r = r.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..3 {
                let r = r.clone();
                set.spawn(async move { r.run_str(format!("{cmd}; echo {i}")).await });
            }
            set.join_all().await
        }
    };
    // The third session is refused while two run, and gets in once they end.
    let got = run_all("sleep 0.3").await;
    assert!(got.iter().all(|r| r.is_ok()), "{got:?}");
    // Sessions held longer than the retries last: the refused one fails and says why.
    let got = run_all("sleep 6").await;
    let failed: Vec<String> = got
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert_eq!(failed.len(), 1, "{got:?}");
    assert!(
        failed[0].contains("the server refused a new session") && failed[0].contains("MaxSessions"),
        "{}",
        failed[0]
    );
}

#[tokio::test]
async fn encrypted_key_in_agent_without_pub_file_needs_no_passphrase() {
    let sshd = Sshd::start();
    let agent = Agent::start();
    let client = tempfile::tempdir().unwrap();
    let k = keygen(client.path(), "id_locked", "ed25519", "agent-has-it");
    sshd.authorize("root", &k);
    // ssh-add needs the passphrase: give it through SSH_ASKPASS.
    let askpass = client.path().join("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho agent-has-it\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let st = std::process::Command::new("ssh-add")
        .arg("-q")
        .arg(&k)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "none")
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(format!("{}.pub", k.display())).unwrap();
    let mut t = sshd.target_with_key("root", k);
    t.known_hosts = client.path().join("known_hosts");
    let mut o = t.ssh_options();
    o.use_agent = true;
    o.agent_socket = Some(agent.socket.clone());
    // No passphrase anywhere: the agent must sign for the configured (encrypted) key.
    let r = remote(&o).await.expect("agent signs for the encrypted key");
    assert_eq!(r.run_str("echo unlocked").await.unwrap(), "unlocked");
}

#[tokio::test]
async fn ipv6_loopback_and_bracketed_known_hosts() {
    let sshd = Sshd::start_with(SshdSetup {
        extra: vec!["ListenAddress ::1".into()],
        ..Default::default()
    });
    let mut t = sshd.target("root");
    t.address = "::1".into();
    let r = remote(&t.ssh_options()).await.expect("connect over ::1");
    assert_eq!(r.run_str("echo v6").await.unwrap(), "v6");
    let kh = std::fs::read_to_string(&t.known_hosts).unwrap();
    assert!(
        kh.starts_with(&format!("[::1]:{} ssh-ed25519 ", sshd.port)),
        "{kh}"
    );
    // And it is recognised on the next connection.
    remote(&t.ssh_options()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&t.known_hosts).unwrap(), kh);
}

#[tokio::test]
async fn connect_all_keeps_order_and_isolates_failures() {
    let a = Sshd::start();
    let b = Sshd::start();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut dead = a.target("root").ssh_options();
    dead.port = dead_port;
    dead.retries = 0;
    let pool = Arc::new(Pool::new(Limits::new(2, 1)));
    let res = pool
        .connect_all(vec![
            ConnectSpec::Ssh(a.target("root").ssh_options()),
            ConnectSpec::Ssh(dead),
            ConnectSpec::Ssh(b.target("root").ssh_options()),
        ])
        .await;
    assert_eq!(res.len(), 3);
    assert!(res[1].is_err());
    for (i, r) in [(0, &res[0]), (2, &res[2])] {
        let r = r.as_ref().unwrap_or_else(|e| panic!("host {i}: {e}"));
        assert_eq!(r.run_str("echo up").await.unwrap(), "up");
    }
}
