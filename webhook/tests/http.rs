//! HTTP-level tests: the real server on loopback, AdmissionReviews over real TLS.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use serde_json::json;
use skjold_webhook::cache::Cache;
use skjold_webhook::config::PreparedConfig;
use skjold_webhook::server::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JSON: &str = "application/json";

async fn server() -> (Pki, TestServer) {
    let pki = Pki::new();
    let srv = start(&pki, offline_cache(), Settings::default()).await;
    (pki, srv)
}

#[tokio::test]
async fn health_ready_and_metrics_over_tls() {
    let (pki, srv) = server().await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    let r = c.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = c.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().contains("skjold_webhook_request_duration_seconds"),
        "{}",
        r.text()
    );
    let r = c.get("/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn non_pod_and_non_create_requests_are_allowed_unchanged() {
    let (pki, srv) = server().await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    let cases = [
        review(
            "u-deploy",
            "Deployment",
            "deployments",
            "CREATE",
            json!({"kind": "Deployment"}),
        ),
        review("u-delete", "Pod", "pods", "DELETE", json!(null)),
        review(
            "u-connect",
            "Pod",
            "pods",
            "CONNECT",
            json!({"kind": "PodExecOptions"}),
        ),
        review("u-update", "Pod", "pods", "UPDATE", typical_pod()),
    ];
    for case in cases {
        let uid = case["request"]["uid"].as_str().unwrap().to_string();
        let r = c.post("/inject", JSON, body(&case)).await;
        assert_eq!(r.status, StatusCode::OK, "{uid}: {}", r.text());
        let v = r.json();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], uid.as_str());
        assert_eq!(v["response"]["allowed"], true, "{uid}");
        assert!(v["response"].get("patch").is_none(), "{uid}: {v}");
    }
}

