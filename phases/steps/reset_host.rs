//! One host's reset ([`reset_host`], reusable by any pipeline that removes nodes; its dry run
//! [`plan_reset_host`]), and the etcd facts it needs (peer address, etcd storage, `k0s etcd
//! leave`).
//!
//! Per host, in order: `reset.before` hooks; optionally delete the node from the API and make
//! the controller leave etcd (both through the leader, which keeps running); stop the k0s
//! services that run and wait until they have stopped; `k0s reset` (which, as k0s documents,
//! removes the service units, the data dir, the kubelet root dir, the run dir and k0s's system
//! users); then what k0s leaves on purpose and k0sctl put there: the k0s config file, the join
//! token file, the k0s binary (unless `useExistingK0s`), the service environment drop-ins,
//! an empty `/etc/k0s`; reload the service manager; `reset.after` hooks. What remains is what
//! k0s documents it leaves behind (kernel state a reboot clears: network interfaces, iptables
//! rules, mounts).
//!
//! Drains are not done here: a caller that removes a node from a running cluster drains it
//! first (with the PDB-aware drain) and then calls [`reset_host`] with
//! `ResetSteps { delete_node: true, etcd_leave: true }`.

use crate::host::InitSystem;
use crate::host::facts::parse_sections;
use crate::k0s::install::reset_command;
use crate::phases::state::DEFAULT_CONFIG_PATH;
use crate::phases::{Context, Failure};
use crate::transport::{Cmd, shell_quote};

use super::kubectl::kubectl;
use super::wait::WAIT;
use super::{HostState, State};

/// The k0s service names k0s and k0sctl know (`k0sserver` is what old k0s installed).
const SERVICES: [&str; 3] = ["k0scontroller", "k0sworker", "k0sserver"];

/// The cluster-level steps of a reset that need the leader. `k0sctl reset` takes the whole
/// cluster down and uses neither; removing single nodes from a running cluster uses both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetSteps {
    /// `kubectl delete node <name>` on the leader (after the caller drained the node).
    pub delete_node: bool,
    /// Controllers on etcd storage: `k0s etcd leave --peer-address=<peer>` on the leader
    /// (before the controller stops), so etcd keeps its quorum arithmetic right.
    pub etcd_leave: bool,
}

/// What a host reset did: the changes made (also when it failed part way) and the failure.
#[derive(Debug, Default)]
pub struct HostReset {
    pub changes: Vec<String>,
    pub error: Option<Failure>,
}

/// What is on the host, k0s-wise (one round trip, read-only).
#[derive(Debug, Default)]
struct Found {
    binary: bool,
    data_dir: bool,
    kubelet_root: bool,
    config: bool,
    token: bool,
    /// Installed k0s services (unit files or OpenRC scripts).
    services: Vec<String>,
    /// Service environment files (systemd drop-ins, OpenRC conf.d).
    env_files: Vec<String>,
    /// k0sctl's notes of an unfinished install or upgrade (see `markers::incomplete_marker`).
    markers: Vec<String>,
}

impl Found {
    fn anything(&self) -> bool {
        self.binary
            || self.data_dir
            || self.kubelet_root
            || self.config
            || self.token
            || !self.services.is_empty()
            || !self.env_files.is_empty()
            || !self.markers.is_empty()
    }
}

fn env_files(svc: &str) -> [String; 2] {
    InitSystem::ALL.map(|i| i.env_file(svc))
}

