//! Measurements (ignored by default; no timing assertions). Run with
//! `cargo test --release --test transport_bench -- --ignored --nocapture --test-threads 1`.

mod common;

use std::time::{Duration, Instant};

use common::sshd::Sshd;
use k0sctl::transport::{ConnectSpec, Connection, Limits, Pool, UploadOptions};
use tokio::io::AsyncWriteExt;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
#[ignore]
async fn bench_round_trip_on_open_connection() {
    let sshd = Sshd::start();
    let user = common::sshd::TestUser::create(None);
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::Ssh(sshd.target(&user.name).ssh_options()))
        .await
        .unwrap();
    r.run("true").await.unwrap();
    let mut v = vec![];
    for _ in 0..50 {
        let t = Instant::now();
        r.run("true").await.unwrap();
        v.push(t.elapsed());
    }
    println!(
        "native ssh: round trip of `true` on an open connection: median {:?}, min {:?}, max {:?} (50 runs)",
        median(v.clone()),
        v.iter().min().unwrap(),
        v.iter().max().unwrap()
    );
    // Parallel sessions on one connection.
    for n in [1usize, 8] {
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let r = r.clone();
            set.spawn(async move { r.run("true").await.unwrap() });
        }
        set.join_all().await;
        println!(
            "native ssh: {n} parallel `true` on one connection: {:?}",
            t.elapsed()
        );
    }
    // Connect + auth + first command, cold.
    let mut v = vec![];
    for _ in 0..10 {
        let pool = Pool::new(Limits::default());
        let t = Instant::now();
        let r = pool
            .connect(&ConnectSpec::Ssh(sshd.target(&user.name).ssh_options()))
            .await
            .unwrap();
        r.run("true").await.unwrap();
        v.push(t.elapsed());
        pool.close_all().await;
    }
    println!(
        "native ssh: cold connect+auth+`true`: median {:?} (10 runs)",
        median(v)
    );
}

#[tokio::test]
#[ignore]
async fn bench_upload_exec_vs_sftp_vs_scp() {
    const SIZE: usize = 200 * 1024 * 1024;
    let sshd = Sshd::start();
    // A /bin/sh user: root's bashrc on this machine costs ~100 ms per command.
    let user = common::sshd::TestUser::create(None);
    let t = sshd.target(&user.name);
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::Ssh(t.ssh_options()))
        .await
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let src = dir.path().join("src.bin");
    {
        let mut data = vec![0u8; SIZE];
        rand::fill(&mut data[..]);
        std::fs::write(&src, &data).unwrap();
    }
    let mib = SIZE as f64 / 1048576.0;
    // exec stream + remote sha256sum + chmod/mv (the real upload path).
    let mut v = vec![];
    for i in 0..3 {
        let dst = dir.path().join(format!("exec{i}")).display().to_string();
        let t0 = Instant::now();
        r.upload_file(&src, &dst, &UploadOptions::default())
            .await
            .unwrap();
        v.push(t0.elapsed());
        std::fs::remove_file(&dst).unwrap();
    }
    let d = median(v);
    println!(
        "upload (exec cat>tmp, verified sha256, mv): {:.0} MiB/s (median of 3, {:?})",
        mib / d.as_secs_f64(),
        d
    );
    // exec stream without verification, for the cost of verification.
    let mut v = vec![];
    for i in 0..3 {
        let dst = dir.path().join(format!("raw{i}")).display().to_string();
        let f = tokio::fs::File::open(&src).await.unwrap();
        let t0 = Instant::now();
        r.run(k0sctl::transport::Cmd::new(format!("cat > {dst}")).stdin_reader(f))
            .await
            .unwrap();
        v.push(t0.elapsed());
        std::fs::remove_file(&dst).unwrap();
    }
    let d = median(v);
    println!(
        "exec `cat >` stream only: {:.0} MiB/s",
        mib / d.as_secs_f64()
    );
    // SFTP (russh-sftp, 16 writes in flight) on the same connection.
    let Connection::Ssh(c) = &**r.connection() else {
        unreachable!()
    };
    let mut v = vec![];
    for i in 0..3 {
        let dst = dir.path().join(format!("sftp{i}")).display().to_string();
        let t0 = Instant::now();
        let ch = c.handle().channel_open_session().await.unwrap();
        ch.request_subsystem(true, "sftp").await.unwrap();
        let sftp = russh_sftp::client::SftpSession::new_with_config(
            ch.into_stream(),
            russh_sftp::client::Config {
                max_concurrent_writes: 16,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut f = sftp.create(&dst).await.unwrap();
        let mut src_f = tokio::fs::File::open(&src).await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            use tokio::io::AsyncReadExt;
            let n = src_f.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).await.unwrap();
        }
        f.shutdown().await.unwrap();
        v.push(t0.elapsed());
        std::fs::remove_file(&dst).unwrap();
    }
    let d = median(v);
    println!(
        "SFTP (russh-sftp, 16 in flight, unverified): {:.0} MiB/s",
        mib / d.as_secs_f64()
    );
    // OpenSSH scp for reference.
    let mut v = vec![];
    for i in 0..3 {
        let dst = dir.path().join(format!("scp{i}"));
        let t0 = Instant::now();
        let st = std::process::Command::new("scp")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", t.known_hosts.display()))
            .arg("-i")
            .arg(&t.key)
            .arg("-P")
            .arg(t.port.to_string())
            .arg(&src)
            .arg(format!("{}@127.0.0.1:{}", user.name, dst.display()))
            .status()
            .unwrap();
        assert!(st.success());
        v.push(t0.elapsed());
        std::fs::remove_file(&dst).unwrap();
    }
    let d = median(v);
    println!(
        "OpenSSH scp (whole process incl. connect): {:.0} MiB/s",
        mib / d.as_secs_f64()
    );
}

