//! Client authentication for the native transport, in the order OpenSSH users expect:
//!
//! 1. the configured keys (`ssh.keyPath` / IdentityFile), each first as an OpenSSH user
//!    certificate when `<key>-cert.pub` (or CertificateFile) exists, then as a plain key; if the
//!    agent holds the key it signs (no passphrase needed), otherwise the file is loaded;
//! 2. unless IdentitiesOnly, the remaining agent identities (`SSH_AUTH_SOCK`);
//! 3. with no configured key, the default files `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
//!
//! Trying the configured key first avoids "too many authentication failures" with agents
//! holding many keys. RSA signs with rsa-sha2-512/256 as the server's `server-sig-algs` allow.
//! Encrypted keys are decrypted once per process (cache): passphrase from
//! [`SshOptions::passphrase`], else `$K0SCTL_SSH_KEY_PASSPHRASE`, else a prompt on the TTY.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use russh::client::{Handle, Handler};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use super::SshOptions;
use crate::transport::{Secret, TransportError};

/// Environment variable holding the passphrase of encrypted keys (for CI).
pub const PASSPHRASE_ENV: &str = "K0SCTL_SSH_KEY_PASSPHRASE";

static KEY_CACHE: LazyLock<tokio::sync::Mutex<HashMap<PathBuf, Arc<PrivateKey>>>> =
    LazyLock::new(Default::default);

/// Runs every [`prompt_tty`]; a front end that draws on the terminal (progress bars) installs
/// one with [`set_prompt_guard`] that steps aside while the prompt waits for input.
static PROMPT_GUARD: std::sync::OnceLock<fn(&mut dyn FnMut())> = std::sync::OnceLock::new();

/// Installs the [`PROMPT_GUARD`] (once per process; later calls are ignored).
pub fn set_prompt_guard(guard: fn(&mut dyn FnMut())) {
    let _ = PROMPT_GUARD.set(guard);
}

/// Ask for a secret on the controlling terminal with echo off. `None` without a TTY.
pub fn prompt_tty(prompt: &str) -> Option<Secret> {
    let Some(guard) = PROMPT_GUARD.get() else {
        return prompt_tty_now(prompt);
    };
    let mut answer = None;
    guard(&mut || answer = prompt_tty_now(prompt));
    answer
}

fn prompt_tty_now(prompt: &str) -> Option<Secret> {
    use std::io::{BufRead, Write};
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; fd is a valid open descriptor for the whole block.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        return None;
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let mut w = &tty;
    let _ = write!(w, "{prompt}");
    let _ = w.flush();
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    r.ok()?;
    Some(Secret::new(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// Load (and decrypt once per process) a private key.
pub async fn load_key(
    path: &Path,
    passphrase: Option<&Secret>,
    host: &str,
) -> Result<Arc<PrivateKey>, TransportError> {
    let mut cache = KEY_CACHE.lock().await;
    if let Some(k) = cache.get(path) {
        return Ok(k.clone());
    }
    let kerr = |reason: String| TransportError::Key {
        host: host.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let key = match russh::keys::load_secret_key(path, None) {
        Ok(k) => k,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let pass = match passphrase
                .cloned()
                .or_else(|| Secret::from_env(PASSPHRASE_ENV))
            {
                Some(p) => p,
                None => {
                    let prompt = format!("Enter passphrase for key '{}': ", path.display());
                    tokio::task::spawn_blocking(move || prompt_tty(&prompt))
                        .await
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            kerr(format!(
                                "the key is encrypted and no passphrase is available: set \
                                 {PASSPHRASE_ENV}, run from a terminal, or load the key into \
                                 ssh-agent"
                            ))
                        })?
                }
            };
            russh::keys::load_secret_key(path, Some(pass.expose()))
                .map_err(|e| kerr(format!("cannot decrypt the key (wrong passphrase?): {e}")))?
        }
        Err(e) => return Err(kerr(format!("cannot load the key: {e}"))),
    };
    let key = Arc::new(key);
    cache.insert(path.to_path_buf(), key.clone());
    Ok(key)
}

/// The public half of a key file without decrypting it: `<key>.pub`, else the public key that
/// the OpenSSH private key format stores in clear (so an encrypted key held by the agent is
/// matched without a passphrase prompt).
fn read_pub(path: &Path) -> Option<PublicKey> {
    let p = PathBuf::from(format!("{}.pub", path.display()));
    russh::keys::load_public_key(p).ok().or_else(|| {
        let text = std::fs::read_to_string(path).ok()?;
        PrivateKey::from_openssh(text.trim())
            .ok()
            .map(|k| k.public_key().clone())
    })
}

fn cert_for(path: &Path, opts: &SshOptions) -> Option<Certificate> {
    let mut cands: Vec<PathBuf> = opts.certificates.clone();
    cands.push(PathBuf::from(format!("{}-cert.pub", path.display())));
    cands.iter().find_map(|c| {
        let cert = russh::keys::load_openssh_certificate(c).ok()?;
        // Only a certificate for this key.
        match read_pub(path) {
            Some(pk) if pk.key_data() != cert.public_key() => None,
            _ => Some(cert),
        }
    })
}

fn default_keys() -> Vec<PathBuf> {
    let Some(h) = dirs::home_dir() else {
        return vec![];
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| h.join(".ssh").join(n))
        .filter(|p| p.exists())
        .collect()
}

fn hash_for(kd: &KeyData, rsa_hash: Option<HashAlg>) -> Option<HashAlg> {
    if kd.algorithm().is_rsa() {
        rsa_hash
    } else {
        None
    }
}

async fn agent_keys(opts: &SshOptions) -> Vec<KeyData> {
    let sock = opts
        .agent_socket
        .clone()
        .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from));
    let (true, Some(sock)) = (opts.use_agent, sock) else {
        return vec![];
    };
    let Ok(mut a) = AgentClient::connect_uds(&sock).await else {
        return vec![];
    };
    a.request_identities()
        .await
        .unwrap_or_default()
        .iter()
        .map(|id| match id {
            AgentIdentity::PublicKey { key, .. } => key.key_data().clone(),
            AgentIdentity::Certificate { certificate, .. } => certificate.public_key().clone(),
        })
        .collect()
}

