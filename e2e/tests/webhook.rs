//! End-to-end injection through the real admission path: a local kube-apiserver calls
//! `skjold-webhook` (URL mode) as configured by `skjold-operator`; every assertion is on the
//! object the API server stored or on the error it returned.
//!
//! Run: `cargo test -p skjold-e2e --test webhook -- --test-threads=1` (see docs/e2e.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use skjold_e2e::k8s::{
    self, INIT, PROXY, api_message, container, container_names, create_namespace, create_pod,
    delete_namespace, is_injected, pod, resources,
};
use skjold_e2e::metrics::histogram;
use skjold_e2e::{Mesh, raw_get};

const INJECT_LABEL: &str = "sidecar.istio.io/inject";

/// The stored pod has the proxy and init containers, with the app container still first.
fn assert_injected(p: &Pod, what: &str) -> Result<()> {
    let (containers, init) = container_names(p);
    ensure!(
        containers.first().map(String::as_str) == Some("app"),
        "{what}: app container must stay first, got {containers:?}"
    );
    ensure!(
        containers.iter().any(|c| c == PROXY) || init.iter().any(|c| c == PROXY),
        "{what}: expected {PROXY}, got containers {containers:?} init {init:?}"
    );
    ensure!(
        init.iter().any(|c| c == INIT),
        "{what}: expected init container {INIT}, got {init:?}"
    );
    Ok(())
}

fn assert_not_injected(p: &Pod, what: &str) -> Result<()> {
    let (containers, init) = container_names(p);
    ensure!(
        containers == ["app"] && init.is_empty(),
        "{what}: expected the pod untouched, got containers {containers:?} init {init:?}"
    );
    Ok(())
}

async fn created(client: &Client, ns: &str, p: &Pod) -> Result<Pod> {
    let name = p.metadata.name.clone().unwrap_or_default();
    create_pod(client, ns, p)
        .await
        .map_err(|e| anyhow!("creating pod {ns}/{name}: {}", api_message(&e)))
}

/// Scenario 1: which pods get the sidecar, decided by namespace and pod labels.
#[tokio::test]
async fn injection_follows_namespace_and_pod_labels() -> Result<()> {
    let mesh = Mesh::shared()?;
    let client = mesh.cluster().client().await?;
    let on = create_namespace(&client, "s1-on", &[("istio-injection", "enabled")]).await?;
    let plain = create_namespace(&client, "s1-plain", &[]).await?;
    let disabled = create_namespace(&client, "s1-off", &[("istio-injection", "disabled")]).await?;
    let result = mesh
        .with_logs(async {
            // Labeled namespace: a bare Pod and a Deployment's Pods.
            let p = created(&client, &on, &pod("bare", &[], &[])).await?;
            assert_injected(&p, "pod in istio-injection=enabled namespace")?;

            let d = k8s::deployment("web", 2, &[])?;
            Api::<Deployment>::namespaced(client.clone(), &on)
                .create(&PostParams::default(), &d)
                .await
                .context("creating Deployment web")?;
            let pods = k8s::wait_for_pods(&client, &on, "web", 2).await?;
            for p in &pods {
                assert_injected(p, "Deployment pod in labeled namespace")?;
            }

            // Unlabeled and disabled namespaces are left alone.
            let p = created(&client, &plain, &pod("bare", &[], &[])).await?;
            assert_not_injected(&p, "pod in unlabeled namespace")?;
            let p = created(&client, &disabled, &pod("bare", &[], &[])).await?;
            assert_not_injected(&p, "pod in istio-injection=disabled namespace")?;

            // Pod-level opt-in and opt-out.
            let p = created(
                &client,
                &plain,
                &pod("optin", &[(INJECT_LABEL, "true")], &[]),
            )
            .await?;
            assert_injected(&p, "inject=true pod in unlabeled namespace")?;
            let p = created(
                &client,
                &on,
                &pod("optout", &[(INJECT_LABEL, "false")], &[]),
            )
            .await?;
            assert_not_injected(&p, "inject=false pod in labeled namespace")?;
            let p = created(
                &client,
                &disabled,
                &pod("optin", &[(INJECT_LABEL, "true")], &[]),
            )
            .await?;
            assert_not_injected(&p, "inject=true pod in istio-injection=disabled namespace")?;

            // kube-system is never touched, even when the pod asks for it.
            let name = k8s::unique_name("s1-system");
            let p = created(
                &client,
                "kube-system",
                &pod(&name, &[(INJECT_LABEL, "true")], &[]),
            )
            .await?;
            let _ = Api::<Pod>::namespaced(client.clone(), "kube-system")
                .delete(&name, &DeleteParams::default())
                .await;
            assert_not_injected(&p, "inject=true pod in kube-system")?;

            // The stored pods are what a later read returns (not only the create response).
            let stored = Api::<Pod>::namespaced(client.clone(), &on)
                .get("bare")
                .await?;
            assert_injected(&stored, "pod read back from the API server")?;
            Ok(())
        })
        .await;
    for ns in [&on, &plain, &disabled] {
        delete_namespace(&client, ns).await;
    }
    result
}

