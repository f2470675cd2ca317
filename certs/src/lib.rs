//! Certificates for Skjold's webhook: a small private CA, serving certificates for the webhook
//! Service, inspection (validity, names), chain checks, the rotation decision and the CA-bundle
//! overlap window that keeps admission working while certificates rotate.
//!
//! Everything is PEM in and PEM out, so the output drops straight into a `kubernetes.io/tls`
//! Secret, a `caBundle`, or a rustls [`rustls::ServerConfig`] via [`server_config`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Backdating of `notBefore`, so a peer whose clock runs a little behind accepts a fresh certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why a certificate could not be issued, read or checked.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: invalid PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{what}: invalid X.509 certificate: {reason}")]
    X509 { what: &'static str, reason: String },
    #[error("{what}: no private key found in PEM")]
    NoKey { what: &'static str },
    #[error(
        "certificate for {subject:?} is not signed by any CA in the bundle ({cas} CA certificate(s) checked)"
    )]
    NotSigned { subject: String, cas: usize },
    #[error(
        "certificate {subject:?} is outside its validity period (notBefore {not_before}, notAfter {not_after})"
    )]
    Expired {
        subject: String,
        not_before: String,
        not_after: String,
    },
    #[error("TLS configuration rejected the certificate/key: {0}")]
    Tls(#[from] rustls::Error),
    #[error("validity {0:?} is out of range")]
    Validity(Duration),
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    // The key must never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A private CA that signs serving and client certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for CertificateAuthority {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn validity_window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    let now = OffsetDateTime::now_utc();
    let skew = time::Duration::try_from(CLOCK_SKEW).map_err(|_| CertError::Validity(validity))?;
    let span = time::Duration::try_from(validity).map_err(|_| CertError::Validity(validity))?;
    let not_after = now.checked_add(span).ok_or(CertError::Validity(validity))?;
    Ok((now - skew, not_after))
}

fn named(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

impl CertificateAuthority {
    /// Creates a new self-signed CA (ECDSA P-256) valid for `validity` from now.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = named(common_name);
        // Path length 0: this CA signs leaves only.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity_window(validity)?;
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key,
        })
    }

    /// Loads an existing CA (as stored in a Secret).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Pem {
            what: "CA private key",
            reason: e.to_string(),
        })?;
        // Validate the certificate now so later signing cannot fail on a bad PEM.
        let first = first_cert_pem(cert_pem, "CA certificate")?;
        Issuer::from_ca_cert_pem(&first, &key).map_err(|e| CertError::X509 {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        Ok(CertificateAuthority {
            cert_pem: first,
            key_pem: key_pem.to_string(),
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CertError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|e| CertError::X509 {
            what: "CA certificate",
            reason: e.to_string(),
        })
    }

    /// Issues a TLS server certificate (EKU serverAuth) for the given DNS names and IPs.
    pub fn issue_serving(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<IssuedCert, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let cn = dns_names
            .first()
            .cloned()
            .or_else(|| ips.first().map(|ip| ip.to_string()))
            .unwrap_or_else(|| "skjold".to_string());
        params.distinguished_name = named(&cn);
        for name in dns_names {
            let name = name
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| CertError::Generate(e))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_leaf(params, key, validity)
    }

    /// Issues a TLS client certificate (EKU clientAuth); Kubernetes reads CN as the user and O as groups.
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[String],
        validity: Duration,
    ) -> Result<IssuedCert, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = named(common_name);
        for org in organizations {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_leaf(params, key, validity)
    }

    /// Signs a leaf certificate for `key` with this CA, valid for `validity` from now.
    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        key: KeyPair,
        validity: Duration,
    ) -> Result<IssuedCert, CertError> {
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity_window(validity)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DNS names a Service is reached by: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub is_ca: bool,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Time left until `notAfter` (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// Whether `now` lies inside the validity period.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// All certificates (DER) in a PEM text, in order.
fn pem_ders(pem: &str, what: &'static str) -> Result<Vec<Vec<u8>>, CertError> {
    let mut reader = pem.as_bytes();
    let mut out = Vec::new();
    for item in rustls_pemfile::certs(&mut reader) {
        let der = item.map_err(|e| CertError::Pem {
            what,
            reason: e.to_string(),
        })?;
        out.push(der.to_vec());
    }
    if out.is_empty() {
        return Err(CertError::NoCertificate { what });
    }
    Ok(out)
}

fn to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn first_cert_pem(pem: &str, what: &'static str) -> Result<String, CertError> {
    let ders = pem_ders(pem, what)?;
    Ok(to_pem(&ders[0]))
}

fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CertError::X509 {
            what,
            reason: e.to_string(),
        })
}

fn epoch(ts: i64) -> SystemTime {
    if ts >= 0 {
        UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(ts.unsigned_abs())
    }
}

