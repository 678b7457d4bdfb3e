//! The fuzz targets of `fuzz/` (config loader, os-release, facts script output, `k0s status`
//! and `k0s version`, node and etcd member lists, join tokens, kubeconfigs) run in CI without
//! libFuzzer: every input of `fuzz/corpus/<target>` (the seeds, and whatever a libFuzzer run
//! found worth keeping), then a bounded number of seeded mutations of each (bit flips, byte
//! insertions and deletions, truncations, splices). Nothing may panic, and the targets'
//! invariants hold. The coverage-guided runs themselves: `fuzz/run.sh SECONDS`.

use std::path::Path;

/// Mutations per corpus input (`K0SCTL_FUZZ_SCALE` multiplies it).
fn rounds() -> usize {
    let scale: usize = std::env::var("K0SCTL_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    200 * scale.max(1)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(r: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + r.below(4) {
        match r.below(6) {
            0 if !v.is_empty() => {
                let i = r.below(v.len());
                v[i] ^= 1 << r.below(8);
            }
            1 => {
                let i = r.below(v.len() + 1);
                let b = b"{}[]:,-\n \"'&*!|>#@\\\0\xff"[r.below(21)];
                v.insert(i, b);
            }
            2 if !v.is_empty() => {
                let i = r.below(v.len());
                v.remove(i);
            }
            3 => {
                let n = r.below(v.len() + 1);
                v.truncate(n);
            }
            4 if !other.is_empty() => {
                let (a, b) = (r.below(v.len() + 1), r.below(other.len()));
                let n = r.below(other.len() - b + 1).min(256);
                v.splice(a..a, other[b..b + n].iter().copied());
            }
            _ if !v.is_empty() => {
                // Duplicate a slice (repeats keys, nests deeper).
                let a = r.below(v.len());
                let n = r.below(v.len() - a + 1).min(512);
                let s: Vec<u8> = v[a..a + n].to_vec();
                v.splice(a..a, s);
            }
            _ => {}
        }
    }
    v
}

fn run(target: &str, body: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
    for (i, input) in inputs.iter().enumerate() {
        body(input);
        let other = &inputs[(i + 1) % inputs.len()];
        for _ in 0..rounds() {
            let m = mutate(&mut r, input, other);
            body(&m);
        }
    }
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

#[test]
fn config_load() {
    run("config_load", |data| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let env = |k: &str| (k == "SET").then(|| "value".to_string());
        if let Err(e) = k0sctl::config::load_str(text, "fuzz.yaml", &env) {
            let lines = text.lines().count() + 1;
            for l in e.to_string().lines() {
                if let Some(rest) = l.strip_prefix("fuzz.yaml:")
                    && let Some(n) = rest.split(':').next().and_then(|n| n.parse::<usize>().ok())
                {
                    assert!(n >= 1 && n <= lines, "line {n} outside the input: {l}");
                }
            }
        }
    });
}

#[test]
fn os_release() {
    run("os_release", |d| {
        let _ = k0sctl::host::os::OsRelease::parse(&text(d));
    });
}

#[test]
fn host_facts() {
    run("host_facts", |d| {
        let t = text(d);
        let _ = k0sctl::host::facts::parse_sections(&t);
        let _ = k0sctl::host::facts::parse(&t, Some("10.0.0.1"), 1_700_000_000.0, "fuzz:22");
    });
}

#[test]
fn k0s_status() {
    run("k0s_status", |d| {
        let t = text(d);
        let _ = k0sctl::k0s::status::K0sStatus::parse(&t);
        if let Ok(v) = k0sctl::k0s::version::K0sVersion::parse(&t) {
            let again = k0sctl::k0s::version::K0sVersion::parse(&v.to_string())
                .expect("a printed version parses");
            assert_eq!(again, v);
        }
    });
}

#[test]
fn etcd_members() {
    run("etcd_members", |d| {
        let t = text(d);
        let (nodes, members) = t.split_once('\0').unwrap_or((&t, &t));
        let known_nodes = vec!["controller0".to_string(), "worker0".to_string()];
        let known_peers = vec!["10.0.0.1".to_string()];
        let _ = k0sctl::phases::prune_nodes::strays(nodes, members, &known_nodes, &known_peers);
    });
}

#[test]
fn join_token() {
    run("join_token", |d| {
        if let Ok(t) = k0sctl::k0s::token::JoinToken::parse(&text(d)) {
            assert!(t.raw.is_empty() || !format!("{t:?}").contains(&t.raw));
        }
    });
}

#[test]
fn kubeconfig() {
    run("kubeconfig", |d| {
        let server = "https://10.0.0.1:6443";
        if let Ok(out) = k0sctl::k0s::kubeconfig::rewrite(&text(d), "k0s-cluster", "admin", server)
        {
            assert!(
                k0sctl::k0s::kubeconfig::rewrite(&out, "k0s-cluster", "admin", server).is_ok(),
                "rewritten kubeconfig does not parse again: {out}"
            );
        }
    });
}
