//! Shared helpers for the phase tests on testenv: load a manifest text the way `k0sctl` does,
//! and run options with k0sctl's default limits.

use std::path::Path;

use k0sctl::config;
use k0sctl::phases::RunOptions;

/// Writes `text` to `dir/k0sctl.yaml` and loads it through the normal loader.
pub fn load(text: &str, dir: &Path) -> config::Loaded {
    let f = dir.join("k0sctl.yaml");
    std::fs::write(&f, text).unwrap();
    let mut stdin = || -> std::io::Result<String> { unreachable!("no stdin in phase tests") };
    config::load(config::LoadOptions {
        config_args: &[f.display().to_string()],
        cwd: dir.to_path_buf(),
        env: &|_| None,
        stdin: &mut stdin,
    })
    .unwrap()
}

/// Run options with k0sctl's default concurrency (30) and uploads (5).
pub fn opts(dry_run: bool) -> RunOptions {
    RunOptions {
        dry_run,
        concurrency: 30,
        uploads: 5,
        ..RunOptions::default()
    }
}
