//! Shared helpers of the HTTP-level tests: a PKI on disk, an in-process server on loopback and a
//! TLS client (HTTP/1.1 keep-alive or HTTP/2).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use skjold_certs::{CertificateAuthority, IssuedCert};
use skjold_webhook::cache::Cache;
use skjold_webhook::metrics::Metrics;
use skjold_webhook::server::{self, AppState, RunningServer, Settings};
use skjold_webhook::tls::{ReloadingTls, TlsFiles};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const DAY: Duration = Duration::from_secs(86_400);

/// A CA and a serving certificate for `localhost`/127.0.0.1 written to a temp dir.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub serving: IssuedCert,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = CertificateAuthority::generate("skjold-test-ca", DAY).unwrap();
        let serving = issue(&ca);
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        std::fs::write(&cert_path, &serving.cert_pem).unwrap();
        std::fs::write(&key_path, &serving.key_pem).unwrap();
        Pki {
            ca,
            dir,
            cert_path,
            key_path,
            serving,
        }
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
        }
    }
}

pub fn issue(ca: &CertificateAuthority) -> IssuedCert {
    ca.issue_serving(
        &["localhost".to_string()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        DAY,
    )
    .unwrap()
}

/// An in-process webhook on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub running: RunningServer,
    pub state: Arc<AppState>,
    pub reloader: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.reloader.abort();
        self.running.graceful_shutdown();
    }
}

pub async fn start(pki: &Pki, cache: Cache, settings: Settings) -> TestServer {
    start_with_files(pki.files(), cache, settings).await
}

pub async fn start_with_files(files: TlsFiles, cache: Cache, settings: Settings) -> TestServer {
    let metrics = Arc::new(Metrics::new());
    let tls = ReloadingTls::load(files).await.unwrap();
    let rustls = tls.rustls_config();
    let reloader = tls.spawn_watch(Duration::from_millis(50), metrics.clone());
    let state = AppState::new(Arc::new(cache), metrics, settings);
    let running = server::start("127.0.0.1:0".parse().unwrap(), rustls, state.clone())
        .await
        .unwrap();
    TestServer {
        addr: running.addr,
        running,
        state,
        reloader,
    }
}

pub fn offline_cache() -> Cache {
    Cache::new(None, "istio-system", false)
}

/// A TLS client trusting the given CA bundle.
pub fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tls_connector(ca_pem, alpn).connect(name, tcp).await
}

/// The DER of the certificate the server presents to a new connection.
pub async fn served_cert(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let stream = tls_connect(addr, ca_pem, &[b"http/1.1"]).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

pub fn pem_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// An HTTP/1.1 keep-alive connection over TLS.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr, ca_pem: &str) -> std::io::Result<Conn> {
        let tls = tls_connect(addr, ca_pem, &[b"http/1.1"]).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn post(&mut self, path: &str, content_type: &str, body: impl Into<Bytes>) -> Reply {
        self.send(post_request(path, content_type, body))
            .await
            .unwrap()
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await.unwrap()
    }
}

pub fn post_request(
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "localhost")
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

/// An HTTP/2 connection over TLS (ALPN h2 only).
pub async fn h2_send(addr: SocketAddr, ca_pem: &str, req: Request<Full<Bytes>>) -> Reply {
    let tls = tls_connect(addr, ca_pem, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A typical Deployment pod as the API server sends it (opted in by label).
pub fn typical_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c6b5-",
            "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5", "sidecar.istio.io/inject": "true"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-21T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5",
                                 "uid": "6b0c3f47-1f8d-4f0e-9a55-0d5b7b2f4a11", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]
        },
        "spec": {
            "serviceAccountName": "web",
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}},
                "volumeMounts": [{"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log",
                "imagePullPolicy": "IfNotPresent"
            }],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "terminationGracePeriodSeconds": 30
        }
    })
}

/// An AdmissionReview v1 around `object`.
pub fn review(uid: &str, kind: &str, resource: &str, operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": resource},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

pub fn pod_review(uid: &str) -> Value {
    review(uid, "Pod", "pods", "CREATE", typical_pod())
}

pub fn body(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap())
}

/// The JSON patch of an AdmissionReview response, decoded like the API server does (base64).
pub fn decoded_patch(reply: &Value) -> Option<json_patch::Patch> {
    use base64::Engine;
    let b64 = reply["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// Reads a metric's value from the text exposition.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Writes cert and key the way a Kubernetes Secret volume does: `..data` symlink swap.
pub fn secret_volume_write(dir: &Path, generation: u32, cert_pem: &str, key_pem: &str) {
    let ts = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir(&ts).unwrap();
    std::fs::write(ts.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(ts.join("tls.key"), key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..gen_{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    if generation > 0 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..gen_{}", generation - 1)));
    }
}
