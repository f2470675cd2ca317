//! Verdicts of every check on objects shaped like the API server returns them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::DynamicObject;
use serde_json::json;
use skjold_certs::CertificateAuthority;

use super::report::Status;
use super::rules::{self, Endpoint, Target};

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test object deserializes")
}

const DAY: Duration = Duration::from_secs(86_400);

fn crd(established: &str, served: bool) -> CustomResourceDefinition {
    from(json!({
        "metadata": {"name": "meshconfigs.skjold.io"},
        "spec": {"group": "skjold.io", "scope": "Namespaced",
                 "names": {"kind": "MeshConfig", "plural": "meshconfigs"},
                 "versions": [{"name": "v1alpha1", "served": served, "storage": true}]},
        "status": {"conditions": [{"type": "Established", "status": established}]}
    }))
}

#[test]
fn crd_verdicts() {
    assert_eq!(rules::crd(None).status, Status::Fail);
    assert_eq!(rules::crd(Some(&crd("True", true))).status, Status::Pass);
    let not_established = rules::crd(Some(&crd("False", true)));
    assert_eq!(not_established.status, Status::Fail);
    assert!(not_established.message.contains("not Established"));
    let not_served = rules::crd(Some(&crd("True", false)));
    assert_eq!(not_served.status, Status::Fail);
    assert!(
        not_served.message.contains("does not serve v1alpha1"),
        "{}",
        not_served.message
    );
}

fn deployment(desired: i32, ready: i32) -> Deployment {
    from(
        json!({"metadata": {"name": "d"}, "spec": {"replicas": desired, "selector": {}, "template": {}},
                "status": {"readyReplicas": ready}}),
    )
}

fn lease(renewed_secs_ago: u64, now: SystemTime) -> Lease {
    let renewed =
        k8s_openapi::jiff::Timestamp::try_from(now - Duration::from_secs(renewed_secs_ago))
            .unwrap();
    from(json!({"metadata": {"name": "skjold-operator"},
                "spec": {"holderIdentity": "laptop-1234", "leaseDurationSeconds": 15, "renewTime": renewed.to_string()}}))
}

#[test]
fn operator_in_cluster_or_out_of_cluster() {
    let now = SystemTime::now();
    assert_eq!(
        rules::operator("istio-system", Some(&deployment(1, 1)), None, now).status,
        Status::Pass
    );
    let down = rules::operator("istio-system", Some(&deployment(1, 0)), None, now);
    assert_eq!(down.status, Status::Fail);
    assert!(
        down.hint
            .unwrap()
            .contains("kubectl -n istio-system logs deployment/skjold-operator")
    );
    let local = rules::operator("istio-system", None, Some(&lease(3, now)), now);
    assert_eq!(local.status, Status::Pass);
    assert!(local.message.contains("laptop-1234"), "{}", local.message);
    assert_eq!(
        rules::operator("istio-system", None, Some(&lease(600, now)), now).status,
        Status::Fail,
        "stale lease"
    );
    assert_eq!(
        rules::operator("istio-system", None, None, now).status,
        Status::Fail
    );
}

#[test]
fn webhook_availability() {
    assert_eq!(
        rules::webhook("ns", Some(&deployment(2, 2)), false).status,
        Status::Pass
    );
    let degraded = rules::webhook("ns", Some(&deployment(2, 1)), false);
    assert_eq!(degraded.status, Status::Warn);
    assert!(degraded.message.contains("1/2"));
    assert_eq!(
        rules::webhook("ns", Some(&deployment(2, 0)), false).status,
        Status::Fail
    );
    assert_eq!(
        rules::webhook("ns", None, true).status,
        Status::Pass,
        "URL mode needs no Deployment"
    );
    assert_eq!(rules::webhook("ns", None, false).status, Status::Fail);
}

fn meshconfig(
    name: &str,
    generation: i64,
    observed: i64,
    ready: Option<(&str, &str)>,
) -> DynamicObject {
    let conditions = match ready {
        Some((status, reason)) => {
            json!([{"type": "Ready", "status": status, "reason": reason, "message": "webhook Secret missing"}])
        }
        None => json!([]),
    };
    from(
        json!({"apiVersion": "skjold.io/v1alpha1", "kind": "MeshConfig",
                "metadata": {"name": name, "namespace": "istio-system", "generation": generation},
                "status": {"observedGeneration": observed, "conditions": conditions}}),
    )
}

