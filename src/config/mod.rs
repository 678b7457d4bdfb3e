//! Loading `k0sctl.yaml`: files → environment substitution → YAML documents → one `Cluster`
//! (plus merged `ClusterConfig` documents and additional manifests) → defaults → validation.
//!
//! Everything that can be wrong with the input is reported at once, each problem with its
//! file:line:column and key path (see [`diag::Diagnostic`]). [`load`] is the one entry point
//! commands use; [`load_str`] is the same for text already in memory.

pub mod decode;
pub mod diag;
pub mod duration;
pub mod envsubst;
pub mod flags;
pub mod local_files;
pub mod model;
pub mod sources;
pub mod validate;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Severity};
pub use model::*;
use sources::Source;
use yaml::{Document, Node, NodeKind};

/// A document that is neither the Cluster nor a k0s ClusterConfig: applied to the cluster as
/// an additional manifest after install.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// A unique file-like name (`<file>-<n>.yaml` or `<kind>-<name>.yaml`).
    pub name: String,
    pub origin: PathBuf,
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    /// The document's text, passed to `kubectl apply` unchanged.
    pub raw: String,
}

/// A loaded, defaulted and validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub cluster: Cluster,
    /// The file the Cluster document came from (`<stdin>` for standard input).
    pub origin: PathBuf,
    /// Directory that relative paths in the manifest (files[].src) are resolved against.
    pub base_dir: PathBuf,
    pub manifests: Vec<Manifest>,
    /// Non-fatal findings (unset environment variables, hooks that never run, …).
    pub warnings: Vec<Diagnostic>,
    pub sources: Vec<PathBuf>,
}

/// Every problem found in the configuration; `Display` prints one per line.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        write!(
            f,
            "invalid configuration: {n} error{}",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigError {}

/// Input for [`load`]: the `--config` arguments and how to reach the outside world.
pub struct LoadOptions<'a> {
    pub config_args: &'a [String],
    pub cwd: PathBuf,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub stdin: &'a mut dyn FnMut() -> std::io::Result<String>,
}

/// Loads the configuration named by `--config` arguments.
pub fn load(opts: LoadOptions<'_>) -> Result<Loaded, ConfigError> {
    let LoadOptions {
        config_args,
        cwd,
        env,
        stdin,
    } = opts;
    let one = |d: Diagnostic| ConfigError {
        diagnostics: vec![d],
    };
    let srcs = sources::resolve(config_args, &cwd).map_err(one)?;
    let mut texts = Vec::new();
    let mut read_errors = Vec::new();
    for s in &srcs {
        match sources::read(s, &cwd, stdin) {
            Ok(t) => texts.push((s.clone(), t)),
            Err(d) => read_errors.push(d.in_file(s.display())),
        }
    }
    if !read_errors.is_empty() {
        return Err(ConfigError {
            diagnostics: read_errors,
        });
    }
    let inputs: Vec<Input> = texts
        .iter()
        .map(|(s, t)| Input {
            display: s.display(),
            base_dir: match s {
                Source::Stdin => cwd.clone(),
                Source::File(p) => {
                    let full = if p.is_absolute() {
                        p.clone()
                    } else {
                        cwd.join(p)
                    };
                    full.parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| cwd.clone())
                }
            },
            text: t.as_str(),
        })
        .collect();
    load_inputs(&inputs, env, true)
}

/// Loads configuration text held in memory, as if read from `file`. Local `files:` sources
/// are not looked at (there is no configuration directory to resolve them against).
pub fn load_str(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    load_inputs(
        &[Input {
            display: PathBuf::from(file),
            base_dir: PathBuf::from("."),
            text,
        }],
        env,
        false,
    )
}

struct Input<'a> {
    display: PathBuf,
    base_dir: PathBuf,
    text: &'a str,
}

struct ParsedDoc {
    file: usize,
    doc: Document,
    api_version: String,
    kind: String,
}

