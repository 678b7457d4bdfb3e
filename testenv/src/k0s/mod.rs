//! k0s stand-in (TEST SCAFFOLDING): a `k0s` binary that follows the k0s command-line contract
//! k0sctl relies on (upstream k0sproject/k0s `cmd/*/` and `pkg/install/`; k0sctl's `phase/`): `version`, `install`,
//! `start`/`stop`, `controller`/`worker` (the services), `status`, `token`, `kubeconfig admin`,
//! `kubectl` (the machine's real kubectl with k0s's kubeconfig resolution), `etcd`, `config`,
//! `reset`, `backup`/`restore`, `sysinfo`. Errors print `Error: <msg>` on stderr, exit 1.

pub mod api;
pub mod controllers;
pub mod daemon;
pub mod etcd;
pub mod pki;
pub mod store;
pub mod token;
pub mod util;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags that were set on the command line (long name → value; bools as "true"/"false").
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub set: BTreeMap<String, String>,
    /// Every value given per flag, in order (repeated slice/map flags accumulate in k0s).
    pub all: BTreeMap<String, Vec<String>>,
    pub env: Vec<String>,
}

impl Flags {
    pub fn get(&self, k: &str) -> Option<&String> {
        self.set.get(k)
    }
    pub fn bool(&self, k: &str) -> bool {
        self.set.get(k).map(|v| v == "true").unwrap_or(false)
    }
}

/// (long, short, is_bool)
type Spec = &'static [(&'static str, &'static str, bool)];

const DEBUG: Spec = &[
    ("verbose", "v", true),
    ("debug", "d", true),
    ("debugListenOn", "", false),
];
const DATA: Spec = &[("data-dir", "", false), ("status-socket", "", false)];
const CONTROLLER: Spec = &[
    ("config", "c", false),
    ("enable-worker", "", true),
    ("single", "", true),
    ("no-taints", "", true),
    ("disable-components", "", false),
    ("enable-k0s-cloud-provider", "", true),
    ("k0s-cloud-provider-update-frequency", "", false),
    ("k0s-cloud-provider-port", "", false),
    ("enable-dynamic-config", "", true),
    ("enable-metrics-scraper", "", true),
    ("kube-controller-manager-extra-args", "", false),
    ("init-only", "", true),
    ("feature-gates", "", false),
    ("api-server-stop-timeout", "", false),
];
const WORKER: Spec = &[
    ("kubelet-root-dir", "", false),
    ("profile", "", false),
    ("enable-cloud-provider", "", true),
    ("token-file", "", false),
    ("logging", "l", false),
    ("labels", "", false),
    ("taints", "", false),
    ("kubelet-extra-args", "", false),
    ("iptables-mode", "", false),
    ("ignore-pre-flight-checks", "", true),
    ("cri-socket", "", false),
    ("cidr-range", "", false),
];
const INSTALL: Spec = &[
    ("force", "", true),
    ("env", "e", false),
    ("start", "", true),
];

/// Parse args against flag specs; returns (flags, positionals).
fn parse(args: &[String], specs: &[Spec]) -> Result<(Flags, Vec<String>)> {
    let mut f = Flags::default();
    let mut pos = Vec::new();
    let find_long = |n: &str| {
        specs
            .iter()
            .flat_map(|s| s.iter())
            .find(|x| x.0 == n)
            .copied()
    };
    let find_short = |n: &str| {
        specs
            .iter()
            .flat_map(|s| s.iter())
            .find(|x| !x.1.is_empty() && x.1 == n)
            .copied()
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            pos.extend(args[i..].iter().cloned());
            break;
        }
        let (spec, inline) = if let Some(l) = a.strip_prefix("--") {
            let (n, v) = match l.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (l, None),
            };
            (
                find_long(n).ok_or_else(|| anyhow::anyhow!("unknown flag: --{n}"))?,
                v,
            )
        } else if a.starts_with('-') && a.len() > 1 {
            let s = &a[1..2];
            let rest = &a[2..];
            let sp = find_short(s)
                .ok_or_else(|| anyhow::anyhow!("unknown shorthand flag: '{s}' in {a}"))?;
            let v = if rest.is_empty() {
                None
            } else {
                Some(rest.trim_start_matches('=').to_string())
            };
            (sp, v)
        } else {
            pos.push(a.clone());
            continue;
        };
        let value = if spec.2 {
            match inline.as_deref() {
                None => "true".to_string(),
                Some("true" | "1" | "t" | "T" | "TRUE" | "True") => "true".into(),
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => "false".into(),
                Some(v) => bail!(
                    "invalid argument \"{v}\" for \"--{}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax",
                    spec.0
                ),
            }
        } else {
            match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("flag needs an argument: --{}", spec.0))?;
                    i += 1;
                    v
                }
            }
        };
        if spec.0 == "env" {
            f.env.push(value.clone());
        }
        f.all
            .entry(spec.0.to_string())
            .or_default()
            .push(value.clone());
        f.set.insert(spec.0.to_string(), value);
    }
    Ok((f, pos))
}

/// The node config (`/etc/k0s/k0s.yaml` or `--config`), merged with defaults where read.
#[derive(Clone, Debug, Default)]
pub struct K0sConfig {
    pub v: Value,
}

