//! Load plus chaos: sustained HTTPS admission traffic against two webhook instances behind a
//! client-side round-robin, while the serving certificate rotates and one instance gets SIGTERM.
//!
//! `cargo bench -p skjold-webhook --bench chaos_load` (env `CHAOS_SECONDS`, default 60) starts
//! two release `skjold-webhook` processes on loopback, each reading its certificate from its own
//! Secret-volume-like directory (`..data` symlink swap, as the kubelet writes it), and runs one
//! closed-loop step per `--concurrency` value. During the run:
//! - at `--rotate-at` of the run, both directories switch to a certificate from a *new* CA (the
//!   client trusts both, as the API server does during the operator's caBundle overlap window);
//! - at `--sigterm-at`, instance B gets SIGTERM and must drain and exit 0.
//!
//! The client behaves like the API server calling a Service: each new connection goes to the next
//! instance; a connection that cannot be opened, or a keep-alive connection found closed *before
//! the request was written* (hyper hands the request back), is retried on the next instance. A
//! request that was written and then failed, or any answer other than an injected pod, is an
//! error. Any error makes the bench fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use skjold_certs::{CertificateAuthority, IssuedCert};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod support;
use support::{Memory, connector, fmt_us, memory, typical_review};

#[derive(Debug, Parser)]
#[command(about = "HTTPS load with certificate rotation and SIGTERM for skjold-webhook")]
struct Args {
    /// Total seconds, split evenly over the concurrency steps.
    #[arg(long, env = "CHAOS_SECONDS", default_value_t = 60)]
    seconds: u64,
    /// Closed-loop concurrencies (connections), one step each, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    concurrency: Vec<usize>,
    /// Requests per connection before the client opens a new one (connection churn, so new
    /// connections see the rotated certificate and the round-robin).
    #[arg(long, default_value_t = 200)]
    requests_per_connection: u64,
    /// When to rotate the certificate, as a fraction of the run.
    #[arg(long, default_value_t = 0.45)]
    rotate_at: f64,
    /// When to send SIGTERM to instance B, as a fraction of the run.
    #[arg(long, default_value_t = 0.70)]
    sigterm_at: f64,
    /// `--shutdown-grace-ms` of the instances.
    #[arg(long, default_value_t = 10_000)]
    shutdown_grace_ms: u64,
    /// `--shutdown-delay-ms` of the instances (0 shows the keep-alive close race).
    #[arg(long, default_value_t = 2_000)]
    shutdown_delay_ms: u64,
    /// How often the client's "endpoints" probe each instance's `/readyz`.
    #[arg(long, default_value_t = 100)]
    probe_interval_ms: u64,
    /// Client runtime worker threads (client and servers share the machine).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!(
            "--concurrency needs positive values, got {:?}",
            args.concurrency
        );
    }
    if !(0.0..1.0).contains(&args.rotate_at) || !(0.0..1.0).contains(&args.sigterm_at) {
        bail!(
            "--rotate-at {} and --sigterm-at {} must be fractions in [0, 1)",
            args.rotate_at,
            args.sigterm_at
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// One webhook process and its certificate directory.
struct Instance {
    addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Instance {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Kills whatever is still running when the bench ends (also on error paths).
struct Instances(Vec<Instance>);

impl Drop for Instances {
    fn drop(&mut self) {
        for i in &mut self.0 {
            if matches!(i.child.try_wait(), Ok(None)) {
                let _ = i.child.kill();
                let _ = i.child.wait();
            }
        }
    }
}

/// The "Service": instance addresses, the round-robin cursor and the shared counters.
struct Service {
    addrs: Vec<SocketAddr>,
    /// The endpoints' view: an instance whose `/readyz` fails gets no new connections.
    ready: Vec<std::sync::atomic::AtomicBool>,
    next: AtomicUsize,
    connector: TlsConnector,
    body: Bytes,
    /// DER of the rotated serving certificate, to count connections that see it.
    new_cert: Vec<u8>,
    new_cert_connections: AtomicU64,
    old_cert_connections: AtomicU64,
    /// Microseconds since the run started of the first handshake with the new certificate.
    first_new_cert_us: AtomicU64,
    /// Connection attempts that failed before a request was written (retried elsewhere).
    connect_retries: AtomicU64,
    /// Requests handed back unsent by a keep-alive connection the server had closed (retried).
    unsent_retries: AtomicU64,
    run_start: Instant,
}

/// A keep-alive connection and the index of the instance it goes to.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    instance: usize,
    used: u64,
}

impl Service {
    /// Opens a connection to the next ready instance (any instance when none is ready),
    /// trying each candidate once.
    async fn connect(&self) -> anyhow::Result<Conn> {
        let ready: Vec<usize> = (0..self.addrs.len())
            .filter(|&i| self.ready[i].load(Ordering::Acquire))
            .collect();
        let candidates = if ready.is_empty() {
            (0..self.addrs.len()).collect()
        } else {
            ready
        };
        let n = candidates.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let instance = candidates[(first + k) % n];
            match self.open(self.addrs[instance]).await {
                Ok(sender) => {
                    return Ok(Conn {
                        sender,
                        instance,
                        used: 0,
                    });
                }
                Err(err) => {
                    self.connect_retries.fetch_add(1, Ordering::Relaxed);
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no instances")))
    }

    /// A TLS + HTTP/1.1 connection, without counting it in the rotation figures.
    async fn open_uncounted(
        &self,
        addr: SocketAddr,
    ) -> anyhow::Result<(SendRequest<Full<Bytes>>, bool)> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let tls = self.connector.connect(name, tcp).await?;
        let is_new = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .is_some_and(|c| c.as_ref() == self.new_cert.as_slice());
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok((sender, is_new))
    }

    async fn open(&self, addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let (sender, is_new) = self.open_uncounted(addr).await?;
        if is_new {
            if self.new_cert_connections.fetch_add(1, Ordering::Relaxed) == 0 {
                let us = self.run_start.elapsed().as_micros() as u64;
                self.first_new_cert_us.store(us, Ordering::Relaxed);
            }
        } else {
            self.old_cert_connections.fetch_add(1, Ordering::Relaxed);
        }
        Ok(sender)
    }

    /// Whether `GET /readyz` answers 200 (a kubelet readiness probe).
    async fn probe(&self, addr: SocketAddr) -> bool {
        let probe = async {
            let (mut sender, _) = self.open_uncounted(addr).await?;
            sender.ready().await?;
            let req = hyper::Request::get("/readyz")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))?;
            let status = sender.send_request(req).await?.status();
            anyhow::Ok(status == hyper::StatusCode::OK)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Ok(true))
        )
    }
}

/// Keeps `svc.ready` up to date, like endpoints following readiness probes.
async fn prober(svc: Arc<Service>, interval: Duration) {
    loop {
        for (i, addr) in svc.addrs.iter().enumerate() {
            let ok = svc.probe(*addr).await;
            svc.ready[i].store(ok, Ordering::Release);
        }
        tokio::time::sleep(interval).await;
    }
}

impl Service {
    fn request(&self) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post("/inject")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))
            .expect("static request parts are valid")
    }
}

