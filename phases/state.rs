//! The state a pipeline run carries from phase to phase, passed explicitly as `&mut State`.

use crate::config::{self, Loaded};
use crate::host;
use crate::k0s::status::K0sStatus;
use crate::k0s::version::K0sVersion;
use crate::transport::ssh::SshConfig;
use crate::transport::{ConnectSpec, Limits, Pool, Remote, Secret, UploadProgress};

use super::Plan;
use super::failure::Missing;

/// Receives machine-readable events (`--output json`); secrets never reach it.
pub type EventSink = std::sync::Arc<dyn Fn(serde_json::Value) + Send + Sync>;

/// Receives per-host upload byte progress (the terminal display), if anyone listens: called
/// with (host name, bytes sent so far, total bytes when known).
#[derive(Clone, Default)]
pub struct ProgressSink(Option<std::sync::Arc<HostProgressFn>>);

/// `(host name, bytes sent so far, total bytes when known)`.
type HostProgressFn = dyn Fn(&str, u64, Option<u64>) + Send + Sync;

impl ProgressSink {
    pub fn new(f: impl Fn(&str, u64, Option<u64>) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(f)))
    }

    /// The transport's progress callback for an upload to `host` (`None` when nobody listens).
    pub fn upload(&self, host: &str) -> Option<UploadProgress> {
        let f = self.0.clone()?;
        let host = host.to_string();
        Some(UploadProgress(std::sync::Arc::new(move |sent, total| {
            f(&host, sent, total)
        })))
    }
}

/// Command-line choices that steer the phases.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    pub force: bool,
    /// Hosts configured in parallel (0 = unlimited).
    pub concurrency: usize,
    /// Parallel uploads (0 = same as concurrency).
    pub uploads: usize,
    /// Don't wait for workers to become Ready (`--no-wait`).
    pub no_wait: bool,
    /// Don't drain nodes before upgrading them (`--no-drain`, `spec.options.drain.enabled:
    /// false`).
    pub no_drain: bool,
    /// Remove nodes and etcd members the cluster has but the manifest does not name
    /// (`--prune`).
    pub prune: bool,
    /// `--restore-from`: the backup archive to restore on the leader before it is initialised.
    pub restore_from: Option<std::path::PathBuf>,
    /// The sudo password for hosts whose user needs one.
    pub sudo_password: Option<Secret>,
    /// Allow a target version older than what runs (hidden k0sctl flag).
    pub disable_downgrade_check: bool,
}

/// One manifest host and what the run has learned about it.
pub struct HostState {
    /// Position in `spec.hosts`.
    pub index: usize,
    /// The manifest entry.
    pub config: config::Host,
    /// How messages name the host (`address:port`, as k0sctl prints it).
    pub name: String,
    pub spec: Option<ConnectSpec>,
    /// Set by "Connect to hosts".
    pub remote: Option<Remote>,
    /// Set by "Detect host operating systems": facts, OS module, privilege.
    pub host: Option<host::Host>,
    /// What the host probe of "Detect host operating systems" printed as root in its round
    /// trip (`@@name` sections: the lock attempt, the k0s facts, the expected leader's cluster
    /// reads), used by the lock, k0s facts and prune phases instead of asking again. `None`
    /// when the probe did not fold those in or could not run anything as root.
    pub probe_out: Option<String>,
    /// Set by "Gather k0s facts".
    pub k0s: Option<K0sFacts>,
    /// Path of the verified k0s binary staged on the host (a temp name next to the final path),
    /// set by "Stage k0s binaries" and consumed by "Install k0s binaries" or an upgrade.
    pub staged: Option<String>,
    /// A controller of a cluster in k0s dynamic config mode (set by "Gather k0s facts"): it is
    /// installed with `--enable-dynamic-config` and, unless it initialises the cluster, gets
    /// only the node-specific part of the k0s config.
    pub dynamic_config: bool,
}

/// What is on a host k0s-wise before the run changes anything.
#[derive(Debug, Clone, Default)]
pub struct K0sFacts {
    /// `k0s version` of the installed binary, if there is one.
    pub binary_version: Option<K0sVersion>,
    /// `k0s status -o json`, when k0s runs.
    pub status: Option<K0sStatus>,
    /// The k0s service that is installed (k0scontroller, k0sworker, or the old k0sserver).
    pub service: Option<String>,
    /// The k0s config file exists (controllers).
    pub config_exists: bool,
    /// Its content (read in the same round trip).
    pub config_text: Option<String>,
    /// The content of the k0s service's environment drop-in, when the file exists.
    pub service_env: Option<String>,
}

