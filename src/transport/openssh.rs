//! OpenSSH transport (`openSSH:` in k0sctl.yaml): runs the system `ssh` binary, so everything in
//! the user's `~/.ssh/config` works (ProxyCommand, Match, Include, ...). With multiplexing (the
//! default) one ControlMaster per host is started on connect (`ControlPersist`) in a private
//! 0700 directory and every command reuses it; `close` sends `ssh -O exit`.

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
}

/// A host reached through the system `ssh`.
pub struct OpenSshConnection {
    opts: OpenSshOptions,
    name: String,
    control_dir: Option<tempfile_dir::Dir>,
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
        let c = OpenSshConnection {
            opts: opts.clone(),
            name,
            control_dir,
        };
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

    fn base_command(&self) -> tokio::process::Command {
        self.command_with(&[])
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
        for (k, v) in &self.opts.options {
            c.arg("-o").arg(format!("{k}={v}"));
        }
        c.args(extra);
        c.arg("--").arg(&self.opts.address);
        c
    }
}

impl Transport for OpenSshConnection {
    async fn exec(&self, req: ExecRequest) -> Result<super::Output, TransportError> {
        let mut c = self.base_command();
        c.arg(&req.command);
        let doing = super::error::doing(&req.display);
        let out = super::local::run_child(&self.name, c, req).await?;
        if out.status.code() == Some(255) && out.stderr_str().contains("ssh:") {
            // 255 is ssh's own failure (or the remote command's 255: then no "ssh:" message).
            return Err(TransportError::Disconnected {
                host: self.name.clone(),
                reason: format!("{}{doing}", out.stderr_str()),
            });
        }
        Ok(out)
    }
    fn name(&self) -> &str {
        &self.name
    }
    async fn close(&self) {
        if self.control_dir.is_some() {
            let mut c = self.base_command();
            // `-O exit` must come before the destination: rebuild with the control flags.
            let std = c.as_std_mut();
            let args: Vec<_> = std.get_args().map(|a| a.to_owned()).collect();
            let mut e = tokio::process::Command::new(std.get_program());
            e.arg("-O").arg("exit");
            e.args(args);
            e.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let _ = e.status().await;
        }
    }
}
