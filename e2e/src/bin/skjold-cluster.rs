//! `skjold-cluster`: a real Kubernetes control plane on 127.0.0.1 with Skjold running against
//! it as local processes.
//!
//! - `up`: start the cluster (+ operator and webhook unless `--no-skjold`), write the kubeconfig,
//!   run until Ctrl-C/SIGTERM, then tear everything down.
//! - `demo`: `up`, then the guides' walkthrough: a MeshConfig with access logs and
//!   REGISTRY_ONLY, istiod running from the Deployment the operator rendered, `kubectl label
//!   namespace demo istio-injection=enabled`, a Deployment, the resulting pod's containers, and
//!   what istiod actually serves that pod's sidecar (outbound policy, access log).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use skjold_e2e::istio::{Istiod, XdsProbe, access_logs, report_pod_running};
use skjold_e2e::k8s::{self, container, resources};
use skjold_e2e::mesh::default_kubeconfig_out;
use skjold_e2e::{CONTROL_PLANE_NS, Cluster, ClusterOptions, DEFAULT_MESHCONFIG, Mesh};

/// The demo Deployment (its pod is injected and reported running; its containers do not run:
/// there is no container runtime yet).
const DEMO_APP: &str = "demo-app";
/// The address the demo pod is reported with (written to the API only, never to an interface).
const DEMO_POD_IP: &str = "10.244.0.10";

