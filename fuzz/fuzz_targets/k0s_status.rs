//! `k0s status -o json` and `k0s version` output.
#![no_main]
use k0sctl_fuzz::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = k0sctl::k0s::status::K0sStatus::parse(&text);
    if let Ok(v) = k0sctl::k0s::version::K0sVersion::parse(&text) {
        // What parses prints back to something that parses to the same version.
        let again = k0sctl::k0s::version::K0sVersion::parse(&v.to_string())
            .expect("a printed version parses");
        assert_eq!(again, v);
    }
});
