//! The checks themselves, as pure functions of what was read from the cluster, so each verdict and
//! message is unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::DynamicObject;

use super::report::CheckResult;

pub const CRD_NAME: &str = "meshconfigs.skjold.io";
pub const CRD_VERSION: &str = "v1alpha1";
pub const OPERATOR: &str = "skjold-operator";
pub const WEBHOOK: &str = "skjold-webhook";
pub use skjold_inject::inject::keys::CONFIG_HASH as CONFIG_HASH_ANNOTATION;
pub use skjold_inject::istio::DEFAULT_REVISION;
/// Namespaces the webhook never injects (Istio's ignored namespaces): the injector's own list.
use skjold_inject::istio::IGNORED_NAMESPACES as SYSTEM_NAMESPACES;
/// The default namespace injection label (`spec.injection.namespaceLabel` of the MeshConfig may
/// name another; the checks use the MeshConfig's, see [`injection_label`]).
pub use skjold_inject::istio::{
    INJECT_LABEL as INJECT_OVERRIDE, NAMESPACE_INJECTION_LABEL as INJECTION_LABEL, PROXY_CONTAINER,
    REVISION_LABEL as REV_LABEL,
};
pub use skjold_operator::render::names::WEBHOOK_CONFIGURATION_BASE as MWC_PREFIX;

/// Istio's CRDs the guides use, with the API versions they are written in.
pub const ISTIO_GUIDE_APIS: [(&str, &[&str]); 3] = [
    (
        "destinationrules.networking.istio.io",
        &["v1alpha3", "v1beta1", "v1"],
    ),
    (
        "virtualservices.networking.istio.io",
        &["v1alpha3", "v1beta1", "v1"],
    ),
    ("peerauthentications.security.istio.io", &["v1beta1", "v1"]),
];
/// CRDs of the Istio 1.1 guides' `authentication.istio.io/v1alpha1`, removed in Istio 1.6.
pub const REMOVED_ISTIO_CRDS: [&str; 2] = [
    "meshpolicies.authentication.istio.io",
    "policies.authentication.istio.io",
];

