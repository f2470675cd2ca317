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
    /// `up`: run the cluster in a node sandbox with a real node (containerd, runc, kubelet,
    /// kube-proxy; needs root, `make setup`): pods really run, and Skjold is installed with
    /// `helm install` of the chart (unless `--no-skjold`). `demo` always does this unless
    /// `--no-node`.
    #[arg(long)]
    node: bool,
    /// `demo` without a node (no root needed): Skjold as local processes in URL mode and istiod
    /// run by the harness's stand-in from its rendered Deployment.
    #[arg(long)]
    no_node: bool,
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
    let node = if demo { !args.no_node } else { args.node };
    let opts = ClusterOptions {
        state_dir: args.state_dir.clone(),
        keep_state: args.keep_state,
        node,
    };
    if node {
        return run_node(args, opts, demo, &step).await;
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

    serve_until_signal(&cluster, &out, &step).await;
    drop(probe);
    drop(istiod);
    shutdown(mesh, &cluster, &out);
    step("stopped; no processes left behind");
    Ok(())
}

/// The chart's release name and namespace, as in the chart's README.
const RELEASE: &str = "skjold";
/// The guides' install settings (access log to stdout, REGISTRY_ONLY) for `demo`; the ingress
/// gateway is off in both modes: a gateway is Envoy, which this machine cannot have, so with it
/// on the MeshConfig waits for it (as it should).
const DEMO_VALUES: [&str; 6] = [
    "--set",
    "meshConfig.accessLogFile=/dev/stdout",
    "--set",
    "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
    "--set",
    "components.ingressGateway.enabled=false",
];

/// `up --node` / `demo`: the cluster in a node sandbox, Skjold installed with `helm install`
/// from images built on this machine, istiod as a pod.
async fn run_node(
    args: UpArgs,
    opts: ClusterOptions,
    demo: bool,
    step: &impl Fn(&str),
) -> Result<()> {
    step(
        "starting the cluster in a node sandbox: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy",
    );
    let Some(cluster) = until_signal(Cluster::start(opts)).await? else {
        return Ok(());
    };
    step(&format!(
        "cluster with node {} ready (state in {})",
        skjold_e2e::node::NODE_NAME,
        cluster.dir().display()
    ));
    let out = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(default_kubeconfig_out);
    write_kubeconfig(&cluster, &out)?;
    let work = async {
        if !args.no_skjold {
            install_on_node(&cluster, demo, step).await?;
        }
        if demo {
            return walkthrough_node(&cluster, step).await.map(Some);
        }
        Ok(None)
    };
    let probe = match until_signal(work).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            cluster.shutdown();
            remove_kubeconfig(&out);
            return Ok(());
        }
        Err(e) => {
            eprintln!("failed: {e:#}\nlogs:\n{}", cluster.log_tails(20));
            cluster.shutdown();
            remove_kubeconfig(&out);
            return Err(anyhow!("skjold-cluster failed"));
        }
    };
    serve_until_signal(&cluster, &out, step).await;
    drop(probe);
    cluster.shutdown();
    remove_kubeconfig(&out);
    step("stopped; no processes, mounts or cgroups left behind");
    Ok(())
}

async fn install_on_node(cluster: &Cluster, demo: bool, step: &impl Fn(&str)) -> Result<()> {
    let chart = skjold_e2e::workspace_root().join("helm/skjold");
    let chart = chart.to_string_lossy();
    let values: &[&str] = if demo {
        &DEMO_VALUES
    } else {
        &DEMO_VALUES[4..]
    };
    let mut template = vec![RELEASE, &*chart, "-n", CONTROL_PLANE_NS];
    template.extend(values);
    step(
        "building Skjold's and Istio's images from this machine's binaries, importing them into the node's containerd",
    );
    let names = skjold_e2e::images::import_for_chart(cluster, &template)?;
    step(&format!("images: {}", names.join(", ")));
    let mut install = vec![
        "install",
        RELEASE,
        &*chart,
        "-n",
        CONTROL_PLANE_NS,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
    ];
    install.extend(values);
    step(&format!("helm {}", install.join(" ")));
    cluster.helm(&install)?;
    step("skjold-operator 1/1 and skjold-webhook 2/2 Ready; waiting for the operator's istiod");
    skjold_e2e::wait_for(
        "Deployment istio-system/istiod to exist",
        std::time::Duration::from_secs(120),
        || {
            let found = cluster
                .kubectl(&["get", "deployment", "istiod", "-n", CONTROL_PLANE_NS])
                .is_ok_and(|o| o.status.success());
            std::future::ready(if found {
                skjold_e2e::Poll::Ready(())
            } else {
                skjold_e2e::Poll::Pending("not rendered yet".into())
            })
        },
    )
    .await?;
    cluster.kubectl_ok(
        &[
            "wait",
            "--for=condition=Available",
            "--timeout=300s",
            "deployment/istiod",
            "-n",
            CONTROL_PLANE_NS,
        ],
        None,
    )?;
    step("istiod Available as a pod");
    Ok(())
}

