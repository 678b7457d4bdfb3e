//! Bastions: `ssh.bastion` (explicit) and ProxyJump from an ssh config; all hosts behind one
//! bastion share one bastion connection (direct-tcpip channels).

mod common;

use common::sshd::{Sshd, SshdSetup, keygen};
use k0sctl::transport::ssh::{SshConfig, SshOptions};
use k0sctl::transport::{ConnectSpec, Limits, Pool};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bastion_limits_parallel_handshakes() {
    // Targets behind the bastion that accept TCP but never speak SSH: every handshake holds a
    // bastion slot until the target hangs up. With 2 slots, 8 such hosts reach the target in
    // rounds of 2: the test lets a round in, sees that no third connection came, hangs up on
    // the round, and the next round comes. Without the limit all 8 would arrive at once.
    // (How long the rounds take is a benchmark's business: tests/bench/bastion-scale.sh.)
    use std::sync::{Arc, Mutex};
    let bastion = Sshd::start();
    let client = tempfile::tempdir().unwrap();
    let key = keygen(client.path(), "id", "ed25519", "");
    bastion.authorize("root", &key);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hold = tokio::spawn({
        let (held, accepted) = (held.clone(), accepted.clone());
        async move {
            while let Ok((s, _)) = silent.accept().await {
                held.lock().unwrap().push(s);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let mut b = bastion.target_with_key("root", key.clone());
    b.known_hosts = client.path().join("known_hosts");
    let mut b = b.ssh_options();
    b.bastion_handshakes = 2;
    let mut o = b.clone();
    o.port = port;
    o.retries = 0;
    // A bound, not a speed claim: the test hangs up on every handshake long before.
    o.connect_timeout = std::time::Duration::from_secs(120);
    let o = o.bastion(b);
    let pool = std::sync::Arc::new(k0sctl::transport::ssh::BastionPool::default());
    // Connect the bastion first so that its own handshake is not one of the rounds.
    drop(pool.get(o.bastion.as_ref().unwrap()).await.unwrap());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (o, pool) = (o.clone(), pool.clone());
        set.spawn(
            async move { k0sctl::transport::ssh::SshConnection::connect_via(&o, &pool).await },
        );
    }
    for round in 1..=4 {
        let want = 2 * round;
        let what = format!("round {round}: {want} connections at the silent target");
        let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);
        common::poll::poll_until_async(
            &what,
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(20),
            || async { (count() >= want).then_some(()) },
        )
        .await;
        // Give a handshake that ignores the limit the chance to show up. The limit makes this
        // pass however long the pause; only its absence can fail it.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            count(),
            want,
            "more than 2 handshakes behind the bastion at once (round {round})"
        );
        // Hang up on this round: its handshakes fail and give their slots back.
        held.lock().unwrap().clear();
    }
    for r in set.join_all().await {
        assert!(r.is_err(), "a silent target cannot connect");
    }
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