/// Istio's resources the guides apply are served in every version the guides use; CRDs of
/// removed Istio APIs (left over from an old install) are named, since istiod ignores them.
pub fn istio_apis(
    found: &[(&str, Option<&CustomResourceDefinition>)],
    removed_present: &[&str],
) -> CheckResult {
    const ID: &str = "istio-crds";
    let mut missing = Vec::new();
    for (name, versions) in ISTIO_GUIDE_APIS {
        let crd = found.iter().find(|(n, _)| *n == name).and_then(|(_, c)| *c);
        let served: Vec<&str> = crd
            .map(|c| {
                c.spec
                    .versions
                    .iter()
                    .filter(|v| v.served)
                    .map(|v| v.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for v in versions {
            if !served.contains(v) {
                missing.push(format!("{name} {v}"));
            }
        }
    }
    if !missing.is_empty() {
        return CheckResult::fail(
            ID,
            format!(
                "Istio APIs the guides use are not served: {}",
                missing.join(", ")
            ),
            "the operator applies Istio's CRDs at start (--manage-crd) and the chart ships them in crds/: \
             kubectl apply --server-side -f helm/skjold/crds/istio-crds.gen.yaml",
        );
    }
    if !removed_present.is_empty() {
        return CheckResult::warn(
            ID,
            format!(
                "{} installed: authentication.istio.io/v1alpha1 MeshPolicy/Policy were removed in Istio 1.6 and istiod ignores them",
                removed_present.join(", ")
            ),
            "use security.istio.io/v1beta1 PeerAuthentication: a mesh-wide MeshPolicy with peers [{mtls: {}}] is a \
             PeerAuthentication named default in istio-system with mtls.mode STRICT; then delete the old CRDs",
        );
    }
    CheckResult::pass(
        ID,
        "DestinationRule, VirtualService (v1alpha3, v1beta1, v1) and PeerAuthentication (v1beta1, v1) served; \
         the Istio 1.1 guides' MeshPolicy is PeerAuthentication now",
    )
}

pub fn crd(crd: Option<&CustomResourceDefinition>) -> CheckResult {
    const ID: &str = "crd";
    let hint = "install the chart (helm install skjold helm/skjold -n istio-system --create-namespace) or \
                `skjold-operator crd | kubectl apply -f -`";
    let Some(crd) = crd else {
        return CheckResult::fail(
            ID,
            format!("CustomResourceDefinition {CRD_NAME} not found"),
            hint,
        );
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    if !established {
        return CheckResult::fail(
            ID,
            format!("{CRD_NAME} exists but is not Established"),
            format!("kubectl describe crd {CRD_NAME}"),
        );
    }
    match crd.spec.versions.iter().find(|v| v.name == CRD_VERSION) {
        Some(v) if v.served => {
            CheckResult::pass(ID, format!("{CRD_NAME} established, {CRD_VERSION} served"))
        }
        Some(_) => CheckResult::fail(
            ID,
            format!("{CRD_NAME} does not serve {CRD_VERSION}"),
            "re-apply the CRD of this release: `skjold-operator crd | kubectl apply -f -`",
        ),
        None => CheckResult::fail(
            ID,
            format!("{CRD_NAME} has no version {CRD_VERSION}"),
            "the installed CRD is from another release: `skjold-operator crd | kubectl apply -f -`",
        ),
    }
}

fn ready_counts(d: &Deployment) -> (i32, i32) {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (ready, desired)
}

/// The operator runs either as the chart's Deployment or, out of cluster, as a local process that
/// holds the leader Lease.
pub fn operator(
    ns: &str,
    deployment: Option<&Deployment>,
    lease: Option<&Lease>,
    now: SystemTime,
) -> CheckResult {
    const ID: &str = "operator";
    if let Some(d) = deployment {
        let (ready, desired) = ready_counts(d);
        return if ready >= 1 {
            CheckResult::pass(
                ID,
                format!("Deployment {ns}/{OPERATOR}: {ready}/{desired} ready"),
            )
        } else {
            CheckResult::fail(
                ID,
                format!("Deployment {ns}/{OPERATOR}: 0/{desired} ready"),
                format!(
                    "kubectl -n {ns} describe deployment {OPERATOR}; kubectl -n {ns} logs deployment/{OPERATOR}"
                ),
            )
        };
    }
    let holder = lease.and_then(|l| l.spec.as_ref()).and_then(|s| {
        let renewed = s.renew_time.as_ref().map(|t| SystemTime::from(t.0))?;
        let duration = Duration::from_secs(s.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let age = now.duration_since(renewed).unwrap_or_default();
        (age <= duration * 2).then(|| s.holder_identity.clone().unwrap_or_default())
    });
    match holder {
        Some(who) => CheckResult::pass(
            ID,
            format!(
                "no Deployment; running outside the cluster (Lease {ns}/{OPERATOR} held by {who:?})"
            ),
        ),
        None => CheckResult::fail(
            ID,
            format!("no Deployment {ns}/{OPERATOR} and no live leader Lease"),
            "install the chart, or run `skjold-operator run` (out-of-cluster mode)",
        ),
    }
}

/// In URL mode the webhook is outside the cluster and `webhook-reachable` covers it.
pub fn webhook(ns: &str, deployment: Option<&Deployment>, url_mode: bool) -> CheckResult {
    const ID: &str = "webhook";
    let describe = format!(
        "kubectl -n {ns} describe deployment {WEBHOOK}; kubectl -n {ns} logs deployment/{WEBHOOK}"
    );
    match deployment {
        Some(d) => {
            let (ready, desired) = ready_counts(d);
            if desired > 0 && ready >= desired {
                CheckResult::pass(
                    ID,
                    format!("Deployment {ns}/{WEBHOOK}: {ready}/{desired} ready"),
                )
            } else if ready >= 1 {
                CheckResult::warn(
                    ID,
                    format!(
                        "Deployment {ns}/{WEBHOOK}: only {ready}/{desired} ready; one more failure blocks pod creation"
                    ),
                    describe,
                )
            } else {
                CheckResult::fail(
                    ID,
                    format!(
                        "Deployment {ns}/{WEBHOOK}: 0/{desired} ready; pods in injected namespaces cannot be created"
                    ),
                    describe,
                )
            }
        }
        None if url_mode => CheckResult::pass(
            ID,
            "no Deployment: the webhook configuration uses a URL (out-of-cluster mode)",
        ),
        None => CheckResult::fail(
            ID,
            format!("Deployment {ns}/{WEBHOOK} not found"),
            "install the chart with webhook.enabled=true",
        ),
    }
}

fn condition<'a>(mc: &'a DynamicObject, type_: &str) -> Option<&'a serde_json::Value> {
    mc.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(type_))
}

pub fn meshconfigs(ns: &str, items: &[DynamicObject]) -> CheckResult {
    const ID: &str = "meshconfig";
    if items.is_empty() {
        return CheckResult::fail(
            ID,
            format!("no MeshConfig in {ns}: nothing renders the webhook configuration"),
            "the chart creates `default` (defaultMeshConfig.enabled=true); or kubectl apply one",
        );
    }
    let mut ready = Vec::new();
    let mut problems = Vec::new();
    let mut pending = Vec::new();
    for mc in items {
        let name = mc.metadata.name.clone().unwrap_or_default();
        let generation = mc.metadata.generation.unwrap_or(0);
        let observed = mc
            .data
            .pointer("/status/observedGeneration")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        match condition(mc, "Ready") {
            Some(c) if c.get("status").and_then(|s| s.as_str()) == Some("True") => {
                if observed < generation {
                    pending.push(format!("{name} (generation {generation} not yet reconciled, status is for {observed})"));
                } else {
                    ready.push(name);
                }
            }
            Some(c) => {
                let reason = c
                    .get("reason")
                    .and_then(|s| s.as_str())
                    .unwrap_or("NotReady");
                let msg = c.get("message").and_then(|s| s.as_str()).unwrap_or("");
                problems.push(format!(
                    "{name}: {reason}{}",
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(" ({msg})")
                    }
                ));
            }
            None => problems.push(format!("{name}: no Ready condition yet")),
        }
    }
    if !problems.is_empty() {
        return CheckResult::fail(
            ID,
            format!("not Ready: {}", problems.join("; ")),
            format!(
                "kubectl -n {ns} describe meshconfig; kubectl -n {ns} logs deployment/{OPERATOR}"
            ),
        );
    }
    if !pending.is_empty() {
        return CheckResult::warn(
            ID,
            format!("Ready but behind: {}", pending.join("; ")),
            "the operator is still reconciling; re-run in a few seconds",
        );
    }
    CheckResult::pass(ID, format!("Ready: {}", ready.join(", ")))
}

/// Where the API server sends admission requests for one webhook entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Url(String),
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

/// One distinct (endpoint, caBundle) pair across the Skjold webhook configurations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub endpoint: Endpoint,
    pub ca_bundle_pem: String,
    /// `mwc/webhook` names using this pair.
    pub users: Vec<String>,
}