#[tokio::test]
async fn typical_pod_gets_a_sidecar_patch() {
    let (pki, srv) = server().await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    let r = c.post("/inject", JSON, body(&pod_review("u-pod"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["response"]["uid"], "u-pod");
    assert_eq!(v["response"]["allowed"], true, "{v}");
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let patch = decoded_patch(&v).expect("a patch");
    let text = serde_json::to_string(&patch).unwrap();
    assert!(text.contains("istio-proxy"), "{text}");
    assert!(
        text.contains("istio-init")
            || text.contains("istio-validation")
            || text.contains("restartPolicy"),
        "{text}"
    );

    // The same request over HTTP/2 gives the same answer.
    let r2 = h2_send(
        srv.addr,
        pki.ca.cert_pem(),
        post_request("/inject", JSON, body(&pod_review("u-pod"))),
    )
    .await;
    assert_eq!(r2.status, StatusCode::OK);
    assert_eq!(r2.json(), v);

    let m = c.get("/metrics").await.text();
    assert_eq!(
        metric(&m, r#"skjold_webhook_requests_total{result="injected"}"#),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn invalid_annotation_refuses_the_pod_with_a_message() {
    let (pki, srv) = server().await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    let mut pod = typical_pod();
    pod["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"] = json!("lots");
    let r = c
        .post(
            "/inject",
            JSON,
            body(&review("u-bad", "Pod", "pods", "CREATE", pod)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["response"]["uid"], "u-bad");
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let status = &v["response"]["status"];
    assert_eq!(status["code"], 400, "{v}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("lots") && message.contains("proxyCPU"),
        "{message}"
    );
    let m = c.get("/metrics").await.text();
    assert_eq!(
        metric(&m, r#"skjold_webhook_requests_total{result="denied"}"#),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn unknown_revision_names_the_expected_config_map() {
    let (pki, srv) = server().await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    let r = c
        .post("/inject/rev/canary", JSON, body(&pod_review("u-rev")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(
        v["response"]["status"]["message"],
        r#"no injector config for revision "canary" (ConfigMap istio-system/skjold-injector-canary)"#
    );
    let m = c.get("/metrics").await.text();
    assert_eq!(
        metric(
            &m,
            r#"skjold_webhook_denials_total{reason="unknown-revision"}"#
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn revision_route_uses_that_revisions_config() {
    let pki = Pki::new();
    let file =
        PreparedConfig::from_yaml("revision: blue\nproxy: {image: example.com/blue/proxyv2:9.9}")
            .unwrap();
    let srv = start(
        &pki,
        Cache::new(Some(file), "istio-system", false),
        Settings::default(),
    )
    .await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    let r = c
        .post("/inject/rev/blue", JSON, body(&pod_review("u-blue")))
        .await;
    let v = r.json();
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let text = serde_json::to_string(&decoded_patch(&v).expect("a patch")).unwrap();
    assert!(text.contains("example.com/blue/proxyv2:9.9"), "{text}");
}

#[tokio::test]
async fn bad_input_table() {
    let pki = Pki::new();
    let settings = Settings {
        request_timeout: Duration::from_millis(600),
        ..Settings::default()
    };
    let srv = start(&pki, offline_cache(), settings).await;
    let ca = pki.ca.cert_pem();

    let mut c = Conn::open(srv.addr, ca).await.unwrap();
    // Wrong content type.
    let r = c
        .post("/inject", "application/yaml", body(&pod_review("u")))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
    assert!(r.text().contains("application/yaml"), "{}", r.text());
    // Malformed JSON.
    let r = c.post("/inject", JSON, "{\"apiVersion\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("not a valid AdmissionReview"),
        "{}",
        r.text()
    );
    // Unknown AdmissionReview apiVersion.
    let mut v = pod_review("u");
    v["apiVersion"] = json!("admission.k8s.io/v2");
    let r = c.post("/inject", JSON, body(&v)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("admission.k8s.io/v2"), "{}", r.text());
    // Deeply nested JSON: an error, no stack overflow, the server keeps serving.
    let mut deep = String::from(
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"#,
    );
    deep.push_str(&"[".repeat(500_000));
    let r = c.post("/inject", JSON, deep).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // Pod object that is not a pod: refused in the AdmissionResponse.
    let r = c
        .post(
            "/inject",
            JSON,
            body(&review(
                "u-obj",
                "Pod",
                "pods",
                "CREATE",
                json!({"spec": 5}),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["response"]["allowed"], false);
    assert_eq!(r.json()["response"]["status"]["code"], 400);

    // 10 MiB body: refused from Content-Length without reading it.
    let mut c2 = Conn::open(srv.addr, ca).await.unwrap();
    let r = c2.post("/inject", JSON, vec![b' '; 10 * 1024 * 1024]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("limit"), "{}", r.text());

    // 10 MiB chunked body (no Content-Length): refused once the limit is crossed.
    let big = futures::stream::iter((0..160).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(hyper::body::Bytes::from(
            vec![b' '; 64 * 1024],
        )))
    }));
    let tls = tls_connect(srv.addr, ca, &[b"http/1.1"]).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/inject")
        .header("host", "localhost")
        .header("content-type", JSON)
        .body(http_body_util::StreamBody::new(big))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Slow body: the server answers 408 at the request timeout instead of waiting forever.
    let mut tls = tls_connect(srv.addr, ca, &[b"http/1.1"]).await.unwrap();
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\"")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("server answered a slow body in time")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Still serving after all that.
    let mut c3 = Conn::open(srv.addr, ca).await.unwrap();
    let r = c3
        .post(
            "/inject",
            JSON,
            body(&review("u-ok", "Pod", "pods", "DELETE", json!(null))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["response"]["allowed"], true);
    let m = c3.get("/metrics").await.text();
    assert_eq!(
        metric(&m, r#"skjold_webhook_requests_total{result="bad-request"}"#),
        6.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"skjold_webhook_requests_total{result="timeout"}"#),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_fast() {
    let (pki, srv) = server().await;
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(b"POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf))
        .await
        .expect("plain HTTP must not hang");
    // Either a TLS alert then close, or a reset: never an HTTP answer.
    if read.is_ok() {
        assert!(
            !buf.starts_with(b"HTTP/"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    }
    // The server is unaffected.
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn v1beta1_reviews_are_answered_in_kind() {
    let (pki, srv) = server().await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    let mut v = review("u-b", "Pod", "pods", "DELETE", json!(null));
    v["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let r = c.post("/inject", JSON, body(&v)).await;
    assert_eq!(r.json()["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(r.json()["response"]["uid"], "u-b");
}

/// Rotating the files (plain rewrite, then a Secret-volume `..data` swap) switches the served
/// certificate for new connections without restart and without a failed request; a broken
/// update keeps the previous certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_without_restart_or_failed_requests() {
    let ca = skjold_certs::CertificateAuthority::generate("rotation-ca", DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = issue(&ca);
    secret_volume_write(dir.path(), 0, &first.cert_pem, &first.key_pem);
    let files = skjold_webhook::tls::TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let srv = start_with_files(files, offline_cache(), Settings::default()).await;
    let addr = srv.addr;
    let ca_pem = ca.cert_pem().to_string();
    assert_eq!(served_cert(addr, &ca_pem).await, pem_der(&first.cert_pem));

    // Background load: fresh connections and one keep-alive connection, every request must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let ca_pem = ca_pem.clone();
        tokio::spawn(async move {
            let mut keep = Conn::open(addr, &ca_pem).await.unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = keep
                    .post(
                        "/inject",
                        JSON,
                        body(&review("k", "Pod", "pods", "DELETE", json!(null))),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK);
                let mut fresh = Conn::open(addr, &ca_pem)
                    .await
                    .expect("new connection during rotation");
                assert_eq!(fresh.get("/healthz").await.status, StatusCode::OK);
                n += 1;
            }
            n
        })
    };

    // Secret-volume style swap.
    let second = issue(&ca);
    secret_volume_write(dir.path(), 1, &second.cert_pem, &second.key_pem);
    wait_for_cert(addr, &ca_pem, &pem_der(&second.cert_pem)).await;

    // A broken update (key does not match) is rejected; the second certificate keeps serving.
    let third = issue(&ca);
    secret_volume_write(dir.path(), 2, &third.cert_pem, &second.key_pem);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(served_cert(addr, &ca_pem).await, pem_der(&second.cert_pem));
    secret_volume_write(dir.path(), 3, "garbage", "garbage");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(served_cert(addr, &ca_pem).await, pem_der(&second.cert_pem));

    // Fixing it is picked up.
    secret_volume_write(dir.path(), 4, &third.cert_pem, &third.key_pem);
    wait_for_cert(addr, &ca_pem, &pem_der(&third.cert_pem)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = load.await.expect("no request failed during rotation");
    assert!(rounds > 5, "background load ran {rounds} rounds");
    let m = srv.state.metrics.encode().unwrap();
    assert_eq!(
        metric(
            &m,
            r#"skjold_webhook_certificate_reloads_total{result="success"}"#
        ),
        2.0,
        "{m}"
    );
    // A reload tick can also catch a half-swapped pair; that is one more rejected attempt.
    assert!(
        metric(
            &m,
            r#"skjold_webhook_certificate_reloads_total{result="error"}"#
        ) >= 2.0,
        "{m}"
    );
}

async fn wait_for_cert(addr: std::net::SocketAddr, ca_pem: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if served_cert(addr, ca_pem).await == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "certificate not reloaded within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn plain_file_rewrite_is_reloaded() {
    let pki = Pki::new();
    let srv = start(&pki, offline_cache(), Settings::default()).await;
    let ca_pem = pki.ca.cert_pem().to_string();
    let next = issue(&pki.ca);
    // Key first, then cert: the intermediate mismatched pair must not be served.
    std::fs::write(&pki.key_path, &next.key_pem).unwrap();
    std::fs::write(&pki.cert_path, &next.cert_pem).unwrap();
    wait_for_cert(srv.addr, &ca_pem, &pem_der(&next.cert_pem)).await;
}
