//! OpenSSH transport (`openSSH:` in k0sctl.yaml): runs the system `ssh` binary, so everything in
//! the user's `~/.ssh/config` works (ProxyCommand, Match, Include, ...). With multiplexing (the
//! default) one ControlMaster per host is started on connect (`ControlPersist`) in a private
//! 0700 directory and every command reuses it; `close` sends `ssh -O exit`.
//!
//! Keepalives as with the native transport: `ServerAliveInterval=5`, `ServerAliveCountMax=2`
//! (a dead peer is noticed within about 15 s), each unless the host's `options` set it; the
//! run's `--keepalive-interval` / `--keepalive-count-max` next; else a value the user's ssh
//! config gives (as `ssh -G` resolves it) is left alone. Commands are tied to their session
//! the same way too (see [`super::session_bound`]).

use std::path::PathBuf;
use std::time::Duration;

use super::{ExecRequest, Transport, TransportError};

/// Options of the OpenSSH transport (k0sctl.yaml `openSSH:` block).
#[derive(Debug, Clone, Default)]
pub struct OpenSshOptions {
    /// IP, host name or `~/.ssh/config` Host alias.
    pub address: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key_path: Option<PathBuf>,
    /// `-F` config file (default: ssh's own: ~/.ssh/config then /etc/ssh/ssh_config).
    pub config_path: Option<PathBuf>,
    /// Extra `-o Key=Value` options.
    pub options: Vec<(String, String)>,
    pub disable_multiplexing: bool,
    /// The `ssh` binary (default `ssh` from PATH).
    pub ssh_binary: Option<PathBuf>,
    /// The run's `--keepalive-interval` (zero: none) and `--keepalive-count-max`: over the
    /// user's ssh config, under the host's `options` (see [`keepalive_options`]).
    pub keepalive_interval: Option<Duration>,
    pub keepalive_count_max: Option<u32>,
}

/// ssh's own defaults, which `ssh -G` prints when nothing sets a value.
const SSH_DEFAULT_INTERVAL: &str = "0";
const SSH_DEFAULT_COUNT_MAX: &str = "3";

/// The keepalive `-o` options to add to every `ssh` command: for each of ServerAliveInterval
/// and ServerAliveCountMax, nothing when the host's `options` set it (theirs come first and
/// ssh takes the first value); else the run's flag value when given; else nothing when the
/// user's ssh config sets it (`resolved`: the output of `ssh -G`, where a value other than
/// ssh's default means the config set it; an explicit `ServerAliveInterval 0` there cannot be
/// told apart: disable keepalives with the host's options or `--keepalive-interval 0`); else
/// our default (every 5 s, 2 unanswered).
pub fn keepalive_options(
    options: &[(String, String)],
    interval: Option<Duration>,
    count_max: Option<u32>,
    resolved: Option<&str>,
) -> Vec<(String, String)> {
    let user_sets = |key: &str| options.iter().any(|(k, _)| k.eq_ignore_ascii_case(key));
    let config_sets = |key: &str, default: &str| {
        resolved.is_some_and(|out| {
            out.lines().any(|l| {
                let mut w = l.split_whitespace();
                w.next().is_some_and(|k| k.eq_ignore_ascii_case(key))
                    && w.next().is_some_and(|v| v != default)
            })
        })
    };
    let mut out = Vec::new();
    let interval = interval.map(|d| d.as_secs().to_string());
    let count_max = count_max.map(|n| n.to_string());
    let defaults = [
        (
            "ServerAliveInterval",
            interval,
            SSH_DEFAULT_INTERVAL,
            crate::transport::ssh::DEFAULT_KEEPALIVE
                .as_secs()
                .to_string(),
        ),
        (
            "ServerAliveCountMax",
            count_max,
            SSH_DEFAULT_COUNT_MAX,
            crate::transport::ssh::DEFAULT_KEEPALIVE_MAX.to_string(),
        ),
    ];
    for (key, flag, ssh_default, ours) in defaults {
        if user_sets(key) {
            continue;
        }
        match flag {
            Some(v) => out.push((key.to_string(), v)),
            None if config_sets(key, ssh_default) => {}
            None => out.push((key.to_string(), ours)),
        }
    }
    out
}

/// A host reached through the system `ssh`.
pub struct OpenSshConnection {
    opts: OpenSshOptions,
    name: String,
    control_dir: Option<tempfile_dir::Dir>,
    /// `-o` keepalive options added to every command ([`keepalive_options`]).
    keepalive: Vec<(String, String)>,
}

