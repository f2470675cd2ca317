//! Hostile and broken clients at the HTTP/TLS level, beyond the basic table in `http.rs`:
//! truncated TLS handshakes, slowloris headers and bodies (one and many at once), and pods of
//! extreme shape (thousands of env vars, containers, annotations; huge values). Every case must
//! get a bounded, clear answer (or a bounded close), and the server must stay healthy after it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use serde_json::{Value, json};
use skjold_webhook::server::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const JSON: &str = "application/json";

/// Short timeouts so the slow-client cases finish quickly; the production values only scale them.
fn short_settings() -> Settings {
    Settings {
        request_timeout: Duration::from_millis(800),
        handshake_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(1000),
        ..Settings::default()
    }
}

async fn short_server() -> (Pki, TestServer) {
    let pki = Pki::new();
    let srv = start(&pki, offline_cache(), short_settings()).await;
    (pki, srv)
}

/// Reads until the peer closes (or errors); returns what was read and how long it took.
/// Panics if the server keeps the connection open longer than `limit`.
async fn wait_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .expect("the server closes a stalled connection within its timeout");
    buf
}

/// The server still answers health checks and a real admission on a fresh connection.
async fn assert_healthy(srv: &TestServer, pki: &Pki) {
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem())
        .await
        .expect("new connections are accepted");
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(c.get("/readyz").await.status, StatusCode::OK);
    let r = c.post("/inject", JSON, body(&pod_review("after"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["response"]["allowed"], true);
    assert!(decoded_patch(&r.json()).is_some(), "still injecting");
}

/// A TLS 1.2/1.3 record header announcing a 512-byte ClientHello, and only part of it.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // handshake record, 512 bytes follow
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, 0x11, 0x22, 0x33, 0x44, // version and the start of the random
];

#[tokio::test]
async fn truncated_tls_handshakes_are_dropped_at_the_handshake_timeout() {
    let (pki, srv) = short_server().await;
    let cases: [(&str, &[u8]); 3] = [
        ("connect and say nothing", b""),
        ("partial ClientHello", PARTIAL_CLIENT_HELLO),
        ("one byte", &[0x16]),
    ];
    for (what, bytes) in cases {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let got = wait_closed(&mut tcp, Duration::from_secs(3)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400),
            "{what}: closed after {took:?}, before the handshake timeout"
        );
        assert!(
            !got.starts_with(b"HTTP/"),
            "{what}: never an HTTP answer on the TLS port"
        );
    }
    // Garbage that is not TLS at all is refused without waiting.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(&[0xffu8; 64]).await.unwrap();
    wait_closed(&mut tcp, Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_millis(400), "garbage");
    assert_healthy(&srv, &pki).await;
}

#[tokio::test]
async fn a_handshake_cut_off_mid_way_does_not_hurt_the_server() {
    let (pki, srv) = short_server().await;
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
        tcp.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
        drop(tcp); // RST/FIN in the middle of the handshake
    }
    assert_healthy(&srv, &pki).await;
}

#[tokio::test]
async fn slowloris_headers_are_cut_at_the_header_read_timeout() {
    let (pki, srv) = short_server().await;
    let mut tls = tls_connect(srv.addr, pki.ca.cert_pem(), &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One header byte every 100 ms: each write is "progress", the deadline must still hold.
    let mut closed_at = None;
    for i in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let byte = [b'a' + (i % 26) as u8];
        if tls.write_all(&byte).await.is_err() || tls.flush().await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 1024];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut probe)).await {
            // EOF, an error, or an error answer: the server gave up on us.
            let _ = r;
            closed_at = Some(started.elapsed());
            break;
        }
    }
    let closed_at =
        closed_at.expect("a header trickle is not allowed to hold a connection for 6 s");
    assert!(
        closed_at < Duration::from_millis(2500),
        "cut after {closed_at:?} with a 1 s header timeout"
    );
    assert_healthy(&srv, &pki).await;
}

