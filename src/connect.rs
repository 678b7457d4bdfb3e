//! From a manifest host entry to how the transport reaches it.
//!
//! The one place where the config model meets the transport: `ssh:` (with `bastion:` and
//! `options:`, merged with `~/.ssh/config` the way `ssh` merges command-line options),
//! `openSSH:` and `localhost:` become a [`ConnectSpec`]. The transport knows nothing of
//! k0sctl.yaml, and the config model nothing of sockets.

// TransportError is the transport's error type; these run once per host.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::{self, Host};
use crate::transport::openssh::OpenSshOptions;
use crate::transport::ssh::SshOptions;
use crate::transport::ssh::config::{SshConfig, expand_tilde};
use crate::transport::{ConnectSpec, TransportError, Tuning};

/// How to reach `h`. `base_dir` is where relative key paths are resolved (the manifest's
/// directory). Keepalives: the host's own options win, then `--keepalive-interval` /
/// `--keepalive-count-max` (or their environment variables), then `~/.ssh/config`, then the
/// defaults (every 5 s, 2 unanswered: a dead peer is noticed within about 15 s) — the order
/// in which `ssh` itself weighs `-o` options against its config file.
pub fn spec_for(
    h: &Host,
    base_dir: &Path,
    ssh_config: &SshConfig,
) -> Result<ConnectSpec, TransportError> {
    spec_with(h, base_dir, ssh_config, &crate::transport::tuning())
}

fn spec_with(
    h: &Host,
    base_dir: &Path,
    ssh_config: &SshConfig,
    tuning: &Tuning,
) -> Result<ConnectSpec, TransportError> {
    if let Some(s) = &h.ssh {
        return ssh_options_with(s, base_dir, ssh_config, &config::Mapping::new(), tuning)
            .map(ConnectSpec::Ssh);
    }
    if let Some(o) = &h.open_ssh {
        return Ok(ConnectSpec::OpenSsh(OpenSshOptions {
            address: o.address.clone(),
            user: o.user.clone(),
            port: o.port,
            key_path: o.key_path.as_deref().map(|k| key_path(k, base_dir)),
            config_path: o.config_path.as_deref().map(|k| key_path(k, base_dir)),
            options: o
                .options
                .iter()
                .map(|(k, v)| (k.clone(), option_value(v)))
                .collect(),
            disable_multiplexing: o.disable_multiplexing,
            ssh_binary: None,
            keepalive_interval: tuning.keepalive_interval,
            keepalive_count_max: tuning.keepalive_count_max,
        }));
    }
    if h.localhost.is_some_and(|l| l.enabled) {
        return Ok(ConnectSpec::Localhost);
    }
    if h.win_rm.is_some() {
        return Err(TransportError::Config(format!(
            "{}: winRM connections are not supported by this build; reach Windows workers with ssh: instead",
            h.display_address()
        )));
    }
    Err(TransportError::Config(format!(
        "{}: no connection configured",
        h.display_address()
    )))
}

/// `inherited`: the options of the host this one is the bastion of. A bastion without options
/// of its own uses its host's (so a per-cluster `UserKnownHostsFile` also covers the bastion's
/// key instead of `~/.ssh/known_hosts`); options it sets itself win.
fn ssh_options_with(
    s: &config::Ssh,
    base_dir: &Path,
    cfg: &SshConfig,
    inherited: &config::Mapping,
    tuning: &Tuning,
) -> Result<SshOptions, TransportError> {
    // The manifest's port is 22 unless written otherwise; let ~/.ssh/config's Port apply then,
    // as `ssh` would.
    let port = (s.port != 22).then_some(s.port);
    let key = s.key_path.as_deref().map(|k| key_path(k, base_dir));
    let mut o = SshOptions::resolve(&s.address, port, Some(&s.user), key, cfg)?;
    apply_keepalive(&mut o, tuning);
    let own = if s.options.is_empty() {
        inherited
    } else {
        &s.options
    };
    for (k, v) in own {
        o.set_option(k, &option_value(v))?;
    }
    if let Some(b) = &s.bastion {
        o.bastion = Some(Box::new(ssh_options_with(b, base_dir, cfg, own, tuning)?));
    }
    Ok(o)
}

/// The run's keepalive flags over what `~/.ssh/config` gave, down a ProxyJump chain too.
fn apply_keepalive(o: &mut SshOptions, tuning: &Tuning) {
    if let Some(i) = tuning.keepalive_interval {
        o.keepalive_interval = (!i.is_zero()).then_some(i);
    }
    if let Some(n) = tuning.keepalive_count_max {
        o.keepalive_max = n;
    }
    if let Some(b) = o.bastion.as_deref_mut() {
        apply_keepalive(b, tuning);
    }
}

/// `~` expanded; relative paths against the manifest's directory.
fn key_path(p: &str, base_dir: &Path) -> PathBuf {
    let p = expand_tilde(p);
    if p.is_absolute() { p } else { base_dir.join(p) }
}