/// `skjoldctl explain` (offline) gives the same decision the real admission path took: for each
/// pod, its reason matches what the API server stored, and a refusal names the same annotation.
#[tokio::test]
async fn skjoldctl_explain_agrees_with_the_webhook() -> Result<()> {
    let mesh = Mesh::shared()?;
    let client = mesh.cluster().client().await?;
    let on = create_namespace(&client, "explain", &[("istio-injection", "enabled")]).await?;
    let dir = tempfile::tempdir()?;
    let explain = |p: &Pod| -> Result<(bool, String)> {
        let file = dir.path().join("pod.yaml");
        std::fs::write(&file, serde_yaml_ng::to_string(p)?)?;
        let out = std::process::Command::new(skjold_e2e::workspace_bin("skjoldctl"))
            .args([
                "explain",
                "-n",
                &on,
                "--namespace-labels",
                "istio-injection=enabled",
                "-f",
            ])
            .arg(&file)
            .output()
            .context("running skjoldctl explain")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };
    let result = mesh
        .with_logs(async {
            let plain = pod("plain", &[], &[]);
            let stored = created(&client, &on, &plain).await?;
            assert_injected(&stored, "plain pod")?;
            let (ok, text) = explain(&plain)?;
            ensure!(
                ok && text.contains("reason: injected"),
                "explain said: {text}"
            );

            // Opt-out by annotation: the objectSelector cannot see it, so the webhook is called
            // and skips the pod; explain must name the same reason.
            let optout = pod("optout", &[], &[(INJECT_LABEL, "false")]);
            let stored = created(&client, &on, &optout).await?;
            assert_not_injected(&stored, "annotation inject=false pod")?;
            let (ok, text) = explain(&optout)?;
            ensure!(
                ok && text.contains("disabled-by-annotation"),
                "explain said: {text}"
            );

            // An invalid value: the API server refuses the pod, explain exits 1, both name it.
            let bad = pod("bad", &[], &[("sidecar.istio.io/proxyCPU", "lots")]);
            let err = create_pod(&client, &on, &bad)
                .await
                .err()
                .map(|e| api_message(&e))
                .ok_or_else(|| anyhow!("pod with proxyCPU=lots was admitted"))?;
            ensure!(
                err.contains("sidecar.istio.io/proxyCPU=\"lots\""),
                "API error: {err}"
            );
            let (ok, text) = explain(&bad)?;
            ensure!(
                !ok && text.contains("sidecar.istio.io/proxyCPU=\"lots\""),
                "explain said: {text}"
            );
            Ok(())
        })
        .await;
    delete_namespace(&client, &on).await;
    result
}