#[test]
fn meshconfig_status() {
    assert_eq!(rules::meshconfigs("istio-system", &[]).status, Status::Fail);
    let ok = rules::meshconfigs(
        "istio-system",
        &[meshconfig("default", 2, 2, Some(("True", "Reconciled")))],
    );
    assert_eq!(ok.status, Status::Pass);
    assert_eq!(ok.message, "Ready: default");
    let bad = rules::meshconfigs(
        "istio-system",
        &[
            meshconfig("default", 1, 1, Some(("True", "Reconciled"))),
            meshconfig("canary", 1, 1, Some(("False", "CertificateMissing"))),
        ],
    );
    assert_eq!(bad.status, Status::Fail);
    assert!(
        bad.message
            .contains("canary: CertificateMissing (webhook Secret missing)"),
        "{}",
        bad.message
    );
    assert_eq!(
        rules::meshconfigs("istio-system", &[meshconfig("x", 1, 1, None)]).status,
        Status::Fail
    );
    let behind = rules::meshconfigs(
        "istio-system",
        &[meshconfig("default", 3, 2, Some(("True", "Reconciled")))],
    );
    assert_eq!(behind.status, Status::Warn);
}

fn mwc(name: &str, url: Option<&str>, bundle: &str) -> MutatingWebhookConfiguration {
    let client_config = match url {
        Some(u) => json!({"url": u, "caBundle": bundle}),
        None => {
            json!({"service": {"name": "skjold-webhook", "namespace": "istio-system", "path": "/inject"}, "caBundle": bundle})
        }
    };
    let entry = |n: &str| json!({"name": n, "clientConfig": client_config, "sideEffects": "None", "admissionReviewVersions": ["v1"]});
    from(json!({"metadata": {"name": name},
                "webhooks": [entry("namespace.sidecar-injector.istio.io"), entry("object.sidecar-injector.istio.io")]}))
}

fn b64(s: &str) -> String {
    // caBundle is base64 on the wire; k8s-openapi decodes ByteString from it.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn webhook_configurations_are_found_and_deduplicated() {
    let all = vec![
        mwc("skjold-sidecar-injector", None, &b64("BUNDLE")),
        mwc("istio-sidecar-injector", None, &b64("OTHER")),
    ];
    let ours = rules::skjold_mwcs(all);
    assert_eq!(ours.len(), 1, "only Skjold's configurations");
    let targets = rules::targets(&ours);
    assert_eq!(targets.len(), 1, "two webhooks, one endpoint and bundle");
    assert_eq!(targets[0].ca_bundle_pem, "BUNDLE");
    assert_eq!(
        targets[0].endpoint,
        Endpoint::Service {
            namespace: "istio-system".into(),
            name: "skjold-webhook".into(),
            port: 443
        }
    );
    assert_eq!(targets[0].users.len(), 2);
    let check = rules::webhook_configuration(&ours);
    assert_eq!(check.status, Status::Pass);
    assert!(check.message.contains("2 webhooks"), "{}", check.message);

    assert_eq!(rules::webhook_configuration(&[]).status, Status::Fail);
    let empty = rules::webhook_configuration(&[mwc(
        "skjold-sidecar-injector",
        Some("https://127.0.0.1:1/inject"),
        "",
    )]);
    assert_eq!(empty.status, Status::Fail);
    assert!(
        empty.message.contains("empty caBundle"),
        "{}",
        empty.message
    );
}

fn target(bundle: &str) -> Target {
    Target {
        endpoint: Endpoint::Url("https://127.0.0.1:1/inject".into()),
        ca_bundle_pem: bundle.into(),
        users: vec!["m/w".into()],
    }
}