/// k0s's Linux default paths (k0sctl's configurer values).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/k0s";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/k0s/k0s.yaml";
pub const DEFAULT_TOKEN_PATH: &str = "/etc/k0s/k0stoken";

impl HostState {
    /// The probed host; phases after detection may rely on it.
    pub fn probed(&self) -> Result<&host::Host, Missing> {
        self.host.as_ref().ok_or(Missing::Probed)
    }

    /// The node name k0s registers: the `hostname` override or the host's own, lowercased.
    /// An error naming the missing fact when neither is known or the name is empty (an empty
    /// name must never reach `kubectl cordon` or a node deletion).
    pub fn node_name(&self) -> Result<String, Missing> {
        self.config
            .hostname
            .as_ref()
            .map(|h| h.to_lowercase())
            .or_else(|| self.host.as_ref().map(|h| h.facts.hostname.clone()))
            .filter(|n| !n.trim().is_empty())
            .ok_or(Missing::NodeName)
    }

    /// The staged k0s binary's path; an error when none was staged or the path is empty (an
    /// empty path must never reach `mv -f`).
    pub fn staged_path(&self) -> Result<&str, Missing> {
        self.staged
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .ok_or(Missing::Staged)
    }

    /// The data dir: the manifest's (or `--data-dir` in installFlags), else k0s's default.
    pub fn data_dir(&self) -> String {
        self.config
            .data_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
    }

    /// The k0s config file: `--config`/`-c` in installFlags, else the default.
    pub fn k0s_config_path(&self) -> String {
        let f = &self.config.install_flags;
        f.value("--config")
            .or_else(|| f.value("-c"))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_CONFIG_PATH.into())
    }

    /// The join token file: `--token-file` in installFlags, else the default.
    pub fn token_path(&self) -> String {
        self.config
            .install_flags
            .value("--token-file")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_PATH.into())
    }

    /// The k0s service name for the host's role.
    pub fn service_name(&self) -> &'static str {
        if self.config.is_controller() {
            "k0scontroller"
        } else {
            "k0sworker"
        }
    }

    /// True when k0s runs on the host (as found by "Gather k0s facts").
    pub fn is_running(&self) -> bool {
        self.k0s.as_ref().is_some_and(|k| k.status.is_some())
    }

    /// The private address: the manifest's `privateAddress`, else the one discovered.
    pub fn private_address(&self) -> Option<String> {
        self.config.private_address.clone().or_else(|| {
            self.host
                .as_ref()
                .and_then(|h| h.facts.private_address.clone())
        })
    }
}

/// Everything a pipeline run knows.
pub struct State {
    pub config: Loaded,
    pub opts: RunOptions,
    pub pool: Pool,
    pub ssh_config: SshConfig,
    pub hosts: Vec<HostState>,
    /// What a dry run would change.
    pub plan: Plan,
    /// Index of the leader controller: the first controller running k0s, else the first
    /// controller (set by "Gather k0s facts").
    pub leader: Option<usize>,
    /// The kube-system namespace UID of a running cluster.
    pub cluster_id: Option<String>,
    /// The k0s version to install: `spec.k0s.version`, or looked up by "Set k0s version".
    pub target: Option<K0sVersion>,
    /// Hosts whose k0s install started in this run but did not finish (clean-ups reset them).
    pub unfinished: Vec<usize>,
    /// What this run changed, per host (the counterpart of `plan` for real runs).
    pub changes: Plan,
    /// Where events go (`--output json`), if anywhere.
    pub events: Option<EventSink>,
    /// Where upload byte progress goes (the terminal display), if anywhere.
    pub progress: ProgressSink,
    /// This run holds the host locks (see [`super::lock`]).
    pub lock_held: bool,
    /// The task refreshing the locks.
    pub lock_refresh: Option<tokio::task::AbortHandle>,
}

impl State {
    pub fn new(config: Loaded, opts: RunOptions, ssh_config: SshConfig) -> Self {
        let hosts = config
            .cluster
            .spec
            .hosts
            .iter()
            .enumerate()
            .map(|(index, h)| HostState {
                index,
                name: h.display_address(),
                config: h.clone(),
                spec: None,
                remote: None,
                host: None,
                probe_out: None,
                k0s: None,
                staged: None,
                dynamic_config: false,
            })
            .collect();
        State {
            pool: Pool::new(Limits::new(opts.concurrency, opts.uploads)),
            config,
            opts,
            ssh_config,
            hosts,
            plan: Plan::default(),
            leader: None,
            cluster_id: None,
            target: None,
            unfinished: Vec::new(),
            lock_held: false,
            lock_refresh: None,
            changes: Plan::default(),
            events: None,
            progress: ProgressSink::default(),
        }
    }

