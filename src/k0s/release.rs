//! Looking up k0s (and k0sctl) releases online.
//!
//! k0sctl asks `https://docs.k0sproject.io/stable.txt` (or `latest.txt` for pre-releases) for
//! the newest k0s, and GitHub's release API for the newest k0sctl. Both base URLs can be
//! pointed elsewhere (a mirror, or a local server in tests) with `K0SCTL_K0S_VERSION_BASE_URL`
//! and `K0SCTL_GITHUB_API_URL`.

use std::time::Duration;

use anyhow::{Context as _, bail};

use super::version::K0sVersion;

pub const DEFAULT_K0S_VERSION_BASE_URL: &str = "https://docs.k0sproject.io";
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";
const TIMEOUT: Duration = Duration::from_secs(10);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
        .trim_end_matches('/')
        .to_string()
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("k0sctl-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// The newest k0s version: stable, or including pre-releases with `pre`.
pub async fn latest_k0s(pre: bool) -> anyhow::Result<K0sVersion> {
    let base = env_or("K0SCTL_K0S_VERSION_BASE_URL", DEFAULT_K0S_VERSION_BASE_URL);
    let url = format!("{base}/{}", if pre { "latest.txt" } else { "stable.txt" });
    let body = get_text(&url).await?;
    K0sVersion::parse(body.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{url} returned {:?}, which is not a k0s version: {e}",
            body.trim()
        )
    })
}

/// The newest k0sctl release tag (not a pre-release unless `pre`).
pub async fn latest_k0sctl(pre: bool) -> anyhow::Result<String> {
    let base = env_or("K0SCTL_GITHUB_API_URL", DEFAULT_GITHUB_API_URL);
    let latest_url = format!("{base}/repos/k0sproject/k0sctl/releases/latest");
    let latest: serde_json::Value = serde_json::from_str(&get_text(&latest_url).await?)
        .with_context(|| format!("{latest_url} did not return JSON"))?;
    let is_pre = latest["prerelease"].as_bool().unwrap_or(false);
    if !is_pre || pre {
        return tag(&latest, &latest_url);
    }
    let all_url = format!("{base}/repos/k0sproject/k0sctl/releases");
    let all: serde_json::Value = serde_json::from_str(&get_text(&all_url).await?)
        .with_context(|| format!("{all_url} did not return JSON"))?;
    let mut best: Option<(K0sVersion, String)> = None;
    for r in all.as_array().into_iter().flatten() {
        if r["prerelease"].as_bool().unwrap_or(false) {
            continue;
        }
        let Some(t) = r["tag_name"].as_str() else {
            continue;
        };
        if let Ok(v) = K0sVersion::parse(t)
            && best.as_ref().is_none_or(|(b, _)| v > *b)
        {
            best = Some((v, t.to_string()));
        }
    }
    best.map(|(_, t)| t)
        .ok_or_else(|| anyhow::anyhow!("{all_url} lists no stable release"))
}

fn tag(v: &serde_json::Value, url: &str) -> anyhow::Result<String> {
    v["tag_name"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{url} returned a release without tag_name"))
}

async fn get_text(url: &str) -> anyhow::Result<String> {
    let resp = client()?
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    resp.text().await.with_context(|| format!("reading {url}"))
}