/// The demo Deployment on the node: a busybox web server whose pod the in-cluster webhook
/// injects. Classic sidecar (`sidecar.istio.io/nativeSidecar: "false"`): as a native sidecar
/// the kubelet would start the app only after `istio-proxy`'s startup probe, which needs Envoy.
fn demo_app_yaml() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {DEMO_APP}, namespace: demo, labels: {{app: {DEMO_APP}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {DEMO_APP}}}}}
  template:
    metadata:
      labels: {{app: {DEMO_APP}, version: v1}}
      annotations:
        sidecar.istio.io/nativeSidecar: "false"
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        imagePullPolicy: IfNotPresent
        command: [/bin/busybox, sh, -c, "mkdir -p /www && echo hello > /www/index.html && exec busybox httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /index.html, port: 8080}}, periodSeconds: 5}}
"#,
        image = skjold_e2e::node::BUSYBOX_IMAGE
    )
}

async fn walkthrough_node(cluster: &Cluster, step: &impl Fn(&str)) -> Result<XdsProbe> {
    label_demo_namespace(cluster, step)?;
    let client = cluster.client().await?;
    step(&format!(
        "creating Deployment demo/{DEMO_APP} (busybox httpd on 8080)"
    ));
    let pod_name = apply_demo_deployment(cluster, &client, &demo_app_yaml()).await?;
    step(&format!(
        "waiting for the kubelet to run demo/{pod_name}: istio-init, then app and istio-proxy"
    ));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "demo");
    let pod = skjold_e2e::wait_for(
        "istio-init to exit 0 and the app to run",
        std::time::Duration::from_secs(120),
        || {
            let pods = pods.clone();
            let name = pod_name.clone();
            async move {
                let p = match pods.get(&name).await {
                    Ok(p) => p,
                    Err(e) => return skjold_e2e::Poll::Pending(e.to_string()),
                };
                let status = p.status.clone().unwrap_or_default();
                let init_ok = status.init_container_statuses.iter().flatten().any(|s| {
                    s.name == "istio-init"
                        && s.state
                            .as_ref()
                            .and_then(|st| st.terminated.as_ref())
                            .is_some_and(|t| t.exit_code == 0)
                });
                let app_running = status.container_statuses.iter().flatten().any(|s| {
                    s.name == "app" && s.state.as_ref().is_some_and(|st| st.running.is_some())
                });
                if init_ok && app_running {
                    skjold_e2e::Poll::Ready(p)
                } else {
                    skjold_e2e::Poll::Pending(format!("phase {:?}", status.phase))
                }
            }
        },
    )
    .await?;
    let status = pod.status.clone().unwrap_or_default();
    println!(
        "\nPod demo/{pod_name} on node {} with IP {} (an address inside the node sandbox only):",
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        status.pod_ip.clone().unwrap_or_default()
    );
    for s in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        let state = match &s.state {
            Some(st) if st.running.is_some() => "running".to_string(),
            Some(st) => st
                .terminated
                .as_ref()
                .map(|t| format!("exited {}", t.exit_code))
                .or_else(|| {
                    st.waiting
                        .as_ref()
                        .map(|w| format!("waiting ({})", w.reason.clone().unwrap_or_default()))
                })
                .unwrap_or_default(),
            None => "unknown".into(),
        };
        println!("  {:<12} {state}, restarts {}", s.name, s.restart_count);
    }
    println!(
        "  (istio-proxy runs Istio's real pilot-agent, which opens its status port and stops where it would start Envoy: no Envoy on this machine)"
    );

    step(&format!(
        "connecting Istio's xDS client to istiod as the sidecar of demo/{pod_name}"
    ));
    let probe = connect_probe(cluster, &pod, &pod_name).await?;
    print_meshconfig(cluster, client).await?;
    Ok(probe)
}

