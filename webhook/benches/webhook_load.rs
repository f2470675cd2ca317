//! Load generator for the webhook over HTTPS keep-alive: latency (p50/p99/p999), throughput and
//! the server's peak RSS.
//!
//! `cargo bench -p skjold-webhook --bench webhook_load` starts the release `skjold-webhook` binary
//! itself (generated certificate, `--kubernetes off`) and runs:
//! - fixed rate: `--rate` req/s for `--fixed-secs` over a pool of connections; a request that is
//!   late because the server was slow is timed from its scheduled send time (no coordinated
//!   omission), one on schedule from the moment it is sent;
//! - closed loop: one keep-alive connection per worker at each `--concurrency`, for `--secs`.
//!
//! `--url https://HOST:PORT --ca-file CA.pem` targets an already running webhook instead.
//! Every request is a typical Deployment pod CREATE that gets injected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod support;
use support::{connector, fmt_us, typical_review};

#[derive(Debug, Parser)]
#[command(about = "HTTPS keep-alive load generator for skjold-webhook")]
struct Args {
    /// Target an already running webhook (https://HOST:PORT) instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// CA bundle to trust for --url.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// TLS server name for --url (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Request path.
    #[arg(long, default_value = "/inject")]
    path: String,
    /// Closed-loop concurrencies (connections), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per closed-loop step.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Fixed-rate step: requests per second (0 skips it).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the fixed-rate step.
    #[arg(long, default_value_t = 10)]
    fixed_secs: u64,
    /// Connections used by the fixed-rate step.
    #[arg(long, default_value_t = 16)]
    fixed_connections: usize,
    /// Client runtime worker threads (the server and the client share the machine).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Stalled TLS clients (half a request header, then silence) opened while 8 connections keep
    /// admitting (0 skips the step).
    #[arg(long, default_value_t = 10_000)]
    stalled: usize,
    /// Only time the in-process phases (decode, inject, encode) for this many iterations.
    #[arg(long)]
    phases: Option<u32>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

struct Target {
    addr: SocketAddr,
    connector: TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    path: String,
    body: Bytes,
}

/// The webhook process started by the bench, stopped on drop.
struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let body = Bytes::from(serde_json::to_vec(&typical_review())?);
    if let Some(n) = args.phases {
        return phases(&body, n.max(1));
    }
    let (target, spawned) = match &args.url {
        Some(url) => (external_target(&args, url, body.clone())?, None),
        None => {
            let (t, s) = spawn_webhook(&args, body.clone()).await?;
            (t, Some(s))
        }
    };
    let target = Arc::new(target);
    let pid = spawned.as_ref().map(|s| s.child.id());

