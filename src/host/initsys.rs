//! Init systems: systemd and OpenRC. Everything k0sctl knows about them lives here, so phases
//! never format init-system paths or commands themselves: where a service is defined (systemd
//! unit `/etc/systemd/system/<svc>.service`, OpenRC script `/etc/init.d/<svc>`, both written by
//! `k0s install`), whether it is installed, start/stop/restart/status, waiting for a state,
//! making the service manager reread changed definitions (systemd `daemon-reload`; OpenRC reads
//! its scripts at every start and needs nothing), and the service environment (systemd drop-in
//! `/etc/systemd/system/<svc>.service.d/env.conf` with `Environment=` lines plus
//! `daemon-reload`; OpenRC `/etc/conf.d/<svc>` with `export K=V`). Commands run through the
//! privilege wrapper.

use std::time::{Duration, Instant};

use crate::transport::{Cmd, Remote, TransportError, shell_quote};

/// A supported init system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitSystem {
    Systemd,
    OpenRc,
}

impl InitSystem {
    /// Every supported init system.
    pub const ALL: [InitSystem; 2] = [InitSystem::Systemd, InitSystem::OpenRc];

    /// From the facts script's `init` line.
    pub fn from_fact(s: &str) -> Option<Self> {
        match s.trim() {
            "systemd" => Some(InitSystem::Systemd),
            "openrc" => Some(InitSystem::OpenRc),
            _ => None,
        }
    }

