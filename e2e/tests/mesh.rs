//! A working mesh: istiod runs from exactly the Deployment, RBAC and ConfigMaps the operator
//! rendered (as a Pod of that Deployment, with its own ServiceAccount token), the MeshConfig
//! reports it Available, and what istiod serves the sidecar of an injected Pod (read with Istio's
//! own xDS client) follows the guides' settings: access log, outbound policy, canary routes and
//! PeerAuthentication STRICT, changing live on `kubectl patch meshconfig`.
//!
//! Run: `cargo test -p skjold-e2e --test mesh -- --test-threads=1` (see docs/e2e.md).

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use skjold_e2e::istio::{Istiod, XdsProbe, access_logs, report_pod_running};
use skjold_e2e::k8s::{create_namespace, delete_namespace, in_namespace, is_injected, pod};
use skjold_e2e::{CONTROL_PLANE_NS, Cluster, Mesh, Poll, block_on_fresh_runtime, wait_for};
use skjold_operator::crd::MeshConfig;

/// istiod needs its informers synced and its CA, DNS and webhook certificates before `/ready`.
const ISTIOD_READY: Duration = Duration::from_secs(180);
/// The guides' promise: mesh-wide edits reach the proxies within seconds, without restarts.
/// Typically 0.2 s here; the bound covers istiod's own debounce, which holds a push back for up
/// to `PILOT_DEBOUNCE_MAX` (10 s) while other changes keep arriving.
const PUSH: Duration = Duration::from_secs(15);
/// The operator's half of an edit (MeshConfig -> ConfigMap `istio`): the issue's 5 s.
const RENDER: Duration = Duration::from_secs(5);
/// How long istiod must have started no push before a mesh edit (see `Istiod::wait_push_quiet`):
/// several debounce periods (100 ms each).
const QUIET: Duration = Duration::from_millis(1500);

/// Skjold (operator + webhook) and istiod of this test process, started once.
fn mesh() -> Result<(&'static Mesh<'static>, &'static Istiod)> {
    static ISTIOD: OnceLock<Result<Istiod, String>> = OnceLock::new();
    let mesh = Mesh::shared()?;
    let istiod = ISTIOD.get_or_init(|| {
        block_on_fresh_runtime(Istiod::start(mesh.cluster(), ISTIOD_READY))
            .map_err(|e| format!("{e:#}\n--- logs ---\n{}", mesh.logs(30)))
    });
    let istiod = istiod
        .as_ref()
        .map_err(|e| anyhow!("istiod did not start: {e}"))?;
    Ok((mesh, istiod))
}

