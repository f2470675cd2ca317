//! `helm install` of the chart on the real node (issue 12, parts 2-4): the operator and two
//! webhook replicas run as pods from images built on this machine under the chart's own names,
//! the operator deploys istiod, which runs as a pod with its own token, and a Deployment in a
//! namespace labelled `istio-injection=enabled` is injected by the in-cluster webhook through
//! its Service, scheduled and started by the kubelet. On the node, the real `istio-init`
//! (`pilot-agent istio-iptables`) programs the pod's network namespace and the real
//! `pilot-agent` runs until it would start Envoy, which this machine cannot have. `helm
//! uninstall` runs the chart's pre-delete hook Job.
//!
//! Values: the chart's defaults except `components.ingressGateway.enabled=false`: a gateway is
//! Envoy (pilot-agent `proxy router`), so with it on the MeshConfig waits for a gateway that
//! cannot become ready here, as it should.
//!
//! Needs root and `make setup` (containerd, runc, iptables). Run:
//! `cargo test -p skjold-e2e --test node_helm -- --test-threads=1`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;
use skjold_e2e::k8s::{dry_run_pod, in_namespace, is_injected, pod};
use skjold_e2e::load::{AdmissionLoad, Create};
use skjold_e2e::node::{BUSYBOX_IMAGE, NODE_NAME};
use skjold_e2e::{CERT_SECRET, Cluster, Poll, images, wait_for, workspace_root};

const NS: &str = "istio-system";
const RELEASE: &str = "skjold";
/// The only value that differs from the chart's defaults (module docs).
const VALUES: [&str; 2] = ["--set", "components.ingressGateway.enabled=false"];
const MWC: &str = "skjold-sidecar-injector";

fn chart() -> String {
    workspace_root().join("helm/skjold").display().to_string()
}

fn json(cluster: &Cluster, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = cluster.kubectl_ok(&all, None)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl {} -o json", args.join(" ")))
}

/// The named container's status (`containerStatuses` or `initContainerStatuses`).
fn status_of<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|s| s["name"] == container)
}

/// A Deployment whose pod shows what a user's traffic annotations do on the node: outbound
/// capture only for the Service range, inbound port 8081 left alone; the app serves HTTP on
/// 8080 with a readiness probe the injector rewrites to pilot-agent's status port.
/// `nativeSidecar: "false"`: with Istio's native sidecar (the default on this 1.34 node) the
/// kubelet starts the app only after `istio-proxy`'s startup probe passes, which needs Envoy.
fn app(ns: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: app, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata:
      labels: {{app: app, version: v1}}
      annotations:
        traffic.sidecar.istio.io/includeOutboundIPRanges: "10.96.0.0/16"
        traffic.sidecar.istio.io/excludeInboundPorts: "8081"
        sidecar.istio.io/nativeSidecar: "false"
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {BUSYBOX_IMAGE}
        imagePullPolicy: IfNotPresent
        command: [/bin/busybox, sh, -c, "mkdir -p /www && echo ok > /www/index.html && exec busybox httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /index.html, port: 8080}}, periodSeconds: 2}}
"#
    )
}

async fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Poll<T>) -> Result<T> {
    wait_for(what, Duration::from_secs(secs), || {
        let r = f();
        async move { r }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_skjold_and_istiod_as_pods_and_the_injected_pod_starts() -> Result<()> {
    let cluster = Cluster::shared_node()?;
    let result = scenario(cluster).await;
    result.map_err(|e| anyhow!("{e:#}\n--- logs ---\n{}", cluster.log_tails(25)))
}

/// Builds the images of the chart (default values) and of Istio and imports them into the
/// node's containerd, once per test process.
fn import_images(cluster: &Cluster) -> Result<()> {
    static IMPORTED: OnceLock<Result<(), String>> = OnceLock::new();
    IMPORTED
        .get_or_init(|| {
            let run = || -> Result<()> {
                let started = Instant::now();
                let chart = chart();
                let mut template = vec![RELEASE, &chart, "-n", NS];
                template.extend(VALUES);
                let names = images::import_for_chart(cluster, &template)?;
                println!(
                    "{} images built and imported in {:.1}s: {}",
                    names.len(),
                    started.elapsed().as_secs_f64(),
                    names.join(", ")
                );
                Ok(())
            };
            run().map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `helm install --wait` with [`VALUES`] and `extra`; checks every pod of the release runs on
/// the node and the operator and webhook Deployments are fully Ready. Returns how long it took.
fn install(cluster: &Cluster, extra: &[&str]) -> Result<Duration> {
    import_images(cluster)?;
    // A release left by an earlier failed test of this process would make the install fail.
    cluster.helm(&[
        "uninstall",
        RELEASE,
        "-n",
        NS,
        "--ignore-not-found",
        "--wait",
    ])?;
    let chart = chart();
    let started = Instant::now();
    let mut args = vec![
        "install",
        RELEASE,
        &chart,
        "-n",
        NS,
        "--create-namespace",
        "--wait",
        "--timeout",
        "4m",
    ];
    args.extend(VALUES);
    args.extend(extra);
    cluster.helm(&args)?;
    let took = started.elapsed();
    for deploy in ["skjold-operator", "skjold-webhook"] {
        let d = json(cluster, &["get", "deployment", deploy, "-n", NS])?;
        ensure!(
            d["status"]["readyReplicas"] == d["spec"]["replicas"],
            "{deploy}: {} of {} replicas ready",
            d["status"]["readyReplicas"],
            d["spec"]["replicas"]
        );
    }
    let pods = json(cluster, &["get", "pods", "-n", NS])?;
    for p in pods["items"].as_array().into_iter().flatten() {
        ensure!(
            p["spec"]["nodeName"] == NODE_NAME,
            "pod {} is not on {NODE_NAME}",
            p["metadata"]["name"]
        );
    }
    Ok(took)
}

async fn scenario(cluster: &'static Cluster) -> Result<()> {
    let paths = cluster
        .node_paths()
        .ok_or_else(|| anyhow!("the cluster has no node"))?
        .clone();
    let sandbox = cluster
        .node_sandbox()
        .ok_or_else(|| anyhow!("the cluster has no node sandbox"))?;

    // --- helm install with the chart's defaults ---------------------------------------------
    let started = Instant::now();
    let installed = install(cluster, &[])?;
    println!(
        "helm install --wait: operator 1/1 and webhook 2/2 Ready as pods in {:.1}s",
        installed.as_secs_f64()
    );

    // --- istiod, deployed by the operator, as a pod; the MeshConfig Ready --------------------
    until("Deployment istiod to be Available", 180, || {
        match json(cluster, &["get", "deployment", "istiod", "-n", NS]) {
            Ok(d) if d["status"]["availableReplicas"].as_i64().unwrap_or(0) >= 1 => Poll::Ready(()),
            Ok(d) => Poll::Pending(format!("status {}", d["status"])),
            Err(e) => Poll::Pending(format!("{e:#}")),
        }
    })
    .await?;
    let istiod_ready = started.elapsed();
    until("MeshConfig default to be Ready", 120, || {
        match json(cluster, &["get", "meshconfig", "default", "-n", NS]) {
            Ok(mc) => {
                let ready = mc["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "Ready")
                    .cloned();
                match ready {
                    Some(c) if c["status"] == "True" => Poll::Ready(()),
                    other => Poll::Pending(format!("Ready condition {other:?}")),
                }
            }
            Err(e) => Poll::Pending(format!("{e:#}")),
        }
    })
    .await?;
    println!(
        "istiod Available as a pod {:.1}s after helm install began; MeshConfig Ready after {:.1}s",
        istiod_ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // Istio's own CLI against this control plane: through the API server's port-forward to
    // istiod's pod (the kubelet and containerd carry it).
    for args in [
        &["version", "--istioNamespace", NS][..],
        &["proxy-status", "--istioNamespace", NS][..],
        &["analyze", "-n", NS, "--failure-threshold", "Error"][..],
    ] {
        let out = cluster.istioctl(args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("istioctl {}:\n{}", args.join(" "), text.trim_end());
        ensure!(
            out.status.success(),
            "istioctl {} failed: {text}",
            args.join(" ")
        );
        // Istio's analyzer finds nothing to say about the chart's own pods (IST0135 was the
        // deprecated injection annotation).
        ensure!(
            !text.contains("IST0135") && !text.contains("skjold-"),
            "istioctl {}: {text}",
            args.join(" ")
        );
        if args[0] == "version" {
            // Both from the same pinned build: the control plane answered with its own version.
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            let (client, control) = (field("client version:"), field("control plane version:"));
            ensure!(
                !client.is_empty() && client != "unknown" && control == client,
                "istioctl version: client {client:?}, control plane {control:?}"
            );
        }
    }
    // The certificate Secrets belong to the installation: owned by the operator's ServiceAccount.
    for secret in [CERT_SECRET.to_string(), format!("{CERT_SECRET}-ca")] {
        let s = json(cluster, &["get", "secret", &secret, "-n", NS])?;
        let owner = &s["metadata"]["ownerReferences"][0];
        ensure!(
            owner["kind"] == "ServiceAccount" && owner["name"] == "skjold-operator",
            "Secret {secret} is not owned by ServiceAccount skjold-operator: {owner}"
        );
    }
    let mwc = json(cluster, &["get", "mutatingwebhookconfiguration", MWC])?;
    ensure!(
        mwc["webhooks"][0]["clientConfig"]["service"]["name"] == "skjold-webhook"
            && mwc["webhooks"][0]["clientConfig"]["url"].is_null(),
        "the webhook configuration does not call Service skjold-webhook: {}",
        mwc["webhooks"][0]["clientConfig"]
    );

    // --- an injected Deployment on the node -----------------------------------------------------
    in_namespace(
        cluster,
        "demo",
        &[("istio-injection", "enabled")],
        |ns| async move {
            let started = Instant::now();
            cluster.apply_yaml(&app(&ns))?;
            let pod = until("the app's pod to exist", 60, || {
                match json(cluster, &["get", "pods", "-n", &ns, "-l", "app=app"]) {
                    Ok(l) => l["items"][0].is_object().then(|| l["items"][0].clone()).into(),
                    Err(e) => Poll::Pending(format!("{e:#}")),
                }
            })
            .await?;
            let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let names = |k: &str| -> Vec<String> {
                pod["spec"][k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            };
            ensure!(
                names("initContainers") == ["istio-init"] && names("containers") == ["app", "istio-proxy"],
                "pod {name} is not injected as a classic sidecar: init {:?}, containers {:?}",
                names("initContainers"),
                names("containers")
            );
            let probe = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
            ensure!(
                probe["port"] == 15020 && probe["path"] == "/app-health/app/readyz",
                "the app's readiness probe is not rewritten to pilot-agent: {probe}"
            );

            // istio-init: the real `pilot-agent istio-iptables` exits 0.
            let pod = until("istio-init to exit and the app to run", 120, || {
                let p = match json(cluster, &["get", "pod", &name, "-n", &ns]) {
                    Ok(p) => p,
                    Err(e) => return Poll::Pending(format!("{e:#}")),
                };
                let init = status_of(&p, "istio-init").map(|s| s["state"].clone());
                if let Some(code) = init.as_ref().and_then(|s| s["terminated"]["exitCode"].as_i64())
                    && code != 0
                {
                    let logs = cluster
                        .kubectl_ok(&["logs", "-n", &ns, &name, "-c", "istio-init"], None)
                        .unwrap_or_default();
                    return Poll::Failed(format!("istio-init exited {code}:\n{logs}"));
                }
                let app_running = status_of(&p, "app").is_some_and(|s| s["state"]["running"].is_object());
                if app_running {
                    Poll::Ready(p)
                } else {
                    Poll::Pending(format!("istio-init {init:?}, app {:?}", status_of(&p, "app")))
                }
            })
            .await?;
            let init = status_of(&pod, "istio-init").context("no istio-init status")?;
            ensure!(init["state"]["terminated"]["exitCode"] == 0, "istio-init: {}", init["state"]);
            println!(
                "pod {name}: injected through Service skjold-webhook, istio-init exited 0, app running {:.1}s after the Deployment",
                started.elapsed().as_secs_f64()
            );

            // The nat rules istio-init wrote, read in the pod's own network namespace.
            let app_id = status_of(&pod, "app").and_then(|s| s["containerID"].as_str()).unwrap_or("");
            let app_id = app_id.trim_start_matches("containerd://");
            let tasks = std::process::Command::new("ctr")
                .arg("--address")
                .arg(&paths.containerd_socket)
                .args(["--namespace", "k8s.io", "tasks", "ls"])
                .output()
                .context("ctr tasks ls")?;
            let tasks = String::from_utf8_lossy(&tasks.stdout);
            let pid = tasks
                .lines()
                .find(|l| l.starts_with(app_id) && !app_id.is_empty())
                .and_then(|l| l.split_whitespace().nth(1))
                .with_context(|| format!("no containerd task for the app container {app_id}:\n{tasks}"))?
                .to_string();
            let mut rules = String::new();
            for save in ["iptables-nft-save", "iptables-legacy-save"] {
                rules += &sandbox.run_ok(&["nsenter", "-t", &pid, "-n", save, "-t", "nat"])?;
            }
            for want in [
                "-A OUTPUT -j ISTIO_OUTPUT",
                "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                "-A ISTIO_OUTPUT -d 10.96.0.0/16 -j ISTIO_REDIRECT",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 8081 -j RETURN",
                "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
                "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            ] {
                ensure!(rules.contains(want), "the pod's nat table lacks {want:?}:\n{rules}");
            }
            // Outbound capture is limited to the annotated range: no other jump to the redirect.
            let redirects: Vec<&str> = rules
                .lines()
                .filter(|l| l.starts_with("-A ISTIO_OUTPUT") && l.ends_with("-j ISTIO_REDIRECT"))
                .collect();
            ensure!(
                redirects == ["-A ISTIO_OUTPUT -d 10.96.0.0/16 -j ISTIO_REDIRECT"],
                "outbound capture is not limited to 10.96.0.0/16: {redirects:?}"
            );
            println!("the pod's own network namespace holds istio-init's nat rules (includeOutboundIPRanges 10.96.0.0/16, excludeInboundPorts 8081)");

            // istio-proxy: the real pilot-agent, as far as it gets without Envoy.
            let logs = until("istio-proxy's pilot-agent to reach Envoy's start", 120, || {
                let mut all = String::new();
                for prev in [true, false] {
                    let mut args = vec!["logs", "-n", &ns, &name, "-c", "istio-proxy"];
                    if prev {
                        args.push("--previous");
                    }
                    if let Ok(o) = cluster.kubectl(&args) {
                        all += &String::from_utf8_lossy(&o.stdout);
                    }
                }
                if all.contains("/usr/local/bin/envoy") {
                    Poll::Ready(all)
                } else {
                    Poll::Pending(all.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
                }
            })
            .await?;
            for want in ["Opening status port 15020", "/usr/local/bin/envoy: no such file or directory"] {
                ensure!(logs.contains(want), "istio-proxy's log lacks {want:?}:\n{logs}");
            }
            println!("istio-proxy: pilot-agent opened its status port 15020 and stopped at starting Envoy (not on this machine)");
            anyhow::Ok(())
        },
    )
    .await?;

    uninstall(cluster).await
}

/// `helm uninstall --wait`: the pre-delete hook Job deletes the MeshConfigs while the operator
/// runs, so nothing the release made is left but istiod's own objects (printed).
async fn uninstall(cluster: &Cluster) -> Result<()> {
    let started = Instant::now();
    cluster.helm(&["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "4m"])?;
    println!(
        "helm uninstall (pre-delete hook Job included): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let left = cluster.kubectl(&["get", "mutatingwebhookconfiguration", MWC])?;
    ensure!(!left.status.success(), "{MWC} is left after helm uninstall");
    let left = cluster.kubectl_ok(&["get", "meshconfigs", "-n", NS, "-o", "name"], None)?;
    ensure!(left.trim().is_empty(), "MeshConfigs left: {left}");
    // The operator's own state: its certificate Secrets go with its ServiceAccount (garbage
    // collector), its Lease when it stops (its pod terminates after helm returns, hence the wait).
    let leftovers = until("the operator's Secrets and Lease to be gone", 60, || {
        let out = cluster.kubectl(&[
            "get",
            "-n",
            NS,
            &format!("secret/{CERT_SECRET}"),
            &format!("secret/{CERT_SECRET}-ca"),
            "lease/skjold-operator",
            "-o",
            "name",
            "--ignore-not-found",
        ]);
        match out {
            Ok(o) if o.status.success() && o.stdout.is_empty() => Poll::Ready(()),
            Ok(o) => Poll::Pending(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Poll::Pending(format!("{e:#}")),
        }
    })
    .await;
    let remaining = cluster.kubectl_ok(
        &["get", "secrets,leases,configmaps", "-n", NS, "-o", "name"],
        None,
    )?;
    println!(
        "left in {NS} after uninstall (istiod's own): {}",
        remaining.split_whitespace().collect::<Vec<_>>().join(", ")
    );
    leftovers
}

const WEBHOOK_PODS: &str = "app.kubernetes.io/name=skjold-webhook";

/// Names of the Running pods matching `selector` in [`NS`], without those being deleted.
fn live_pods(cluster: &Cluster, selector: &str) -> Result<Vec<String>> {
    let pods = json(cluster, &["get", "pods", "-n", NS, "-l", selector])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect())
}

/// Waits until Deployment `name` has rolled out completely: every replica updated, Ready and
/// no old pod left.
async fn rolled_out(cluster: &Cluster, name: &str) -> Result<()> {
    cluster.kubectl_ok(
        &[
            "rollout",
            "status",
            "-n",
            NS,
            &format!("deployment/{name}"),
            "--timeout=180s",
        ],
        None,
    )?;
    let selector = format!("app.kubernetes.io/name={name}");
    until(
        &format!("only {name}'s current pods to be left"),
        120,
        || {
            let d = json(cluster, &["get", "deployment", name, "-n", NS]);
            let pods = json(cluster, &["get", "pods", "-n", NS, "-l", &selector]);
            match (d, pods) {
                (Ok(d), Ok(p)) => {
                    let n = p["items"].as_array().map_or(0, Vec::len);
                    if d["spec"]["replicas"] == n && d["status"]["readyReplicas"] == n {
                        Poll::Ready(())
                    } else {
                        Poll::Pending(format!("{n} pods, deployment status {}", d["status"]))
                    }
                }
                (Err(e), _) | (_, Err(e)) => Poll::Pending(format!("{e:#}")),
            }
        },
    )
    .await
}

/// A webhook pod's own metric `name` (summed over labels matching `filter`), read through the
/// API server's pod proxy.
fn webhook_metric(cluster: &Cluster, pod: &str, name: &str, filter: &str) -> Result<f64> {
    let text = cluster.kubectl_ok(
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{NS}/pods/https:{pod}:15017/proxy/metrics"),
        ],
        None,
    )?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The operator's Lease holder (`<pod>_<pid>_<nonce>`), if any.
fn lease_holder(cluster: &Cluster) -> Option<String> {
    let l = json(cluster, &["get", "lease", "skjold-operator", "-n", NS]).ok()?;
    l["spec"]["holderIdentity"].as_str().map(String::from)
}

/// Issue 12, part 5: faults on the node under continuous pod creation (dry-run creates in an
/// injecting namespace, 20 ms apart: the whole admission chain through the webhook Service,
/// without flooding the node with pods to start). No admission may fail or go uninjected.
/// Installed with `operator.replicas=2` for the leader fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_faults_lose_no_admission() -> Result<()> {
    let cluster = Cluster::shared_node()?;
    let result = faults(cluster).await;
    result.map_err(|e| anyhow!("{e:#}\n--- logs ---\n{}", cluster.log_tails(25)))
}

struct Phase {
    what: &'static str,
    started: Instant,
    before: (usize, usize),
}

impl Phase {
    fn start(what: &'static str, load: &AdmissionLoad) -> Phase {
        Phase {
            what,
            started: Instant::now(),
            before: load.progress(),
        }
    }

    fn end(self, load: &AdmissionLoad, detail: &str) -> String {
        let (ok, failed) = load.progress();
        let line = format!(
            "{}: {:.1}s, {} admitted and injected, {} failed{detail}",
            self.what,
            self.started.elapsed().as_secs_f64(),
            ok - self.before.0,
            failed - self.before.1
        );
        println!("{line}");
        line
    }
}

async fn faults(cluster: &'static Cluster) -> Result<()> {
    let took = install(cluster, &["--set", "operator.replicas=2"])?;
    println!(
        "helm install (operator.replicas=2): {:.1}s",
        took.as_secs_f64()
    );
    let client = cluster.client().await?;
    in_namespace(
        cluster,
        "faults",
        &[("istio-injection", "enabled")],
        |ns| async move {
            let probe = pod("probe", &[], &[]);
            wait_for(
                "the in-cluster webhook to inject",
                Duration::from_secs(60),
                || {
                    let (client, ns, probe) = (client.clone(), ns.clone(), probe.clone());
                    async move {
                        match dry_run_pod(&client, &ns, &probe).await {
                            Ok(p) if is_injected(&p) => Poll::Ready(()),
                            Ok(_) => Poll::Pending("admitted without the sidecar".into()),
                            Err(e) => Poll::Pending(e.to_string()),
                        }
                    }
                },
            )
            .await?;
            let load = AdmissionLoad::start(
                client.clone(),
                &ns,
                Create::DryRun,
                Duration::from_millis(20),
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            let run = async {
                // 1. One of the two webhook pods deleted: it drains (readiness off, keep serving for
                //    shutdownDelayMs) while the Service moves to the other; a new pod replaces it.
                let phase = Phase::start("delete one of the two webhook pods", &load);
                let victim = live_pods(cluster, WEBHOOK_PODS)?
                    .into_iter()
                    .next()
                    .context("no webhook pod")?;
                cluster.kubectl_ok(&["delete", "pod", "-n", NS, &victim, "--wait=false"], None)?;
                until(
                    "the deleted webhook pod to be replaced",
                    120,
                    || match live_pods(cluster, WEBHOOK_PODS) {
                        Ok(p) if !p.contains(&victim) && p.len() == 2 => Poll::Ready(()),
                        Ok(p) => Poll::Pending(format!("{p:?}")),
                        Err(e) => Poll::Pending(format!("{e:#}")),
                    },
                )
                .await?;
                rolled_out(cluster, "skjold-webhook").await?;
                phase.end(&load, "");

                // 2. Serving certificate rotated: the Secret is re-issued by the operator, the
                //    kubelet updates both pods' Secret volumes, each webhook reloads.
                let phase = Phase::start("rotate the serving certificate", &load);
                let pods = live_pods(cluster, WEBHOOK_PODS)?;
                let reloads = |p: &str| {
                    webhook_metric(cluster, p, "skjold_webhook_certificate_reloads", "success")
                };
                let before: Vec<f64> = pods.iter().map(|p| reloads(p)).collect::<Result<_>>()?;
                let serving_cert = || {
                    cluster.kubectl_ok(
                        &[
                            "get",
                            "secret",
                            CERT_SECRET,
                            "-n",
                            NS,
                            "-o",
                            "jsonpath={.data.tls\\.crt}",
                        ],
                        None,
                    )
                };
                let old = serving_cert()?;
                cluster.kubectl_ok(&["delete", "secret", CERT_SECRET, "-n", NS], None)?;
                until(
                    "the operator to re-issue the serving certificate",
                    60,
                    || match serving_cert() {
                        Ok(new) if !new.is_empty() && new != old => Poll::Ready(()),
                        Ok(_) => Poll::Pending("not re-issued yet".into()),
                        Err(e) => Poll::Pending(format!("{e:#}")),
                    },
                )
                .await?;
                until(
                    "both webhook pods to reload the new certificate",
                    120,
                    || {
                        let now: Result<Vec<f64>> = pods.iter().map(|p| reloads(p)).collect();
                        match now {
                            Ok(now) if now.iter().zip(&before).all(|(n, b)| n > b) => {
                                Poll::Ready(())
                            }
                            Ok(now) => Poll::Pending(format!("reloads {before:?} -> {now:?}")),
                            Err(e) => Poll::Pending(format!("{e:#}")),
                        }
                    },
                )
                .await?;
                phase.end(
                    &load,
                    "; both pods reloaded it (kubelet Secret volume update)",
                );

                // 3. helm upgrade that rolls the webhook Deployment (maxUnavailable 0, maxSurge 1).
                let phase = Phase::start("helm upgrade rolling the webhook", &load);
                let chart = chart();
                cluster.helm(&[
                    "upgrade",
                    RELEASE,
                    &chart,
                    "-n",
                    NS,
                    "--reuse-values",
                    "--set",
                    "webhook.podAnnotations.skjold\\.io/restarted=fault-test",
                    "--wait",
                    "--timeout",
                    "4m",
                ])?;
                rolled_out(cluster, "skjold-webhook").await?;
                let rolled = live_pods(cluster, WEBHOOK_PODS)?;
                ensure!(
                    pods.iter().all(|p| !rolled.contains(p)),
                    "helm upgrade did not replace the webhook pods: {pods:?} -> {rolled:?}"
                );
                phase.end(&load, "");

                // 4. The operator pod holding the Lease deleted: it deletes the Lease as it stops,
                //    the standby replica takes it.
                let phase = Phase::start("delete the leading operator pod", &load);
                let holder = until("an operator to hold the Lease", 60, || {
                    lease_holder(cluster).into()
                })
                .await?;
                let leader_pod = holder.split('_').next().unwrap_or_default().to_string();
                let deleted = Instant::now();
                cluster.kubectl_ok(
                    &["delete", "pod", "-n", NS, &leader_pod, "--wait=false"],
                    None,
                )?;
                let successor =
                    until(
                        "the standby operator to take the Lease",
                        60,
                        || match lease_holder(cluster) {
                            Some(h) if !h.starts_with(&format!("{leader_pod}_")) => Poll::Ready(h),
                            other => Poll::Pending(format!("holder {other:?}")),
                        },
                    )
                    .await?;
                let gap = deleted.elapsed();
                // The new leader reconciles: an edit reaches the mesh ConfigMap.
                cluster.kubectl_ok(
                    &[
                        "patch",
                        "meshconfig",
                        "default",
                        "-n",
                        NS,
                        "--type=merge",
                        "-p",
                        r#"{"spec":{"meshConfig":{"accessLogFile":"/dev/stdout"}}}"#,
                    ],
                    None,
                )?;
                until("the new leader to apply an edit", 60, || {
                    match cluster.kubectl_ok(
                        &[
                            "get",
                            "configmap",
                            "istio",
                            "-n",
                            NS,
                            "-o",
                            "jsonpath={.data.mesh}",
                        ],
                        None,
                    ) {
                        Ok(m) if m.contains("accessLogFile: /dev/stdout") => Poll::Ready(()),
                        Ok(m) => Poll::Pending(m),
                        Err(e) => Poll::Pending(format!("{e:#}")),
                    }
                })
                .await?;
                rolled_out(cluster, "skjold-operator").await?;
                phase.end(
                    &load,
                    &format!(
                        "; Lease {leader_pod} -> {} after {:.1}s",
                        successor.split('_').next().unwrap_or_default(),
                        gap.as_secs_f64()
                    ),
                );
                anyhow::Ok(())
            }
            .await;
            let report = load.finish().await?;
            run?;
            println!(
                "node faults: {} admissions injected, {} failed",
                report.injected,
                report.failures.len()
            );
            report.ensure_clean("the node faults", 200)
        },
    )
    .await?;
    uninstall(cluster).await
}
