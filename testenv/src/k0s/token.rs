//! k0s join tokens (k0s `pkg/token/`): `base64(gzip(kubeconfig))` with a bootstrap token `id.secret`,
//! cluster/context named `k0s`, user `kubelet-bootstrap` (worker) or `controller-bootstrap`.

use anyhow::{Context, Result};
use base64::Engine;
use std::io::{Read, Write};

/// Encode a join token for `url` (https://host:6443 or :9443).
pub fn encode(url: &str, ca_pem: &[u8], user: &str, token: &str) -> Result<String> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kc = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {url}\n  name: k0s\ncontexts:\n- context:\n    cluster: k0s\n    user: {user}\n  name: k0s\ncurrent-context: k0s\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    token: {token}\n"
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(kc.as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(gz.finish()?))
}

/// The kubeconfig inside a token.
pub fn decode_kubeconfig(token: &str) -> Result<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .context("failed to decode token: illegal base64 data")?;
    let mut s = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut s)
        .context("failed to decode token: not gzip")?;
    Ok(s)
}

/// Decode a token into (server URL, CA PEM, token type = user name, bootstrap token).
pub fn decode(token: &str) -> Result<(String, String, String, String)> {
    let kc = decode_kubeconfig(token)?;
    let v: serde_json::Value =
        serde_saphyr::from_str(&kc).context("failed to parse token kubeconfig")?;
    let (server, ca, _, _, tok) = super::daemon::parse_kubeconfig(&kc)?;
    let user = v["users"][0]["name"].as_str().unwrap_or("").to_string();
    Ok((
        server,
        ca,
        user,
        tok.context("token has no bootstrap token")?,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_round_trip_matches_k0sctl_parser_expectations() {
        let t = super::encode(
            "https://10.0.0.1:6443",
            b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            "kubelet-bootstrap",
            "abcdef.0123456789abcdef",
        )
        .unwrap();
        let kc = super::decode_kubeconfig(&t).unwrap();
        assert!(kc.contains("current-context: k0s") && kc.contains("name: kubelet-bootstrap"));
        let (url, _ca, user, tok) = super::decode(&t).unwrap();
        assert_eq!(url, "https://10.0.0.1:6443");
        assert_eq!(user, "kubelet-bootstrap");
        assert_eq!(tok.split('.').next(), Some("abcdef"));
    }
}
