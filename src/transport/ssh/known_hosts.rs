//! known_hosts verification with OpenSSH semantics, implemented here because russh's helper
//! lacks wildcards, negation, `@cert-authority` and `@revoked`.
//!
//! Lines are parsed with `ssh_key::known_hosts` (one line at a time, so errors can name
//! `file:line`); matching is ours: comma-separated patterns with `*`/`?` wildcards and `!`
//! negation, hashed `|1|salt|hmac` names, `[host]:port` for non-22 ports, `@cert-authority` host
//! CAs (certificate type, validity, CA signature, principals) and `@revoked` keys. Keys are
//! compared with `key_data()`, never `PublicKey ==` (which includes the comment).
//!
//! Policy ([`StrictHostKeyChecking`]): `accept-new` (default) records unknown keys in the first
//! user file and refuses changed keys with a message naming host, file, line and the fix.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use hmac::{KeyInit, Mac};
use russh::keys::HashAlg;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{Algorithm, PublicKey, certificate::CertType};

use crate::transport::HostKeyError;

/// `StrictHostKeyChecking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StrictHostKeyChecking {
    /// Only known keys; unknown hosts are refused.
    Yes,
    /// Unknown keys are recorded; changed keys are refused.
    #[default]
    AcceptNew,
    /// Unknown keys are recorded; changed keys are accepted with a warning (not recommended).
    No,
}

impl FromStr for StrictHostKeyChecking {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "yes" | "true" | "ask" => Ok(Self::Yes),
            "accept-new" => Ok(Self::AcceptNew),
            "no" | "off" | "false" => Ok(Self::No),
            o => Err(format!(
                "StrictHostKeyChecking: unknown value '{o}' (yes, accept-new, no)"
            )),
        }
    }
}

/// Which files to consult and the policy.
#[derive(Debug, Clone)]
pub struct KnownHostsConfig {
    /// UserKnownHostsFile (first one receives new keys).
    pub user_files: Vec<PathBuf>,
    /// GlobalKnownHostsFile (read only).
    pub global_files: Vec<PathBuf>,
    pub policy: StrictHostKeyChecking,
}

impl Default for KnownHostsConfig {
    /// `$SSH_KNOWN_HOSTS` or `~/.ssh/known_hosts`; `/etc/ssh/ssh_known_hosts`; accept-new.
    fn default() -> Self {
        let user = std::env::var_os("SSH_KNOWN_HOSTS")
            .map(PathBuf::from)
            .or_else(|| dirs::home_dir().map(|h| h.join(".ssh/known_hosts")))
            .unwrap_or_else(|| PathBuf::from(".ssh/known_hosts"));
        KnownHostsConfig {
            user_files: vec![user],
            global_files: vec![
                PathBuf::from("/etc/ssh/ssh_known_hosts"),
                PathBuf::from("/etc/ssh/ssh_known_hosts2"),
            ],
            policy: StrictHostKeyChecking::AcceptNew,
        }
    }
}

/// One parsed known_hosts line.
#[derive(Debug, Clone)]
pub struct KnownHostLine {
    pub file: PathBuf,
    pub line: usize,
    pub marker: Option<Marker>,
    pub patterns: HostPatterns,
    pub key: PublicKey,
}

/// Result of a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A matching key or a valid CA-signed certificate was found.
    Trusted,
    /// No key is known for this host (policy decides).
    Unknown,
    /// A different key of the same type is recorded (only returned under policy `No`).
    ChangedAccepted,
}

/// Read the lines of the configured files whose host patterns match `host`/`port` (missing
/// files are fine, bad lines are skipped). Every check filters by host anyway, and a connection
/// keeps its lines for its whole life: keeping (or reserving room for) the whole file would make
/// each connection's share grow with the number of hosts in it, and the total with its square.
pub fn load_for(cfg: &KnownHostsConfig, host: &str, port: u16) -> Vec<KnownHostLine> {
    let mut out = Vec::new();
    for f in cfg.user_files.iter().chain(&cfg.global_files) {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for (i, raw) in text.lines().enumerate() {
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            // ssh_key splits on single spaces: normalise runs of whitespace.
            let norm = t.split_whitespace().collect::<Vec<_>>().join(" ");
            match Entry::from_str(&norm) {
                Ok(e) if !patterns_match(e.host_patterns(), host, port) => {}
                Ok(e) => out.push(KnownHostLine {
                    file: f.clone(),
                    line: i + 1,
                    marker: e.marker().copied(),
                    patterns: e.host_patterns().clone(),
                    key: e.public_key().clone(),
                }),
                Err(e) => tracing::debug!(
                    "{}:{}: unparsable known_hosts line: {e}",
                    f.display(),
                    i + 1
                ),
            }
        }
    }
    out
}

