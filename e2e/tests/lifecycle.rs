//! End-to-end lifecycle on the local real control plane: the cluster itself, live MeshConfig
//! edits, webhook outage with `failurePolicy: Fail`, certificate rotation under load, and
//! revisions. Assertions are on objects read back from the API server.
//!
//! Run: `cargo test -p skjold-e2e --test lifecycle -- --test-threads=1` (see docs/e2e.md).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use skjold_e2e::k8s::{
    PROXY, api_message, container, create_namespace, create_pod, delete_namespace, dry_run_pod,
    is_injected, pod, resources, unique_name,
};
use skjold_e2e::load::{AdmissionLoad, Create};
use skjold_e2e::wait::{Poll, wait_for};
use skjold_e2e::{CERT_SECRET, CONTROL_PLANE_NS, Cluster, Mesh, WEBHOOK_CONFIG};

const WAIT: Duration = Duration::from_secs(60);

/// The API server, etcd and the controller manager work: a namespace and a Pod round-trip, and
/// a Pod gets its ServiceAccount token volume from the real admission chain.
#[tokio::test]
async fn cluster_round_trip() -> Result<()> {
    let cluster = Cluster::shared()?;
    let client = cluster.client().await?;
    let ns = create_namespace(&client, "roundtrip", &[("team", "e2e")]).await?;
    let stored_ns = Api::<Namespace>::all(client.clone()).get(&ns).await?;
    ensure!(
        stored_ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str)
            == Some("e2e"),
        "namespace labels not stored: {:?}",
        stored_ns.metadata.labels
    );
    create_pod(&client, &ns, &pod("p", &[], &[])).await?;
    let stored = Api::<Pod>::namespaced(client.clone(), &ns).get("p").await?;
    let volumes = stored
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    ensure!(
        volumes
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "ServiceAccount admission did not add the token volume: {volumes:?}"
    );
    let out = cluster.kubectl_ok(&["get", "pod", "p", "-n", &ns, "-o", "name"], None)?;
    ensure!(out.trim() == "pod/p", "kubectl sees {out:?}");
    delete_namespace(&client, &ns).await;
    Ok(())
}

/// The stored MeshConfig-derived mesh ConfigMap `istio` key `mesh`, parsed.
async fn mesh_settings(client: &Client, name: &str) -> Result<serde_yaml_ng::Value> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), CONTROL_PLANE_NS)
        .get(name)
        .await
        .with_context(|| format!("reading ConfigMap {CONTROL_PLANE_NS}/{name}"))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("mesh"))
        .ok_or_else(|| anyhow!("ConfigMap {name} has no key mesh"))?;
    serde_yaml_ng::from_str(text).with_context(|| format!("ConfigMap {name} key mesh"))
}

fn yaml_str<'a>(v: &'a serde_yaml_ng::Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        match cur.get(*key) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// Waits until the mesh ConfigMap satisfies `check` (a description of what it expects).
async fn wait_mesh(
    client: &Client,
    what: &str,
    check: impl Fn(&serde_yaml_ng::Value) -> bool,
) -> Result<()> {
    wait_for(&format!("mesh ConfigMap: {what}"), WAIT, || async {
        match mesh_settings(client, "istio").await {
            Ok(v) if check(&v) => Poll::Ready(()),
            Ok(v) => Poll::Pending(serde_yaml_ng::to_string(&v).unwrap_or_default()),
            Err(e) => Poll::Pending(format!("{e:#}")),
        }
    })
    .await
}

/// Dry-run pods in `ns` until the proxy's CPU request is `cpu` (the webhook applies injector
/// ConfigMap changes to the next admission, without restart).
async fn wait_proxy_cpu(client: &Client, ns: &str, cpu: &str) -> Result<Pod> {
    wait_for(
        &format!("next pod in {ns} to get proxy cpu request {cpu}"),
        WAIT,
        || async {
            match dry_run_pod(client, ns, &pod("probe", &[], &[])).await {
                Ok(p) => {
                    let got = container(&p, PROXY).map(|c| resources(c).0.get("cpu").cloned());
                    match got {
                        Some(Some(c)) if c == cpu => Poll::Ready(p),
                        other => Poll::Pending(format!("proxy cpu request {other:?}")),
                    }
                }
                Err(e) => Poll::Pending(api_message(&e)),
            }
        },
    )
    .await
}