#[tokio::test]
async fn slowloris_body_trickle_gets_408_at_the_request_timeout() {
    let (pki, srv) = short_server().await;
    let mut tls = tls_connect(srv.addr, pki.ca.cert_pem(), &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // A byte every 50 ms: steady progress that would take 80 minutes to finish.
    for _ in 0..100 {
        if tls.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), tls.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(started.elapsed() < Duration::from_millis(2000));
    assert_healthy(&srv, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_slow_connections_do_not_starve_real_requests() {
    let (pki, srv) = short_server().await;
    let ca = pki.ca.cert_pem().to_string();
    const SLOW: usize = 200;
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let addr = srv.addr;
        let ca = ca.clone();
        slow.push(tokio::spawn(async move {
            match i % 4 {
                // Silent TCP connections (no TLS).
                0 => {
                    let mut tcp = TcpStream::connect(addr).await.unwrap();
                    wait_closed(&mut tcp, Duration::from_secs(5)).await;
                }
                // Half a ClientHello.
                1 => {
                    let mut tcp = TcpStream::connect(addr).await.unwrap();
                    tcp.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
                    wait_closed(&mut tcp, Duration::from_secs(5)).await;
                }
                // Half the request headers.
                2 => {
                    let mut tls = tls_connect(addr, &ca, &[b"http/1.1"]).await.unwrap();
                    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\n")
                        .await
                        .unwrap();
                    wait_closed(&mut tls, Duration::from_secs(5)).await;
                }
                // Headers, then half the body.
                _ => {
                    let mut tls = tls_connect(addr, &ca, &[b"http/1.1"]).await.unwrap();
                    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{\"apiVersion\":")
                        .await
                        .unwrap();
                    let got = wait_closed(&mut tls, Duration::from_secs(5)).await;
                    let head = String::from_utf8_lossy(&got);
                    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
                }
            }
        }));
    }
    // While they hang on, real admissions keep flowing with normal latency.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = Conn::open(srv.addr, &ca).await.unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        let r = c
            .post("/inject", JSON, body(&pod_review(&format!("u-{i}"))))
            .await;
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, StatusCode::OK);
        assert!(decoded_patch(&r.json()).is_some());
    }
    assert!(
        worst < Duration::from_millis(500),
        "an admission took {worst:?} next to {SLOW} slow clients"
    );
    // Every slow connection is closed by the server's timeouts (the tasks assert it).
    for t in slow {
        t.await.expect("slow client task");
    }
    assert_healthy(&srv, &pki).await;
    // A fresh connection: `c` sat idle longer than the 1 s idle timeout while the tasks ended.
    let mut c = Conn::open(srv.addr, &ca).await.unwrap();
    let m = c.get("/metrics").await.text();
    assert_eq!(
        metric(&m, r#"skjold_webhook_requests_total{result="timeout"}"#),
        (SLOW / 4) as f64,
        "{m}"
    );
}

/// A pod review whose first container gets `f` applied.
fn review_with(uid: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut pod = typical_pod();
    f(&mut pod);
    review(uid, "Pod", "pods", "CREATE", pod)
}

#[tokio::test]
async fn extreme_pod_shapes_get_bounded_answers() {
    let pki = Pki::new();
    let srv = start(&pki, offline_cache(), Settings::default()).await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();

    // 5,000 env vars in the app container: injected, quickly; the env is not copied into the patch.
    let env: Vec<Value> = (0..5000)
        .map(|i| json!({"name": format!("VAR_{i}"), "value": "x".repeat(20)}))
        .collect();
    let v = review_with("env", |p| p["spec"]["containers"][0]["env"] = json!(env));
    let t = Instant::now();
    let r = c.post("/inject", JSON, body(&v)).await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["response"]["allowed"], true);
    let patch = decoded_patch(&r.json()).expect("injected");
    let patch_len = serde_json::to_vec(&patch).unwrap().len();
    assert!(patch_len < 64 * 1024, "patch of {patch_len} bytes");
    assert!(
        took < Duration::from_secs(1),
        "5,000 env vars took {took:?}"
    );

    // 2,000 containers: refused with the limit named, not processed.
    let containers: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox"}))
        .collect();
    let v = review_with("many", |p| {
        p["spec"]["containers"] = json!(containers.clone())
    });
    let r = c.post("/inject", JSON, body(&v)).await;
    assert_eq!(r.status, StatusCode::OK);
    let resp = &r.json()["response"];
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 400);
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("2000") && message.contains("100"),
        "{message}"
    );

    // The same pod opted out: allowed untouched (its size is not our business).
    let v = review_with("many-off", |p| {
        p["spec"]["containers"] = json!(containers);
        p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    });
    let r = c.post("/inject", JSON, body(&v)).await;
    assert_eq!(r.json()["response"]["allowed"], true);
    assert!(decoded_patch(&r.json()).is_none());

    // 20,000 unknown sidecar.istio.io annotations: injected, with a bounded warning list.
    let v = review_with("ann", |p| {
        let ann = p["metadata"]["annotations"].as_object_mut().unwrap();
        for i in 0..20_000 {
            ann.insert(format!("sidecar.istio.io/typo{i}"), json!("x"));
        }
    });
    let r = c.post("/inject", JSON, body(&v)).await;
    let resp = &r.json()["response"];
    assert_eq!(resp["allowed"], true);
    let warnings = resp["warnings"].as_array().expect("warnings");
    assert!(warnings.len() <= 12, "{} warnings", warnings.len());
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("not listed")),
        "{warnings:?}"
    );

    // A 1 MiB honoured annotation value: refused, and the message does not echo it.
    let v = review_with("huge", |p| {
        p["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"] = json!("9".repeat(1 << 20))
    });
    let r = c.post("/inject", JSON, body(&v)).await;
    let resp = &r.json()["response"];
    assert_eq!(resp["allowed"], false);
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(message.contains("proxyCPU"), "{message}");
    assert!(message.len() < 1024, "message of {} bytes", message.len());
    assert!(r.body.len() < 4096, "response of {} bytes", r.body.len());

    // A 1 MiB value of an annotation we do not read: injected, the value is not echoed.
    let v = review_with("huge-other", |p| {
        p["metadata"]["annotations"]["example.com/blob"] = json!("z".repeat(1 << 20))
    });
    let r = c.post("/inject", JSON, body(&v)).await;
    assert_eq!(r.json()["response"]["allowed"], true);
    assert!(
        r.body.len() < 64 * 1024,
        "response of {} bytes",
        r.body.len()
    );

    assert_healthy(&srv, &pki).await;
}