/// Decrypt the configured keys the agent cannot sign for *before* connecting, so a passphrase
/// prompt never races the connection's timeouts (and happens once, before any host connects).
pub async fn prepare(opts: &SshOptions, label: &str) -> Result<(), TransportError> {
    if opts.key_paths.is_empty() {
        return Ok(());
    }
    let in_agent = agent_keys(opts).await;
    for path in &opts.key_paths {
        if read_pub(path).is_some_and(|pk| in_agent.contains(pk.key_data())) {
            continue;
        }
        load_key(path, opts.passphrase.as_ref(), label).await?;
    }
    Ok(())
}

/// Authenticate `handle` as `opts.user`.
pub(crate) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    opts: &SshOptions,
    label: &str,
) -> Result<(), TransportError>
where
    H::Error: std::fmt::Display,
{
    let proto = |e: russh::Error| TransportError::Protocol {
        host: label.to_string(),
        reason: e.to_string(),
    };
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(proto)?
        .unwrap_or(Some(HashAlg::Sha256));
    let user = opts.user.clone();
    let mut tried: Vec<String> = Vec::new();

    let sock = opts
        .agent_socket
        .clone()
        .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from));
    let mut agent = match (opts.use_agent, sock) {
        (true, Some(sock)) => match AgentClient::connect_uds(&sock).await {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::debug!(about = %label, "ssh-agent at {} unavailable: {e}", sock.display());
                None
            }
        },
        _ => None,
    };
    let mut agent_ids: Vec<AgentIdentity> = match agent.as_mut() {
        Some(a) => a.request_identities().await.unwrap_or_default(),
        None => vec![],
    };
    let id_key = |id: &AgentIdentity| -> KeyData {
        match id {
            AgentIdentity::PublicKey { key, .. } => key.key_data().clone(),
            AgentIdentity::Certificate { certificate, .. } => certificate.public_key().clone(),
        }
    };

    let explicit = !opts.key_paths.is_empty();
    let files = if explicit {
        opts.key_paths.clone()
    } else {
        default_keys()
    };

    for path in &files {
        let pubkey = read_pub(path);
        let cert = cert_for(path, opts);
        // Agent holds this key: let it sign (no passphrase needed).
        if let (Some(a), Some(pk)) = (agent.as_mut(), pubkey.as_ref()) {
            let pos = agent_ids.iter().position(|id| id_key(id) == *pk.key_data());
            if let Some(pos) = pos {
                agent_ids.remove(pos);
                let h = hash_for(pk.key_data(), rsa_hash);
                if let Some(c) = cert.clone() {
                    tried.push(format!("{} certificate via agent", path.display()));
                    if let Ok(r) = handle.authenticate_certificate_with(&user, c, h, a).await
                        && r.success()
                    {
                        return Ok(());
                    }
                }
                tried.push(format!("{} via agent", path.display()));
                if let Ok(r) = handle
                    .authenticate_publickey_with(&user, pk.clone(), h, a)
                    .await
                    && r.success()
                {
                    return Ok(());
                }
                continue;
            }
        }
        let key = match load_key(path, opts.passphrase.as_ref(), label).await {
            Ok(k) => k,
            Err(e) if explicit => return Err(e),
            Err(e) => {
                tracing::debug!("skipping default key: {e}");
                continue;
            }
        };
        agent_ids.retain(|id| id_key(id) != *key.public_key().key_data());
        if let Some(c) = cert {
            tried.push(format!("{} certificate", path.display()));
            if handle
                .authenticate_openssh_cert(&user, key.clone(), c)
                .await
                .map_err(proto)?
                .success()
            {
                return Ok(());
            }
        }
        tried.push(path.display().to_string());
        let h = hash_for(key.public_key().key_data(), rsa_hash);
        if handle
            .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(key, h))
            .await
            .map_err(proto)?
            .success()
        {
            return Ok(());
        }
    }

    if !opts.identities_only
        && let Some(a) = agent.as_mut()
    {
        for id in agent_ids {
            let r = match id {
                AgentIdentity::PublicKey { key, comment } => {
                    tried.push(format!("agent key {comment}"));
                    let h = hash_for(key.key_data(), rsa_hash);
                    handle.authenticate_publickey_with(&user, key, h, a).await
                }
                AgentIdentity::Certificate {
                    certificate,
                    comment,
                } => {
                    tried.push(format!("agent certificate {comment}"));
                    let h = hash_for(certificate.public_key(), rsa_hash);
                    handle
                        .authenticate_certificate_with(&user, certificate, h, a)
                        .await
                }
            };
            if let Ok(r) = r
                && r.success()
            {
                return Ok(());
            }
        }
    }
    if tried.is_empty() {
        tried.push("no keys: set ssh.keyPath, add an IdentityFile or start ssh-agent".into());
    }
    Err(TransportError::Auth {
        host: label.to_string(),
        user,
        tried: tried.join(", "),
    })
}
