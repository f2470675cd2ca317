//! `skjoldctl check`: is Skjold installed and working in the cluster of the current kubeconfig?
//! Like `linkerd check`: one line per check (pass/warn/fail with a hint), `-o json` for scripts, and
//! a non-zero exit code when anything failed.
//!
//! Reads only; every verdict comes from a pure function in [`rules`] so it is unit-tested.

mod report;
mod rules;
mod tls;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

pub use report::{CheckResult, OutputFormat, Report, Status};
use rules::{Endpoint, Target};

/// Arguments of `skjoldctl check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Output: `text` (one line per check) or `json` (for scripts).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Skjold's control-plane namespace (the operator's `--namespace`).
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
    /// The webhook TLS Secret (the operator's `--cert-secret`), checked when the webhook runs in the cluster.
    #[arg(long, default_value = "skjold-webhook-tls")]
    pub cert_secret: String,
    /// Warn when the webhook certificate expires within this many days.
    #[arg(long, default_value_t = 30)]
    pub cert_warn_days: u64,
    /// Time limit of each network probe of an out-of-cluster webhook URL, in seconds.
    #[arg(long, default_value_t = 5)]
    pub probe_timeout_secs: u64,
}

/// Runs every check, prints the report and returns the process exit code (0: no failure).
pub async fn run(args: &CheckArgs) -> anyhow::Result<i32> {
    let report = Report::new(collect(args).await);
    print!("{}", report.render(args.output));
    Ok(report.exit_code())
}

/// The API server's own words for an API error, without kube's debug dump of the Status object.
fn error_text(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => format!("{} ({}, HTTP {})", s.message, s.reason, s.code),
        other => other.to_string(),
    }
}

/// A failed API read becomes a failing check that says which read failed, never an early exit.
fn api_fail(id: &'static str, what: &str, err: &kube::Error) -> CheckResult {
    CheckResult::fail(
        id,
        format!("cannot read {what}: {}", error_text(err)),
        "check the kubeconfig context and that you may read Skjold's objects (kubectl auth can-i)",
    )
}

