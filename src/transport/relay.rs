//! Host-to-host fan-out ("relay") of one big local file to several hosts: the operator sends
//! the bytes once, to the first host of a chain, and every host passes them on to the next one
//! over the cluster's own network while it stores its own copy (streaming, `tee` into `ssh`).
//!
//! Protocol (all hosts of a chain at once, per step):
//! 1. **Probe** (one round trip): does the host have an `ssh` client, what is `$HOME`. A host
//!    without a client cannot pass bytes on; it gets a direct upload (said once in the log).
//! 2. **Prepare** (one round trip): a per-transfer directory `~/.k0sctl-relay-<id>` (0700).
//!    When the upload options name a staging record (`staging_record`), the directory is
//!    appended to it first (as root, one more round trip), so that a run killed mid-transfer
//!    leaves nothing the next run does not know to remove.
//!    A sender gets a fresh ed25519 private key (sent on stdin, never in argv, written 0600)
//!    and a known_hosts file holding only its next hop's host key, namely the key this tool
//!    accepted when it connected to that host (so pinned to what the operator's known_hosts
//!    verified). A receiver gets that key's public half in `authorized_keys` with `restrict`
//!    and a forced command running the transfer's receive script, nothing else: the key is
//!    good for this one transfer, and the receive script deletes the line before it reads a
//!    byte (single use). No listener is opened anywhere: the hops are plain sshd logins.
//! 3. **Transfer**: the operator streams the file into the first host's receive script; each
//!    receive script writes `data` (0600) and, on senders, `tee`s the stream into `ssh` to the
//!    next hop (`-F /dev/null`, `BatchMode`, `StrictHostKeyChecking=yes`, only the pinned
//!    known_hosts, only the transfer key; AES-GCM preferred: with AES instructions a hop's
//!    ssh and sshd spent 0.6-0.8 s of CPU per 128 MiB with it against 1.0 s with OpenSSH's
//!    default ChaCha20, and CPU is what a hop costs).
//! 4. **Install** (every host, through the privilege wrapper): copy `data` to a temp name next
//!    to the destination, check its SHA-256 against the operator's, and only then chmod, chown,
//!    set mtime and rename into place. A mismatch or a missing copy (a broken hop, a route
//!    that does not exist, a corrupted relay) falls back to a direct upload from the operator.
//! 5. **Clean up** (always): the directory with key, known_hosts and data is removed and any
//!    `authorized_keys` line of the transfer that is still there is deleted.

use std::path::Path;
use std::time::Instant;

use futures::future::join_all;

use super::files::UploadOptions;
use super::{Cmd, ConnectSpec, Connection, Limits, Remote, shell_quote};

/// Files smaller than this are always uploaded directly (the set-up costs more than it saves).
pub const MIN_RELAY_BYTES: u64 = 1024 * 1024;

/// How another host reaches a host: the address, port and user this tool uses, and the host
/// key this tool accepted for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `alg base64`.
    pub host_key: String,
}

/// The endpoint of a connected host, or why it cannot receive relayed bytes.
pub fn endpoint(spec: Option<&ConnectSpec>, remote: &Remote) -> Result<Endpoint, String> {
    let Some(ConnectSpec::Ssh(o)) = spec else {
        return Err("not reached over native SSH".into());
    };
    let Connection::Ssh(c) = remote.connection().as_ref() else {
        return Err("not reached over native SSH".into());
    };
    let key = c
        .host_key_openssh()
        .ok_or("its host key is a certificate or unknown")?;
    let mut f = key.split_whitespace();
    let host_key = match (f.next(), f.next()) {
        (Some(a), Some(b)) => format!("{a} {b}"),
        _ => return Err("its host key is unreadable".into()),
    };
    Ok(Endpoint {
        address: o.address.clone(),
        port: o.port,
        user: o.user.clone(),
        host_key,
    })
}