mod tempfile_dir {
    /// A private directory for the ControlPath socket, removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> std::io::Result<Self> {
            use std::os::unix::fs::DirBuilderExt;
            let base = std::env::temp_dir().join(format!(
                "k0sctl-ssh-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::DirBuilder::new().mode(0o700).create(&base)?;
            Ok(Dir(base))
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl OpenSshConnection {
    /// Start the control master (or just check connectivity without multiplexing).
    pub async fn connect(opts: &OpenSshOptions) -> Result<Self, TransportError> {
        let name = format!(
            "{}{}{}",
            opts.user
                .as_ref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            opts.address,
            opts.port.map(|p| format!(":{p}")).unwrap_or_default()
        );
        let control_dir = if opts.disable_multiplexing {
            None
        } else {
            Some(
                tempfile_dir::Dir::new()
                    .map_err(|e| TransportError::io(&name, "create ControlPath directory", e))?,
            )
        };
        let mut c = OpenSshConnection {
            opts: opts.clone(),
            name,
            control_dir,
            keepalive: vec![],
        };
        c.keepalive = keepalive_options(
            &opts.options,
            opts.keepalive_interval,
            opts.keepalive_count_max,
            c.resolved_config().await.as_deref(),
        );
        let mut cmd = c.base_command();
        cmd.arg("true");
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .map_err(|_| TransportError::ConnectTimeout {
                host: c.name.clone(),
                addr: c.opts.address.clone(),
                after: Duration::from_secs(120),
            })?
            .map_err(|e| TransportError::io(&c.name, "run ssh", e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let transient = stderr.contains("Connection refused")
                || stderr.contains("timed out")
                || stderr.contains("Connection reset");
            return Err(TransportError::Connect {
                host: c.name.clone(),
                addr: c.opts.address.clone(),
                reason: format!("ssh exited with {}: {stderr}", out.status),
                transient,
            });
        }
        Ok(c)
    }

    /// What `ssh -G` resolves for this host (the user's config, without connecting), when a
    /// keepalive setting is left to it; `None` when not needed or when `ssh -G` fails.
    async fn resolved_config(&self) -> Option<String> {
        let decided = |k: &str, flag: bool| {
            flag || self
                .opts
                .options
                .iter()
                .any(|(o, _)| o.eq_ignore_ascii_case(k))
        };
        if decided(
            "ServerAliveInterval",
            self.opts.keepalive_interval.is_some(),
        ) && decided(
            "ServerAliveCountMax",
            self.opts.keepalive_count_max.is_some(),
        ) {
            return None;
        }
        let mut cmd = self.command_with(&["-G".to_string()]);
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .ok()?
            .ok()?;
        if !out.status.success() {
            tracing::debug!(host = %self.name, "ssh -G failed ({}); keepalive defaults apply", out.status);
            return None;
        }
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn base_command(&self) -> tokio::process::Command {
        self.command_with(&[])
    }

    /// `ssh -O <op> …` for the ControlMaster (`-O` must come before the destination).
    fn control_command(&self, op: &str) -> tokio::process::Command {
        let mut c = self.base_command();
        let std = c.as_std_mut();
        let args: Vec<_> = std.get_args().map(|a| a.to_owned()).collect();
        let mut e = tokio::process::Command::new(std.get_program());
        e.arg("-O").arg(op);
        e.args(args);
        e.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        e
    }

    /// Whether the ControlMaster still runs (`ssh -O check`).
    async fn master_alive(&self) -> bool {
        let check = self.control_command("check").status();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), check).await,
            Ok(Ok(st)) if st.success()
        )
    }

    /// `ssh -W host:port …`: the child's stdin/stdout are a TCP connection the host makes to
    /// `host:port` (through the ControlMaster when multiplexing), for [`super::tunnel`].
    pub(crate) fn stdio_forward_command(&self, host: &str, port: u16) -> tokio::process::Command {
        let target = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        self.command_with(&["-W".to_string(), target])
    }

    /// `ssh … <command>`: the child's stdin/stdout are the remote command's, for
    /// [`super::tunnel::open_exec`].
    pub(crate) fn exec_stream_command(&self, command: &str) -> tokio::process::Command {
        let mut c = self.base_command();
        c.arg(command);
        c
    }

    /// The ssh command line up to the destination, with `extra` arguments before `--`.
    fn command_with(&self, extra: &[String]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(
            self.opts
                .ssh_binary
                .clone()
                .unwrap_or_else(|| PathBuf::from("ssh")),
        );
        c.arg("-T").arg("-o").arg("BatchMode=yes");
        if let Some(f) = &self.opts.config_path {
            c.arg("-F").arg(f);
        }
        if let Some(u) = &self.opts.user {
            c.arg("-l").arg(u);
        }
        if let Some(p) = self.opts.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(k) = &self.opts.key_path {
            c.arg("-i").arg(k);
        }
        if let Some(d) = &self.control_dir {
            c.arg("-o").arg("ControlMaster=auto");
            c.arg("-o").arg(format!("ControlPath={}/%C", d.0.display()));
            c.arg("-o").arg("ControlPersist=300");
        }
        // The host's options first: ssh takes the first value given for an option.
        for (k, v) in self.opts.options.iter().chain(&self.keepalive) {
            c.arg("-o").arg(format!("{k}={v}"));
        }
        c.args(extra);
        c.arg("--").arg(&self.opts.address);
        c
    }
}

/// Whether `stderr` of an `ssh` that exited 255 is ssh's own failure: its `ssh:` messages, a
/// peer that stopped answering keepalives ("Timeout, server … not responding."), a connection
/// closed or broken under it.
fn ssh_failed(stderr: &str) -> bool {
    stderr.contains("ssh:")
        || stderr.contains("not responding")
        || stderr.contains("closed by remote host")
        || stderr.contains("client_loop:")
        || stderr.contains("mux_client")
}

impl Transport for OpenSshConnection {
    async fn exec(&self, req: ExecRequest) -> Result<super::Output, TransportError> {
        let mut c = self.base_command();
        c.arg(&req.command);
        let doing = super::error::doing(&req.display);
        let out = super::local::run_child(&self.name, c, req).await?;
        if out.status.code() == Some(255) {
            // 255 is ssh's own failure, or the remote command's 255: then none of ssh's
            // messages, and a ControlMaster still up (a client whose master died, e.g. of
            // unanswered keepalives, exits 255 without a word: the master had the message).
            let stderr = out.stderr_str();
            let reason = if ssh_failed(&stderr) {
                Some(stderr)
            } else if self.control_dir.is_some() && !self.master_alive().await {
                Some("the shared SSH connection (ControlMaster) is gone: the host stopped answering keepalives or closed it".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(TransportError::Disconnected {
                    host: self.name.clone(),
                    reason: format!("{reason}{doing}"),
                });
            }
        }
        Ok(out)
    }
    fn name(&self) -> &str {
        &self.name
    }
    async fn close(&self) {
        if self.control_dir.is_some() {
            let _ = self.control_command("exit").status().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const UNSET: &str = "user root\nserveraliveinterval 0\nserveralivecountmax 3\n";
    const CONFIG_SETS: &str = "serveraliveinterval 30\nserveralivecountmax 6\n";

    #[test]
    fn defaults_when_nothing_sets_keepalives() {
        let want = opts(&[("ServerAliveInterval", "5"), ("ServerAliveCountMax", "2")]);
        assert_eq!(keepalive_options(&[], None, None, Some(UNSET)), want);
        // `ssh -G` failed: the defaults still apply.
        assert_eq!(keepalive_options(&[], None, None, None), want);
    }

    #[test]
    fn the_users_ssh_config_is_left_alone() {
        assert_eq!(keepalive_options(&[], None, None, Some(CONFIG_SETS)), []);
        // Only the interval set there: our count still applies.
        assert_eq!(
            keepalive_options(
                &[],
                None,
                None,
                Some("serveraliveinterval 30\nserveralivecountmax 3")
            ),
            opts(&[("ServerAliveCountMax", "2")])
        );
    }

    #[test]
    fn flags_beat_the_config_and_the_hosts_options_beat_the_flags() {
        let ten = Some(Duration::from_secs(10));
        assert_eq!(
            keepalive_options(&[], ten, Some(1), Some(CONFIG_SETS)),
            opts(&[("ServerAliveInterval", "10"), ("ServerAliveCountMax", "1")])
        );
        let host = opts(&[("serveraliveinterval", "60")]);
        assert_eq!(
            keepalive_options(&host, ten, None, Some(UNSET)),
            opts(&[("ServerAliveCountMax", "2")])
        );
        // Zero disables, as in ssh.
        assert_eq!(
            keepalive_options(&[], Some(Duration::ZERO), None, Some(CONFIG_SETS)),
            opts(&[("ServerAliveInterval", "0")])
        );
    }

    #[test]
    fn commands_carry_the_keepalive_options_after_the_hosts() {
        let o = OpenSshOptions {
            address: "h".into(),
            config_path: Some("/dev/null".into()),
            options: opts(&[("ServerAliveCountMax", "9")]),
            disable_multiplexing: true,
            ..Default::default()
        };
        let c = OpenSshConnection {
            keepalive: keepalive_options(&o.options, None, None, None),
            opts: o,
            name: "h".into(),
            control_dir: None,
        };
        let args: Vec<String> = c
            .base_command()
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-o ServerAliveCountMax=9 -o ServerAliveInterval=5 -- h"),
            "{joined}"
        );
        assert!(!joined.contains("ServerAliveCountMax=2"), "{joined}");
    }
}
