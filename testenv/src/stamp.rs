//! Version stamping for the k0s stand-in binary.
//!
//! The stand-in carries a fixed-size, marker-prefixed slot in its read-only data. `stamp_copy`
//! copies the binary and overwrites the slot with a version string, so one compiled binary yields
//! several "releases" (v1.30.x, v1.31.x, ...) with different contents and SHA-256 sums, without
//! recompiling. The stand-in reads the slot at run time (`slot_version`).

use anyhow::{Context, Result, bail};
use std::path::Path;

/// Size of the value part of the slot (NUL-padded).
pub const SLOT_VALUE_LEN: usize = 56;
/// Version of an unstamped binary.
pub const DEFAULT_VERSION: &str = "v1.31.2+k0s.0";
/// A pre-release the binary server can offer (`--versions`): its kubelet and `/version` report
/// the embedded Kubernetes version `v1.36.3+k0s`, without the `-rc.0`.
pub const PRERELEASE_VERSION: &str = "v1.36.3-rc.0+k0s.0";
/// The release whose worker decodes its join-token file at every start (k0s issue #7202).
pub const TOKEN_AT_EVERY_START_VERSION: &str = "v1.35.1+k0s.0";

/// The marker is assembled at run time from two halves so that only the slot itself contains the
/// contiguous marker bytes (the stamping code is linked into the stand-in too).
fn marker() -> Vec<u8> {
    [b"TESTENV_K0S_".as_slice(), b"VERSION_SLOT:".as_slice()].concat()
}

/// The slot: marker (25 bytes) followed by the NUL-padded version value.
#[used]
#[unsafe(no_mangle)]
pub static TESTENV_K0S_VERSION_SLOT: [u8; 25 + SLOT_VALUE_LEN] = {
    let mut s = [0u8; 25 + SLOT_VALUE_LEN];
    let m = b"TESTENV_K0S_VERSION_SLOT:";
    let v = DEFAULT_VERSION.as_bytes();
    let mut i = 0;
    while i < m.len() {
        s[i] = m[i];
        i += 1;
    }
    let mut j = 0;
    while j < v.len() {
        s[25 + j] = v[j];
        j += 1;
    }
    s
};

/// The version stamped into the running binary.
pub fn slot_version() -> String {
    // Volatile reads so the compiler cannot constant-fold the default value.
    let mut buf = [0u8; SLOT_VALUE_LEN];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = unsafe { std::ptr::read_volatile(&TESTENV_K0S_VERSION_SLOT[25 + i]) };
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(SLOT_VALUE_LEN);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Check a version string the way k0sproject/version would accept it.
pub fn validate_version(v: &str) -> Result<()> {
    let body = v.strip_prefix('v').unwrap_or(v);
    if body.is_empty()
        || body.len() > SLOT_VALUE_LEN - 1
        || !body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c))
    {
        bail!("invalid k0s version {v:?}");
    }
    Ok(())
}

/// Copy `src` to `dst` (stripping symbols when `strip` is available, to keep copies small) and
/// stamp `version` into the copy. Mode 0755.
pub fn stamp_copy(src: &Path, dst: &Path, version: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    validate_version(version)?;
    let tmp = dst.with_extension("stamping");
    let stripped = std::process::Command::new("strip")
        .arg("-o")
        .arg(&tmp)
        .arg(src)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !stripped {
        std::fs::copy(src, &tmp)
            .with_context(|| format!("copy {} -> {}", src.display(), tmp.display()))?;
    }
    let mut data = std::fs::read(&tmp).with_context(|| format!("read {}", tmp.display()))?;
    let m = marker();
    let pos = data
        .windows(m.len())
        .position(|w| w == m.as_slice())
        .with_context(|| {
            format!(
                "{} has no version slot (not a testenv k0s stand-in?)",
                src.display()
            )
        })?;
    let off = pos + m.len();
    data[off..off + SLOT_VALUE_LEN].fill(0);
    data[off..off + version.len()].copy_from_slice(version.as_bytes());
    std::fs::write(&tmp, &data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, dst).with_context(|| format!("rename to {}", dst.display()))?;
    Ok(())
}

/// Hex SHA-256 of a file.
pub fn sha256_file(p: &Path) -> Result<String> {
    use sha2::Digest;
    let data = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
    let mut h = sha2::Sha256::new();
    h.update(&data);
    Ok(hex::encode(h.finalize()))
}
