//! Init systems: systemd and OpenRC. Start/stop/restart/status, waiting for a state, and the
//! service environment (systemd drop-in `/etc/systemd/system/<svc>.service.d/env.conf` with
//! `Environment=` lines plus `daemon-reload`; OpenRC `/etc/conf.d/<svc>` with `export K=V`).
//! Commands run through the privilege wrapper.

use std::time::{Duration, Instant};

use crate::transport::{Cmd, Remote, TransportError, shell_quote};

/// A supported init system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitSystem {
    Systemd,
    OpenRc,
}

impl InitSystem {
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
    /// Where the service environment lives.
    pub fn env_file(&self, svc: &str) -> String {
        match self {
            InitSystem::Systemd => format!("/etc/systemd/system/{svc}.service.d/env.conf"),
            InitSystem::OpenRc => format!("/etc/conf.d/{svc}"),
        }
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
        if *self == InitSystem::Systemd {
            r.run(Cmd::new("systemctl daemon-reload").sudo()).await?;
        }
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
}