/// One host that should get the file.
#[derive(Clone)]
pub struct Target {
    /// How logs name the host.
    pub name: String,
    pub remote: Remote,
    pub endpoint: Result<Endpoint, String>,
    /// Final path on the host.
    pub dst: String,
    /// Mode, owner, mtime, privilege, parent creation: as for a direct upload.
    pub opts: UploadOptions,
}

/// Who gets the bytes from whom.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Indices into the targets, in chain order: the operator sends to the first, each passes
    /// on to the next.
    pub chain: Vec<usize>,
    /// Targets that get a direct upload, with the reason.
    pub direct: Vec<(usize, String)>,
}

impl Plan {
    /// `(sender, receiver)` by host name; the operator is `"operator"`.
    pub fn edges(&self, targets: &[Target]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut prev = "operator".to_string();
        for &i in &self.chain {
            v.push((prev, targets[i].name.clone()));
            prev = targets[i].name.clone();
        }
        for (i, _) in &self.direct {
            v.push(("operator".into(), targets[*i].name.clone()));
        }
        v
    }

    /// One line for logs and dry runs: `operator → a → b → c; direct: d`.
    pub fn describe(&self, targets: &[Target]) -> String {
        let mut s = String::from("operator");
        for &i in &self.chain {
            s.push_str(" → ");
            s.push_str(&targets[i].name);
        }
        if !self.direct.is_empty() {
            let d: Vec<&str> = self
                .direct
                .iter()
                .map(|(i, _)| targets[*i].name.as_str())
                .collect();
            s.push_str(&format!("; direct: {}", d.join(", ")));
        }
        s
    }
}

/// The static plan (what can be known without asking the hosts): every target reachable over
/// native SSH with a plain verified host key joins the chain, in the given order, when the
/// file is big enough and there are at least two of them.
pub fn plan(targets: &[Target], size: u64) -> Plan {
    let mut p = Plan::default();
    let off = relay_disabled();
    for (i, t) in targets.iter().enumerate() {
        match &t.endpoint {
            Ok(_) if off => p
                .direct
                .push((i, "relaying is off (K0SCTL_RELAY=0)".into())),
            Ok(_) if size >= MIN_RELAY_BYTES => p.chain.push(i),
            Ok(_) => p.direct.push((i, "small file".into())),
            Err(e) => p.direct.push((i, e.clone())),
        }
    }
    if p.chain.len() < 2 {
        for i in p.chain.drain(..) {
            p.direct.push((i, "no other host to relay with".into()));
        }
        p.direct.sort_by_key(|(i, _)| *i);
    }
    p
}

/// `K0SCTL_RELAY=0` (or `false`/`off`) turns the fan-out off: every host gets its own upload
/// from the operator (for comparisons, and for networks where hosts must not talk to each
/// other).
pub fn relay_disabled() -> bool {
    std::env::var("K0SCTL_RELAY")
        .map(|v| matches!(v.trim(), "0" | "false" | "off" | "no"))
        .unwrap_or(false)
}

fn temp_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A fresh ed25519 key pair: (OpenSSH private key text, `ssh-ed25519 AAAA…`).
fn keypair() -> Result<(Vec<u8>, String), String> {
    use russh::keys::ssh_key::{LineEnding, PrivateKey, private::Ed25519Keypair};
    let seed: [u8; 32] = rand::random();
    let k = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let private = k.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
    let public = k.public_key().to_openssh().map_err(|e| e.to_string())?;
    let mut f = public.split_whitespace();
    let public = format!("{} {}", f.next().unwrap_or(""), f.next().unwrap_or(""));
    Ok((private.as_bytes().to_vec(), public))
}

