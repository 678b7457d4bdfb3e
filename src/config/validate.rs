//! Validation of a decoded [`Cluster`], with every message pointing at its line and column.
//!
//! The rules are k0sctl's (`Cluster.Validate`, `Host.Validate`, `UploadFile.Validate`, …, with
//! k0sctl's wording where it has one) plus the static parts of checks k0sctl only makes after
//! connecting (e.g. `nodeLocalLoadBalancing` with a `single` host), so they fail before any host
//! is touched. Unlike k0sctl, hosts are validated also when there is only one.

use std::collections::HashMap;
use std::net::IpAddr;

use super::diag::{Diagnostic, did_you_mean};
use super::flags::balanced_quotes;
use super::model::*;
use super::yaml::{Node, NodeKind, Pos};
use crate::k0s::version::K0sVersion;

/// Finds the position of a key path (`spec.hosts[1].ssh.address`) in the document tree.
pub struct Locator<'a> {
    root: &'a Node,
}

#[derive(Debug, Clone, Copy)]
pub enum Anchor {
    /// The key of the entry (for "unknown field", "required", "conflicts with").
    Key,
    /// The value (for "invalid value").
    Value,
}

impl<'a> Locator<'a> {
    pub fn new(root: &'a Node) -> Self {
        Self { root }
    }

    /// Walks `path`: the node it names (if it exists) and the position of the deepest key or
    /// item that exists on the way.
    fn walk(&self, path: &str) -> (Option<&'a Node>, Pos) {
        let mut node = self.root;
        let mut best = self.root.pos;
        for seg in split_path(path) {
            let next = match (seg, &node.kind) {
                (Seg::Key(k), NodeKind::Map(entries)) => entries
                    .iter()
                    .find(|e| e.key_str() == k)
                    .map(|e| (&e.value, e.key.pos)),
                (Seg::Index(i), NodeKind::Seq(items)) => items.get(i).map(|n| (n, n.pos)),
                _ => None,
            };
            let Some((n, pos)) = next else {
                return (None, best);
            };
            node = n;
            best = pos;
        }
        (Some(node), best)
    }

    /// The position of `path`, or of its nearest ancestor that exists.
    pub fn pos(&self, path: &str, anchor: Anchor) -> Pos {
        match (self.walk(path), anchor) {
            ((Some(node), _), Anchor::Value) => node.pos,
            ((_, best), _) => best,
        }
    }

    /// True when the path exists in the document (as opposed to coming from a default).
    pub fn exists(&self, path: &str) -> bool {
        self.walk(path).0.is_some()
    }
}

enum Seg<'p> {
    Key(&'p str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped.find(']').unwrap_or(stripped.len());
            if let Ok(i) = stripped[..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = stripped.get(end + 1..).unwrap_or("");
        }
    }
    out
}

struct Checker<'a> {
    loc: Locator<'a>,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic, anchor: Anchor) -> &mut Diagnostic {
        let pos = self.loc.pos(&d.path, anchor);
        self.out.push(d.at(pos));
        self.out.last_mut().expect("just pushed")
    }

    fn err(
        &mut self,
        path: impl Into<String>,
        anchor: Anchor,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Diagnostic::error(path, message), anchor)
    }

    fn warn(
        &mut self,
        path: impl Into<String>,
        anchor: Anchor,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Diagnostic::warning(path, message), anchor)
    }
}

/// Validates the cluster. `root` is the Cluster document's tree, for positions.
pub fn validate(c: &Cluster, root: &Node) -> Vec<Diagnostic> {
    let mut ck = Checker {
        loc: Locator::new(root),
        out: Vec::new(),
    };
    use Anchor::*;

    // The loader selects the Cluster document by apiVersion (and reports a wrong one), and by
    // kind case-insensitively; k0sctl accepts only these two spellings.
    if c.kind != "Cluster" && c.kind != "cluster" {
        ck.err("kind", Value, "must equal Cluster").with_hint(Some(
            "the cluster document is apiVersion: k0sctl.k0sproject.io/v1beta1, kind: Cluster"
                .into(),
        ));
    }

    validate_hosts(&mut ck, c);
    validate_k0s(&mut ck, c);
    validate_options(&mut ck, &c.spec.options);
    ck.out
}