#[tokio::test]
async fn wrong_methods_and_odd_requests_get_clear_statuses() {
    let (pki, srv) = short_server().await;
    let mut c = Conn::open(srv.addr, pki.ca.cert_pem()).await.unwrap();
    // GET on the admission path.
    let r = c.get("/inject").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // No content type at all.
    let req = hyper::Request::post("/inject")
        .header("host", "localhost")
        .body(http_body_util::Full::new(body(&pod_review("u"))))
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Empty body, JSON `null`, a JSON array, a review without `request`.
    for (what, b) in [
        ("empty", String::new()),
        ("null", "null".to_string()),
        ("array", "[]".to_string()),
        (
            "no request",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_string(),
        ),
    ] {
        let r = c.post("/inject", JSON, b).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text());
        assert!(!r.text().is_empty(), "{what}: a message");
    }
    // Invalid UTF-8 in a string.
    let mut bad = serde_json::to_vec(&pod_review("u")).unwrap();
    let at = bad.windows(3).position(|w| w == b"web").unwrap();
    bad[at] = 0xff;
    let r = c.post("/inject", JSON, bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // Revision route with a path-hostile name: a clear refusal in the review, not a crash.
    let r = c
        .post("/inject/rev/..%2F..%2Fetc", JSON, body(&pod_review("u")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["response"]["allowed"], false);
    assert_healthy(&srv, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delay_keeps_serving_and_closes_connections_after_their_next_response() {
    let pki = Pki::new();
    let settings = Settings {
        shutdown_delay: Duration::from_millis(700),
        shutdown_grace: Duration::from_secs(2),
        ..Settings::default()
    };
    let srv = start(&pki, offline_cache(), settings).await;
    let ca = pki.ca.cert_pem();
    // A keep-alive connection that is idle when the shutdown starts (the racy case).
    let mut idle = Conn::open(srv.addr, ca).await.unwrap();
    assert_eq!(idle.get("/healthz").await.status, StatusCode::OK);
    srv.running.graceful_shutdown();

    // Its next request is still answered, and the answer ends the connection.
    let r = idle.post("/inject", JSON, body(&pod_review("drain"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(decoded_patch(&r.json()).is_some());
    assert_eq!(
        r.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    // New connections are still accepted during the delay; readiness fails.
    let mut fresh = Conn::open(srv.addr, ca)
        .await
        .expect("accepting during the delay");
    let r = fresh.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    // After the delay the listener stops.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        Conn::open(srv.addr, ca).await.is_err(),
        "listener still accepting after the shutdown delay"
    );
}

#[tokio::test]
async fn without_a_delay_shutdown_stops_accepting_at_once() {
    let (pki, srv) = short_server().await;
    srv.running.graceful_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(Conn::open(srv.addr, pki.ca.cert_pem()).await.is_err());
}

/// Beyond the connection cap a new client waits for a slot (up to the handshake timeout), then is
/// closed before any TLS; admissions on the open connections go on; slots free up as the stalled
/// clients are cut at the first-request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_then_are_closed() {
    let pki = Pki::new();
    let settings = Settings {
        max_connections: 4,
        connection_wait: Duration::from_millis(500),
        first_request_timeout: Duration::from_millis(2000),
        ..Settings::default()
    };
    let srv = start(&pki, offline_cache(), settings).await;
    let ca = pki.ca.cert_pem().to_string();
    let mut real = Conn::open(srv.addr, &ca).await.unwrap();
    assert_eq!(real.get("/healthz").await.status, StatusCode::OK);
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut tls = tls_connect(srv.addr, &ca, &[b"http/1.1"]).await.unwrap();
        tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        stalled.push(tls);
    }
    // The fifth: no slot, so no handshake; closed after the 0.5 s wait.
    let t = Instant::now();
    let fifth = tls_connect(srv.addr, &ca, &[b"http/1.1"]).await;
    assert!(
        fifth.is_err(),
        "a connection beyond the cap must not be served"
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "closed after {waited:?} (wait 500 ms)"
    );
    // The open connection keeps admitting.
    let r = real
        .post("/inject", JSON, body(&pod_review("capped")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(decoded_patch(&r.json()).is_some());
    // The stalled ones are cut at their first-request deadline; their slots serve new clients.
    for mut s in stalled {
        wait_closed(&mut s, Duration::from_secs(3)).await;
    }
    let mut again = Conn::open(srv.addr, &ca)
        .await
        .expect("a freed slot serves a new client");
    let m = again.get("/metrics").await.text();
    assert!(
        metric(&m, r#"skjold_webhook_connections_total{result="refused"}"#) >= 1.0,
        "{m}"
    );
}

/// The first-request deadline cuts a client that trickles its first request's headers, while a
/// kept-alive connection that already sent a request may idle past it (only the idle timeout,
/// long on purpose, applies to it).
#[tokio::test]
async fn the_first_request_deadline_cuts_trickles_but_not_kept_alive_connections() {
    let pki = Pki::new();
    let settings = Settings {
        first_request_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_secs(30),
        ..Settings::default()
    };
    let srv = start(&pki, offline_cache(), settings).await;
    let ca = pki.ca.cert_pem().to_string();
    let mut kept = Conn::open(srv.addr, &ca).await.unwrap();
    assert_eq!(kept.get("/healthz").await.status, StatusCode::OK);
    let mut tls = tls_connect(srv.addr, &ca, &[b"http/1.1"]).await.unwrap();
    tls.write_all(b"POST /inject HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut cut = None;
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let byte = [b'a' + (i % 26) as u8];
        if tls.write_all(&byte).await.is_err() || tls.flush().await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 64];
        if tokio::time::timeout(Duration::from_millis(1), tls.read(&mut probe))
            .await
            .is_ok()
        {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("a header trickle must be cut at the first-request deadline");
    assert!(
        cut < Duration::from_millis(2000),
        "cut after {cut:?} (deadline 800 ms)"
    );
    // The kept-alive connection idled 1+ s, past the deadline, and still admits.
    let r = kept.post("/inject", JSON, body(&pod_review("kept"))).await;
    assert_eq!(r.status, StatusCode::OK);
}