/// What one worker saw.
#[derive(Default)]
struct WorkerResult {
    /// Microseconds, from the first attempt to the full answer (retries included).
    latencies: Vec<u32>,
    errors: Vec<String>,
    /// Successful requests per instance.
    served: [u64; 2],
}

/// Sends back-to-back until `deadline`, reconnecting per the round-robin rules.
async fn worker(svc: Arc<Service>, deadline: Instant, per_conn: u64) -> WorkerResult {
    let mut out = WorkerResult {
        latencies: Vec::with_capacity(16 * 1024),
        ..WorkerResult::default()
    };
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let started = Instant::now();
        // Retries only for requests that were never written; bounded so a dead Service ends.
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            if attempts > 20 {
                break Err("20 attempts without a connection that took the request".to_string());
            }
            let mut c = match conn.take() {
                Some(c) if c.used < per_conn => c,
                _ => match svc.connect().await {
                    Ok(c) => c,
                    Err(err) => break Err(format!("no instance accepts connections: {err}")),
                },
            };
            if c.sender.ready().await.is_err() {
                // Closed by the server while idle: nothing was sent.
                svc.unsent_retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match c.sender.try_send_request(svc.request()).await {
                Err(mut err) => {
                    if err.take_message().is_some() {
                        svc.unsent_retries.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    break Err(format!("request failed after it was sent: {}", err.error()));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let close = resp
                        .headers()
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let body = match resp.into_body().collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(err) => break Err(format!("response body failed: {err}")),
                    };
                    let instance = c.instance;
                    c.used += 1;
                    if !close {
                        conn = Some(c);
                    }
                    break check_answer(status, &body).map(|()| instance);
                }
            }
        };
        match outcome {
            Ok(instance) => {
                let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                out.latencies.push(us);
                out.served[instance.min(1)] += 1;
            }
            Err(err) => {
                out.errors.push(err);
                conn = None;
            }
        }
    }
    out
}

