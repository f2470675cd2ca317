//! The Helm chart against the real local API server: `helm install` in out-of-cluster mode (no pods
//! run here, so the operator and webhook are local processes and the chart renders neither
//! Deployment), injection through the webhook configuration the operator derives from the chart's
//! MeshConfig, `helm upgrade` of a MeshConfig value reaching the mesh ConfigMap, and `helm uninstall`
//! leaving no webhook configuration that could block pod creation.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use skjold_e2e::{
    Cluster, Proc, SecretVolume, free_port, k8s, wait_for, workspace_bin, workspace_root,
};

/// Not `istio-system`: the cluster may be shared with the other suites' operator (SKJOLD_E2E_KUBECONFIG).
const NS: &str = "skjold-helm-e2e";
const RELEASE: &str = "skjold";
/// The operator appends the namespace to cluster-scoped names outside `istio-system`.
const MWC: &str = "skjold-sidecar-injector-skjold-helm-e2e";
const STEP: Duration = Duration::from_secs(90);

fn chart() -> PathBuf {
    workspace_root().join("helm/skjold")
}

fn start_operator(cluster: &Cluster, url: &str) -> Result<Proc> {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(workspace_bin("skjold-operator"));
    cmd.args([
        "run",
        "--namespace",
        NS,
        "--webhook-url",
        url,
        "--metrics-addr",
        &metrics,
    ])
    .env("KUBECONFIG", cluster.kubeconfig())
    .env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    Proc::spawn(
        "skjold-operator-helm",
        cmd,
        &cluster.log_path("skjold-operator-helm"),
    )
}

