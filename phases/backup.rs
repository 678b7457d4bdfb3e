//! "Take backup" (`k0sctl backup`) and "Restore cluster state" (`apply --restore-from`).
//!
//! Backup, on the leader only (it must run k0s): `backup.before` hooks; a remote temp
//! directory; `k0s backup --save-path=<dir> --data-dir=<dd>`; the one archive k0s writes there
//! is downloaded (verified against the host's SHA-256) to the local output, created 0600 under
//! a temp name and renamed into place only when complete (so a failed backup leaves no file);
//! the remote temp directory is removed on success and on failure; `backup.after` hooks.
//!
//! Restore, right before "Initialize the k0s cluster", only when k0s does not run on the
//! leader yet: the archive is uploaded (verified) into a remote temp directory, `k0s restore
//! --data-dir=<dd> --config-out=<tmp>/k0s.yaml <archive>` runs (the config in the archive is
//! written to the temp directory, not to the SSH user's working directory as k0s's default
//! would), and the temp directory is removed.

use crate::phases::{Context, Failure};
use std::path::PathBuf;

use crate::exit::Code;
use crate::k0s::version::K0sVersion;
use crate::transport::files::UploadOptions;
use crate::transport::{Cmd, Remote, shell_quote};

use super::{HostState, Phase, PhaseError, PhaseFuture, State};

/// The oldest k0s with `k0s backup` / `k0s restore`.
const MIN_VERSION: &str = "v1.21.0-rc.1+k0s.0";

/// Creates a remote temp directory (0700) and returns its path.
async fn remote_tempdir(r: &Remote) -> Result<String, Failure> {
    r.run_str(Cmd::new("mktemp -d /tmp/k0sctl.XXXXXXXXXX").sudo())
        .await
        .map(|s| s.trim().to_string())
        .context("creating a temp directory")
}

async fn remove_tempdir(h: &HostState, r: &Remote, dir: &str) {
    if let Err(e) = r
        .run(Cmd::new(format!("rm -rf -- {}", shell_quote(dir))).sudo())
        .await
    {
        tracing::warn!(about = %h.name, "failed to remove the temp directory {dir}: {e}");
    }
}

fn check_version(h: &HostState) -> Result<(), Failure> {
    let min = K0sVersion::parse(MIN_VERSION).expect("constant");
    let v = h
        .k0s
        .as_ref()
        .and_then(|k| k.status.as_ref().map(|s| s.version.clone()))
        .or_else(|| h.k0s.as_ref().and_then(|k| k.binary_version.clone()));
    match v {
        Some(v) if v < min => Err(format!(
            "k0s {v} has no backup/restore; it needs k0s {MIN_VERSION} or newer"
        )
        .into()),
        _ => Ok(()),
    }
}

async fn run_hooks(h: &HostState, stage: &str) -> Result<Vec<String>, Failure> {
    let Some(remote) = &h.remote else {
        return Err("not connected".into());
    };
    let mut ran = Vec::new();
    let cmds = h
        .config
        .hooks
        .get("backup")
        .and_then(|s| s.get(stage))
        .cloned()
        .unwrap_or_default();
    for cmd in cmds {
        tracing::info!(about = %h.name, "running {stage} backup hook: {cmd:?}");
        remote.run(Cmd::new(cmd.as_str())).await.map_err(|e| {
            format!("failed to execute hook {cmd:?} for action \"backup\" stage {stage:?}: {e}")
        })?;
        ran.push(format!("ran {stage} backup hook: {cmd:?}"));
    }
    Ok(ran)
}

/// The default backup file name, `k0s_backup_<unix seconds>.tar.gz` (k0sctl's).
pub fn default_output(now_unix: u64) -> PathBuf {
    PathBuf::from(format!("k0s_backup_{now_unix}.tar.gz"))
}

/// "Take backup": see the module docs. `output` is the local file to write.
pub struct TakeBackup {
    pub output: PathBuf,
}

pub const BACKUP_TITLE: &str = "Take backup";

fn running_leader(state: &State) -> Result<usize, PhaseError> {
    state
        .leader
        .filter(|&l| state.hosts[l].is_running())
        .ok_or_else(|| {
            PhaseError::new(
                Code::PhaseFailed,
                BACKUP_TITLE,
                "failed to find a running controller: k0s must run on a controller to take a backup",
            )
        })
}