impl K0sConfig {
    pub fn load(path: Option<&str>) -> Result<K0sConfig> {
        let (p, explicit) = match path {
            Some(p) => (p.to_string(), true),
            None => ("/etc/k0s/k0s.yaml".to_string(), false),
        };
        if p == "-" {
            bail!("cannot read configuration from standard input when installing k0s");
        }
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                let v: Value = if s.trim().is_empty() {
                    json!({})
                } else {
                    serde_saphyr::from_str(&s)
                        .with_context(|| format!("failed to parse configuration {p}"))?
                };
                Ok(K0sConfig { v })
            }
            Err(e) if explicit => Err(anyhow::anyhow!("failed to load node config: open {p}: {e}")),
            Err(_) => Ok(K0sConfig { v: json!({}) }),
        }
    }
    pub fn api_address(&self) -> String {
        self.v["spec"]["api"]["address"]
            .as_str()
            .map(|s| s.to_string())
            .unwrap_or_else(|| {
                util::host_ipv4s()
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| "127.0.0.1".into())
            })
    }
    /// `spec.api.onlyBindToAddress`.
    pub fn only_bind_to_address(&self) -> bool {
        self.v["spec"]["api"]["onlyBindToAddress"].as_bool() == Some(true)
    }
    /// Where the API server listens: `spec.api.address` with `onlyBindToAddress` (k0s passes
    /// `--bind-address` to kube-apiserver then: `pkg/component/controller/apiserver.go`), else
    /// every address.
    pub fn api_bind_host(&self) -> String {
        if self.only_bind_to_address() {
            self.api_address()
        } else {
            "0.0.0.0".into()
        }
    }
    /// k0s's own URL of its API server (`APISpec.LocalURL` in k0s
    /// `pkg/apis/k0s/v1beta1/api.go`): `https://<spec.api.address>:<port>` with
    /// `onlyBindToAddress`, else `https://localhost:<port>`. Used for `pki/admin.conf`.
    pub fn local_url(&self) -> String {
        if self.only_bind_to_address() {
            let a = self.api_address();
            let a = if a.contains(':') { format!("[{a}]") } else { a };
            format!("https://{a}:{}", self.api_port())
        } else {
            format!("https://localhost:{}", self.api_port())
        }
    }
    pub fn api_port(&self) -> u16 {
        self.v["spec"]["api"]["port"].as_u64().unwrap_or(6443) as u16
    }
    pub fn k0s_api_port(&self) -> u16 {
        self.v["spec"]["api"]["k0sApiPort"].as_u64().unwrap_or(9443) as u16
    }
    /// host:port for join URLs: externalAddress (verbatim if it has a port) or api.address.
    pub fn external_host_port(&self, port: u16) -> String {
        if let Some(e) = self.v["spec"]["api"]["externalAddress"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if e.parse::<std::net::IpAddr>().is_err() && e.contains(':') && !e.contains("::") {
                return e.to_string();
            }
            return if e.contains(':') {
                format!("[{e}]:{port}")
            } else {
                format!("{e}:{port}")
            };
        }
        let a = self.api_address();
        if a.contains(':') {
            format!("[{a}]:{port}")
        } else {
            format!("{a}:{port}")
        }
    }
    pub fn sans(&self) -> Vec<String> {
        let mut v: Vec<String> = self.v["spec"]["api"]["sans"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(|s| s.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(e) = self.v["spec"]["api"]["externalAddress"].as_str() {
            v.push(e.split(':').next().unwrap_or(e).to_string());
        }
        v.push(self.api_address());
        v
    }
    pub fn storage_type(&self, single: bool) -> String {
        self.v["spec"]["storage"]["type"]
            .as_str()
            .map(|s| s.to_string())
            .unwrap_or_else(|| if single { "kine".into() } else { "etcd".into() })
    }
    pub fn peer_address(&self) -> String {
        self.v["spec"]["storage"]["etcd"]["peerAddress"]
            .as_str()
            .map(|s| s.to_string())
            .unwrap_or_else(|| self.api_address())
    }
    pub fn cluster_config_json(&self) -> Value {
        let mut c = default_config(&self.api_address());
        api::merge_patch(&mut c, &self.v);
        c["apiVersion"] = json!("k0s.k0sproject.io/v1beta1");
        c["kind"] = json!("ClusterConfig");
        c
    }
}

fn default_config(addr: &str) -> Value {
    json!({
        "apiVersion":"k0s.k0sproject.io/v1beta1","kind":"ClusterConfig","metadata":{"name":"k0s","namespace":"kube-system"},
        "spec":{
            "api":{"address":addr,"ca":{"certificatesExpireAfter":"8760h0m0s","expiresAfter":"87600h0m0s"},"k0sApiPort":9443,"port":6443,"sans":[addr]},
            "controllerManager":{},
            "extensions":{"helm":{"concurrencyLevel":5}},
            "installConfig":{"users":{"etcdUser":"etcd","kineUser":"kube-apiserver","konnectivityUser":"konnectivity-server","kubeAPIserverUser":"kube-apiserver","kubeSchedulerUser":"kube-scheduler"}},
            "konnectivity":{"adminPort":8133,"agentPort":8132},
            "network":{"clusterDomain":"cluster.local","dualStack":{"enabled":false},
                "kubeProxy":{"iptables":{"minSyncPeriod":"0s","syncPeriod":"0s"},"ipvs":{"minSyncPeriod":"0s","syncPeriod":"0s","tcpFinTimeout":"0s","tcpTimeout":"0s","udpTimeout":"0s"},"metricsBindAddress":"0.0.0.0:10249","mode":"iptables"},
                "kuberouter":{"autoMTU":true,"hairpin":"Enabled","metricsPort":8080},
                "nodeLocalLoadBalancing":{"enabled":false,"envoyProxy":{"apiServerBindPort":7443,"konnectivityServerBindPort":7132},"type":"EnvoyProxy"},
                "podCIDR":"10.244.0.0/16","provider":"kuberouter","serviceCIDR":"10.96.0.0/12"},
            "scheduler":{},
            "storage":{"etcd":{"ca":{"certificatesExpireAfter":"8760h0m0s","expiresAfter":"87600h0m0s"},"peerAddress":addr},"type":"etcd"},
            "telemetry":{"enabled":false}
        }
    })
}

/// YAML rendering with sorted keys (what sigs.k8s.io/yaml produces).
fn to_yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                let x = &m[k];
                match x {
                    Value::Object(o) if !o.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        to_yaml(x, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        for e in a {
                            match e {
                                Value::Object(_) => {
                                    let mut sub = String::new();
                                    to_yaml(e, indent + 2, &mut sub);
                                    let sub = sub.replacen(
                                        &" ".repeat(indent + 2),
                                        &format!("{pad}- "),
                                        1,
                                    );
                                    out.push_str(&sub);
                                }
                                _ => out.push_str(&format!("{pad}- {}\n", scalar(e))),
                            }
                        }
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(x))),
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", scalar(v))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        Value::String(s) => {
            let needs = s.is_empty()
                || s.parse::<f64>().is_ok()
                || ["true", "false", "null", "yes", "no", "on", "off", "~"]
                    .contains(&s.to_lowercase().as_str())
                || s.contains(": ")
                || s.starts_with([
                    '*', '&', '!', '|', '>', '\'', '"', '%', '@', '`', '{', '[', '-', ' ', '#',
                ])
                || s.ends_with(' ')
                || s.contains(" #");
            if needs {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    }
}

pub fn yaml(v: &Value) -> String {
    let mut s = String::new();
    to_yaml(v, 0, &mut s);
    s
}

fn require_root() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("this command must be run as root");
    }
    Ok(())
}

fn abs(p: &str) -> String {
    let pb = PathBuf::from(p);
    if pb.is_absolute() {
        p.to_string()
    } else {
        std::env::current_dir()
            .map(|c| c.join(pb).display().to_string())
            .unwrap_or(p.to_string())
    }
}

fn systemd() -> bool {
    Path::new("/run/systemd/system").exists()
}

