//! The MutatingWebhookConfiguration, with Istio's four webhook entries and selectors, plus
//! Skjold's safety rails: system and control-plane namespaces are always excluded, the timeout
//! is explicit and reinvocation is on (injection is idempotent).

use k8s_openapi::ByteString;
use serde_json::{Value, json};
use skjold_inject::istio::INJECT_LABEL;

use super::names;
use super::{Input, ManagedObject, RenderError, WebhookTarget, typed};

/// Namespaces never sent to the webhook (Istio's ignored namespaces): the injector's own list.
pub use skjold_inject::istio::IGNORED_NAMESPACES as SYSTEM_NAMESPACES;
/// API server wait per call; a dead webhook delays pod creation by at most this much.
pub const TIMEOUT_SECONDS: i32 = 5;
/// cert-manager's cainjector fills `caBundle` from this Certificate (`namespace/name`).
pub const CA_INJECTION_ANNOTATION: &str = "cert-manager.io/inject-ca-from";

pub(crate) fn render(input: &Input<'_>) -> Result<ManagedObject, RenderError> {
    let ns = input.ctx.namespace.as_str();
    let rev = input.rev;
    let ns_label = input.spec.injection.namespace_label.as_str();
    let client_config = client_config(input)?;

    let mut excluded: Vec<&str> = SYSTEM_NAMESPACES.to_vec();
    excluded.push(ns);
    if let WebhookTarget::Service { namespace, .. } = &input.ctx.webhook
        && !excluded.contains(&namespace.as_str())
    {
        excluded.push(namespace.as_str());
    }
    let exclude =
        json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded});
    let exists_not = |key: &str| json!({"key": key, "operator": "DoesNotExist"});
    let in_ = |key: &str, v: &str| json!({"key": key, "operator": "In", "values": [v]});
    let not_false = json!({"key": INJECT_LABEL, "operator": "NotIn", "values": ["false"]});

    let entry = |name: &str, ns_exprs: Vec<Value>, obj_exprs: Vec<Value>| {
        json!({
            "name": name,
            "clientConfig": client_config,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "matchPolicy": "Equivalent",
            "namespaceSelector": {"matchExpressions": ns_exprs},
            "objectSelector": {"matchExpressions": obj_exprs},
        })
    };

    let mut webhooks = vec![
        entry(
            "rev.namespace.sidecar-injector.istio.io",
            vec![
                in_(names::REV_LABEL, rev),
                exists_not(ns_label),
                exclude.clone(),
            ],
            vec![not_false.clone()],
        ),
        entry(
            "rev.object.sidecar-injector.istio.io",
            vec![
                exists_not(names::REV_LABEL),
                exists_not(ns_label),
                exclude.clone(),
            ],
            vec![not_false.clone(), in_(names::REV_LABEL, rev)],
        ),
    ];
    // Only the default revision answers the legacy `istio-injection=enabled` label and
    // pod-level opt-in in unlabeled namespaces.
    if input.spec.is_default_revision() {
        webhooks.push(entry(
            "namespace.sidecar-injector.istio.io",
            vec![in_(ns_label, "enabled"), exclude.clone()],
            vec![not_false.clone()],
        ));
        webhooks.push(entry(
            "object.sidecar-injector.istio.io",
            vec![
                exists_not(ns_label),
                exists_not(names::REV_LABEL),
                exclude.clone(),
            ],
            vec![in_(INJECT_LABEL, "true"), exists_not(names::REV_LABEL)],
        ));
    }

    let mut mwc: k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration = typed(
        "MutatingWebhookConfiguration",
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": input.meta(names::webhook_configuration(rev, ns), &[("app", "sidecar-injector")]),
            "webhooks": webhooks,
        }),
    )?;
    if let Some(certificate) = &input.ctx.ca_injection_from {
        mwc.metadata.annotations = Some(std::collections::BTreeMap::from([(
            CA_INJECTION_ANNOTATION.to_string(),
            certificate.clone(),
        )]));
    } else if !input.ctx.ca_bundle.is_empty() {
        for w in mwc.webhooks.iter_mut().flatten() {
            w.client_config.ca_bundle = Some(ByteString(input.ctx.ca_bundle.as_bytes().to_vec()));
        }
    }
    Ok(ManagedObject::MutatingWebhookConfiguration(mwc))
}

