//! A small `~/.ssh/config` reader for the directives the native transport honours: Host
//! patterns (wildcards, `!` negation), HostName, User, Port, IdentityFile, IdentitiesOnly,
//! ProxyJump, UserKnownHostsFile, GlobalKnownHostsFile, StrictHostKeyChecking, ConnectTimeout,
//! ServerAliveInterval, CertificateFile. First value wins (IdentityFile and CertificateFile
//! accumulate), as in OpenSSH. `Match` blocks are skipped and `Include` is followed for plain
//! paths and globs relative to `~/.ssh`.
//!
//! Why not `russh-config` 0.58: it is untested here, resolves only a subset (no Match either)
//! and pulls in its own tokio/proxy stack; the directives above are a page of code. Users whose
//! config needs more (ProxyCommand, Match) use the OpenSSH transport.

use std::path::{Path, PathBuf};

use super::known_hosts::glob_match;

#[derive(Debug, Clone)]
struct Block {
    patterns: Vec<String>,
    /// `None` for a Match block (never applied).
    is_match: bool,
    entries: Vec<(String, String)>,
}

/// A parsed ssh config file.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

/// The directives resolved for one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub certificate_files: Vec<PathBuf>,
    pub identities_only: Option<bool>,
    pub proxy_jump: Option<String>,
    pub user_known_hosts_files: Vec<PathBuf>,
    pub global_known_hosts_files: Vec<PathBuf>,
    pub strict_host_key_checking: Option<String>,
    pub connect_timeout: Option<u64>,
    pub server_alive_interval: Option<u64>,
    pub server_alive_count_max: Option<u32>,
}

fn split_kv(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let idx = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let key = line[..idx].to_ascii_lowercase();
    let rest = line[idx..].trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    Some((key, rest.trim().to_string()))
}

fn words(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn yes(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "yes" | "true")
}

impl SshConfig {
    /// Parse config text (Include paths are resolved against `~/.ssh`).
    pub fn parse(text: &str) -> Self {
        let mut cfg = SshConfig {
            blocks: vec![Block {
                patterns: vec!["*".into()],
                is_match: false,
                entries: vec![],
            }],
        };
        cfg.parse_into(text, 0);
        cfg
    }

    fn parse_into(&mut self, text: &str, depth: usize) {
        for line in text.lines() {
            let Some((k, v)) = split_kv(line) else {
                continue;
            };
            match k.as_str() {
                "host" => self.blocks.push(Block {
                    patterns: words(&v),
                    is_match: false,
                    entries: vec![],
                }),
                "match" => self.blocks.push(Block {
                    patterns: vec![],
                    is_match: true,
                    entries: vec![],
                }),
                "include" if depth < 8 => {
                    for w in words(&v) {
                        let p = expand_tilde(&w);
                        let p = if p.is_absolute() {
                            p
                        } else {
                            dirs::home_dir().unwrap_or_default().join(".ssh").join(p)
                        };
                        for f in glob_files(&p) {
                            if let Ok(t) = std::fs::read_to_string(&f) {
                                self.parse_into(&t, depth + 1);
                            }
                        }
                    }
                }
                _ => {
                    if let Some(b) = self.blocks.last_mut() {
                        b.entries.push((k, v));
                    }
                }
            }
        }
    }