pub fn skjold_mwcs(all: Vec<MutatingWebhookConfiguration>) -> Vec<MutatingWebhookConfiguration> {
    all.into_iter()
        .filter(|m| {
            m.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(MWC_PREFIX))
        })
        .collect()
}

/// Distinct endpoints and bundles, so each served certificate is checked once.
pub fn targets(mwcs: &[MutatingWebhookConfiguration]) -> Vec<Target> {
    let mut by_key: BTreeMap<(Endpoint, String), Vec<String>> = BTreeMap::new();
    for m in mwcs {
        let mname = m.metadata.name.clone().unwrap_or_default();
        for w in m.webhooks.iter().flatten() {
            let cc = &w.client_config;
            let endpoint = match (&cc.url, &cc.service) {
                (Some(url), _) => Endpoint::Url(url.clone()),
                (None, Some(s)) => Endpoint::Service {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    port: s.port.unwrap_or(443),
                },
                (None, None) => continue,
            };
            let bundle = cc
                .ca_bundle
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default();
            by_key
                .entry((endpoint, bundle))
                .or_default()
                .push(format!("{mname}/{}", w.name));
        }
    }
    by_key
        .into_iter()
        .map(|((endpoint, ca_bundle_pem), users)| Target {
            endpoint,
            ca_bundle_pem,
            users,
        })
        .collect()
}