    /// The leader controller's index ("Gather k0s facts" chooses it).
    pub fn leader_index(&self) -> Result<usize, Missing> {
        self.leader
            .filter(|&l| l < self.hosts.len())
            .ok_or(Missing::Leader)
    }

    /// The leader controller ("Gather k0s facts" chooses it).
    pub fn leader_host(&self) -> Result<&HostState, Missing> {
        Ok(&self.hosts[self.leader_index()?])
    }

    /// The target version, or an error naming it as missing.
    pub fn require_target(&self) -> Result<K0sVersion, Missing> {
        self.target_version().ok_or(Missing::TargetVersion)
    }

    /// Emits an event when a sink is set.
    pub fn emit(&self, event: serde_json::Value) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }

    /// Records a change made on a host (and emits it).
    pub fn changed(&mut self, host: impl Into<String>, what: impl Into<String>) {
        let (host, what) = (host.into(), what.into());
        self.emit(serde_json::json!({"event": "change", "host": host, "action": what}));
        self.changes.add(host, what);
    }

    /// Records a planned change of a dry run (and emits it).
    pub fn planned(&mut self, host: impl Into<String>, what: impl Into<String>) {
        let (host, what) = (host.into(), what.into());
        self.emit(serde_json::json!({"event": "plan", "host": host, "action": what}));
        self.plan.add(host, what);
    }

    /// `spec.<path…>` of the manifest's k0s config, if it says.
    pub fn k0s_spec(&self, path: &[&str]) -> Option<&serde_json::Value> {
        let spec = self.config.cluster.spec.k0s.config.get("spec");
        path.iter().try_fold(spec?, |v, k| v.get(*k))
    }

    /// The target k0s version: the manifest's, or the one "Set k0s version" looked up.
    pub fn target_version(&self) -> Option<K0sVersion> {
        self.target.clone().or_else(|| {
            self.config
                .cluster
                .spec
                .k0s
                .version
                .as_deref()
                .and_then(|v| K0sVersion::parse(v).ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::phases::testkit::{Kit, manifest_with};

    /// Paths and names come from installFlags and the manifest before k0s's defaults.
    #[test]
    fn host_paths_and_names_follow_the_manifest() {
        let y = manifest_with(
            &[
                (
                    "controller",
                    "    hostname: Ctl-A\n    installFlags:\n    - --config=/srv/k0s.yaml\n    - --token-file=/srv/token\n    dataDir: /srv/k0s\n",
                ),
                ("worker", ""),
            ],
            "",
        );
        let k = Kit::from_yaml(&y, Default::default());
        let (c, w) = (&k.state.hosts[0], &k.state.hosts[1]);
        assert_eq!(c.node_name().ok().as_deref(), Some("ctl-a"));
        assert_eq!(
            w.node_name().ok().as_deref(),
            Some("node-2"),
            "the probed hostname"
        );
        assert_eq!(
            (c.k0s_config_path(), c.token_path(), c.data_dir()),
            (
                "/srv/k0s.yaml".into(),
                "/srv/token".into(),
                "/srv/k0s".into()
            )
        );
        assert_eq!(
            (w.k0s_config_path(), w.token_path(), w.data_dir()),
            (
                "/etc/k0s/k0s.yaml".into(),
                "/etc/k0s/k0stoken".into(),
                "/var/lib/k0s".into()
            )
        );
        assert_eq!(
            (c.service_name(), w.service_name()),
            ("k0scontroller", "k0sworker")
        );
        assert!(!c.is_running());
    }

    #[test]
    fn changes_and_plans_are_recorded_and_emitted() {
        let mut k = Kit::new(&["controller"]);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        k.state.events = Some(std::sync::Arc::new(move |v| s.lock().unwrap().push(v)));
        k.state.changed("h", "did x");
        k.state.planned("h", "would do y");
        assert_eq!(
            k.state.changes.changes,
            [("h".to_string(), "did x".to_string())]
        );
        assert_eq!(
            k.state.plan.changes,
            [("h".to_string(), "would do y".to_string())]
        );
        let ev = seen.lock().unwrap();
        assert_eq!(ev[0]["event"], "change");
        assert_eq!(ev[1]["event"], "plan");
        assert_eq!(ev[1]["action"], "would do y");
    }
}
