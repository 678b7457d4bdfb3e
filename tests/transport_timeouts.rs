//! Timeouts: a host that accepts TCP but never speaks SSH; a command killed on timeout.

mod common;

use std::time::Duration;

use common::sshd::Sshd;
use k0sctl::transport::ssh::SshConnection;
use k0sctl::transport::{Cmd, ConnectSpec, Limits, Pool, TransportError};

/// Waits (bounded) until no `sleep <marker>` runs where `r` runs commands.
async fn gone(r: &k0sctl::transport::Remote, marker: &str, who: &str) {
    let what = format!("{who} `sleep {marker}` to go away after the timeout");
    common::poll::poll_until_async(
        &what,
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let out = r
                .exec(format!("pgrep -f '^sleep {marker}$'"))
                .await
                .unwrap();
            (!out.success()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn silent_host_hits_connect_timeout() {
    // Accepts connections and never answers (a black-holed sshd); counts the attempts.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    let hold = tokio::spawn(async move {
        let mut keep = vec![];
        while let Ok((s, _)) = l.accept().await {
            acc.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            keep.push(s);
        }
    });
    let sshd = Sshd::start();
    let mut o = sshd.target("root").ssh_options();
    o.port = port;
    o.connect_timeout = Duration::from_millis(300);
    o.retries = 5;
    let e = SshConnection::connect(&o)
        .await
        .err()
        .expect("must time out");
    assert!(matches!(e, TransportError::ConnectTimeout { .. }), "{e}");
    assert!(e.is_transient());
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    // Retried once, not five times: unreachable hosts fail fast.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    hold.abort();
}

#[tokio::test]
async fn timed_out_command_is_killed() {
    let sshd = Sshd::start();
    let r = Pool::new(Limits::default())
        .connect(&ConnectSpec::Ssh(sshd.target("root").ssh_options()))
        .await
        .unwrap();
    let marker = format!("{}", 1000 + rand::random::<u16>() as u32);
    let e = r
        .run(Cmd::new(format!("sleep {marker}")).timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
    // The process must not linger.
    gone(&r, &marker, "remote").await;
}

#[tokio::test]
async fn timed_out_sudo_command_is_killed() {
    let sshd = Sshd::start();
    let user = common::sshd::TestUser::create(Some(true));
    let mut r = Pool::new(Limits::default())
        .connect(&ConnectSpec::Ssh(sshd.target(&user.name).ssh_options()))
        .await
        .unwrap();
    r.detect_privilege(None).await.unwrap();
    let marker = format!("{}", 1000 + rand::random::<u16>() as u32);
    let e = r
        .run(
            Cmd::new(format!("sleep {marker}"))
                .sudo()
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
    // The process must not linger.
    gone(&r, &marker, "root").await;
}

#[tokio::test]
async fn local_timeout_kills_the_tree() {
    let r = Pool::new(Limits::default())
        .connect(&ConnectSpec::Localhost)
        .await
        .unwrap();
    let marker = format!("{}", 1000 + rand::random::<u16>() as u32);
    let e = r
        .run(Cmd::new(format!("sleep {marker}; true")).timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
    // The process must not linger.
    gone(&r, &marker, "local").await;
}
