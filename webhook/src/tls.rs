//! Serving certificate: loading the PEM files into a rustls config and reloading it when they change.
//!
//! Kubernetes Secret volumes update by swapping a `..data` symlink, so the file's own mtime is not a
//! reliable signal. The reloader therefore re-reads both files through their paths (following the
//! links) on every tick and compares the resolved bytes with what it last tried; a change that does
//! not form a usable certificate/key pair is logged and the previous certificate keeps serving.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Why the serving certificate could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS certificate file {path} holds no valid PEM certificate: {detail}")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("TLS key file {path} holds no valid PEM private key: {detail}")]
    NoKey { path: PathBuf, detail: String },
    #[error("TLS certificate {cert} and key {key} are not a usable pair: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The certificate and key file paths given on the command line.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The bytes last read from the files; compared on each tick to detect rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl TlsFiles {
    async fn read(&self) -> Result<Snapshot, TlsError> {
        let cert = read_file(&self.cert).await?;
        let key = read_file(&self.key).await?;
        Ok(Snapshot { cert, key })
    }

    /// Reads both files and builds the rustls config (TLS 1.2+, ALPN h2 and http/1.1).
    pub async fn load(&self) -> Result<ServerConfig, TlsError> {
        let snap = self.read().await?;
        self.build(&snap)
    }

    fn build(&self, snap: &Snapshot) -> Result<ServerConfig, TlsError> {
        server_config(&snap.cert, &snap.key, &self.cert, &self.key)
    }
}

async fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Builds a rustls server config from PEM bytes; the paths only name the files in errors.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(cert_pem))
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
            detail: "no CERTIFICATE block found".into(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .map_err(|e| TlsError::NoKey {
            path: key_path.to_path_buf(),
            detail: e.to_string(),
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
            detail: "no PRIVATE KEY block found".into(),
        })?;
    let config_err = |source| TlsError::Config {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source,
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(config_err)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(config_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A loaded certificate plus the state needed to notice when its files change.
pub struct ReloadingTls {
    files: TlsFiles,
    config: RustlsConfig,
    last: Snapshot,
}

impl ReloadingTls {
    /// Loads the files once; failing here fails startup (there is nothing to serve with).
    pub async fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let last = files.read().await?;
        let server = files.build(&last)?;
        Ok(ReloadingTls {
            files,
            config: RustlsConfig::from_config(Arc::new(server)),
            last,
        })
    }

    /// The handle the TLS acceptor uses; reloads swap its inner config for new handshakes.
    pub fn rustls_config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Re-reads the files and swaps the certificate if their content changed.
    ///
    /// Returns `Ok(true)` when a new certificate is now served, `Ok(false)` when nothing changed
    /// (or the change was already tried), and the error for a change that is not usable; the
    /// previous certificate stays in place in that case.
    pub async fn check(&mut self) -> Result<bool, TlsError> {
        let snap = self.files.read().await?;
        if snap == self.last {
            return Ok(false);
        }
        // Remember what was tried so a broken pair is reported once, not on every tick.
        self.last = snap;
        let server = self.files.build(&self.last)?;
        self.config.reload_from_config(Arc::new(server));
        Ok(true)
    }

    /// Polls the files every `interval` until the task is aborted.
    pub fn spawn_watch(mut self, interval: Duration, metrics: Arc<Metrics>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match self.check().await {
                    Ok(true) => {
                        metrics.record_cert_reload(true);
                        tracing::info!(
                            cert = %self.files.cert.display(),
                            key = %self.files.key.display(),
                            "serving certificate reloaded"
                        );
                    }
                    Ok(false) => {}
                    // A missing file during a non-atomic update is transient: say so without
                    // counting it as a failed reload.
                    Err(err @ TlsError::Read { .. }) => {
                        tracing::warn!(error = %err, "cannot re-read serving certificate; keeping the current one");
                    }
                    Err(err) => {
                        metrics.record_cert_reload(false);
                        tracing::error!(error = %err, "new serving certificate rejected; keeping the current one");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_PEM: &[u8] = b"hello";

    #[test]
    fn garbage_certificate_names_the_file() {
        let err = server_config(
            NOT_PEM,
            NOT_PEM,
            Path::new("/x/tls.crt"),
            Path::new("/x/tls.key"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("/x/tls.crt"), "{err}");
    }

    fn issue(ca: &skjold_certs::CertificateAuthority) -> skjold_certs::IssuedCert {
        ca.issue_serving(&["localhost".into()], &[], Duration::from_secs(3600))
            .unwrap()
    }

    #[tokio::test]
    async fn reload_only_on_change_and_keeps_serving_after_a_bad_pair() {
        let ca =
            skjold_certs::CertificateAuthority::generate("t", Duration::from_secs(3600)).unwrap();
        let (a, b) = (issue(&ca), issue(&ca));
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::write(&files.cert, &a.cert_pem).unwrap();
        std::fs::write(&files.key, &a.key_pem).unwrap();
        let mut tls = ReloadingTls::load(files.clone()).await.unwrap();
        let served = tls.rustls_config().get_inner();
        assert!(
            !tls.check().await.unwrap(),
            "unchanged files are not reloaded"
        );

        // Cert of B with key of A: rejected once, then not retried until the files change again.
        std::fs::write(&files.cert, &b.cert_pem).unwrap();
        let err = tls.check().await.unwrap_err();
        assert!(matches!(err, TlsError::Config { .. }), "{err}");
        assert!(!tls.check().await.unwrap());
        assert!(Arc::ptr_eq(&served, &tls.rustls_config().get_inner()));

        std::fs::write(&files.key, &b.key_pem).unwrap();
        assert!(tls.check().await.unwrap());
        assert!(!Arc::ptr_eq(&served, &tls.rustls_config().get_inner()));

        // A missing file is a read error naming it; the current config stays.
        std::fs::remove_file(&files.key).unwrap();
        let err = tls.check().await.unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
    }

    #[test]
    fn missing_key_names_the_file() {
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let err = server_config(
            cert,
            NOT_PEM,
            Path::new("/x/tls.crt"),
            Path::new("/x/tls.key"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        assert!(err.to_string().contains("/x/tls.key"), "{err}");
    }
}