async fn probe(h: &HostState) -> Result<Found, Failure> {
    let p = h.probed()?;
    let q = |s: &str| shell_quote(s);
    let exists = |name: &str, test: &str, path: &str| {
        format!("echo @@{name}; [ {test} {} ] && echo yes\n", q(path))
    };
    let mut script = String::new();
    script += &exists("binary", "-x", &p.k0s_binary_path);
    script += &exists("datadir", "-d", &h.data_dir());
    if let Some(k) = &h.config.kubelet_root_dir {
        script += &exists("kubeletroot", "-d", k);
    }
    script += &exists("config", "-f", &h.k0s_config_path());
    script += &exists("token", "-f", &h.token_path());
    script += "echo @@services\n";
    for s in SERVICES {
        script += &format!(
            "if {}; then echo {s}; fi\n",
            InitSystem::installed_anywhere_test(s)
        );
    }
    script += "echo @@env\n";
    for s in SERVICES {
        for f in env_files(s) {
            script += &format!("[ -e {f} ] && echo {f}\n", f = q(&f));
        }
    }
    script += "echo @@markers\n";
    for m in [
        super::markers::incomplete_marker(h),
        super::markers::upgrade_marker(h),
    ] {
        script += &format!("[ -e {f} ] && echo {f}\n", f = q(&m));
    }
    script += "echo @@end\n";
    let out = p
        .remote
        .run(Cmd::new(script).sudo().display_as("look for k0s files"))
        .await?
        .stdout_str();
    let s = parse_sections(&out);
    let yes = |k: &str| s.get(k).is_some_and(|v| v.trim() == "yes");
    let lines = |k: &str| -> Vec<String> {
        s.get(k)
            .map(|v| {
                v.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Found {
        binary: yes("binary"),
        data_dir: yes("datadir"),
        kubelet_root: yes("kubeletroot"),
        config: yes("config"),
        token: yes("token"),
        services: lines("services"),
        env_files: lines("env"),
        markers: lines("markers"),
    })
}

/// The etcd peer address k0sctl configures for a controller: its private address, else the
/// address it is reached at.
pub fn peer_address(h: &HostState) -> String {
    h.private_address()
        .unwrap_or_else(|| h.config.address().to_string())
}

/// True when the cluster's controllers store state in etcd (the default, except `single`).
pub fn uses_etcd(state: &State, h: &HostState) -> bool {
    let t = state
        .k0s_spec(&["storage", "type"])
        .and_then(|t| t.as_str());
    match t {
        Some(t) => t == "etcd",
        None => h.config.role != "single",
    }
}

/// `k0s etcd leave` as k0s has it: `--peer-address` and `--data-dir` (k0sctl passes a
/// `--datadir` flag k0s does not have, so its leave always fails).
pub fn etcd_leave_command(k0s_path: &str, peer: &str, data_dir: &str) -> String {
    format!(
        "{} etcd leave --peer-address={} --data-dir={}",
        shell_quote(k0s_path),
        shell_quote(peer),
        shell_quote(data_dir)
    )
}

/// The files a reset removes after `k0s reset`, with a reason for each: what k0s leaves on
/// purpose but k0sctl put there.
fn leftovers(h: &HostState, f: &Found) -> Vec<String> {
    let mut rm = Vec::new();
    if f.config {
        rm.push(h.k0s_config_path());
    }
    if f.token {
        rm.push(h.token_path());
    }
    rm.extend(f.env_files.iter().cloned());
    rm.extend(f.markers.iter().cloned());
    if f.binary
        && !h.config.use_existing_k0s
        && let Ok(p) = h.probed()
    {
        rm.push(p.k0s_binary_path.clone());
    }
    rm
}

/// The k0s services of `f` that an init system reports running.
async fn running_services(h: &HostState, f: &Found) -> Result<Vec<String>, Failure> {
    let p = h.probed()?;
    let Ok(init) = p.init_system() else {
        return Ok(Vec::new());
    };
    let mut running = Vec::new();
    for s in &f.services {
        if init.is_running(&p.remote, s).await? {
            running.push(s.clone());
        }
    }
    Ok(running)
}

fn hook_commands<'s>(h: &'s HostState, stage: &str) -> &'s [String] {
    h.config
        .hooks
        .get("reset")
        .and_then(|s| s.get(stage))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

async fn run_hooks(h: &HostState, stage: &str, changes: &mut Vec<String>) -> Result<(), Failure> {
    let Some(remote) = &h.remote else {
        return Err("not connected".into());
    };
    for cmd in hook_commands(h, stage) {
        tracing::info!(about = %h.name, "running {stage} reset hook: {cmd:?}");
        remote.run(Cmd::new(cmd.as_str())).await.map_err(|e| {
            format!("failed to execute hook {cmd:?} for action \"reset\" stage {stage:?}: {e}")
        })?;
        changes.push(format!("ran {stage} reset hook: {cmd:?}"));
    }
    Ok(())
}

/// The leader, when it is another host that runs k0s (the one that can delete nodes and
/// remove etcd members).
fn other_leader(state: &State, idx: usize) -> Option<&HostState> {
    state
        .leader
        .filter(|&l| l != idx)
        .map(|l| &state.hosts[l])
        .filter(|l| l.is_running())
}

/// Resets k0s on host `idx` (see the module docs for the steps). Returns the changes made and,
/// if a step failed, why (with remote stderr); later steps are then not run, so a failed
/// `k0s reset` keeps the binary for a retry. Hosts where nothing of k0s is found only get
/// their hooks run.
pub async fn reset_host(state: &State, idx: usize, steps: ResetSteps) -> HostReset {
    let mut r = HostReset::default();
    if let Err(e) = reset_host_inner(state, idx, steps, &mut r.changes).await {
        r.error = Some(e);
    }
    r
}

async fn reset_host_inner(
    state: &State,
    idx: usize,
    steps: ResetSteps,
    changes: &mut Vec<String>,
) -> Result<(), Failure> {
    let h = &state.hosts[idx];
    let p = h.probed()?;
    let found = probe(h).await?;
    run_hooks(h, "before", changes).await?;

    if steps.delete_node
        && h.config.is_worker()
        && let (Some(leader), Ok(node)) = (other_leader(state, idx), h.node_name())
    {
        let lp = leader.probed()?;
        let cmd = kubectl(
            leader,
            &format!("delete node --ignore-not-found=true {}", shell_quote(&node)),
        )?;
        lp.remote
            .run(Cmd::new(cmd).sudo())
            .await
            .with_context(|| format!("deleting node {node} (on the leader {})", leader.name))?;
        tracing::info!(about = %h.name, "deleted node {node} from the cluster");
        changes.push(format!("deleted node {node} from the cluster"));
    }

    if steps.etcd_leave
        && h.config.is_controller()
        && uses_etcd(state, h)
        && let Some(leader) = other_leader(state, idx)
    {
        let lp = leader.probed()?;
        let peer = peer_address(h);
        let cmd = etcd_leave_command(&lp.k0s_binary_path, &peer, &leader.data_dir());
        // etcd refuses to remove a voting member while that would leave too few members that
        // have been connected for a few seconds (`etcdserver: unhealthy cluster`, e.g. right
        // after a controller joined): retried for up to 30 s.
        let mut tries = 0;
        let left = loop {
            tries += 1;
            match lp.remote.run(Cmd::new(cmd.clone()).sudo()).await {
                Err(e) if tries < 15 && e.to_string().contains("unhealthy cluster") => {
                    tracing::info!(
                        about = %h.name,
                        "etcd is not ready to remove {peer} yet, retrying"
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                r => break r,
            }
        };
        match left {
            Ok(_) => {
                tracing::info!(about = %h.name, "left etcd (peer {peer})");
                changes.push(format!("removed the etcd member {peer}"));
            }
            // k0s answers `peer not found: https://<peer>:2380` (exit 1) when the controller is
            // no etcd member (never joined, or left in an earlier, partial reset): nothing to
            // remove, so the reset goes on, as k0sctl's does.
            Err(e) if e.to_string().contains("peer not found") => {
                tracing::warn!(
                    about = %h.name,
                    "not an etcd member (peer {peer}), nothing to remove: {e}"
                );
            }
            Err(e) => {
                return Err(format!(
                    "removing the etcd member {peer} (on the leader {}): {e}",
                    leader.name
                )
                .into());
            }
        }
    }

    if !found.anything() {
        tracing::info!(about = %h.name, "no k0s found, nothing to reset");
        return run_hooks(h, "after", changes).await;
    }

    if let Ok(init) = p.init_system() {
        for svc in running_services(h, &found).await? {
            init.stop(&p.remote, &svc).await?;
            init.wait_state(&p.remote, &svc, false, WAIT).await?;
            tracing::info!(about = %h.name, "stopped the {svc} service");
            changes.push(format!("stopped the {svc} service"));
        }
    }

    if found.data_dir || found.kubelet_root || !found.services.is_empty() {
        if !found.binary {
            return Err(format!(
                "the k0s binary {} is missing, so `k0s reset` cannot clean up {} and the k0s services; put the binary back (or remove them by hand) and reset again",
                p.k0s_binary_path,
                h.data_dir()
            ).into());
        }
        let cmd = reset_command(&h.config, &p.k0s_binary_path, &h.data_dir());
        let out = p.remote.run(Cmd::new(cmd).sudo()).await?;
        for line in out.stderr_str().lines().filter(|l| !l.trim().is_empty()) {
            tracing::debug!(about = %h.name, "k0s reset: {line}");
        }
        tracing::info!(
            about = %h.name,
            "k0s reset done (k0s recommends a reboot to clear network state)"
        );
        changes.push(format!(
            "ran k0s reset (removed the k0s services and {})",
            h.data_dir()
        ));
    }

    let rm = leftovers(h, &found);
    if !rm.is_empty() {
        let mut script = format!(
            "rm -f -- {}",
            rm.iter()
                .map(|f| shell_quote(f))
                .collect::<Vec<_>>()
                .join(" ")
        );
        // Drop-in directories and the default config directory go when they are empty.
        let mut dirs: Vec<String> = SERVICES
            .iter()
            .flat_map(|s| InitSystem::ALL.map(|i| (i, s)))
            .filter(|(i, s)| found.env_files.contains(&i.env_file(s)))
            .filter_map(|(i, s)| i.env_dir(s))
            .collect();
        let k0s_dir = DEFAULT_CONFIG_PATH.rsplit_once('/').map(|(d, _)| d);
        dirs.extend(k0s_dir.map(String::from));
        for d in dirs {
            script += &format!("; rmdir {} 2>/dev/null || true", shell_quote(&d));
        }
        p.remote.run(Cmd::new(script).sudo()).await?;
        for f in rm {
            changes.push(format!("removed {f}"));
        }
    }

    if let Ok(init) = p.init_system()
        && init.reload(&p.remote).await?
    {
        changes.push("reloaded the service manager".into());
    }
    tracing::info!(about = %h.name, "reset");
    run_hooks(h, "after", changes).await
}

/// What [`reset_host`] would do on host `idx`, for a dry run (reads the host, changes nothing).
pub async fn plan_reset_host(
    state: &State,
    idx: usize,
    steps: ResetSteps,
) -> Result<Vec<String>, Failure> {
    let h = &state.hosts[idx];
    let p = h.probed()?;
    let found = probe(h).await?;
    let mut plan = Vec::new();
    for cmd in hook_commands(h, "before") {
        plan.push(format!("run before reset hook: {cmd:?}"));
    }
    if steps.delete_node
        && h.config.is_worker()
        && other_leader(state, idx).is_some()
        && let Ok(node) = h.node_name()
    {
        plan.push(format!("delete node {node} from the cluster"));
    }
    if steps.etcd_leave
        && h.config.is_controller()
        && uses_etcd(state, h)
        && other_leader(state, idx).is_some()
    {
        plan.push(format!("remove the etcd member {}", peer_address(h)));
    }
    if found.anything() {
        for svc in running_services(h, &found).await? {
            plan.push(format!("stop the {svc} service"));
        }
        if found.data_dir || found.kubelet_root || !found.services.is_empty() {
            plan.push(format!(
                "run k0s reset (remove the k0s services and {})",
                h.data_dir()
            ));
        }
        for f in leftovers(h, &found) {
            plan.push(format!("remove {f}"));
        }
        if p.init_system().is_ok_and(|i| i.reload_cmd().is_some()) {
            plan.push("reload the service manager".into());
        }
    }
    for cmd in hook_commands(h, "after") {
        plan.push(format!("run after reset hook: {cmd:?}"));
    }
    Ok(plan)
}

/// The host part of an etcd peer URL (`https://10.0.0.1:2380` → `10.0.0.1`).
pub fn peer_host(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_leave_uses_flags_k0s_has() {
        let c = etcd_leave_command("/usr/local/bin/k0s", "10.0.0.2", "/var/lib/k0s");
        assert_eq!(
            c,
            "/usr/local/bin/k0s etcd leave --peer-address=10.0.0.2 --data-dir=/var/lib/k0s"
        );
        assert!(!c.contains("--datadir"));
    }
}