async fn collect(args: &CheckArgs) -> Vec<CheckResult> {
    let ns = args.namespace.as_str();
    let now = SystemTime::now();
    let mut out = Vec::new();

    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            out.push(CheckResult::fail(
                "kubernetes-api",
                format!("no usable kubeconfig: {e}"),
                "set KUBECONFIG or the current context",
            ));
            return out;
        }
    };
    match client.apiserver_version().await {
        Ok(v) => out.push(CheckResult::pass(
            "kubernetes-api",
            format!("reachable, Kubernetes {}", v.git_version),
        )),
        Err(e) => {
            out.push(CheckResult::fail(
                "kubernetes-api",
                format!("API server unreachable: {e}"),
                "kubectl cluster-info",
            ));
            return out;
        }
    }

    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(rules::CRD_NAME)
        .await;
    let crd_ok = match &crd {
        Ok(c) => {
            let r = rules::crd(c.as_ref());
            let ok = r.status == Status::Pass;
            out.push(r);
            ok
        }
        Err(e) => {
            out.push(api_fail("crd", "CustomResourceDefinitions", e));
            false
        }
    };

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let mut istio = Vec::new();
    let mut lookup_failed = None;
    for (name, _) in rules::ISTIO_GUIDE_APIS {
        match crds.get_opt(name).await {
            Ok(c) => istio.push((name, c)),
            Err(e) => lookup_failed = Some(e),
        }
    }
    let mut removed = Vec::new();
    for name in rules::REMOVED_ISTIO_CRDS {
        match crds.get_opt(name).await {
            Ok(Some(_)) => removed.push(name),
            Ok(None) => {}
            Err(e) => lookup_failed = Some(e),
        }
    }
    match lookup_failed {
        Some(e) => out.push(api_fail("istio-crds", "CustomResourceDefinitions", &e)),
        None => {
            let found: Vec<_> = istio.iter().map(|(n, c)| (*n, c.as_ref())).collect();
            out.push(rules::istio_apis(&found, &removed));
        }
    }

    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await;
    let mwcs = mwcs.map(|l| rules::skjold_mwcs(l.items));
    let url_mode = mwcs.as_ref().is_ok_and(|m| {
        rules::targets(m)
            .iter()
            .any(|t| matches!(t.endpoint, Endpoint::Url(_)))
    });

    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    match (
        deployments.get_opt(rules::OPERATOR).await,
        Api::<Lease>::namespaced(client.clone(), ns)
            .get_opt(rules::OPERATOR)
            .await,
    ) {
        (Ok(d), Ok(l)) => out.push(rules::operator(ns, d.as_ref(), l.as_ref(), now)),
        (Err(e), _) | (_, Err(e)) => out.push(api_fail(
            "operator",
            "the operator Deployment and Lease",
            &e,
        )),
    }
    match deployments.get_opt(rules::WEBHOOK).await {
        Ok(d) => out.push(rules::webhook(ns, d.as_ref(), url_mode)),
        Err(e) => out.push(api_fail("webhook", "the webhook Deployment", &e)),
    }

    if crd_ok {
        let gvk = GroupVersionKind::gvk("skjold.io", rules::CRD_VERSION, "MeshConfig");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "meshconfigs");
        match Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .list(&ListParams::default())
            .await
        {
            Ok(l) => out.push(rules::meshconfigs(ns, &l.items)),
            Err(e) => out.push(api_fail("meshconfig", "MeshConfigs", &e)),
        }
    } else {
        out.push(CheckResult::fail(
            "meshconfig",
            "skipped: the MeshConfig CRD is not usable",
            "fix the crd check first",
        ));
    }

    match &mwcs {
        Ok(m) => {
            out.push(rules::webhook_configuration(m));
            for target in rules::targets(m)
                .into_iter()
                .filter(|t| !t.ca_bundle_pem.trim().is_empty())
            {
                out.extend(check_target(&client, args, &target, now).await);
            }
        }
        Err(e) => out.push(api_fail(
            "webhook-configuration",
            "MutatingWebhookConfigurations",
            e,
        )),
    }

    out.extend(check_namespaces_and_pods(&client, ns).await);
    out
}

/// caBundle, certificate validity and (URL mode) reachability for one webhook endpoint.
async fn check_target(
    client: &Client,
    args: &CheckArgs,
    target: &Target,
    now: SystemTime,
) -> Vec<CheckResult> {
    let warn_before = Duration::from_secs(args.cert_warn_days.saturating_mul(86_400));
    let mut out = Vec::new();
    let (chain, source, host) = match &target.endpoint {
        Endpoint::Url(url) => {
            let parsed = match tls::WebhookUrl::parse(url) {
                Ok(p) => p,
                Err(e) => {
                    out.push(CheckResult::fail(
                        "webhook-reachable",
                        e.to_string(),
                        "fix the operator's --webhook-url",
                    ));
                    return out;
                }
            };
            match tls::probe(&parsed, Duration::from_secs(args.probe_timeout_secs.max(1))).await {
                Ok(p) => {
                    out.push(rules::webhook_reachable(url, &p.readyz));
                    (p.chain_pem, format!("served at {url}"), parsed.host)
                }
                Err(e) => {
                    out.push(rules::webhook_reachable(url, &Err(e.to_string())));
                    return out;
                }
            }
        }
        Endpoint::Service {
            namespace,
            name,
            port,
        } => {
            let probe = proxy_readyz(client, namespace, name, *port).await;
            out.push(rules::webhook_reachable_in_cluster(namespace, name, &probe));
            // The served certificate is the mounted Secret; reading it needs no network path into the cluster.
            let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(&args.cert_secret)
                .await;
            let pem = match secret {
                Ok(Some(s)) => s
                    .data
                    .and_then(|mut d| d.remove("tls.crt"))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned()),
                Ok(None) => None,
                Err(e) => {
                    out.push(api_fail(
                        "ca-bundle",
                        &format!("Secret {namespace}/{}", args.cert_secret),
                        &e,
                    ));
                    return out;
                }
            };
            let Some(pem) = pem else {
                out.push(CheckResult::fail(
                    "ca-bundle",
                    format!("Secret {namespace}/{} with tls.crt not found: the webhook has no certificate", args.cert_secret),
                    "the operator issues it (or cert-manager: kubectl describe certificate skjold-webhook)",
                ));
                return out;
            };
            (
                pem,
                format!(
                    "in Secret {namespace}/{} (served by Service {name})",
                    args.cert_secret
                ),
                format!("{name}.{namespace}.svc"),
            )
        }
    };
    out.push(rules::ca_bundle(target, &chain, &source, &host));
    out.push(rules::certificate_expiry(&chain, &source, warn_before, now));
    out
}

