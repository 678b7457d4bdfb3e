//! Test kit for phase unit tests: a [`State`] whose hosts are connected over the scripted
//! transport ([`crate::transport::scripted`]) and already probed (facts, OS module, root
//! privilege), so a phase can be run through the [`Phase`] trait without sshd or namespaces.
//!
//! ```ignore
//! let mut k = Kit::new(&["controller", "worker"]);
//! k.script(1).on("k0s version", "v1.31.1+k0s.0");
//! k.run(&SomePhase).await.unwrap();
//! assert!(k.script(1).has_run("k0s install worker"));
//! ```

use std::sync::Arc;

use crate::host::{Facts, Host, InitSystem, OsRelease, configurer};
use crate::k0s::status::K0sStatus;
use crate::k0s::version::K0sVersion;
use crate::transport::scripted::{Script, ScriptedConnection};
use crate::transport::{Connection, Limits, Privilege, Remote};

use super::state::K0sFacts;
use super::{Phase, PhaseError, RunOptions, State};

/// A manifest with one host per role, at 10.0.0.1, 10.0.0.2, ..., port 22; `extra` is put
/// under `spec:` after the hosts (indented by the caller, e.g. `"  k0s:\n    version: v1.31.1+k0s.0\n"`).
pub fn manifest(roles: &[&str], extra: &str) -> String {
    let hosts: Vec<(&str, &str)> = roles.iter().map(|r| (*r, "")).collect();
    manifest_with(&hosts, extra)
}

/// Like [`manifest`], with more YAML for each host: `(role, lines)`, the lines indented by
/// four spaces (e.g. `"    dataDir: /srv/k0s\n"`).
pub fn manifest_with(hosts: &[(&str, &str)], extra: &str) -> String {
    let mut y =
        String::from("apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n");
    for (i, (r, more)) in hosts.iter().enumerate() {
        y.push_str(&format!(
            "  - role: {r}\n    ssh:\n      address: 10.0.0.{}\n{more}",
            i + 1
        ));
    }
    y.push_str(extra);
    y
}

/// The facts a probed Ubuntu host with systemd would have; hostname `node-<i+1>`.
pub fn facts(i: usize) -> Facts {
    Facts {
        os: OsRelease {
            id: "ubuntu".into(),
            id_like: vec!["debian".into()],
            name: "Ubuntu".into(),
            version_id: "22.04".into(),
            pretty_name: "Ubuntu 22.04 LTS".into(),
        },
        arch: "amd64".into(),
        machine: "x86_64".into(),
        hostname: format!("node-{}", i + 1),
        machine_id: format!("{:032x}", i + 1),
        uid: 0,
        init: Some(InitSystem::Systemd),
        in_container: false,
        root_shared: true,
        lock_file: "/run/lock/k0sctl".into(),
        has_curl: true,
        k0s_in_path: None,
        private_interface: Some("eth0".into()),
        private_address: None,
        addresses: vec![format!("10.0.0.{}", i + 1)],
        clock_skew_secs: 0.0,
        privilege: "root".into(),
    }
}

/// The pipeline state of a manifest text, with `opts` and no host connected (for decisions
/// that need only the manifest).
pub fn state_of(yaml: &str, opts: RunOptions) -> State {
    let cfg = crate::config::load_str(yaml, "k0sctl.yaml", &|_| None)
        .unwrap_or_else(|e| panic!("test manifest: {e}"));
    State::new(cfg, opts, crate::transport::ssh::SshConfig::parse(""))
}

/// A pipeline state over scripted hosts, and the scripts.
pub struct Kit {
    pub state: State,
    pub scripts: Vec<Script>,
}

impl Kit {
    /// One host per role (see [`manifest`]), no extra spec.
    pub fn new(roles: &[&str]) -> Self {
        Self::from_yaml(&manifest(roles, ""), RunOptions::default())
    }

