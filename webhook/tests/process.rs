//! Tests of the `skjold-webhook` binary itself: flags, startup errors, SIGTERM draining.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_skjold-webhook");

/// Kills the child if a test fails before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(pki: &Pki, port: u16, extra: &[&str]) -> ChildGuard {
    let child = Command::new(BIN)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert-file")
        .arg(&pki.cert_path)
        .arg("--tls-key-file")
        .arg(&pki.key_path)
        .args(["--kubernetes", "off"])
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

async fn wait_ready(addr: std::net::SocketAddr, ca: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Conn::open(addr, ca).await
            && let Ok(r) = c.send(get("/readyz")).await
            && r.status == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "webhook not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn get(path: &str) -> hyper::Request<http_body_util::Full<hyper::body::Bytes>> {
    hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .unwrap()
}

fn wait_exit(child: &mut ChildGuard, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let pki = Pki::new();
    let port = free_port();
    let mut child = spawn(&pki, port, &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ca = pki.ca.cert_pem();
    wait_ready(addr, ca).await;

    // A request whose body is only half sent when SIGTERM arrives.
    let body = serde_json::to_vec(&pod_review("u-drain")).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut tls = tls_connect(addr, ca, &[b"http/1.1"]).await.unwrap();
    let head = format!(
        "POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are no longer accepted...
    assert!(
        Conn::open(addr, ca).await.is_err(),
        "listener still accepting after SIGTERM"
    );
    // ...but the in-flight request completes.
    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut reply))
        .await
        .expect("in-flight request answered")
        .ok();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"uid\":\"u-drain\""), "{text}");
    assert!(text.contains("\"allowed\":true"), "{text}");

    let status = tokio::task::spawn_blocking(move || {
        let s = wait_exit(&mut child, Duration::from_secs(10));
        drop(child);
        s
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_injections_with_a_config_file() {
    let pki = Pki::new();
    let config = pki.dir.path().join("injector.yaml");
    std::fs::write(&config, "proxy:\n  image: registry.example/proxyv2:7.7\n").unwrap();
    let port = free_port();
    let _child = spawn(&pki, port, &["--config", config.to_str().unwrap()]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(addr, pki.ca.cert_pem()).await;
    let mut c = Conn::open(addr, pki.ca.cert_pem()).await.unwrap();
    let r = c
        .post("/inject", "application/json", body(&pod_review("u-file")))
        .await;
    let v = r.json();
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let patch = serde_json::to_string(&decoded_patch(&v).expect("a patch")).unwrap();
    assert!(patch.contains("registry.example/proxyv2:7.7"), "{patch}");
}

#[test]
fn startup_errors_name_the_bad_input() {
    let pki = Pki::new();
    // A key file that is not a key.
    std::fs::write(&pki.key_path, "not a key").unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--kubernetes", "off"])
        .arg("--tls-cert-file")
        .arg(&pki.cert_path)
        .arg("--tls-key-file")
        .arg(&pki.key_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(pki.key_path.to_str().unwrap()), "{err}");

    // An invalid --config.
    let pki = Pki::new();
    let config = pki.dir.path().join("bad.yaml");
    std::fs::write(&config, "policy: sometimes\n").unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--kubernetes", "off"])
        .arg("--tls-cert-file")
        .arg(&pki.cert_path)
        .arg("--tls-key-file")
        .arg(&pki.key_path)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("sometimes"),
        "{err}"
    );
}
