//! Host-to-host fan-out end to end on testenv (real SSH between the hosts): the k0s binary
//! (`uploadBinary`) and a big `files:` entry reach every host, the operator sends each to one
//! host and the hosts pass it on; a host without an ssh client only receives (or, when another
//! such host already is the chain's last link, gets a direct upload); a relay that damages the
//! bytes is caught by the SHA-256 check and the damaged host gets a direct upload; nothing of
//! the transfer (keys, authorized_keys lines, temp files) is left on any host.

mod common;

use common::cli::*;

use k0sctl::config::{self, UploadFile};
use testenv::{Env, Options};

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn events(stdout: &str, kind: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

fn run_log(cache: &std::path::Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(cache.join("k0sctl/logs")).unwrap() {
        all.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
    }
    all
}

#[test]
fn relays_binary_and_files_with_fallbacks() {
    let dir = tempfile::Builder::new()
        .prefix("k0sctl-relay-")
        .tempdir()
        .unwrap();
    let mut o = Options::new(dir.path().join("env"), 5);
    o.controllers = 1;
    let env = Env::up(o).expect("testenv up");
    let cache = dir.path().join("cache");
    let h = &env.hosts;

    // worker2 and worker3 have no ssh client: worker2 becomes the last link of the chain
    // (it only receives), worker3 cannot take part at all.
    for w in [&h[3], &h[4]] {
        env.exec(w, "mv /usr/bin/ssh /usr/bin/ssh.off").unwrap();
    }
    // worker1, the chain's last sender, damages what it passes on (NUL bytes become 0x01)
    // but keeps its own copy intact: only worker2's copy is bad.
    env.exec(
        &h[2],
        "mv /usr/bin/tee /usr/bin/tee.real && printf '#!/bin/sh\\n/usr/bin/tee.real \"$@\" | tr \"\\\\000\" \"\\\\001\"\\n' > /usr/bin/tee && chmod 755 /usr/bin/tee",
    )
    .unwrap();
    assert!(
        env.exec(&h[2], "printf 'a\\0b' | tee /tmp/x | od -An -c")
            .unwrap()
            .contains("001"),
        "the damaging tee is in place"
    );

    // A 3 MiB file with plenty of NUL bytes.
    let mut payload = Vec::with_capacity(3 << 20);
    let mut x: u32 = 12345;
    while payload.len() < 3 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        payload.push(if x.is_multiple_of(7) {
            0
        } else {
            (x >> 16) as u8
        });
    }
    let src = dir.path().join("bundle.tar");
    std::fs::write(&src, &payload).unwrap();
    let want = sha256(&payload);

    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let mut loaded = config::load_str(&base, "k0sctl.yaml", &|_| None).unwrap();
    for host in &mut loaded.cluster.spec.hosts {
        host.upload_binary = true;
        host.files = vec![UploadFile {
            src: src.display().to_string(),
            dst_dir: "/opt/images".into(),
            ..Default::default()
        }];
    }
    let manifest = dir.path().join("k0sctl.yaml");
    std::fs::write(&manifest, config::to_yaml(&loaded.cluster)).unwrap();
    let m = manifest.to_str().unwrap();

    // The dry run shows who sends to whom and changes nothing.
    let out = k0sctl(&cache, &["apply", "-c", m, "--dry-run", "--output", "json"]);
    assert!(out.status.success(), "dry run:\n{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let planned = events(&stdout, "relay");
    assert!(
        planned
            .iter()
            .any(|e| e["from"] == h[0].ip_name() && e["to"] == h[1].ip_name()),
        "dry run relay plan: {planned:?}"
    );
    assert!(
        stdout.contains("relayed from"),
        "dry run text names the sender:\n{stdout}"
    );
    assert_eq!(
        env.exec(&h[1], "ls /opt/images 2>&1 || true")
            .unwrap()
            .trim(),
        "ls: cannot access '/opt/images': No such file or directory"
    );

    let out = k0sctl(&cache, &["apply", "-c", m, "--output", "json"]);
    let stdout = text(&out.stdout);
    let log = run_log(&cache);
    assert!(
        out.status.success(),
        "apply failed:\n{}\n{log}",
        text(&out.stderr)
    );

    // Everything arrived intact.
    let bin_sum = testenv::stamp::sha256_file(&env.k0s_binaries[0]).unwrap();
    for host in h {
        assert_eq!(
            env.exec(host, "sha256sum /opt/images/bundle.tar | cut -c1-64")
                .unwrap()
                .trim(),
            want,
            "{}",
            host.name
        );
        assert_eq!(
            env.exec(host, "sha256sum /usr/local/bin/k0s | cut -c1-64")
                .unwrap()
                .trim(),
            bin_sum,
            "{}",
            host.name
        );
        // Nothing of the transfers is left.
        assert_eq!(
            env.exec(
                host,
                "ls -a /root | grep k0sctl-relay; grep -c k0sctl-relay /root/.ssh/authorized_keys; ls /opt/images /usr/local/bin | grep -c tmp; true"
            )
            .unwrap()
            .trim(),
            "0\n0",
            "{}",
            host.name
        );
    }
    // The chain: operator → controller0 → worker0 → worker1 → worker2; worker3 direct.
    let relays = events(&stdout, "relay");
    let edge = |from: &str, to: &str| relays.iter().any(|e| e["from"] == from && e["to"] == to);
    assert!(edge("operator", &h[0].ip_name()), "{relays:?}");
    assert!(edge(&h[0].ip_name(), &h[1].ip_name()), "{relays:?}");
    assert!(edge(&h[1].ip_name(), &h[2].ip_name()), "{relays:?}");
    assert!(edge(&h[2].ip_name(), &h[3].ip_name()), "{relays:?}");
    // Said once per file in the log: the host without ssh, the damaged copy.
    let no_ssh = format!("{}: it has no ssh client", h[4].ip_name());
    assert_eq!(log.matches(&no_ssh).count(), 2, "{log}");
    let damaged = format!(
        "{}: the relayed copy failed the SHA-256 check",
        h[3].ip_name()
    );
    assert_eq!(log.matches(&damaged).count(), 2, "{log}");
    // The hosts that got relayed copies were not uploaded to directly.
    for host in &h[..3] {
        assert!(
            !log.contains(&format!("{}: the relayed", host.ip_name())),
            "{log}"
        );
    }

    // A re-apply sends nothing.
    let out = k0sctl(&cache, &["apply", "-c", m, "--output", "json"]);
    assert!(out.status.success(), "re-apply:\n{}", text(&out.stderr));
    assert!(events(&text(&out.stdout), "relay").is_empty());
}

trait IpName {
    fn ip_name(&self) -> String;
}

impl IpName for testenv::Host {
    /// How k0sctl names the host in logs and events (`address:port`).
    fn ip_name(&self) -> String {
        format!("{}:{}", self.ip, self.ssh_port)
    }
}