    // Check the answer once: a typical pod must be injected.
    let mut conn = connect(&target).await?;
    let reply = send(&mut conn, &target).await?;
    let v: serde_json::Value = serde_json::from_slice(&reply)?;
    if v["response"]["allowed"] != true || v["response"]["patch"].is_null() {
        bail!("unexpected webhook answer: {v}");
    }
    println!(
        "skjold-webhook load test: POST {} with a {}-byte AdmissionReview (typical pod, injected), HTTPS keep-alive, HTTP/1.1",
        target.path,
        body.len()
    );
    println!(
        "machine: {} CPUs (server and load generator share them)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm-up.
    closed_loop(&target, 8, Duration::from_secs(1)).await?;

    if args.rate > 0 {
        let cpu0 = pid.and_then(cpu_seconds);
        let r = fixed_rate(
            &target,
            args.rate,
            Duration::from_secs(args.fixed_secs),
            args.fixed_connections,
        )
        .await?;
        let cpu = cpu0.zip(pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
        println!();
        println!(
            "fixed rate {} req/s for {} s over {} connections (late requests timed from their due time):",
            args.rate, args.fixed_secs, args.fixed_connections
        );
        println!(
            "  sent {}  errors {}  achieved {:.0} req/s  p50 {}  p99 {}  p999 {}  max {}{}",
            r.latencies.len() + r.errors,
            r.errors,
            r.throughput(),
            fmt_us(r.percentile(50.0)),
            fmt_us(r.percentile(99.0)),
            fmt_us(r.percentile(99.9)),
            fmt_us(r.percentile(100.0)),
            cpu.map(|c| format!(
                "  server CPU {:.0} µs/req",
                c * 1e6 / r.latencies.len().max(1) as f64
            ))
            .unwrap_or_default()
        );
    }

    println!();
    println!("closed loop, {} s per step:", args.secs);
    println!(
        "  {:>5} {:>10} {:>9} {:>9} {:>9} {:>7} {:>14}",
        "conns", "req/s", "p50", "p99", "p999", "errors", "server CPU/req"
    );
    for &c in &args.concurrency {
        let cpu0 = pid.and_then(cpu_seconds);
        let r = closed_loop(&target, c, Duration::from_secs(args.secs)).await?;
        let cpu = cpu0.zip(pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
        println!(
            "  {:>5} {:>10.0} {:>9} {:>9} {:>9} {:>7} {:>14}",
            c,
            r.throughput(),
            fmt_us(r.percentile(50.0)),
            fmt_us(r.percentile(99.0)),
            fmt_us(r.percentile(99.9)),
            r.errors,
            cpu.map(|c| format!("{:.0} µs", c * 1e6 / r.latencies.len().max(1) as f64))
                .unwrap_or_else(|| "-".into())
        );
    }

    if let Some(pid) = pid {
        let support::Memory {
            rss_kib: rss,
            hwm_kib: hwm,
        } = support::memory(pid).unwrap_or(support::Memory {
            rss_kib: 0,
            hwm_kib: 0,
        });
        println!();
        println!(
            "server memory: peak RSS (VmHWM) {:.1} MiB, current RSS {:.1} MiB",
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
    if args.stalled > 0 {
        stalled_clients(&target, pid, args.stalled).await?;
    }
    drop(spawned);
    Ok(())
}

/// `n` clients that connect, send half a request header and stall, while 8 kept-alive
/// connections keep admitting: the server's peak RSS during it, the admissions' latency, and
/// what became of the stalled clients (served then cut at the first-request deadline, or kept
/// waiting beyond the connection cap and closed before any TLS).
async fn stalled_clients(target: &Arc<Target>, pid: Option<u32>, n: usize) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Peak RSS of this step only (resetting VmHWM needs Linux >= 4.0 and our own process).
    if let Some(pid) = pid {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
    let base = pid.and_then(support::memory).map_or(0, |m| m.rss_kib);
    let secs = 12;
    let admissions = {
        let target = target.clone();
        tokio::spawn(async move { closed_loop(&target, 8, Duration::from_secs(secs)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let unconnected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (target, served, refused, unconnected) = (
            target.clone(),
            served.clone(),
            refused.clone(),
            unconnected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(tcp) = TcpStream::connect(target.addr).await else {
                unconnected.fetch_add(1, Ordering::Relaxed);
                return;
            };
            match target
                .connector
                .connect(target.server_name.clone(), tcp)
                .await
            {
                Ok(mut tls) => {
                    served.fetch_add(1, Ordering::Relaxed);
                    let _ = tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\n").await;
                    let mut buf = [0u8; 256];
                    while matches!(tls.read(&mut buf).await, Ok(k) if k > 0) {}
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(secs - 1);
    while Instant::now() < until {
        if let Some(m) = pid.and_then(support::memory) {
            peak = peak.max(m.hwm_kib);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = admissions.await??;
    for t in &tasks {
        t.abort();
    }
    println!();
    println!(
        "{n} stalled TLS clients (half a request header, then silence) next to 8 connections admitting for {secs} s:"
    );
    println!(
        "  admissions: {:.0} req/s  p50 {}  p99 {}  max {}  errors {}",
        r.throughput(),
        fmt_us(r.percentile(50.0)),
        fmt_us(r.percentile(99.0)),
        fmt_us(r.percentile(100.0)),
        r.errors
    );
    println!(
        "  stalled clients: {} got a slot (cut at the first-request deadline), {} closed before TLS beyond the connection cap, {} could not connect",
        served.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        unconnected.load(Ordering::Relaxed)
    );
    println!(
        "  server peak RSS during the step {:.1} MiB (from {:.1} MiB; goal < 64 MiB)",
        peak as f64 / 1024.0,
        base as f64 / 1024.0
    );
    Ok(())
}

fn external_target(args: &Args, url: &str, body: Bytes) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("https://")
        .context("--url must start with https://")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to nothing"))?;
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .trim_matches(['[', ']']);
    let ca_file = args.ca_file.as_ref().context("--url needs --ca-file")?;
    let ca = std::fs::read_to_string(ca_file)
        .with_context(|| format!("cannot read {}", ca_file.display()))?;
    let name = args.server_name.clone().unwrap_or_else(|| host.to_string());
    Ok(Target {
        addr,
        connector: connector(&ca)?,
        server_name: rustls::pki_types::ServerName::try_from(name)?,
        path: args.path.clone(),
        body,
    })
}

async fn spawn_webhook(args: &Args, body: Bytes) -> anyhow::Result<(Target, Spawned)> {
    let ca = skjold_certs::CertificateAuthority::generate(
        "skjold-bench-ca",
        Duration::from_secs(86_400),
    )?;
    let serving = ca.issue_serving(
        &["localhost".to_string()],
        &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        Duration::from_secs(86_400),
    )?;
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &serving.cert_pem)?;
    std::fs::write(&key, &serving.key_pem)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(env!("CARGO_BIN_EXE_skjold-webhook"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .args(["--kubernetes", "off"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start skjold-webhook")?;
    let spawned = Spawned { child, _dir: dir };
    let target = Target {
        addr,
        connector: connector(ca.cert_pem())?,
        server_name: rustls::pki_types::ServerName::try_from("localhost")?,
        path: args.path.clone(),
        body,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if connect(&target).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("skjold-webhook did not start listening on {addr} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((target, spawned))
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = target
        .connector
        .connect(target.server_name.clone(), tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one review; Ok only for HTTP 200 with a full body.
async fn send(conn: &mut SendRequest<Full<Bytes>>, target: &Target) -> anyhow::Result<Bytes> {
    conn.ready().await?;
    let req = hyper::Request::post(target.path.as_str())
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(target.body.clone()))?;
    let resp = conn.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != hyper::StatusCode::OK {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

struct Results {
    /// Microseconds, sorted.
    latencies: Vec<u32>,
    errors: usize,
    elapsed: Duration,
}

impl Results {
    fn merge(parts: Vec<(Vec<u32>, usize)>, elapsed: Duration) -> Results {
        let mut latencies = Vec::new();
        let mut errors = 0;
        for (l, e) in parts {
            latencies.extend(l);
            errors += e;
        }
        latencies.sort_unstable();
        Results {
            latencies,
            errors,
            elapsed,
        }
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Option<u32> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies
            .get(rank.min(self.latencies.len() - 1))
            .copied()
    }
}

/// `conns` workers, each sending back-to-back on its own keep-alive connection.
async fn closed_loop(
    target: &Arc<Target>,
    conns: usize,
    duration: Duration,
) -> anyhow::Result<Results> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(64 * 1024);
            let mut errors = 0usize;
            let mut conn = match connect(&target).await {
                Ok(c) => c,
                Err(_) => return (lat, 1),
            };
            while Instant::now() < deadline {
                let t = Instant::now();
                match send(&mut conn, &target).await {
                    Ok(_) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(_) => {
                        errors += 1;
                        match connect(&target).await {
                            Ok(c) => conn = c,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut parts = Vec::with_capacity(conns);
    for t in tasks {
        parts.push(t.await?);
    }
    Ok(Results::merge(parts, start.elapsed()))
}

/// Open loop: request i is due at `start + i/rate`; worker w sends requests i ≡ w (mod conns).
async fn fixed_rate(
    target: &Arc<Target>,
    rate: u64,
    duration: Duration,
    conns: usize,
) -> anyhow::Result<Results> {
    let total = rate * duration.as_secs();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(conns);
    for w in 0..conns {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity((total as usize / conns) + 1);
            let mut errors = 0usize;
            let mut conn = match connect(&target).await {
                Ok(c) => c,
                Err(_) => return (lat, 1),
            };
            let mut i = w as u64;
            while i < total {
                let due = start + period.mul_f64(i as f64);
                // Behind schedule (the server was slow): count from the due time, so queueing
                // shows. Ahead: count from the wake-up, so the timer's ~1 ms slop does not.
                let origin = if due > tokio::time::Instant::now() {
                    tokio::time::sleep_until(due).await;
                    tokio::time::Instant::now()
                } else {
                    due
                };
                match send(&mut conn, &target).await {
                    Ok(_) => lat.push(origin.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(_) => {
                        errors += 1;
                        if let Ok(c) = connect(&target).await {
                            conn = c;
                        }
                    }
                }
                i += conns as u64;
            }
            (lat, errors)
        }));
    }
    let mut parts = Vec::with_capacity(conns);
    for t in tasks {
        parts.push(t.await?);
    }
    Ok(Results::merge(parts, start.elapsed()))
}

/// Mean time of each in-process step of one admission, without HTTP or TLS.
fn phases(body: &[u8], n: u32) -> anyhow::Result<()> {
    use skjold_inject::admission;
    use skjold_inject::config::PreparedConfig;
    use skjold_inject::inject::{self, InjectRequest, NamespaceInfo};
    use skjold_inject::verdict::{self, Fixed};

    let config = PreparedConfig::default();
    let namespace = NamespaceInfo {
        name: "shop".into(),
        ..NamespaceInfo::default()
    };
    // On-CPU time of this thread (schedstat, ns): wall time is meaningless on a shared machine.
    let cpu_ns = || -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    let time = |name: &str, f: &mut dyn FnMut() -> anyhow::Result<usize>| -> anyhow::Result<()> {
        let start = Instant::now();
        let cpu0 = cpu_ns();
        let mut size = 0;
        for _ in 0..n {
            size = f()?;
        }
        let cpu = (cpu_ns() - cpu0) as f64 / 1e3 / f64::from(n);
        let wall = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!("  {name:<28} {cpu:>8.1} µs CPU  {wall:>8.1} µs wall  ({size} bytes/items out)");
        Ok(())
    };
    println!("in-process phases, mean of {n} iterations:");
    time("decode review + pod", &mut || {
        let review = admission::decode(body)?;
        Ok(review.pod()?.metadata.labels.map_or(0, |l| l.len()))
    })?;
    let review = admission::decode(body)?;
    let pod = review.pod()?;
    let req = InjectRequest {
        pod: &pod,
        namespace: &namespace,
        config: &config,
        nodes: skjold_inject::inject::NodeSupport::Unknown,
    };
    time("inject (decision + patch)", &mut || {
        Ok(inject::inject(&req)?.patch.0.len())
    })?;
    let outcome = inject::inject(&req)?;
    let resp = review.allow().with_patch(outcome.patch.clone())?;
    time("serialize patch (JSON)", &mut || {
        Ok(serde_json::to_vec(&outcome.patch)?.len())
    })?;
    time("encode response (base64)", &mut || {
        Ok(admission::encode(review.api_version, &resp)?.len())
    })?;
    // The whole per-request decision as the server runs it (body in, response bytes out).
    let lookup = Fixed::new(config.clone());
    time("whole verdict (respond)", &mut || {
        let (v, out) = verdict::respond(body, "", &lookup)?;
        anyhow::ensure!(
            v.kind == verdict::Kind::Injected,
            "not injected: {}",
            v.reason
        );
        Ok(out.len())
    })?;
    Ok(())
}

/// utime + stime of a process in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}