fn unit_path(svc: &str) -> PathBuf {
    if systemd() {
        PathBuf::from(format!("/etc/systemd/system/{svc}.service"))
    } else {
        PathBuf::from(format!("/etc/init.d/{svc}"))
    }
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !o.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn uninstall_service(svc: &str) {
    let p = unit_path(svc);
    if !p.exists() {
        return;
    }
    if systemd() {
        let _ = sh("systemctl", &["disable", &format!("{svc}.service")]);
        let _ = std::fs::remove_file(&p);
        let _ = sh("systemctl", &["daemon-reload"]);
    } else {
        let _ = sh("rc-update", &["del", svc]);
        let _ = std::fs::remove_file(&p);
    }
}

/// The numeric part of a k0s version (`v1.34.1-rc.0+k0s.0` → `[1, 34, 1]`).
pub fn version_segments(v: &str) -> [u64; 3] {
    let core = v
        .trim_start_matches('v')
        .split(['-', '+'])
        .next()
        .unwrap_or("");
    let mut out = [0u64; 3];
    for (i, p) in core.split('.').take(3).enumerate() {
        out[i] = p.parse().unwrap_or(0);
    }
    out
}

/// Components of k0s's `--logging` flag with their default levels, in the order k0s prints
/// them (k0s `pkg/config/cli.go`, `DefaultLogLevels` and `logLevelsFlag.String`).
const LOG_LEVELS: [(&str, &str); 7] = [
    ("containerd", "info"),
    ("etcd", "info"),
    ("konnectivity-server", "1"),
    ("kube-apiserver", "1"),
    ("kube-controller-manager", "1"),
    ("kube-scheduler", "1"),
    ("kubelet", "1"),
];

/// pflag's `StringSlice`: each value is one CSV record; repeated flags append.
fn string_slice(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|x| !x.is_empty())
        .map(|x| x.to_string())
        .collect()
}

/// How k0s records one flag's value: pflag's `Value.String()` of the parsed flag, brackets
/// trimmed for slice and stringToString types (k0s `cmd/install/util.go` cmdFlagsToArgs; value
/// types from `pkg/config/cli.go` of that release).
fn recorded_value(name: &str, values: &[String], version: &str) -> Result<String> {
    let last = values.last().cloned().unwrap_or_default();
    let v = version_segments(version);
    Ok(match name {
        "data-dir" | "kubelet-root-dir" | "token-file" | "config" => abs(&last),
        // `logLevelsFlag` (k0s ≥ v1.31): every Set starts from the defaults, so the last
        // `--logging`/`-l` wins and String() lists every component with its level.
        "logging" if v >= [1, 31, 0] => {
            let mut levels: Vec<(String, String)> = LOG_LEVELS
                .iter()
                .map(|(k, l)| (k.to_string(), l.to_string()))
                .collect();
            let val = last.trim_start_matches('[').trim_end_matches(']');
            for pair in val.split(',').filter(|p| !p.is_empty()) {
                let Some((k, l)) = pair.split_once('=') else {
                    bail!(
                        "invalid argument \"{last}\" for \"-l, --logging\" flag: must be of format component=level: \"{pair}\""
                    );
                };
                let Some(slot) = levels.iter_mut().find(|(c, _)| c == k) else {
                    bail!(
                        "invalid argument \"{last}\" for \"-l, --logging\" flag: unknown component name: \"{k}\""
                    );
                };
                slot.1 = l.to_string();
            }
            levels
                .iter()
                .map(|(k, l)| format!("{k}={l}"))
                .collect::<Vec<_>>()
                .join(",")
        }
        // Older k0s: pflag's stringToString (the first Set replaces the defaults, later ones
        // merge). pflag prints it in map order, which is random; sorted here.
        "logging" => {
            let mut m = BTreeMap::new();
            for val in values {
                for pair in val.split(',').filter(|p| !p.is_empty()) {
                    let (k, l) = pair.split_once('=').unwrap_or((pair, ""));
                    m.insert(k.to_string(), l.to_string());
                }
            }
            m.iter()
                .map(|(k, l)| format!("{k}={l}"))
                .collect::<Vec<_>>()
                .join(",")
        }
        // `cliflag.ConfigurationMap` (k0s ≥ v1.34): pairs merged over repeats, keys and values
        // trimmed, printed sorted.
        "labels" if v >= [1, 34, 0] => {
            let mut m = BTreeMap::new();
            for val in values {
                for pair in val.split(',').filter(|p| !p.is_empty()) {
                    let (k, l) = pair.split_once('=').unwrap_or((pair, ""));
                    m.insert(k.trim().to_string(), l.trim().to_string());
                }
            }
            let mut pairs: Vec<String> = m.iter().map(|(k, l)| format!("{k}={l}")).collect();
            pairs.sort();
            pairs.join(",")
        }
        "labels" | "taints" | "disable-components" => string_slice(values).join(","),
        _ => last
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    })
}

/// Service arguments as `k0s install` stores them (k0s `cmd/install/util.go` cmdFlagsToArgs):
/// only flags that were set, in pflag's sorted order, under their long names, `--name=value`
/// with pflag's rendering of the parsed value (see [`recorded_value`]), `--env/--force/--start`
/// skipped, paths made absolute.
pub fn normalized_args(role: &str, f: &Flags) -> Result<Vec<String>> {
    normalized_args_for(role, f, &crate::stamp::slot_version())
}

pub fn normalized_args_for(role: &str, f: &Flags, version: &str) -> Result<Vec<String>> {
    let mut svc_args = vec![role.to_string()];
    for (k, v) in &f.set {
        if ["env", "force", "start"].contains(&k.as_str()) {
            continue;
        }
        let values = f.all.get(k).cloned().unwrap_or_else(|| vec![v.clone()]);
        svc_args.push(format!("--{k}={}", recorded_value(k, &values, version)?));
    }
    Ok(svc_args)
}

/// The system users `k0s install controller` creates and `k0s reset` deletes
/// (`spec.installConfig.users` defaults).
const SYSTEM_USERS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "konnectivity-server",
    "kube-scheduler",
];