fn validate_hosts(ck: &mut Checker, c: &Cluster) {
    use Anchor::*;
    let hosts = &c.spec.hosts;
    if hosts.is_empty() {
        ck.err("spec.hosts", Key, "at least one host required")
            .with_hint(Some("run `k0sctl init` for an example".into()));
        return;
    }
    if !hosts.iter().any(Host::is_controller) {
        ck.err("spec.hosts", Key, "no hosts with a controller role defined")
            .with_hint(Some(
                "give at least one host the role controller, controller+worker or single".into(),
            ));
    }
    if hosts.len() > 1 {
        for (i, h) in hosts.iter().enumerate() {
            if h.role == "single" {
                ck.err(
                    format!("spec.hosts[{i}].role"),
                    Value,
                    format!(
                        "{} hosts defined but includes a host with role 'single': {}",
                        hosts.len(),
                        h.display_address()
                    ),
                )
                .with_hint(Some(
                    "a single-node cluster has exactly one host; use controller+worker for more"
                        .into(),
                ));
            }
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, h) in hosts.iter().enumerate() {
        if h.protocols().len() == 1 && !h.address().trim().is_empty() {
            let key = h.display_address();
            if let Some(first) = seen.get(&key) {
                ck.err(
                    format!("spec.hosts[{i}]"),
                    Key,
                    format!("{key}: is not unique"),
                )
                .with_hint(Some(format!(
                    "spec.hosts[{first}] has the same address and port"
                )));
            } else {
                seen.insert(key, i);
            }
        }
        validate_host(ck, c, h, &format!("spec.hosts[{i}]"));
    }
}

fn validate_host(ck: &mut Checker, c: &Cluster, h: &Host, p: &str) {
    use Anchor::*;
    let protocols = h.protocols();
    match protocols.len() {
        0 => {
            ck.err(p, Key, "no protocol configuration").with_hint(Some(
                "add an ssh: block with an address (or openSSH:, winRM:, localhost: true)".into(),
            ));
        }
        1 => {}
        _ => {
            ck.err(
                p,
                Key,
                format!(
                    "multiple protocols configured for a single client ({})",
                    protocols.join(", ")
                ),
            )
            .with_hint(Some(
                "keep exactly one of ssh, openSSH, winRM, localhost".into(),
            ));
        }
    }
    if let Some(ssh) = &h.ssh {
        validate_ssh(ck, ssh, &format!("{p}.ssh"));
    }
    if let Some(o) = &h.open_ssh {
        let op = format!("{p}.openSSH");
        if o.address.trim().is_empty() {
            ck.err(format!("{op}.address"), Key, "required")
                .with_hint(Some(
                    "an IP address, hostname or ~/.ssh/config Host alias".into(),
                ));
        }
        validate_ssh_options(ck, &o.options, &format!("{op}.options"));
    }
    if let Some(w) = &h.win_rm {
        let wp = format!("{p}.winRM");
        // Refused here rather than at connect: there is no WinRM transport, and a run that got
        // as far as connecting would report the host as unreachable, which it is not.
        ck.err(&wp, Key, "Windows hosts are not supported by this build")
            .with_hint(Some(
                "this build manages Linux hosts over SSH only; remove the host from spec.hosts"
                    .into(),
            ));
        if w.address.trim().is_empty() {
            ck.err(format!("{wp}.address"), Key, "required");
        }
        if w.user.len() < 3 {
            ck.err(
                format!("{wp}.user"),
                Value,
                "must be at least 3 characters long",
            );
        }
        let has_cert = w.cert_path.is_some();
        let has_key = w.key_path.is_some();
        if has_cert != has_key {
            let (set, missing) = if has_cert {
                ("certPath", "keyPath")
            } else {
                ("keyPath", "certPath")
            };
            ck.err(
                format!("{wp}.{set}"),
                Key,
                format!("{set} requires {missing}"),
            );
        }
        if w.password.as_deref().unwrap_or("").is_empty() && !(has_cert && has_key) {
            ck.err(
                &wp,
                Key,
                "password, or certPath and keyPath, required for authentication",
            );
        }
        if let Some(b) = &w.bastion {
            validate_ssh(ck, b, &format!("{wp}.bastion"));
        }
    }

    if !ROLES.contains(&h.role.as_str()) {
        let path = format!("{p}.role");
        if !ck.loc.exists(&path) {
            ck.err(&path, Key, "required")
                .with_hint(Some(format!("add role: with one of {}", ROLES.join(", "))));
        } else {
            let hint = did_you_mean(&h.role, ROLES)
                .or_else(|| Some(format!("expected one of {}", ROLES.join(", "))));
            ck.err(&path, Value, format!("unknown role {}", h.role))
                .with_hint(hint);
        }
    }

    if let Some(a) = &h.private_address
        && a.parse::<IpAddr>().is_err()
    {
        ck.err(
            format!("{p}.privateAddress"),
            Value,
            format!("{a:?} is not a valid IP address"),
        );
    }
    if h.no_taints && h.role != "controller+worker" {
        let path = if ck.loc.exists(&format!("{p}.noTaints")) {
            format!("{p}.noTaints")
        } else {
            format!("{p}.installFlags")
        };
        ck.err(
            path,
            Key,
            "noTaints can only be true for controller+worker role",
        );
    }
    for (i, f) in h.install_flags.0.iter().enumerate() {
        if !balanced_quotes(f) {
            ck.err(
                format!("{p}.installFlags[{i}]"),
                Value,
                format!("unbalanced quotes in {f}"),
            )
            .with_hint(Some(
                "close the quote, e.g. --labels=\"a=b,c=d\"; inside YAML, wrap the whole flag in single quotes".into(),
            ));
        }
    }
    if h.use_existing_k0s {
        for (set, name) in [
            (h.upload_binary, "uploadBinary"),
            (h.k0s_binary_path.is_some(), "k0sBinaryPath"),
            (h.k0s_download_url.is_some(), "k0sDownloadURL"),
        ] {
            if set {
                ck.err(
                    format!("{p}.{name}"),
                    Key,
                    format!("{name} can't be used with useExistingK0s: true"),
                )
                .with_hint(Some(
                    "useExistingK0s uses the k0s already on the host; remove one of them".into(),
                ));
            }
        }
    }
    for (key, _) in &h.environment {
        if key.is_empty() || key.contains('=') || key.chars().any(char::is_whitespace) {
            ck.err(
                format!("{p}.environment"),
                Key,
                format!("{key:?} is not a valid environment variable name"),
            );
        }
    }
    for (action, stages) in &h.hooks {
        let ap = format!("{p}.hooks.{action}");
        if !HOOK_ACTIONS.contains(&action.as_str()) {
            let hint = did_you_mean(action, HOOK_ACTIONS)
                .or_else(|| Some(format!("k0sctl runs {}", HOOK_ACTIONS.join(", "))));
            ck.warn(&ap, Key, format!("hook action {action:?} is never run"))
                .with_hint(hint);
        }
        for stage in stages.keys() {
            if !HOOK_STAGES.contains(&stage.as_str()) {
                let hint = did_you_mean(stage, HOOK_STAGES)
                    .or_else(|| Some("stages are before and after".into()));
                ck.warn(
                    format!("{ap}.{stage}"),
                    Key,
                    format!("hook stage {stage:?} is never run"),
                )
                .with_hint(hint);
            }
        }
    }
    if let Some(hn) = &h.hostname {
        let flags = &h.install_flags;
        if let Some(extra) = flags.value("--kubelet-extra-args") {
            let sub = super::flags::Flags(shlex::split(&extra).unwrap_or_default());
            if let Some(over) = sub.value("--hostname-override")
                && over != *hn
            {
                ck.err(
                    format!("{p}.hostname"),
                    Value,
                    "hostname and installFlags kubelet-extra-args hostname-override mismatch, only define either one",
                );
            }
        }
    }
    for (i, f) in h.files.iter().enumerate() {
        validate_file(ck, f, &format!("{p}.files[{i}]"));
    }
    if h.kubelet_root_dir.is_some()
        && let Some(v) = c
            .spec
            .k0s
            .version
            .as_deref()
            .and_then(|v| K0sVersion::parse(v).ok())
        && v < K0sVersion::parse("v1.32.1-rc.0").expect("constant")
    {
        ck.err(
            format!("{p}.kubeletRootDir"),
            Key,
            format!("kubeletRootDir requires k0s v1.32.1 or newer (spec.k0s.version is {v})"),
        );
    }
    if h.role == "single" && nllb_enabled(&c.spec.k0s.config) {
        ck.err(
            "spec.k0s.config.spec.network.nodeLocalLoadBalancing.enabled",
            Value,
            "nodeLocalLoadBalancing can't be enabled with a host of role single",
        );
    }
}

fn nllb_enabled(config: &Mapping) -> bool {
    config
        .get("spec")
        .and_then(|s| s.get("network"))
        .and_then(|n| n.get("nodeLocalLoadBalancing"))
        .and_then(|n| n.get("enabled"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

fn validate_ssh(ck: &mut Checker, ssh: &Ssh, p: &str) {
    use Anchor::*;
    if ssh.address.trim().is_empty() {
        ck.err(format!("{p}.address"), Key, "required")
            .with_hint(Some("the host's IP address or DNS name".into()));
    }
    if ssh.key_path.as_deref() == Some("") {
        ck.err(
            format!("{p}.keyPath"),
            Value,
            "must not be empty (remove it to use the defaults)",
        );
    }
    validate_ssh_options(ck, &ssh.options, &format!("{p}.options"));
    if let Some(b) = &ssh.bastion {
        validate_ssh(ck, b, &format!("{p}.bastion"));
    }
}

fn validate_ssh_options(ck: &mut Checker, options: &Mapping, p: &str) {
    for (k, v) in options {
        let path = format!("{p}.{k}");
        if !SSH_CONFIG_KEYWORDS
            .iter()
            .any(|kw| kw.eq_ignore_ascii_case(k))
        {
            let hint = did_you_mean(k, SSH_CONFIG_KEYWORDS.iter().copied())
                .or_else(|| Some("see ssh_config(5) for the directives".into()));
            ck.err(&path, Anchor::Key, format!("unknown ssh option {k}"))
                .with_hint(hint);
        } else if v.is_object() || v.is_array() {
            ck.err(
                &path,
                Anchor::Value,
                "ssh option values must be a string, number or boolean",
            );
        }
    }
}

fn validate_file(ck: &mut Checker, f: &UploadFile, p: &str) {
    use Anchor::*;
    if f.src.trim().is_empty() && !f.has_data() {
        ck.err(p, Key, "src or data required").with_hint(Some(
            "give src: (a local file, directory, glob or URL) or data: (the file's content)".into(),
        ));
    }
    if f.dst.is_empty() && f.dst_dir.is_empty() {
        ck.err(p, Key, "dst or dstDir required").with_hint(Some(
            "dst: names the destination file, dstDir: the directory to upload into".into(),
        ));
    }
    if f.has_data() && f.dst.is_empty() && f.name.is_empty() {
        ck.err(p, Key, "name or dst required for data")
            .with_hint(Some(
                "with only dstDir, name is used as the file name".into(),
            ));
    }
    if !f.src.is_empty() && f.has_data() {
        ck.err(format!("{p}.data"), Key, "src and data can't both be set")
            .with_hint(Some(
                "keep src: to upload a file, or data: to write this content".into(),
            ));
    }
    for (perm, key) in [(&f.perm, "perm"), (&f.dir_perm, "dirPerm")] {
        if let Some(Perm {
            error: Some(e),
            octal,
        }) = perm
        {
            let hint = if octal == "0" {
                Some(format!(
                    "{key}: 0 would leave it unreadable even to its owner; write a mode such as 0644, or remove {key}"
                ))
            } else if e.contains('(') {
                None
            } else {
                Some("write the mode in octal with a leading 0, such as 0644 or 0755".into())
            };
            ck.err(format!("{p}.{key}"), Value, e.clone())
                .with_hint(hint);
        }
    }
}

/// Resolves the hosts' local `files:` sources against `base` (the configuration file's
/// directory), as k0sctl does before connecting: a missing path, a glob or directory without
/// files, and several files for a single-file `dst` are errors at the entry's `src` / `dst`.
/// Entries with other problems (no `src`, `src` and `data` both) are left to [`validate`].
pub fn validate_local_files(c: &Cluster, root: &Node, base: &std::path::Path) -> Vec<Diagnostic> {
    use super::local_files::{SourceError, matches};
    use Anchor::*;
    let mut ck = Checker {
        loc: Locator::new(root),
        out: Vec::new(),
    };
    for (hi, h) in c.spec.hosts.iter().enumerate() {
        for (fi, f) in h.files.iter().enumerate() {
            if f.has_data() || f.is_url() || f.src.trim().is_empty() {
                continue;
            }
            let p = format!("spec.hosts[{hi}].files[{fi}]");
            match matches(&f.src, base) {
                Err(SourceError::Missing(_)) => {
                    ck.err(
                        format!("{p}.src"),
                        Value,
                        format!("{}: no such file or directory", f.src),
                    )
                    .with_hint(Some(
                        "a relative src is resolved against the configuration file's directory; fix the path or create the file".into(),
                    ));
                }
                Err(SourceError::NoMatch) => {
                    ck.err(
                        format!("{p}.src"),
                        Value,
                        format!("no files found for {}", f.src),
                    )
                    .with_hint(Some(
                        "the pattern or directory (relative to the configuration file's directory) holds no file; fix src or remove the entry".into(),
                    ));
                }
                Err(SourceError::BadGlob(e)) => {
                    ck.err(
                        format!("{p}.src"),
                        Value,
                        format!("invalid glob {:?}: {e}", f.src),
                    )
                    .with_hint(Some(
                        "globs use *, **, ?, [abc] and {a,b}; close every [ and {".into(),
                    ));
                }
                Ok(found) if found.len() > 1 && !f.dst.is_empty() => {
                    let names: Vec<String> = found
                        .iter()
                        .take(3)
                        .map(|(_, r)| r.display().to_string())
                        .collect();
                    let more = if found.len() > 3 { ", …" } else { "" };
                    ck.err(
                        format!("{p}.dst"),
                        Value,
                        format!(
                            "found multiple files for {} but single file dst {} defined ({} files: {}{more})",
                            f.src,
                            f.dst,
                            found.len(),
                            names.join(", ")
                        ),
                    )
                    .with_hint(Some(
                        "use dstDir: to upload every match into a directory, or narrow src to one file".into(),
                    ));
                }
                Ok(_) => {}
            }
        }
    }
    ck.out
}

fn validate_k0s(ck: &mut Checker, c: &Cluster) {
    use Anchor::*;
    let k = &c.spec.k0s;
    let min = K0sVersion::parse("0.11.0-rc1").expect("constant");
    let dyn_min = K0sVersion::parse("1.22.2+k0s.2").expect("constant");
    if let Some(v) = &k.version {
        match K0sVersion::parse(v) {
            Err(e) => {
                ck.err("spec.k0s.version", Value, e)
                    .with_hint(Some("a k0s release such as v1.33.1+k0s.0".into()));
            }
            Ok(ver) => {
                if ver < min {
                    ck.err(
                        "spec.k0s.version",
                        Value,
                        format!("minimum supported k0s version is {min}"),
                    );
                }
                if k.dynamic_config && ver < dyn_min {
                    ck.err(
                        "spec.k0s.dynamicConfig",
                        Value,
                        format!("dynamic config only available since k0s version {dyn_min} (spec.k0s.version is {ver})"),
                    )
                    .with_hint(Some(format!(
                        "set spec.k0s.version to {dyn_min} or newer, or remove dynamicConfig"
                    )));
                }
            }
        }
    }
    if !["stable", "latest"].contains(&k.version_channel.as_str()) {
        let hint = did_you_mean(&k.version_channel, ["stable", "latest"])
            .or_else(|| Some("use stable or latest".into()));
        ck.err(
            "spec.k0s.versionChannel",
            Value,
            format!("unknown version channel {:?}", k.version_channel),
        )
        .with_hint(hint);
    }
    // k0s reads the kind without regard to case (k0sctl's own smoke test writes a separate
    // `kind: clusterconfig` document, merged here).
    if let Some(kind) = k.config.get("kind").and_then(|v| v.as_str())
        && !["clusterconfig", "cluster"].contains(&kind.to_ascii_lowercase().as_str())
    {
        ck.err(
            "spec.k0s.config.kind",
            Value,
            format!("kind {kind:?} is not a k0s config"),
        )
        .with_hint(Some("use kind: ClusterConfig, or leave it out".into()));
    }
    if let Some(api) = k.config.get("apiVersion").and_then(|v| v.as_str())
        && api != K0S_API_VERSION
    {
        ck.err(
            "spec.k0s.config.apiVersion",
            Value,
            format!("must equal {K0S_API_VERSION}"),
        )
        .with_hint(Some(format!(
            "k0s reads apiVersion: {K0S_API_VERSION}, kind: ClusterConfig; or leave both out"
        )));
    }
}

fn validate_options(ck: &mut Checker, o: &Options) {
    use Anchor::*;
    let e = &o.evict_taint;
    if !TAINT_EFFECTS.contains(&e.effect.as_str()) {
        let hint = did_you_mean(&e.effect, TAINT_EFFECTS)
            .or_else(|| Some(format!("expected one of {}", TAINT_EFFECTS.join(", "))));
        ck.err(
            "spec.options.evictTaint.effect",
            Value,
            format!("unknown taint effect {:?}", e.effect),
        )
        .with_hint(hint);
    }
    let key = e.taint.split('=').next().unwrap_or("");
    if key.is_empty() || e.taint.contains(':') || e.taint.split('=').count() > 2 {
        ck.err(
            "spec.options.evictTaint.taint",
            Value,
            format!("invalid taint {:?}: expected key=value or key", e.taint),
        )
        .with_hint(Some("the effect goes in evictTaint.effect".into()));
    }
    if o.concurrency.worker_disruption_percent > 100 {
        ck.err(
            "spec.options.concurrency.workerDisruptionPercent",
            Value,
            "must be between 0 and 100",
        );
    }
}
