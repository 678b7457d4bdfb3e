//! Small helpers for the k0s stand-in: file modes, time formatting (RFC 3339), host addresses,
//! Go-style JSON indentation, logrus-style log lines and a minimal HTTPS client (tokio-rustls)
//! used by workers and joining controllers.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// URL percent-decoding (`%2B` → `+`); invalid escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn write_mode(p: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, p).with_context(|| format!("rename to {}", p.display()))?;
    Ok(())
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// (year, month, day, hour, minute, second) in UTC.
pub fn civil(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Howard Hinnant's civil_from_days
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 { y + 1 } else { y },
        m,
        d,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
    )
}

/// RFC 3339 UTC timestamp, e.g. `2026-11-22T03:20:00Z`.
pub fn rfc3339(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

pub fn now_rfc3339() -> String {
    rfc3339(now_unix())
}

/// Parse an RFC 3339 UTC timestamp as written by `rfc3339` (also accepts offsets of 0).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let n = |a: usize, l: usize| s.get(a..a + l)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0, 4)?,
        n(5, 2)?,
        n(8, 2)?,
        n(11, 2)?,
        n(14, 2)?,
        n(17, 2)?,
    );
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + se)
}

/// Go duration string (`10m0s`, `1h`, `1.5h`, `30s`, `0s`) → seconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    if s == "0" {
        return Ok(0);
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() || n == 'µ' {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num
            .parse()
            .with_context(|| format!("time: invalid duration \"{s}\""))?;
        num.clear();
        total += v * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000001,
            "ns" => 0.000000001,
            _ => bail!("time: unknown unit \"{unit}\" in duration \"{s}\""),
        };
    }
    if !num.is_empty() {
        bail!("time: missing unit in duration \"{s}\"");
    }
    Ok(total as i64)
}

/// Go's `json.MarshalIndent(v, "", "   ")`.
pub fn json_indent3(v: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser).expect("serialize json");
    String::from_utf8(buf).unwrap()
}

/// A logrus text-formatter line (non-TTY form) on stderr.
pub fn log_warn(msg: &str) {
    let (y, mo, d, h, mi, s) = civil(now_unix());
    eprintln!(
        "time=\"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}\" level=warning msg=\"{}\"",
        msg.replace('"', "\\\"")
    );
}

/// logrus line at error level with fields on stderr (`time=… level=error msg="…" k=v`).
pub fn log_error_fields(msg: &str, fields: &[(&str, &str)]) {
    let (y, mo, d, h, mi, s) = civil(now_unix());
    let f: String = fields
        .iter()
        .map(|(k, v)| format!(" {k}=\"{v}\""))
        .collect();
    eprintln!(
        "time=\"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}\" level=error msg=\"{}\"{f}",
        msg.replace('"', "\\\"")
    );
}

/// logrus line at info level on stdout (daemons log at Info to stdout).
pub fn log_info(msg: &str) {
    let (y, mo, d, h, mi, s) = civil(now_unix());
    println!(
        "time=\"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}\" level=info msg=\"{}\"",
        msg.replace('"', "\\\"")
    );
}

/// Global-scope IPv4 addresses of this host (from `ip -4 -o addr`), first one first.
pub fn host_ipv4s() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output();
    let mut v = Vec::new();
    if let Ok(o) = out {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if let Some(i) = f.iter().position(|x| *x == "inet")
                && let Some(a) = f.get(i + 1)
            {
                v.push(a.split('/').next().unwrap_or("").to_string());
            }
        }
    }
    v
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Client TLS identity and trust for `https_request`.
pub struct TlsClient {
    pub ca_pem: String,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
    /// Skip server verification (used only before the CA is known).
    pub insecure: bool,
}

fn pem_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    Ok(
        rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?,
    )
}

pub fn pem_key(pem: &str) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    Ok(rustls::pki_types::PrivateKeyDer::from_pem_slice(
        pem.as_bytes(),
    )?)
}

pub fn pem_to_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    pem_certs(pem)
}

#[derive(Debug)]
struct NoVerify;
impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One HTTPS/1.1 request (`Connection: close`). `url` = `https://host:port/path`. Returns (status, body).
pub async fn https_request(
    tls: &TlsClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("not an https URL: {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = hostport
        .rsplit_once(':')
        .map(|x| x.0)
        .unwrap_or(hostport)
        .trim_matches(['[', ']']);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:443")
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&tls.ca_pem)? {
            roots.add(c)?;
        }
        builder.with_root_certificates(roots)
    };
    let cfg = match (&tls.cert_pem, &tls.key_pem) {
        (Some(c), Some(k)) => builder.with_client_auth_cert(pem_certs(c)?, pem_key(k)?)?,
        _ => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect(&hostport),
    )
    .await
    .with_context(|| format!("connect {hostport}: timeout"))?
    .with_context(|| format!("dial tcp {hostport}"))?;
    let sn = rustls::pki_types::ServerName::try_from(host.to_string())?;
    let mut s = connector
        .connect(sn, tcp)
        .await
        .with_context(|| format!("TLS handshake with {hostport}"))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: k0s-standin\r\n"
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    let b = body.unwrap_or(&[]);
    req += &format!("Content-Length: {}\r\n\r\n", b.len());
    s.write_all(req.as_bytes()).await?;
    s.write_all(b).await?;
    let mut resp = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut resp)).await;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let Some(e) = b[i..].windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let n =
            usize::from_str_radix(String::from_utf8_lossy(&b[i..i + e]).trim(), 16).unwrap_or(0);
        i += e + 2;
        if n == 0 || i + n > b.len() {
            break;
        }
        out.extend_from_slice(&b[i..i + n]);
        i += n + 2;
    }
    out
}

/// The address a kubelet registers as the node's InternalIP when it has no `--node-ip`, by the
/// kubelet's own rule (kubernetes `pkg/kubelet/nodestatus/setters.go`, `NodeAddress`): the
/// hostname override if it is an IP; else the node name looked up (here: `/etc/hosts`, the
/// resolver's first source), first IPv4 that is not loopback; else the first IPv4 of the
/// interface that carries the default route (`ChooseHostInterface`).
pub fn kubelet_default_node_ip(node_name: &str) -> Option<String> {
    if node_name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some(node_name.to_string());
    }
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for l in hosts.lines() {
        let l = l.split('#').next().unwrap_or("");
        let mut f = l.split_whitespace();
        let Some(a) = f.next() else { continue };
        if f.any(|n| n.eq_ignore_ascii_case(node_name))
            && let Ok(ip) = a.parse::<std::net::Ipv4Addr>()
            && !ip.is_loopback()
            && !ip.is_unspecified()
        {
            return Some(a.to_string());
        }
    }
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .ok()?;
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    let dev = routes
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)?;
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", dev, "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let i = f.iter().position(|x| *x == "inet")?;
        f.get(i + 1)
            .map(|a| a.split('/').next().unwrap_or("").to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_and_durations() {
        let t = super::parse_rfc3339("2026-11-22T03:20:05Z").unwrap();
        assert_eq!(super::rfc3339(t), "2026-11-22T03:20:05Z");
        assert_eq!(super::parse_duration("10m0s").unwrap(), 600);
        assert_eq!(super::parse_duration("1.5h").unwrap(), 5400);
        assert_eq!(super::parse_duration("0s").unwrap(), 0);
        assert!(super::parse_duration("10").is_err());
    }
}