fn cmd_install(role: &str, args: &[String]) -> Result<()> {
    require_root()?;
    let specs: Vec<Spec> = if role == "controller" {
        vec![DEBUG, DATA, CONTROLLER, WORKER, INSTALL]
    } else {
        vec![DEBUG, DATA, WORKER, INSTALL]
    };
    let (f, pos) = parse(args, &specs)?;
    if !pos.is_empty() {
        bail!("unknown command \"{}\" for \"k0s install {role}\"", pos[0]);
    }
    if role == "controller" {
        let cfg = K0sConfig::load(f.get("config").map(|s| s.as_str()))?;
        if let Some(a) = cfg.v["spec"]["api"]["address"].as_str()
            && (a == "0.0.0.0" || a == "::")
        {
            bail!(
                "invalid node config: spec: api: address: Invalid value: \"{a}\": invalid INADDR_ANY"
            );
        }
        for u in SYSTEM_USERS {
            if Command::new("id")
                .arg("-u")
                .arg(u)
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(false)
            {
                let dd = f.get("data-dir").cloned().unwrap_or("/var/lib/k0s".into());
                let _ = Command::new("useradd")
                    .args([
                        "--home",
                        &dd,
                        "--shell",
                        "/usr/sbin/nologin",
                        "--system",
                        "--no-create-home",
                        u,
                    ])
                    .output();
            }
        }
    }
    let svc_args = normalized_args(role, &f)?;
    let svc = format!("k0s{role}");
    let path = unit_path(&svc);
    let force = f.bool("force");
    if path.exists() {
        if !force {
            bail!(
                "failed to install {role} service: Init already exists: {}",
                path.display()
            );
        }
        uninstall_service(&svc);
    }
    let exe = std::fs::canonicalize(std::env::current_exe()?)?
        .display()
        .to_string();
    if systemd() {
        let esc = |s: &str| s.replace(' ', "\\x20");
        let exec = std::iter::once(esc(&exe))
            .chain(svc_args.iter().map(|a| esc(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let env: String = f
            .env
            .iter()
            .map(|e| format!("Environment=\"{e}\"\n"))
            .collect();
        let unit = format!(
            "[Unit]\nDescription=k0s - Zero Friction Kubernetes\nDocumentation=https://docs.k0sproject.io\nConditionFileIsExecutable={exe}\n\nAfter=network-online.target \nWants=network-online.target \n[Service]\nStartLimitInterval=5\nStartLimitBurst=10\nExecStart={exec}\n{env}RestartSec=10\nDelegate=yes\nKillMode=process\nLimitCORE=infinity\nTasksMax=infinity\nTimeoutStartSec=0\nLimitNOFILE=999999\nRestart=always\n[Install]\nWantedBy=multi-user.target\n"
        );
        util::write_mode(&path, unit.as_bytes(), 0o644)?;
        sh("systemctl", &["enable", &format!("{svc}.service")])?;
        sh("systemctl", &["daemon-reload"])?;
    } else {
        let cargs: String = svc_args.iter().map(|a| format!("'{a}' ")).collect();
        let env: String = f.env.iter().map(|e| format!("export {e}\n")).collect();
        let script = format!(
            "#!/sbin/openrc-run\nsupervisor=supervise-daemon\nname=\"k0s{role}\"\ndescription=\"k0s - Zero Friction Kubernetes\"\ncommand={exe}\ncommand_args=\"{cargs}\"\nname=$(basename $(readlink -f $command))\nsupervise_daemon_args=\"--stdout /var/log/${{name}}.log --stderr /var/log/${{name}}.err\"\nretry=\"SIGTERM/90/SIGKILL/5\"\n{env}\ndepend() {{\n\tneed cgroups\n\tneed net\n\tuse dns\n\tafter firewall\n}}\n"
        );
        util::write_mode(&path, script.as_bytes(), 0o755)?;
        let _ = sh("rc-update", &["add", &svc]);
    }
    if f.bool("start") {
        if service_active(&svc) && !force {
            bail!("already running");
        }
        svc_ctl(if force { "restart" } else { "start" }, &svc)?;
    }
    Ok(())
}

fn service_active(svc: &str) -> bool {
    if systemd() {
        Command::new("systemctl")
            .args(["is-active", "--quiet", svc])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    } else {
        Command::new("rc-service")
            .args([svc, "status"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("started"))
            .unwrap_or(false)
    }
}

fn svc_ctl(action: &str, svc: &str) -> Result<()> {
    if systemd() {
        sh("systemctl", &[action, &format!("{svc}.service")])?;
    } else {
        sh("rc-service", &[svc, action])?;
    }
    Ok(())
}

fn installed_service() -> Option<String> {
    ["k0scontroller", "k0sworker"]
        .into_iter()
        .find(|s| unit_path(s).exists())
        .map(|s| s.to_string())
}

/// GET/POST over the status socket. Returns (code, body).
fn socket_req(sock: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let what = if path == "/status" {
        "status".to_string()
    } else {
        path.trim_start_matches('/').to_string()
    };
    let mut s = std::os::unix::net::UnixStream::connect(sock).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("status: can't get \"{what}\" via \"{sock}\": Get \"http://localhost{path}\": dial unix {sock}: connect: {reason}")
    })?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(500);
    Ok((code, body.to_string()))
}

fn status_socket(f: &Flags) -> String {
    f.get("status-socket")
        .cloned()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}/status.sock", daemon::RUN_DIR))
}

fn get_status(f: &Flags) -> Result<Value> {
    let (code, body) = socket_req(&status_socket(f), "/status")?;
    if code != 200 {
        bail!(
            "status: can't get \"status\" via \"{}\": HTTP {code}",
            status_socket(f)
        );
    }
    Ok(serde_json::from_str(&body)?)
}

fn q(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn op(f: &Flags, name: &str, params: &[(&str, &str)]) -> Result<String> {
    let qs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect();
    let (code, body) = socket_req(
        &status_socket(f),
        &format!("/testenv/{name}?{}", qs.join("&")),
    )?;
    if code != 200 {
        bail!("{body}");
    }
    Ok(body)
}

fn data_dir(f: &Flags) -> PathBuf {
    PathBuf::from(abs(f
        .get("data-dir")
        .map(|s| s.as_str())
        .unwrap_or("/var/lib/k0s")))
}

fn run_cli(argv: Vec<String>) -> Result<i32> {
    let prog = Path::new(&argv[0])
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prog = prog.strip_prefix("k0s-").unwrap_or(&prog).to_string();
    if prog == "kubectl" {
        return cmd_kubectl(&argv[1..]);
    }
    let args = &argv[1..];
    let sub = args.first().map(|s| s.as_str()).unwrap_or("");
    let rest: Vec<String> = args.iter().skip(1).cloned().collect();
    let sub2 = rest.first().map(|s| s.as_str()).unwrap_or("");
    let rest2: Vec<String> = rest.iter().skip(1).cloned().collect();
    match sub {
        "version" => {
            let (f, _) = parse(&rest, &[&[("all", "a", true), ("json", "j", true)]])?;
            let v = crate::stamp::slot_version();
            let k8s = v
                .trim_start_matches('v')
                .split('+')
                .next()
                .unwrap_or("")
                .to_string();
            if f.bool("all") {
                println!(
                    "k0s : {v}\nrunc : 1.1.15\ncontainerd : 1.7.22\nkubernetes : {k8s}\nkine : 0.13.2\netcd : 3.5.16\nkonnectivity : 0.30.3"
                );
            } else if f.bool("json") {
                println!(
                    "{}",
                    util::json_indent3(
                        &json!({"k0s":v,"runc":"1.1.15","containerd":"1.7.22","kubernetes":k8s,"kine":"0.13.2","etcd":"3.5.16","konnectivity":"0.30.3"})
                    )
                );
            } else {
                println!("{v}");
            }
        }
        "install" => match sub2 {
            "controller" | "server" => cmd_install("controller", &rest2)?,
            "worker" => cmd_install("worker", &rest2)?,
            "" => println!(
                "Install k0s on a brand-new system. Must be run as root (or with sudo)\n\nUsage:\n  k0s install [command]\n\nAvailable Commands:\n  controller  Install k0s controller on a brand-new system. Must be run as root (or with sudo)\n  worker      Install k0s worker on a brand-new system. Must be run as root (or with sudo)"
            ),
            o => bail!("unknown command \"{o}\" for \"k0s install\""),
        },
        "start" | "stop" => {
            parse(&rest, &[DEBUG])?;
            require_root()?;
            let svc = installed_service().context("k0s has not been installed as a service")?;
            let active = service_active(&svc);
            if sub == "start" {
                if active {
                    bail!("already running");
                }
                svc_ctl("start", &svc)?;
            } else {
                if !active {
                    if systemd()
                        && Command::new("systemctl")
                            .args(["is-failed", "--quiet", &svc])
                            .status()
                            .map(|s| s.success())
                            .unwrap_or(false)
                    {
                        bail!("service in failed state");
                    }
                    bail!("already stopped");
                }
                svc_ctl("stop", &svc)?;
            }
        }
        "controller" | "server" | "worker" => {
            let role = if sub == "worker" {
                "worker"
            } else {
                "controller"
            };
            let specs: Vec<Spec> = if role == "controller" {
                vec![DEBUG, DATA, CONTROLLER, WORKER]
            } else {
                vec![DEBUG, DATA, WORKER]
            };
            let (f, pos) = parse(&rest, &specs)?;
            daemon::run(role, f, pos, argv.clone())?;
        }
        "status" => {
            if sub2 == "components" {
                eprintln!(
                    "!!! per component status is not yet finally ready, information here might be incomplete !!!"
                );
                return Ok(0);
            }
            let (f, _) = parse(
                &rest,
                &[DEBUG, &[("out", "o", false), ("status-socket", "", false)]],
            )?;
            let st = get_status(&f)?;
            match f.get("out").map(|s| s.as_str()).unwrap_or("") {
                "json" => println!("{}", util::json_indent3(&st)),
                "yaml" => println!("{}", yaml(&st)),
                _ => {
                    println!("Version: {}", st["Version"].as_str().unwrap_or(""));
                    println!("Process ID: {}", st["Pid"]);
                    println!("Role: {}", st["Role"].as_str().unwrap_or(""));
                    println!("Workloads: {}", st["Workloads"]);
                    println!("SingleNode: {}", st["SingleNode"]);
                    if st["Workloads"] == true {
                        println!(
                            "Kube-api probing successful: {}",
                            st["WorkerToAPIConnectionStatus"]["Success"]
                        );
                        println!(
                            "Kube-api probing last error:  {}",
                            st["WorkerToAPIConnectionStatus"]["Message"]
                                .as_str()
                                .unwrap_or("")
                        );
                    }
                }
            }
        }
        "token" => {
            let tspec: Spec = &[
                ("role", "", false),
                ("expiry", "", false),
                ("wait", "", true),
                ("config", "c", false),
            ];
            let (f, pos) = parse(&rest2, &[DEBUG, DATA, tspec])?;
            match sub2 {
                "create" => {
                    let role = f.get("role").cloned().unwrap_or("worker".into());
                    if role != "worker" && role != "controller" {
                        bail!(
                            "unsupported role \"{role}\"; supported roles are \"controller\" and \"worker\""
                        );
                    }
                    let expiry = f.get("expiry").cloned().unwrap_or("0s".into());
                    util::parse_duration(&expiry)?;
                    let tries = if f.bool("wait") { 120 } else { 1 };
                    let mut st = Err(anyhow::anyhow!("not tried"));
                    for i in 0..tries {
                        st = get_status(&f);
                        if st.is_ok() {
                            break;
                        }
                        if i + 1 < tries {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                    st.map_err(|e| anyhow::anyhow!("failed to get k0s status: {e}"))?;
                    let t = op(&f, "token-create", &[("role", &role), ("expiry", &expiry)])?;
                    println!("{t}");
                }
                "invalidate" => {
                    if pos.is_empty() {
                        bail!("requires at least 1 arg(s), only received 0");
                    }
                    for id in &pos {
                        op(&f, "token-invalidate", &[("id", id)])?;
                        println!("token {id} deleted successfully");
                    }
                }
                "list" => {
                    let body = op(
                        &f,
                        "token-list",
                        &[("role", f.get("role").map(|s| s.as_str()).unwrap_or(""))],
                    )?;
                    let rows: Vec<Value> = serde_json::from_str(&body)?;
                    if rows.is_empty() && f.get("role").is_none() {
                        println!("No k0s join tokens found");
                    } else if !rows.is_empty() {
                        println!("ID       ROLE     EXPIRES AT");
                        for r in rows {
                            println!(
                                "{:<8} {:<8} {}",
                                r["id"].as_str().unwrap_or(""),
                                r["role"].as_str().unwrap_or(""),
                                r["expiry"].as_str().unwrap_or("")
                            );
                        }
                    }
                }
                "" => println!("Manage join tokens\n\nUsage:\n  k0s token [command]"),
                o => bail!("unknown command \"{o}\" for \"k0s token\""),
            }
        }
        "kubeconfig" => {
            let (f, _) = parse(&rest2, &[DEBUG, DATA, &[("config", "c", false)]])?;
            match sub2 {
                "admin" => {
                    let p = data_dir(&f).join("pki/admin.conf");
                    let s = std::fs::read_to_string(&p).map_err(|_| anyhow::anyhow!("admin config \"{}\" not found, check if the control plane is initialized on this node", p.display()))?;
                    let cfg = K0sConfig::load(None).unwrap_or_default();
                    let port = cfg.api_port();
                    print!(
                        "{}",
                        s.replace(
                            &format!("https://localhost:{port}"),
                            &format!("https://{}", cfg.external_host_port(port))
                        )
                    );
                }
                "" => println!(
                    "Create a kubeconfig file for a specified user\n\nUsage:\n  k0s kubeconfig [command]"
                ),
                o => bail!("unknown command \"{o}\" for \"k0s kubeconfig\""),
            }
        }
        "kubectl" | "kc" => return cmd_kubectl(&rest),
        "etcd" => {
            let (f, _) = parse(
                &rest2,
                &[
                    DEBUG,
                    DATA,
                    &[("peer-address", "", false), ("config", "c", false)],
                ],
            )?;
            let cfg = K0sConfig::load(f.get("config").map(|s| s.as_str())).unwrap_or_default();
            if cfg.storage_type(false) != "etcd" {
                bail!("wrong storage type: {}", cfg.storage_type(false));
            }
            // Like k0s (`cmd/etcd/list.go`, `leave.go`, `pkg/etcd/client.go`): straight to this
            // controller's etcd member on 127.0.0.1:2379.
            match sub2 {
                "member-list" => {
                    let members = etcd::member_list()
                        .map_err(|e| anyhow::anyhow!("can't list etcd cluster members: {e:#}"))?;
                    // A member added but not started yet has no name (key "").
                    let m: std::collections::BTreeMap<String, String> =
                        members.into_iter().map(|(_, n, u, _)| (n, u)).collect();
                    println!("{}", serde_json::to_string(&json!({ "members": m }))?);
                }
                "leave" => {
                    let peer = f
                        .get("peer-address")
                        .cloned()
                        .unwrap_or_else(|| cfg.peer_address());
                    if peer.parse::<std::net::IpAddr>().is_err()
                        && !peer
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                    {
                        bail!(
                            "invalid value \"{peer}\" for \"--peer-address\" flag: neither an IP address nor a DNS name"
                        );
                    }
                    let url = etcd::peer_url(&peer);
                    let id = match etcd::peer_id(&url) {
                        Ok(id) => id,
                        Err(e) => {
                            util::log_error_fields("Failed to get peer name", &[("peerURL", &url)]);
                            return Err(e);
                        }
                    };
                    if let Err(e) = etcd::member_remove(id) {
                        util::log_error_fields(
                            "Failed to delete node from cluster",
                            &[("peerURL", &url), ("peerID", &format!("{id:x}"))],
                        );
                        return Err(e);
                    }
                }
                "" => println!("Manage etcd cluster\n\nUsage:\n  k0s etcd [command]"),
                o => bail!("unknown command \"{o}\" for \"k0s etcd\""),
            }
        }
        "config" => cmd_config(sub2, &rest2)?,
        "default-config" => cmd_config("create", &rest)?,
        "validate" if sub2 == "config" => cmd_config("validate", &rest2)?,
        "reset" => {
            let (f, _) = parse(
                &rest,
                &[
                    DEBUG,
                    DATA,
                    &[
                        ("kubelet-root-dir", "", false),
                        ("config", "c", false),
                        ("cri-socket", "", false),
                    ],
                ],
            )?;
            require_root()?;
            if daemon::is_running() {
                bail!("another k0s process is still running, please stop k0s before reset");
            }
            uninstall_service("k0scontroller");
            uninstall_service("k0sworker");
            // k0s's "remove k0s users step": the system users `install controller` created.
            for u in SYSTEM_USERS {
                if Command::new("id")
                    .args(["-u", u])
                    .output()
                    .is_ok_and(|o| o.status.success())
                {
                    let _ = Command::new("userdel").arg(u).output();
                }
            }
            let dd = data_dir(&f);
            if let Some(k) = f.get("kubelet-root-dir") {
                let _ = std::fs::remove_dir_all(k);
            }
            let _ = std::fs::remove_dir_all(&dd);
            let _ = std::fs::remove_dir_all(daemon::RUN_DIR);
            util::log_warn("To ensure a full reset, a node reboot is recommended.");
        }
        "backup" => {
            let (f, _) = parse(&rest, &[DEBUG, DATA, &[("save-path", "", false)]])?;
            require_root()?;
            cmd_backup(&f)?;
        }
        "restore" => {
            let (f, pos) = parse(&rest, &[DEBUG, DATA, &[("config-out", "", false)]])?;
            require_root()?;
            cmd_restore(&f, pos.first().cloned().unwrap_or_default())?;
        }
        "sysinfo" => {
            let (f, _) = parse(
                &rest,
                &[
                    DEBUG,
                    &[
                        ("controller", "", true),
                        ("worker", "", true),
                        ("data-dir", "", false),
                        ("output", "o", false),
                    ],
                ],
            )?;
            cmd_sysinfo(&f)?;
        }
        "airgap" if sub2 == "list-images" => {
            let v = crate::stamp::slot_version();
            let k8s = v.split('+').next().unwrap_or("");
            for i in [
                "quay.io/k0sproject/pause:3.9",
                "quay.io/k0sproject/apiserver-network-proxy-agent:v0.30.3",
                &format!("quay.io/k0sproject/kube-proxy:{k8s}"),
                "quay.io/k0sproject/coredns:1.11.3",
                "quay.io/k0sproject/metrics-server:v0.7.2-0",
                "quay.io/k0sproject/kube-router:v2.2.1-iptables1.8.9-0",
                "quay.io/k0sproject/cni-node:1.3.0-k0s.0",
            ] {
                println!("{i}");
            }
        }
        "" | "help" | "--help" | "-h" => {
            println!(
                "k0s - The zero friction Kubernetes - https://k0sproject.io\n(testenv stand-in: test scaffolding, not the real k0s)\n\nUsage:\n  k0s [command]\n\nAvailable Commands:\n  backup, config, controller, etcd, install, kubeconfig, kubectl, reset, restore, start, status, stop, sysinfo, token, version, worker"
            );
        }
        o => bail!("unknown command \"{o}\" for \"k0s\""),
    }
    Ok(0)
}

fn cmd_kubectl(args: &[String]) -> Result<i32> {
    // k0s adds --data-dir to kubectl; strip it and resolve the kubeconfig the way k0s does.
    let mut out = Vec::new();
    let mut dd = "/var/lib/k0s".to_string();
    let mut has_kubeconfig = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            out.extend(args[i - 1..].iter().cloned());
            break;
        }
        if let Some(v) = a.strip_prefix("--data-dir=") {
            dd = v.to_string();
            continue;
        }
        if a == "--data-dir" {
            dd = args.get(i).cloned().unwrap_or_default();
            i += 1;
            continue;
        }
        if a == "--kubeconfig" || a.starts_with("--kubeconfig=") {
            has_kubeconfig = true;
        }
        out.push(a.clone());
    }
    let kubectl = std::env::var("TESTENV_KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::canonicalize(p).ok());
    if std::fs::canonicalize(&kubectl).ok() == me {
        bail!("no real kubectl found at {kubectl} (the stand-in delegates `k0s kubectl` to it)");
    }
    let mut c = Command::new(&kubectl);
    c.args(&out);
    if has_kubeconfig {
        c.env_remove("KUBECONFIG");
    } else if std::env::var("KUBECONFIG")
        .map(|k| k.is_empty())
        .unwrap_or(true)
    {
        let p = Path::new(&dd).join("pki/admin.conf");
        if !p.exists() {
            bail!(
                "cannot stat k0s kubeconfig, is the server running?: stat {}: no such file or directory",
                p.display()
            );
        }
        c.env("KUBECONFIG", p);
    }
    use std::os::unix::process::CommandExt;
    let e = c.exec();
    bail!("exec {kubectl}: {e}")
}

fn cmd_config(sub: &str, args: &[String]) -> Result<()> {
    match sub {
        "create" => {
            let (f, _) = parse(
                args,
                &[
                    DEBUG,
                    DATA,
                    &[("include-images", "", true), ("feature-gates", "", false)],
                ],
            )?;
            if f.get("data-dir").is_some() {
                eprintln!(
                    "Flag --data-dir has been deprecated, it has no effect and will be removed in a future release"
                );
            }
            let addr = util::host_ipv4s()
                .into_iter()
                .next()
                .unwrap_or_else(|| "127.0.0.1".into());
            print!("{}", yaml(&default_config(&addr)));
        }
        "validate" => {
            let (f, _) = parse(
                args,
                &[
                    DEBUG,
                    &[("config", "c", false), ("feature-gates", "", false)],
                ],
            )?;
            // `--feature-gates` on `k0s config` exists from k0s v1.35 (cmd/config/config.go).
            if f.get("feature-gates").is_some()
                && version_segments(&crate::stamp::slot_version()) < [1, 35, 0]
            {
                bail!("unknown flag: --feature-gates");
            }
            let p = f.get("config").cloned().unwrap_or_default();
            if p.is_empty() {
                bail!("--config can't be empty");
            }
            let s = if p == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("failed to parse configuration: open {p}: {e}"))?
            };
            validate_config(&s)?;
        }
        "status" | "edit" => bail!(
            "k0s config {sub}: use `k0s kubectl -n kube-system get event --field-selector involvedObject.name=k0s` (not supported by the stand-in)"
        ),
        "" => println!("Configuration related sub-commands\n\nUsage:\n  k0s config [command]"),
        o => bail!("unknown command \"{o}\" for \"k0s config\""),
    }
    Ok(())
}

fn validate_config(s: &str) -> Result<()> {
    let v: Value = serde_saphyr::from_str(s)
        .map_err(|e| anyhow::anyhow!("failed to parse configuration: {e}"))?;
    let v = if v.is_null() { json!({}) } else { v };
    let m = v
        .as_object()
        .context("failed to parse configuration: not a mapping")?;
    for k in m.keys() {
        if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str()) {
            bail!(
                "failed to parse configuration: error unmarshaling JSON: while decoding JSON: json: unknown field \"{k}\""
            );
        }
    }
    if let Some(a) = v["apiVersion"].as_str()
        && a != "k0s.k0sproject.io/v1beta1"
    {
        bail!(
            "failed to parse configuration: no kind \"ClusterConfig\" is registered for version \"{a}\""
        );
    }
    if let Some(k) = v["kind"].as_str()
        && k != "ClusterConfig"
        && k != "Cluster"
    {
        bail!(
            "failed to parse configuration: no kind \"{k}\" is registered for version \"k0s.k0sproject.io/v1beta1\""
        );
    }
    let known = [
        "api",
        "controllerManager",
        "scheduler",
        "storage",
        "network",
        "podSecurityPolicy",
        "telemetry",
        "installConfig",
        "images",
        "extensions",
        "konnectivity",
        "featureGates",
        "workerProfiles",
    ];
    if let Some(sp) = v["spec"].as_object() {
        for k in sp.keys() {
            if !known.contains(&k.as_str()) {
                bail!(
                    "failed to parse configuration: error unmarshaling JSON: while decoding JSON: json: unknown field \"{k}\""
                );
            }
        }
    }
    if let Some(a) = v["spec"]["api"]["address"].as_str() {
        if a == "0.0.0.0" || a == "::" {
            bail!("spec: api: address: Invalid value: \"{a}\": invalid INADDR_ANY");
        }
        if a.parse::<std::net::IpAddr>().is_err() {
            bail!("spec: api: address: Invalid value: \"{a}\": invalid IP address");
        }
    }
    if let Some(t) = v["spec"]["storage"]["type"].as_str()
        && !["etcd", "kine"].contains(&t)
    {
        bail!(
            "spec: storage: type: Unsupported value: \"{t}\": supported values: \"etcd\", \"kine\""
        );
    }
    Ok(())
}

