//! Bastions: `ssh.bastion` (explicit) and ProxyJump from an ssh config; all hosts behind one
//! bastion share one bastion connection (direct-tcpip channels).

mod common;

use common::sshd::{Sshd, SshdSetup, keygen};
use k0sctl::transport::ssh::{SshConfig, SshOptions};
use k0sctl::transport::{ConnectSpec, Limits, Pool, TransportError};

#[tokio::test]
async fn hosts_behind_one_bastion_share_its_connection() {
    let bastion = Sshd::start_with(SshdSetup {
        log_level: "DEBUG1".into(),
        ..Default::default()
    });
    let t1 = Sshd::start();
    let t2 = Sshd::start();
    let client = tempfile::tempdir().unwrap();
    let key = keygen(client.path(), "id", "ed25519", "");
    for s in [&bastion, &t1, &t2] {
        s.authorize("root", &key);
    }
    let kh = client.path().join("known_hosts");
    let mk = |s: &Sshd| {
        let mut t = s.target_with_key("root", key.clone());
        t.known_hosts = kh.clone();
        t.ssh_options()
    };
    let b = mk(&bastion);
    let pool = Pool::new(Limits::default());
    let mut remotes = vec![];
    for s in [&t1, &t2] {
        let o = mk(s).bastion(b.clone());
        remotes.push(
            pool.connect(&ConnectSpec::Ssh(o))
                .await
                .expect("via bastion"),
        );
    }
    for r in &remotes {
        assert_eq!(r.run_str("echo behind").await.unwrap(), "behind");
    }
    let blog = bastion.log();
    assert_eq!(blog.matches("Accepted publickey").count(), 1, "{blog}");
    assert!(blog.matches("direct-tcpip").count() >= 2, "{blog}");
    // Known hosts names the real targets, never 0.0.0.0.
    let khs = std::fs::read_to_string(&kh).unwrap();
    assert!(khs.contains(&format!("[127.0.0.1]:{}", t1.port)), "{khs}");
    assert!(khs.contains(&format!("[127.0.0.1]:{}", t2.port)), "{khs}");
    assert!(!khs.contains("0.0.0.0"));
    pool.close_all().await;
}

#[tokio::test]
async fn proxyjump_from_ssh_config() {
    let bastion = Sshd::start_with(SshdSetup {
        log_level: "DEBUG1".into(),
        ..Default::default()
    });
    let target = Sshd::start();
    let client = tempfile::tempdir().unwrap();
    let key = keygen(client.path(), "id", "ed25519", "");
    bastion.authorize("jumper", &key);
    bastion.authorize("root", &key);
    target.authorize("root", &key);
    let kh = client.path().join("known_hosts");
    let cfg = SshConfig::parse(&format!(
        "Host jump\n  HostName 127.0.0.1\n  Port {bp}\n  User root\n\
         Host node1\n  HostName 127.0.0.1\n  Port {tp}\n  ProxyJump jump\n\
         Host *\n  IdentityFile {k}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n  \
         GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking accept-new\n  ConnectTimeout 7\n",
        bp = bastion.port,
        tp = target.port,
        k = key.display(),
        kh = kh.display()
    ));
    let o = SshOptions::resolve("node1", None, None, None, &cfg).unwrap();
    assert_eq!(
        (o.address.as_str(), o.port, o.user.as_str()),
        ("127.0.0.1", target.port, "root")
    );
    assert_eq!(o.connect_timeout.as_secs(), 7);
    let b = o.bastion.as_ref().expect("ProxyJump became the bastion");
    assert_eq!(b.port, bastion.port);
    let mut o = o;
    o.use_agent = false;
    if let Some(b) = o.bastion.as_mut() {
        b.use_agent = false;
    }
    let r = Pool::new(Limits::default())
        .connect(&ConnectSpec::Ssh(o))
        .await
        .expect("connect through ProxyJump");
    assert_eq!(r.run_str("echo jumped").await.unwrap(), "jumped");
    assert!(bastion.log().contains("direct-tcpip"));
}

#[tokio::test]
async fn bastion_limits_parallel_handshakes() {
    // Targets behind the bastion that accept TCP but never speak SSH: every handshake holds a
    // bastion slot until its connect timeout. With 2 slots, 8 such hosts need at least 4
    // rounds of the timeout; without a limit they would all time out together after one.
    let bastion = Sshd::start();
    let client = tempfile::tempdir().unwrap();
    let key = keygen(client.path(), "id", "ed25519", "");
    bastion.authorize("root", &key);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut keep = vec![];
        while let Ok((s, _)) = silent.accept().await {
            keep.push(s);
        }
    });
    let mut b = bastion.target_with_key("root", key.clone());
    b.known_hosts = client.path().join("known_hosts");
    let mut b = b.ssh_options();
    b.bastion_handshakes = 2;
    let mut o = b.clone();
    o.port = port;
    o.retries = 0;
    o.connect_timeout = std::time::Duration::from_millis(300);
    let o = o.bastion(b);
    let pool = std::sync::Arc::new(k0sctl::transport::ssh::BastionPool::default());
    // Connect the bastion first so its own handshake is not timed.
    drop(pool.get(o.bastion.as_ref().unwrap()).await.unwrap());
    let started = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (o, pool) = (o.clone(), pool.clone());
        set.spawn(
            async move { k0sctl::transport::ssh::SshConnection::connect_via(&o, &pool).await },
        );
    }
    for r in set.join_all().await {
        let e = r.err().expect("silent target cannot connect");
        assert!(matches!(e, TransportError::ConnectTimeout { .. }), "{e}");
    }
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(4 * 300 - 50),
        "8 handshakes with 2 slots finished in {took:?}: the limit was not applied"
    );
    hold.abort();
}

#[tokio::test]
async fn two_hop_bastion_chain() {
    let outer = Sshd::start();
    let inner = Sshd::start();
    let target = Sshd::start();
    let client = tempfile::tempdir().unwrap();
    let key = keygen(client.path(), "id", "ed25519", "");
    for s in [&outer, &inner, &target] {
        s.authorize("root", &key);
    }
    let kh = client.path().join("known_hosts");
    let mk = |s: &Sshd| {
        let mut t = s.target_with_key("root", key.clone());
        t.known_hosts = kh.clone();
        t.ssh_options()
    };
    // target via inner via outer
    let o = mk(&target).bastion(mk(&inner).bastion(mk(&outer)));
    let pool = Pool::new(Limits::default());
    let r = pool.connect(&ConnectSpec::Ssh(o)).await.expect("two hops");
    assert_eq!(r.run_str("echo deep").await.unwrap(), "deep");
    for s in [&outer, &inner, &target] {
        assert_eq!(
            s.log().matches("Accepted publickey").count(),
            1,
            "{}",
            s.log()
        );
    }
    pool.close_all().await;
}