/// `kubectl edit meshconfig default -n istio-system` with a scripted editor (sed) instead of a
/// human: the same client-side path as an interactive edit.
fn kubectl_edit(cluster: &Cluster, sed_expr: &str) -> Result<()> {
    let out = cluster
        .kubectl_command()
        .args(["edit", "meshconfig", "default", "-n", CONTROL_PLANE_NS])
        .env("KUBE_EDITOR", format!("sed -i -e '{sed_expr}'"))
        .output()
        .context("running kubectl edit")?;
    ensure!(
        out.status.success(),
        "kubectl edit ({sed_expr}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn patch_meshconfig(cluster: &Cluster, name: &str, patch: &serde_json::Value) -> Result<()> {
    cluster
        .kubectl_ok(
            &[
                "patch",
                "meshconfig",
                name,
                "-n",
                CONTROL_PLANE_NS,
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        )
        .map(drop)
}

/// Scenario 3: MeshConfig edits reach the mesh ConfigMap and the injector; the next pod
/// reflects them without restarting anything.
#[tokio::test]
async fn meshconfig_edits_apply_live() -> Result<()> {
    let mesh = Mesh::shared()?;
    let cluster = mesh.cluster();
    let client = cluster.client().await?;
    let ns = create_namespace(&client, "s3", &[("istio-injection", "enabled")]).await?;
    let result = mesh
        .with_logs(async {
            wait_mesh(&client, "initial access log /dev/stdout", |v| {
                yaml_str(v, &["accessLogFile"]) == "/dev/stdout"
            })
            .await?;
            wait_mesh(&client, "initial REGISTRY_ONLY", |v| {
                yaml_str(v, &["outboundTrafficPolicy", "mode"]) == "REGISTRY_ONLY"
            })
            .await?;

            // Access log off and on again, by `kubectl edit`.
            kubectl_edit(cluster, r##"s#accessLogFile: /dev/stdout#accessLogFile: ""#"##)?;
            wait_mesh(&client, "access log off", |v| yaml_str(v, &["accessLogFile"]).is_empty())
                .await?;
            kubectl_edit(cluster, r##"s#accessLogFile: ""#accessLogFile: /dev/stdout#"##)?;
            wait_mesh(&client, "access log back on", |v| {
                yaml_str(v, &["accessLogFile"]) == "/dev/stdout"
            })
            .await?;

            // Outbound policy both ways.
            kubectl_edit(cluster, "s#mode: REGISTRY_ONLY#mode: ALLOW_ANY#")?;
            wait_mesh(&client, "ALLOW_ANY", |v| {
                yaml_str(v, &["outboundTrafficPolicy", "mode"]) == "ALLOW_ANY"
            })
            .await?;
            patch_meshconfig(cluster, "default", &json!({"spec": {"meshConfig": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}}}))?;
            wait_mesh(&client, "REGISTRY_ONLY again", |v| {
                yaml_str(v, &["outboundTrafficPolicy", "mode"]) == "REGISTRY_ONLY"
            })
            .await?;

            // Proxy resources: the injector config changes and the next pod has them.
            wait_proxy_cpu(&client, &ns, "100m").await?;
            patch_meshconfig(
                cluster,
                "default",
                &json!({"spec": {"proxy": {"resources": {
                    "requests": {"cpu": "250m", "memory": "200Mi"},
                    "limits": {"cpu": "1", "memory": "512Mi"}}}}}),
            )?;
            let p = wait_proxy_cpu(&client, &ns, "250m").await?;
            let proxy = container(&p, PROXY).ok_or_else(|| anyhow!("no {PROXY}"))?;
            let (requests, limits) = resources(proxy);
            ensure!(
                requests.get("memory").map(String::as_str) == Some("200Mi")
                    && limits.get("cpu").map(String::as_str) == Some("1")
                    && limits.get("memory").map(String::as_str) == Some("512Mi"),
                "new proxy resources not applied: requests {requests:?} limits {limits:?}"
            );
            // A real (stored) pod too, not only dry runs.
            let stored = create_pod(&client, &ns, &pod("after-edit", &[], &[]))
                .await
                .map_err(|e| anyhow!("{}", api_message(&e)))?;
            let cpu = container(&stored, PROXY).and_then(|c| resources(c).0.get("cpu").cloned());
            ensure!(cpu.as_deref() == Some("250m"), "stored pod proxy cpu {cpu:?}");

            mesh.restore_default_meshconfig()?;
            wait_proxy_cpu(&client, &ns, "100m").await?;
            // Nothing was restarted to get here.
            mesh.check_processes()?;
            Ok(())
        })
        .await;
    let _ = mesh.restore_default_meshconfig();
    delete_namespace(&client, &ns).await;
    result
}

/// Scenario 4: with the webhook down and `failurePolicy: Fail`, pods in injected namespaces are
/// refused with a clear error while other namespaces work; once it is back, creation works.
#[tokio::test]
async fn webhook_outage_fails_closed_only_where_injecting() -> Result<()> {
    let mesh = Mesh::shared()?;
    let client = mesh.cluster().client().await?;
    let on = create_namespace(&client, "s4-on", &[("istio-injection", "enabled")]).await?;
    let plain = create_namespace(&client, "s4-plain", &[]).await?;
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(WEBHOOK_CONFIG)
        .await?;
    let policies: Vec<String> = mwc
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.failure_policy.clone().unwrap_or_default())
        .collect();
    mesh.stop_webhook();
    let outage = mesh
        .with_logs(async {
            ensure!(
                !policies.is_empty() && policies.iter().all(|p| p == "Fail"),
                "webhooks must have failurePolicy Fail, got {policies:?}"
            );
            let err = create_pod(&client, &on, &pod("refused", &[], &[]))
                .await
                .err()
                .ok_or_else(|| {
                    anyhow!("pod in injected namespace admitted while the webhook is down")
                })?;
            let msg = api_message(&err);
            ensure!(
                msg.contains("failed calling webhook") && msg.contains("sidecar-injector"),
                "unclear refusal: {msg}"
            );
            ensure!(
                Api::<Pod>::namespaced(client.clone(), &on)
                    .get_opt("refused")
                    .await?
                    .is_none(),
                "refused pod was stored"
            );
            let p = create_pod(&client, &plain, &pod("unaffected", &[], &[]))
                .await
                .map_err(|e| {
                    anyhow!(
                        "pod in unlabeled namespace refused during outage: {}",
                        api_message(&e)
                    )
                })?;
            ensure!(!is_injected(&p), "pod in unlabeled namespace was injected");
            Ok(())
        })
        .await;
    // Always bring the webhook back, even when the outage checks failed.
    let restarted = mesh.start_webhook().await;
    let recovered = mesh
        .with_logs(async {
            restarted?;
            let p = wait_for("pod creation to work again", WAIT, || async {
                create_pod(&client, &on, &pod(&unique_name("back"), &[], &[]))
                    .await
                    .map_err(|e| api_message(&e))
            })
            .await?;
            ensure!(is_injected(&p), "pod after recovery not injected");
            Ok(())
        })
        .await;
    delete_namespace(&client, &on).await;
    delete_namespace(&client, &plain).await;
    outage.and(recovered)
}

/// Scenario 6: certificates rotate (a new CA joins the bundle, then the serving certificate is
/// re-issued) while pods are created continuously; not one admission may fail.
#[tokio::test]
async fn certificate_rotation_under_load_loses_no_admission() -> Result<()> {
    let mesh = Mesh::shared()?;
    let client = mesh.cluster().client().await?;
    let ns = create_namespace(&client, "s6", &[("istio-injection", "enabled")]).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), CONTROL_PLANE_NS);
    let ca_secret = format!("{CERT_SECRET}-ca");

    // Load: one pod after the other until told to stop; every outcome recorded.
    let load = AdmissionLoad::start(
        client.clone(),
        &ns,
        Create::Stored,
        Duration::from_millis(20),
    );

    let rotation = mesh
        .with_logs(async {
            let volume = mesh.cert_volume();
            let first_serving = volume.read("tls.crt")?;
            let first_bundle = volume.read("ca.crt")?;
            tokio::time::sleep(Duration::from_secs(2)).await;

            // 1) CA rotation: the signing CA disappears; the operator must create a new one and
            //    add it to the bundle while the old CA (which signed the serving cert) stays.
            secrets
                .delete(&ca_secret, &Default::default())
                .await
                .with_context(|| format!("deleting Secret {ca_secret}"))?;
            let new_ca = wait_for(
                "a new CA in the webhook CA bundle and caBundle",
                WAIT,
                || async {
                    let bundle = match volume.read("ca.crt") {
                        Ok(b) => b,
                        Err(e) => return Poll::Pending(format!("{e:#}")),
                    };
                    let cas = skjold_certs::inspect_all(&bundle).unwrap_or_default();
                    let Ok(Some(ca)) = secrets.get_opt(&ca_secret).await else {
                        return Poll::Pending("CA Secret not recreated yet".into());
                    };
                    let ca_pem = secret_str(&ca, "tls.crt");
                    let mwc_bundle = mwc_ca_bundle(&client).await.unwrap_or_default();
                    if bundle != first_bundle
                        && cas.len() >= 2
                        && bundle.contains(ca_pem.trim())
                        && mwc_bundle.contains(ca_pem.trim())
                    {
                        Poll::Ready(ca)
                    } else {
                        Poll::Pending(format!(
                            "bundle holds {} CA(s); caBundle has new CA: {}",
                            cas.len(),
                            mwc_bundle.contains(ca_pem.trim())
                        ))
                    }
                },
            )
            .await?;
            ensure!(
                volume.read("tls.crt")? == first_serving,
                "the serving certificate must be kept while it is valid (only the bundle grows)"
            );

            // 2) Serving rotation: replace the serving cert by a short-lived one from the new CA
            //    (the webhook reloads it), which the operator must then re-issue as due.
            let ca = skjold_certs::CertificateAuthority::from_pem(
                &secret_str(&new_ca, "tls.crt"),
                &secret_str(&new_ca, "tls.key"),
            )?;
            let current = skjold_certs::inspect(&first_serving)?;
            let short = ca.issue_serving(
                &current.dns_names,
                &current.ip_addresses,
                Duration::from_secs(600),
            )?;
            let patch = json!({"data": {
                "tls.crt": ByteString(short.cert_pem.clone().into_bytes()),
                "tls.key": ByteString(short.key_pem.clone().into_bytes()),
            }});
            secrets
                .patch(CERT_SECRET, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context("installing a short-lived serving certificate")?;
            let reissued = wait_for(
                "the operator to re-issue the due serving certificate",
                WAIT,
                || async {
                    let Ok(cert) = volume.read("tls.crt") else {
                        return Poll::Pending("no tls.crt".into());
                    };
                    let Ok(info) = skjold_certs::inspect(&cert) else {
                        return Poll::Pending("unreadable tls.crt".into());
                    };
                    let left = info
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    if cert != short.cert_pem
                        && cert != first_serving
                        && left > Duration::from_secs(3600)
                    {
                        Poll::Ready(cert)
                    } else {
                        Poll::Pending(format!("serving cert valid for {}s more", left.as_secs()))
                    }
                },
            )
            .await?;
            skjold_certs::verify_signed_by(&reissued, ca.cert_pem())
                .context("the re-issued serving certificate must come from the new CA")?;
            // The webhook serves it: a handshake trusting only the new CA succeeds.
            wait_for(
                "the webhook to serve the re-issued certificate",
                WAIT,
                || async {
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], mesh.webhook_port()));
                    match skjold_e2e::https::https_get(addr, "127.0.0.1", ca.cert_pem(), "/readyz")
                        .await
                    {
                        Ok((200, _)) => Poll::Ready(()),
                        Ok((code, body)) => Poll::Pending(format!("HTTP {code} {body}")),
                        Err(e) => Poll::Pending(format!("{e:#}")),
                    }
                },
            )
            .await?;
            // Keep creating a little longer past the last swap.
            tokio::time::sleep(Duration::from_secs(3)).await;
            ensure!(
                volume.updates() >= 3,
                "expected at least 3 Secret volume updates, saw {}",
                volume.updates()
            );
            Ok(())
        })
        .await;
    let report = load.finish().await?;
    delete_namespace(&client, &ns).await;
    rotation?;
    println!(
        "rotation under load: {} pods admitted and injected, {} failed, {} Secret volume updates",
        report.injected,
        report.failures.len(),
        mesh.cert_volume().updates()
    );
    report.ensure_clean("certificate rotation", 20)
}