fn info_of(cert: &X509Certificate<'_>) -> CertInfo {
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        let b: [u8; 4] = (*bytes).try_into().expect("length checked");
                        ip_addresses.push(IpAddr::from(b));
                    }
                    16 => {
                        let b: [u8; 16] = (*bytes).try_into().expect("length checked");
                        ip_addresses.push(IpAddr::from(b));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        ip_addresses,
        is_ca: cert.is_ca(),
        not_before: epoch(cert.validity().not_before.timestamp()),
        not_after: epoch(cert.validity().not_after.timestamp()),
    }
}

/// Reads the first certificate of a PEM text.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, CertError> {
    let ders = pem_ders(cert_pem, "certificate")?;
    Ok(info_of(&parse(&ders[0], "certificate")?))
}

/// Reads every certificate of a PEM text (e.g. a CA bundle).
pub fn inspect_all(pem: &str) -> Result<Vec<CertInfo>, CertError> {
    let ders = pem_ders(pem, "certificate bundle")?;
    ders.iter()
        .map(|d| parse(d, "certificate bundle").map(|c| info_of(&c)))
        .collect()
}

fn fmt_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(secs)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// Checks that some CA in `ca_bundle_pem` signed the first certificate of `leaf_pem`, and that
/// both are valid now: what the API server will check before it calls the webhook.
pub fn verify_signed_by(leaf_pem: &str, ca_bundle_pem: &str) -> Result<(), CertError> {
    let now = SystemTime::now();
    let leaf_ders = pem_ders(leaf_pem, "leaf certificate")?;
    let leaf = parse(&leaf_ders[0], "leaf certificate")?;
    let leaf_info = info_of(&leaf);
    if !leaf_info.is_valid_at(now) {
        return Err(CertError::Expired {
            subject: leaf_info.subject,
            not_before: fmt_time(leaf_info.not_before),
            not_after: fmt_time(leaf_info.not_after),
        });
    }
    let ca_ders = pem_ders(ca_bundle_pem, "CA bundle")?;
    for der in &ca_ders {
        let ca = parse(der, "CA bundle")?;
        if ca.subject() != leaf.issuer() || !info_of(&ca).is_valid_at(now) {
            continue;
        }
        if leaf.verify_signature(Some(ca.public_key())).is_ok() {
            return Ok(());
        }
    }
    Err(CertError::NotSigned {
        subject: leaf_info.subject,
        cas: ca_ders.len(),
    })
}

/// Rotation is due when less than `renew_before`, or less than a third of the lifetime, remains.
pub fn needs_rotation(info: &CertInfo, now: SystemTime, renew_before: Duration) -> bool {
    let lifetime = info
        .not_after
        .duration_since(info.not_before)
        .unwrap_or_default();
    let remaining = info.remaining(now);
    remaining < renew_before || remaining < lifetime / 3 || !info.is_valid_at(now)
}

/// The CA bundle during rotation: the new CA first, then the CAs of the existing bundle that are
/// still valid at `now` (deduplicated). Serving certificates signed by either CA verify, so the
/// API server never sees a certificate its bundle cannot check.
pub fn merge_ca_bundle(existing_bundle_pem: &str, new_ca_pem: &str, now: SystemTime) -> String {
    let mut kept: Vec<Vec<u8>> = pem_ders(new_ca_pem, "new CA").unwrap_or_default();
    if let Ok(old) = pem_ders(existing_bundle_pem, "CA bundle") {
        for der in old {
            let valid = parse(&der, "CA bundle")
                .map(|c| info_of(&c).is_valid_at(now))
                .unwrap_or(false);
            if valid && !kept.contains(&der) {
                kept.push(der);
            }
        }
    }
    kept.iter().map(|d| to_pem(d)).collect()
}