/// The receive script of one host (no secrets in it).
fn recv_script(dir: &str, marker: &str, home: &str, next: Option<&Endpoint>) -> String {
    let d = shell_quote(dir);
    let ak = shell_quote(&format!("{home}/.ssh/authorized_keys"));
    let mut s = format!(
        "#!/bin/sh\n\
         grep -q ' {marker}$' {ak} 2>/dev/null && sed -i '/ {marker}$/d' {ak}\n\
         umask 077\n"
    );
    match next {
        None => s.push_str(&format!("exec cat > {d}/data\n")),
        Some(n) => s.push_str(&format!(
            "if tee -p </dev/null >/dev/null 2>&1; then T='tee -p'; else T=tee; fi\n\
             $T {d}/data | ssh -F /dev/null -T -i {d}/key -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o BatchMode=yes -o Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com -o StrictHostKeyChecking=yes -o UserKnownHostsFile={d}/known_hosts \
             -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10 -o ServerAliveInterval=15 \
             -o ServerAliveCountMax=3 -o LogLevel=ERROR -p {port} {dest}\n\
             rc=$?\n\
             rm -f {d}/key\n\
             [ $rc = 0 ] || echo \"passing the file on to {addr} failed (ssh exit $rc)\" >&2\n\
             exit 0\n",
            port = n.port,
            dest = shell_quote(&format!("{}@{}", n.user, n.address)),
            addr = n.address.replace(['"', '\\', '$', '`'], ""),
        )),
    }
    s
}

/// Reports the bytes the operator has sent (to the first host's progress bar).
struct Progress<R> {
    inner: R,
    sent: u64,
    total: Option<u64>,
    progress: Option<super::files::UploadProgress>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Progress<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            self.sent += (buf.filled().len() - before) as u64;
            if let Some(p) = &self.progress {
                (p.0)(self.sent, self.total);
            }
        }
        r
    }
}