/// Only an injected pod counts as success.
fn check_answer(status: hyper::StatusCode, body: &[u8]) -> Result<(), String> {
    if status != hyper::StatusCode::OK {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    if v["response"]["allowed"] != true || v["response"]["patch"].is_null() {
        return Err(format!("pod not injected: {}", v["response"]["status"]));
    }
    Ok(())
}

/// One concurrency step's figures.
struct Step {
    conns: usize,
    latencies: Vec<u32>,
    errors: Vec<String>,
    served: [u64; 2],
    elapsed: Duration,
    /// (VmRSS, VmHWM) in KiB per instance; None once it exited.
    memory: [Option<Memory>; 2],
}

impl Step {
    fn percentile(&self, p: f64) -> Option<u32> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * (n - 1) as f64).round() as usize;
        self.latencies.get(rank.min(n - 1)).copied()
    }
}

fn fmt_mem(m: Option<Memory>) -> String {
    match m {
        None => "exited".into(),
        Some(m) => format!(
            "{:.1}/{:.1}",
            m.rss_kib as f64 / 1024.0,
            m.hwm_kib as f64 / 1024.0
        ),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let day = Duration::from_secs(86_400);
    let old_ca = CertificateAuthority::generate("skjold-chaos-ca-1", day)?;
    let new_ca = CertificateAuthority::generate("skjold-chaos-ca-2", day)?;
    let old_cert = serving(&old_ca)?;
    let new_cert = serving(&new_ca)?;

    let mut instances = Instances(Vec::new());
    for name in ["A", "B"] {
        let dir = work.path().join(format!("tls-{name}"));
        std::fs::create_dir(&dir)?;
        secret_volume_write(&dir, 0, &old_cert)?;
        instances.0.push(spawn(&dir, &args)?);
    }
    // The caBundle holds both CAs during rotation, as the operator's overlap window does.
    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    let svc = Arc::new(Service {
        addrs: instances.0.iter().map(|i| i.addr).collect(),
        ready: instances
            .0
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(true))
            .collect(),
        next: AtomicUsize::new(0),
        connector: connector(&bundle)?,
        body: Bytes::from(serde_json::to_vec(&typical_review())?),
        new_cert: pem_der(&new_cert.cert_pem)?,
        new_cert_connections: AtomicU64::new(0),
        old_cert_connections: AtomicU64::new(0),
        first_new_cert_us: AtomicU64::new(0),
        connect_retries: AtomicU64::new(0),
        unsent_retries: AtomicU64::new(0),
        run_start: Instant::now(),
    });
    for i in &instances.0 {
        wait_listening(&svc, i.addr).await?;
    }

    let probe = tokio::spawn(prober(
        svc.clone(),
        Duration::from_millis(args.probe_interval_ms.max(10)),
    ));
    let total = Duration::from_secs(args.seconds.max(1));
    println!(
        "skjold-webhook chaos load: 2 instances (release), round-robin per connection, {} s total, steps at concurrency {:?}, {} requests per connection",
        total.as_secs(),
        args.concurrency,
        args.requests_per_connection
    );
    println!(
        "events: certificate rotation to a new CA at {:.0} s, SIGTERM to instance B at {:.0} s (shutdown delay {} ms, grace {} ms); readiness probed every {} ms; machine: {} CPUs shared by client and servers",
        total.as_secs_f64() * args.rotate_at,
        total.as_secs_f64() * args.sigterm_at,
        args.shutdown_delay_ms,
        args.shutdown_grace_ms,
        args.probe_interval_ms,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let run_start = Instant::now();
    let pids = [instances.0[0].pid(), instances.0[1].pid()];
    let dirs: Vec<PathBuf> = instances.0.iter().map(|i| i.dir.clone()).collect();
    let rotate_after = total.mul_f64(args.rotate_at);
    let rotation = {
        let new_cert = new_cert.clone();
        tokio::spawn(async move {
            tokio::time::sleep(rotate_after).await;
            for dir in &dirs {
                secret_volume_write(dir, 1, &new_cert)?;
            }
            anyhow::Ok(run_start.elapsed())
        })
    };
    let sigterm_after = total.mul_f64(args.sigterm_at);
    let mut b = instances.0.pop().context("instance B")?;
    let termination = tokio::spawn(async move {
        tokio::time::sleep(sigterm_after).await;
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &b.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", b.pid());
        }
        let at = run_start.elapsed();
        let exit = tokio::task::spawn_blocking(move || {
            let r = b.child.wait();
            (r, b)
        })
        .await?;
        let (exit, b) = exit;
        let exit = exit.context("cannot wait for instance B")?;
        anyhow::Ok((at, sent.elapsed(), exit, b))
    });

    let step_len = total / args.concurrency.len() as u32;
    let mut steps = Vec::new();
    for &conns in &args.concurrency {
        let start = Instant::now();
        let deadline = start + step_len;
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(worker(svc.clone(), deadline, args.requests_per_connection)))
            .collect();
        let mut step = Step {
            conns,
            latencies: Vec::new(),
            errors: Vec::new(),
            served: [0, 0],
            elapsed: Duration::ZERO,
            memory: [memory(pids[0]), memory(pids[1])],
        };
        for t in tasks {
            let r = t.await?;
            step.latencies.extend(r.latencies);
            step.errors.extend(r.errors);
            step.served[0] += r.served[0];
            step.served[1] += r.served[1];
        }
        step.elapsed = start.elapsed();
        step.latencies.sort_unstable();
        step.memory = [memory(pids[0]), memory(pids[1])];
        steps.push(step);
    }

    probe.abort();
    let rotated_at = rotation.await??;
    let (term_at, exit_took, exit, _b) = termination.await??;

    println!();
    println!(
        "  {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>15} {:>15}",
        "conns",
        "requests",
        "req/s",
        "p50",
        "p99",
        "p999",
        "max",
        "errors",
        "served A",
        "served B",
        "RSS/peak A MiB",
        "RSS/peak B MiB"
    );
    let mut all_errors = Vec::new();
    let mut total_ok = 0usize;
    for s in &steps {
        total_ok += s.latencies.len();
        println!(
            "  {:>5} {:>8} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>15} {:>15}",
            s.conns,
            s.latencies.len() + s.errors.len(),
            s.latencies.len() as f64 / s.elapsed.as_secs_f64(),
            fmt_us(s.percentile(50.0)),
            fmt_us(s.percentile(99.0)),
            fmt_us(s.percentile(99.9)),
            fmt_us(s.percentile(100.0)),
            s.errors.len(),
            s.served[0],
            s.served[1],
            fmt_mem(s.memory[0]),
            fmt_mem(s.memory[1]),
        );
        all_errors.extend(s.errors.iter().cloned());
    }
    let first_new = svc.first_new_cert_us.load(Ordering::Relaxed);
    let new_conns = svc.new_cert_connections.load(Ordering::Relaxed);
    println!();
    println!(
        "certificate rotation at {:.1} s: first handshake with the new certificate {}; connections with the old / new certificate: {} / {}",
        rotated_at.as_secs_f64(),
        if new_conns > 0 {
            format!(
                "{:.0} ms later",
                (Duration::from_micros(first_new).saturating_sub(rotated_at)).as_secs_f64()
                    * 1000.0
            )
        } else {
            "never".into()
        },
        svc.old_cert_connections.load(Ordering::Relaxed),
        new_conns
    );
    println!(
        "SIGTERM to B at {:.1} s: exited {} after {} ms",
        term_at.as_secs_f64(),
        exit,
        exit_took.as_millis()
    );
    println!(
        "retries before a request was sent: {} refused/failed connects, {} keep-alive connections found closed",
        svc.connect_retries.load(Ordering::Relaxed),
        svc.unsent_retries.load(Ordering::Relaxed)
    );
    match server_metrics(&svc, svc.addrs[0]).await {
        Ok(text) => {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    (l.starts_with("skjold_webhook_requests_total")
                        || l.starts_with("skjold_webhook_certificate_reloads_total"))
                        && !l.ends_with(" 0")
                })
                .collect();
            println!("instance A metrics: {}", lines.join("; "));
        }
        Err(err) => println!("instance A metrics unavailable: {err}"),
    }
    println!("total: {} injected, {} failed", total_ok, all_errors.len());

    let mut problems = Vec::new();
    if !all_errors.is_empty() {
        let mut sample = all_errors.clone();
        sample.dedup();
        sample.truncate(5);
        problems.push(format!(
            "{} failed requests, e.g. {:?}",
            all_errors.len(),
            sample
        ));
    }
    if !exit.success() {
        problems.push(format!("instance B exited with {exit} after SIGTERM"));
    }
    if new_conns == 0 {
        problems.push("no connection ever saw the rotated certificate".into());
    }
    if total_ok == 0 {
        problems.push("no request succeeded".into());
    }
    drop(instances);
    if !problems.is_empty() {
        bail!("chaos load failed: {}", problems.join("; "));
    }
    println!("result: zero failed requests across certificate rotation and SIGTERM");
    Ok(())
}

