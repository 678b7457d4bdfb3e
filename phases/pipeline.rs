//! Each command's pipeline, composed from named parts. A part is a short, ordered list of
//! phases that belong together; a pipeline is its parts in order. Nothing here looks phases
//! up by title: what runs, and in what order, is read off these functions.
//!
//! | command                     | parts                                                            |
//! |-----------------------------|------------------------------------------------------------------|
//! | `apply`                     | [`set_version()`], [`fold_probe()`] (leader reads), [`lock()`], [`connect_hooks()`], [`prepare_and_validate_hosts()`], [`gather_and_validate_facts()`], [`deliver()`], [`install()`], [`upgrade()`], [`remove_nodes()`], [`after_apply()`], `--kubeconfig-out`, [`finish()`] |
//! | `reset`                     | [`connect_and_gather()`] (with [`fold_probe()`]), [`reset_hosts()`], [`finish()`] |
//! | `backup`                    | [`connect_and_gather()`], [`take_backup()`], [`finish()`]              |
//! | `kubeconfig`, `config edit/status` | [`first_controller()`] (the command then talks to it)       |

use super::steps::reset_host::ResetSteps;
use super::{
    Phase, configure_k0s, connect, detect_os, disconnect, gather_k0s_facts, hooks, init_leader,
    install_binaries, install_controllers, install_workers, kubeconfig, lock, manifests,
    prepare_hosts, prune_nodes, reinstall, remove_nodes, service_env, set_version, stage_binaries,
    token_workaround, upgrade_controllers, upgrade_workers, upload_files, validate_facts,
    validate_hosts,
};

/// Phases in the order they run.
pub type Phases = Vec<Box<dyn Phase>>;

/// Joins parts into one pipeline, in order.
fn compose(parts: impl IntoIterator<Item = Phases>) -> Phases {
    parts.into_iter().flatten().collect()
}

// ---- parts ----------------------------------------------------------------------------------

/// "Set k0s version": the target version (looked up when the manifest has none).
pub fn set_version() -> Phases {
    vec![Box::new(set_version::SetK0sVersion)]
}

/// "Connect to hosts", "Detect host operating systems".
pub fn connect_and_probe() -> Phases {
    vec![
        Box::new(connect::Connect),
        Box::new(detect_os::DetectOs::default()),
    ]
}

/// [`connect_and_probe()`] with the probe folding in the host lock and the k0s facts: for
/// pipelines whose next steps are [`lock()`] and [`gather_facts()`] (apply, reset, backup),
/// the probe's one round trip per host also takes the lock (a dry run: checks it) and reads
/// the k0s facts — with `leader_reads` (apply) also the expected leader's cluster ID and node
/// and etcd member lists — and those phases use what it read (see [`detect_os::DetectOs`]).
pub fn fold_probe(leader_reads: bool) -> Phases {
    vec![
        Box::new(connect::Connect),
        Box::new(detect_os::DetectOs {
            fold: true,
            leader_reads,
        }),
    ]
}

/// "Acquire exclusive host lock": held from right after the hosts are known until [`finish()`].
pub fn lock() -> Phases {
    vec![Box::new(lock::AcquireLock)]
}

/// "Run connect.after hooks".
pub fn connect_hooks() -> Phases {
    vec![Box::new(hooks::RunHooks {
        title: "Run connect.after hooks",
        action: "connect",
        stage: "after",
    })]
}

/// "Validate hosts" (it guards installs).
pub fn validate_hosts() -> Phases {
    vec![Box::new(validate_hosts::ValidateHosts)]
}

/// "Prepare hosts", then "Validate hosts".
pub fn prepare_and_validate_hosts() -> Phases {
    compose([
        vec![Box::new(prepare_hosts::PrepareHosts) as Box<dyn Phase>],
        validate_hosts(),
    ])
}

/// "Gather k0s facts": what runs where, and the leader.
pub fn gather_facts() -> Phases {
    vec![Box::new(gather_k0s_facts::GatherK0sFacts)]
}

