//! `skjold-operator`: `crd` prints the MeshConfig CRD; `run` reconciles MeshConfigs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::CustomResourceExt;
use skjold_operator::certs::CertPolicy;
use skjold_operator::crd::MeshConfig;
use skjold_operator::metrics::Metrics;
use skjold_operator::runner::{self, RunConfig};

#[derive(Parser, Debug)]
#[command(
    name = "skjold-operator",
    version,
    about = "Reconciles Skjold MeshConfig resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the MeshConfig CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Control-plane namespace: MeshConfigs are watched and objects written here.
    #[arg(long, env = "SKJOLD_NAMESPACE", default_value = "istio-system")]
    namespace: String,
    /// Service in front of the injection webhook.
    #[arg(long, env = "SKJOLD_WEBHOOK_SERVICE", default_value = "skjold-webhook")]
    webhook_service: String,
    /// Namespace of the webhook Service and its certificate Secret (default: --namespace).
    #[arg(long, env = "SKJOLD_WEBHOOK_NAMESPACE")]
    webhook_namespace: Option<String>,
    /// Out-of-cluster development: call the webhook at this https:// URL instead of the Service.
    #[arg(long, env = "SKJOLD_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Out-of-cluster development: the API server calls istiod's `/validate` at this https:// URL
    /// instead of the istiod Service (istiod's certificate then also names the URL's host).
    #[arg(long, env = "SKJOLD_ISTIOD_VALIDATION_URL")]
    istiod_validation_url: Option<String>,
    /// Secret (kubernetes.io/tls: tls.crt, tls.key, ca.crt) for the webhook's serving certificate.
    #[arg(long, env = "SKJOLD_CERT_SECRET", default_value = "skjold-webhook-tls")]
    cert_secret: String,
    /// cert-manager mode: `<namespace>/<name>` of the Certificate that issues --cert-secret; the
    /// operator then neither issues certificates nor sets caBundle (cert-manager's cainjector does).
    #[arg(long, env = "SKJOLD_CERT_MANAGER_CERTIFICATE")]
    cert_manager_certificate: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SKJOLD_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so only one replica reconciles.
    #[arg(long, env = "SKJOLD_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader-election Lease in --namespace.
    #[arg(long, env = "SKJOLD_LEASE_NAME", default_value = "skjold-operator")]
    lease_name: String,
    /// Apply the MeshConfig CRD and Istio's CRDs of the pinned Istio version at start (Helm does
    /// not upgrade CRDs). Never deletes them.
    #[arg(long, env = "SKJOLD_MANAGE_CRD", default_value_t = true, action = ArgAction::Set)]
    manage_crd: bool,
    /// Log format.
    #[arg(long, env = "SKJOLD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Unique per process: pod name (or hostname) plus pid and start time.
fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "skjold-operator".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{base}_{}_{nanos:08x}", std::process::id())
}

/// This replica's Pod (`POD_NAME` and `POD_UID` from the downward API), when in a cluster.
fn pod_owner() -> Option<OwnerReference> {
    let name = std::env::var("POD_NAME").ok()?;
    let uid = std::env::var("POD_UID").ok()?;
    Some(skjold_operator::leader::pod_owner(&name, &uid))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml =
                serde_yaml_ng::to_string(&MeshConfig::crd()).context("serializing the CRD")?;
            print!("{yaml}");
            Ok(())
        }
        Command::Run(args) => {
            init_tracing(args.log_format);
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes access (kubeconfig or in-cluster config)")?;
            let cfg = RunConfig {
                webhook_namespace: args
                    .webhook_namespace
                    .unwrap_or_else(|| args.namespace.clone()),
                namespace: args.namespace,
                webhook_service: args.webhook_service,
                webhook_url: args.webhook_url,
                istiod_validation_url: args.istiod_validation_url,
                cert_secret: args.cert_secret,
                cert_manager_certificate: args.cert_manager_certificate,
                metrics_addr: Some(args.metrics_addr),
                leader_election: args.leader_election,
                lease_name: args.lease_name,
                manage_crd: args.manage_crd,
                identity: identity(),
                pod_owner: pod_owner(),
                service_account: std::env::var("POD_SERVICE_ACCOUNT").ok(),
                cert_policy: CertPolicy::default(),
            };
            runner::run(client, cfg, Arc::new(Metrics::new()), shutdown_signal())
                .await
                .context("skjold-operator stopped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_contract_names() {
        let cli = Cli::try_parse_from([
            "skjold-operator",
            "run",
            "--namespace",
            "mesh",
            "--webhook-url",
            "https://127.0.0.1:15017/inject",
            "--leader-election=false",
            "--manage-crd=false",
            "--lease-name",
            "l",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.namespace, "mesh");
        assert!(!args.leader_election && !args.manage_crd);
        assert_eq!(args.cert_secret, "skjold-webhook-tls");
        assert_eq!(args.webhook_service, "skjold-webhook");
    }
}