#[test]
fn ca_bundle_must_verify_the_served_certificate_and_name_the_host() {
    let ca = CertificateAuthority::generate("ca", 10 * DAY).unwrap();
    let other = CertificateAuthority::generate("other", 10 * DAY).unwrap();
    let leaf = ca
        .issue_serving(
            &["skjold-webhook.istio-system.svc".into()],
            &["127.0.0.1".parse().unwrap()],
            DAY,
        )
        .unwrap();

    let ok = rules::ca_bundle(
        &target(ca.cert_pem()),
        &leaf.cert_pem,
        "served",
        "127.0.0.1",
    );
    assert_eq!(ok.status, Status::Pass, "{}", ok.message);
    let ok_dns = rules::ca_bundle(
        &target(ca.cert_pem()),
        &leaf.cert_pem,
        "served",
        "skjold-webhook.istio-system.svc",
    );
    assert_eq!(ok_dns.status, Status::Pass, "{}", ok_dns.message);

    // Rotation overlap: a bundle holding the new and the old CA still verifies.
    let bundle = format!("{}{}", other.cert_pem(), ca.cert_pem());
    assert_eq!(
        rules::ca_bundle(&target(&bundle), &leaf.cert_pem, "served", "127.0.0.1").status,
        Status::Pass
    );

    let wrong_ca = rules::ca_bundle(
        &target(other.cert_pem()),
        &leaf.cert_pem,
        "served",
        "127.0.0.1",
    );
    assert_eq!(wrong_ca.status, Status::Fail);
    assert!(
        wrong_ca.message.contains("does not verify"),
        "{}",
        wrong_ca.message
    );

    let wrong_host = rules::ca_bundle(&target(ca.cert_pem()), &leaf.cert_pem, "served", "10.0.0.1");
    assert_eq!(wrong_host.status, Status::Fail);
    assert!(
        wrong_host.message.contains("does not name 10.0.0.1"),
        "{}",
        wrong_host.message
    );
}

#[test]
fn certificate_expiry_thresholds() {
    let ca = CertificateAuthority::generate("ca", 400 * DAY).unwrap();
    let long = ca.issue_serving(&["a".into()], &[], 90 * DAY).unwrap();
    let short = ca.issue_serving(&["a".into()], &[], 10 * DAY).unwrap();
    let now = SystemTime::now();
    let pass = rules::certificate_expiry(&long.cert_pem, "x", 30 * DAY, now);
    assert_eq!(pass.status, Status::Pass);
    assert!(
        pass.message.contains("valid for 89 days") || pass.message.contains("valid for 90 days"),
        "{}",
        pass.message
    );
    let warn = rules::certificate_expiry(&short.cert_pem, "x", 30 * DAY, now);
    assert_eq!(warn.status, Status::Warn);
    assert!(warn.message.contains("expires in"), "{}", warn.message);
    let expired = rules::certificate_expiry(&short.cert_pem, "x", 30 * DAY, now + 11 * DAY);
    assert_eq!(expired.status, Status::Fail);
    assert!(
        expired.message.contains("expired at"),
        "{}",
        expired.message
    );
    assert_eq!(
        rules::certificate_expiry("not a cert", "x", DAY, now).status,
        Status::Fail
    );
}

#[test]
fn reachability() {
    assert_eq!(
        rules::webhook_reachable("https://h/inject", &Ok(200)).status,
        Status::Pass
    );
    assert_eq!(
        rules::webhook_reachable("https://h/inject", &Ok(503)).status,
        Status::Fail
    );
    let down = rules::webhook_reachable("https://h/inject", &Err("connection refused".into()));
    assert_eq!(down.status, Status::Fail);
    assert!(down.message.contains("connection refused"));
}

fn ns(name: &str, labels: serde_json::Value) -> Namespace {
    from(json!({"metadata": {"name": name, "labels": labels}}))
}

#[test]
fn namespaces_with_both_labels_warn() {
    let both = ns(
        "shop",
        json!({"istio-injection": "enabled", "istio.io/rev": "canary"}),
    );
    let one = ns("web", json!({"istio.io/rev": "canary"}));
    assert_eq!(
        rules::namespace_labels(std::slice::from_ref(&one), rules::INJECTION_LABEL).status,
        Status::Pass
    );
    let w = rules::namespace_labels(&[both, one], rules::INJECTION_LABEL);
    assert_eq!(w.status, Status::Warn);
    assert!(
        w.message.contains("(shop)") && w.message.contains("istio-injection wins"),
        "{}",
        w.message
    );
    assert!(
        w.hint
            .unwrap()
            .contains("kubectl label namespace shop istio-injection-")
    );
}

#[test]
fn injected_revision_follows_istio_precedence() {
    let cp = "istio-system";
    let rev = |labels| rules::injected_revision(&ns("app", labels), cp, rules::INJECTION_LABEL);
    assert_eq!(
        rev(json!({"istio-injection": "enabled"})).as_deref(),
        Some("default")
    );
    assert_eq!(
        rev(json!({"istio-injection": "enabled", "istio.io/rev": "canary"})).as_deref(),
        Some("default")
    );
    assert_eq!(
        rev(json!({"istio-injection": "disabled", "istio.io/rev": "canary"})),
        None
    );
    assert_eq!(
        rev(json!({"istio.io/rev": "canary"})).as_deref(),
        Some("canary")
    );
    assert_eq!(rev(json!({})), None);
    assert_eq!(
        rules::injected_revision(
            &ns("kube-system", json!({"istio-injection": "enabled"})),
            cp,
            rules::INJECTION_LABEL
        ),
        None
    );
    assert_eq!(
        rules::injected_revision(
            &ns(cp, json!({"istio-injection": "enabled"})),
            cp,
            rules::INJECTION_LABEL
        ),
        None
    );
}

