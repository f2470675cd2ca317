//! `skjold-webhook`: the HTTPS sidecar-injection admission webhook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use skjold_webhook::cache::Cache;
use skjold_webhook::config::PreparedConfig;
use skjold_webhook::metrics::Metrics;
use skjold_webhook::server::{self, AppState, Settings};
use skjold_webhook::tls::{ReloadingTls, TlsFiles};
use tracing_subscriber::EnvFilter;

/// The admission path allocates many small short-lived objects (pod and patch JSON); mimalloc
/// cut CPU per request by about a third in `cargo bench --bench webhook_load`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether to watch a cluster for namespaces and injector ConfigMaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KubernetesMode {
    /// Use the cluster when a kubeconfig or in-cluster config can be inferred.
    Auto,
    /// Require cluster access.
    On,
    /// Never contact a cluster: pod annotations and `--config` only.
    Off,
}

/// Istio-compatible sidecar injection webhook (AdmissionReview admission.k8s.io/v1 over HTTPS).
#[derive(Debug, Parser)]
#[command(name = "skjold-webhook", version)]
struct Args {
    /// Address and port of the TLS listener.
    #[arg(long, env = "SKJOLD_LISTEN", default_value = "0.0.0.0:15017")]
    listen: SocketAddr,
    /// Serving certificate (PEM, leaf first); re-read when it changes.
    #[arg(long, env = "SKJOLD_TLS_CERT_FILE")]
    tls_cert_file: PathBuf,
    /// Private key of the serving certificate (PEM); re-read when it changes.
    #[arg(long, env = "SKJOLD_TLS_KEY_FILE")]
    tls_key_file: PathBuf,
    /// InjectorConfig YAML for revision `default` when no ConfigMap provides one (default: Istio's defaults).
    #[arg(long, env = "SKJOLD_CONFIG")]
    config: Option<PathBuf>,
    /// Cluster access for the namespace and injector-config caches.
    #[arg(long, env = "SKJOLD_KUBERNETES", value_enum, default_value_t = KubernetesMode::Auto)]
    kubernetes: KubernetesMode,
    /// Namespace of the injector ConfigMaps.
    #[arg(long, env = "SKJOLD_CONFIG_NAMESPACE", default_value = "istio-system")]
    config_namespace: String,
    /// Budget for one admission request, below the webhook configuration's 5 s timeout
    /// (the operator's `timeoutSeconds`), so a stuck request gets our error, not the API server's.
    #[arg(long, env = "SKJOLD_REQUEST_TIMEOUT_MS", default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Largest accepted AdmissionReview body.
    #[arg(long, env = "SKJOLD_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    max_body_bytes: u64,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    #[arg(long, env = "SKJOLD_SHUTDOWN_GRACE_MS", default_value_t = 20_000)]
    shutdown_grace_ms: u64,
    /// How long SIGTERM keeps serving (readiness failing, each connection closed after its next
    /// response) before new connections stop, so clients leave without a request caught by a
    /// connection close; set it to the time endpoints take to drop a terminating pod.
    #[arg(long, env = "SKJOLD_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    shutdown_delay_ms: u64,
    /// Open connections at most; one more waits 100 ms for a slot, then is closed. Bounds memory against clients that connect and stall (about 37 KB each).
    #[arg(long, env = "SKJOLD_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// How long a new connection has to send its first request's headers (TLS handshake included).
    #[arg(long, env = "SKJOLD_FIRST_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    first_request_timeout_ms: u64,
    /// How often the certificate files are checked for rotation.
    #[arg(long, env = "SKJOLD_TLS_RELOAD_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    tls_reload_interval_ms: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SKJOLD_LOG_JSON")]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    // kube's client and our listener both use ring; installing it once avoids ambiguity.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skjold-webhook")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(args))
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let file_config = match &args.config {
        Some(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("cannot read --config {}", path.display()))?;
            Some(
                PreparedConfig::from_yaml(&text)
                    .with_context(|| format!("invalid --config {}", path.display()))?,
            )
        }
        None => None,
    };

    let client = match args.kubernetes {
        KubernetesMode::Off => None,
        KubernetesMode::On => Some(
            kube::Client::try_default()
                .await
                .context("--kubernetes=on but no cluster configuration could be inferred")?,
        ),
        KubernetesMode::Auto => match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(err) => {
                tracing::info!(error = %err, "no cluster configuration; running offline (pod annotations and --config only)");
                None
            }
        },
    };

    let metrics = Arc::new(Metrics::new());
    let cache = Arc::new(
        Cache::new(file_config, &args.config_namespace, client.is_some())
            .with_metrics(metrics.clone()),
    );
    let (watchers, events) = match client {
        Some(client) => {
            tracing::info!(config_namespace = %args.config_namespace, "watching namespaces, injector ConfigMaps and nodes");
            let mut tasks = cache.spawn_watchers(client.clone());
            // The reporting instance: the pod's name in a cluster, else the host's.
            let instance = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "skjold-webhook".into());
            let (events, task) =
                skjold_webhook::events::WorkloadEvents::spawn(client, instance, metrics.clone());
            tasks.push(task);
            (tasks, Some(events))
        }
        None => (Vec::new(), None),
    };

    let tls = ReloadingTls::load(TlsFiles {
        cert: args.tls_cert_file.clone(),
        key: args.tls_key_file.clone(),
    })
    .await
    .context("cannot load the serving certificate")?;
    let rustls_config = tls.rustls_config();
    let reloader = tls.spawn_watch(
        Duration::from_millis(args.tls_reload_interval_ms),
        metrics.clone(),
    );

    let settings = Settings {
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        shutdown_delay: Duration::from_millis(args.shutdown_delay_ms),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        first_request_timeout: Duration::from_millis(args.first_request_timeout_ms),
        ..Settings::default()
    };
    let state = AppState::with_events(cache, metrics, settings, events);
    let mut running = server::start(args.listen, rustls_config, state)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %running.addr, "skjold-webhook serving /inject over TLS");

    let served = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down: draining in-flight requests");
            None
        }
        served = running.wait() => Some(served),
    };
    let served = match served {
        Some(served) => served.and(Err(std::io::Error::other("listener stopped unexpectedly"))),
        None => {
            running.graceful_shutdown();
            running.wait().await
        }
    };
    reloader.abort();
    for w in watchers {
        w.abort();
    }
    if let Err(err) = served {
        bail!("server failed: {err}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        },
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