/// Sends `src` (whose SHA-256 is `sha256`) to every target per `plan`: relayed along the chain,
/// direct where the plan or the hosts say so, and direct again wherever a relayed copy does not
/// verify. Returns one result per target, in the targets' order.
///
/// Per-host steps (probe, prepare, install and clean up, direct uploads) take a host slot of
/// `limits`, so `--concurrency` holds here as in every phase; the transfer itself is one
/// stream into the first host of the chain. The caller must not hold a host slot.
pub async fn deliver(
    src: &Path,
    sha256: &str,
    targets: &[Target],
    plan: &Plan,
    limits: &Limits,
) -> Vec<Result<(), String>> {
    let mut results: Vec<Option<Result<(), String>>> = vec![None; targets.len()];
    let mut fallback: Vec<(usize, String)> = plan.direct.clone();
    if plan.chain.len() >= 2 {
        let relayed = relay(src, sha256, targets, &plan.chain, limits).await;
        for (i, r) in relayed {
            match r {
                Ok(()) => results[i] = Some(Ok(())),
                Err(why) => fallback.push((i, why)),
            }
        }
    } else {
        fallback.extend(plan.chain.iter().map(|&i| (i, "no chain".to_string())));
    }
    let direct = join_all(fallback.into_iter().map(|(i, why)| {
        let t = &targets[i];
        async move {
            let _slot = limits.host_slot().await;
            let planned_so = ["small file", "relaying is off", "no other host"];
            if !planned_so.iter().any(|p| why.starts_with(p)) {
                tracing::info!(about = %t.name, "{why}; uploading {} directly", t.dst);
            }
            let r = t
                .remote
                .upload_file(src, &t.dst, &t.opts)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            (i, r)
        }
    }))
    .await;
    for (i, r) in direct {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not delivered (internal error)".into())))
        .collect()
}

/// Steps 1-5 of the module docs for `chain` (indices into `targets`); returns per chain member
/// `Ok` when its copy is verified and in place, else why it needs a direct upload.
async fn relay(
    src: &Path,
    sha256: &str,
    targets: &[Target],
    chain: &[usize],
    limits: &Limits,
) -> Vec<(usize, Result<(), String>)> {
    let started = Instant::now();
    let id = temp_suffix();
    let marker = format!("k0sctl-relay-{id}");
    // 1. Probe.
    let probes = join_all(chain.iter().map(|&i| async move {
        let _slot = limits.host_slot().await;
        let out = targets[i]
            .remote
            .run_str(Cmd::new(
                "command -v ssh >/dev/null 2>&1 && echo ssh=yes || echo ssh=no; echo \"home=$HOME\"",
            ))
            .await;
        (i, out)
    }))
    .await;
    let mut out: Vec<(usize, Result<(), String>)> = Vec::new();
    let mut members: Vec<(usize, String, bool)> = Vec::new(); // (target, home, can send)
    for (i, r) in probes {
        match r {
            Ok(s) => {
                let home = s
                    .lines()
                    .find_map(|l| l.strip_prefix("home="))
                    .unwrap_or("")
                    .to_string();
                if !home.starts_with('/') {
                    out.push((i, Err("its $HOME is not an absolute path".into())));
                    continue;
                }
                members.push((i, home, s.contains("ssh=yes")));
            }
            Err(e) => out.push((i, Err(format!("cannot take part in the relay: {e}")))),
        }
    }
    // Hosts without an ssh client can only be the last link; one of them gets that place,
    // the others are uploaded to directly.
    let mut order: Vec<(usize, String)> = Vec::new();
    let mut tail: Option<(usize, String)> = None;
    for (i, home, can_send) in members {
        if can_send {
            order.push((i, home));
        } else if tail.is_none() {
            tail = Some((i, home));
        } else {
            out.push((
                i,
                Err("it has no ssh client to pass the file on, so it cannot join the relay".into()),
            ));
        }
    }
    order.extend(tail);
    if order.len() < 2 {
        out.extend(
            order
                .into_iter()
                .map(|(i, _)| (i, Err("no other host to relay with".to_string()))),
        );
        return out;
    }
    let names: Vec<&str> = order
        .iter()
        .map(|(i, _)| targets[*i].name.as_str())
        .collect();
    tracing::info!(
        "relaying {} ({}) along operator → {}",
        src.display(),
        targets[order[0].0].dst,
        names.join(" → ")
    );
    let probed_at = started.elapsed();
    // 2. Prepare.
    let dirs: Vec<String> = order
        .iter()
        .map(|(_, home)| format!("{home}/.{marker}"))
        .collect();
    let mut keys = Vec::new();
    for _ in 1..order.len() {
        match keypair() {
            Ok(k) => keys.push(k),
            Err(e) => {
                let why = format!("cannot make a transfer key: {e}");
                out.extend(order.iter().map(|(i, _)| (*i, Err(why.clone()))));
                return out;
            }
        }
    }
    let prepared = join_all(order.iter().enumerate().map(|(pos, (i, home))| {
        let t = &targets[*i];
        let d = shell_quote(&dirs[pos]);
        let next = order
            .get(pos + 1)
            .and_then(|(j, _)| targets[*j].endpoint.as_ref().ok());
        let mut script = format!("set -e\numask 077\nrm -rf {d}\nmkdir -m 700 {d}\n");
        let mut stdin = Vec::new();
        if let Some(n) = next {
            // The private key arrives on stdin.
            script.push_str(&format!("cat > {d}/key\n"));
            stdin = keys[pos].0.clone();
            script.push_str(&format!(
                "printf '%s\\n' {} > {d}/known_hosts\n",
                shell_quote(&format!(
                    "{} {}",
                    super::ssh::known_hosts::host_pattern(&n.address, n.port),
                    n.host_key
                ))
            ));
        }
        if pos > 0 {
            let ssh_dir = shell_quote(&format!("{home}/.ssh"));
            let line = format!(
                "restrict,command=\"sh {}/recv\" {} {marker}",
                dirs[pos],
                keys[pos - 1].1
            );
            script.push_str(&format!(
                "[ -d {ssh_dir} ] || mkdir -m 700 {ssh_dir}\n\
                 printf '%s\\n' {} >> {ssh_dir}/authorized_keys\n",
                shell_quote(&line)
            ));
        }
        script.push_str(&format!(
            "cat > {d}/recv <<'K0SCTL_RELAY_EOF'\n{}K0SCTL_RELAY_EOF\necho ready\n",
            recv_script(&dirs[pos], &marker, home, next)
        ));
        let cmd = Cmd::new(script)
            .stdin(stdin)
            .display_as(format!("prepare relay {marker} on {}", t.name));
        // The directory is recorded as staging before it exists (see `staging_record`).
        let record = t.opts.staging_record.as_ref().map(|r| {
            Cmd::new(format!(
                "umask 077; printf '%s\\n' {} >> {}",
                shell_quote(&dirs[pos]),
                shell_quote(r)
            ))
            .sudo()
            .display_as("record staging files")
        });
        async move {
            let _slot = limits.host_slot().await;
            if let Some(rec) = record {
                t.remote.run(rec).await?;
            }
            t.remote.run_str(cmd).await
        }
    }))
    .await;
    let prepared_ok = prepared
        .iter()
        .all(|r| r.as_ref().is_ok_and(|s| s.trim() == "ready"));
    let prepared_at = started.elapsed();
    // 3. Transfer (only when every link is ready; a broken link is caught by step 4 anyway).
    if prepared_ok {
        let first = &targets[order[0].0];
        match tokio::fs::File::open(src).await {
            Ok(f) => {
                let total = f.metadata().await.ok().map(|m| m.len());
                let reader = Progress {
                    inner: f,
                    sent: 0,
                    total,
                    progress: first.opts.progress.clone(),
                };
                let cmd = Cmd::new(format!("sh {}/recv", shell_quote(&dirs[0])))
                    .stdin_reader(reader)
                    .display_as(format!("relay {} into {}", src.display(), first.name));
                match first.remote.exec(cmd).await {
                    Ok(o) => {
                        for l in o.stderr_str().lines().filter(|l| !l.trim().is_empty()) {
                            tracing::warn!("relay of {}: {l}", src.display());
                        }
                    }
                    Err(e) => tracing::warn!("relay of {} into {}: {e}", src.display(), first.name),
                }
            }
            Err(e) => tracing::warn!("{}: {e}", src.display()),
        }
    } else {
        for (pos, r) in prepared.iter().enumerate() {
            if let Err(e) = r {
                tracing::warn!(
                    about = %targets[order[pos].0].name,
                    "preparing the relay failed: {e}"
                );
            }
        }
    }
    let sent_at = started.elapsed();
    // 4. Install, 5. clean up.
    let marker = &marker;
    let finished = join_all(order.iter().enumerate().map(|(pos, (i, home))| {
        let t = &targets[*i];
        let d = shell_quote(&dirs[pos]);
        let dst = shell_quote(&t.dst);
        let tmp = shell_quote(&format!("{}.tmp.{}", t.dst, temp_suffix()));
        let mut fin = format!("chmod {:o} {tmp}", t.opts.mode.unwrap_or(0o644));
        if let Some(o) = &t.opts.owner {
            fin.push_str(&format!(" && chown {} {tmp}", shell_quote(o)));
        }
        if let Some(m) = t.opts.mtime {
            fin.push_str(&format!(" && touch -d @{m} {tmp}"));
        }
        let mkdir = match (t.opts.create_parent, t.dst.rsplit_once('/')) {
            (true, Some((dir, _))) if !dir.is_empty() => {
                format!("mkdir -p -m 0755 {} || exit 1\n", shell_quote(dir))
            }
            _ => String::new(),
        };
        // The copy belongs to the login user: the final file belongs to root (as a direct
        // upload through the privilege wrapper would) unless an owner is given.
        let own = if t.opts.sudo {
            format!("&& chown 0:0 {tmp} ")
        } else {
            String::new()
        };
        let install = format!(
            "[ -f {d}/data ] || {{ echo missing; exit 0; }}\n\
             {mkdir}mv -f {d}/data {tmp} {own}|| {{ rm -f {tmp}; echo move-failed; exit 0; }}\n\
             got=$( (openssl dgst -sha256 -r {tmp} 2>/dev/null || sha256sum {tmp}) | cut -c1-64)\n\
             if [ \"$got\" != {sha256} ]; then rm -f {tmp}; echo \"mismatch $got\"; exit 0; fi\n\
             {fin} && mv -f {tmp} {dst} || {{ rc=$?; rm -f {tmp}; exit $rc; }}\n\
             echo ok\n"
        );
        let ak = shell_quote(&format!("{home}/.ssh/authorized_keys"));
        let cleanup = format!(
            "rm -rf {d}; if grep -q ' {marker}$' {ak} 2>/dev/null; then sed -i '/ {marker}$/d' {ak}; fi; true"
        );
        async move {
            let _slot = limits.host_slot().await;
            let r = t
                .remote
                .run_str(
                    Cmd::new(install)
                        .sudo_if(t.opts.sudo)
                        .display_as(format!("install relayed copy as {}", t.dst)),
                )
                .await;
            // The directory may hold root-unreadable bits only for its owner: clean up as the
            // login user (the same one that made it).
            let c = t.remote.run(Cmd::new(cleanup)).await;
            if let Err(e) = c {
                tracing::warn!(about = %t.name, "cleaning up relay {marker}: {e}");
            }
            let r = match r {
                Ok(s) if s.trim() == "ok" => Ok(()),
                Ok(s) if s.trim() == "missing" => {
                    Err("the relayed copy did not arrive".to_string())
                }
                Ok(s) if s.trim().starts_with("mismatch") => Err(format!(
                    "the relayed copy failed the SHA-256 check (got {}, want {sha256})",
                    s.trim().trim_start_matches("mismatch ")
                )),
                Ok(s) => Err(format!("installing the relayed copy failed: {}", s.trim())),
                Err(e) => Err(format!("installing the relayed copy failed: {e}")),
            };
            (*i, r)
        }
    }))
    .await;
    let done_at = started.elapsed();
    tracing::debug!(
        "relay {marker}: {} hosts in {:.1?} (probe {:.1?}, prepare {:.1?}, transfer {:.1?}, \
         install and clean up {:.1?})",
        order.len(),
        done_at,
        probed_at,
        prepared_at - probed_at,
        sent_at - prepared_at,
        done_at - sent_at
    );
    out.extend(finished);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_ed25519() {
        let (a, pa) = keypair().unwrap();
        let (b, pb) = keypair().unwrap();
        assert_ne!(pa, pb);
        assert!(pa.starts_with("ssh-ed25519 AAAA"), "{pa}");
        let text = String::from_utf8(a).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_ne!(text.into_bytes(), b);
    }

    #[test]
    fn recv_script_forwards_only_with_a_next_hop() {
        let n = Endpoint {
            address: "10.0.0.2".into(),
            port: 2222,
            user: "root".into(),
            host_key: "ssh-ed25519 AAAAx".into(),
        };
        let mid = recv_script("/root/.k0sctl-relay-1", "k0sctl-relay-1", "/root", Some(&n));
        assert!(mid.contains("StrictHostKeyChecking=yes"));
        assert!(mid.contains("UserKnownHostsFile=/root/.k0sctl-relay-1/known_hosts"));
        assert!(mid.contains("-p 2222 root@10.0.0.2"));
        assert!(mid.contains("sed -i '/ k0sctl-relay-1$/d' /root/.ssh/authorized_keys"));
        let last = recv_script("/root/.k0sctl-relay-1", "k0sctl-relay-1", "/root", None);
        assert!(!last.contains("ssh "));
        assert!(last.contains("exec cat > /root/.k0sctl-relay-1/data"));
    }
}