impl Phase for TakeBackup {
    fn title(&self) -> &'static str {
        BACKUP_TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = running_leader(state)?;
            let h = &state.hosts[l];
            let fail = |e: Failure| PhaseError::on_host(BACKUP_TITLE, h.name.clone(), e);
            check_version(h).map_err(&fail)?;
            let p = h.probed().map_err(|e| fail(e.into()))?;
            let mut changes = run_hooks(h, "before").await.map_err(&fail)?;
            let dir = remote_tempdir(&p.remote).await.map_err(&fail)?;
            let result = async {
                let cmd = p.k0s_cmd(&format!(
                    "backup --save-path={} --data-dir={}",
                    shell_quote(&dir),
                    shell_quote(&h.data_dir())
                ));
                tracing::info!(about = %h.name, "taking a backup");
                p.remote.run(Cmd::new(cmd).sudo()).await?;
                let name = p
                    .remote
                    .run_str(Cmd::new(format!("ls -1 -- {} | head -n1", shell_quote(&dir))).sudo())
                    .await?;
                let name = name.trim();
                if name.is_empty() {
                    return Err(format!("k0s backup wrote no archive into {dir}").into());
                }
                let remote_file = format!("{dir}/{name}");
                let bytes = p
                    .remote
                    .download(&remote_file, &self.output, 0o600, true)
                    .await?;
                Ok::<_, Failure>(bytes)
            }
            .await;
            remove_tempdir(h, &p.remote, &dir).await;
            let bytes = result.map_err(&fail)?;
            tracing::info!("backup saved to {} ({bytes} bytes)", self.output.display());
            changes.extend(run_hooks(h, "after").await.map_err(fail)?);
            let name = h.name.clone();
            for c in changes {
                state.changed(name.clone(), c);
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = running_leader(state)?;
            let h = &state.hosts[l];
            check_version(h).map_err(|e| PhaseError::on_host(BACKUP_TITLE, h.name.clone(), e))?;
            let mut plan = Vec::new();
            let hooks = |stage: &str| {
                h.config
                    .hooks
                    .get("backup")
                    .and_then(|s| s.get(stage))
                    .cloned()
                    .unwrap_or_default()
            };
            for c in hooks("before") {
                plan.push(format!("run before backup hook: {c:?}"));
            }
            plan.push(format!(
                "take a backup with k0s backup and save it to {}",
                self.output.display()
            ));
            for c in hooks("after") {
                plan.push(format!("run after backup hook: {c:?}"));
            }
            let name = h.name.clone();
            for w in plan {
                state.planned(name.clone(), w);
            }
            Ok(())
        })
    }
}

/// "Restore cluster state": see the module docs.
pub struct RestoreState;

pub const RESTORE_TITLE: &str = "Restore cluster state";

fn restore_source(state: &State) -> Option<PathBuf> {
    state.opts.restore_from.clone()
}

impl Phase for RestoreState {
    fn title(&self) -> &'static str {
        RESTORE_TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        let Some(src) = restore_source(state) else {
            return false;
        };
        match state.leader {
            Some(l) if state.hosts[l].is_running() => {
                tracing::warn!(
                    about = %state.hosts[l].name,
                    "k0s already runs on the leader; --restore-from {} is not used (a restore only happens before the cluster is initialised)",
                    src.display()
                );
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let src = restore_source(state).expect("should_run checked");
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(RESTORE_TITLE, m))?;
            let h = &state.hosts[l];
            let fail = |e: Failure| PhaseError::on_host(RESTORE_TITLE, h.name.clone(), e);
            check_version(h).map_err(&fail)?;
            let p = h.probed().map_err(|e| fail(e.into()))?;
            let meta = std::fs::metadata(&src).map_err(|e| {
                PhaseError::new(
                    Code::Failure,
                    RESTORE_TITLE,
                    format!("--restore-from {}: {e}", src.display()),
                )
            })?;
            let dir = remote_tempdir(&p.remote).await.map_err(&fail)?;
            let result = async {
                let archive = format!("{dir}/k0s_backup.tar.gz");
                tracing::info!(
                    about = %h.name,
                    "uploading the backup {} ({} bytes)",
                    src.display(),
                    meta.len()
                );
                p.remote
                    .upload_file(
                        &src,
                        &archive,
                        &UploadOptions::default().mode(0o600).sudo(true),
                    )
                    .await?;
                let cmd = p.k0s_cmd(&format!(
                    "restore --data-dir={} --config-out={} {}",
                    shell_quote(&h.data_dir()),
                    shell_quote(&format!("{dir}/k0s.yaml")),
                    shell_quote(&archive)
                ));
                tracing::info!(about = %h.name, "restoring the cluster state");
                p.remote.run(Cmd::new(cmd).sudo()).await?;
                Ok::<(), Failure>(())
            }
            .await;
            remove_tempdir(h, &p.remote, &dir).await;
            result.map_err(fail)?;
            let name = h.name.clone();
            state.changed(
                name,
                format!(
                    "restored the cluster state from {} into {}",
                    src.display(),
                    state.hosts[l].data_dir()
                ),
            );
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let src = restore_source(state).expect("should_run checked");
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(RESTORE_TITLE, m))?;
            if let Err(e) = std::fs::metadata(&src) {
                return Err(PhaseError::new(
                    Code::Failure,
                    RESTORE_TITLE,
                    format!("--restore-from {}: {e}", src.display()),
                ));
            }
            let name = state.hosts[l].name.clone();
            let dd = state.hosts[l].data_dir();
            state.planned(
                name,
                format!(
                    "upload {} and restore the cluster state into {dd} with k0s restore",
                    src.display()
                ),
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const TMP: &str = "/tmp/k0sctl.AbCdEf1234";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.31.1+k0s.0")
            .leader(0);
        k
    }