fn cmd_backup(f: &Flags) -> Result<()> {
    let sp = f.get("save-path").cloned().unwrap_or_default();
    if sp != "-" && !Path::new(&sp).is_dir() {
        bail!("the save-path directory ({sp}) does not exist");
    }
    let dd = data_dir(f);
    if !dd.is_dir() {
        bail!("cannot find data-dir ({})", dd.display());
    }
    let st = get_status(f).map_err(|e| anyhow::anyhow!("unable to detect cluster status {e}"))?;
    if st["Role"] != "controller" {
        bail!(
            "backup command must be run on the controller node, have `{}`",
            st["Role"].as_str().unwrap_or("")
        );
    }
    let stage = tempdir("k0s-backup")?;
    let db = dd.join("db/state.json");
    if etcd::is_member(&dd) {
        // A real etcd snapshot (k0s `pkg/backup/etcd_unix.go`), from any controller.
        if let Err(e) = etcd::snapshot_save(&stage.join("etcd-snapshot.db")) {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
    } else if db.exists() {
        // kine (single node): the stand-in's state file in place of kine's sqlite database.
        std::fs::copy(&db, stage.join("kine-state-backup.db"))?;
    } else {
        let _ = std::fs::remove_dir_all(&stage);
        bail!("cannot find the controller's storage in {}", dd.display());
    }
    for d in ["pki", "manifests", "images", "helmhome"] {
        if dd.join(d).exists() {
            sh(
                "cp",
                &[
                    "-a",
                    &dd.join(d).display().to_string(),
                    &stage.display().to_string(),
                ],
            )?;
        }
    }
    if Path::new("/etc/k0s/k0s.yaml").exists() {
        std::fs::copy("/etc/k0s/k0s.yaml", stage.join("k0s.yaml"))?;
    }
    let (y, mo, d, h, mi, s) = util::civil(util::now_unix());
    let name = format!("k0s_backup_{y:04}-{mo:02}-{d:02}T{h:02}_{mi:02}_{s:02}_000Z.tar.gz");
    let entries: Vec<String> = std::fs::read_dir(&stage)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut c = Command::new("tar");
    c.arg("-czf")
        .arg(if sp == "-" {
            "-".to_string()
        } else {
            Path::new(&sp).join(&name).display().to_string()
        })
        .arg("-C")
        .arg(&stage)
        .args(&entries);
    let st = c.status()?;
    let _ = std::fs::remove_dir_all(&stage);
    if !st.success() {
        bail!("failed to create backup archive");
    }
    Ok(())
}

fn tempdir(prefix: &str) -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("{prefix}-{}", daemon::rand_alnum(10)));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

