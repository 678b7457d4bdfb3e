//! The manifest corpus: every file under tests/manifests/valid must load without errors, and
//! every file under tests/manifests/invalid must produce exactly the diagnostics its
//! `# expect:` comment lines list (line:column, key path, message and hint), no more, no less.
//! `# expect:` lines in valid files list the warnings they must produce.
//!
//! Every directory under tests/manifests/dirs is loaded as one `--config DIR` (all its YAML
//! files, as k0sctl reads a directory); its `expect` file says `ok` or `error` on the first
//! line, then every diagnostic exactly as shown (file names relative to tests/manifests/dirs).
//!
//! Set K0SCTL_PRINT_ACTUAL=1 to print what each file produces (for writing expectations).

use std::path::{Path, PathBuf};

use k0sctl::config::{self, Diagnostic, LoadOptions};

fn manifests(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// The environment the corpus is loaded with.
fn test_env(k: &str) -> Option<String> {
    match k {
        "CONTROLLER_IP" => Some("controller-1.k0s.example.com".into()),
        _ => None,
    }
}

fn load(path: &Path) -> (bool, Vec<Diagnostic>) {
    let dir = path.parent().unwrap().to_path_buf();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut stdin = || -> std::io::Result<String> { unreachable!("no stdin in corpus tests") };
    match config::load(LoadOptions {
        config_args: &[name],
        cwd: dir,
        env: &test_env,
        stdin: &mut stdin,
    }) {
        Ok(l) => (true, l.warnings),
        Err(e) => (false, e.diagnostics),
    }
}

/// A diagnostic as written in `# expect:` lines: its display without the file name.
fn shown(d: &Diagnostic, file: &str) -> String {
    let s = d.to_string();
    s.strip_prefix(&format!("{file}:"))
        .map(|r| r.trim_start().to_string())
        .unwrap_or(s)
}

fn expectations(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

fn check(kind: &str, want_ok: bool) {
    let print = std::env::var_os("K0SCTL_PRINT_ACTUAL").is_some();
    let mut failures = Vec::new();
    for path in manifests(kind) {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let (ok, diags) = load(&path);
        let got: Vec<String> = diags.iter().map(|d| shown(d, &file)).collect();
        if print {
            println!("== {file}");
            for g in &got {
                println!("# expect: {g}");
            }
        }
        let want = expectations(&path);
        if ok != want_ok {
            failures.push(format!(
                "{file}: loaded ok={ok}, want ok={want_ok}; got:\n  {}",
                got.join("\n  ")
            ));
        } else if got != want {
            failures.push(format!(
                "{file}:\n  want:\n    {}\n  got:\n    {}",
                want.join("\n    "),
                got.join("\n    ")
            ));
        }
        if !want_ok && want.is_empty() {
            failures.push(format!(
                "{file}: an invalid manifest must list its # expect: lines"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn valid_manifests_load() {
    check("valid", true);
}

#[test]
fn invalid_manifests_report_every_problem_with_position() {
    check("invalid", false);
}

/// `--config <dir>` for every directory under tests/manifests/dirs.
#[test]
fn directory_configs_load_as_k0sctl_reads_them() {
    let print = std::env::var_os("K0SCTL_PRINT_ACTUAL").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/dirs");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let mut stdin = || -> std::io::Result<String> { unreachable!("no stdin in corpus tests") };
        let (ok, diags) = match config::load(LoadOptions {
            config_args: std::slice::from_ref(&name),
            cwd: root.clone(),
            env: &test_env,
            stdin: &mut stdin,
        }) {
            Ok(l) => (true, l.warnings),
            Err(e) => (false, e.diagnostics),
        };
        let mut got = vec![if ok { "ok" } else { "error" }.to_string()];
        got.extend(diags.iter().map(|d| d.to_string()));
        if print {
            println!("== {name}\n{}", got.join("\n"));
        }
        let want: Vec<String> = std::fs::read_to_string(case.join("expect"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        if got != want {
            failures.push(format!(
                "{name}:\n  want:\n    {}\n  got:\n    {}",
                want.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// The cluster `dirs/multidoc` describes: k0sctl's smoke-test layout (a `kind: cluster` file
/// and a file with a lower-case `kind: clusterconfig` document plus a Pod).
#[test]
fn multidoc_directory_merges_the_lower_case_clusterconfig() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/dirs");
    let mut stdin = || -> std::io::Result<String> { unreachable!() };
    let l = config::load(LoadOptions {
        config_args: &["multidoc".to_string()],
        cwd: root,
        env: &test_env,
        stdin: &mut stdin,
    })
    .unwrap();
    let cfg = &l.cluster.spec.k0s.config;
    assert_eq!(cfg["kind"], "clusterconfig");
    assert_eq!(cfg["spec"]["extensions"]["helm"]["concurrencyLevel"], 5);
    assert_eq!(cfg["spec"]["telemetry"]["enabled"], false);
    assert_eq!(l.manifests.len(), 1);
    assert_eq!(l.manifests[0].kind, "Pod");
}

/// `ssh.port: 0` is the default port.
#[test]
fn ssh_port_zero_is_port_22() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/valid/port-zero.yaml");
    let text = std::fs::read_to_string(p).unwrap();
    let l = config::load_str(&text, "port-zero.yaml", &|_| None).unwrap();
    assert_eq!(l.cluster.spec.hosts[0].ssh.as_ref().unwrap().port, 22);
}
