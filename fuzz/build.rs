//! Links LLVM's prebuilt libFuzzer (`libFuzzer.a`, C++ against libstdc++) into the targets:
//! the archive named by LIBFUZZER_A, else the newest /usr/lib/llvm-*/lib/libFuzzer.a (Debian's
//! libfuzzer-NN-dev). fuzz/run.sh finds or unpacks one and sets LIBFUZZER_A.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBFUZZER_A");
    let archive = std::env::var_os("LIBFUZZER_A")
        .map(PathBuf::from)
        .or_else(|| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("lib/libFuzzer.a"))
                .filter(|p| p.is_file())
                .collect();
            found.sort_by_key(|p| {
                let v = p
                    .components()
                    .nth(3)
                    .map(|c| c.as_os_str().to_string_lossy().into_owned());
                v.and_then(|v| v.strip_prefix("llvm-").and_then(|n| n.parse::<u32>().ok()))
            });
            found.pop()
        })
        .unwrap_or_else(|| {
            panic!("no libFuzzer.a: set LIBFUZZER_A, install libfuzzer-NN-dev, or use fuzz/run.sh")
        });
    println!("cargo:rerun-if-changed={}", archive.display());
    let dir = archive.parent().expect("libFuzzer.a has a directory");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=Fuzzer");
    println!("cargo:rustc-link-lib=stdc++");
}
