//! The state a pipeline run carries from phase to phase, passed explicitly as `&mut State`.

use crate::config::{self, Loaded};
use crate::host;
use crate::k0s::version::K0sVersion;
use crate::transport::ssh::SshConfig;
use crate::transport::{ConnectSpec, Limits, Pool, Remote, Secret};

use super::Plan;

/// Command-line choices that steer the phases.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    pub force: bool,
    /// Hosts configured in parallel (0 = unlimited).
    pub concurrency: usize,
    /// Parallel uploads (0 = same as concurrency).
    pub uploads: usize,
    /// The sudo password for hosts whose user needs one.
    pub sudo_password: Option<Secret>,
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
}

impl HostState {
    /// The probed host; phases after detection may rely on it.
    pub fn probed(&self) -> Result<&host::Host, String> {
        self.host
            .as_ref()
            .ok_or_else(|| "host was not probed (internal error: phase order)".to_string())
    }

    /// The node name k0s registers: the `hostname` override or the host's own, lowercased.
    pub fn node_name(&self) -> Option<String> {
        self.config
            .hostname
            .as_ref()
            .map(|h| h.to_lowercase())
            .or_else(|| self.host.as_ref().map(|h| h.facts.hostname.clone()))
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
            })
            .collect();
        State {
            pool: Pool::new(Limits::new(opts.concurrency, opts.uploads)),
            config,
            opts,
            ssh_config,
            hosts,
            plan: Plan::default(),
        }
    }

    /// The target k0s version, when the manifest pins one.
    pub fn target_version(&self) -> Option<K0sVersion> {
        self.config
            .cluster
            .spec
            .k0s
            .version
            .as_deref()
            .and_then(|v| K0sVersion::parse(v).ok())
    }
}