/// "Gather k0s facts", "Validate facts", and the join-token workaround of old k0s.
pub fn gather_and_validate_facts() -> Phases {
    compose([
        gather_facts(),
        vec![
            Box::new(validate_facts::ValidateFacts) as Box<dyn Phase>,
            Box::new(token_workaround::EnsureJoinTokenWorkaround),
        ],
    ])
}

/// Everything that goes onto the hosts before k0s is installed or upgraded: binaries, files,
/// the k0s config, a restored backup.
pub fn deliver() -> Phases {
    vec![
        Box::new(stage_binaries::StageBinaries),
        Box::new(upload_files::UploadFiles),
        Box::new(install_binaries::InstallBinaries),
        Box::new(configure_k0s::ConfigureK0s),
        Box::new(super::backup::RestoreState),
    ]
}

/// "Run Before Apply Hooks", then installing k0s: the leader, the other controllers, the
/// workers.
pub fn install() -> Phases {
    vec![
        Box::new(hooks::RunHooks {
            title: "Run Before Apply Hooks",
            action: "apply",
            stage: "before",
        }),
        Box::new(init_leader::InitLeader),
        Box::new(install_controllers::InstallControllers),
        Box::new(install_workers::InstallWorkers),
    ]
}

/// Bringing running hosts to the manifest: upgrades, reinstalls with changed flags, the
/// service environment.
pub fn upgrade() -> Phases {
    vec![
        Box::new(upgrade_controllers::UpgradeControllers),
        Box::new(upgrade_workers::UpgradeWorkers),
        Box::new(reinstall::Reinstall),
        Box::new(service_env::ConfigureServiceEnv),
    ]
}

/// Nodes leaving the cluster: those marked `reset: true`, then (with `--prune`) those not in
/// the manifest.
pub fn remove_nodes() -> Phases {
    vec![
        Box::new(remove_nodes::RemoveNodes),
        Box::new(prune_nodes::PruneNodes),
    ]
}

/// "Run After Apply Hooks", then "Apply additional manifests".
pub fn after_apply() -> Phases {
    vec![
        Box::new(hooks::RunHooks {
            title: "Run After Apply Hooks",
            action: "apply",
            stage: "after",
        }),
        Box::new(manifests::ApplyManifests),
    ]
}

/// "Release exclusive host lock", "Disconnect from hosts".
pub fn finish() -> Phases {
    vec![
        Box::new(lock::ReleaseLock),
        Box::new(disconnect::Disconnect),
    ]
}

/// The front of the pipelines that only act on what runs (`reset`, `backup`): connect, probe,
/// the host lock, `connect.after` hooks, k0s facts. No version lookup (nothing is installed)
/// and no host validation (it guards installs).
pub fn connect_and_gather() -> Phases {
    compose([fold_probe(false), lock(), connect_hooks(), gather_facts()])
}

/// Workers in parallel, then the other controllers one at a time, then the leader (k0sctl's
/// order).
pub fn reset_hosts(steps: ResetSteps) -> Phases {
    vec![
        Box::new(super::reset::ResetHosts::workers(steps)),
        Box::new(super::reset::ResetHosts::controllers(steps)),
        Box::new(super::reset::ResetHosts::leader(steps)),
    ]
}

/// The leader's state into the local file `output`.
pub fn take_backup(output: std::path::PathBuf) -> Phases {
    vec![Box::new(super::backup::TakeBackup { output })]
}

// ---- pipelines ------------------------------------------------------------------------------

/// The read-only front every install starts with: version, connect, probe, `connect.after`
/// hooks, validate.
pub fn preflight() -> Phases {
    compose([
        set_version(),
        connect_and_probe(),
        connect_hooks(),
        validate_hosts(),
    ])
}

