//! PKI of the k0s stand-in: cluster CA (`pki/ca.crt`, `pki/ca.key`), admin client certificate
//! (CN=kubernetes-admin, O=system:masters), API server certificates and kubelet client
//! certificates, all signed by the cluster CA with rcgen (ring backend).

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;

const CA_CN: &str = "kubernetes-ca";

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_CN);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p
}

/// Create `pki/ca.crt` + `pki/ca.key` unless they exist.
pub fn ensure_ca(pki: &Path) -> Result<()> {
    if pki.join("ca.crt").exists() && pki.join("ca.key").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(pki)?;
    let key = KeyPair::generate().context("generate CA key")?;
    let cert = ca_params().self_signed(&key).context("self-sign CA")?;
    super::util::write_mode(&pki.join("ca.key"), key.serialize_pem().as_bytes(), 0o640)?;
    super::util::write_mode(&pki.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Issue a certificate signed by the CA in `pki`. Returns (cert PEM, key PEM).
pub fn issue(
    pki: &Path,
    cn: &str,
    orgs: &[&str],
    sans: &[String],
    server: bool,
    client: bool,
) -> Result<(String, String)> {
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).context("read ca.key")?)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    p.distinguished_name = dn;
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if server {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if client {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    for s in sans {
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            p.subject_alt_names.push(SanType::IpAddress(ip));
        } else if !s.is_empty() {
            p.subject_alt_names
                .push(SanType::DnsName(s.as_str().try_into()?));
        }
    }
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer).context("sign certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}