    fn verb(&self, verb: &str, svc: &str) -> String {
        let s = shell_quote(svc);
        match self {
            InitSystem::Systemd => format!("systemctl {verb} {s}"),
            InitSystem::OpenRc => format!("rc-service {s} {verb}"),
        }
    }
    pub fn start_cmd(&self, svc: &str) -> String {
        self.verb("start", svc)
    }
    pub fn stop_cmd(&self, svc: &str) -> String {
        self.verb("stop", svc)
    }
    pub fn restart_cmd(&self, svc: &str) -> String {
        self.verb("restart", svc)
    }
    /// Exit 0 when running.
    pub fn is_running_cmd(&self, svc: &str) -> String {
        let s = shell_quote(svc);
        match self {
            InitSystem::Systemd => format!("systemctl is-active --quiet {s}"),
            InitSystem::OpenRc => format!("rc-service {s} status >/dev/null 2>&1"),
        }
    }
    /// Where the service is defined (what `k0s install` writes and `k0s reset` removes).
    pub fn service_path(&self, svc: &str) -> String {
        match self {
            InitSystem::Systemd => format!("/etc/systemd/system/{svc}.service"),
            InitSystem::OpenRc => format!("/etc/init.d/{svc}"),
        }
    }
    /// Exit 0 when the service is installed (its definition exists).
    pub fn is_installed_cmd(&self, svc: &str) -> String {
        format!("[ -e {} ]", shell_quote(&self.service_path(svc)))
    }
    /// A shell test that succeeds when `svc_word` is installed for any supported init system,
    /// for probe scripts that look before the init system matters. `svc_word` is pasted into
    /// the script as it is (a service name, or a variable such as `$s`).
    pub fn installed_anywhere_test(svc_word: &str) -> String {
        Self::ALL
            .iter()
            .map(|i| format!("[ -e {} ]", i.service_path(svc_word)))
            .collect::<Vec<_>>()
            .join(" || ")
    }
    /// The command that makes the service manager reread changed service definitions, when
    /// this init system needs one (systemd: `daemon-reload`; OpenRC reads its scripts at every
    /// start).
    pub fn reload_cmd(&self) -> Option<&'static str> {
        match self {
            InitSystem::Systemd => Some("systemctl daemon-reload"),
            InitSystem::OpenRc => None,
        }
    }
    /// Where the service environment lives.
    pub fn env_file(&self, svc: &str) -> String {
        match self {
            InitSystem::Systemd => format!("/etc/systemd/system/{svc}.service.d/env.conf"),
            InitSystem::OpenRc => format!("/etc/conf.d/{svc}"),
        }
    }
    /// The directory of [`InitSystem::env_file`] that exists only for it (systemd's drop-in
    /// directory, removed when empty); `None` where the file sits in a shared directory.
    pub fn env_dir(&self, svc: &str) -> Option<String> {
        match self {
            InitSystem::Systemd => Some(format!("/etc/systemd/system/{svc}.service.d")),
            InitSystem::OpenRc => None,
        }
    }
    /// Removes the service environment and rereads the service definitions (one command).
    pub fn remove_env_cmd(&self, svc: &str) -> String {
        let mut cmd = format!("rm -f {}", shell_quote(&self.env_file(svc)));
        if let Some(reload) = self.reload_cmd() {
            cmd.push_str(" && ");
            cmd.push_str(reload);
        }
        cmd
    }
    /// Content of [`InitSystem::env_file`] for `env`.
    pub fn env_content(&self, env: &[(String, String)]) -> String {
        let mut out = String::new();
        match self {
            InitSystem::Systemd => {
                out.push_str("[Service]\n");
                for (k, v) in env {
                    let kv = format!("{k}={v}")
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"");
                    out.push_str(&format!("Environment=\"{kv}\"\n"));
                }
            }
            InitSystem::OpenRc => {
                for (k, v) in env {
                    out.push_str(&format!("export {k}={}\n", shell_quote(v)));
                }
            }
        }
        out
    }

    pub async fn start(&self, r: &Remote, svc: &str) -> Result<(), TransportError> {
        r.run(Cmd::new(self.start_cmd(svc)).sudo()).await.map(drop)
    }
    pub async fn stop(&self, r: &Remote, svc: &str) -> Result<(), TransportError> {
        r.run(Cmd::new(self.stop_cmd(svc)).sudo()).await.map(drop)
    }
    pub async fn restart(&self, r: &Remote, svc: &str) -> Result<(), TransportError> {
        r.run(Cmd::new(self.restart_cmd(svc)).sudo())
            .await
            .map(drop)
    }
    pub async fn is_running(&self, r: &Remote, svc: &str) -> Result<bool, TransportError> {
        Ok(r.exec(Cmd::new(self.is_running_cmd(svc)).sudo())
            .await?
            .success())
    }

    pub async fn is_installed(&self, r: &Remote, svc: &str) -> Result<bool, TransportError> {
        Ok(r.exec(Cmd::new(self.is_installed_cmd(svc)).sudo())
            .await?
            .success())
    }
    /// Rereads changed service definitions ([`InitSystem::reload_cmd`]); false when this init
    /// system needs nothing.
    pub async fn reload(&self, r: &Remote) -> Result<bool, TransportError> {
        match self.reload_cmd() {
            Some(cmd) => r.run(Cmd::new(cmd).sudo()).await.map(|_| true),
            None => Ok(false),
        }
    }
    /// Removes the service environment ([`InitSystem::remove_env_cmd`]).
    pub async fn remove_env(&self, r: &Remote, svc: &str) -> Result<(), TransportError> {
        r.run(Cmd::new(self.remove_env_cmd(svc)).sudo())
            .await
            .map(drop)
    }

    /// Poll until the service is (not) running: 100 ms doubling to 1 s, up to `timeout`.
    pub async fn wait_state(
        &self,
        r: &Remote,
        svc: &str,
        running: bool,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            if self.is_running(r, svc).await? == running {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TransportError::Timeout {
                    host: r.name().to_string(),
                    cmd: format!(
                        "waiting for service {svc} to {}",
                        if running { "start" } else { "stop" }
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Write the service environment (atomically, 0644) and reload systemd.
    pub async fn set_env(
        &self,
        r: &Remote,
        svc: &str,
        env: &[(String, String)],
    ) -> Result<(), TransportError> {
        let path = self.env_file(svc);
        if let Some(dir) = std::path::Path::new(&path).parent() {
            r.run(Cmd::new(format!("mkdir -p {}", shell_quote(&dir.to_string_lossy()))).sudo())
                .await?;
        }
        r.write_file(&path, self.env_content(env), 0o644, true)
            .await?;
        self.reload(r).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_env() {
        let s = InitSystem::Systemd;
        assert_eq!(
            s.start_cmd("k0scontroller"),
            "systemctl start k0scontroller"
        );
        assert_eq!(
            s.env_file("k0sworker"),
            "/etc/systemd/system/k0sworker.service.d/env.conf"
        );
        assert_eq!(
            s.env_content(&[("HTTP_PROXY".into(), "http://p:3128".into())]),
            "[Service]\nEnvironment=\"HTTP_PROXY=http://p:3128\"\n"
        );
        let o = InitSystem::OpenRc;
        assert_eq!(o.restart_cmd("k0sworker"), "rc-service k0sworker restart");
        assert_eq!(o.env_file("k0sworker"), "/etc/conf.d/k0sworker");
        assert_eq!(
            o.env_content(&[("A".into(), "b c".into())]),
            "export A='b c'\n"
        );
    }

    #[test]
    fn service_paths_and_installed_probes() {
        let s = InitSystem::Systemd;
        assert_eq!(
            s.service_path("k0scontroller"),
            "/etc/systemd/system/k0scontroller.service"
        );
        assert_eq!(
            s.is_installed_cmd("k0sworker"),
            "[ -e /etc/systemd/system/k0sworker.service ]"
        );
        let o = InitSystem::OpenRc;
        assert_eq!(o.service_path("k0scontroller"), "/etc/init.d/k0scontroller");
        assert_eq!(
            o.is_installed_cmd("k0sworker"),
            "[ -e /etc/init.d/k0sworker ]"
        );
        // Paths with odd characters are quoted.
        assert_eq!(o.is_installed_cmd("a b"), "[ -e '/etc/init.d/a b' ]");
        assert_eq!(
            InitSystem::installed_anywhere_test("$s"),
            "[ -e /etc/systemd/system/$s.service ] || [ -e /etc/init.d/$s ]"
        );
    }

    #[test]
    fn reload_and_environment_removal() {
        let s = InitSystem::Systemd;
        assert_eq!(s.reload_cmd(), Some("systemctl daemon-reload"));
        assert_eq!(
            s.remove_env_cmd("k0sworker"),
            "rm -f /etc/systemd/system/k0sworker.service.d/env.conf && systemctl daemon-reload"
        );
        assert_eq!(
            s.env_dir("k0sworker").as_deref(),
            Some("/etc/systemd/system/k0sworker.service.d")
        );
        // The drop-in directory is the env file's own directory.
        assert_eq!(
            s.env_file("k0sworker").rsplit_once('/').map(|(d, _)| d),
            s.env_dir("k0sworker").as_deref()
        );
        let o = InitSystem::OpenRc;
        assert_eq!(o.reload_cmd(), None);
        assert_eq!(o.remove_env_cmd("k0sworker"), "rm -f /etc/conf.d/k0sworker");
        assert_eq!(o.env_dir("k0sworker"), None);
        assert_eq!(InitSystem::ALL, [s, o]);
        assert_eq!(InitSystem::from_fact("openrc\n"), Some(o));
        assert_eq!(InitSystem::from_fact("sysvinit"), None);
    }
}
