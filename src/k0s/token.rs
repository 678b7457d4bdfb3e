//! k0s join tokens: `base64(gzip(kubeconfig))`, as `k0s token create` prints them.
//!
//! k0sctl needs three things from a token: the bootstrap token ID (to invalidate it after the
//! join), the API URL embedded in it (for the connectivity pre-check), and the embedded
//! kubeconfig itself. The token is a secret: [`JoinToken`]'s `Debug` never shows it.

use std::fmt;
use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A decoded join token.
#[derive(Clone)]
pub struct JoinToken {
    /// The token exactly as k0s printed it (trimmed); secret.
    pub raw: String,
    /// The embedded kubeconfig (YAML); secret.
    pub kubeconfig: String,
    /// The bootstrap token ID (the part before the `.`); not secret.
    pub id: String,
    /// The API server URL in the token.
    pub url: String,
    /// `kubelet-bootstrap` (worker) or `controller-bootstrap` (controller).
    pub kind: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
}

#[derive(serde::Deserialize)]
struct Named<T> {
    #[serde(default)]
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    inner: Option<T>,
}

#[derive(serde::Deserialize)]
struct ClusterEntry {
    #[serde(default)]
    server: String,
}

#[derive(serde::Deserialize)]
struct ContextEntry {
    #[serde(default)]
    user: String,
}

#[derive(serde::Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: String,
}

impl JoinToken {
    /// Decodes a token; errors never include the token's secret part.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let gz = STANDARD
            .decode(raw)
            .map_err(|e| format!("join token is not valid base64: {e}"))?;
        let mut kubeconfig = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut kubeconfig)
            .map_err(|e| format!("join token is not gzip-compressed text: {e}"))?;
        let kc: Kubeconfig = serde_saphyr::from_str(&kubeconfig)
            .map_err(|_| "join token does not contain a valid kubeconfig".to_string())?;
        let token = kc
            .users
            .first()
            .and_then(|u| u.inner.as_ref())
            .map(|u| u.token.as_str())
            .unwrap_or("");
        let Some((id, _)) = token.split_once('.') else {
            return Err("join token's kubeconfig has no bootstrap token (<id>.<secret>)".into());
        };
        let url = kc
            .clusters
            .first()
            .and_then(|c| c.inner.as_ref())
            .map(|c| c.server.clone())
            .unwrap_or_default();
        if url.is_empty() {
            return Err("join token's kubeconfig has no server URL".into());
        }
        let kind = kc
            .contexts
            .first()
            .and_then(|c| c.inner.as_ref())
            .map(|c| c.user.clone())
            .filter(|u| !u.is_empty())
            .or_else(|| kc.users.first().map(|u| u.name.clone()))
            .unwrap_or_default();
        Ok(JoinToken {
            raw: raw.to_string(),
            kubeconfig,
            id: id.to_string(),
            url,
            kind,
        })
    }
}

/// Encodes a kubeconfig the way k0s does (gzip best compression, standard base64).
pub fn encode(kubeconfig: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(kubeconfig.as_bytes())
        .expect("writing to memory");
    STANDARD.encode(gz.finish().expect("writing to memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Y2E=\n    server: https://172.17.0.2:6443\n  name: k0s\ncontexts:\n- context:\n    cluster: k0s\n    user: kubelet-bootstrap\n  name: k0s\ncurrent-context: k0s\nkind: Config\nusers:\n- name: kubelet-bootstrap\n  user:\n    token: i6i3yg.abcdef0123456789\n";

    #[test]
    fn parses_k0s_tokens() {
        let t = JoinToken::parse(&format!("{}\n", encode(KC))).unwrap();
        assert_eq!(t.id, "i6i3yg");
        assert_eq!(t.url, "https://172.17.0.2:6443");
        assert_eq!(t.kind, "kubelet-bootstrap");
        assert_eq!(t.kubeconfig, KC);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("abcdef0123456789"), "{dbg}");
    }

    #[test]
    fn rejects_garbage_without_leaking() {
        assert!(
            JoinToken::parse("not base64!")
                .unwrap_err()
                .contains("base64")
        );
        let e = JoinToken::parse(&STANDARD.encode("plain")).unwrap_err();
        assert!(e.contains("gzip"));
        let e = JoinToken::parse(&encode(
            "users:\n- name: x\n  user:\n    token: nodot-secret\n",
        ))
        .unwrap_err();
        assert!(!e.contains("nodot-secret"));
    }
}