/// `k0sctl apply`: the phases in k0sctl's order (k0sctl's `cmd/apply.go`), and
/// `--kubeconfig-out` before the lock is released.
pub fn apply(kubeconfig_out: Option<kubeconfig::GetKubeconfig>) -> Phases {
    compose([
        set_version(),
        fold_probe(true),
        lock(),
        connect_hooks(),
        prepare_and_validate_hosts(),
        gather_and_validate_facts(),
        deliver(),
        install(),
        upgrade(),
        remove_nodes(),
        after_apply(),
        kubeconfig_out
            .into_iter()
            .map(|k| Box::new(k) as Box<dyn Phase>)
            .collect(),
        finish(),
    ])
}

/// `k0sctl reset`: every host is marked `reset: true` by the command.
pub fn reset() -> Phases {
    compose([
        connect_and_gather(),
        reset_hosts(ResetSteps::default()),
        finish(),
    ])
}

/// `k0sctl backup`: the leader's state into the local file `output`.
pub fn backup(output: std::path::PathBuf) -> Phases {
    compose([connect_and_gather(), take_backup(output), finish()])
}

/// `k0sctl kubeconfig`, `config edit`, `config status`: connect to the manifest's first
/// controller (the command keeps only it) and run its `connect.after` hooks; the command
/// then talks to it. No version lookup and no host validation (nothing is installed).
pub fn first_controller() -> Phases {
    compose([connect_and_probe(), connect_hooks()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(p: &Phases) -> Vec<&'static str> {
        p.iter().map(|ph| ph.title()).collect()
    }

    #[test]
    fn apply_runs_k0sctls_phases_in_order() {
        let kc = kubeconfig::GetKubeconfig {
            out: "kc".into(),
            options: Default::default(),
        };
        let all = titles(&apply(Some(kc)));
        assert_eq!(
            all,
            [
                "Set k0s version",
                "Connect to hosts",
                "Detect host operating systems",
                "Acquire exclusive host lock",
                "Run connect.after hooks",
                "Prepare hosts",
                "Validate hosts",
                "Gather k0s facts",
                "Validate facts",
                "Ensure join token workaround",
                "Stage k0s binaries on hosts",
                "Upload files to hosts",
                "Install k0s binaries on hosts",
                "Configure k0s",
                "Restore cluster state",
                "Run Before Apply Hooks",
                "Initialize the k0s cluster",
                "Install controllers",
                "Install workers",
                "Upgrade controllers",
                "Upgrade workers",
                "Reinstall",
                "Configure k0s service environment",
                "Remove nodes marked reset",
                "Prune nodes not in the configuration",
                "Run After Apply Hooks",
                "Apply additional manifests",
                "Get admin kubeconfig",
                "Release exclusive host lock",
                "Disconnect from hosts",
            ]
        );
        let without: Vec<_> = all
            .iter()
            .copied()
            .filter(|t| *t != "Get admin kubeconfig")
            .collect();
        assert_eq!(titles(&apply(None)), without);
    }

    #[test]
    fn lifecycle_pipelines_share_their_front_and_end() {
        let front = [
            "Connect to hosts",
            "Detect host operating systems",
            "Acquire exclusive host lock",
            "Run connect.after hooks",
            "Gather k0s facts",
        ];
        let end = ["Release exclusive host lock", "Disconnect from hosts"];
        let reset_all: Vec<&str> = front
            .iter()
            .chain(&["Reset workers", "Reset controllers", "Reset leader"])
            .chain(&end)
            .copied()
            .collect();
        assert_eq!(titles(&reset()), reset_all);
        let backup_all: Vec<&str> = front
            .iter()
            .chain(&["Take backup"])
            .chain(&end)
            .copied()
            .collect();
        assert_eq!(titles(&backup("b.tar.gz".into())), backup_all);
        assert_eq!(
            titles(&first_controller()),
            [
                "Connect to hosts",
                "Detect host operating systems",
                "Run connect.after hooks"
            ]
        );
        assert_eq!(
            titles(&preflight()),
            [
                "Set k0s version",
                "Connect to hosts",
                "Detect host operating systems",
                "Run connect.after hooks",
                "Validate hosts"
            ]
        );
    }
}