    /// Read a file; a missing file is an empty config.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Self::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// `~/.ssh/config` (empty if missing or unreadable).
    pub fn load_default() -> Self {
        dirs::home_dir()
            .map(|h| Self::load(&h.join(".ssh/config")).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Resolve the directives for `host` (the name as given by the user, before HostName).
    pub fn query(&self, host: &str) -> HostConfig {
        let mut hc = HostConfig::default();
        for b in &self.blocks {
            if b.is_match || !block_matches(&b.patterns, host) {
                continue;
            }
            for (k, v) in &b.entries {
                let first = words(v).into_iter().next().unwrap_or_default();
                match k.as_str() {
                    "hostname" => {
                        hc.host_name.get_or_insert_with(|| first.clone());
                    }
                    "user" => {
                        hc.user.get_or_insert(first);
                    }
                    "port" if hc.port.is_none() => {
                        hc.port = first.parse().ok();
                    }
                    "identityfile" => hc.identity_files.push(expand_tilde(&first)),
                    "certificatefile" => hc.certificate_files.push(expand_tilde(&first)),
                    "identitiesonly" => {
                        hc.identities_only.get_or_insert(yes(&first));
                    }
                    "proxyjump" => {
                        hc.proxy_jump.get_or_insert(first);
                    }
                    "userknownhostsfile" if hc.user_known_hosts_files.is_empty() => {
                        hc.user_known_hosts_files =
                            words(v).iter().map(|w| expand_tilde(w)).collect();
                    }
                    "globalknownhostsfile" if hc.global_known_hosts_files.is_empty() => {
                        hc.global_known_hosts_files =
                            words(v).iter().map(|w| expand_tilde(w)).collect();
                    }
                    "stricthostkeychecking" => {
                        hc.strict_host_key_checking.get_or_insert(first);
                    }
                    "connecttimeout" if hc.connect_timeout.is_none() => {
                        hc.connect_timeout = first.parse().ok();
                    }
                    "serveraliveinterval" if hc.server_alive_interval.is_none() => {
                        hc.server_alive_interval = first.parse().ok();
                    }
                    "serveralivecountmax" if hc.server_alive_count_max.is_none() => {
                        hc.server_alive_count_max = first.parse().ok();
                    }
                    _ => {}
                }
            }
        }
        let name = hc.host_name.clone().unwrap_or_else(|| host.to_string());
        hc.host_name = hc.host_name.map(|h| h.replace("%h", host));
        for p in hc
            .identity_files
            .iter_mut()
            .chain(hc.certificate_files.iter_mut())
        {
            let s = p.to_string_lossy().replace("%h", &name);
            *p = PathBuf::from(s);
        }
        hc
    }
}

fn block_matches(patterns: &[String], host: &str) -> bool {
    let mut positive = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob_match(neg, host) {
                return false;
            }
        } else if glob_match(p, host) {
            positive = true;
        }
    }
    positive
}

/// Expand a leading `~/`.
pub fn expand_tilde(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = dirs::home_dir() {
            return h.join(rest);
        }
    } else if p == "~"
        && let Some(h) = dirs::home_dir()
    {
        return h;
    }
    PathBuf::from(p)
}

fn glob_files(p: &Path) -> Vec<PathBuf> {
    let s = p.to_string_lossy();
    if !s.contains('*') && !s.contains('?') {
        return vec![p.to_path_buf()];
    }
    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
        return vec![];
    };
    let name = name.to_string_lossy().to_string();
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_wins_and_patterns() {
        let c = SshConfig::parse(
            "Host bastion\n  HostName 10.0.0.1\n  User jump\n\
             Host *.internal !secret.internal\n  User ops\n  Port 2222\n  IdentityFile ~/.ssh/ops\n  ProxyJump bastion\n\
             Match host foo\n  User nope\n\
             Host *\n  User default\n  IdentityFile=/k/default\n  StrictHostKeyChecking accept-new\n  ServerAliveInterval 15\n",
        );
        let a = c.query("db.internal");
        assert_eq!(a.user.as_deref(), Some("ops"));
        assert_eq!(a.port, Some(2222));
        assert_eq!(a.proxy_jump.as_deref(), Some("bastion"));
        assert_eq!(a.identity_files.len(), 2);
        assert_eq!(a.server_alive_interval, Some(15));
        assert_eq!(a.server_alive_count_max, None);
        let s = c.query("secret.internal");
        assert_eq!(s.user.as_deref(), Some("default"));
        assert_eq!(s.port, None);
        let b = c.query("bastion");
        assert_eq!(b.host_name.as_deref(), Some("10.0.0.1"));
        assert_eq!(b.user.as_deref(), Some("jump"));
    }
}
