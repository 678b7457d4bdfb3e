//! The config loader on arbitrary text: never panics, and every diagnostic points inside the
//! input (a line that exists).
#![no_main]
use k0sctl_fuzz::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |k: &str| (k == "SET").then(|| "value".to_string());
    match k0sctl::config::load_str(text, "fuzz.yaml", &env) {
        Ok(_) => {}
        Err(e) => {
            let lines = text.lines().count() + 1;
            for l in e.to_string().lines() {
                // "fuzz.yaml:<line>:<col>: ..." must name a line of the input.
                if let Some(rest) = l.strip_prefix("fuzz.yaml:")
                    && let Some(n) = rest.split(':').next().and_then(|n| n.parse::<usize>().ok())
                {
                    assert!(n >= 1 && n <= lines, "line {n} outside the input: {l}");
                }
            }
        }
    }
});
