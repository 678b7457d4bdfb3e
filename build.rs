//! Stamps the git commit into the binary for `k0sctl version` ("unknown" outside a checkout).
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=K0SCTL_COMMIT={commit}");
    // Ask git where HEAD and the branch refs live: in a linked worktree `.git` is a file and
    // `.git/HEAD` does not exist, which would make cargo rebuild the crate on every run.
    for what in ["HEAD", "refs/heads", "packed-refs"] {
        match git(&["rev-parse", "--git-path", what]) {
            Some(p) if std::path::Path::new(&p).exists() => {
                println!("cargo:rerun-if-changed={p}")
            }
            Some(_) => {}
            None => println!("cargo:rerun-if-changed=.git/{what}"),
        }
    }
}
