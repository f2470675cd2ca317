//! Minimal GETs for probing our servers: HTTPS for the webhook's `/readyz` and `/metrics` with the
//! CA from its Secret (the same trust the API server uses), plain HTTP for the operator's
//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status code and body of `GET path` on `addr`, verifying the server certificate for
/// `server_name` against `ca_pem` (one or more CAs).
pub async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    path: &str,
) -> Result<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(cert.context("parsing the CA bundle")?)
            .context("adding a CA to the trust store")?;
    }
    if roots.is_empty() {
        bail!("the CA bundle holds no certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("server name {server_name:?}"))?;
    let io = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {addr} as {server_name}"))?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| anyhow!("GET https://{addr}{path} timed out"))??;
    parse_response(&String::from_utf8_lossy(&raw))
}

/// Status code and body of a plain-HTTP `GET path` on `addr` (the operator's admin endpoints).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let io = async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path} timed out"))??;
    parse_response(&String::from_utf8_lossy(&raw))
}

fn parse_response(text: &str) -> Result<(u16, String)> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {text:.200}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("no status code in {head:.200}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size_line, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size_line:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| anyhow!("chunk of {size} bytes is truncated"))?;
        out.push_str(chunk);
        rest = after.get(size + 2..).unwrap_or("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let (s, b) = parse_response("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((s, b.as_str()), (200, "ok"));
        let (s, b) = parse_response(
            "HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n ready\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (503, "not ready"));
        assert!(parse_response("garbage").is_err());
    }
}
