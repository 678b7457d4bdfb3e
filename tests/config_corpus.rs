//! The manifest corpus: every file under tests/manifests/valid must load without errors, and
//! every file under tests/manifests/invalid must produce exactly the diagnostics its
//! `# expect:` comment lines list (line:column, key path, message and hint), no more, no less.
//! `# expect:` lines in valid files list the warnings they must produce.
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
