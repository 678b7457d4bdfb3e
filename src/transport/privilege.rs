//! Privilege wrappers: how a command gets root on a host.
//!
//! Detected once per host in one round trip ([`Privilege::detect`]): already root, `sudo -n`,
//! `doas -n`, or sudo with a password. The password is given once (prompt, environment or file,
//! see [`crate::transport::Secret`]) and is fed on the command's stdin (`sudo -k -S -p ''`),
//! followed by the command's own stdin: it never appears in argv, logs or errors. `-k` makes
//! sudo ignore cached credentials so it always consumes the password line; password mode is
//! only chosen when `sudo -n true` fails, so sudo always reads that line.

use super::{Connection, ExecRequest, Secret, Stdin, Transport, TransportError, shell_quote};

/// How to run a command as root on a host.
#[derive(Clone, Debug, Default)]
pub enum Privilege {
    /// Not detected yet: running with sudo fails.
    #[default]
    Unknown,
    /// Connected as root: commands run as they are.
    Root,
    /// `sudo -n` works (NOPASSWD).
    SudoNoPassword,
    /// `doas -n` works (nopass).
    Doas,
    /// sudo requires this password, fed on stdin.
    SudoPassword(Secret),
    /// No way to become root was found (commands needing root fail with an explanation).
    None,
}

impl Privilege {
    /// Wrap `cmd` to run as root. Returns the command line and the stdin prefix (the password).
    pub fn wrap(&self, cmd: &str, host: &str) -> Result<(String, Option<Secret>), TransportError> {
        let q = shell_quote(cmd);
        match self {
            Privilege::Root => Ok((cmd.to_string(), None)),
            Privilege::SudoNoPassword => Ok((format!("sudo -n -- sh -c {q}"), None)),
            Privilege::Doas => Ok((format!("doas -n -- sh -c {q}"), None)),
            Privilege::SudoPassword(p) => {
                Ok((format!("sudo -k -S -p '' -- sh -c {q}"), Some(p.clone())))
            }
            Privilege::Unknown => Err(TransportError::Privilege {
                host: host.to_string(),
                what: "privilege escalation was not detected for this host before running a \
                       command as root (internal error: call detect_privilege first)"
                    .into(),
            }),
            Privilege::None => Err(TransportError::Privilege {
                host: host.to_string(),
                what: "this command needs root, but the user is not root and neither \
                       passwordless `sudo -n` nor `doas -n` works. Connect as root, allow \
                       passwordless sudo for the user, or give the sudo password \
                       (K0SCTL_SUDO_PASSWORD or the password prompt)."
                    .into(),
            }),
        }
    }

    /// True when commands can be run as root.
    pub fn can_escalate(&self) -> bool {
        !matches!(self, Privilege::Unknown | Privilege::None)
    }

    /// Shell snippet printing one word: `root`, `sudo-n`, `doas`, `has-sudo` (sudo needs a
    /// password) or `none`. Exposed so other one-round-trip scripts (host facts) can embed it.
    /// It runs in a subshell, so it can be embedded in a larger script; one that has read the
    /// effective uid already passes it in `$K0SCTL_UID` (saving the host an `id` process).
    pub const DETECT_SCRIPT: &str = r#"(if [ "${K0SCTL_UID:-$(id -u)}" = 0 ]; then echo root; exit 0; fi
if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then echo sudo-n; exit 0; fi
if command -v doas >/dev/null 2>&1 && doas -n true >/dev/null 2>&1; then echo doas; exit 0; fi
if command -v sudo >/dev/null 2>&1; then echo has-sudo; exit 0; fi
echo none)"#;

    /// Detect the privilege method in one round trip (two when a sudo password must be checked).
    pub async fn detect(
        conn: &Connection,
        password: Option<Secret>,
    ) -> Result<Privilege, TransportError> {
        let out = conn
            .exec(ExecRequest {
                command: Self::DETECT_SCRIPT.to_string(),
                display: "(privilege detection)".into(),
                stdin_prefix: None,
                stdin: Stdin::Null,
                timeout: Some(std::time::Duration::from_secs(60)),
                on_output: None,
                discard_stdout: false,
            })
            .await?;
        Self::from_detection(conn, &out.stdout_str(), password).await
    }

    /// Interpret the output of [`Privilege::DETECT_SCRIPT`]; with `has-sudo` and a password,
    /// check the password with one more round trip.
    pub async fn from_detection(
        conn: &Connection,
        word: &str,
        password: Option<Secret>,
    ) -> Result<Privilege, TransportError> {
        match word.trim() {
            "root" => return Ok(Privilege::Root),
            "sudo-n" => return Ok(Privilege::SudoNoPassword),
            "doas" => return Ok(Privilege::Doas),
            _ => {}
        }
        if word.trim() == "has-sudo"
            && let Some(pw) = password
        {
            let p = Privilege::SudoPassword(pw);
            let (command, stdin_prefix) = p.wrap("true", conn.name())?;
            let out = conn
                .exec(ExecRequest {
                    command,
                    display: "sudo -S true (password check)".into(),
                    stdin_prefix,
                    stdin: Stdin::Null,
                    timeout: Some(std::time::Duration::from_secs(60)),
                    on_output: None,
                    discard_stdout: false,
                })
                .await?;
            if out.success() {
                return Ok(p);
            }
            let stderr = out.stderr_str();
            let last = stderr.lines().last().unwrap_or("no message").to_string();
            let what = if stderr.contains("tty") {
                format!(
                    "sudo insists on a terminal ({last}); remove `Defaults requiretty` for this \
                     user in sudoers, or allow passwordless sudo"
                )
            } else {
                format!(
                    "sudo rejected the given password ({last}); check the sudo password for this user"
                )
            };
            return Err(TransportError::Privilege {
                host: conn.name().to_string(),
                what,
            });
        }
        Ok(Privilege::None)
    }
}

/// Environment variable holding the sudo password (for CI).
pub const SUDO_PASSWORD_ENV: &str = "K0SCTL_SUDO_PASSWORD";

/// The sudo password, given once for the whole run: `$K0SCTL_SUDO_PASSWORD`, else the first
/// line of `file` (which should be 0600: a group/world-readable file is refused), else — when
/// `prompt` is true and there is a terminal — asked once on the TTY. `Ok(None)` when none.
pub fn sudo_password(
    file: Option<&std::path::Path>,
    prompt: bool,
) -> Result<Option<Secret>, String> {
    if let Some(s) = Secret::from_env(SUDO_PASSWORD_ENV) {
        return Ok(Some(s));
    }
    if let Some(f) = file {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{}: the sudo password file must not be readable by group or others (chmod 600 it)",
                f.display()
            ));
        }
        return Secret::from_file(f)
            .map(Some)
            .map_err(|e| format!("{}: {e}", f.display()));
    }
    if prompt {
        return Ok(super::ssh::auth::prompt_tty(
            "sudo password for the hosts: ",
        ));
    }
    Ok(None)
}