fn start_webhook(cluster: &Cluster, port: u16, volume: &SecretVolume) -> Result<Proc> {
    let mut cmd = Command::new(workspace_bin("skjold-webhook"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert-file")
        .arg(volume.dir().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(volume.dir().join("tls.key"))
        .args(["--kubernetes", "on", "--config-namespace", NS])
        .env("KUBECONFIG", cluster.kubeconfig())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    Proc::spawn(
        "skjold-webhook-helm",
        cmd,
        &cluster.log_path("skjold-webhook-helm"),
    )
}

fn meshconfigs(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("skjold.io", "v1alpha1", "MeshConfig");
    Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(&gvk, "meshconfigs"),
    )
}

/// `skjoldctl check -o json` against the helm-installed, out-of-cluster Skjold: the checks that do not
/// need running pods pass (the MeshConfig itself never becomes Ready here: istiod cannot start without
/// a kubelet).
fn skjoldctl_check(cluster: &Cluster) -> Result<()> {
    let bin = workspace_bin("skjoldctl");
    let out = Command::new(&bin)
        .args(["check", "-o", "json", "--namespace", NS])
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()
        .context("running skjoldctl check")?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "skjoldctl check -o json printed: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let status = |id: &str| {
        report["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["id"] == id))
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["message"].to_string(),
                )
            })
    };
    for id in [
        "kubernetes-api",
        "crd",
        "operator",
        "webhook",
        "webhook-configuration",
        "webhook-reachable",
        "ca-bundle",
        "certificate-expiry",
    ] {
        let (s, msg) = status(id).with_context(|| format!("no `{id}` check in {report}"))?;
        assert_eq!(s, "pass", "check {id}: {msg}");
    }
    let failed = report["summary"]["fail"].as_u64().unwrap_or(0);
    assert_eq!(
        out.status.code(),
        Some(if failed > 0 { 1 } else { 0 }),
        "exit code follows the failures"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_inject_upgrade_uninstall() -> Result<()> {
    let cluster = Cluster::shared()?;
    let client = cluster.client().await?;
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/inject");
    let chart = chart();
    let chart = chart.to_string_lossy();
    let values = workspace_root().join("helm/skjold/ci/out-of-cluster-values.yaml");
    let values = values.to_string_lossy();
    let url_value = format!("webhook.url={url}");

    // --- install: CRD from crds/, namespace, RBAC, the default MeshConfig; no Deployments ---------------
    cluster.helm(&[
        "install",
        RELEASE,
        &chart,
        "-n",
        NS,
        "--create-namespace",
        "-f",
        &values,
        "--set",
        &url_value,
        "--wait",
    ])?;
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("meshconfigs.skjold.io")
        .await?;
    assert!(
        crd.spec
            .versions
            .iter()
            .any(|v| v.name == "v1alpha1" && v.served)
    );
    let mc = meshconfigs(&client)
        .get("default")
        .await
        .context("the chart's default MeshConfig")?;
    assert_eq!(
        mc.data["spec"]["meshConfig"]["outboundTrafficPolicy"]["mode"],
        "ALLOW_ANY"
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    Api::<ClusterRole>::all(client.clone())
        .get("skjold-operator")
        .await
        .context("operator ClusterRole")?;

    // --- the local operator and webhook (out-of-cluster mode) -----------------------------------------
    let mut operator = start_operator(cluster, &url)?;
    let volume = SecretVolume::start(
        cluster.kubeconfig(),
        NS,
        "skjold-webhook-tls",
        &cluster.dir().join(format!("helm-tls-{port}")),
        STEP,
    )
    .await
    .with_context(|| {
        format!(
            "the operator did not issue the webhook Secret; logs:\n{}",
            cluster.log_tails(30)
        )
    })?;
    let mut webhook = start_webhook(cluster, port, &volume)?;

    let scenario = async {
        let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
        let m = wait_for(&format!("MutatingWebhookConfiguration {MWC}"), STEP, || {
            let mwcs = mwcs.clone();
            async move { mwcs.get_opt(MWC).await.ok().flatten() }
        })
        .await?;
        let first = &m.webhooks.as_ref().context("webhooks")?[0];
        assert!(
            first
                .client_config
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with(&url)),
            "URL mode: {:?}",
            first.client_config
        );

        // Injection: a pod in a labelled namespace gets the proxy (server-side dry run: no kubelet here).
        let app_ns =
            k8s::create_namespace(&client, "helm-app", &[("istio-injection", "enabled")]).await?;
        let injected = wait_for("an injected dry-run pod", STEP, || {
            let (client, app_ns) = (client.clone(), app_ns.clone());
            async move {
                match k8s::dry_run_pod(&client, &app_ns, &k8s::pod("web", &[], &[])).await {
                    Ok(p) if k8s::is_injected(&p) => Ok(p),
                    Ok(_) => Err("created without istio-proxy".to_string()),
                    Err(e) => Err(k8s::api_message(&e)),
                }
            }
        })
        .await?;
        assert!(k8s::is_injected(&injected));
        skjoldctl_check(cluster)?;

        // --- upgrade: a MeshConfig value changes and reaches the mesh ConfigMap ----------------------
        cluster.helm(&[
            "upgrade",
            RELEASE,
            &chart,
            "-n",
            NS,
            "-f",
            &values,
            "--set",
            &url_value,
            "--set",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
            "--wait",
        ])?;
        let mc = meshconfigs(&client).get("default").await?;
        assert_eq!(
            mc.data["spec"]["meshConfig"]["outboundTrafficPolicy"]["mode"],
            "REGISTRY_ONLY"
        );
        let cms = Api::<ConfigMap>::namespaced(client.clone(), NS);
        wait_for("mesh ConfigMap `istio` with REGISTRY_ONLY", STEP, || {
            let cms = cms.clone();
            async move {
                match cms.get_opt("istio").await {
                    Ok(Some(cm)) => {
                        let mesh = cm
                            .data
                            .and_then(|d| d.get("mesh").cloned())
                            .unwrap_or_default();
                        if mesh.contains("REGISTRY_ONLY") {
                            Ok(())
                        } else {
                            Err(format!("mesh is {mesh:?}"))
                        }
                    }
                    Ok(None) => Err("not found".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;

        // --- uninstall: no webhook configuration left behind, pods are created unhindered -------------
        cluster.helm(&[
            "uninstall",
            RELEASE,
            "-n",
            NS,
            "--wait",
            "--timeout",
            "120s",
        ])?;
        wait_for(&format!("{MWC} removed"), STEP, || {
            let mwcs = mwcs.clone();
            async move {
                match mwcs.get_opt(MWC).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err("still present".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;
        assert!(
            meshconfigs(&client).get_opt("default").await?.is_none(),
            "MeshConfig deleted"
        );
        assert!(
            Api::<ClusterRole>::all(client.clone())
                .get_opt("skjold-operator")
                .await?
                .is_none(),
            "chart RBAC deleted"
        );
        let after = k8s::create_pod(&client, &app_ns, &k8s::pod("after-uninstall", &[], &[])).await;
        let after = after.map_err(|e| {
            anyhow::anyhow!(
                "pod creation blocked after uninstall: {}",
                k8s::api_message(&e)
            )
        })?;
        assert!(!k8s::is_injected(&after), "nothing injects after uninstall");
        k8s::delete_namespace(&client, &app_ns).await;

        // --- the in-cluster value sets are accepted by the real API server (schemas, CEL rules of the
        // CRD, RBAC) even though their pods could never run here ------------------------------------
        for set in [
            "default-values",
            "hardened-values",
            "revision-demo-values",
            "single-replica-values",
        ] {
            let file = workspace_root().join(format!("helm/skjold/ci/{set}.yaml"));
            let rendered = cluster.helm(&[
                "template",
                RELEASE,
                &chart,
                "-n",
                NS,
                "-f",
                &file.to_string_lossy(),
            ])?;
            cluster
                .kubectl_ok(
                    &["apply", "--dry-run=server", "-n", NS, "-f", "-"],
                    Some(&rendered),
                )
                .with_context(|| format!("server-side dry run of ci/{set}.yaml"))?;
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = scenario.await;
    webhook.stop(Duration::from_secs(5));
    operator.stop(Duration::from_secs(5));
    result.map_err(|e| anyhow::anyhow!("{e:#}\n--- logs ---\n{}", cluster.log_tails(40)))
}
