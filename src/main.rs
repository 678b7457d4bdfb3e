//! `k0sctl` binary entry point: install the TLS crypto provider, then hand over to the CLI.

fn main() {
    // One rustls provider for the whole process (kube and reqwest both use it); must come
    // before any TLS client is built. See rust-deps notes: two providers make kube panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::process::exit(k0sctl::cli::main());
}