fn scalar_field(root: &Node, key: &str) -> Option<String> {
    root.get(key)
        .and_then(|e| e.value.scalar_text())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

fn load_inputs(
    inputs: &[Input],
    env: &dyn Fn(&str) -> Option<String>,
    check_local_files: bool,
) -> Result<Loaded, ConfigError> {
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut docs: Vec<ParsedDoc> = Vec::new();
    let mut maps = Vec::new();

    for (fi, input) in inputs.iter().enumerate() {
        let file = &input.display;
        let sub = match envsubst::substitute(input.text, env) {
            Ok(s) => s,
            Err(e) => {
                diags.push(Diagnostic::error("", e.message).at(e.pos).in_file(file));
                maps.push(envsubst::SourceMap::identity(input.text));
                continue;
            }
        };
        for (name, pos) in &sub.unset {
            diags.push(
                Diagnostic::warning("", format!("environment variable {name} is not set; using an empty value"))
                    .at(*pos)
                    .in_file(file)
                    .hint(format!("set it, give a default with ${{{name}:-default}}, or write $${name} for a literal $")),
            );
        }
        let (parsed, errors) = yaml::parse_documents(&sub.text, &sub.map);
        for e in errors {
            diags.push(
                Diagnostic::error("", format!("invalid YAML: {}", e.message))
                    .at(e.pos)
                    .in_file(file),
            );
        }
        for doc in parsed {
            if !matches!(doc.root.kind, NodeKind::Map(_)) {
                diags.push(
                    Diagnostic::error(
                        "",
                        format!(
                            "expected a mapping with apiVersion and kind, found {}",
                            doc.root.describe()
                        ),
                    )
                    .at(doc.pos)
                    .in_file(file),
                );
                continue;
            }
            let api_version = scalar_field(&doc.root, "apiVersion");
            let kind = scalar_field(&doc.root, "kind");
            match (api_version, kind) {
                (Some(api_version), Some(kind)) => docs.push(ParsedDoc {
                    file: fi,
                    doc,
                    api_version,
                    kind,
                }),
                (a, k) => {
                    let missing = match (a, k) {
                        (None, None) => "apiVersion and kind",
                        (None, _) => "apiVersion",
                        _ => "kind",
                    };
                    diags.push(
                        Diagnostic::error("", format!("missing {missing} in resource"))
                            .at(doc.pos)
                            .in_file(file)
                            .hint("every document needs apiVersion and kind; the cluster is apiVersion: k0sctl.k0sproject.io/v1beta1, kind: Cluster"),
                    );
                }
            }
        }
        maps.push(sub.map);
    }

    let is_cluster =
        |d: &ParsedDoc| d.api_version == API_VERSION && d.kind.eq_ignore_ascii_case("cluster");
    let is_cc = |d: &ParsedDoc| {
        d.api_version == K0S_API_VERSION && d.kind.eq_ignore_ascii_case("clusterconfig")
    };
    let clusters: Vec<&ParsedDoc> = docs.iter().filter(|d| is_cluster(d)).collect();

    if clusters.len() != 1 {
        if diags.iter().any(Diagnostic::is_error) {
            return Err(ConfigError { diagnostics: diags });
        }
        if clusters.is_empty() {
            // A Cluster with another apiVersion is almost certainly a typo; say so.
            if let Some(d) = docs.iter().find(|d| d.kind.eq_ignore_ascii_case("cluster")) {
                let pos = d
                    .doc
                    .root
                    .get("apiVersion")
                    .map(|e| e.value.pos)
                    .unwrap_or(d.doc.pos);
                diags.push(
                    Diagnostic::error("apiVersion", format!("must equal {API_VERSION}"))
                        .at(pos)
                        .in_file(&inputs[d.file].display)
                        .hint(format!(
                            "the cluster document is apiVersion: {API_VERSION}, kind: Cluster"
                        )),
                );
            } else if docs.is_empty() {
                diags.push(
                    Diagnostic::error(
                        "",
                        format!(
                            "no resource definition manifests found in configuration files (read: {})",
                            read_list(inputs)
                        ),
                    )
                    .hint("the files hold no YAML document; run `k0sctl init` for an example"),
                );
            } else {
                diags.push(
                    Diagnostic::error(
                        "",
                        format!(
                            "no resources found for apiVersion={API_VERSION}, kind=Cluster (read: {})",
                            read_list(inputs)
                        ),
                    )
                    .hint("run `k0sctl init` for an example"),
                );
            }
        } else {
            for d in &clusters {
                diags.push(
                    Diagnostic::error(
                        "",
                        format!(
                            "expected exactly one cluster config, got {}",
                            clusters.len()
                        ),
                    )
                    .at(d.doc.pos)
                    .in_file(&inputs[d.file].display),
                );
            }
        }
        return Err(ConfigError { diagnostics: diags });
    }

    let cdoc = clusters[0];
    let cfile = &inputs[cdoc.file].display;
    let (mut cluster, issues): (Cluster, _) = decode::decode(&cdoc.doc.root, "");
    for i in issues {
        let mut d = Diagnostic::error(i.path, i.message)
            .at(i.pos)
            .in_file(cfile);
        d.hint = i.hint;
        diags.push(d);
    }

    // ClusterConfig documents fill in what spec.k0s.config does not already say.
    for d in docs.iter().filter(|d| is_cc(d)) {
        let (value, issues): (serde_json::Value, _) = decode::decode(&d.doc.root, "");
        for i in issues {
            diags.push(
                Diagnostic::error(i.path, i.message)
                    .at(i.pos)
                    .in_file(&inputs[d.file].display),
            );
        }
        if let serde_json::Value::Object(m) = value {
            merge_no_overwrite(&mut cluster.spec.k0s.config, m);
        }
    }

    let mut manifests = Vec::new();
    for d in docs.iter().filter(|d| !is_cluster(d) && !is_cc(d)) {
        let origin = inputs[d.file].display.clone();
        let meta_name = d
            .doc
            .root
            .get("metadata")
            .and_then(|m| m.value.get("name"))
            .and_then(|n| n.value.scalar_text())
            .map(str::to_string);
        manifests.push(Manifest {
            name: manifest_name(&origin, &d.kind, meta_name.as_deref(), &manifests),
            origin,
            line: d.doc.pos.line,
            api_version: d.api_version.clone(),
            kind: d.kind.clone(),
            raw: d.doc.raw.clone(),
        });
    }

    apply_defaults(&mut cluster);
    // A value the decoder already rejected was replaced by a neutral one; don't report the
    // same key again from validation.
    let decoded_bad: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.path.clone())
        .collect();
    let cluster_loc = validate::Locator::new(&cdoc.doc.root);
    for mut d in validate::validate(&cluster, &cdoc.doc.root) {
        if decoded_bad.contains(&d.path) {
            continue;
        }
        d.file = Some(cfile.clone());
        // A k0s config value the Cluster document does not hold came from a merged
        // ClusterConfig document: point at that document instead.
        if let Some(rest) = d.path.strip_prefix("spec.k0s.config.")
            && !cluster_loc.exists(&d.path)
            && let Some(src) = docs
                .iter()
                .filter(|d| is_cc(d))
                .find(|cc| validate::Locator::new(&cc.doc.root).exists(rest))
        {
            d.file = Some(inputs[src.file].display.clone());
            d.pos = Some(validate::Locator::new(&src.doc.root).pos(rest, validate::Anchor::Value));
        }
        diags.push(d);
    }
    if check_local_files {
        let base = &inputs[cdoc.file].base_dir;
        for mut d in validate::validate_local_files(&cluster, &cdoc.doc.root, base) {
            if decoded_bad.contains(&d.path) {
                continue;
            }
            d.file = Some(cfile.clone());
            diags.push(d);
        }
    }

    diags.sort_by(|a, b| (a.file.as_ref(), a.pos).cmp(&(b.file.as_ref(), b.pos)));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(ConfigError { diagnostics: diags });
    }
    Ok(Loaded {
        cluster,
        origin: cfile.clone(),
        base_dir: inputs[cdoc.file].base_dir.clone(),
        manifests,
        warnings: diags,
        sources: inputs.iter().map(|i| i.display.clone()).collect(),
    })
}