fn client_config(input: &Input<'_>) -> Result<Value, RenderError> {
    let rev_suffix = if input.spec.is_default_revision() {
        String::new()
    } else {
        format!("/rev/{}", input.rev)
    };
    match &input.ctx.webhook {
        WebhookTarget::Service { name, namespace } => Ok(json!({
            "service": {"name": name, "namespace": namespace, "path": format!("/inject{rev_suffix}"), "port": 443},
        })),
        WebhookTarget::Url(url) => {
            if !url.starts_with("https://") {
                return Err(RenderError::InvalidField {
                    field: "--webhook-url",
                    value: url.clone(),
                    reason: "the API server only calls webhooks over https://".into(),
                });
            }
            Ok(json!({"url": format!("{}{rev_suffix}", url.trim_end_matches('/'))}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, meshconfig};
    use super::super::{ManagedObject, WebhookTarget, render};
    use crate::crd::Profile;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

    fn mwc(
        profile: Profile,
        rev: &str,
        ctx: &super::super::RenderContext,
    ) -> MutatingWebhookConfiguration {
        render(&meshconfig(profile, rev), ctx)
            .unwrap()
            .objects
            .into_iter()
            .find_map(|(_, o)| match o {
                ManagedObject::MutatingWebhookConfiguration(m) => Some(m),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn default_revision_has_four_entries_with_safety_settings() {
        let mut c = ctx();
        c.ca_bundle = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n".into();
        let m = mwc(Profile::Default, "", &c);
        let hooks = m.webhooks.unwrap();
        let names: Vec<&str> = hooks.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rev.namespace.sidecar-injector.istio.io",
                "rev.object.sidecar-injector.istio.io",
                "namespace.sidecar-injector.istio.io",
                "object.sidecar-injector.istio.io"
            ]
        );
        for w in &hooks {
            assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
            assert_eq!(w.side_effects, "None");
            assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
            assert_eq!(w.timeout_seconds, Some(super::TIMEOUT_SECONDS));
            assert_eq!(
                w.client_config.ca_bundle.as_ref().unwrap().0,
                c.ca_bundle.as_bytes()
            );
            let svc = w.client_config.service.as_ref().unwrap();
            assert_eq!(svc.path.as_deref(), Some("/inject"));
            let exprs = w
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_expressions
                .as_ref()
                .unwrap();
            let excl = exprs
                .iter()
                .find(|e| e.key == "kubernetes.io/metadata.name")
                .unwrap();
            assert_eq!(excl.operator, "NotIn");
            let values = excl.values.as_ref().unwrap();
            assert!(values.contains(&"kube-system".to_string()));
            assert!(values.contains(&"istio-system".to_string()));
        }
        let ns_hook = &hooks[2];
        let e = &ns_hook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(e.key, "istio-injection");
        assert_eq!(e.values.as_ref().unwrap(), &["enabled".to_string()]);
    }

    #[test]
    fn revision_has_only_rev_entries_and_rev_path() {
        let m = mwc(Profile::Minimal, "canary", &ctx());
        assert_eq!(
            m.metadata.name.as_deref(),
            Some("skjold-sidecar-injector-canary")
        );
        let hooks = m.webhooks.unwrap();
        assert_eq!(hooks.len(), 2);
        for w in &hooks {
            assert!(w.name.starts_with("rev."));
            assert_eq!(
                w.client_config.service.as_ref().unwrap().path.as_deref(),
                Some("/inject/rev/canary")
            );
            assert!(w.client_config.ca_bundle.is_none());
        }
        let rev_in = &hooks[0]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(rev_in.key, "istio.io/rev");
        assert_eq!(rev_in.values.as_ref().unwrap(), &["canary".to_string()]);
    }

    #[test]
    fn cert_manager_mode_annotates_and_leaves_ca_bundle_alone() {
        let mut c = ctx();
        c.ca_bundle = "ignored".into();
        c.ca_injection_from = Some("istio-system/skjold-webhook".into());
        let m = mwc(Profile::Minimal, "", &c);
        assert_eq!(
            m.metadata.annotations.unwrap()[super::CA_INJECTION_ANNOTATION],
            "istio-system/skjold-webhook"
        );
        assert!(
            m.webhooks
                .unwrap()
                .iter()
                .all(|w| w.client_config.ca_bundle.is_none())
        );
    }

    #[test]
    fn url_mode_appends_revision_and_requires_https() {
        let mut c = ctx();
        c.webhook = WebhookTarget::Url("https://127.0.0.1:15017/inject".into());
        let m = mwc(Profile::Minimal, "canary", &c);
        let w = &m.webhooks.unwrap()[0];
        assert_eq!(
            w.client_config.url.as_deref(),
            Some("https://127.0.0.1:15017/inject/rev/canary")
        );
        c.webhook = WebhookTarget::Url("http://127.0.0.1/inject".into());
        let err = render(&meshconfig(Profile::Minimal, ""), &c).unwrap_err();
        assert!(err.to_string().contains("http://127.0.0.1/inject"), "{err}");
    }
}
