//! `k0sctl init`: print a configuration template, with hosts from arguments and/or stdin.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;

use clap::Args;

use crate::config::{self, Cluster, Host, Mapping, Ssh};
use crate::exit::CliError;

use super::Context;

#[derive(Debug, Args)]
#[command(
    long_about = "Outputs a new k0sctl configuration. When a list of addresses are provided, hosts are generated into the configuration. The list of addresses can also be provided via stdin."
)]
pub struct InitArgs {
    /// Host addresses, [user@]address[:port]; first --controller-count become controllers
    #[arg(value_name = "[user@]address[:port]")]
    pub addresses: Vec<String>,
    /// Include a skeleton k0s config section
    #[arg(long)]
    pub k0s: bool,
    /// Cluster name
    #[arg(long, short = 'n', default_value = "k0s-cluster")]
    pub cluster_name: String,
    /// The number of controllers to create when addresses are given
    #[arg(long, short = 'C', default_value_t = 1)]
    pub controller_count: usize,
    /// Host user when addresses given
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Host key path when addresses given
    #[arg(long, short = 'i')]
    pub key_path: Option<String>,
}

/// What `k0s config create` prints, roughly (k0sctl v0.32.2's DefaultK0sYaml, which no longer
/// has `podSecurityPolicy`).
pub const DEFAULT_K0S_YAML: &str = r#"apiVersion: k0s.k0sproject.io/v1beta1
kind: Cluster
metadata:
  name: k0s
spec:
  api:
    port: 6443
    k0sApiPort: 9443
  storage:
    type: etcd
  network:
    podCIDR: 10.244.0.0/16
    serviceCIDR: 10.96.0.0/12
    provider: kuberouter
    kuberouter:
      mtu: 0
      peerRouterIPs: ""
      peerRouterASNs: ""
      autoMTU: true
    kubeProxy:
      disabled: false
      mode: iptables
  telemetry:
    enabled: true
  installConfig:
    users:
      etcdUser: etcd
      kineUser: kube-apiserver
      konnectivityUser: konnectivity-server
      kubeAPIserverUser: kube-apiserver
      kubeSchedulerUser: kube-scheduler
  konnectivity:
    agentPort: 8132
    adminPort: 8133
"#;

pub fn run(_ctx: &Context, a: InitArgs) -> Result<(), CliError> {
    let mut lines = stdin_lines()?;
    lines.extend(a.addresses.iter().cloned());
    let cluster = build(&a, &lines);
    let out = config::to_yaml(&cluster);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Addresses piped in on stdin (a file or pipe, never a terminal or a character device such
/// as /dev/null), one per line.
fn stdin_lines() -> Result<Vec<String>, CliError> {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd().try_clone_to_owned()?;
    let meta = std::fs::File::from(fd).metadata()?;
    if meta.file_type().is_char_device() {
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    for line in stdin.lock().lines() {
        lines.push(line?);
    }
    Ok(lines)
}

/// Builds the template cluster for `lines` of `[user@]address[:port]` (comments allowed).
pub fn build(a: &InitArgs, lines: &[String]) -> Cluster {
    let mut cluster = Cluster::default();
    cluster.metadata.name = a.cluster_name.clone();
    let key_path = a.key_path.as_deref().map(expand_home);
    let mut hosts = Vec::new();
    for line in lines {
        let mut l = line.as_str();
        if let Some(i) = l.find('#')
            && i > 0
        {
            l = &l[..i];
        }
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let role = if hosts.len() >= a.controller_count {
            "worker"
        } else {
            "controller"
        };
        hosts.push(host_from_address(
            l,
            role,
            a.user.as_deref(),
            key_path.clone(),
        ));
    }
    if hosts.is_empty() {
        hosts = vec![
            host_from_address("10.0.0.1", "controller", None, None),
            host_from_address("10.0.0.2", "worker", None, None),
        ];
    }
    cluster.spec.hosts = hosts;
    if a.k0s {
        let (docs, _) = config::yaml::parse_documents(
            DEFAULT_K0S_YAML,
            &config::envsubst::SourceMap::identity(DEFAULT_K0S_YAML),
        );
        let (v, _): (serde_json::Value, _) = config::decode::decode(&docs[0].root, "");
        if let serde_json::Value::Object(m) = v {
            cluster.spec.k0s.config = m;
        }
    }
    cluster
}

fn host_from_address(addr: &str, role: &str, user: Option<&str>, key_path: Option<String>) -> Host {
    let mut user = user.map(str::to_string);
    let mut addr = addr.to_string();
    if let Some(i) = addr.find('@')
        && i > 0
    {
        user = Some(addr[..i].to_string());
        addr = addr[i + 1..].to_string();
    }
    let mut port = 22;
    if let Some(i) = addr.find(':')
        && i > 0
    {
        if let Ok(p) = addr[i + 1..].parse() {
            port = p;
        }
        addr.truncate(i);
    }
    Host {
        ssh: Some(Ssh {
            address: addr,
            user: user
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".into()),
            port,
            key_path,
            bastion: None,
            options: Mapping::new(),
        }),
        role: role.into(),
        ..Host::default()
    }
}

fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest).to_string_lossy().into_owned(),
        _ => p.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cc: usize) -> InitArgs {
        InitArgs {
            addresses: vec![],
            k0s: false,
            cluster_name: "k0s-cluster".into(),
            controller_count: cc,
            user: None,
            key_path: None,
        }
    }

    #[test]
    fn addresses_roles_users_ports() {
        let lines: Vec<String> = [
            "10.0.0.1",
            "# comment",
            "",
            "ubuntu@10.0.0.3:8022 # trailing",
            "10.0.0.4:x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = build(&args(1), &lines);
        let h = &c.spec.hosts;
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].role, "controller");
        assert_eq!(h[1].role, "worker");
        let s = h[1].ssh.as_ref().unwrap();
        assert_eq!(
            (s.user.as_str(), s.address.as_str(), s.port),
            ("ubuntu", "10.0.0.3", 8022)
        );
        let s = h[2].ssh.as_ref().unwrap();
        assert_eq!((s.address.as_str(), s.port), ("10.0.0.4", 22));
    }
}