fn cmd_restore(f: &Flags, archive: String) -> Result<()> {
    if daemon::is_running() {
        bail!("k0s seems to be running! k0s must be down during the restore operation.");
    }
    if archive != "-" && !Path::new(&archive).exists() {
        bail!("given file {archive} does not exist");
    }
    let dd = data_dir(f);
    std::fs::create_dir_all(&dd)?;
    let stage = tempdir("k0s-restore")?;
    let mut c = Command::new("tar");
    c.arg("-xzf").arg(&archive).arg("-C").arg(&stage);
    if !c.status()?.success() {
        bail!("failed to extract {archive}");
    }
    if stage.join("etcd-snapshot.db").exists() {
        // Restoring an etcd snapshot makes a one-member cluster of this node (k0s
        // `pkg/backup/etcd_unix.go`: member name = host name, peer URL from this node's config).
        let cfg = K0sConfig::load(f.get("config").map(|s| s.as_str())).unwrap_or_default();
        etcd::snapshot_restore(&stage.join("etcd-snapshot.db"), &dd, &cfg.peer_address())?;
    } else if let Ok(db) = std::fs::read(stage.join("kine-state-backup.db")) {
        util::write_mode(&dd.join("db/state.json"), &db, 0o600)?;
    }
    for d in ["pki", "manifests", "images", "helmhome"] {
        if stage.join(d).exists() {
            let _ = std::fs::remove_dir_all(dd.join(d));
            sh(
                "cp",
                &[
                    "-a",
                    &stage.join(d).display().to_string(),
                    &dd.display().to_string(),
                ],
            )?;
        }
    }
    // The etcd peer certificate names the backed-up host: issued again for this one at start.
    for f in ["peer.crt", "peer.key"] {
        let _ = std::fs::remove_file(dd.join("pki/etcd").join(f));
    }
    if stage.join("k0s.yaml").exists() {
        let out = match f.get("config-out") {
            Some(o) => PathBuf::from(o),
            None => {
                let base = Path::new(&archive)
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let base = base
                    .trim_end_matches(".tar.gz")
                    .trim_start_matches("k0s_backup_")
                    .to_string();
                std::env::current_dir()?.join(format!("k0s_{base}.yaml"))
            }
        };
        std::fs::copy(stage.join("k0s.yaml"), out)?;
    }
    let _ = std::fs::remove_dir_all(&stage);
    Ok(())
}

