//! Validation of Istio's resources as Istio ships it: ValidatingWebhookConfigurations served by
//! istiod's `/validate`, so a VirtualService istiod would reject is refused by the API server with
//! istiod's own message.
//!
//! - `istio-validator[-rev]-<ns>` (`rev.validation.istio.io`): objects labelled `istio.io/rev` of
//!   this revision, as Istio's istiod chart renders it;
//! - `istiod-default-validator` (`validation.istio.io`), for the default revision only: every
//!   Istio resource, as Istio's base chart renders it for the default revision.
//!
//! Both carry the label `istio.io/rev: <rev>`: istiod's validation controller (on, because
//! `VALIDATION_WEBHOOK_CONFIG_NAME` is set) fills their `caBundle` with its own CA, which only
//! istiod knows. The operator never writes `caBundle`, so server-side apply leaves istiod's value
//! alone. `failurePolicy` is not set either: the API server defaults it to `Fail` (fail closed:
//! until istiod is ready, Istio resources are refused rather than admitted unvalidated), and
//! istiod has nothing to switch.

use serde_json::{Value, json};

use super::names;
use super::{Input, ManagedObject, RenderError, typed};

/// The names istiod may patch (its RBAC `resourceNames`): the revision's validator(s).
pub fn validator_names(rev: &str, default_revision: bool, namespace: &str) -> Vec<String> {
    let mut out = vec![names::istiod_validator(rev, namespace)];
    if default_revision {
        out.push(names::default_validator(namespace));
    }
    out
}

pub(crate) fn render(input: &Input<'_>) -> Result<Vec<ManagedObject>, RenderError> {
    let ns = input.ctx.namespace.as_str();
    let rev = input.rev;
    let client_config = client_config(input)?;
    let rules = json!([{
        "operations": ["CREATE", "UPDATE"],
        "apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"],
        "apiVersions": ["*"],
        "resources": ["*"],
    }]);
    let labels = [("app", "istiod"), ("istio", "istiod")];
    let webhook = |name: &str, object_selector: Option<Value>| {
        let mut w = json!({
            "name": name,
            "clientConfig": client_config,
            "rules": rules,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        });
        if let Some(sel) = object_selector {
            w["objectSelector"] = sel;
        }
        w
    };
    let mut out = vec![ManagedObject::ValidatingWebhookConfiguration(typed(
        "istiod ValidatingWebhookConfiguration",
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": input.meta(names::istiod_validator(rev, ns), &labels),
            "webhooks": [webhook("rev.validation.istio.io", Some(json!({
                "matchExpressions": [{"key": names::REV_LABEL, "operator": "In", "values": [rev]}],
            })))],
        }),
    )?)];
    if input.spec.is_default_revision() {
        out.push(ManagedObject::ValidatingWebhookConfiguration(typed(
            "default ValidatingWebhookConfiguration",
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": input.meta(names::default_validator(ns), &labels),
                "webhooks": [webhook("validation.istio.io", None)],
            }),
        )?));
    }
    Ok(out)
}

fn client_config(input: &Input<'_>) -> Result<Value, RenderError> {
    match &input.ctx.istiod_validation_url {
        None => Ok(json!({"service": {
            "name": names::istiod(input.rev), "namespace": input.ctx.namespace,
            "path": "/validate", "port": 443,
        }})),
        Some(url) if url.starts_with("https://") => Ok(json!({"url": url})),
        Some(url) => Err(RenderError::InvalidField {
            field: "--istiod-validation-url",
            value: url.clone(),
            reason: "the API server only calls webhooks over https://".into(),
        }),
    }
}

/// The host of `--istiod-validation-url`, which istiod's serving certificate must name
/// (`ISTIOD_CUSTOM_HOST`).
pub(crate) fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, meshconfig};
    use super::super::{ManagedObject, render};
    use crate::crd::Profile;

    fn validators(
        rev: &str,
    ) -> Vec<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> {
        render(&meshconfig(Profile::Default, rev), &ctx())
            .unwrap()
            .objects
            .into_iter()
            .filter_map(|(_, o)| match o {
                ManagedObject::ValidatingWebhookConfiguration(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn default_revision_validates_everything_through_istiod() {
        let v = validators("");
        let names: Vec<_> = v.iter().map(|v| v.metadata.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            ["istio-validator-istio-system", "istiod-default-validator"]
        );
        for vwc in &v {
            // istiod finds the configurations it patches by this label.
            assert_eq!(
                vwc.metadata.labels.as_ref().unwrap()["istio.io/rev"],
                "default"
            );
            let w = &vwc.webhooks.as_ref().unwrap()[0];
            let svc = w.client_config.service.as_ref().unwrap();
            assert_eq!(
                (svc.name.as_str(), svc.path.as_deref(), svc.port),
                ("istiod", Some("/validate"), Some(443))
            );
            // istiod owns these two fields; an apply that set them would undo its patches.
            assert!(w.client_config.ca_bundle.is_none());
            assert!(w.failure_policy.is_none());
            let rule = &w.rules.as_ref().unwrap()[0];
            assert!(
                rule.api_groups
                    .as_ref()
                    .unwrap()
                    .contains(&"networking.istio.io".to_string())
            );
            assert_eq!(rule.operations.as_ref().unwrap(), &["CREATE", "UPDATE"]);
        }
        assert!(v[0].webhooks.as_ref().unwrap()[0].object_selector.is_some());
        assert!(v[1].webhooks.as_ref().unwrap()[0].object_selector.is_none());
    }

    #[test]
    fn canary_revision_validates_only_its_own_objects() {
        let v = validators("canary");
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].metadata.name.as_deref(),
            Some("istio-validator-canary-istio-system")
        );
        let w = &v[0].webhooks.as_ref().unwrap()[0];
        assert_eq!(
            w.client_config.service.as_ref().unwrap().name,
            "istiod-canary"
        );
        let sel = serde_json::to_value(&w.object_selector).unwrap();
        assert_eq!(sel["matchExpressions"][0]["values"][0], "canary");
    }

    #[test]
    fn url_mode_and_its_host() {
        let mut c = ctx();
        c.istiod_validation_url = Some("https://localhost:15017/validate".into());
        let r = render(&meshconfig(Profile::Default, ""), &c).unwrap();
        let yaml = r.to_yaml().unwrap();
        assert!(yaml.contains("url: https://localhost:15017/validate"));
        assert!(
            yaml.contains("localhost"),
            "istiod's certificate must name the URL host"
        );
        assert_eq!(
            super::url_host("https://localhost:15017/validate"),
            Some("localhost")
        );
        assert_eq!(
            super::url_host("https://istiod.example"),
            Some("istiod.example")
        );
        assert_eq!(super::url_host("http://x"), None);
        c.istiod_validation_url = Some("http://localhost:15017/validate".into());
        assert!(render(&meshconfig(Profile::Default, ""), &c).is_err());
    }
}