/// Scenario 2: the guides' resource annotations land on the stored proxy container; invalid
/// ones are refused with the webhook's message, visible to `kubectl`.
#[tokio::test]
async fn resource_annotations_are_applied_or_refused() -> Result<()> {
    let mesh = Mesh::shared()?;
    let cluster = mesh.cluster();
    let client = cluster.client().await?;
    let ns = create_namespace(&client, "s2", &[("istio-injection", "enabled")]).await?;
    let result = mesh
        .with_logs(async {
            let annotated = pod(
                "sized",
                &[],
                &[
                    ("sidecar.istio.io/proxyCPU", "100m"),
                    ("sidecar.istio.io/proxyMemory", "128Mi"),
                    ("sidecar.istio.io/proxyCPULimit", "2000m"),
                    ("sidecar.istio.io/proxyMemoryLimit", "1024Mi"),
                ],
            );
            created(&client, &ns, &annotated).await?;
            let stored = Api::<Pod>::namespaced(client.clone(), &ns).get("sized").await?;
            assert_injected(&stored, "annotated pod")?;
            let proxy = container(&stored, PROXY).ok_or_else(|| anyhow!("no {PROXY}"))?;
            let (requests, limits) = resources(proxy);
            // The API server stores canonical quantities: 2000m -> 2, 1024Mi -> 1Gi.
            let expect = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            ensure!(
                requests == expect(&[("cpu", "100m"), ("memory", "128Mi")]),
                "proxy requests {requests:?}"
            );
            ensure!(
                limits == expect(&[("cpu", "2"), ("memory", "1Gi")]),
                "proxy limits {limits:?}"
            );

            // Per-field override (a deliberate improvement over Istio): only proxyCPU set keeps
            // the other defaults.
            created(
                &client,
                &ns,
                &pod("cpu-only", &[], &[("sidecar.istio.io/proxyCPU", "300m")]),
            )
            .await?;
            let stored = Api::<Pod>::namespaced(client.clone(), &ns).get("cpu-only").await?;
            let proxy = container(&stored, PROXY).ok_or_else(|| anyhow!("no {PROXY}"))?;
            let (requests, limits) = resources(proxy);
            ensure!(
                requests.get("cpu").map(String::as_str) == Some("300m")
                    && requests.get("memory").map(String::as_str) == Some("128Mi")
                    && limits.get("cpu").map(String::as_str) == Some("2"),
                "proxyCPU alone must keep the other defaults: requests {requests:?} limits {limits:?}"
            );

            // Invalid values through kubectl: refused, the webhook's message on stderr, not stored.
            for (name, annotations, must_name) in [
                (
                    "bad-cpu",
                    vec![("sidecar.istio.io/proxyCPU", "lots")],
                    vec!["proxyCPU", "lots"],
                ),
                (
                    "req-over-limit",
                    vec![
                        ("sidecar.istio.io/proxyCPU", "3"),
                        ("sidecar.istio.io/proxyCPULimit", "2"),
                    ],
                    vec!["proxyCPU"],
                ),
            ] {
                let manifest = serde_yaml_ng::to_string(&pod(name, &[], &annotations))?;
                let out = cluster.kubectl_with_stdin(
                    &["apply", "-n", &ns, "-f", "-"],
                    Some(&manifest),
                )?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                ensure!(!out.status.success(), "kubectl apply of {name} must fail; stderr: {stderr}");
                ensure!(
                    stderr.contains("denied the request"),
                    "{name}: expected an admission denial, got: {stderr}"
                );
                for needle in must_name {
                    ensure!(stderr.contains(needle), "{name}: message must name {needle:?}: {stderr}");
                }
                let stored = Api::<Pod>::namespaced(client.clone(), &ns).get_opt(name).await?;
                ensure!(stored.is_none(), "refused pod {name} must not be stored");
            }
            Ok(())
        })
        .await;
    delete_namespace(&client, &ns).await;
    result
}