/// `kubectl auth can-i VERB RESOURCE` as istiod's ServiceAccount.
fn istiod_can(cluster: &Cluster, verb: &str, resource: &str) -> Result<bool> {
    let out = cluster.kubectl(&[
        "auth",
        "can-i",
        verb,
        resource,
        "--as",
        &format!("system:serviceaccount:{CONTROL_PLANE_NS}:istiod"),
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
}

/// istiod starts from the rendered Deployment with its own ServiceAccount token, becomes ready
/// (its readiness probe, as a kubelet would run it), and the MeshConfig then reports it Available
/// through the Deployment's status. Its RBAC is what made that possible and no more.
#[tokio::test]
async fn istiod_runs_from_the_rendered_deployment() -> Result<()> {
    let (mesh, istiod) = mesh()?;
    let cluster = mesh.cluster();
    println!(
        "istiod ready {:.1}s after start",
        istiod.ready_after.as_secs_f64()
    );
    let log = istiod.log();
    ensure!(
        !log.contains("is forbidden"),
        "istiod was refused by RBAC:\n{}",
        log.lines()
            .filter(|l| l.contains("forbidden"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // What istiod needs, and what it must not have.
    for (verb, res) in [
        (
            "list",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        ),
        (
            "watch",
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
        ),
        ("list", "destinationrules.networking.istio.io"),
        ("create", "tokenreviews.authentication.k8s.io"),
    ] {
        ensure!(
            istiod_can(cluster, verb, res)?,
            "istiod cannot {verb} {res}"
        );
    }
    for (verb, res) in [
        (
            "update",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/skjold-sidecar-injector",
        ),
        (
            "delete",
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
        ),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "deployments.apps"),
    ] {
        ensure!(
            !istiod_can(cluster, verb, res)?,
            "istiod may {verb} {res}: more than it needs"
        );
    }

    let client = cluster.client().await?;
    let mcs: Api<MeshConfig> = Api::namespaced(client, CONTROL_PLANE_NS);
    wait_for(
        "MeshConfig default to report istiod Available",
        Duration::from_secs(60),
        || {
            let mcs = mcs.clone();
            async move {
                let mc = match mcs.get("default").await {
                    Ok(mc) => mc,
                    Err(e) => return Poll::Pending(e.to_string()),
                };
                let comps = mc
                    .status
                    .as_ref()
                    .map(|s| s.components.clone())
                    .unwrap_or_default();
                match comps.get("istiod") {
                    Some(c) if c.state == skjold_operator::crd::ComponentState::Available => {
                        Poll::Ready(())
                    }
                    other => Poll::Pending(format!("istiod component: {other:?}")),
                }
            }
        },
    )
    .await?;
    Ok(())
}

/// A Pod in an `istio-injection=enabled` namespace, injected by the webhook, reported running
/// with `ip`; returns it as stored.
async fn injected_pod(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    ip: &str,
) -> Result<Pod> {
    let client = cluster.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let created = pods
        .create(&Default::default(), &pod(name, labels, &[]))
        .await
        .with_context(|| format!("creating Pod {ns}/{name}"))?;
    ensure!(is_injected(&created), "Pod {ns}/{name} was not injected");
    report_pod_running(cluster, ns, name, ip).await
}

/// What istiod did after an edit that did not arrive: the mesh config it holds itself, its last
/// pushes and mesh reloads, and the probe's last lines.
async fn push_diagnostics(istiod: &Istiod, probe: &XdsProbe) -> String {
    let held = match istiod.debug_mesh().await {
        Ok(m) => format!(
            "outboundTrafficPolicy {}, accessLogFile {}, accessLogEncoding {}",
            m["outboundTrafficPolicy"], m["accessLogFile"], m["accessLogEncoding"]
        ),
        Err(e) => format!("{e:#}"),
    };
    let log = istiod.log();
    let pushes: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("Push debounce") || l.contains("mesh configuration") || l.contains("error")
        })
        .collect();
    format!(
        "--- istiod holds (/debug/mesh) ---\n{held}\n--- istiod: last pushes and mesh reloads ---\n{}\n--- xds probe ---\n{}",
        pushes[pushes.len().saturating_sub(8)..].join("\n"),
        probe
            .log_tail(3)
            .lines()
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn outbound(s: &Value) -> String {
    s["outbound_catch_all"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The guides' mesh settings in istiod's own output, and live edits of them.
#[tokio::test]
async fn istiod_serves_access_log_and_outbound_policy_and_follows_edits() -> Result<()> {
    let (mesh, istiod) = mesh()?;
    let cluster = mesh.cluster();
    let result = in_namespace(cluster, "xds", &[("istio-injection", "enabled")], |ns| async move {
        let pod = injected_pod(cluster, &ns, "web", &[("app", "web")], "10.244.0.11").await?;
        let mut probe = XdsProbe::start(cluster, &pod)?;
        // The demo MeshConfig: accessLogFile /dev/stdout, REGISTRY_ONLY.
        let (s, _) = probe
            .wait("REGISTRY_ONLY and a /dev/stdout access log", Duration::from_secs(60), |s| {
                let logs = access_logs(s);
                if outbound(s) != "BlackHoleCluster" {
                    return Err(format!("unknown outbound traffic goes to {:?}", outbound(s)));
                }
                if logs.is_empty() || logs.iter().any(|(_, p, f)| p != "/dev/stdout" || f != "TEXT") {
                    return Err(format!("access logs {logs:?}"));
                }
                Ok(())
            })
            .await
            .map_err(|e| anyhow!("{e:#}\n{}", probe.log_tail(5)))?;
        let http_listeners = s["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| !l["access_logs"].as_array().is_none_or(|a| a.is_empty()))
            .count();
        println!("istiod serves {http_listeners} listeners with a /dev/stdout access log, outbound -> BlackHoleCluster");

        // An edit is only observable as one push when no unrelated change is in flight (the
        // Istio bug in Istiod::wait_push_quiet): wait for istiod to go quiet before each edit.
        let patch = |p: &'static str| async move {
            istiod.wait_push_quiet(QUIET, Duration::from_secs(30)).await?;
            cluster.patch_meshconfig(p)
        };
        patch(r#"{"spec":{"meshConfig":{"outboundTrafficPolicy":{"mode":"ALLOW_ANY"},"accessLogEncoding":"JSON"}}}"#).await?;
        let rendered = mesh
            .wait_mesh_configmap("the operator to render ALLOW_ANY + JSON", RENDER, |m| {
                let (mode, enc) = (&m["outboundTrafficPolicy"]["mode"], &m["accessLogEncoding"]);
                if mode.as_str() == Some("ALLOW_ANY") && enc.as_str() == Some("JSON") {
                    Ok(())
                } else {
                    Err(format!("outboundTrafficPolicy.mode {mode:?}, accessLogEncoding {enc:?}"))
                }
            })
            .await?;
        println!("kubectl patch meshconfig -> ConfigMap istio: {:.2}s", rendered.as_secs_f64());
        let pushed = probe
            .wait("ALLOW_ANY and JSON access logs after the patch", PUSH, |s| {
                let logs = access_logs(s);
                if outbound(s) != "PassthroughCluster" {
                    return Err(format!("unknown outbound traffic goes to {:?}", outbound(s)));
                }
                if logs.is_empty() || logs.iter().any(|(_, _, f)| f != "JSON") {
                    return Err(format!("access logs {logs:?}"));
                }
                Ok(())
            })
            .await;
        let took = match pushed {
            Ok((_, took)) => took,
            Err(e) => bail!("{e:#}\n{}", push_diagnostics(istiod, &probe).await),
        };
        println!("ConfigMap istio -> ALLOW_ANY + JSON in istiod's push: {:.2}s more", took.as_secs_f64());
        // istiod's own view (what `istioctl` reads) agrees with what it pushed.
        let held = istiod.debug_mesh().await?;
        ensure!(
            held["outboundTrafficPolicy"]["mode"] == "ALLOW_ANY" && held["accessLogEncoding"] == "JSON",
            "istiod's /debug/mesh: outboundTrafficPolicy {}, accessLogEncoding {}",
            held["outboundTrafficPolicy"],
            held["accessLogEncoding"]
        );
        patch(r#"{"spec":{"meshConfig":{"accessLogFile":""}}}"#).await?;
        mesh.wait_mesh_configmap("the operator to render accessLogFile \"\"", RENDER, |m| {
            match m["accessLogFile"].as_str() {
                None | Some("") => Ok(()),
                Some(f) => Err(format!("accessLogFile {f:?}")),
            }
        })
        .await?;
        let pushed = probe
            .wait("no access log after accessLogFile \"\"", PUSH, |s| {
                let logs = access_logs(s);
                if logs.is_empty() { Ok(()) } else { Err(format!("access logs {logs:?}")) }
            })
            .await;
        let took = match pushed {
            Ok((_, took)) => took,
            Err(e) => bail!("{e:#}\n{}", push_diagnostics(istiod, &probe).await),
        };
        println!("accessLogFile \"\" rendered -> no access log pushed: {:.2}s", took.as_secs_f64());
        istiod.wait_push_quiet(QUIET, Duration::from_secs(30)).await?;
        mesh.restore_default_meshconfig()?;
        if let Err(e) = mesh
            .wait_mesh_configmap("the operator to render the restored REGISTRY_ONLY", RENDER, |m| {
                match m["outboundTrafficPolicy"]["mode"].as_str() {
                    Some("REGISTRY_ONLY") => Ok(()),
                    other => Err(format!("outboundTrafficPolicy.mode {other:?}")),
                }
            })
            .await
        {
            eprintln!("WARNING (known issue, see docs/e2e.md): {e:#}");
        }
        // Cleanup, not an assertion: the edits above are the promise under test. A restore
        // that istiod merges with an Endpoints-only update is not applied to connected proxies
        // (the Istio bug described at Istiod::wait_push_quiet; docs/e2e.md, "Known issues"), so
        // a miss is reported, not hidden.
        let restored = probe
            .wait("the restored REGISTRY_ONLY", Duration::from_secs(30), |s| {
                if outbound(s) == "BlackHoleCluster" { Ok(()) } else { Err(outbound(s)) }
            })
            .await;
        if let Err(e) = restored {
            eprintln!("WARNING (known issue, see docs/e2e.md): {e:#}\n{}", push_diagnostics(istiod, &probe).await);
        }
        anyhow::Ok(())
    })
    .await;
    mesh.restore_default_meshconfig()?;
    result.map_err(|e| anyhow!("{e:#}\n--- logs ---\n{}", mesh.logs(20)))
}

/// Service `pricing` (port 80) selecting `app: pricing`.
fn pricing_service(ns: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: pricing, namespace: {ns}, labels: {{app: pricing}}}}
spec:
  selector: {{app: pricing}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"
    )
}

/// A Service `pricing` (port 80) with Pods labelled version v1 and v2, the guides' canary
/// DestinationRule (subsets v1/v2) and VirtualService (95/5), at the given API versions.
fn canary_yaml(ns: &str, dr_version: &str, vs_version: &str) -> String {
    format!(
        "{}---
apiVersion: networking.istio.io/{dr_version}
kind: DestinationRule
metadata: {{name: pricing, namespace: {ns}}}
spec:
  host: pricing
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/{vs_version}
kind: VirtualService
metadata: {{name: pricing, namespace: {ns}}}
spec:
  hosts: [pricing]
  http:
  - route:
    - destination: {{host: pricing, subset: v1}}
      weight: 95
    - destination: {{host: pricing, subset: v2}}
      weight: 5
",
        pricing_service(ns)
    )
}

/// The weighted clusters of the route istiod serves for `host:80`, if any.
fn weights(s: &Value, host: &str) -> Option<Vec<(String, i64)>> {
    let vhost = format!("{host}:80");
    for (_, routes) in s["routes"].as_object()? {
        for r in routes.as_array()? {
            if r["virtual_host"] == vhost.as_str() {
                let mut out: Vec<(String, i64)> = r["clusters"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                    .collect();
                out.sort();
                return Some(out);
            }
        }
    }
    None
}

/// The guides' canary: DestinationRule subsets + VirtualService 95/5 (v1alpha3 and v1beta1, as
/// the older and newer guides write them) become a route with weighted subset clusters 95/5 in
/// what istiod sends a client sidecar in the namespace.
#[tokio::test]
async fn canary_destination_rule_and_virtual_service_give_weighted_route() -> Result<()> {
    let (mesh, _istiod) = mesh()?;
    let cluster = mesh.cluster();
    for (n, (dr, vs)) in [
        ("v1alpha3", "v1alpha3"),
        ("v1beta1", "v1beta1"),
        ("v1", "v1"),
    ]
    .into_iter()
    .enumerate()
    {
        let result = in_namespace(cluster, "canary", &[("istio-injection", "enabled")], |ns| async move {
            cluster.apply_yaml(&canary_yaml(&ns, dr, vs))?;
            for (name, version, ip) in [
                ("pricing-v1", "v1", format!("10.244.1.{}", 10 * n + 1)),
                ("pricing-v2", "v2", format!("10.244.1.{}", 10 * n + 2)),
            ] {
                injected_pod(cluster, &ns, name, &[("app", "pricing"), ("version", version)], &ip)
                    .await?;
            }
            let web =
                injected_pod(cluster, &ns, "web", &[("app", "web")], &format!("10.244.1.{}", 10 * n + 3))
                    .await?;
            let mut probe = XdsProbe::start(cluster, &web)?;
            let host = format!("pricing.{ns}.svc.cluster.local");
            let want = vec![
                (format!("outbound|80|v1|{host}"), 95),
                (format!("outbound|80|v2|{host}"), 5),
            ];
            let (_, took) = probe
                .wait(
                    &format!("a 95/5 route to the subsets of {host} ({dr} DestinationRule, {vs} VirtualService)"),
                    Duration::from_secs(30),
                    |s| match weights(s, &host) {
                        Some(w) if w == want => Ok(()),
                        other => Err(format!("route clusters {other:?}")),
                    },
                )
                .await
                .map_err(|e| anyhow!("{e:#}\n{}", probe.log_tail(3)))?;
            println!("{dr}/{vs}: weighted route 95/5 to v1/v2 after {:.2}s", took.as_secs_f64());
            anyhow::Ok(())
        })
        .await;
        result?;
    }
    Ok(())
}

/// Transport protocols of the inbound filter chains istiod sends for `port`.
fn inbound_chains(s: &Value, port: &str) -> Vec<String> {
    s["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["name"] == "virtualInbound")
        .flat_map(|l| l["chains"][port].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// PeerAuthentication STRICT in a namespace leaves the inbound listener of a Pod there with no
/// plaintext filter chain for its port (PERMISSIVE, the default, has both).
#[tokio::test]
async fn peer_authentication_strict_removes_plaintext_inbound() -> Result<()> {
    let (mesh, _istiod) = mesh()?;
    let cluster = mesh.cluster();
    let client = cluster.client().await?;
    in_namespace(
        cluster,
        "mtls",
        &[("istio-injection", "enabled")],
        |ns| async move {
            cluster.apply_yaml(&format!(
                "apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: {ns}}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
"
            ))?;
            let mut p = pod("ratings", &[("app", "ratings")], &[]);
            if let Some(c) = p.spec.as_mut().and_then(|s| s.containers.first_mut()) {
                c.ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                    container_port: 9080,
                    name: Some("http".into()),
                    ..Default::default()
                }]);
            }
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let created = pods.create(&Default::default(), &p).await?;
            ensure!(is_injected(&created), "ratings was not injected");
            let pod = report_pod_running(cluster, &ns, "ratings", "10.244.2.10").await?;
            let mut probe = XdsProbe::start(cluster, &pod)?;
            probe
                .wait(
                    "PERMISSIVE inbound chains (TLS and plaintext) for 9080",
                    Duration::from_secs(30),
                    |s| {
                        let c = inbound_chains(s, "9080");
                        if c.iter().any(|t| t == "tls") && c.iter().any(|t| t == "raw_buffer") {
                            Ok(())
                        } else {
                            Err(format!("chains for 9080: {c:?}"))
                        }
                    },
                )
                .await
                .map_err(|e| anyhow!("{e:#}\n{}", probe.log_tail(3)))?;
            cluster.apply_yaml(&format!(
                "apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {{name: default, namespace: {ns}}}
spec:
  mtls: {{mode: STRICT}}
"
            ))?;
            let (_, took) = probe
                .wait("STRICT: only TLS inbound chains for 9080", PUSH, |s| {
                    let c = inbound_chains(s, "9080");
                    if !c.is_empty() && c.iter().all(|t| t == "tls") {
                        Ok(())
                    } else {
                        Err(format!("chains for 9080: {c:?}"))
                    }
                })
                .await?;
            println!(
                "PeerAuthentication STRICT -> no plaintext inbound chain after {:.2}s",
                took.as_secs_f64()
            );
            anyhow::Ok(())
        },
    )
    .await
}

/// istiod validates Istio's resources as Istio ships it: through the API server, an invalid
/// resource is refused with istiod's own message, and istiod has filled the validators' caBundle.
#[tokio::test]
async fn istiod_validates_istio_resources_through_the_api_server() -> Result<()> {
    let (mesh, _istiod) = mesh()?;
    let cluster = mesh.cluster();
    let client = cluster.client().await?;
    let vwcs: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    for name in ["istio-validator-istio-system", "istiod-default-validator"] {
        wait_for(
            &format!("istiod to fill the caBundle of {name}"),
            Duration::from_secs(60),
            || {
                let vwcs = vwcs.clone();
                async move {
                    match vwcs.get_opt(name).await {
                        Ok(Some(v)) => {
                            let ok = v.webhooks.iter().flatten().all(|w| {
                                w.client_config
                                    .ca_bundle
                                    .as_ref()
                                    .is_some_and(|b| !b.0.is_empty())
                            });
                            if ok {
                                Poll::Ready(())
                            } else {
                                Poll::Pending("caBundle empty".into())
                            }
                        }
                        Ok(None) => Poll::Pending("not rendered".into()),
                        Err(e) => Poll::Pending(e.to_string()),
                    }
                }
            },
        )
        .await?;
    }
    in_namespace(cluster, "validate", &[], |ns| async move {
        let bad = format!(
            "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: bad, namespace: {ns}}}
spec:
  hosts: [pricing]
  http:
  - route:
    - destination: {{host: pricing, subset: v1}}
      weight: 95
    - destination: {{host: pricing, subset: v2}}
      weight: 5
    mirrorPercentage: {{value: 150}}
"
        );
        let out = cluster.kubectl_with_stdin(&["apply", "-f", "-"], Some(&bad))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "kubectl apply of an invalid VirtualService: {}",
            stderr.trim()
        );
        ensure!(
            !out.status.success(),
            "the invalid VirtualService was admitted"
        );
        ensure!(
            stderr.contains("validation.istio.io") && stderr.contains("denied the request"),
            "refused, but not by istiod's validation: {stderr}"
        );
        let good = canary_yaml(&ns, "v1beta1", "v1beta1");
        cluster
            .apply_yaml(&good)
            .context("a valid canary was refused")?;
        anyhow::Ok(())
    })
    .await
}

/// With istiod really running, the MeshConfig reaches `Ready=True` and `skjoldctl check` passes
/// its `meshconfig` check. The default profile's ingress gateway is switched off for this: a
/// gateway runs Envoy, which cannot be had on this machine, so its Pod can never become Ready
/// (with it on, the MeshConfig honestly says `waiting for: ingressGateway`).
#[tokio::test]
async fn meshconfig_ready_with_istiod_running() -> Result<()> {
    let (mesh, _istiod) = mesh()?;
    let cluster = mesh.cluster();
    let client = cluster.client().await?;
    let mcs: Api<MeshConfig> = Api::namespaced(client, CONTROL_PLANE_NS);
    let ready = |mc: &MeshConfig| {
        mc.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let result = async {
        let mc = mcs.get("default").await?;
        let (status, message) = ready(&mc).unwrap_or_default();
        ensure!(
            status == "False" && message.contains("ingressGateway"),
            "with the gateway on (no Envoy here) the MeshConfig must wait for it: {status} {message}"
        );
        cluster.patch_meshconfig(r#"{"spec":{"components":{"ingressGateway":{"enabled":false}}}}"#)?;
        wait_for("MeshConfig default Ready=True", Duration::from_secs(60), || {
            let mcs = mcs.clone();
            async move {
                match mcs.get("default").await {
                    Ok(mc) => match ready(&mc) {
                        Some((s, _)) if s == "True" => Poll::Ready(()),
                        other => Poll::Pending(format!("Ready: {other:?}")),
                    },
                    Err(e) => Poll::Pending(e.to_string()),
                }
            }
        })
        .await?;
        let out = std::process::Command::new(skjold_e2e::workspace_bin("skjoldctl"))
            .args(["check", "-o", "json", "--namespace", CONTROL_PLANE_NS])
            .env("KUBECONFIG", cluster.kubeconfig())
            .output()?;
        let report: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("skjoldctl check printed {}", String::from_utf8_lossy(&out.stdout)))?;
        for id in ["meshconfig", "istio-crds"] {
            let check = report["checks"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["id"] == id))
                .cloned()
                .with_context(|| format!("no {id} check"))?;
            ensure!(check["status"] == "pass", "skjoldctl check {id}: {check}");
        }
        anyhow::Ok(())
    }
    .await;
    cluster.patch_meshconfig(r#"{"spec":{"components":{"ingressGateway":{"enabled":null}}}}"#)?;
    result
}

/// The guides' own documents (e2e/tests/guides/), applied with `kubectl apply` as written: every
/// API generation's DestinationRule/VirtualService/PeerAuthentication is accepted by the API
/// server and istiod's validation and reaches the sidecar as a 95/5 route; the 1.1 guide's
/// MeshPolicy (removed from Istio in 1.6) is refused by name; Istio's own `istioctl analyze`
/// finds no error in the cluster.
#[tokio::test]
async fn guides_documents_apply_and_reach_istiod() -> Result<()> {
    let (mesh, _istiod) = mesh()?;
    let cluster = mesh.cluster();
    let dir = &skjold_e2e::workspace_root().join("e2e/tests/guides");
    for (n, guide) in ["istio-1.1", "istio-1.8", "istio-1.17", "istio-1.25"]
        .into_iter()
        .enumerate()
    {
        let result = in_namespace(
            cluster,
            "guide",
            &[("istio-injection", "enabled")],
            |ns| async move {
                cluster.apply_yaml(&pricing_service(&ns))?;
                for (name, version, last) in [("pricing-v1", "v1", 1), ("pricing-v2", "v2", 2)] {
                    let ip = format!("10.244.3.{}", 10 * n + last);
                    injected_pod(
                        cluster,
                        &ns,
                        name,
                        &[("app", "pricing"), ("version", version)],
                        &ip,
                    )
                    .await?;
                }
                let web = injected_pod(
                    cluster,
                    &ns,
                    "web",
                    &[("app", "web")],
                    &format!("10.244.3.{}", 10 * n + 3),
                )
                .await?;
                let text = std::fs::read_to_string(dir.join(format!("{guide}.yaml")))?
                    .replace("NAMESPACE", &ns);
                let out = cluster.kubectl_with_stdin(&["apply", "-f", "-"], Some(&text))?;
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                if guide == "istio-1.1" {
                    ensure!(
                        stderr.contains(r#"no matches for kind "MeshPolicy""#),
                        "{guide}: the removed MeshPolicy must be refused by name: {stderr}"
                    );
                    println!(
                        "{guide}: MeshPolicy refused: {}",
                        stderr.lines().next().unwrap_or_default()
                    );
                } else {
                    ensure!(
                        out.status.success(),
                        "{guide}: kubectl apply failed: {stderr}"
                    );
                }
                let mut probe = XdsProbe::start(cluster, &web)?;
                let host = format!("pricing.{ns}.svc.cluster.local");
                let want = vec![
                    (format!("outbound|80|v1|{host}"), 95),
                    (format!("outbound|80|v2|{host}"), 5),
                ];
                probe
                    .wait(
                        &format!("{guide}: the 95/5 route"),
                        Duration::from_secs(30),
                        |s| match weights(s, &host) {
                            Some(w) if w == want => Ok(()),
                            other => Err(format!("route clusters {other:?}")),
                        },
                    )
                    .await?;
                let analyze =
                    cluster.istioctl(&["analyze", "-n", &ns, "--failure-threshold", "Error"])?;
                let report = format!(
                    "{}{}",
                    String::from_utf8_lossy(&analyze.stdout),
                    String::from_utf8_lossy(&analyze.stderr)
                );
                ensure!(
                    analyze.status.success() && !report.contains("Error ["),
                    "{guide}: istioctl analyze: {report}"
                );
                println!(
                    "{guide}: applied, 95/5 in istiod's route; istioctl analyze: {}",
                    report.trim().lines().next().unwrap_or_default()
                );
                anyhow::Ok(())
            },
        )
        .await;
        result?;
    }
    let all = cluster.istioctl(&["analyze", "-A", "--failure-threshold", "Error"])?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&all.stdout),
        String::from_utf8_lossy(&all.stderr)
    );
    println!("istioctl analyze -A:\n{}", report.trim());
    ensure!(
        all.status.success() && !report.contains("Error ["),
        "istioctl analyze -A: {report}"
    );
    Ok(())
}

/// Istio's own `istioctl x check-inject` reads Skjold's webhook configuration and agrees, pod by
/// pod, with `skjoldctl explain` and with what the API server actually stored.
#[tokio::test]
async fn istioctl_check_inject_agrees_with_skjoldctl_explain() -> Result<()> {
    let (mesh, _istiod) = mesh()?;
    let cluster = mesh.cluster();
    let client = cluster.client().await?;
    let on = create_namespace(&client, "checkinj", &[("istio-injection", "enabled")]).await?;
    let off = create_namespace(&client, "checkinj", &[]).await?;
    let result = async {
        let cases = [
            (&on, "plain", vec![], true),
            (&on, "opted-out", vec![("sidecar.istio.io/inject", "false")], false),
            (&off, "opted-in", vec![("sidecar.istio.io/inject", "true")], true),
            (&off, "plain", vec![], false),
        ];
        for (ns, name, labels, want) in cases {
            let p = pod(name, &labels, &[]);
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let stored = pods.create(&Default::default(), &p).await?;
            ensure!(is_injected(&stored) == want, "{ns}/{name}: injected={} want {want}", is_injected(&stored));
            let out = cluster.istioctl(&["x", "check-inject", "-n", ns, name])?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let row = text
                .lines()
                .find(|l| l.starts_with("skjold-sidecar-injector"))
                .with_context(|| format!("{ns}/{name}: istioctl x check-inject printed {text}{}", String::from_utf8_lossy(&out.stderr)))?;
            let istioctl_says = row.contains('✔');
            let file = mesh.cluster().dir().join(format!("check-inject-{ns}-{name}.yaml"));
            std::fs::write(&file, serde_yaml_ng::to_string(&p)?)?;
            let mut cmd = std::process::Command::new(skjold_e2e::workspace_bin("skjoldctl"));
            cmd.arg("explain").arg("-f").arg(&file).args(["--namespace", ns]);
            if *ns == on {
                cmd.args(["--namespace-labels", "istio-injection=enabled"]);
            }
            let explain = String::from_utf8_lossy(&cmd.output()?.stdout).to_string();
            let skjold_says = explain.contains("result: inject");
            ensure!(
                istioctl_says == want && skjold_says == want,
                "{ns}/{name}: stored injected={want}, istioctl check-inject: {row:?}, skjoldctl explain: {explain}"
            );
            println!("{ns}/{name}: injected={want}; istioctl: {}", row.split_whitespace().skip(3).collect::<Vec<_>>().join(" "));
        }
        anyhow::Ok(())
    }
    .await;
    delete_namespace(&client, &on).await;
    delete_namespace(&client, &off).await;
    result
}

/// Benchmark (`make bench`): 20 `kubectl patch meshconfig` edits alternating the outbound policy;
/// for each, the time until istiod's push to the sidecar carries the new policy. Prints p50/p99.
#[tokio::test]
#[ignore = "benchmark: 20 MeshConfig edits; run explicitly"]
async fn bench_meshconfig_edit_to_xds() -> Result<()> {
    let (mesh, _istiod) = mesh()?;
    let cluster = mesh.cluster();
    let result = in_namespace(cluster, "bench", &[("istio-injection", "enabled")], |ns| async move {
        let pod = injected_pod(cluster, &ns, "web", &[("app", "web")], "10.244.9.10").await?;
        let mut probe = XdsProbe::start(cluster, &pod)?;
        probe
            .wait("the first configuration", Duration::from_secs(60), |s| {
                if outbound(s) == "BlackHoleCluster" { Ok(()) } else { Err(outbound(s)) }
            })
            .await?;
        let mut took = Vec::new();
        for i in 0..20 {
            let (mode, cluster_name) =
                if i % 2 == 0 { ("ALLOW_ANY", "PassthroughCluster") } else { ("REGISTRY_ONLY", "BlackHoleCluster") };
            let start = std::time::Instant::now();
            cluster.patch_meshconfig(&format!(r#"{{"spec":{{"meshConfig":{{"outboundTrafficPolicy":{{"mode":"{mode}"}}}}}}}}"#))?;
            probe
                .wait(&format!("edit {i}: {mode}"), Duration::from_secs(10), |s| {
                    if outbound(s) == cluster_name { Ok(()) } else { Err(outbound(s)) }
                })
                .await?;
            took.push(start.elapsed());
        }
        took.sort();
        let q = |p: f64| took[((took.len() as f64 * p).ceil() as usize).saturating_sub(1).min(took.len() - 1)];
        println!(
            "MeshConfig edit -> changed xDS at the sidecar ({} edits, kubectl patch to istiod's push received): p50 {} ms, p99 {} ms, max {} ms (goal p99 < 2000 ms)",
            took.len(),
            q(0.50).as_millis(),
            q(0.99).as_millis(),
            took.last().map_or(0, |d| d.as_millis())
        );
        anyhow::Ok(())
    })
    .await;
    mesh.restore_default_meshconfig()?;
    result
}
