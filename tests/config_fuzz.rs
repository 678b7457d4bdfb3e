//! Property tests: whatever text arrives, the loader returns a configuration or diagnostics;
//! it never panics, never loops, and every diagnostic of a file carries a position inside it.
//!
//! Two generators, seeded so failures reproduce: mutations of the corpus manifests (YAML- and
//! envsubst-significant tokens inserted, deleted, swapped), and random documents built from the
//! schema's own key names so decoding reaches deep paths with wrong shapes and types.

use std::path::Path;

use k0sctl::config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "-",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "!!int ",
    "?",
    "|",
    ">",
    "~",
    "null",
    "yes",
    "0755",
    "0x1F",
    "1e9",
    "-1",
    "---\n",
    "...\n",
    "$",
    "$$",
    "${",
    "${X:-",
    "}",
    "\t",
    "\u{feff}",
    "é",
    "\\",
    "%",
    "@",
    "`",
    "99999999999999999999999",
];

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "user",
    "spec",
    "hosts",
    "role",
    "ssh",
    "address",
    "port",
    "keyPath",
    "bastion",
    "options",
    "openSSH",
    "winRM",
    "localhost",
    "enabled",
    "reset",
    "privateInterface",
    "privateAddress",
    "dataDir",
    "kubeletRootDir",
    "environment",
    "uploadBinary",
    "useExistingK0s",
    "k0sBinaryPath",
    "k0sInstallPath",
    "k0sDownloadURL",
    "installFlags",
    "files",
    "src",
    "data",
    "dst",
    "dstDir",
    "perm",
    "dirPerm",
    "group",
    "os",
    "hostname",
    "noTaints",
    "hooks",
    "apply",
    "before",
    "after",
    "k0s",
    "version",
    "versionChannel",
    "dynamicConfig",
    "config",
    "wait",
    "drain",
    "gracePeriod",
    "timeout",
    "force",
    "concurrency",
    "limit",
    "workerDisruptionPercent",
    "uploads",
    "evictTaint",
    "taint",
    "effect",
    "controllerWorkers",
    "password",
    "useHTTPS",
    "bogus",
];

const SCALARS: &[&str] = &[
    "controller",
    "worker",
    "single",
    "controller+worker",
    "10.0.0.1",
    "true",
    "no",
    "0",
    "-5",
    "70000",
    "0644",
    "644",
    "2m0s",
    "5",
    "v1.33.1+k0s.0",
    "latest",
    "\"\"",
    "~",
    "k0sctl.k0sproject.io/v1beta1",
    "Cluster",
    "NoExecute",
    "--data-dir=/x",
    "\"--labels=a",
    "1.5",
    ".inf",
    "[]",
    "{}",
];

fn corpus() -> Vec<String> {
    let mut v = Vec::new();
    for kind in ["valid", "invalid"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/manifests")
            .join(kind);
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                v.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    v.sort();
    v
}

/// `K0SCTL_FUZZ_SCALE=N` multiplies the iteration counts for a longer local run.
fn iterations(n: usize) -> usize {
    n * std::env::var("K0SCTL_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn env(k: &str) -> Option<String> {
    (k == "X").then(|| "value: with: colons\n- and a list".to_string())
}

fn check(text: &str) {
    let lines = text.lines().count().max(1) + 1;
    match config::load_str(text, "fuzz.yaml", &env) {
        Ok(l) => {
            // A loaded config must serialise and load again.
            let again = config::to_yaml(&l.cluster);
            config::load_str(&again, "again.yaml", &|_| None).unwrap_or_else(|e| {
                panic!("round trip failed: {e}\n--- input\n{text}\n--- saved\n{again}")
            });
        }
        Err(e) => {
            assert!(e.diagnostics.iter().any(|d| d.is_error()));
            for d in &e.diagnostics {
                let _ = d.to_string();
                if let Some(p) = d.pos {
                    assert!(
                        p.line >= 1 && p.line <= lines && p.col >= 1,
                        "position {p} outside input:\n{text}"
                    );
                }
            }
        }
    }
}

fn mutate(rng: &mut StdRng, base: &str) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for _ in 0..rng.random_range(1..6) {
        let at = if s.is_empty() {
            0
        } else {
            rng.random_range(0..=s.len())
        };
        match rng.random_range(0..4) {
            0 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                s.splice(at..at, t.chars());
            }
            1 if !s.is_empty() => {
                let end = (at + rng.random_range(1..20)).min(s.len());
                s.drain(at.min(end)..end);
            }
            2 if !s.is_empty() => {
                let other = rng.random_range(0..s.len());
                let at = at.min(s.len() - 1);
                s.swap(at, other);
            }
            _ => {
                let k = KEYS[rng.random_range(0..KEYS.len())];
                s.splice(at..at, format!("{k}: ").chars());
            }
        }
    }
    s.into_iter().collect()
}

fn random_node(rng: &mut StdRng, depth: usize, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match if depth > 5 { 2 } else { rng.random_range(0..3) } {
        0 => {
            for _ in 0..rng.random_range(1..5) {
                let k = KEYS[rng.random_range(0..KEYS.len())];
                if out.contains(&format!("\n{pad}{k}:")) {
                    continue;
                }
                out.push_str(&format!("\n{pad}{k}:"));
                random_node(rng, depth + 1, indent + 2, out);
            }
        }
        1 => {
            for _ in 0..rng.random_range(1..4) {
                out.push_str(&format!("\n{pad}-"));
                random_node(rng, depth + 1, indent + 2, out);
            }
        }
        _ => {
            out.push(' ');
            out.push_str(SCALARS[rng.random_range(0..SCALARS.len())]);
        }
    }
}

#[test]
fn mutated_manifests_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x6b30_7363_746c);
    let corpus = corpus();
    for base in &corpus {
        for _ in 0..iterations(120) {
            let text = mutate(&mut rng, base);
            check(&text);
        }
    }
}

#[test]
fn random_schema_shaped_documents_never_panic() {
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..iterations(3000) {
        let mut doc =
            String::from("apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:");
        random_node(&mut rng, 0, 2, &mut doc);
        doc.push('\n');
        check(&doc);
    }
}

#[test]
fn hostile_inputs() {
    check(&"[".repeat(10_000));
    check(&"- ".repeat(5_000));
    check(&format!("a: {}", "{b: ".repeat(1_000)));
    check("\u{0}\u{1}\u{2}");
    check("");
    check("---\n---\n---\n");
    check("a: &a [x]\nb: *a\nc: *b\n");
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    check(&bomb);
}