fn pod(ns: &str, name: &str, proxy: bool, hash: Option<&str>, extra: serde_json::Value) -> Pod {
    let mut containers = vec![json!({"name": "app", "image": "app"})];
    if proxy {
        containers.push(json!({"name": "istio-proxy", "image": "proxyv2"}));
    }
    let annotations = match hash {
        Some(h) => json!({"skjold.io/injector-config-hash": h}),
        None => json!({}),
    };
    let mut p = json!({"metadata": {"name": name, "namespace": ns, "annotations": annotations},
                       "spec": {"containers": containers}, "status": {"phase": "Running"}});
    if let (Some(obj), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if let Some(existing) = obj.get_mut(k).and_then(|e| e.as_object_mut()) {
                existing.extend(v.as_object().cloned().unwrap_or_default());
            }
        }
    }
    from(p)
}

#[test]
fn data_plane_counts_missing_and_stale_pods() {
    let namespaces = vec![
        ns("shop", json!({"istio-injection": "enabled"})),
        ns("canary", json!({"istio.io/rev": "canary"})),
        ns("plain", json!({})),
    ];
    let hashes = BTreeMap::from([
        ("default".to_string(), "h1".to_string()),
        ("canary".to_string(), "c2".to_string()),
    ]);
    let good = vec![
        pod("shop", "ok", true, Some("h1"), json!({})),
        pod("canary", "ok", true, Some("c2"), json!({})),
        pod("plain", "not-injected-ns", false, None, json!({})),
        pod(
            "shop",
            "opted-out",
            false,
            None,
            json!({"metadata": {"labels": {"sidecar.istio.io/inject": "false"}}}),
        ),
        pod(
            "shop",
            "host-net",
            false,
            None,
            json!({"spec": {"hostNetwork": true}}),
        ),
        pod(
            "shop",
            "done",
            false,
            None,
            json!({"status": {"phase": "Succeeded"}}),
        ),
        pod("shop", "istiod-injected", true, None, json!({})),
    ];
    let pass = rules::data_plane(
        &namespaces,
        &good,
        &hashes,
        "istio-system",
        rules::INJECTION_LABEL,
    );
    assert_eq!(pass.status, Status::Pass, "{}", pass.message);
    assert!(
        pass.message
            .starts_with("3 pod(s) in 2 injected namespace(s)"),
        "{}",
        pass.message
    );

    let mut bad = good.clone();
    bad.push(pod("shop", "old", false, None, json!({})));
    bad.push(pod("canary", "stale", true, Some("c1"), json!({})));
    bad.push(pod(
        "canary",
        "rev-label",
        true,
        Some("h1"),
        json!({"metadata": {"labels": {"istio.io/rev": "default"}}}),
    ));
    let warn = rules::data_plane(
        &namespaces,
        &bad,
        &hashes,
        "istio-system",
        rules::INJECTION_LABEL,
    );
    assert_eq!(warn.status, Status::Warn);
    assert!(
        warn.message
            .contains("1 pod(s) lack istio-proxy (shop/old)"),
        "{}",
        warn.message
    );
    assert!(
        warn.message
            .contains("1 pod(s) run an old injector config (canary/stale)"),
        "{}",
        warn.message
    );
    let hint = warn.hint.unwrap();
    assert!(
        hint.contains("kubectl rollout restart deployment -n canary"),
        "{hint}"
    );
    assert!(
        hint.contains("kubectl rollout restart deployment -n shop"),
        "{hint}"
    );
}