/// The name a host has in known_hosts: `host` on port 22, else `[host]:port`.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// OpenSSH-style glob: `*` any run, `?` one character, case-insensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Does a pattern list match `host`/`port`? A negated match wins over any positive match.
pub fn patterns_match(patterns: &HostPatterns, host: &str, port: u16) -> bool {
    let cand = host_pattern(host, port);
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(cand.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut positive = false;
            for p in list {
                if let Some(neg) = p.strip_prefix('!') {
                    if glob_match(neg, &cand) {
                        return false;
                    }
                } else if glob_match(p, &cand) {
                    positive = true;
                }
            }
            positive
        }
    }
}

fn fingerprint(k: &russh::keys::ssh_key::public::KeyData) -> String {
    k.fingerprint(HashAlg::Sha256).to_string()
}

/// Check the presented key or certificate against `lines`.
pub fn verify(
    lines: &[KnownHostLine],
    host: &str,
    port: u16,
    presented: &PublicKeyOrCertificate,
    policy: StrictHostKeyChecking,
    label: &str,
) -> Result<Verdict, HostKeyError> {
    let (kd, cert) = match presented {
        PublicKeyOrCertificate::PublicKey { key, .. } => (key.key_data().clone(), None),
        PublicKeyOrCertificate::Certificate(c) => (c.public_key().clone(), Some(c)),
    };
    let matching: Vec<&KnownHostLine> = lines
        .iter()
        .filter(|l| patterns_match(&l.patterns, host, port))
        .collect();
    // @revoked: the key itself or the CA that signed the certificate.
    for l in matching
        .iter()
        .filter(|l| l.marker == Some(Marker::Revoked))
    {
        let lk = l.key.key_data();
        if *lk == kd || cert.is_some_and(|c| c.signature_key() == lk) {
            return Err(HostKeyError::Revoked {
                host: label.to_string(),
                fingerprint: fingerprint(lk),
                file: l.file.clone(),
                line: l.line,
            });
        }
    }
    if let Some(c) = cert {
        let cas: Vec<_> = matching
            .iter()
            .filter(|l| l.marker == Some(Marker::CertAuthority))
            .map(|l| l.key.key_data().fingerprint(HashAlg::Sha256))
            .collect();
        if !cas.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let reason = if c.cert_type() != CertType::Host {
                Some("it is not a host certificate".to_string())
            } else if c.validate_at(now, cas.iter()).is_err() {
                Some(format!(
                    "not signed by a trusted @cert-authority for this host or outside its validity period (CA {})",
                    fingerprint(c.signature_key())
                ))
            } else if !c.valid_principals().is_empty()
                && !c
                    .valid_principals()
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(host))
            {
                Some(format!(
                    "its principals {:?} do not include '{host}'",
                    c.valid_principals()
                ))
            } else {
                None
            };
            return match reason {
                None => Ok(Verdict::Trusted),
                Some(reason) => Err(HostKeyError::BadCertificate {
                    host: label.to_string(),
                    reason,
                }),
            };
        }
    }
    let plain: Vec<&&KnownHostLine> = matching.iter().filter(|l| l.marker.is_none()).collect();
    if plain.iter().any(|l| *l.key.key_data() == kd) {
        return Ok(Verdict::Trusted);
    }
    if let Some(l) = plain
        .iter()
        .find(|l| l.key.key_data().algorithm() == kd.algorithm())
    {
        if policy == StrictHostKeyChecking::No {
            tracing::warn!(
                about = %label,
                "host key changed ({}:{}), accepted because StrictHostKeyChecking=no",
                l.file.display(),
                l.line
            );
            return Ok(Verdict::ChangedAccepted);
        }
        return Err(HostKeyError::Changed {
            host: label.to_string(),
            pattern: host_pattern(host, port),
            alg: kd.algorithm().to_string(),
            fingerprint: fingerprint(&kd),
            file: l.file.clone(),
            line: l.line,
        });
    }
    Ok(Verdict::Unknown)
}