    /// `k0s backup` into a fresh temp dir on the leader, the archive downloaded (verified,
    /// 0600) and the temp dir removed, in that order.
    #[tokio::test]
    async fn backs_up_on_the_leader_and_downloads_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = kit(Default::default());
        let archive = format!("{TMP}/k0s_backup_2026.tar.gz");
        k.script(0)
            .on("mktemp -d /tmp/k0sctl.XXXXXXXXXX", &format!("{TMP}\n"))
            .on(
                &format!("/usr/local/bin/k0s backup --save-path={TMP} --data-dir=/var/lib/k0s"),
                "",
            )
            .on(
                &format!("ls -1 -- {TMP} | head -n1"),
                "k0s_backup_2026.tar.gz\n",
            )
            .on(&format!("rm -rf -- {TMP}"), "")
            .file(&archive, 0o600, "ARCHIVE BYTES");
        let out = dir.path().join("backup.tar.gz");
        k.run(&TakeBackup {
            output: out.clone(),
        })
        .await
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ARCHIVE BYTES");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let s = k.script(0);
        assert!(s.position("k0s backup") < s.position("ls -1"));
        assert!(s.position(&format!("cat -- {archive}")) < s.position("rm -rf"));
        assert!(k.script(1).commands().is_empty());
    }

    #[tokio::test]
    async fn a_failed_backup_keeps_stderr_and_still_removes_the_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = kit(Default::default());
        k.script(0)
            .on("mktemp -d", &format!("{TMP}\n"))
            .fail(
                "k0s backup",
                1,
                "Error: etcd snapshot failed: context deadline exceeded",
            )
            .on("rm -rf --", "");
        let out = dir.path().join("b.tar.gz");
        let e = k
            .run(&TakeBackup {
                output: out.clone(),
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10.0.0.1:22") && e.contains("etcd snapshot failed"),
            "{e}"
        );
        assert!(k.script(0).has_run(&format!("rm -rf -- {TMP}")));
        assert!(!out.exists());
    }

    #[tokio::test]
    async fn needs_a_running_leader_and_plans_in_a_dry_run() {
        let mut k = Kit::new(&["controller"]);
        k.fresh(0).leader(0);
        let e = k
            .run(&TakeBackup {
                output: "x.tar.gz".into(),
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed to find a running controller"), "{e}");
        let mut k = kit(dry());
        k.run(&TakeBackup {
            output: "x.tar.gz".into(),
        })
        .await
        .unwrap();
        assert_eq!(
            k.plan_for(0),
            ["take a backup with k0s backup and save it to x.tar.gz"]
        );
        k.assert_nothing_ran();
    }

    /// Restore happens only before the leader is initialised: upload 0600 into a temp dir,
    /// `k0s restore`, remove the temp dir.
    #[tokio::test]
    async fn restores_onto_a_leader_that_does_not_run_yet() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("b.tar.gz");
        std::fs::write(&src, "BACKUP").unwrap();
        let mut k = Kit::with_opts(
            &["controller"],
            super::super::RunOptions {
                restore_from: Some(src.clone()),
                ..Default::default()
            },
        );
        k.running(0, "v1.31.1+k0s.0").leader(0);
        assert!(!RestoreState.should_run(&k.state), "k0s already runs");
        k.fresh(0);
        assert!(RestoreState.should_run(&k.state));
        k.script(0)
            .on("mktemp -d", &format!("{TMP}\n"))
            .on("/usr/local/bin/k0s restore --data-dir=/var/lib/k0s", "")
            .on("rm -rf --", "");
        k.run(&RestoreState).await.unwrap();
        let s = k.script(0);
        let u = s.uploaded(&format!("{TMP}/k0s_backup.tar.gz")).unwrap();
        assert_eq!((u.mode, u.text().as_str()), (0o600, "BACKUP"));
        let restore = &s.ran_matching("k0s restore")[0];
        assert!(
            restore.ends_with(&format!(
                "--config-out={TMP}/k0s.yaml {TMP}/k0s_backup.tar.gz"
            )),
            "{restore}"
        );
        assert!(s.position("k0s restore") < s.position("rm -rf"));
    }
}