#[test]
fn injector_hashes_come_from_the_webhook_config_maps() {
    let mut cfg = skjold_inject::config::InjectorConfig::default();
    let default_hash = cfg.hash();
    let cm = |name: &str, text: String, rev_label: Option<&str>| -> ConfigMap {
        let labels = match rev_label {
            Some(r) => json!({"skjold.io/injector-config": "true", "istio.io/rev": r}),
            None => json!({"skjold.io/injector-config": "true"}),
        };
        from(json!({"metadata": {"name": name, "labels": labels}, "data": {"config": text}}))
    };
    let default_cm = cm("skjold-injector", cfg.to_yaml(), None);
    cfg.revision = "canary".into();
    let canary_hash = cfg.hash();
    let canary_cm = cm("skjold-injector-canary", cfg.to_yaml(), Some("canary"));
    let broken = cm("skjold-injector-broken", "proxy: [".into(), Some("broken"));
    let hashes = super::hashes_from_config_maps(&[default_cm, canary_cm, broken]);
    assert_eq!(hashes.get("default"), Some(&default_hash));
    assert_eq!(hashes.get("canary"), Some(&canary_hash));
    assert_ne!(default_hash, canary_hash);
    assert!(!hashes.contains_key("broken"));
}

#[test]
fn in_cluster_reachability() {
    use super::rules::ProxyProbe;
    let ok = rules::webhook_reachable_in_cluster("istio-system", "skjold-webhook", &ProxyProbe::Ok);
    assert_eq!(ok.status, Status::Pass);
    assert!(
        ok.message.contains("Service istio-system/skjold-webhook"),
        "{}",
        ok.message
    );
    assert_eq!(
        rules::webhook_reachable_in_cluster("ns", "svc", &ProxyProbe::Forbidden).status,
        Status::Warn,
        "a forbidden probe is unknown, not broken"
    );
    let down = rules::webhook_reachable_in_cluster(
        "ns",
        "svc",
        &ProxyProbe::Failed("no endpoints available".into()),
    );
    assert_eq!(down.status, Status::Fail);
    assert!(down.message.contains("no endpoints available"));
    assert!(
        down.hint
            .unwrap()
            .contains("kubernetes.io/service-name=svc")
    );
}

#[test]
fn checks_follow_the_meshconfigs_namespace_label() {
    let mc: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "skjold.io/v1alpha1", "kind": "MeshConfig",
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"injection": {"namespaceLabel": "mesh.example.com/inject"}},
    }))
    .unwrap();
    let label = rules::injection_label(std::slice::from_ref(&mc));
    assert_eq!(label, "mesh.example.com/inject");
    assert_eq!(rules::injection_label(&[]), rules::INJECTION_LABEL);
    let custom = ns("app", json!({"mesh.example.com/inject": "enabled"}));
    assert_eq!(
        rules::injected_revision(&custom, "istio-system", &label).as_deref(),
        Some("default")
    );
    assert_eq!(
        rules::injected_revision(&custom, "istio-system", rules::INJECTION_LABEL),
        None
    );
}

#[test]
fn istio_apis_need_every_guide_version_and_name_removed_ones() {
    let crd = |name: &str, versions: &[&str]| -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"group": "x", "scope": "Namespaced", "names": {"kind": "X", "plural": "xs"},
                     "versions": versions.iter().map(|v| json!({"name": v, "served": true, "storage": *v == "v1"})).collect::<Vec<_>>()},
        }))
        .unwrap()
    };
    let dr = crd(
        "destinationrules.networking.istio.io",
        &["v1alpha3", "v1beta1", "v1"],
    );
    let vs = crd(
        "virtualservices.networking.istio.io",
        &["v1alpha3", "v1beta1", "v1"],
    );
    let pa = crd("peerauthentications.security.istio.io", &["v1beta1", "v1"]);
    let vs_new_only = crd("virtualservices.networking.istio.io", &["v1"]);
    let all = [
        ("destinationrules.networking.istio.io", Some(&dr)),
        ("virtualservices.networking.istio.io", Some(&vs)),
        ("peerauthentications.security.istio.io", Some(&pa)),
    ];
    assert_eq!(rules::istio_apis(&all, &[]).status, Status::Pass);
    let w = rules::istio_apis(&all, &["meshpolicies.authentication.istio.io"]);
    assert_eq!(w.status, Status::Warn);
    assert!(w.message.contains("removed in Istio 1.6"), "{}", w.message);
    let old = [
        all[0],
        ("virtualservices.networking.istio.io", Some(&vs_new_only)),
        all[2],
    ];
    let f = rules::istio_apis(&old, &[]);
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.message
            .contains("virtualservices.networking.istio.io v1alpha3"),
        "{}",
        f.message
    );
    let none = [("destinationrules.networking.istio.io", None)];
    assert_eq!(rules::istio_apis(&none, &[]).status, Status::Fail);
}
