//! The `k0sctl.yaml` model: `apiVersion: k0sctl.k0sproject.io/v1beta1`, `kind: Cluster`.
//!
//! Field names, defaults and serialisation order follow k0sctl v0.32.2, so a manifest written
//! for k0sctl loads unchanged and `k0sctl init` output matches. Every struct is
//! `#[serde(default)]`: missing keys get k0sctl's defaults here, and required keys are checked
//! by [`super::validate`], which can point at the right line. Values that are only known at run
//! time (the data dir's OS default, the leader) are not part of this model.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::GoDuration;
use super::flags::Flags;

pub const API_VERSION: &str = "k0sctl.k0sproject.io/v1beta1";
pub const K0S_API_VERSION: &str = "k0s.k0sproject.io/v1beta1";

/// Free-form mapping with key order preserved (k0s config, ssh options).
pub type Mapping = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Cluster {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: "Cluster".into(),
            metadata: Metadata::default(),
            spec: Spec::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Cluster name; the kubeconfig's cluster and context name.
    pub name: String,
    /// The kubeconfig's user name.
    pub user: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Self {
            name: "k0s-cluster".into(),
            user: "admin".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spec {
    pub hosts: Vec<Host>,
    #[serde(skip_serializing_if = "K0s::is_default")]
    pub k0s: K0s,
    pub options: Options,
}

/// The host roles k0sctl knows.
pub const ROLES: [&str; 4] = ["controller", "worker", "controller+worker", "single"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Host {
    // Connection: exactly one of these four.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Ssh>,
    #[serde(rename = "openSSH", skip_serializing_if = "Option::is_none")]
    pub open_ssh: Option<OpenSsh>,
    #[serde(rename = "winRM", skip_serializing_if = "Option::is_none")]
    pub win_rm: Option<WinRm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localhost: Option<Localhost>,

    /// controller | worker | controller+worker | single
    pub role: String,
    #[serde(skip_serializing_if = "is_false")]
    pub reset: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubelet_root_dir: Option<String>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub environment: IndexMap<String, String>,
    #[serde(skip_serializing_if = "is_false")]
    pub upload_binary: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub use_existing_k0s: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k0s_binary_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k0s_install_path: Option<String>,
    #[serde(rename = "k0sDownloadURL", skip_serializing_if = "Option::is_none")]
    pub k0s_download_url: Option<String>,
    #[serde(skip_serializing_if = "Flags::is_empty")]
    pub install_flags: Flags,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<UploadFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub no_taints: bool,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub hooks: Hooks,
}

impl Flags {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `hooks: {<action>: {<stage>: [commands]}}`.
pub type Hooks = IndexMap<String, IndexMap<String, Vec<String>>>;

/// Hook actions and stages that k0sctl runs.
pub const HOOK_ACTIONS: [&str; 6] = ["connect", "apply", "install", "upgrade", "reset", "backup"];
pub const HOOK_STAGES: [&str; 2] = ["before", "after"];

impl Host {
    /// Which connection blocks are set, by their manifest key.
    pub fn protocols(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.ssh.is_some() {
            v.push("ssh");
        }
        if self.open_ssh.is_some() {
            v.push("openSSH");
        }
        if self.win_rm.is_some() {
            v.push("winRM");
        }
        if self.localhost.as_ref().is_some_and(|l| l.enabled) {
            v.push("localhost");
        }
        v
    }

    /// The host's address as k0sctl prints it in messages: `address:port`, or `localhost`.
    pub fn display_address(&self) -> String {
        if let Some(s) = &self.ssh {
            format!("{}:{}", s.address, s.port)
        } else if let Some(o) = &self.open_ssh {
            let mut s = String::new();
            if let Some(u) = &o.user {
                s.push_str(u);
                s.push('@');
            }
            s.push_str(&o.address);
            if let Some(p) = o.port {
                s.push_str(&format!(":{p}"));
            }
            s
        } else if let Some(w) = &self.win_rm {
            format!("{}:{}", w.address, w.effective_port())
        } else {
            "localhost".into()
        }
    }

    /// The address used to reach the host (for SANs and kubeconfig), `127.0.0.1` for localhost.
    pub fn address(&self) -> &str {
        if let Some(s) = &self.ssh {
            &s.address
        } else if let Some(o) = &self.open_ssh {
            &o.address
        } else if let Some(w) = &self.win_rm {
            &w.address
        } else {
            "127.0.0.1"
        }
    }

    pub fn is_controller(&self) -> bool {
        matches!(
            self.role.as_str(),
            "controller" | "controller+worker" | "single"
        )
    }

    pub fn is_worker(&self) -> bool {
        self.role.ends_with("worker")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Ssh {
    pub address: String,
    pub user: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Box<Ssh>>,
    /// ssh_config directives, e.g. `StrictHostKeyChecking: false`.
    #[serde(skip_serializing_if = "Mapping::is_empty")]
    pub options: Mapping,
}

impl Default for Ssh {
    fn default() -> Self {
        Self {
            address: String::new(),
            user: "root".into(),
            port: 22,
            key_path: None,
            bastion: None,
            options: Mapping::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenSsh {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    #[serde(skip_serializing_if = "Mapping::is_empty")]
    pub options: Mapping,
    #[serde(skip_serializing_if = "is_false")]
    pub disable_multiplexing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WinRm {
    pub address: String,
    pub user: String,
    /// 0 means the default: 5985, or 5986 with HTTPS.
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(rename = "useHTTPS", skip_serializing_if = "is_false")]
    pub use_https: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub insecure: bool,
    #[serde(rename = "useNTLM", skip_serializing_if = "is_false")]
    pub use_ntlm: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    #[serde(rename = "tlsServerName", skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Ssh>,
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}

impl Default for WinRm {
    fn default() -> Self {
        Self {
            address: String::new(),
            user: "Administrator".into(),
            port: 0,
            password: None,
            use_https: false,
            insecure: false,
            use_ntlm: false,
            ca_cert_path: None,
            cert_path: None,
            key_path: None,
            tls_server_name: None,
            bastion: None,
        }
    }
}

impl WinRm {
    /// Port 5986 implies HTTPS (as in rig).
    pub fn https(&self) -> bool {
        self.use_https || self.port == 5986
    }

    pub fn effective_port(&self) -> u16 {
        match self.port {
            0 if self.https() => 5986,
            0 => 5985,
            p => p,
        }
    }
}

/// `localhost: true`, or the legacy `localhost: {enabled: true}`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Localhost {
    pub enabled: bool,
}

impl Serialize for Localhost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(self.enabled)
    }
}

impl<'de> Deserialize<'de> for Localhost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Localhost;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or {enabled: true}")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Localhost, E> {
                Ok(Localhost { enabled: v })
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Localhost, E> {
                Ok(Localhost::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Localhost, A::Error> {
                let mut enabled = false;
                while let Some(k) = m.next_key::<String>()? {
                    if k == "enabled" {
                        enabled = m.next_value()?;
                    } else {
                        super::decode::unknown_key::<A::Error>(&k, &["enabled"])?;
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Localhost { enabled })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Localhost, E> {
                super::decode::invalid(format!(
                    "expected true, false or {{enabled: true}}, found {v:?}"
                ))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Localhost, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Localhost, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Localhost, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Localhost, A::Error> {
                super::decode::invalid("expected true, false or {enabled: true}, found a list")
            }
        }
        d.deserialize_any(V)
    }
}

/// A `files[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UploadFile {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub src: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub data: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dst_dir: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perm: Option<Perm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir_perm: Option<Perm>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
}

impl UploadFile {
    pub fn has_data(&self) -> bool {
        !self.data.trim().is_empty()
    }

    pub fn is_url(&self) -> bool {
        self.src.contains("://")
    }
}

/// A file mode, written as a YAML 1.1 octal number (`0644`) or a string (`"0644"`); kept as the
/// octal string k0sctl passes to chmod. Invalid modes keep the text and record the reason so
/// validation can report it with its position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Perm {
    pub octal: String,
    pub error: Option<String>,
}

impl Perm {
    /// k0sctl's rules: positive, octal digits only, and the owner digit at least 4 (catches
    /// `perm: 644` written without the leading 0, which YAML reads as decimal 644 = 0o1204).
    pub fn from_number(n: i128) -> Perm {
        if n < 0 {
            return Perm::bad(
                n.to_string(),
                format!("invalid permission: {n}: must be a positive value"),
            );
        }
        if n == 0 {
            return Perm::bad("0".into(), "invalid nil permission".into());
        }
        Perm::from_octal_string(format!("0{n:o}"))
    }

    pub fn from_octal_string(s: String) -> Perm {
        for (i, c) in s.chars().enumerate() {
            let Some(d) = c.to_digit(10) else {
                return Perm::bad(
                    s.clone(),
                    format!("failed to parse permission {s}: {c:?} is not a digit"),
                );
            };
            if i == 1 && d < 4 {
                return Perm::bad(
                    s.clone(),
                    format!(
                        "invalid permission {s}: owner would have unconventional access (write modes with a leading 0, e.g. 0644)"
                    ),
                );
            }
            if d > 7 {
                return Perm::bad(
                    s.clone(),
                    format!("invalid permission {s}: octal value can't have numbers over 7"),
                );
            }
        }
        Perm {
            octal: s,
            error: None,
        }
    }

    fn bad(octal: String, error: String) -> Perm {
        Perm {
            octal,
            error: Some(error),
        }
    }

    /// The mode as a number (for chmod over the wire).
    pub fn mode(&self) -> Option<u32> {
        if self.error.is_some() {
            return None;
        }
        u32::from_str_radix(&self.octal, 8).ok()
    }
}

impl Serialize for Perm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.octal)
    }
}

impl<'de> Deserialize<'de> for Perm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Perm;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a file mode such as 0644")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Perm, E> {
                Ok(Perm::from_number(v as i128))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Perm, E> {
                Ok(Perm::from_number(v as i128))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Perm, E> {
                Ok(Perm::from_number(v as i128))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Perm, E> {
                Ok(Perm::from_octal_string(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Perm, E> {
                super::decode::invalid(format!("expected a file mode such as 0644, found {v}"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct K0s {
    /// k0s version, e.g. `v1.33.1+k0s.0`; unset means "latest on the channel" or "what runs".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `stable` or `latest`, used only when `version` is unset.
    #[serde(skip_serializing_if = "is_stable")]
    pub version_channel: String,
    #[serde(skip_serializing_if = "is_false")]
    pub dynamic_config: bool,
    /// Free-form k0s ClusterConfig; key order is kept.
    #[serde(skip_serializing_if = "Mapping::is_empty")]
    pub config: Mapping,
}

fn is_stable(s: &String) -> bool {
    s == "stable" || s.is_empty()
}

impl Default for K0s {
    fn default() -> Self {
        Self {
            version: None,
            version_channel: "stable".into(),
            dynamic_config: false,
            config: Mapping::new(),
        }
    }
}

impl K0s {
    pub fn is_default(&self) -> bool {
        *self == K0s::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Options {
    pub wait: WaitOption,
    pub drain: DrainOption,
    pub concurrency: ConcurrencyOption,
    pub evict_taint: EvictTaintOption,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WaitOption {
    pub enabled: bool,
}

impl Default for WaitOption {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DrainOption {
    pub enabled: bool,
    pub grace_period: GoDuration,
    pub timeout: GoDuration,
    pub force: bool,
    pub ignore_daemon_sets: bool,
    pub delete_empty_dir_data: bool,
    pub pod_selector: String,
    pub skip_wait_for_delete_timeout: GoDuration,
}

impl Default for DrainOption {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_period: GoDuration::from_secs(120),
            timeout: GoDuration::from_secs(300),
            force: true,
            ignore_daemon_sets: true,
            delete_empty_dir_data: true,
            pod_selector: String::new(),
            skip_wait_for_delete_timeout: GoDuration::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConcurrencyOption {
    /// Hosts configured in parallel; 0 = unlimited.
    pub limit: u32,
    /// Percentage of workers upgraded at once.
    pub worker_disruption_percent: u32,
    /// Parallel uploads; 0 = unlimited.
    pub uploads: u32,
}

impl Default for ConcurrencyOption {
    fn default() -> Self {
        Self {
            limit: 30,
            worker_disruption_percent: 10,
            uploads: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EvictTaintOption {
    pub enabled: bool,
    /// `key=value` (or just `key`).
    pub taint: String,
    pub effect: String,
    pub controller_workers: bool,
}

pub const TAINT_EFFECTS: [&str; 3] = ["NoExecute", "NoSchedule", "PreferNoSchedule"];

impl Default for EvictTaintOption {
    fn default() -> Self {
        Self {
            enabled: false,
            taint: "k0sctl.k0sproject.io/evict=true".into(),
            effect: "NoExecute".into(),
            controller_workers: false,
        }
    }
}

/// SSH client configuration keywords (OpenSSH `ssh_config(5)`), for validating `ssh.options`.
pub const SSH_CONFIG_KEYWORDS: &[&str] = &[
    "AddKeysToAgent",
    "AddressFamily",
    "BatchMode",
    "BindAddress",
    "BindInterface",
    "CanonicalDomains",
    "CanonicalizeFallbackLocal",
    "CanonicalizeHostname",
    "CanonicalizeMaxDots",
    "CanonicalizePermittedCNAMEs",
    "CASignatureAlgorithms",
    "CertificateFile",
    "ChannelTimeout",
    "CheckHostIP",
    "Ciphers",
    "ClearAllForwardings",
    "Compression",
    "ConnectionAttempts",
    "ConnectTimeout",
    "ControlMaster",
    "ControlPath",
    "ControlPersist",
    "DynamicForward",
    "EnableEscapeCommandline",
    "EnableSSHKeysign",
    "EscapeChar",
    "ExitOnForwardFailure",
    "FingerprintHash",
    "ForkAfterAuthentication",
    "ForwardAgent",
    "ForwardX11",
    "ForwardX11Timeout",
    "ForwardX11Trusted",
    "GatewayPorts",
    "GlobalKnownHostsFile",
    "GSSAPIAuthentication",
    "GSSAPIDelegateCredentials",
    "HashKnownHosts",
    "Host",
    "HostbasedAcceptedAlgorithms",
    "HostbasedAuthentication",
    "HostKeyAlgorithms",
    "HostKeyAlias",
    "Hostname",
    "IdentitiesOnly",
    "IdentityAgent",
    "IdentityFile",
    "IgnoreUnknown",
    "Include",
    "IPQoS",
    "KbdInteractiveAuthentication",
    "KbdInteractiveDevices",
    "KexAlgorithms",
    "KnownHostsCommand",
    "LocalCommand",
    "LocalForward",
    "LogLevel",
    "LogVerbose",
    "MACs",
    "Match",
    "NoHostAuthenticationForLocalhost",
    "NumberOfPasswordPrompts",
    "ObscureKeystrokeTiming",
    "PasswordAuthentication",
    "PermitLocalCommand",
    "PermitRemoteOpen",
    "PKCS11Provider",
    "Port",
    "PreferredAuthentications",
    "ProxyCommand",
    "ProxyJump",
    "ProxyUseFdpass",
    "PubkeyAcceptedAlgorithms",
    "PubkeyAuthentication",
    "RekeyLimit",
    "RemoteCommand",
    "RemoteForward",
    "RequestTTY",
    "RequiredRSASize",
    "RevokedHostKeys",
    "SecurityKeyProvider",
    "SendEnv",
    "ServerAliveCountMax",
    "ServerAliveInterval",
    "SessionType",
    "SetEnv",
    "StdinNull",
    "StreamLocalBindMask",
    "StreamLocalBindUnlink",
    "StrictHostKeyChecking",
    "SyslogFacility",
    "TCPKeepAlive",
    "Tag",
    "Tunnel",
    "TunnelDevice",
    "UpdateHostKeys",
    "User",
    "UserKnownHostsFile",
    "VerifyHostKeyDNS",
    "VisualHostKey",
    "XAuthLocation",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perm_rules() {
        assert_eq!(Perm::from_number(0o755).octal, "0755");
        assert!(
            Perm::from_number(644)
                .error
                .unwrap()
                .contains("unconventional")
        );
        assert!(Perm::from_number(0).error.unwrap().contains("nil"));
        assert!(
            Perm::from_octal_string("0855".into())
                .error
                .unwrap()
                .contains("over 7")
        );
        assert!(Perm::from_octal_string("0x44".into()).error.is_some());
        assert_eq!(Perm::from_octal_string("0600".into()).mode(), Some(0o600));
    }

    #[test]
    fn winrm_ports() {
        let mut w = WinRm::default();
        assert_eq!(w.effective_port(), 5985);
        w.use_https = true;
        assert_eq!(w.effective_port(), 5986);
        let w = WinRm {
            port: 5986,
            ..WinRm::default()
        };
        assert!(w.https());
    }
}