pub fn webhook_configuration(mwcs: &[MutatingWebhookConfiguration]) -> CheckResult {
    const ID: &str = "webhook-configuration";
    if mwcs.is_empty() {
        return CheckResult::fail(
            ID,
            format!("no MutatingWebhookConfiguration {MWC_PREFIX}*: no pod is injected"),
            "the operator creates it from a Ready MeshConfig; see the operator and meshconfig checks",
        );
    }
    let names: Vec<String> = mwcs
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    let empty: Vec<String> = targets(mwcs)
        .into_iter()
        .filter(|t| t.ca_bundle_pem.trim().is_empty())
        .flat_map(|t| t.users)
        .collect();
    if !empty.is_empty() {
        return CheckResult::fail(
            ID,
            format!(
                "empty caBundle in {}: the API server cannot trust the webhook",
                empty.join(", ")
            ),
            "the operator (or cert-manager's cainjector) fills it; check their logs",
        );
    }
    let count: usize = mwcs
        .iter()
        .map(|m| m.webhooks.as_ref().map_or(0, Vec::len))
        .sum();
    CheckResult::pass(ID, format!("{} ({count} webhooks)", names.join(", ")))
}

/// Does the caBundle verify the certificate the webhook serves, and does it name the host called?
pub fn ca_bundle(
    target: &Target,
    served_chain_pem: &str,
    source: &str,
    expected_host: &str,
) -> CheckResult {
    const ID: &str = "ca-bundle";
    let hint = "the operator re-syncs the caBundle from Secret skjold-webhook-tls; check its logs, or delete the Secret to re-issue";
    if let Err(e) = skjold_certs::verify_signed_by(served_chain_pem, &target.ca_bundle_pem) {
        return CheckResult::fail(
            ID,
            format!(
                "caBundle of {} does not verify the certificate {source}: {e}",
                target.users.join(", ")
            ),
            hint,
        );
    }
    match skjold_certs::inspect(served_chain_pem) {
        Ok(info) if covers(&info, expected_host) => CheckResult::pass(
            ID,
            format!("caBundle verifies the certificate {source} for {expected_host}"),
        ),
        Ok(info) => CheckResult::fail(
            ID,
            format!(
                "certificate {source} does not name {expected_host} (DNS {:?}, IP {:?})",
                info.dns_names, info.ip_addresses
            ),
            hint,
        ),
        Err(e) => CheckResult::fail(
            ID,
            format!("certificate {source} cannot be read: {e}"),
            hint,
        ),
    }
}

fn covers(info: &skjold_certs::CertInfo, host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => info.ip_addresses.contains(&ip),
        Err(_) => info.dns_names.iter().any(|d| d.eq_ignore_ascii_case(host)),
    }
}

