//! Fault injection on testenv hosts, from the machine side: take a host's link down and up
//! (its veth on the environment's bridge), kill its sshd, list processes left on it. Used by
//! `tests/chaos_e2e.rs`; general enough for any test that needs a host to misbehave.

use std::time::Duration;

use super::poll::{poll, poll_until_or};

use testenv::{Env, Host};

/// The machine-side end of `host`'s veth (testenv names it `<prefix>v<index>`).
pub fn veth(env: &Env, host: &Host) -> String {
    let i = env
        .hosts
        .iter()
        .position(|h| h.name == host.name)
        .expect("a host of this environment");
    format!("{}v{i}", env.prefix)
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?} failed");
}

/// Cuts `host` off the network (no packet in or out; TCP connections stay open but silent).
pub fn link_down(env: &Env, host: &Host) {
    ip(&["link", "set", &veth(env, host), "down"]);
}

/// Puts `host`'s link up without waiting for anything (for flapping).
pub fn ip_link_up(env: &Env, host: &Host) {
    ip(&["link", "set", &veth(env, host), "up"]);
}

/// Puts `host` back on the network and waits (bounded) until its sshd answers again (the
/// bridge port and the neighbour entries take a moment to recover).
pub fn link_up(env: &Env, host: &Host) {
    ip(&["link", "set", &veth(env, host), "up"]);
    let addr = std::net::SocketAddr::from((host.ip, host.ssh_port));
    poll(
        &format!("{}'s sshd to answer after its link came back", host.name),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
    );
}

/// Kills every sshd process on `host` (listener and sessions) with SIGKILL; the host's
/// systemd restarts the listener (Debian's ssh.service has `Restart=on-failure`).
pub fn kill_sshd(env: &Env, host: &Host) {
    env.exec(host, "pkill -KILL -x sshd; true").unwrap();
}

/// Starts sshd again if the host's service manager did not.
pub fn ensure_sshd(env: &Env, host: &Host) {
    poll(
        &format!("sshd to come back on {}", host.name),
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            env.exec(host, "systemctl is-active ssh >/dev/null 2>&1 || systemctl start ssh; systemctl is-active ssh || true")
                .unwrap_or_default()
                .trim()
                == "active"
        },
    );
}

/// Processes on `host` that belong to a k0sctl run (its scripts, downloads, `k0s install`),
/// polled for up to `within` until none is left; returns what is still there.
pub fn leftover_processes(env: &Env, host: &Host, within: Duration) -> String {
    let mut last = String::new();
    let gone = poll_until_or(
        &format!("the processes of a k0sctl run on {} to end", host.name),
        within,
        Duration::from_millis(300),
        || {
            last = env
                .exec(
                    host,
                    "ps -eo pid,args | grep -E 'k0s install|k0s.tmp|curl |wget |k0sctl-install-incomplete|sleep 0.2' | grep -v grep || true",
                )
                .unwrap_or_default()
                .trim()
                .to_string();
            last.is_empty().then_some(())
        },
    );
    match gone {
        Ok(()) => String::new(),
        Err(_) => last,
    }
}

/// A manifest with only the hosts `idx` of the environment's manifest (same options).
pub fn manifest_with(env: &Env, idx: &[usize]) -> String {
    let y = env.manifest_yaml();
    let (head, rest) = y.split_at(y.find("  - role: ").unwrap());
    let k0s_at = rest.find("\n  k0s:\n").unwrap() + 1;
    let (hosts, tail) = rest.split_at(k0s_at);
    let blocks: Vec<&str> = hosts
        .split_inclusive('\n')
        .fold(Vec::<String>::new(), |mut acc, line| {
            if line.starts_with("  - role: ") || acc.is_empty() {
                acc.push(String::new());
            }
            acc.last_mut().unwrap().push_str(line);
            acc
        })
        .leak()
        .iter()
        .map(String::as_str)
        .collect();
    let mut out = head.to_string();
    for &i in idx {
        out.push_str(blocks[i]);
    }
    out.push_str(tail);
    out
}

/// Staging files of the k0s binary on `host` (`/usr/local/bin/k0s.tmp.*`), one per line.
pub fn staging_files(env: &Env, host: &Host) -> String {
    env.exec(host, "ls /usr/local/bin/k0s.tmp.* 2>/dev/null || true")
        .unwrap_or_default()
        .trim()
        .to_string()
}
