//! "Get admin kubeconfig": the admin kubeconfig from the leader, rewritten for the user
//! (cluster/user/context names, API address), for `--kubeconfig-out` and `k0sctl kubeconfig`.

use crate::phases::Failure;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::exit::Code;
use crate::k0s::kubeconfig::{api_url, rewrite};
use crate::transport::{Cmd, shell_quote};

use super::{Phase, PhaseError, PhaseFuture, State};

pub const TITLE: &str = "Get admin kubeconfig";

/// Names and address for the kubeconfig; `None` means the manifest's (or the detected) value.
#[derive(Debug, Clone, Default)]
pub struct KubeconfigOptions {
    pub address: Option<String>,
    pub user: Option<String>,
    pub cluster: Option<String>,
}

/// Reads `k0s kubeconfig admin` on the leader and rewrites it. The result holds credentials.
pub async fn admin_kubeconfig(state: &State, o: &KubeconfigOptions) -> Result<String, PhaseError> {
    let l = state
        .leader
        .or_else(|| state.hosts.iter().position(|h| h.config.is_controller()))
        .ok_or_else(|| {
            PhaseError::new(
                Code::InvalidConfig,
                TITLE,
                "no controller in the configuration",
            )
        })?;
    let leader = &state.hosts[l];
    let fail = |e: Failure| PhaseError::on_host(TITLE, leader.name.clone(), e);
    let p = leader.probed().map_err(|e| fail(e.into()))?;
    let cmd = p.k0s_cmd(&format!(
        "kubeconfig admin --data-dir={}",
        shell_quote(&leader.data_dir())
    ));
    let admin = p
        .remote
        .run(Cmd::new(cmd).sudo())
        .await
        .map_err(|e| fail(e.into()))?
        .stdout_str();
    let c = &state.config.cluster;
    let server = o
        .address
        .clone()
        .unwrap_or_else(|| api_url(c, leader.config.address()));
    rewrite(
        &admin,
        o.cluster.as_deref().unwrap_or(&c.metadata.name),
        o.user.as_deref().unwrap_or(&c.metadata.user),
        &server,
    )
    .map_err(|e| fail(e.into()))
}

/// Writes a file that holds secrets: created 0600, truncated, never group/world-readable.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    // An existing file keeps its mode on open; make sure it is private.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

/// The phase: `--kubeconfig-out FILE`.
pub struct GetKubeconfig {
    pub out: std::path::PathBuf,
    pub options: KubeconfigOptions,
}

impl Phase for GetKubeconfig {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let kc = admin_kubeconfig(state, &self.options).await?;
            write_private(&self.out, &kc).map_err(|e| {
                PhaseError::new(
                    Code::Failure,
                    TITLE,
                    format!("writing {}: {e}", self.out.display()),
                )
            })?;
            tracing::info!("kubeconfig written to {}", self.out.display());
            state.changed(
                "localhost",
                format!("wrote the admin kubeconfig to {}", self.out.display()),
            );
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            state.planned(
                "localhost",
                format!("write the admin kubeconfig to {}", self.out.display()),
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const ADMIN: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Zm9v\n    server: https://localhost:6443\n  name: local\ncontexts:\n- context:\n    cluster: local\n    user: user\n  name: Default\ncurrent-context: Default\nkind: Config\npreferences: {}\nusers:\n- name: user\n  user:\n    client-certificate-data: YQ==\n    client-key-data: Yg==\n";

    fn phase(dir: &tempfile::TempDir) -> GetKubeconfig {
        GetKubeconfig {
            out: dir.path().join("kubeconfig"),
            options: KubeconfigOptions::default(),
        }
    }

    /// Read on the leader, pointed at its address, written 0600 locally.
    #[tokio::test]
    async fn writes_the_leaders_admin_kubeconfig_privately() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Kit::new(&["worker", "controller"]);
        k.running(1, "v1.31.1+k0s.0").leader(1);
        k.script(1).on(
            "/usr/local/bin/k0s kubeconfig admin --data-dir=/var/lib/k0s",
            ADMIN,
        );
        let p = phase(&dir);
        k.run(&p).await.unwrap();
        assert_eq!(k.script(1).commands().len(), 1);
        assert!(k.script(0).commands().is_empty());
        let text = std::fs::read_to_string(&p.out).unwrap();
        assert!(text.contains("server: https://10.0.0.2:6443"), "{text}");
        assert!(!text.contains("localhost:6443"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p.out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn a_failure_on_the_leader_keeps_stderr_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Kit::new(&["controller"]);
        k.leader(0);
        k.script(0)
            .fail("kubeconfig admin", 1, "Error: admin.conf: no such file");
        let p = phase(&dir);
        let e = k.run(&p).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.1:22") && e.contains("admin.conf: no such file"),
            "{e}"
        );
        assert!(!p.out.exists());
    }

    #[tokio::test]
    async fn dry_run_plans_the_local_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Kit::with_opts(&["controller"], dry());
        k.leader(0);
        let p = phase(&dir);
        k.run(&p).await.unwrap();
        assert_eq!(
            k.state.plan.changes,
            [(
                "localhost".to_string(),
                format!("write the admin kubeconfig to {}", p.out.display())
            )]
        );
        k.assert_nothing_ran();
        assert!(!p.out.exists());
    }
}
