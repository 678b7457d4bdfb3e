//! "Install k0s binaries": move each staged binary into place on hosts where k0s is not running
//! (running hosts get theirs during the upgrade, after their service is stopped), then check
//! that the installed binary reports the target version.

use crate::k0s::version::K0sVersion;
use crate::transport::{Cmd, shell_quote};

use super::steps::binary::needs_binary;
use super::{HostState, Phase, PhaseFuture, State, collect, each_host};

pub struct InstallBinaries;

pub const TITLE: &str = "Install k0s binaries on hosts";

/// Hosts whose staged binary is moved into place now: k0s is not running there (running hosts
/// get theirs during the upgrade). In a dry run nothing is staged, so the staging rule decides.
fn installs(h: &HostState, state: &State) -> bool {
    let staged = h.staged.is_some()
        || (state.opts.dry_run && state.target_version().is_some_and(|t| needs_binary(h, &t)));
    staged && !h.is_running() && !h.config.reset
}

impl Phase for InstallBinaries {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(|h| installs(h, state))
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state.target_version();
            let limits = state.pool.limits().clone();
            let chosen: Vec<bool> = state.hosts.iter().map(|h| installs(h, state)).collect();
            let results = each_host(&limits, state.hosts.iter_mut().filter(|h| chosen[h.index]), |h| {
                let target = target.clone();
                async move {
                    let p = h.probed()?;
                    // Never `mv -f ''`: a host chosen here must have a staged binary.
                    let tmp = h.staged_path()?.to_string();
                    let dst = shell_quote(&p.k0s_binary_path);
                    let script = format!(
                        "set -e; install -d -m 0755 \"$(dirname {dst})\"; chmod 0755 {t}; mv -f {t} {dst}; {dst} version",
                        t = shell_quote(&tmp)
                    );
                    let v = p.remote.run_str(Cmd::new(script).sudo()).await?;
                    let got = K0sVersion::parse(v.trim())?;
                    if h.config.k0s_binary_path.is_none() && target.as_ref().is_some_and(|t| *t != got) {
                        return Err(format!("updated k0s binary version is {got} not {}", target.unwrap()).into());
                    }
                    tracing::info!(about = %h.name, "installed k0s {got} at {}", p.k0s_binary_path);
                    if let Some(k) = &mut h.k0s {
                        k.binary_version = Some(got);
                    }
                    h.staged = None;
                    Ok(())
                }
            })
            .await;
            let done: Vec<(String, String)> = state
                .hosts
                .iter()
                .filter(|h| chosen[h.index] && h.staged.is_none())
                .filter_map(|h| {
                    let p = h.host.as_ref()?;
                    let v = h.k0s.as_ref()?.binary_version.as_ref()?;
                    Some((
                        h.name.clone(),
                        format!("installed k0s {v} at {}", p.k0s_binary_path),
                    ))
                })
                .collect();
            for (h, what) in done {
                state.changed(h, what);
            }
            collect(TITLE, results)
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state
                .target_version()
                .map(|t| t.to_string())
                .unwrap_or_default();
            let hosts: Vec<(String, String)> = state
                .hosts
                .iter()
                .filter(|h| installs(h, state))
                .filter_map(|h| Some((h.name.clone(), h.host.as_ref()?.k0s_binary_path.clone())))
                .collect();
            for (name, path) in hosts {
                state.planned(name, format!("install k0s {target} at {path}"));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const MOVE: &str =
        "mv -f /usr/local/bin/k0s.tmp.1 /usr/local/bin/k0s; /usr/local/bin/k0s version";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.running(0, "v1.30.0+k0s.0")
            .fresh(1)
            .leader(0)
            .target("v1.31.1+k0s.0");
        k
    }

    /// Only hosts where k0s does not run get their staged binary now.
    #[tokio::test]
    async fn moves_the_staged_binary_into_place_on_hosts_not_running_k0s() {
        let mut k = kit(Default::default());
        assert!(!InstallBinaries.should_run(&k.state));
        k.state.hosts[0].staged = Some("/usr/local/bin/k0s.tmp.0".into());
        assert!(
            !InstallBinaries.should_run(&k.state),
            "running hosts wait for the upgrade"
        );
        k.state.hosts[1].staged = Some("/usr/local/bin/k0s.tmp.1".into());
        assert!(InstallBinaries.should_run(&k.state));
        k.script(1).on(MOVE, "v1.31.1+k0s.0\n");
        k.run(&InstallBinaries).await.unwrap();
        assert_eq!(
            k.script(1).commands(),
            [format!(
                "set -e; install -d -m 0755 \"$(dirname /usr/local/bin/k0s)\"; chmod 0755 /usr/local/bin/k0s.tmp.1; {MOVE}"
            )]
        );
        assert!(k.script(0).commands().is_empty());
        let h = &k.state.hosts[1];
        assert!(h.staged.is_none());
        assert_eq!(
            h.k0s
                .as_ref()
                .unwrap()
                .binary_version
                .as_ref()
                .unwrap()
                .to_string(),
            "v1.31.1+k0s.0"
        );
        assert_eq!(
            k.changes_for(1),
            ["installed k0s v1.31.1+k0s.0 at /usr/local/bin/k0s"]
        );
        assert_eq!(
            k.state.hosts[0].staged.as_deref(),
            Some("/usr/local/bin/k0s.tmp.0")
        );
    }

    #[tokio::test]
    async fn a_binary_of_the_wrong_version_fails_the_host() {
        let mut k = kit(Default::default());
        k.state.hosts[1].staged = Some("/usr/local/bin/k0s.tmp.1".into());
        k.script(1).on(MOVE, "v1.29.9+k0s.0\n");
        let e = k.run(&InstallBinaries).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "10.0.0.2:22: updated k0s binary version is v1.29.9+k0s.0 not v1.31.1+k0s.0"
            ),
            "{e}"
        );
        assert!(k.changes_for(1).is_empty());

        let mut k = kit(Default::default());
        k.state.hosts[1].staged = Some("/usr/local/bin/k0s.tmp.1".into());
        k.script(1)
            .fail(MOVE, 1, "mv: cannot move: Read-only file system");
        let e = k.run(&InstallBinaries).await.unwrap_err().to_string();
        assert!(e.contains("Read-only file system"), "{e}");
    }

    /// In a dry run nothing is staged: the staging rule decides, and nothing runs.
    #[tokio::test]
    async fn dry_run_plans_the_hosts_that_would_get_a_binary() {
        let mut k = kit(dry());
        assert!(InstallBinaries.should_run(&k.state));
        k.run(&InstallBinaries).await.unwrap();
        assert_eq!(
            k.plan_for(1),
            ["install k0s v1.31.1+k0s.0 at /usr/local/bin/k0s"]
        );
        assert!(k.plan_for(0).is_empty());
        k.assert_nothing_ran();
    }
}
