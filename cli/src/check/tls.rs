//! Talks to a webhook URL the way the API server does: a TLS handshake that records the certificate
//! actually served (verified afterwards against the MutatingWebhookConfiguration's caBundle, so a
//! mismatch is reported instead of aborting the handshake) and `GET /readyz`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a webhook URL could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("webhook url {url:?} is not usable: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} presented no certificate")]
    NoCertificate { addr: String },
    #[error("GET /readyz on {addr} failed: {reason}")]
    Http { addr: String, reason: String },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("TLS client setup failed: {0}")]
    Setup(#[from] rustls::Error),
}

/// `https://host[:port][/path]` split into what a TCP/TLS client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    pub host: String,
    pub port: u16,
}

impl WebhookUrl {
    /// Accepts exactly the forms the API server accepts for `clientConfig.url` (https only).
    pub fn parse(url: &str) -> Result<Self, ProbeError> {
        let bad = |reason| ProbeError::Url {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https://"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(bad("must not contain user information"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unterminated [IPv6] host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("has an invalid port"))?,
        };
        Ok(WebhookUrl {
            host: host.to_string(),
            port,
        })
    }

    fn addr(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// What the webhook served.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The certificate chain as presented, leaf first, PEM.
    pub chain_pem: String,
    /// Status code of `GET /readyz`, or why it could not be read.
    pub readyz: Result<u16, String>,
}

/// Connects to `url`, records its certificate chain and asks `/readyz`, all within `timeout`.
pub async fn probe(url: &WebhookUrl, timeout: Duration) -> Result<Probe, ProbeError> {
    let addr = url.addr();
    tokio::time::timeout(timeout, probe_inner(url, &addr))
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: addr.clone(),
            timeout,
        })?
}

async fn probe_inner(url: &WebhookUrl, addr: &str) -> Result<Probe, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordOnly(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    let server_name = ServerName::try_from(url.host.clone()).map_err(|_| ProbeError::Url {
        url: url.host.clone(),
        reason: "host is not a valid DNS name or IP",
    })?;

    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|source| ProbeError::Handshake {
            addr: addr.to_string(),
            source,
        })?;

    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    if certs.is_empty() {
        return Err(ProbeError::NoCertificate {
            addr: addr.to_string(),
        });
    }
    let chain_pem = certs
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
        .collect();

    let readyz = readyz(&mut tls, &url.host)
        .await
        .map_err(|reason| reason.to_string());
    Ok(Probe { chain_pem, readyz })
}

/// HTTP/1.1 `GET /readyz` on an established stream; returns the status code.
async fn readyz<S>(stream: &mut S, host: &str) -> Result<u16, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let http = |reason: String| ProbeError::Http {
        addr: host.to_string(),
        reason,
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| http(e.to_string()))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| http(e.to_string()))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head).ok_or_else(|| {
        http(format!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&head)
        ))
    })
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Accepts any certificate during the handshake (it is checked against the caBundle afterwards, with
/// a precise message) but still verifies the handshake signatures, so the peer really holds the key.
#[derive(Debug)]
struct RecordOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for RecordOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_webhook_urls() {
        assert_eq!(
            WebhookUrl::parse("https://127.0.0.1:15017/inject").unwrap(),
            WebhookUrl {
                host: "127.0.0.1".into(),
                port: 15017
            }
        );
        assert_eq!(
            WebhookUrl::parse("https://webhook.example.com/inject/rev/canary").unwrap(),
            WebhookUrl {
                host: "webhook.example.com".into(),
                port: 443
            }
        );
        assert_eq!(
            WebhookUrl::parse("https://[::1]:8443/inject").unwrap(),
            WebhookUrl {
                host: "::1".into(),
                port: 8443
            }
        );
        assert_eq!(
            WebhookUrl::parse("https://[::1]:8443").unwrap().addr(),
            "[::1]:8443"
        );
    }

    #[test]
    fn refuses_bad_urls_naming_the_value() {
        for (url, why) in [
            ("http://127.0.0.1/inject", "https://"),
            ("https:///inject", "no host"),
            ("https://host:0/x", "invalid port"),
            ("https://host:99999/x", "invalid port"),
            ("https://user@host/x", "user information"),
            ("https://[::1/x", "IPv6"),
        ] {
            let err = WebhookUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(url) && err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn status_line() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\nx: y"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    /// A real TLS server with a certificate from our CA: the probe records exactly that certificate
    /// and the /readyz status.
    #[tokio::test]
    async fn probe_records_served_certificate_and_readyz() {
        let ca = skjold_certs::CertificateAuthority::generate(
            "probe-test-ca",
            Duration::from_secs(3600),
        )
        .unwrap();
        let leaf = ca
            .issue_serving(
                &[],
                &["127.0.0.1".parse().unwrap()],
                Duration::from_secs(600),
            )
            .unwrap();
        let server = skjold_certs::server_config(&leaf.cert_pem, &leaf.key_pem).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serve = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = [0u8; 1024];
            let n = tls.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /readyz HTTP/1.1\r\n"));
            tls.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            tls.shutdown().await.ok();
        });
        let url = WebhookUrl::parse(&format!("https://127.0.0.1:{port}/inject")).unwrap();
        let probe = probe(&url, Duration::from_secs(5)).await.unwrap();
        serve.await.unwrap();
        assert_eq!(probe.readyz, Ok(503));
        let served = skjold_certs::inspect(&probe.chain_pem).unwrap();
        let issued = skjold_certs::inspect(&leaf.cert_pem).unwrap();
        assert_eq!(served.not_after, issued.not_after);
        assert!(skjold_certs::verify_signed_by(&probe.chain_pem, ca.cert_pem()).is_ok());
    }

    #[tokio::test]
    async fn probe_reports_refused_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = WebhookUrl::parse(&format!("https://127.0.0.1:{port}/inject")).unwrap();
        let err = probe(&url, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
