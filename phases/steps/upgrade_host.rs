//! One host's upgrade or reinstall, as "Upgrade controllers", "Upgrade workers" and "Reinstall"
//! share it: which hosts need them,
//! how many workers go at once, and the steps on one node — stop the service, put the staged
//! and verified binary in place, `k0s install <role> … --force`, start, wait until it serves.
//! Draining and cordoning are the worker phase's (through [`crate::kube`]); this file only
//! talks to the node itself.

use crate::config::flags::Flags;
use crate::k0s::version::K0sVersion;
use crate::phases::Failure;
use crate::transport::{Cmd, shell_quote};

use super::HostState;
use super::service::{dynamic_flag, host_install_command, host_install_flags, start_service};
use super::wait::{WAIT, wait_api_ready, wait_node_ready};

/// The running k0s version, when k0s runs.
pub fn running_version(h: &HostState) -> Option<&K0sVersion> {
    h.k0s.as_ref()?.status.as_ref().map(|s| &s.version)
}

/// A host runs k0s at another version than the target (and may be upgraded by us).
pub fn needs_upgrade(h: &HostState, target: &K0sVersion) -> bool {
    !h.config.reset && !h.config.use_existing_k0s && running_version(h).is_some_and(|v| v != target)
}

/// How many workers are upgraded at once: `workerDisruptionPercent` of them, rounded down, at
/// least 1, at most `concurrency.limit` (0 = no limit). (k0sctl's integer division made this
/// 1 for any percent below 100.)
pub fn worker_batch_size(workers: usize, percent: u32, limit: u32) -> usize {
    let n = (workers * percent as usize / 100).max(1);
    let n = if limit > 0 { n.min(limit as usize) } else { n };
    n.min(workers.max(1))
}

/// Flags k0sctl leaves out of the drift comparison: they are set by k0sctl itself or do not
/// change what runs.
const IGNORED: [&str; 5] = ["--force", "--env", "--data-dir", "--token-file", "--config"];

/// k0s's one-letter flags and their long names: k0s records every flag under its long name.
const SHORTHANDS: [(&str, &str); 5] = [
    ("-c", "--config"),
    ("-d", "--debug"),
    ("-e", "--env"),
    ("-l", "--logging"),
    ("-v", "--verbose"),
];

/// The components of k0s's `--logging` and their default levels (k0s `pkg/config/cli.go`).
const LOG_LEVELS: [(&str, &str); 7] = [
    ("containerd", "info"),
    ("etcd", "info"),
    ("konnectivity-server", "1"),
    ("kube-apiserver", "1"),
    ("kube-controller-manager", "1"),
    ("kube-scheduler", "1"),
    ("kubelet", "1"),
];

/// `key=value,…` pairs as a map (later keys win), keys and values trimmed; `[…]` removed.
fn pair_map(v: &str) -> std::collections::BTreeMap<String, String> {
    v.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (p.trim().to_string(), String::new()),
        })
        .collect()
}