/// Says how to use the running cluster, then waits for Ctrl-C or SIGTERM.
async fn serve_until_signal(cluster: &Cluster, kubeconfig_out: &Path, step: &impl Fn(&str)) {
    println!();
    println!("Cluster is up. Use it with:");
    println!("  export KUBECONFIG={}", kubeconfig_out.display());
    println!(
        "  {} get pods -A",
        cluster.bin_dir().join("kubectl").display()
    );
    println!("Logs: {}", cluster.dir().join("logs").display());
    println!("Press Ctrl-C to stop and remove everything.");
    wait_for_signal().await;
    step("stopping");
}

fn shutdown(mesh: Option<Mesh<'_>>, cluster: &Cluster, kubeconfig_out: &Path) {
    drop(mesh);
    cluster.shutdown();
    remove_kubeconfig(kubeconfig_out);
}

/// The guides' first step: namespace `demo`, labelled `istio-injection=enabled`.
fn label_demo_namespace(cluster: &Cluster, step: &impl Fn(&str)) -> Result<()> {
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
    Ok(())
}

/// `kubectl apply -n demo` of the demo Deployment; waits for its pod, prints it as stored and
/// returns its name. (The namespace's default ServiceAccount may still be on its way; the
/// ReplicaSet controller retries on its own, so only the pod is waited for.)
async fn apply_demo_deployment(
    cluster: &Cluster,
    client: &kube::Client,
    yaml: &str,
) -> Result<String> {
    cluster.kubectl_ok(&["apply", "-n", "demo", "-f", "-"], Some(yaml))?;
    let pods = k8s::wait_for_pods(client, "demo", DEMO_APP, 1).await?;
    let pod = pods
        .first()
        .ok_or_else(|| anyhow!("no pod for Deployment demo/{DEMO_APP}"))?;
    print_pod(pod);
    Ok(pod.metadata.name.clone().unwrap_or_default())
}

/// The guides' walkthrough on the running cluster; returns the xDS probe of the demo pod (kept
/// running, its log shows every push istiod makes to that sidecar).
async fn walkthrough(cluster: &Cluster, step: &impl Fn(&str)) -> Result<XdsProbe> {
    label_demo_namespace(cluster, step)?;
    let client = cluster.client().await?;
    let deployment = k8s::deployment(DEMO_APP, 1, &[])?;
    let yaml = serde_yaml_ng::to_string(&deployment).context("serialising the Deployment")?;
    step(&format!("creating Deployment demo/{DEMO_APP}"));
    let pod_name = apply_demo_deployment(cluster, &client, &yaml).await?;

    step(&format!(
        "reporting demo/{pod_name} running with IP {DEMO_POD_IP} (API only), connecting to istiod as its sidecar"
    ));
    let pod = report_pod_running(cluster, "demo", &pod_name, DEMO_POD_IP).await?;
    let probe = connect_probe(cluster, &pod, &pod_name).await?;

    // A gateway runs Envoy, which this machine cannot have: its Pod could never become Ready, so
    // the demo switches it off to show a Ready mesh (istiod, mesh config, injection).
    step(
        "kubectl patch meshconfig default: components.ingressGateway.enabled=false (no Envoy on this machine)",
    );
    cluster.patch_meshconfig(r#"{"spec":{"components":{"ingressGateway":{"enabled":false}}}}"#)?;
    print_meshconfig(cluster, client).await?;
    Ok(probe)
}

/// Istio's xDS client connected to istiod as the sidecar of `pod`; prints the first complete
/// configuration istiod serves it and keeps running (its log shows every later push).
async fn connect_probe(cluster: &Cluster, pod: &Pod, pod_name: &str) -> Result<XdsProbe> {
    let mut probe = XdsProbe::start(cluster, pod)?;
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
    print_served(cluster, pod_name, &served);
    Ok(probe)
}

/// What istiod serves the sidecar of demo/`pod_name`, as the xDS probe read it.
fn print_served(cluster: &Cluster, pod_name: &str, served: &serde_json::Value) {
    let logs = access_logs(served);
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
}

/// Waits for the default MeshConfig to be Ready, then prints it and the mesh ConfigMap.
async fn print_meshconfig(cluster: &Cluster, client: kube::Client) -> Result<()> {
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
    Ok(())
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