#[tokio::test]
#[ignore]
async fn bench_exec_stream_variants() {
    const SIZE: usize = 200 * 1024 * 1024;
    let sshd = Sshd::start();
    let user = common::sshd::TestUser::create(None);
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::Ssh(sshd.target(&user.name).ssh_options()))
        .await
        .unwrap();
    let mut data = vec![0u8; SIZE];
    rand::fill(&mut data[..]);
    let mib = SIZE as f64 / 1048576.0;
    let Connection::Ssh(c) = &**r.connection() else {
        unreachable!()
    };
    for chunk in [32 * 1024, 256 * 1024, 2 * 1024 * 1024] {
        // Raw russh: unsplit channel, make_writer, write_all(chunk).
        let t0 = Instant::now();
        let mut ch = c.handle().channel_open_session().await.unwrap();
        ch.exec(true, "cat > /dev/null").await.unwrap();
        {
            let mut w = ch.make_writer();
            for part in data.chunks(chunk) {
                w.write_all(part).await.unwrap();
            }
            w.flush().await.unwrap();
        }
        ch.eof().await.unwrap();
        while ch.wait().await.is_some() {}
        println!(
            "raw make_writer, {} KiB writes -> /dev/null: {:.0} MiB/s",
            chunk / 1024,
            mib / t0.elapsed().as_secs_f64()
        );
    }
    let t0 = Instant::now();
    r.run(k0sctl::transport::Cmd::new("cat > /dev/null").stdin(data.clone()))
        .await
        .unwrap();
    println!(
        "Remote::run stdin bytes -> /dev/null: {:.0} MiB/s",
        mib / t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    r.upload(
        std::io::Cursor::new(data.clone()),
        "/tmp/k0sctl-bench-up",
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    println!(
        "Remote::upload (verified) from memory as non-root user: {:.0} MiB/s",
        mib / t0.elapsed().as_secs_f64()
    );
    std::fs::remove_file("/tmp/k0sctl-bench-up").unwrap();
    // Round trip as a user whose shell is /bin/sh without rc files.
    r.run("true").await.unwrap();
    let mut v = vec![];
    for _ in 0..50 {
        let t = Instant::now();
        r.run("true").await.unwrap();
        v.push(t.elapsed());
    }
    println!(
        "round trip `true` (user with /bin/sh): median {:?}",
        median(v)
    );
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore]
async fn bench_cold_fanout_and_memory() {
    let sshd = Sshd::start();
    let user = common::sshd::TestUser::create(None);
    let t = sshd.target(&user.name);
    // Warm the known_hosts file so every run is "known host".
    let pool = Pool::new(Limits::new(0, 0));
    pool.connect(&ConnectSpec::Ssh(t.ssh_options()))
        .await
        .unwrap();
    pool.close_all().await;
    // One connection per simulated host (direct SshConnection::connect, no pool dedup).
    let specs = |n: usize| -> Vec<ConnectSpec> {
        (0..n)
            .map(|_| {
                let mut o = t.ssh_options();
                o.retries = 3;
                ConnectSpec::Ssh(o)
            })
            .collect()
    };
    for n in [50usize] {
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for s in specs(n) {
            set.spawn(async move {
                let c = k0sctl::transport::ssh::SshConnection::connect(match &s {
                    ConnectSpec::Ssh(o) => o,
                    _ => unreachable!(),
                })
                .await
                .unwrap();
                use k0sctl::transport::Transport;
                let out = c
                    .exec(k0sctl::transport::ExecRequest {
                        command: "true".into(),
                        display: "true".into(),
                        stdin_prefix: None,
                        stdin: Default::default(),
                        timeout: None,
                        on_output: None,
                        discard_stdout: false,
                    })
                    .await
                    .unwrap();
                assert!(out.success());
                c
            });
        }
        let conns = set.join_all().await;
        let native = t0.elapsed();
        for c in &conns {
            use k0sctl::transport::Transport;
            c.close().await;
        }
        drop(conns);
        // The same with 50 parallel OpenSSH client processes.
        let t0 = Instant::now();
        let mut kids = vec![];
        for _ in 0..n {
            kids.push(
                std::process::Command::new("ssh")
                    .args([
                        "-q",
                        "-T",
                        "-F",
                        "/dev/null",
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "IdentityAgent=none",
                    ])
                    .arg("-o")
                    .arg(format!("UserKnownHostsFile={}", t.known_hosts.display()))
                    .arg("-i")
                    .arg(&t.key)
                    .arg("-p")
                    .arg(t.port.to_string())
                    .arg(format!("{}@127.0.0.1", user.name))
                    .arg("true")
                    .spawn()
                    .unwrap(),
            );
        }
        for mut k in kids {
            assert!(k.wait().unwrap().success());
        }
        let openssh = t0.elapsed();
        println!(
            "{n} hosts cold (connect+auth+`true`, one sshd on loopback): native {:?}, {n} parallel OpenSSH `ssh` {:?}, ratio {:.2}",
            native,
            openssh,
            native.as_secs_f64() / openssh.as_secs_f64()
        );
    }
    // Memory with 100 connections open.
    let before = rss_kib("VmRSS:");
    let mut conns = vec![];
    let mut set = tokio::task::JoinSet::new();
    for s in specs(100) {
        set.spawn(async move {
            let ConnectSpec::Ssh(o) = &s else {
                unreachable!()
            };
            k0sctl::transport::ssh::SshConnection::connect(o)
                .await
                .unwrap()
        });
    }
    conns.extend(set.join_all().await);
    let after = rss_kib("VmRSS:");
    println!(
        "100 native connections open: RSS {} KiB -> {} KiB (+{} KiB, {:.0} KiB per connection); peak VmHWM {} KiB",
        before,
        after,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / 100.0,
        rss_kib("VmHWM:")
    );
    for c in &conns {
        use k0sctl::transport::Transport;
        c.close().await;
    }
}

#[tokio::test]
#[ignore]
async fn bench_parallel_uploads_vs_scp() {
    const SIZE: usize = 64 * 1024 * 1024;
    const HOSTS: usize = 10;
    let sshd = Sshd::start();
    let user = common::sshd::TestUser::create(None);
    let t = sshd.target(&user.name);
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let src = dir.path().join("src.bin");
    {
        let mut data = vec![0u8; SIZE];
        rand::fill(&mut data[..]);
        std::fs::write(&src, &data).unwrap();
    }
    // 10 "hosts": 10 connections (same sshd), uploads limited to 10 at once.
    let mut remotes = vec![];
    for _ in 0..HOSTS {
        let pool = Pool::new(Limits::new(0, HOSTS));
        remotes.push(
            pool.connect(&ConnectSpec::Ssh(t.ssh_options()))
                .await
                .unwrap(),
        );
    }
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in remotes.into_iter().enumerate() {
        let (src, dst) = (src.clone(), dir.path().join(format!("n{i}")));
        set.spawn(async move {
            r.upload_file(&src, &dst.display().to_string(), &UploadOptions::default())
                .await
                .unwrap()
        });
    }
    set.join_all().await;
    let native = t0.elapsed();
    let t0 = Instant::now();
    let mut kids = vec![];
    for i in 0..HOSTS {
        kids.push(
            std::process::Command::new("scp")
                .args([
                    "-q",
                    "-F",
                    "/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "IdentityAgent=none",
                ])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", t.known_hosts.display()))
                .arg("-i")
                .arg(&t.key)
                .arg("-P")
                .arg(t.port.to_string())
                .arg(&src)
                .arg(format!(
                    "{}@127.0.0.1:{}/s{i}",
                    user.name,
                    dir.path().display()
                ))
                .spawn()
                .unwrap(),
        );
    }
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let scp = t0.elapsed();
    let mib = (SIZE * HOSTS) as f64 / 1048576.0;
    println!(
        "{HOSTS} parallel uploads of {} MiB (one sshd, 2 shared cores): verified native {:.0} MiB/s aggregate ({:?}), parallel scp {:.0} MiB/s ({:?}), ratio {:.2}",
        SIZE >> 20,
        mib / native.as_secs_f64(),
        native,
        mib / scp.as_secs_f64(),
        scp,
        scp.as_secs_f64() / native.as_secs_f64()
    );
}