    /// Hosts from this manifest text, each connected and probed (see [`facts`]).
    pub fn from_yaml(yaml: &str, opts: RunOptions) -> Self {
        let mut state = state_of(yaml, opts);
        let limits = Arc::new(Limits::new(state.opts.concurrency, state.opts.uploads));
        let mut scripts = Vec::new();
        for (i, h) in state.hosts.iter_mut().enumerate() {
            let script = Script::new();
            let conn = Connection::Scripted(ScriptedConnection::new(
                format!("root@{}", h.name),
                script.clone(),
            ));
            let mut remote = Remote::new(Arc::new(conn), limits.clone());
            remote.set_privilege(Privilege::Root);
            let facts = facts(i);
            let sel = configurer::select(&facts.os).expect("ubuntu is supported");
            h.host = Some(Host {
                remote: remote.clone(),
                facts,
                configurer: sel.configurer,
                fallback: None,
                k0s_binary_path: h
                    .config
                    .k0s_install_path
                    .clone()
                    .unwrap_or_else(|| sel.configurer.k0s_binary_path.to_string()),
            });
            h.remote = Some(remote);
            // Never dialled: clean-ups only need to know the host was connected.
            h.spec = Some(crate::transport::ConnectSpec::Localhost);
            scripts.push(script);
        }
        Kit { state, scripts }
    }

    /// Like [`Kit::new`] with run options (e.g. dry run).
    pub fn with_opts(roles: &[&str], opts: RunOptions) -> Self {
        Self::from_yaml(&manifest(roles, ""), opts)
    }

    pub fn script(&self, i: usize) -> &Script {
        &self.scripts[i]
    }

    /// Host `i` installs and starts a k0s controller whose API then serves (`/readyz` ok), and
    /// drops its unfinished-install marker: the answers of a controller install that succeeds.
    pub fn controller_install_succeeds(&self, i: usize) -> &Script {
        self.script(i)
            .on("/usr/local/bin/k0s install controller", "")
            .on("systemctl start k0scontroller", "")
            .on("systemctl is-active --quiet k0scontroller", "")
            .on("get --raw=/readyz", "ok")
            .on("rm -f /etc/k0s/.k0sctl-install-incomplete", "")
    }

    /// Mark host `i` as running k0s `version` in its manifest role (as "Gather k0s facts"
    /// would), with the installed binary of the same version.
    pub fn running(&mut self, i: usize, version: &str) -> &mut Self {
        let h = &mut self.state.hosts[i];
        let v = K0sVersion::parse(version).expect("version");
        let role = h.config.role.clone();
        let status = K0sStatus {
            version: v.clone(),
            pid: 100 + i as i64,
            role,
            args: Vec::new(),
        };
        h.k0s = Some(K0sFacts {
            binary_version: Some(v),
            status: Some(status),
            service: Some(h.service_name().to_string()),
            config_exists: h.config.is_controller(),
            ..Default::default()
        });
        self
    }

    /// Mark host `i` as having no k0s at all (as "Gather k0s facts" would).
    pub fn fresh(&mut self, i: usize) -> &mut Self {
        self.state.hosts[i].k0s = Some(K0sFacts::default());
        self
    }

    /// Set the leader and the target version.
    pub fn leader(&mut self, i: usize) -> &mut Self {
        self.state.leader = Some(i);
        self
    }

    pub fn target(&mut self, version: &str) -> &mut Self {
        self.state.target = Some(K0sVersion::parse(version).expect("version"));
        self
    }

    /// Run a phase's `run` (or `dry_run` when the options say so), as the manager would.
    pub async fn run(&mut self, p: &dyn Phase) -> Result<(), PhaseError> {
        if self.state.opts.dry_run {
            p.dry_run(&mut self.state).await
        } else {
            p.run(&mut self.state).await
        }
    }

    /// The dry-run plan lines for host `i` (`what` of each change).
    pub fn plan_for(&self, i: usize) -> Vec<String> {
        let name = &self.state.hosts[i].name;
        self.state
            .plan
            .changes
            .iter()
            .filter(|(h, _)| h == name)
            .map(|(_, w)| w.clone())
            .collect()
    }

    /// The changes recorded for host `i` by a real run.
    pub fn changes_for(&self, i: usize) -> Vec<String> {
        let name = &self.state.hosts[i].name;
        self.state
            .changes
            .changes
            .iter()
            .filter(|(h, _)| h == name)
            .map(|(_, w)| w.clone())
            .collect()
    }

    /// No host ran anything (for dry runs and skipped work).
    pub fn assert_nothing_ran(&self) {
        for (i, s) in self.scripts.iter().enumerate() {
            let c = s.commands();
            assert!(c.is_empty(), "host {i} ran commands: {c:#?}");
        }
    }
}

/// A dry-run option set.
pub fn dry() -> RunOptions {
    RunOptions {
        dry_run: true,
        ..Default::default()
    }
}