/// `GET /readyz` on the webhook Service through the API server's service proxy.
async fn proxy_readyz(
    client: &Client,
    namespace: &str,
    name: &str,
    port: i32,
) -> rules::ProxyProbe {
    let path = format!("/api/v1/namespaces/{namespace}/services/https:{name}:{port}/proxy/readyz");
    let request = match http::Request::get(&path).body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return rules::ProxyProbe::Failed(format!("bad proxy request {path}: {e}")),
    };
    match client.request_text(request).await {
        Ok(_) => rules::ProxyProbe::Ok,
        Err(kube::Error::Api(s)) if s.is_forbidden() => rules::ProxyProbe::Forbidden,
        Err(e) => rules::ProxyProbe::Failed(error_text(&e)),
    }
}

async fn check_namespaces_and_pods(client: &Client, ns: &str) -> Vec<CheckResult> {
    let namespaces = match Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            return vec![
                api_fail("namespace-labels", "Namespaces", &e),
                api_fail("data-plane", "Namespaces", &e),
            ];
        }
    };
    // The label the default revision injects by, as its MeshConfig says.
    let gvk = GroupVersionKind::gvk("skjold.io", rules::CRD_VERSION, "MeshConfig");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "meshconfigs");
    let meshconfigs = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let label = rules::injection_label(&meshconfigs);
    let mut out = vec![rules::namespace_labels(&namespaces, &label)];

    let mut pods = Vec::new();
    for n in namespaces
        .iter()
        .filter(|n| rules::injected_revision(n, ns, &label).is_some())
    {
        let Some(name) = n.metadata.name.as_deref() else {
            continue;
        };
        match Api::<Pod>::namespaced(client.clone(), name)
            .list(&ListParams::default())
            .await
        {
            Ok(l) => pods.extend(l.items),
            Err(e) => {
                out.push(api_fail("data-plane", &format!("pods in {name}"), &e));
                return out;
            }
        }
    }
    let hashes = match injector_hashes(client, ns).await {
        Ok(h) => h,
        Err(e) => {
            out.push(api_fail("data-plane", "injector ConfigMaps", &e));
            return out;
        }
    };
    out.push(rules::data_plane(&namespaces, &pods, &hashes, ns, &label));
    out
}

/// Current injector config hash per revision, from the ConfigMaps the webhook itself reads.
async fn injector_hashes(
    client: &Client,
    ns: &str,
) -> Result<BTreeMap<String, String>, kube::Error> {
    let lp = ListParams::default().labels(&format!(
        "{}=true",
        skjold_inject::istio::INJECTOR_CONFIG_MAP_LABEL
    ));
    let cms = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?;
    Ok(hashes_from_config_maps(&cms.items))
}

fn hashes_from_config_maps(cms: &[ConfigMap]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for cm in cms {
        let Some(text) = cm
            .data
            .as_ref()
            .and_then(|d| d.get(skjold_inject::istio::INJECTOR_CONFIG_KEY))
        else {
            continue;
        };
        // A config the webhook cannot parse is reported by the operator's status, not here.
        let Ok(cfg) = skjold_inject::config::InjectorConfig::from_yaml(text) else {
            continue;
        };
        let rev = if cfg.revision.is_empty() {
            cm.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(rules::REV_LABEL))
                .cloned()
                .unwrap_or_else(|| rules::DEFAULT_REVISION.to_string())
        } else {
            cfg.revision_name().to_string()
        };
        out.insert(rev, cfg.hash());
    }
    out
}

#[cfg(test)]
mod tests;
