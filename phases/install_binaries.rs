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
                    tracing::info!("{}: installed k0s {got} at {}", h.name, p.k0s_binary_path);
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