fn secret_str(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The caBundle of the default webhook configuration (all entries share it).
async fn mwc_ca_bundle(client: &Client) -> Result<String> {
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(WEBHOOK_CONFIG)
        .await?;
    let bundle = mwc
        .webhooks
        .iter()
        .flatten()
        .find_map(|w| w.client_config.ca_bundle.clone())
        .ok_or_else(|| anyhow!("no caBundle in {WEBHOOK_CONFIG}"))?;
    Ok(String::from_utf8_lossy(&bundle.0).into_owned())
}

/// Scenario 7: a canary revision's MeshConfig and a namespace labelled `istio.io/rev=canary`
/// get the canary injector config; the default revision is unaffected.
#[tokio::test]
async fn canary_revision_gets_its_own_injector_config() -> Result<()> {
    let mesh = Mesh::shared()?;
    let cluster = mesh.cluster();
    let client = cluster.client().await?;
    let canary_ns = create_namespace(&client, "s7-canary", &[("istio.io/rev", "canary")]).await?;
    let default_ns =
        create_namespace(&client, "s7-default", &[("istio-injection", "enabled")]).await?;
    let result = mesh
        .with_logs(async {
            cluster.apply_yaml(
                "apiVersion: skjold.io/v1alpha1
kind: MeshConfig
metadata:
  name: canary
  namespace: istio-system
spec:
  revision: canary
  profile: minimal
  proxy:
    resources:
      requests: {cpu: 77m, memory: 99Mi}
",
            )?;
            let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
            let canary_mwc = format!("{WEBHOOK_CONFIG}-canary");
            let mwc = wait_for(
                &format!("MutatingWebhookConfiguration {canary_mwc}"),
                WAIT,
                || async {
                    match mwcs.get_opt(&canary_mwc).await {
                        Ok(Some(m)) => Poll::Ready(m),
                        Ok(None) => Poll::Pending("not created by the operator yet".into()),
                        Err(e) => Poll::Pending(e.to_string()),
                    }
                },
            )
            .await?;
            let urls: Vec<String> = mwc
                .webhooks
                .iter()
                .flatten()
                .filter_map(|w| w.client_config.url.clone())
                .collect();
            ensure!(
                !urls.is_empty() && urls.iter().all(|u| u.ends_with("/inject/rev/canary")),
                "canary webhooks must call /inject/rev/canary, got {urls:?}"
            );

            let p = wait_proxy_cpu(&client, &canary_ns, "77m").await?;
            let mem = container(&p, PROXY).and_then(|c| resources(c).0.get("memory").cloned());
            ensure!(
                mem.as_deref() == Some("99Mi"),
                "canary proxy memory request {mem:?}"
            );
            let stored = create_pod(&client, &canary_ns, &pod("canary-pod", &[], &[]))
                .await
                .map_err(|e| anyhow!("{}", api_message(&e)))?;
            let cpu = container(&stored, PROXY).and_then(|c| resources(c).0.get("cpu").cloned());
            ensure!(
                cpu.as_deref() == Some("77m"),
                "stored canary pod proxy cpu {cpu:?}"
            );

            // The default revision keeps its own config.
            wait_proxy_cpu(&client, &default_ns, "100m").await?;

            // Removing the canary MeshConfig removes its webhook configuration (finalizer).
            cluster.kubectl_ok(
                &[
                    "delete",
                    "meshconfig",
                    "canary",
                    "-n",
                    CONTROL_PLANE_NS,
                    "--timeout=60s",
                ],
                None,
            )?;
            wait_for(&format!("{canary_mwc} to be removed"), WAIT, || async {
                match mwcs.get_opt(&canary_mwc).await {
                    Ok(None) => Poll::Ready(()),
                    Ok(Some(_)) => Poll::Pending("still present".into()),
                    Err(e) => Poll::Pending(e.to_string()),
                }
            })
            .await?;
            Ok(())
        })
        .await;
    let _ = cluster.kubectl(&[
        "delete",
        "meshconfig",
        "canary",
        "-n",
        CONTROL_PLANE_NS,
        "--ignore-not-found",
        "--wait=false",
    ]);
    delete_namespace(&client, &canary_ns).await;
    delete_namespace(&client, &default_ns).await;
    result
}

/// `skjold-cluster up` serves a working kubeconfig and, on SIGTERM, stops every process it
/// started and removes the kubeconfig it wrote.
#[tokio::test]
async fn skjold_cluster_up_tears_down_on_sigterm() -> Result<()> {
    // Cargo builds this package's binary for its integration tests.
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_skjold-cluster"));
    let tools = skjold_e2e::tools_bin_dir()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("up")
        .arg("--no-skjold")
        .arg("--kubeconfig-out")
        .arg(&kubeconfig);
    let mut up = skjold_e2e::Proc::spawn("skjold-cluster", cmd, &dir.path().join("up.log"))?;
    let kubectl = |args: &[&str]| {
        std::process::Command::new(tools.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
    };
    let result = async {
        wait_for("skjold-cluster up to serve kubectl", Duration::from_secs(120), || {
            // Synchronous checks (they need `&mut up`); the future only carries the result.
            let seen = match up.check_running() {
                Err(e) => Poll::Pending(format!("{e:#}")),
                Ok(()) => match kubectl(&["get", "namespace", "kube-system", "-o", "name"]) {
                    Ok(out) if out.status.success() => Poll::Ready(()),
                    Ok(out) => Poll::Pending(String::from_utf8_lossy(&out.stderr).into_owned()),
                    Err(e) => Poll::Pending(e.to_string()),
                },
            };
            std::future::ready(seen)
        })
        .await?;
        let children = child_pids(up.pid());
        ensure!(
            children.len() >= 3,
            "expected etcd, kube-apiserver and kube-controller-manager under skjold-cluster, found {children:?}"
        );
        // SAFETY: signalling the child we spawned and still own.
        unsafe {
            libc::kill(up.pid() as i32, libc::SIGTERM);
        }
        wait_for("skjold-cluster to exit after SIGTERM", Duration::from_secs(60), || {
            std::future::ready(match up.check_running() {
                Ok(()) => Poll::Pending("still running".into()),
                Err(e) => Poll::Ready(e.to_string()),
            })
        })
        .await
        .and_then(|exit| {
            ensure!(exit.contains("exit status: 0"), "unclean exit: {exit}");
            Ok(())
        })?;
        let alive: Vec<u32> = children
            .into_iter()
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        ensure!(alive.is_empty(), "processes left behind: {alive:?}");
        ensure!(!kubeconfig.exists(), "kubeconfig {} not removed", kubeconfig.display());
        Ok(())
    }
    .await;
    let log = up.log_tail(30);
    up.kill();
    result.map_err(|e| anyhow!("{e:#}\nskjold-cluster log:\n{log}"))
}

/// Direct children of `pid` (from /proc/<pid>/task/*/children).
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `skjold-cluster demo` (what `make demo` runs: a real node, `helm install` of the chart with the
/// guides' settings) prints the injected pod of the demo Deployment as the kubelet runs it, what
/// istiod serves its sidecar and the guides' mesh settings, then stops cleanly on SIGTERM.
#[tokio::test]
async fn skjold_cluster_demo_shows_injected_pod_and_mesh_config() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_skjold-cluster"));
    cmd.arg("demo").arg("--kubeconfig-out").arg(&kubeconfig);
    let log = dir.path().join("demo.log");
    let mut demo = skjold_e2e::Proc::spawn("skjold-cluster demo", cmd, &log)?;
    let result = async {
        let output = wait_for(
            "demo to finish its walkthrough",
            Duration::from_secs(420),
            || {
                let seen = match demo.check_running() {
                    Err(e) => Poll::Pending(format!("{e:#}")),
                    Ok(()) => match std::fs::read_to_string(&log) {
                        Ok(text) if text.contains("Press Ctrl-C") => Poll::Ready(text),
                        Ok(_) => Poll::Pending("walkthrough still running".into()),
                        Err(e) => Poll::Pending(e.to_string()),
                    },
                };
                std::future::ready(seen)
            },
        )
        .await?;
        for needle in [
            "Pod demo/demo-app-",
            "container     istio-proxy",
            "initContainer istio-init",
            "accessLogFile: /dev/stdout",
            "mode: REGISTRY_ONLY",
            "helm install skjold",
            "istio-init   exited 0",
            "app          running",
            "unknown outbound traffic -> BlackHoleCluster",
            "access log -> /dev/stdout",
            "export KUBECONFIG=",
        ] {
            ensure!(
                output.contains(needle),
                "demo output lacks {needle:?}:\n{output}"
            );
        }
        ensure!(
            kubeconfig.exists(),
            "demo did not write {}",
            kubeconfig.display()
        );
        // SAFETY: signalling the child we spawned and still own.
        unsafe {
            libc::kill(demo.pid() as i32, libc::SIGTERM);
        }
        let exit = wait_for(
            "demo to exit after SIGTERM",
            Duration::from_secs(60),
            || {
                std::future::ready(match demo.check_running() {
                    Ok(()) => Poll::Pending("still running".into()),
                    Err(e) => Poll::Ready(e.to_string()),
                })
            },
        )
        .await?;
        ensure!(exit.contains("exit status: 0"), "unclean exit: {exit}");
        ensure!(!kubeconfig.exists(), "kubeconfig not removed on exit");
        Ok(())
    }
    .await;
    let tail = demo.log_tail(60);
    demo.kill();
    result.map_err(|e| anyhow!("{e:#}\nskjold-cluster demo log:\n{tail}"))
}