/// Benchmark (ignored by default; `cargo test -p skjold-e2e --test webhook -- --ignored
/// --nocapture`): create 1,000 pods in an injected namespace and report the API server's own
/// view of our webhook's latency (`apiserver_admission_webhook_admission_duration_seconds`),
/// the webhook's histogram and the client-side create latency.
#[tokio::test]
#[ignore = "benchmark: 1,000 pods; run explicitly"]
async fn bench_admission_latency_1000_pods() -> Result<()> {
    const PODS: usize = 1000;
    const CONCURRENCY: usize = 8;
    let mesh = Mesh::shared()?;
    let client = mesh.cluster().client().await?;
    let ns = create_namespace(&client, "bench", &[("istio-injection", "enabled")]).await?;
    let metric = "apiserver_admission_webhook_admission_duration_seconds";
    let ours = |l: &BTreeMap<String, String>| {
        l.get("name")
            .is_some_and(|n| n.contains("sidecar-injector"))
            && l.get("type").map(String::as_str) == Some("admit")
    };
    // A/B in the same run: the same creates in a namespace the webhook is not called for.
    let plain = create_namespace(&client, "bench-plain", &[]).await?;
    let creates = |ns: String, injected: bool| {
        let client = client.clone();
        async move {
            stream::iter(0..PODS)
                .map(|i| {
                    let (client, ns) = (client.clone(), ns.clone());
                    async move {
                        let t = Instant::now();
                        let p = create_pod(&client, &ns, &pod(&format!("p{i}"), &[], &[]))
                            .await
                            .map_err(|e| anyhow!("pod p{i}: {}", api_message(&e)))?;
                        ensure!(
                            is_injected(&p) == injected,
                            "pod p{i}: injected is not {injected}"
                        );
                        Ok(t.elapsed())
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<Result<Duration>>>()
                .await
        }
    };
    let decisions = |m: &str, reason: &str| {
        let key = format!("skjold_webhook_decisions_total{{reason=\"{reason}\"}}");
        m.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (_, m0) = mesh.webhook_get("/metrics").await?;
    let without: Vec<Result<Duration>> = creates(plain.clone(), false).await;
    let before = histogram(&raw_get(&client, "/metrics").await?, metric, ours);
    let started = Instant::now();
    let latencies: Vec<Result<Duration>> = creates(ns.clone(), true).await;
    let wall = started.elapsed();
    let (_, m1) = mesh.webhook_get("/metrics").await?;
    let after = histogram(&raw_get(&client, "/metrics").await?, metric, ours);
    let errors: Vec<String> = latencies
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    let mut client_ms: Vec<f64> = latencies
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|d| d.as_secs_f64() * 1e3))
        .collect();
    client_ms.sort_by(f64::total_cmp);
    let pct = |v: &[f64], q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let delta = after.minus(&before);
    let (status, webhook_metrics) = mesh.webhook_get("/metrics").await?;
    ensure!(status == 200, "webhook /metrics answered {status}");
    let webhook_hist = histogram(
        &webhook_metrics,
        "skjold_webhook_request_duration_seconds",
        |_| true,
    );
    println!(
        "pods created: {} in {:.1}s ({:.0}/s, concurrency {CONCURRENCY}), errors: {}",
        client_ms.len(),
        wall.as_secs_f64(),
        client_ms.len() as f64 / wall.as_secs_f64(),
        errors.len()
    );
    println!(
        "apiserver_admission_webhook_admission_duration_seconds (our webhooks, {} calls): p50 {:.2} ms, p99 {:.2} ms (bucket-interpolated; buckets {:?})",
        delta.count,
        delta.quantile(0.5).unwrap_or(f64::NAN) * 1e3,
        delta.quantile(0.99).unwrap_or(f64::NAN) * 1e3,
        delta.buckets.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    println!(
        "skjold_webhook_request_duration_seconds (all requests so far, {} calls): p50 {:.2} ms, p99 {:.2} ms",
        webhook_hist.count,
        webhook_hist.quantile(0.5).unwrap_or(f64::NAN) * 1e3,
        webhook_hist.quantile(0.99).unwrap_or(f64::NAN) * 1e3
    );
    println!(
        "client-side pod create (whole API request): p50 {:.2} ms, p99 {:.2} ms",
        pct(&client_ms, 0.5).unwrap_or(f64::NAN),
        pct(&client_ms, 0.99).unwrap_or(f64::NAN)
    );
    let mut plain_ms: Vec<f64> = without
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|d| d.as_secs_f64() * 1e3))
        .collect();
    plain_ms.sort_by(f64::total_cmp);
    let added = |q: f64| {
        pct(&client_ms, q)
            .zip(pct(&plain_ms, q))
            .map(|(a, b)| a - b)
    };
    println!(
        "same creates without the webhook in the path: p50 {:.2} ms, p99 {:.2} ms -> the webhook adds p50 {:.2} ms, p99 {:.2} ms (goal p50 < 1 ms, p99 < 5 ms)",
        pct(&plain_ms, 0.5).unwrap_or(f64::NAN),
        pct(&plain_ms, 0.99).unwrap_or(f64::NAN),
        added(0.5).unwrap_or(f64::NAN),
        added(0.99).unwrap_or(f64::NAN)
    );
    let reinvoked = decisions(&m1, "already-injected") - decisions(&m0, "already-injected");
    let injected = decisions(&m1, "injected") - decisions(&m0, "injected");
    println!(
        "webhook calls per pod: {:.2} ({injected:.0} injected + {reinvoked:.0} answered already-injected: the reinvocationPolicy IfNeeded call after the ServiceAccount plugin re-ran)",
        (injected + reinvoked) / PODS as f64
    );
    delete_namespace(&client, &ns).await;
    delete_namespace(&client, &plain).await;
    ensure!(
        errors.is_empty(),
        "{} pod creates failed, first: {}",
        errors.len(),
        errors[0]
    );
    ensure!(
        delta.count >= PODS as f64,
        "API server saw only {} webhook calls",
        delta.count
    );
    Ok(())
}

/// Istio's `auto` rule for native sidecars, through the webhook's Node watch: with
/// `proxy.nativeSidecar` unset, pods get a native `istio-proxy` (an init container with
/// `restartPolicy: Always`) once every node's kubelet reports >= 1.33, and classic again as soon as
/// an older node joins.
#[tokio::test]
async fn native_sidecars_follow_the_kubelet_versions() -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams};
    let mesh = Mesh::shared()?;
    let client = mesh.cluster().client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let others: Vec<String> = nodes
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let ns = create_namespace(&client, "native", &[("istio-injection", "enabled")]).await?;
    let add_node = |name: &'static str, version: &'static str| {
        let nodes = nodes.clone();
        async move {
            let node: Node = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            }))?;
            nodes.create(&PostParams::default(), &node).await?;
            let status = serde_json::json!({"status": {"nodeInfo": {
                "kubeletVersion": version, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
                "osImage": "", "systemUUID": ""}}});
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
            anyhow::Ok(())
        }
    };
    let mode = |client: Client, ns: String| async move {
        let p = k8s::dry_run_pod(&client, &ns, &pod("probe", &[], &[])).await?;
        let (containers, init) = container_names(&p);
        let native = init.iter().any(|c| c == PROXY)
            && p.spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|l| {
                    l.iter()
                        .any(|c| c.name == PROXY && c.restart_policy.as_deref() == Some("Always"))
                });
        anyhow::Ok((native, containers.iter().any(|c| c == PROXY)))
    };
    let wait_mode = |want_native: bool, what: &'static str| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let start = Instant::now();
            loop {
                let (native, classic) = mode(client.clone(), ns.clone()).await?;
                if native == want_native && classic != want_native {
                    return anyhow::Ok(start.elapsed());
                }
                ensure!(
                    start.elapsed() < Duration::from_secs(15),
                    "{what}: istio-proxy native={native} classic={classic} after 15 s"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let result = mesh
        .with_logs(async {
            add_node("e2e-kubelet-1-34", "v1.34.4").await?;
            if others.is_empty() {
                let took = wait_mode(true, "every node at kubelet 1.34").await?;
                println!(
                    "every kubelet >= 1.33 -> native istio-proxy after {:.2}s",
                    took.as_secs_f64()
                );
            } else {
                // The cluster's own nodes report no kubelet version (the stand-in): classic.
                wait_mode(false, "a node without a kubelet version").await?;
            }
            add_node("e2e-kubelet-1-31", "v1.31.2").await?;
            let took = wait_mode(false, "a kubelet 1.31 node joined").await?;
            println!(
                "a kubelet 1.31 node joins -> classic istio-proxy after {:.2}s",
                took.as_secs_f64()
            );
            // The pod's annotation still decides over the nodes.
            let annotated = pod("probe", &[], &[("sidecar.istio.io/nativeSidecar", "true")]);
            let p = k8s::dry_run_pod(&client, &ns, &annotated).await?;
            ensure!(
                container_names(&p).1.iter().any(|c| c == PROXY),
                "the nativeSidecar annotation must win over the nodes: {:?}",
                container_names(&p)
            );
            anyhow::Ok(())
        })
        .await;
    for name in ["e2e-kubelet-1-34", "e2e-kubelet-1-31"] {
        let _ = nodes.delete(name, &DeleteParams::default()).await;
    }
    delete_namespace(&client, &ns).await;
    result
}

/// Events on the owning workload: a Deployment whose pods the injector refuses (an invalid
/// resource annotation) gets `InjectionRefused` on its ReplicaSet with the injector's message,
/// and one whose pods are injected with a warning (a misspelt annotation key) gets
/// `InjectedWithWarnings`; a second refused pod of the same ReplicaSet adds no second Event.
#[tokio::test]
async fn events_on_the_owning_replicaset() -> Result<()> {
    use k8s_openapi::api::core::v1::Event;
    let mesh = Mesh::shared()?;
    let client = mesh.cluster().client().await?;
    let ns = create_namespace(&client, "events", &[("istio-injection", "enabled")]).await?;
    let deploy = |name: &str, annotation: (&str, &str)| -> Result<Deployment> {
        let mut d = k8s::deployment(name, 2, &[])?;
        let t = d
            .spec
            .as_mut()
            .and_then(|s| s.template.metadata.as_mut())
            .context("template")?;
        t.annotations = Some([(annotation.0.to_string(), annotation.1.to_string())].into());
        Ok(d)
    };
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let wait_event = |reason: &'static str| {
        let events = events.clone();
        async move {
            let start = Instant::now();
            loop {
                let found: Vec<Event> = events
                    .list(&Default::default())
                    .await?
                    .items
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some(reason))
                    .collect();
                if !found.is_empty() {
                    return anyhow::Ok((found, start.elapsed()));
                }
                ensure!(
                    start.elapsed() < Duration::from_secs(30),
                    "no {reason} Event after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let result = mesh
        .with_logs(async {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            deployments
                .create(
                    &PostParams::default(),
                    &deploy("refused", ("sidecar.istio.io/proxyCPU", "lots"))?,
                )
                .await?;
            deployments
                .create(
                    &PostParams::default(),
                    &deploy("warned", ("sidecar.istio.io/proxyCpu", "100m"))?,
                )
                .await?;
            let (refused, took) = wait_event("InjectionRefused").await?;
            let e = &refused[0];
            ensure!(
                e.involved_object.kind.as_deref() == Some("ReplicaSet")
                    && e.involved_object
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("refused-")),
                "InjectionRefused on {:?}",
                e.involved_object
            );
            let msg = e.message.clone().unwrap_or_default();
            ensure!(
                msg.contains("sidecar.istio.io/proxyCPU") && msg.contains("lots"),
                "the Event names the annotation and value: {msg}"
            );
            println!(
                "refused pods -> InjectionRefused on the ReplicaSet after {:.2}s: {msg}",
                took.as_secs_f64()
            );
            let (warned, _) = wait_event("InjectedWithWarnings").await?;
            let msg = warned[0].message.clone().unwrap_or_default();
            ensure!(msg.contains("proxyCpu"), "the warning names the key: {msg}");
            // The ReplicaSet keeps retrying its two pods: still one Event per reason (the
            // series count may grow, the objects do not).
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (refused, _) = wait_event("InjectionRefused").await?;
            ensure!(
                refused.len() == 1,
                "rate limit: {} InjectionRefused Events",
                refused.len()
            );
            anyhow::Ok(())
        })
        .await;
    delete_namespace(&client, &ns).await;
    result
}
