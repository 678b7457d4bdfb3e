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

/// The one k0s release whose worker reads and decodes its join-token file at every start,
/// not only before its first join (k0s issue #7202, k0s `cmd/worker/worker.go` of v1.35.1):
/// after the join, its token file must still hold a decodable token.
pub const TOKEN_AT_EVERY_START: &str = "v1.35.1+k0s.0";

/// True for the k0s release of [`TOKEN_AT_EVERY_START`].
pub fn decodes_token_at_every_start(v: &super::version::K0sVersion) -> bool {
    super::version::K0sVersion::parse(TOKEN_AT_EVERY_START).is_ok_and(|w| *v == w)
}

/// A syntactically valid but useless worker join token (as k0sctl writes for k0s v1.35.1 after
/// the join): a kubelet-bootstrap kubeconfig with a fresh throw-away self-signed CA, server
/// 127.0.0.1 and a placeholder bootstrap token. It grants nothing: the worker, already joined,
/// uses its kubelet kubeconfig and only decodes this file.
pub fn dummy_join_token() -> Result<String, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "k0s-sample-CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("self-signing a certificate: {e}"))?;
    let ca = STANDARD.encode(cert.pem());
    // id.secret in the Kubernetes bootstrap token format, assembled so that no token-shaped
    // literal sits in the source.
    let placeholder = format!("{}.{}", "abcdef", "0123456789abcdef");
    let kubeconfig = format!(
        "# dummy token written by k0sctl\napiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://127.0.0.1:6443\n  name: k0s\ncontexts:\n- context:\n    cluster: k0s\n    user: kubelet-bootstrap\n  name: k0s\ncurrent-context: k0s\nusers:\n- name: kubelet-bootstrap\n  user:\n    token: {placeholder}\n"
    );
    Ok(encode(&kubeconfig))
}

/// True when `s` (trimmed) is non-empty standard base64, the check k0sctl makes before it
/// replaces a v1.35.1 worker's token file.
pub fn is_base64(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && STANDARD.decode(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_token_decodes_as_a_kubelet_bootstrap_token() {
        let raw = dummy_join_token().unwrap();
        assert!(is_base64(&raw));
        let t = JoinToken::parse(&raw).unwrap();
        assert_eq!(t.kind, "kubelet-bootstrap");
        assert_eq!(t.url, "https://127.0.0.1:6443");
        // base64 of a PEM block ("-----BEGIN ...").
        assert!(t.kubeconfig.contains("certificate-authority-data: LS0t"));
        assert!(!is_base64("# overwritten by k0sctl after join\n"));
        let v = |s: &str| super::super::version::K0sVersion::parse(s).unwrap();
        assert!(decodes_token_at_every_start(&v("v1.35.1+k0s.0")));
        assert!(!decodes_token_at_every_start(&v("v1.35.2+k0s.0")));
        assert!(!decodes_token_at_every_start(&v("v1.34.1+k0s.0")));
    }

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