/// ssh_config values: booleans become yes/no, as OpenSSH expects.
fn option_value(v: &Value) -> String {
    match v {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(yaml: &str) -> Host {
        let text = format!(
            "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: single\n{yaml}"
        );
        config::load_str(&text, "t.yaml", &|_| None)
            .unwrap()
            .cluster
            .spec
            .hosts
            .remove(0)
    }

    #[test]
    fn ssh_with_bastion_options_and_relative_key() {
        let h = host(
            "    ssh:\n      address: 10.0.0.1\n      user: admin\n      keyPath: keys/id\n      options:\n        StrictHostKeyChecking: false\n        ConnectTimeout: 3\n      bastion:\n        address: 10.0.0.254\n        port: 2222\n",
        );
        let ConnectSpec::Ssh(o) =
            spec_for(&h, Path::new("/etc/k0sctl"), &SshConfig::parse("")).unwrap()
        else {
            panic!("ssh expected")
        };
        assert_eq!(
            (o.address.as_str(), o.port, o.user.as_str()),
            ("10.0.0.1", 22, "admin")
        );
        assert_eq!(o.key_paths, [PathBuf::from("/etc/k0sctl/keys/id")]);
        assert_eq!(o.connect_timeout, std::time::Duration::from_secs(3));
        let b = o.bastion.unwrap();
        // The bastion sets no options of its own: it inherits the host's.
        assert_eq!(b.connect_timeout, std::time::Duration::from_secs(3));
        assert_eq!(
            (b.address.as_str(), b.port, b.user.as_str()),
            ("10.0.0.254", 2222, "root")
        );
    }

    #[test]
    fn ssh_config_fills_what_the_manifest_leaves_open() {
        let cfg = SshConfig::parse(
            "Host 10.0.0.*\n  Port 2200\n  IdentityFile /keys/from-config\n  ProxyJump jump@bastion:22\n",
        );
        let h = host("    ssh:\n      address: 10.0.0.7\n");
        let ConnectSpec::Ssh(o) = spec_for(&h, Path::new("/"), &cfg).unwrap() else {
            panic!()
        };
        assert_eq!(o.port, 2200);
        assert_eq!(o.key_paths, [PathBuf::from("/keys/from-config")]);
        assert_eq!(o.bastion.unwrap().user, "jump");
    }

    #[test]
    fn openssh_localhost_winrm() {
        let h =
            host("    openSSH:\n      address: ctrl\n      options:\n        ForwardAgent: true\n");
        let ConnectSpec::OpenSsh(o) = spec_for(&h, Path::new("/"), &SshConfig::parse("")).unwrap()
        else {
            panic!()
        };
        assert_eq!(o.options, [("ForwardAgent".to_string(), "yes".to_string())]);
        let h = host("    localhost: true\n");
        assert!(matches!(
            spec_for(&h, Path::new("/"), &SshConfig::parse("")).unwrap(),
            ConnectSpec::Localhost
        ));
        // Validation refuses winRM hosts; a host built in code still gets a clear error here.
        let mut h = host("    localhost: true\n");
        h.localhost = None;
        h.win_rm = Some(config::WinRm {
            address: "w".into(),
            ..Default::default()
        });
        let e = spec_for(&h, Path::new("/"), &SshConfig::parse("")).unwrap_err();
        assert!(
            e.to_string()
                .contains("winRM connections are not supported")
        );
    }

    /// Keepalive precedence for the native transport: the host's options, then the flags,
    /// then `~/.ssh/config`, then the defaults; the flags reach a ProxyJump bastion too.
    #[test]
    fn keepalive_precedence_native() {
        use std::time::Duration;
        let secs = Duration::from_secs;
        let plain = host("    ssh:\n      address: 10.0.0.1\n");
        let with_opt = host(
            "    ssh:\n      address: 10.0.0.1\n      options:\n        ServerAliveInterval: 3\n",
        );
        let none = SshConfig::parse("");
        let cfg = SshConfig::parse(
            "Host 10.0.0.1\n  ServerAliveInterval 15\n  ServerAliveCountMax 4\n  ProxyJump jump\n",
        );
        let flags = Tuning {
            keepalive_interval: Some(secs(9)),
            keepalive_count_max: Some(1),
            ..Tuning::default()
        };
        let off = Tuning {
            keepalive_interval: Some(Duration::ZERO),
            ..Tuning::default()
        };
        let ka = |h: &Host, c: &SshConfig, t: &Tuning| {
            let ConnectSpec::Ssh(o) = spec_with(h, Path::new("/"), c, t).unwrap() else {
                panic!("ssh expected")
            };
            let b = o
                .bastion
                .as_ref()
                .map(|b| (b.keepalive_interval, b.keepalive_max));
            (o.keepalive_interval, o.keepalive_max, b)
        };
        let d = Tuning::default();
        assert_eq!(ka(&plain, &none, &d), (Some(secs(5)), 2, None));
        assert_eq!(
            ka(&plain, &cfg, &d),
            (Some(secs(15)), 4, Some((Some(secs(5)), 2)))
        );
        assert_eq!(
            ka(&plain, &cfg, &flags),
            (Some(secs(9)), 1, Some((Some(secs(9)), 1)))
        );
        assert_eq!(
            ka(&with_opt, &cfg, &flags),
            (Some(secs(3)), 1, Some((Some(secs(9)), 1)))
        );
        assert_eq!(ka(&plain, &none, &off), (None, 2, None));
    }
}
