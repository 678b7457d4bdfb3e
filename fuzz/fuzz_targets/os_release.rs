//! `/etc/os-release` text as a host returns it.
#![no_main]
use k0sctl_fuzz::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = k0sctl::host::os::OsRelease::parse(&text);
});
