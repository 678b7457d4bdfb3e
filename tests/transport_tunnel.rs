//! `Remote::open_tunnel`: TCP streams made by the host, carried over the host's connection
//! (native SSH direct-tcpip, OpenSSH `ssh -W` through the ControlMaster, localhost TCP),
//! against a real sshd and an echo server on loopback.

mod common;

use common::sshd::Sshd;
use k0sctl::transport::openssh::OpenSshOptions;
use k0sctl::transport::{ConnectSpec, Limits, Pool, Remote, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An echo server on 127.0.0.1 that greets with "hi\n" first; returns its port and a counter
/// of accepted connections.
async fn echo_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                s.write_all(b"hi\n").await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, n)
}

/// Greeting, a 1 MiB round trip, and three tunnels at once.
async fn exercise(r: &Remote, port: u16) {
    let mut t = r.open_tunnel("127.0.0.1", port).await.expect("tunnel");
    let mut hi = [0u8; 3];
    t.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi\n");
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(t);
    let d2 = data.clone();
    let w = tokio::spawn(async move {
        wr.write_all(&d2).await.unwrap();
        wr.flush().await.unwrap();
        wr
    });
    let mut back = vec![0u8; data.len()];
    rd.read_exact(&mut back).await.unwrap();
    assert!(back == data, "echoed bytes differ");
    drop(w.await.unwrap());

    let mut all = Vec::new();
    for i in 0..3u8 {
        let mut t = r.open_tunnel("127.0.0.1", port).await.expect("tunnel");
        t.write_all(&[b'a' + i]).await.unwrap();
        all.push(t);
    }
    for (i, t) in all.iter_mut().enumerate() {
        let mut b = [0u8; 4];
        t.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, &[b'h', b'i', b'\n', b'a' + i as u8]);
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn native_ssh_tunnel() {
    let sshd = Sshd::start();
    let (port, accepted) = echo_server().await;
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::Ssh(sshd.target("root").ssh_options()))
        .await
        .expect("connect");
    exercise(&r, port).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    // The host cannot connect: an error naming the host and the target.
    let e = match r.open_tunnel("127.0.0.1", closed_port()).await {
        Err(e) => e,
        Ok(_) => panic!("tunnel to a closed port opened"),
    };
    assert!(matches!(e, TransportError::Io { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("127.0.0.1:") && m.contains("open a tunnel"),
        "{m}"
    );
    // The connection is still good for commands and tunnels.
    assert_eq!(r.run_str("echo ok").await.unwrap(), "ok");
    exercise(&r, port).await;
    pool.close_all().await;
    // Everything went over one authenticated connection.
    assert_eq!(sshd.log().matches("Accepted publickey").count(), 1);
}

#[tokio::test]
async fn openssh_tunnel_through_controlmaster() {
    let sshd = Sshd::start();
    let t = sshd.target("root");
    let (port, _) = echo_server().await;
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
    let r = pool.connect(&ConnectSpec::OpenSsh(o)).await.unwrap();
    exercise(&r, port).await;
    // A refused target: the stream ends at once.
    let mut t = r.open_tunnel("127.0.0.1", closed_port()).await.unwrap();
    let mut b = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), t.read_to_end(&mut b))
        .await
        .expect("refused tunnel ends")
        .unwrap_or(0);
    assert_eq!(n, 0);
    pool.close_all().await;
    assert_eq!(sshd.log().matches("Accepted publickey").count(), 1);
}

#[tokio::test]
async fn localhost_tunnel() {
    let (port, _) = echo_server().await;
    let pool = Pool::new(Limits::default());
    let r = pool.connect(&ConnectSpec::Localhost).await.unwrap();
    exercise(&r, port).await;
    assert!(r.open_tunnel("127.0.0.1", closed_port()).await.is_err());
}