pub fn certificate_expiry(
    served_chain_pem: &str,
    source: &str,
    warn_before: Duration,
    now: SystemTime,
) -> CheckResult {
    const ID: &str = "certificate-expiry";
    let info = match skjold_certs::inspect(served_chain_pem) {
        Ok(i) => i,
        Err(e) => {
            return CheckResult::fail(
                ID,
                format!("certificate {source} cannot be read: {e}"),
                "see ca-bundle",
            );
        }
    };
    let until = format_time(info.not_after);
    match info.not_after.duration_since(now) {
        Err(_) => CheckResult::fail(
            ID,
            format!("certificate {source} expired at {until}"),
            "the operator renews it before expiry: check that it is running; cert-manager mode: kubectl describe certificate skjold-webhook",
        ),
        Ok(left) if left < warn_before => CheckResult::warn(
            ID,
            format!(
                "certificate {source} expires in {} (at {until})",
                human(left)
            ),
            "the operator renews at a third of the lifetime; if it did not, check its logs",
        ),
        Ok(left) => CheckResult::pass(
            ID,
            format!(
                "certificate {source} valid for {} (until {until})",
                human(left)
            ),
        ),
    }
}

pub fn webhook_reachable(url: &str, readyz: &Result<u16, String>) -> CheckResult {
    const ID: &str = "webhook-reachable";
    let hint =
        format!("the API server calls {url}: is skjold-webhook running and listening there?");
    match readyz {
        Ok(200) => CheckResult::pass(ID, format!("{url}: TLS handshake ok, /readyz 200")),
        Ok(code) => CheckResult::fail(ID, format!("{url}: /readyz answered {code}"), hint),
        Err(e) => CheckResult::fail(ID, format!("{url}: {e}"), hint),
    }
}

/// Outcome of `GET /readyz` through the API server's service proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyProbe {
    Ok,
    /// The caller may not use `services/proxy`: reachability is unknown, not broken.
    Forbidden,
    Failed(String),
}

/// In-cluster mode: the API server's service proxy takes the same network path (API server -> pod port)
/// as admission calls, the path firewalls most often break.
pub fn webhook_reachable_in_cluster(
    namespace: &str,
    name: &str,
    probe: &ProxyProbe,
) -> CheckResult {
    const ID: &str = "webhook-reachable";
    let what = format!("Service {namespace}/{name} via the API server");
    match probe {
        ProxyProbe::Ok => CheckResult::pass(ID, format!("{what}: /readyz 200")),
        ProxyProbe::Forbidden => CheckResult::warn(
            ID,
            format!("{what}: not tested, services/proxy is forbidden for this user"),
            "run with a user allowed to get services/proxy in the control-plane namespace",
        ),
        ProxyProbe::Failed(e) => CheckResult::fail(
            ID,
            format!("{what}: {e}"),
            format!(
                "the API server must reach the webhook pods on their container port: check `kubectl -n {namespace} get endpointslices -l kubernetes.io/service-name={name}` and firewall rules from the control plane to the nodes"
            ),
        ),
    }
}

fn label<'a>(ns: &'a Namespace, key: &str) -> Option<&'a str> {
    ns.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

pub fn namespace_labels(namespaces: &[Namespace], injection_label: &str) -> CheckResult {
    const ID: &str = "namespace-labels";
    let both: Vec<String> = namespaces
        .iter()
        .filter(|n| label(n, injection_label).is_some() && label(n, REV_LABEL).is_some())
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    if both.is_empty() {
        return CheckResult::pass(
            ID,
            format!("no namespace carries both {injection_label} and {REV_LABEL}"),
        );
    }
    CheckResult::warn(
        ID,
        format!(
            "{} namespace(s) carry both {injection_label} and {REV_LABEL} ({}): {injection_label} wins",
            both.len(),
            both.join(", ")
        ),
        format!(
            "keep one: kubectl label namespace {} {injection_label}-  (or {REV_LABEL}-)",
            both[0]
        ),
    )
}

/// The revision whose webhook injects a namespace, as Istio decides: `<injection_label>=enabled`
/// (`istio-injection` by default) means the default revision and beats `istio.io/rev`; any other
/// value of it disables injection.
pub fn injected_revision(
    ns: &Namespace,
    control_plane_ns: &str,
    injection_label: &str,
) -> Option<String> {
    let name = ns.metadata.name.as_deref()?;
    if SYSTEM_NAMESPACES.contains(&name) || name == control_plane_ns {
        return None;
    }
    skjold_inject::istio::namespace_revision(ns.metadata.labels.as_ref(), injection_label)
}