#[derive(Parser, Debug)]
#[command(
    name = "skjold-cluster",
    version,
    about = "Local real Kubernetes control plane on loopback with Skjold"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start etcd, kube-apiserver, kube-controller-manager (+ skjold-operator and skjold-webhook)
    /// on 127.0.0.1 and run until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// `up`, then install a demo MeshConfig, label namespace `demo`, create a Deployment and print
    /// the injected pod and the mesh ConfigMap; runs until Ctrl-C or SIGTERM.
    Demo(UpArgs),
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Where to write the admin kubeconfig [default: $SKJOLD_CACHE/demo/kubeconfig].
    #[arg(long, env = "SKJOLD_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
    /// Keep certificates, etcd data and logs here (not removed on exit) instead of a temporary
    /// directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Keep the temporary state directory on exit (to read the logs).
    #[arg(long)]
    keep_state: bool,
    /// Start only the control plane, without skjold-operator and skjold-webhook (`up` only).
    #[arg(long)]
    no_skjold: bool,
    /// Run the cluster in a node sandbox with a real node (containerd, runc, kubelet,
    /// kube-proxy; needs root): pods really run (`up` only, with `--no-skjold` for now).
    #[arg(long)]
    node: bool,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube_client logs every refused readiness probe as an error while the API server
                // starts; our own progress lines say what is happening.
                .unwrap_or_else(|_| "skjold_e2e=info,kube_client=off,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up(args) => run(args, false).await,
        Cmd::Demo(args) => run(args, true).await,
    };
    if let Err(e) = result {
        eprintln!("skjold-cluster: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: UpArgs, demo: bool) -> Result<()> {
    let started = Instant::now();
    let step = |msg: &str| eprintln!("[{:>5.1}s] {msg}", started.elapsed().as_secs_f64());
    let opts = ClusterOptions {
        state_dir: args.state_dir.clone(),
        keep_state: args.keep_state,
        node: args.node,
    };
    if args.node && (demo || !args.no_skjold) {
        return Err(anyhow!(
            "--node runs only with `up --no-skjold` so far: Skjold's images and `helm install` on the node are issue 12's next step"
        ));
    }

    step("starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1");
    let Some(cluster) = until_signal(Cluster::start(opts)).await? else {
        return Ok(());
    };
    step(&format!(
        "control plane ready (state in {})",
        cluster.dir().display()
    ));

    let out = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(default_kubeconfig_out);
    write_kubeconfig(&cluster, &out)?;

    let mesh = if args.no_skjold && !demo {
        None
    } else {
        step(
            "starting skjold-operator and skjold-webhook (URL mode), waiting for the first injection",
        );
        match until_signal(Mesh::start(&cluster, DEFAULT_MESHCONFIG)).await {
            Ok(Some(m)) => Some(m),
            Ok(None) => {
                cluster.shutdown();
                remove_kubeconfig(&out);
                return Ok(());
            }
            Err(e) => {
                cluster.shutdown();
                remove_kubeconfig(&out);
                return Err(e);
            }
        }
    };
    if let Some(m) = &mesh {
        step(&format!(
            "skjold is injecting (webhook {})",
            m.webhook_url()
        ));
    }
    let istiod = if mesh.is_some() {
        step(
            "starting istiod from the Deployment the operator rendered (its own ServiceAccount token)",
        );
        match until_signal(Istiod::start(&cluster, std::time::Duration::from_secs(180))).await {
            Ok(Some(i)) => {
                step(&format!(
                    "istiod ready {:.1}s after start (log: {})",
                    i.ready_after.as_secs_f64(),
                    i.pod.log_path().display()
                ));
                Some(i)
            }
            Ok(None) => {
                shutdown(mesh, &cluster, &out);
                return Ok(());
            }
            Err(e) => {
                shutdown(mesh, &cluster, &out);
                return Err(e);
            }
        }
    } else {
        None
    };
    let mut probe = None;
    if demo {
        match until_signal(walkthrough(&cluster, &step)).await {
            Ok(Some(p)) => probe = Some(p),
            Ok(None) => {
                drop(istiod);
                shutdown(mesh, &cluster, &out);
                return Ok(());
            }
            Err(e) => {
                eprintln!("demo failed: {e:#}\nlogs:\n{}", cluster.log_tails(20));
                drop(istiod);
                shutdown(mesh, &cluster, &out);
                return Err(anyhow!("demo failed"));
            }
        }
    }

    println!();
    println!("Cluster is up. Use it with:");
    println!("  export KUBECONFIG={}", out.display());
    println!(
        "  {} get pods -A",
        cluster.bin_dir().join("kubectl").display()
    );
    println!("Logs: {}", cluster.dir().join("logs").display());
    println!("Press Ctrl-C to stop and remove everything.");
    wait_for_signal().await;
    step("stopping");
    drop(probe);
    drop(istiod);
    shutdown(mesh, &cluster, &out);
    step("stopped; no processes left behind");
    Ok(())
}

fn shutdown(mesh: Option<Mesh<'_>>, cluster: &Cluster, kubeconfig_out: &Path) {
    drop(mesh);
    cluster.shutdown();
    remove_kubeconfig(kubeconfig_out);
}

/// The guides' walkthrough on the running cluster; returns the xDS probe of the demo pod (kept
/// running, its log shows every push istiod makes to that sidecar).
async fn walkthrough(cluster: &Cluster, step: &impl Fn(&str)) -> Result<XdsProbe> {
    step("kubectl create namespace demo; kubectl label namespace demo istio-injection=enabled");
    cluster.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n")?;
    cluster.kubectl_ok(
        &[
            "label",
            "namespace",
            "demo",
            "istio-injection=enabled",
            "--overwrite",
        ],
        None,
    )?;
    let client = cluster.client().await?;
    let deployment = k8s::deployment(DEMO_APP, 1, &[])?;
    let yaml = serde_yaml_ng::to_string(&deployment).context("serialising the Deployment")?;
    step(&format!("creating Deployment demo/{DEMO_APP}"));
    // The namespace's default ServiceAccount may still be on its way; the ReplicaSet controller
    // retries on its own, so only wait for the pod.
    cluster.kubectl_ok(&["apply", "-n", "demo", "-f", "-"], Some(&yaml))?;
    let pods = k8s::wait_for_pods(&client, "demo", DEMO_APP, 1).await?;
    let pod = pods
        .first()
        .ok_or_else(|| anyhow!("no pod for Deployment demo/{DEMO_APP}"))?;
    print_pod(pod);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();

    step(&format!(
        "reporting demo/{pod_name} running with IP {DEMO_POD_IP} (API only), connecting to istiod as its sidecar"
    ));
    let pod = report_pod_running(cluster, "demo", &pod_name, DEMO_POD_IP).await?;
    let mut probe = XdsProbe::start(cluster, &pod)?;
    let (served, _) = probe
        .wait(
            "istiod's configuration for the demo pod's sidecar",
            std::time::Duration::from_secs(60),
            |s| {
                if s["listeners"].as_array().is_some_and(|l| !l.is_empty()) {
                    Ok(())
                } else {
                    Err("no listeners yet".into())
                }
            },
        )
        .await?;
    let logs = access_logs(&served);
    let mut targets: Vec<String> = logs.iter().map(|(_, p, f)| format!("{p} ({f})")).collect();
    targets.sort();
    targets.dedup();
    println!(
        "\nWhat istiod serves the sidecar of demo/{pod_name} (read with Istio's own xDS client):"
    );
    println!(
        "  unknown outbound traffic -> {}  (REGISTRY_ONLY: BlackHoleCluster; ALLOW_ANY: PassthroughCluster)",
        served["outbound_catch_all"].as_str().unwrap_or("?")
    );
    println!(
        "  access log -> {} on {} of {} listeners",
        if targets.is_empty() {
            "none".to_string()
        } else {
            targets.join(", ")
        },
        logs.iter()
            .map(|(l, _, _)| l)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        served["listeners"].as_array().map_or(0, Vec::len)
    );
    println!(
        "  (every later push is a JSON line in {}/*xds-probe*)",
        cluster.dir().join("logs").display()
    );

    // A gateway runs Envoy, which this machine cannot have: its Pod could never become Ready, so
    // the demo switches it off to show a Ready mesh (istiod, mesh config, injection).
    step(
        "kubectl patch meshconfig default: components.ingressGateway.enabled=false (no Envoy on this machine)",
    );
    cluster.patch_meshconfig(r#"{"spec":{"components":{"ingressGateway":{"enabled":false}}}}"#)?;
    cluster.kubectl_ok(
        &[
            "wait",
            "--for=condition=Ready",
            "--timeout=60s",
            "meshconfig/default",
            "-n",
            CONTROL_PLANE_NS,
        ],
        None,
    )?;
    println!("\nkubectl get meshconfig -n {CONTROL_PLANE_NS}:");
    let table = cluster.kubectl_ok(&["get", "meshconfig", "-n", CONTROL_PLANE_NS], None)?;
    for line in table.lines() {
        println!("  {line}");
    }

    let cms: Api<ConfigMap> = Api::namespaced(client, CONTROL_PLANE_NS);
    let mesh = cms
        .get("istio")
        .await
        .with_context(|| format!("reading ConfigMap {CONTROL_PLANE_NS}/istio"))?;
    println!("\nConfigMap {CONTROL_PLANE_NS}/istio, key mesh (what istiod reads live):");
    let text = mesh
        .data
        .as_ref()
        .and_then(|d| d.get("mesh"))
        .cloned()
        .unwrap_or_else(|| "(no `mesh` key)".into());
    for line in text.lines() {
        println!("  {line}");
    }
    Ok(probe)
}

fn print_pod(pod: &Pod) {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    println!("\nPod demo/{name} as stored by the API server:");
    let (containers, init) = k8s::container_names(pod);
    for (kind, names) in [("initContainer", init), ("container", containers)] {
        for n in names {
            let Some(c) = container(pod, &n) else {
                continue;
            };
            let (req, lim) = resources(c);
            println!(
                "  {kind:<13} {n:<12} image={} requests={req:?} limits={lim:?}",
                c.image.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(status) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sidecar.istio.io/status"))
    {
        println!("  annotation sidecar.istio.io/status: {status}");
    }
}

fn write_kubeconfig(cluster: &Cluster, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(cluster.kubeconfig(), out)
        .with_context(|| format!("writing the kubeconfig to {}", out.display()))?;
    eprintln!("kubeconfig: {}", out.display());
    Ok(())
}

/// The kubeconfig points at certificates that are gone after shutdown.
fn remove_kubeconfig(out: &Path) {
    let _ = std::fs::remove_file(out);
}

/// Runs `fut` unless Ctrl-C/SIGTERM arrives first (then `None`; dropping the future stops any
/// processes it had started).
async fn until_signal<T>(fut: impl Future<Output = Result<T>>) -> Result<Option<T>> {
    tokio::select! {
        r = fut => r.map(Some),
        () = wait_for_signal() => {
            eprintln!("interrupted; stopping");
            Ok(None)
        }
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler we still stop on Ctrl-C.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