/// One install flag in the form k0s records it, so that what the manifest says and what
/// `k0s status` reports compare equal when k0s runs with it. k0s stores pflag's rendering of
/// each parsed flag value (k0s `cmd/install/util.go`), not the text given:
/// * shorthands under their long names (`-l` is `--logging`);
/// * `--logging` lists every component, the unnamed ones at their default level (k0s ≥ v1.31),
///   so it is compared as the full component → level map;
/// * `--labels` is a map printed sorted from k0s v1.34 (`cliflag.ConfigurationMap`), the given
///   order before; compared as a map;
/// * a bare boolean flag is stored as `--flag=true`.
fn as_recorded(name: &str, value: &str) -> (String, String) {
    let name = SHORTHANDS
        .iter()
        .find(|(s, _)| *s == name)
        .map_or(name, |(_, l)| l)
        .to_string();
    let value = match name.as_str() {
        "--logging" => {
            let mut m: std::collections::BTreeMap<String, String> = LOG_LEVELS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            m.extend(pair_map(value));
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
        "--labels" => pair_map(value)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ if value.is_empty() => "true".to_string(),
        _ => value.to_string(),
    };
    (name, value)
}

/// `(name, value)` of each flag; a shorthand written together with its value (`-lkubelet=2`,
/// `-l=kubelet=2`) is split as pflag splits it.
fn flag_pairs(f: &Flags) -> Vec<(String, String)> {
    f.pairs()
        .into_iter()
        .map(|(k, v)| {
            if !k.starts_with("--") && k.starts_with('-') && k.len() > 2 {
                let (n, rest) = k.split_at(2);
                let rest = rest.trim_start_matches('=');
                let v = if v.is_empty() {
                    rest.to_string()
                } else {
                    format!("{rest}={v}")
                };
                (n.to_string(), v)
            } else {
                (k, v)
            }
        })
        .collect()
}

fn comparable(f: &Flags) -> (Vec<(String, String)>, Vec<String>) {
    let mut pairs: Vec<(String, String)> = flag_pairs(f)
        .into_iter()
        .map(|(k, v)| as_recorded(&k, &v))
        .filter(|(k, _)| !IGNORED.contains(&k.as_str()) && k != "--kubelet-extra-args")
        .collect();
    pairs.sort();
    let mut extra: Vec<String> = f
        .value("--kubelet-extra-args")
        .and_then(|v| shlex::split(&v))
        .unwrap_or_default();
    extra.sort();
    (pairs, extra)
}

/// The install flags k0s runs with differ from what the manifest gives now (as k0sctl's
/// `phase/reinstall.go` compares them); `None` when k0s does not run.
pub fn flags_drift(h: &HostState, is_leader: bool) -> Result<Option<bool>, Failure> {
    let Some(status) = h.k0s.as_ref().and_then(|k| k.status.as_ref()) else {
        return Ok(None);
    };
    let (_, want) = host_install_flags(h, is_leader, dynamic_flag(h), Some(&status.version))?;
    let have = Flags(status.args.clone());
    Ok(Some(comparable(&want) != comparable(&have)))
}

/// The install flags the manifest gives the host now (what k0s runs with after a reinstall),
/// as `k0s status` reports them.
pub fn wanted_flags(
    h: &HostState,
    is_leader: bool,
    version: &K0sVersion,
) -> Result<Vec<String>, Failure> {
    Ok(
        host_install_flags(h, is_leader, dynamic_flag(h), Some(version))?
            .1
            .0,
    )
}

/// Records in the host's facts that it now runs `version` with the manifest's flags (so later
/// phases of the same run see it converged).
pub fn mark_converged(h: &mut HostState, is_leader: bool, version: &K0sVersion) {
    let flags = wanted_flags(h, is_leader, version).ok();
    h.staged = None;
    if let Some(st) = h.k0s.as_mut().and_then(|k| k.status.as_mut()) {
        st.version = version.clone();
        if let Some(f) = flags {
            st.args = f;
        }
    }
}

/// Runs `k0s install <role> … --force=true` (the service definition is rewritten with the
/// manifest's flags), writes the service environment, (re)starts the service (`restart` for
/// one that still runs) and waits until it runs and serves: controllers until their API is
/// ready, workers until their node is Ready (unless `wait` is false).
pub async fn reinstall_and_start(
    h: &HostState,
    leader: &HostState,
    is_leader: bool,
    version: &K0sVersion,
    wait: bool,
    restart: bool,
) -> Result<(), Failure> {
    let p = h.probed()?;
    let extra = [dynamic_flag(h), &["--force=true"]].concat();
    let cmd = host_install_command(h, is_leader, &extra, Some(version))?;
    p.remote.run(Cmd::new(cmd).sudo()).await?;
    start_service(h, true, restart).await?;
    if h.config.is_controller() {
        wait_api_ready(h).await?;
    }
    if wait && h.config.role != "controller" {
        let node = h.node_name().unwrap_or_default();
        wait_node_ready(leader, &node, Some(version)).await?;
    }
    Ok(())
}

/// Upgrades k0s on one node: stop the service, move the staged binary into place (it must
/// report `target`), reinstall with `--force`, start and wait. A node whose binary is already
/// the target (an earlier run got that far) skips the binary step. When a step after the
/// stop fails, the service is started again (best effort) so the node is not left down.
pub async fn upgrade_node(
    h: &HostState,
    leader: &HostState,
    is_leader: bool,
    target: &K0sVersion,
    wait: bool,
) -> Result<(), Failure> {
    let p = h.probed()?;
    let init = p.init_system()?;
    let svc = h.service_name();
    let from = running_version(h)
        .map(|v| v.to_string())
        .unwrap_or_default();
    tracing::info!(about = %h.name, "upgrading k0s {from} to {target}");
    // Recorded before the service stops, so that a run that dies before it starts again does
    // not leave a host the next apply refuses.
    super::markers::upgrade_started(h, "upgrade").await?;
    init.stop(&p.remote, svc).await?;
    init.wait_state(&p.remote, svc, false, WAIT).await?;
    let steps = async {
        if let Some(tmp) = &h.staged {
            let dst = shell_quote(&p.k0s_binary_path);
            let script = format!(
                "set -e; chmod 0755 {t}; mv -f {t} {dst}; {dst} version",
                t = shell_quote(tmp)
            );
            let v = p.remote.run_str(Cmd::new(script).sudo()).await?;
            let got = K0sVersion::parse(v.trim())?;
            if got != *target {
                return Err(format!("the new k0s binary is version {got}, not {target}").into());
            }
        }
        reinstall_and_start(h, leader, is_leader, target, wait, false).await
    }
    .await;
    if steps.is_err() && !init.is_running(&p.remote, svc).await.unwrap_or(false) {
        tracing::warn!(about = %h.name, "starting {svc} again after the failed upgrade");
        let _ = init.start(&p.remote, svc).await;
    }
    steps?;
    super::markers::upgrade_finished(h, true).await?;
    tracing::info!(about = %h.name, "upgraded to k0s {target}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_batches_follow_the_percentage() {
        // The example and k0sctl's bug: 8 workers at 25 % are 2 at a time (k0sctl: 1).
        assert_eq!(worker_batch_size(8, 25, 30), 2);
        assert_eq!(worker_batch_size(20, 25, 30), 5);
        assert_eq!(worker_batch_size(20, 5, 30), 1);
        // At least one, at most concurrency.limit, never more than there are.
        assert_eq!(worker_batch_size(3, 10, 30), 1);
        assert_eq!(worker_batch_size(100, 50, 30), 30);
        assert_eq!(worker_batch_size(100, 50, 0), 50);
        assert_eq!(worker_batch_size(4, 100, 30), 4);
        assert_eq!(worker_batch_size(0, 10, 30), 1);
    }

    #[test]
    fn drift_compares_flags_as_k0s_records_them() {
        // What the manifest says …
        let want = Flags(vec![
            "-l kubelet=2".into(),
            "--labels=zz=1,aa=2".into(),
            "--enable-worker".into(),
            "-c /etc/k0s/k0s.yaml".into(),
        ]);
        // … and what `k0s status` reports for it (pflag's rendering, k0s v1.34), with the
        // kubelet's log level `kubelet`.
        let reported = |kubelet: u8| {
            Flags(vec![
                "--config=/etc/k0s/k0s.yaml".into(),
                "--enable-worker=true".into(),
                "--labels=aa=2,zz=1".into(),
                format!(
                    "--logging=containerd=info,etcd=info,konnectivity-server=1,kube-apiserver=1,kube-controller-manager=1,kube-scheduler=1,kubelet={kubelet}"
                ),
            ])
        };
        assert_eq!(comparable(&want), comparable(&reported(2)));
        // A real change still shows.
        assert_ne!(comparable(&want), comparable(&reported(3)));
        // Older k0s records only the given components; the shorthand glued to its value.
        let old = Flags(vec!["-lkubelet=2".into()]);
        assert_eq!(
            comparable(&old),
            comparable(&Flags(vec!["--logging=[kubelet=2]".into()]))
        );
        assert_ne!(
            comparable(&Flags(vec!["--labels=a=1".into()])),
            comparable(&Flags(vec!["--labels=a=2".into()]))
        );
    }

    #[test]
    fn drift_ignores_k0sctl_managed_flags_and_extra_args_order() {
        let a = Flags(vec![
            "--data-dir=/var/lib/k0s".into(),
            "--kubelet-extra-args=--node-ip=10.0.0.2 --max-pods=50".into(),
            "--labels=a=b".into(),
            "--debug".into(),
            "--token-file=/etc/k0s/k0stoken".into(),
        ]);
        let b = Flags(vec![
            "--labels=a=b".into(),
            "--force=true".into(),
            "--debug=true".into(),
            "--kubelet-extra-args=--max-pods=50 --node-ip=10.0.0.2".into(),
        ]);
        assert_eq!(comparable(&a), comparable(&b));
        let c = Flags(vec![
            "--labels=a=c".into(),
            "--kubelet-extra-args=--max-pods=50 --node-ip=10.0.0.2".into(),
        ]);
        assert_ne!(comparable(&a), comparable(&c));
    }
}
