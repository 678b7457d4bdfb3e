//! k0s version strings (`v1.33.1+k0s.0`) and their ordering.
//!
//! k0s orders versions its own way (k0sproject/version): numeric segments, then a release is
//! newer than its prereleases, prereleases compare as plain strings (`rc.10` < `rc.9`), a
//! version with `+k0s.N` is newer than one without, and a higher N wins; other build metadata is
//! ignored. The `semver` crate orders build metadata lexically and rejects the leading `v`, so
//! the comparison is written out here against that documented order.

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, Eq)]
pub struct K0sVersion {
    pub segments: [u64; 3],
    pub prerelease: Option<String>,
    /// The `N` of `+k0s.N`.
    pub k0s: Option<u64>,
    /// Other build metadata, kept for display only.
    pub meta: Option<String>,
    /// How many numeric segments were written (`1.30` has 2).
    written_segments: usize,
}

impl K0sVersion {
    pub fn parse(s: &str) -> Result<Self, String> {
        let orig = s;
        let bad = |why: &str| format!("invalid k0s version {orig:?}: {why}");
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c))
        {
            return Err(bad(
                "only lowercase letters, digits, '.', '-' and '+' are allowed",
            ));
        }
        let (main, build) = match s.split_once('+') {
            Some((m, b)) => (m, Some(b)),
            None => (s, None),
        };
        let (nums, pre) = match main.split_once('-') {
            Some((n, p)) => (n, Some(p.to_string())),
            None => (main, None),
        };
        let parts: Vec<&str> = nums.split('.').collect();
        if parts.len() > 3 {
            return Err(bad("at most three numeric segments (major.minor.patch)"));
        }
        let mut segments = [0u64; 3];
        for (i, p) in parts.iter().enumerate() {
            segments[i] = p.parse().map_err(|_| bad("expected numbers like 1.33.1"))?;
        }
        if pre.as_deref() == Some("") {
            return Err(bad("empty prerelease after '-'"));
        }
        let mut k0s = None;
        let mut meta = None;
        if let Some(b) = build {
            if let Some(n) = b.strip_prefix("k0s.") {
                let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
                k0s = Some(digits.parse().map_err(|_| bad("expected +k0s.<number>"))?);
                let rest = &n[digits.len()..];
                if !rest.is_empty() {
                    meta = Some(rest.trim_start_matches('.').to_string());
                }
            } else if !b.is_empty() {
                meta = Some(b.to_string());
            }
        }
        Ok(K0sVersion {
            segments,
            prerelease: pre,
            k0s,
            meta,
            written_segments: parts.len(),
        })
    }

    /// The Kubernetes version this k0s release embeds, as its kubelet reports it in
    /// `status.nodeInfo.kubeletVersion` (and its API server in `/version`): k0s builds
    /// Kubernetes `X.Y.Z` with the version string `vX.Y.Z+k0s` for every k0s release
    /// `vX.Y.Z[-pre]+k0s.N`, so a pre-release's `-rc.N` and the k0s build number are not part
    /// of it (`v1.36.3-rc.0+k0s.0` → `v1.36.3+k0s`).
    pub fn kubelet_version(&self) -> String {
        let [a, b, c] = self.segments;
        format!("v{a}.{b}.{c}+k0s")
    }
}

impl fmt::Display for K0sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.written_segments.max(1);
        let segs: Vec<String> = self.segments[..n].iter().map(u64::to_string).collect();
        write!(f, "v{}", segs.join("."))?;
        if let Some(p) = &self.prerelease {
            write!(f, "-{p}")?;
        }
        match (&self.k0s, &self.meta) {
            (Some(n), Some(m)) => write!(f, "+k0s.{n}.{m}"),
            (Some(n), None) => write!(f, "+k0s.{n}"),
            (None, Some(m)) => write!(f, "+{m}"),
            (None, None) => Ok(()),
        }
    }
}

impl Ord for K0sVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.segments
            .cmp(&other.segments)
            .then_with(|| match (&self.prerelease, &other.prerelease) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
            .then_with(|| match (self.k0s, other.k0s) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(&b),
            })
    }
}

impl PartialOrd for K0sVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for K0sVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> K0sVersion {
        K0sVersion::parse(s).unwrap()
    }

    #[test]
    fn ordering_matches_k0s() {
        let ordered = [
            "v1.30.1",
            "v1.30.1+k0s.0",
            "v1.30.1+k0s.1",
            "v1.30.2-rc.1+k0s.0",
            "v1.30.2+k0s.0",
            "v1.31.0+k0s.0",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert!(v("v1.30.0-rc.10") < v("v1.30.0-rc.9"));
        assert_eq!(v("1.30.1+k0s.0"), v("v1.30.1+k0s.0"));
        assert!(v("0.11.0-rc1") < v("0.11.0"));
    }

    #[test]
    fn kubelet_version_of_k0s_releases() {
        // k0s version → kubelet / API server version of the Kubernetes it embeds.
        let table = [
            ("v1.30.5+k0s.0", "v1.30.5+k0s"),
            ("v1.31.2+k0s.1", "v1.31.2+k0s"),
            ("v1.35.1+k0s.0", "v1.35.1+k0s"),
            ("v1.36.3-rc.0+k0s.0", "v1.36.3+k0s"),
            ("v1.36.3-rc.0+k0s.1", "v1.36.3+k0s"),
            ("v1.34.0-beta.1+k0s.0", "v1.34.0+k0s"),
            ("v1.33.1", "v1.33.1+k0s"),
        ];
        for (k0s, kubelet) in table {
            assert_eq!(v(k0s).kubelet_version(), kubelet, "{k0s}");
        }
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(v("1.33.1+k0s.0").to_string(), "v1.33.1+k0s.0");
        assert_eq!(v("v1.30").to_string(), "v1.30");
        assert!(K0sVersion::parse("v1.2.3.4").is_err());
        assert!(K0sVersion::parse("latest").is_err());
        assert!(K0sVersion::parse("V1.2.3").is_err());
    }
}
