//! A join token as `k0s token create` prints it (base64 of gzip of a kubeconfig).
#![no_main]
use k0sctl_fuzz::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = k0sctl::k0s::token::JoinToken::parse(&text) {
        // The secret never shows in its debug form.
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.raw) || t.raw.is_empty());
    }
});
