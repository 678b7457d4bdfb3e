//! Turning `--config` arguments into the list of files to read.
//!
//! As in k0sctl: `-` is standard input; the default `k0sctl.yaml` falls back to `k0sctl.yml`; a
//! directory means every `*.yml`/`*.yaml` below it; anything with glob characters is a glob with
//! `**` support; the arguments may repeat. Results are sorted per argument and de-duplicated.

// Diagnostics are the error type on purpose: these are one-off, cold paths.
#![allow(clippy::result_large_err)]

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use super::diag::Diagnostic;

pub const DEFAULT_CONFIG: &str = "k0sctl.yaml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    /// How the source is named in messages.
    pub fn display(&self) -> PathBuf {
        match self {
            Source::Stdin => PathBuf::from("<stdin>"),
            Source::File(p) => p.clone(),
        }
    }
}

/// Resolves the `--config` arguments relative to `cwd`.
pub fn resolve(args: &[String], cwd: &Path) -> Result<Vec<Source>, Diagnostic> {
    let mut out: Vec<Source> = Vec::new();
    let default = [DEFAULT_CONFIG.to_string()];
    let args = if args.is_empty() { &default[..] } else { args };
    for arg in args {
        let found = resolve_one(arg, cwd)?;
        for s in found {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    if out.is_empty() {
        return Err(Diagnostic::error("", "no configuration files found"));
    }
    Ok(out)
}

fn resolve_one(arg: &str, cwd: &Path) -> Result<Vec<Source>, Diagnostic> {
    if arg == "-" {
        return Ok(vec![Source::Stdin]);
    }
    let full = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    if arg == DEFAULT_CONFIG {
        for name in [DEFAULT_CONFIG, "k0sctl.yml"] {
            if full(name).is_file() {
                return Ok(vec![Source::File(PathBuf::from(name))]);
            }
        }
        return Err(Diagnostic::error(
            "",
            format!(
                "failed to locate configuration: no k0sctl.yaml or k0sctl.yml in {}",
                cwd.display()
            ),
        )
        .hint("create one with `k0sctl init > k0sctl.yaml`, or pass --config FILE"));
    }
    let path = full(arg);
    if path.is_dir() {
        let files = walk(&path, |p| {
            matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
        });
        if files.is_empty() {
            return Err(Diagnostic::error(
                "",
                format!("no *.yaml or *.yml files found in directory {arg}"),
            ));
        }
        return Ok(files
            .into_iter()
            .map(|f| Source::File(display_path(arg, &path, &f)))
            .collect());
    }
    if arg.contains(['*', '?', '[', '{']) {
        let (base, _) = split_glob(arg);
        let base_full = full(if base.is_empty() { "." } else { base });
        let glob = globset::GlobBuilder::new(&path.to_string_lossy())
            .literal_separator(true)
            .build()
            .map_err(|e| Diagnostic::error("", format!("invalid --config glob {arg:?}: {e}")))?
            .compile_matcher();
        let files = walk(&base_full, |p| glob.is_match(p));
        if files.is_empty() {
            return Err(Diagnostic::error(
                "",
                format!("no configuration files match {arg:?}"),
            ));
        }
        return Ok(files
            .into_iter()
            .map(|f| Source::File(relative_to(cwd, &f)))
            .collect());
    }
    if path.is_file() {
        return Ok(vec![Source::File(PathBuf::from(arg))]);
    }
    Err(Diagnostic::error(
        "",
        format!("config file {arg} does not exist"),
    ))
}

/// The part of a glob before its first wildcard component, and the rest.
fn split_glob(pattern: &str) -> (&str, &str) {
    let first_wild = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    match pattern[..first_wild].rfind('/') {
        Some(i) => (&pattern[..i], &pattern[i + 1..]),
        None => ("", pattern),
    }
}

fn walk(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && keep(e.path()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

fn display_path(arg: &str, dir_full: &Path, file: &Path) -> PathBuf {
    match file.strip_prefix(dir_full) {
        Ok(rel) => Path::new(arg).join(rel),
        Err(_) => file.to_path_buf(),
    }
}

fn relative_to(cwd: &Path, file: &Path) -> PathBuf {
    file.strip_prefix(cwd)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| file.to_path_buf())
}

/// Reads a source's text. Standard input must not be a terminal.
pub fn read(
    source: &Source,
    cwd: &Path,
    stdin: &mut dyn FnMut() -> std::io::Result<String>,
) -> Result<String, Diagnostic> {
    match source {
        Source::Stdin => stdin().map_err(|e| {
            Diagnostic::error("", format!("can't read the configuration from stdin: {e}"))
        }),
        Source::File(p) => {
            let full = if p.is_absolute() {
                p.clone()
            } else {
                cwd.join(p)
            };
            std::fs::read_to_string(&full)
                .map_err(|e| Diagnostic::error("", format!("can't read {}: {e}", p.display())))
        }
    }
}

/// Reads all of the process's standard input, refusing a terminal (k0sctl: "can't read stdin").
pub fn read_process_stdin() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(std::io::Error::other(
            "stdin is a terminal; pipe the configuration in (e.g. `k0sctl init | k0sctl config validate -c -`)",
        ));
    }
    let mut s = String::new();
    stdin.lock().read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split() {
        assert_eq!(split_glob("conf/**/*.yaml"), ("conf", "**/*.yaml"));
        assert_eq!(split_glob("*.yaml"), ("", "*.yaml"));
        assert_eq!(split_glob("/a/b/c?.yml"), ("/a/b", "c?.yml"));
    }
}
