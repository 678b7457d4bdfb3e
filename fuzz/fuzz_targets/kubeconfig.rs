//! The admin kubeconfig k0s writes, rewritten for the user.
#![no_main]
use k0sctl_fuzz::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(out) =
        k0sctl::k0s::kubeconfig::rewrite(&text, "k0s-cluster", "admin", "https://10.0.0.1:6443")
    {
        // What we write is YAML we can read again.
        let again =
            k0sctl::k0s::kubeconfig::rewrite(&out, "k0s-cluster", "admin", "https://10.0.0.1:6443");
        assert!(
            again.is_ok(),
            "rewritten kubeconfig does not parse again: {out}"
        );
    }
});