/// The namespace label the default revision's MeshConfig injects by
/// (`spec.injection.namespaceLabel`), or [`INJECTION_LABEL`].
pub fn injection_label(meshconfigs: &[kube::api::DynamicObject]) -> String {
    meshconfigs
        .iter()
        .find(|mc| {
            mc.data
                .pointer("/spec/revision")
                .and_then(serde_json::Value::as_str)
                .is_none_or(str::is_empty)
        })
        .and_then(|mc| mc.data.pointer("/spec/injection/namespaceLabel")?.as_str())
        .filter(|l| !l.is_empty())
        .unwrap_or(INJECTION_LABEL)
        .to_string()
}

fn opted_out(pod: &Pod) -> bool {
    let meta = &pod.metadata;
    let off = |m: Option<&BTreeMap<String, String>>| {
        m.and_then(|m| m.get(INJECT_OVERRIDE))
            .is_some_and(|v| v == "false")
    };
    off(meta.labels.as_ref()) || off(meta.annotations.as_ref())
}

fn has_proxy(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == PROXY_CONTAINER)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == PROXY_CONTAINER)
    })
}

/// Pods in injected namespaces that lack the proxy or carry an older injector config hash than the
/// revision's current one (`hashes`: revision -> current hash).
pub fn data_plane(
    namespaces: &[Namespace],
    pods: &[Pod],
    hashes: &BTreeMap<String, String>,
    control_plane_ns: &str,
    injection_label: &str,
) -> CheckResult {
    const ID: &str = "data-plane";
    let injected: BTreeMap<String, String> = namespaces
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.clone()?,
                injected_revision(n, control_plane_ns, injection_label)?,
            ))
        })
        .collect();
    let mut total = 0usize;
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    let mut restart_ns = BTreeSet::new();
    for pod in pods {
        let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let Some(ns_rev) = injected.get(ns) else {
            continue;
        };
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if finished || host_network || opted_out(pod) {
            continue;
        }
        total += 1;
        if !has_proxy(pod) {
            missing.push(format!("{ns}/{name}"));
            restart_ns.insert(ns.to_string());
            continue;
        }
        let rev = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REV_LABEL))
            .cloned()
            .unwrap_or_else(|| ns_rev.clone());
        let pod_hash = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION));
        if let (Some(current), Some(pod_hash)) = (hashes.get(&rev), pod_hash)
            && current != pod_hash
        {
            stale.push(format!("{ns}/{name}"));
            restart_ns.insert(ns.to_string());
        }
    }
    if missing.is_empty() && stale.is_empty() {
        return CheckResult::pass(
            ID,
            format!(
                "{total} pod(s) in {} injected namespace(s) run the proxy with the current config",
                injected.len()
            ),
        );
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} pod(s) lack {PROXY_CONTAINER} ({})",
            missing.len(),
            sample(&missing)
        ));
    }
    if !stale.is_empty() {
        parts.push(format!(
            "{} pod(s) run an old injector config ({})",
            stale.len(),
            sample(&stale)
        ));
    }
    let restart: Vec<String> = restart_ns
        .iter()
        .map(|ns| format!("kubectl rollout restart deployment -n {ns}"))
        .collect();
    CheckResult::warn(
        ID,
        parts.join("; "),
        format!("only new pods are injected: {}", restart.join("; ")),
    )
}

fn sample(items: &[String]) -> String {
    const SHOWN: usize = 3;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{}, and {} more",
            items[..SHOWN].join(", "),
            items.len() - SHOWN
        )
    }
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s => format!("{} minutes", s / 60),
    }
}

fn format_time(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{t:?}"))
}
