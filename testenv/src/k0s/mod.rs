//! k0s stand-in: a `k0s` binary that follows the k0s CLI contract k0sctl relies on
//! (../shared/reference/k0s-cli.md §2, §11) and serves a Kubernetes API subset.

/// Entry point of the `k0s` binary; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(|s| s.as_str()) == Some("version") {
        println!("{}", crate::stamp::slot_version());
        return 0;
    }
    eprintln!("Error: not implemented");
    1
}