/// The files read, for messages about all of them: `a.yaml, b.yaml`.
fn read_list(inputs: &[Input]) -> String {
    let names: Vec<String> = inputs
        .iter()
        .map(|i| i.display.display().to_string())
        .collect();
    names.join(", ")
}

/// Deep-merges `from` into `into`; values already in `into` win (k0sctl's dig Merge).
pub fn merge_no_overwrite(into: &mut Mapping, from: Mapping) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(serde_json::Value::Object(a)), serde_json::Value::Object(b)) => {
                merge_no_overwrite(a, b)
            }
            (Some(_), _) => {}
            (None, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn manifest_name(origin: &Path, kind: &str, name: Option<&str>, existing: &[Manifest]) -> String {
    let file = origin.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let base = if file.ends_with(".yaml") || file.ends_with(".yml") {
        file.trim_end_matches(".yaml")
            .trim_end_matches(".yml")
            .to_string()
    } else {
        match name {
            Some(n) => format!("{}-{n}", kind.to_ascii_lowercase()),
            None => kind.to_ascii_lowercase(),
        }
    };
    // Unlike k0sctl, several documents from one file never overwrite each other.
    let mut candidate = format!("{base}.yaml");
    let mut n = 1;
    while existing.iter().any(|m| m.name == candidate) {
        n += 1;
        candidate = format!("{base}-{n}.yaml");
    }
    candidate
}

/// k0sctl's defaults and installFlags normalisation (k0sctl's `Cluster.SetDefaults`).
pub fn apply_defaults(c: &mut Cluster) {
    if c.metadata.name.is_empty() {
        c.metadata.name = Metadata::default().name;
    }
    if c.metadata.user.is_empty() {
        c.metadata.user = Metadata::default().user;
    }
    if c.spec.k0s.version_channel.is_empty() {
        c.spec.k0s.version_channel = "stable".into();
    }
    if c.spec.k0s.version.as_deref() == Some("") {
        c.spec.k0s.version = None;
    }
    for h in &mut c.spec.hosts {
        if let Some(ssh) = &mut h.ssh {
            default_ssh(ssh);
        }
        // Port 0 is "not set": 22 for ssh (k0sctl's default), ssh's own choice for openSSH.
        if let Some(o) = &mut h.open_ssh
            && o.port == Some(0)
        {
            o.port = None;
        }
        if let Some(w) = &mut h.win_rm {
            if w.user.is_empty() {
                w.user = "Administrator".into();
            }
            if let Some(b) = &mut w.bastion {
                default_ssh(b);
            }
        }
        let flags = &mut h.install_flags;
        if flags.enabled("--single") {
            h.role = "single".into();
        }
        if flags.enabled("--enable-worker") {
            h.role = "controller+worker".into();
        }
        if flags.enabled("--no-taints") {
            h.no_taints = true;
        }
        if let Some(dd) = flags.value("--data-dir") {
            flags.delete("--data-dir");
            h.data_dir = Some(dd);
        }
        if let Some(kd) = flags.value("--kubelet-root-dir") {
            flags.delete("--kubelet-root-dir");
            h.kubelet_root_dir = Some(kd);
        }
    }
}

fn default_ssh(ssh: &mut Ssh) {
    if ssh.user.is_empty() {
        ssh.user = "root".into();
    }
    if ssh.port == 0 {
        ssh.port = 22;
    }
    if let Some(b) = &mut ssh.bastion {
        default_ssh(b);
    }
}

/// Serialises a cluster back to YAML (for `init` and for round trips).
pub fn to_yaml(c: &Cluster) -> String {
    serde_saphyr::to_string(c).expect("a Cluster always serialises")
}
