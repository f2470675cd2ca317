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

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;
use skjold_e2e::k8s::in_namespace;
use skjold_e2e::node::{BUSYBOX_IMAGE, NODE_NAME, node_bin_dir};
use skjold_e2e::{Cluster, Poll, images, wait_for, workspace_root};

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

async fn scenario(cluster: &'static Cluster) -> Result<()> {
    let chart = chart();
    let paths = cluster
        .node_paths()
        .ok_or_else(|| anyhow!("the cluster has no node"))?
        .clone();
    let sandbox = cluster
        .node_sandbox()
        .ok_or_else(|| anyhow!("the cluster has no node sandbox"))?;

    // --- images under the names the chart and the operator render ---------------------------
    let started = Instant::now();
    let mut template = vec!["template", RELEASE, &chart, "-n", NS];
    template.extend(VALUES);
    let rendered = cluster.helm(&template)?;
    let bins = node_bin_dir()?;
    let imgs = images::install_images(&rendered)?;
    let names: Vec<&str> = imgs.iter().map(|i| i.name.as_str()).collect();
    for image in &imgs {
        image.import(&bins, &paths.dir.join("images"), &paths.containerd_socket)?;
    }
    println!(
        "{} images built and imported in {:.1}s: {}",
        imgs.len(),
        started.elapsed().as_secs_f64(),
        names.join(", ")
    );

    // --- helm install with the chart's defaults ---------------------------------------------
    let started = Instant::now();
    let mut install = vec![
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
    install.extend(VALUES);
    cluster.helm(&install)?;
    let installed = started.elapsed();
    for (deploy, want) in [("skjold-operator", 1), ("skjold-webhook", 2)] {
        let d = json(cluster, &["get", "deployment", deploy, "-n", NS])?;
        ensure!(
            d["status"]["readyReplicas"] == want,
            "{deploy}: {} of {want} replicas ready",
            d["status"]["readyReplicas"]
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

    // --- helm uninstall: the pre-delete hook deletes the MeshConfig while the operator runs ---------
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
    // The operator's own state: its certificate Secrets go with the last MeshConfig, its Lease
    // when it stops (its pod terminates after helm returns, hence the wait).
    let leftovers = until("the operator's Secrets and Lease to be gone", 60, || {
        let out = cluster.kubectl(&[
            "get",
            "-n",
            NS,
            "secret/skjold-webhook-tls",
            "secret/skjold-webhook-tls-ca",
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
