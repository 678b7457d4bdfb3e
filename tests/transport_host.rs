//! The host OS layer against real hosts (the loopback sshd and localhost): one-script facts,
//! OS module selection, the `os` override.

mod common;

use common::sshd::Sshd;
use k0sctl::host::{Host, ProbeOptions};
use k0sctl::transport::{ConnectSpec, Limits, Pool};

#[tokio::test]
async fn probe_over_ssh_in_one_round_trip() {
    let sshd = Sshd::start();
    let pool = Pool::new(Limits::default());
    let r = pool
        .connect(&ConnectSpec::Ssh(sshd.target("root").ssh_options()))
        .await
        .unwrap();
    let before = sshd.log().matches("Starting session").count();
    let h = Host::probe(
        r,
        &ProbeOptions {
            connect_address: Some("127.0.0.1".into()),
            ..Default::default()
        },
    )
    .await
    .expect("probe");
    let sessions = sshd.log().matches("Starting session").count() - before;
    assert_eq!(
        sessions, 1,
        "facts and privilege detection must take one round trip"
    );
    assert!(matches!(
        h.remote.privilege(),
        k0sctl::transport::Privilege::Root
    ));
    let local_os = std::fs::read_to_string("/etc/os-release").unwrap();
    let os = k0sctl::host::OsRelease::parse(&local_os);
    assert_eq!(h.facts.os, os);
    assert_eq!(h.configurer.name, os.id);
    let uname_m = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .unwrap();
    assert_eq!(
        h.facts.machine,
        String::from_utf8_lossy(&uname_m.stdout).trim()
    );
    assert_eq!(h.facts.uid, 0);
    let hn = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(h.facts.hostname, hn.trim().to_lowercase());
    assert!(
        h.facts.clock_skew_secs.abs() < 60.0,
        "{}",
        h.facts.clock_skew_secs
    );
    assert_eq!(h.k0s_binary_path, "/usr/local/bin/k0s");
    eprintln!("facts: {:#?}", h.facts);
}

#[tokio::test]
async fn os_override_and_install_path() {
    let pool = Pool::new(Limits::default());
    let r = pool.connect(&ConnectSpec::Localhost).await.unwrap();
    let h = Host::probe(
        r,
        &ProbeOptions {
            os_override: Some("flatcar".into()),
            k0s_install_path: Some("/usr/local/bin/custom-k0s".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(h.configurer.name, "flatcar");
    assert_eq!(h.k0s_binary_path, "/usr/local/bin/custom-k0s");
    assert_eq!(h.k0s_cmd("version"), "/usr/local/bin/custom-k0s version");
    // Flatcar cannot install packages: a clear error, nothing run.
    let e = h.install_packages(&["curl"]).await.unwrap_err();
    assert!(e.to_string().contains("no package manager"), "{e}");
    let e = Host::probe(
        h.remote.clone(),
        &ProbeOptions {
            os_override: Some("plan9".into()),
            ..Default::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("unsupported OS"), "{e}");
}

#[tokio::test]
async fn probe_detects_sudo_for_a_user() {
    let sshd = Sshd::start();
    let user = common::sshd::TestUser::create(Some(true));
    let r = Pool::new(Limits::default())
        .connect(&ConnectSpec::Ssh(sshd.target(&user.name).ssh_options()))
        .await
        .unwrap();
    let h = Host::probe(r, &ProbeOptions::default()).await.unwrap();
    assert!(matches!(
        h.remote.privilege(),
        k0sctl::transport::Privilege::SudoNoPassword
    ));
    assert_ne!(h.facts.uid, 0);
    assert_eq!(
        h.remote
            .run_str(k0sctl::transport::Cmd::new("id -u").sudo())
            .await
            .unwrap(),
        "0"
    );
}