/// Key algorithms already recorded for this host (to ask the server for those first, so a host
/// known by its ed25519 key does not look "changed" when it offers ecdsa).
pub fn known_algorithms(lines: &[KnownHostLine], host: &str, port: u16) -> Vec<Algorithm> {
    let mut v = Vec::new();
    for l in lines {
        if l.marker.is_none() && patterns_match(&l.patterns, host, port) {
            let a = l.key.algorithm();
            if !v.contains(&a) {
                v.push(a);
            }
        }
    }
    v
}

/// Is there an `@cert-authority` line for this host (then host certificates are requested)?
pub fn has_cert_authority(lines: &[KnownHostLine], host: &str, port: u16) -> bool {
    lines
        .iter()
        .any(|l| l.marker == Some(Marker::CertAuthority) && patterns_match(&l.patterns, host, port))
}

static RECORD_LOCK: Mutex<()> = Mutex::new(());

/// Append `host`'s key to `file` (created 0600, directory 0700), unless an identical entry
/// already exists (no duplicate lines when many hosts connect at once).
pub fn record(file: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let _g = RECORD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let pattern = host_pattern(host, port);
    let bare = PublicKey::new(key.key_data().clone(), "");
    let line = format!(
        "{pattern} {}",
        bare.to_openssh().map_err(std::io::Error::other)?
    );
    let line = line.trim_end().to_string();
    let existing = std::fs::read_to_string(file).unwrap_or_default();
    if existing.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)?;
    let sep = if !existing.is_empty() && !existing.ends_with('\n') {
        "\n"
    } else {
        ""
    };
    writeln!(f, "{sep}{line}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.example.com", "a.example.com"));
        assert!(glob_match("10.0.0.?", "10.0.0.5"));
        assert!(!glob_match("10.0.0.?", "10.0.0.55"));
        assert!(glob_match("[10.0.0.*]:2222", "[10.0.0.9]:2222"));
        let p = HostPatterns::Patterns(vec!["*.ex.com".into(), "!bad.ex.com".into()]);
        assert!(patterns_match(&p, "good.ex.com", 22));
        assert!(!patterns_match(&p, "bad.ex.com", 22));
        assert!(!patterns_match(&p, "good.ex.com", 2222));
    }

    #[test]
    fn load_for_keeps_only_this_hosts_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQvQvdYE3WyOjpuSx0ArwbATL31IwKNkXIGev8+Zm7k";
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("10.0.{}.{} {key}\n", i / 250, i % 250 + 1));
        }
        text.push_str(&format!("@cert-authority *.example.com {key}\n"));
        std::fs::write(&f, text).unwrap();
        let cfg = KnownHostsConfig {
            user_files: vec![f],
            global_files: vec![],
            policy: StrictHostKeyChecking::Yes,
        };
        let lines = load_for(&cfg, "10.0.0.7", 22);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, 7);
        // Room for the whole file would be kept for the connection's life.
        assert!(lines.capacity() < 16, "capacity {}", lines.capacity());
        let lines = load_for(&cfg, "a.example.com", 22);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].marker, Some(Marker::CertAuthority));
        assert!(load_for(&cfg, "10.0.0.7", 2222).is_empty());
    }

    #[test]
    fn hashed() {
        // `ssh-keygen -H` form of "[127.0.0.1]:2222" computed with the same HMAC.
        let salt = b"0123456789abcdef0123".to_vec();
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        let p = HostPatterns::HashedName { salt, hash };
        assert!(patterns_match(&p, "127.0.0.1", 2222));
        assert!(!patterns_match(&p, "127.0.0.1", 22));
    }
}