/// A rustls server configuration for the given certificate chain and key: TLS 1.2 and 1.3 only,
/// the ring provider, ALPN `h2` and `http/1.1`.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, CertError> {
    let chain = pem_ders(cert_pem, "serving certificate")?
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect::<Vec<_>>();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| CertError::Pem {
            what: "serving key",
            reason: e.to_string(),
        })?
        .ok_or(CertError::NoKey {
            what: "serving key",
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// An ECDSA P-256 signing key pair: (private PKCS#8 PEM, public SPKI PEM), e.g. for
/// kube-apiserver's service-account token signing.
pub fn generate_signing_key() -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn webhook_names() -> Vec<String> {
        service_dns_names("skjold-webhook", "istio-system")
    }

    #[test]
    fn serving_cert_verifies_against_its_ca_only() {
        let ca = CertificateAuthority::generate("skjold-ca", 365 * DAY).unwrap();
        let other = CertificateAuthority::generate("other-ca", 365 * DAY).unwrap();
        let leaf = ca
            .issue_serving(&webhook_names(), &["127.0.0.1".parse().unwrap()], 30 * DAY)
            .unwrap();
        verify_signed_by(&leaf.cert_pem, ca.cert_pem()).unwrap();
        let err = verify_signed_by(&leaf.cert_pem, other.cert_pem()).unwrap_err();
        assert!(matches!(err, CertError::NotSigned { .. }), "{err}");
        let info = inspect(&leaf.cert_pem).unwrap();
        assert_eq!(info.dns_names, webhook_names());
        assert_eq!(
            info.ip_addresses,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(!info.is_ca);
        assert!(inspect(ca.cert_pem()).unwrap().is_ca);
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = CertificateAuthority::generate("skjold-ca", DAY).unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let leaf = again.issue_serving(&webhook_names(), &[], DAY).unwrap();
        verify_signed_by(&leaf.cert_pem, ca.cert_pem()).unwrap();
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = inspect("not a certificate").unwrap_err();
        assert_eq!(err.to_string(), "certificate: no PEM certificate found");
        let ca = CertificateAuthority::generate("skjold-ca", DAY).unwrap();
        assert!(CertificateAuthority::from_pem(ca.cert_pem(), "nope").is_err());
        assert!(server_config(ca.cert_pem(), "nope").is_err());
    }

    #[test]
    fn rotation_is_due_in_the_last_third_or_before_the_margin() {
        let now = SystemTime::now();
        let info = CertInfo {
            subject: "x".into(),
            issuer: "y".into(),
            dns_names: vec![],
            ip_addresses: vec![],
            is_ca: false,
            not_before: now - 10 * DAY,
            not_after: now + 80 * DAY,
        };
        assert!(!needs_rotation(&info, now, 30 * DAY));
        assert!(needs_rotation(&info, now + 51 * DAY, 30 * DAY)); // 29 days left
        assert!(needs_rotation(&info, now, 81 * DAY));
        assert!(needs_rotation(&info, now + 100 * DAY, DAY)); // expired
    }

    #[test]
    fn bundle_keeps_old_ca_during_overlap_and_drops_duplicates() {
        let old = CertificateAuthority::generate("old", 365 * DAY).unwrap();
        let new = CertificateAuthority::generate("new", 365 * DAY).unwrap();
        let now = SystemTime::now();
        let bundle = merge_ca_bundle(old.cert_pem(), new.cert_pem(), now);
        let subjects: Vec<_> = inspect_all(&bundle)
            .unwrap()
            .into_iter()
            .map(|i| i.subject)
            .collect();
        assert_eq!(subjects, vec!["CN=new".to_string(), "CN=old".to_string()]);
        // Leaves of both CAs verify against the merged bundle.
        for ca in [&old, &new] {
            let leaf = ca.issue_serving(&webhook_names(), &[], DAY).unwrap();
            verify_signed_by(&leaf.cert_pem, &bundle).unwrap();
        }
        // Merging again is idempotent; once the old CA has expired it is dropped.
        assert_eq!(merge_ca_bundle(&bundle, new.cert_pem(), now), bundle);
        let later = now + 400 * DAY;
        assert_eq!(
            merge_ca_bundle(&bundle, new.cert_pem(), later)
                .matches("BEGIN")
                .count(),
            1
        );
    }

    #[test]
    fn pem_encoding_matches_rcgen() {
        let ca = CertificateAuthority::generate("skjold-ca", DAY).unwrap();
        let der = &pem_ders(ca.cert_pem(), "x").unwrap()[0];
        assert_eq!(
            to_pem(der).trim(),
            ca.cert_pem().replace("\r\n", "\n").trim()
        );
    }

    #[test]
    fn server_config_is_tls12_plus_with_alpn() {
        let ca = CertificateAuthority::generate("skjold-ca", DAY).unwrap();
        let leaf = ca.issue_serving(&webhook_names(), &[], DAY).unwrap();
        let cfg = server_config(&leaf.cert_pem, &leaf.key_pem).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn client_cert_carries_groups() {
        let ca = CertificateAuthority::generate("skjold-ca", DAY).unwrap();
        let c = ca
            .issue_client("admin", &["system:masters".to_string()], DAY)
            .unwrap();
        let info = inspect(&c.cert_pem).unwrap();
        assert!(info.subject.contains("CN=admin"), "{}", info.subject);
        assert!(
            info.subject.contains("O=system:masters"),
            "{}",
            info.subject
        );
    }

    #[test]
    fn debug_output_never_contains_the_key() {
        let ca = CertificateAuthority::generate("skjold-ca", DAY).unwrap();
        let leaf = ca.issue_serving(&webhook_names(), &[], DAY).unwrap();
        for text in [format!("{leaf:?}"), format!("{ca:?}")] {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
        assert!(format!("{leaf:?}").contains("<redacted>"));
    }

    #[test]
    fn signing_key_pair_is_pem() {
        let (private, public) = generate_signing_key().unwrap();
        assert!(private.contains("BEGIN PRIVATE KEY"));
        assert!(public.contains("BEGIN PUBLIC KEY"));
    }
}
