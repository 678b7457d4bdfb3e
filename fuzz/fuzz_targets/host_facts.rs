//! The output of the one-round-trip facts script (`@@section` lines).
#![no_main]
use k0sctl_fuzz::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = k0sctl::host::facts::parse_sections(&text);
    let _ = k0sctl::host::facts::parse(&text, Some("10.0.0.1"), 1_700_000_000.0, "fuzz:22");
});
