//! k0s download URLs: the GitHub release layout and `k0sDownloadURL` templates.
//!
//! Template tokens, as in k0sctl: `%%` → `%`, `%p` → architecture, `%v` → version
//! (URL-query-escaped, so `+` becomes `%2B`), `%x` → `.exe` on Windows hosts and empty
//! elsewhere; any other `%c` and a trailing `%` are kept as written.

/// Expands a `k0sDownloadURL` (or `files[].src` URL) template.
pub fn expand(template: &str, version: &str, arch: &str, windows: bool) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('%') => out.push('%'),
            Some('p') => out.push_str(arch),
            Some('v') => out.push_str(&query_escape(version)),
            Some('x') => {
                if windows {
                    out.push_str(".exe");
                }
            }
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The k0s release asset URL on GitHub for a version (`v1.31.2+k0s.0`) and architecture.
pub fn github_release_url(version: &str, arch: &str, windows: bool) -> String {
    let v = if version.starts_with('v') {
        version.to_string()
    } else {
        format!("v{version}")
    };
    format!(
        "https://github.com/k0sproject/k0s/releases/download/{}/k0s-{v}-{arch}{}",
        v.replace('+', "%2B"),
        if windows { ".exe" } else { "" }
    )
}

/// k0s architecture names from `uname -m`.
pub fn arch_from_uname(machine: &str) -> &str {
    match machine.trim() {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        m if m.starts_with("armv") || m == "arm" => "arm",
        "riscv64" => "riscv64",
        "i386" | "i686" | "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k0sctl_template_cases() {
        assert_eq!(
            expand("test%20expand/k0s-%v-%p%x", "v1.0.0+k0s.0", "amd64", false),
            "test%20expand/k0s-v1.0.0%2Bk0s.0-amd64"
        );
        assert_eq!(expand("a%%b%x%", "v1", "arm64", true), "a%b.exe%");
        assert_eq!(expand("%q%p", "v1", "arm", false), "%qarm");
    }

    #[test]
    fn release_url_and_arch() {
        assert_eq!(
            github_release_url("v1.31.2+k0s.0", "amd64", false),
            "https://github.com/k0sproject/k0s/releases/download/v1.31.2%2Bk0s.0/k0s-v1.31.2+k0s.0-amd64"
        );
        assert_eq!(arch_from_uname("aarch64\n"), "arm64");
        assert_eq!(arch_from_uname("armv7l"), "arm");
    }
}