fn serving(ca: &CertificateAuthority) -> anyhow::Result<IssuedCert> {
    Ok(ca.issue_serving(
        &["localhost".to_string()],
        &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        Duration::from_secs(86_400),
    )?)
}

/// Writes the pair the way the kubelet updates a Secret volume: a new timestamped directory,
/// then an atomic rename of the `..data` symlink; `tls.crt`/`tls.key` point through `..data`.
fn secret_volume_write(dir: &Path, generation: u32, cert: &IssuedCert) -> anyhow::Result<()> {
    let gen_dir = format!("..gen_{generation}");
    std::fs::create_dir(dir.join(&gen_dir))?;
    std::fs::write(dir.join(&gen_dir).join("tls.crt"), &cert.cert_pem)?;
    std::fs::write(dir.join(&gen_dir).join("tls.key"), &cert.key_pem)?;
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&gen_dir, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)?;
        }
    }
    if generation > 0 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..gen_{}", generation - 1)));
    }
    Ok(())
}

fn spawn(dir: &Path, args: &Args) -> anyhow::Result<Instance> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(env!("CARGO_BIN_EXE_skjold-webhook"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--tls-cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.join("tls.key"))
        .args(["--kubernetes", "off", "--tls-reload-interval-ms", "200"])
        .arg("--shutdown-grace-ms")
        .arg(args.shutdown_grace_ms.to_string())
        .arg("--shutdown-delay-ms")
        .arg(args.shutdown_delay_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start skjold-webhook on {addr}"))?;
    Ok(Instance {
        addr,
        dir: dir.to_path_buf(),
        child,
    })
}

async fn wait_listening(svc: &Service, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if svc.open_uncounted(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("skjold-webhook did not listen on {addr} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn server_metrics(svc: &Service, addr: SocketAddr) -> anyhow::Result<String> {
    let (mut sender, _) = svc.open_uncounted(addr).await?;
    sender.ready().await?;
    let req = hyper::Request::get("/metrics")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn pem_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let cert = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("no certificate in PEM")??;
    Ok(cert.to_vec())
}