fn cmd_sysinfo(f: &Flags) -> Result<()> {
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let dd = f.get("data-dir").cloned().unwrap_or("/var/lib/k0s".into());
    let probes = vec![
        (
            0,
            "Total memory",
            format!("{:.1} GiB", mem_kb as f64 / 1048576.0),
        ),
        (0, "File system of /var/lib", "overlayfs".to_string()),
        (
            0,
            &*format!("Disk space available for {dd}"),
            "10.0 GiB".to_string(),
        ),
        (0, "Operating system", "Linux".to_string()),
        (1, "Linux kernel release", kernel),
        (
            1,
            "Max. file descriptors per process",
            "current: 1048576 / max: 1048576".to_string(),
        ),
        (
            1,
            "Executable in PATH: modprobe",
            "/usr/sbin/modprobe".to_string(),
        ),
        (1, "Control Groups", "version 1".to_string()),
    ]
    .into_iter()
    .map(|(l, n, v)| (l, n.to_string(), v))
    .collect::<Vec<_>>();
    match f.get("output").map(|s| s.as_str()).unwrap_or("text") {
        "json" => {
            let a: Vec<Value> = probes.iter().map(|(_, n, v)| json!({"path":[n],"displayName":n,"prop":v,"message":"","category":"pass","error":null})).collect();
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        _ => {
            for (l, n, v) in probes {
                println!("{}{n}: {v} (pass)", "  ".repeat(l));
            }
        }
    }
    Ok(())
}

/// Entry point of the `k0s` binary; returns the exit code.
pub fn main() -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Like Go programs: die quietly on a closed pipe (`k0s status -o json | head`).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let argv: Vec<String> = std::env::args().collect();
    match run_cli(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(|x| x.to_string()).collect()
    }

    #[test]
    fn install_args_are_normalised_like_k0s() {
        let specs: Vec<Spec> = vec![DEBUG, DATA, CONTROLLER, WORKER, INSTALL];
        let (f, pos) = parse(&args("--enable-worker --no-taints -c /etc/k0s/k0s.yaml --data-dir=/var/lib/k0s --force -e A=b"), &specs).unwrap();
        assert!(pos.is_empty());
        assert_eq!(
            normalized_args("controller", &f).unwrap(),
            args(
                "controller --config=/etc/k0s/k0s.yaml --data-dir=/var/lib/k0s --enable-worker=true --no-taints=true"
            )
        );
        assert_eq!(f.env, vec!["A=b".to_string()]);
    }

    #[test]
    fn install_args_use_pflag_rendering_of_values() {
        let specs: Vec<Spec> = vec![DEBUG, DATA, WORKER, INSTALL];
        let (f, _) = parse(
            &args("-l kubelet=3 --labels=zz=1,aa=2 --labels b=3 --taints=x=y:NoSchedule"),
            &specs,
        )
        .unwrap();
        assert_eq!(
            normalized_args_for("worker", &f, "v1.34.1+k0s.0").unwrap(),
            args(
                "worker --labels=aa=2,b=3,zz=1 --logging=containerd=info,etcd=info,konnectivity-server=1,kube-apiserver=1,kube-controller-manager=1,kube-scheduler=1,kubelet=3 --taints=x=y:NoSchedule"
            )
        );
        // Before v1.34 labels are a string slice: given order, repeats appended.
        assert_eq!(
            normalized_args_for("worker", &f, "v1.33.4+k0s.0").unwrap()[1],
            "--labels=zz=1,aa=2,b=3"
        );
        let (bad, _) = parse(&args("--logging=nope=1"), &specs).unwrap();
        assert!(normalized_args_for("worker", &bad, "v1.34.1+k0s.0").is_err());
    }

    #[test]
    fn unknown_flags_fail_like_cobra() {
        let e = parse(
            &args("--peer-address 10.0.0.1 --datadir /var/lib/k0s"),
            &[DEBUG, DATA, &[("peer-address", "", false)]],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "unknown flag: --datadir");
    }

    #[test]
    fn config_validation() {
        validate_config("apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  api:\n    address: 10.0.0.1\n").unwrap();
        assert!(
            validate_config("spec:\n  api:\n    address: 0.0.0.0\n")
                .unwrap_err()
                .to_string()
                .contains("INADDR_ANY")
        );
        assert!(validate_config("spec:\n  bogus: 1\n").is_err());
    }
}
