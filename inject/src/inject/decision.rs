//! The pod-level injection decision (Istio's `injectRequired`, plus Skjold's already-injected
//! skip), with a human explanation for every step.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::keys;
use super::types::{InjectError, NamespaceInfo, Reason, Source};
use crate::config::{InjectionPolicy, InjectorConfig};

pub use crate::istio::IGNORED_NAMESPACES;

/// The result of the decision step.
#[derive(Debug)]
pub struct Decision {
    pub reason: Reason,
    pub warnings: Vec<String>,
    pub explanation: Vec<String>,
}

/// Pod annotations with namespace annotations as defaults, without merging maps.
#[derive(Clone, Copy)]
pub struct EffectiveAnnotations<'a> {
    pub pod: Option<&'a BTreeMap<String, String>>,
    pub namespace: &'a BTreeMap<String, String>,
}

impl<'a> EffectiveAnnotations<'a> {
    pub fn new(pod: &'a Pod, namespace: &'a NamespaceInfo) -> Self {
        EffectiveAnnotations {
            pod: pod.metadata.annotations.as_ref(),
            namespace: &namespace.annotations,
        }
    }

    /// The pod's own value, else the namespace default (only for the families Istio reads).
    pub fn get(&self, key: &str) -> Option<(&'a str, Source)> {
        if let Some(v) = self.pod.and_then(|a| a.get(key)) {
            return Some((v.as_str(), Source::Pod));
        }
        if keys::inherits_from_namespace(key) {
            return self
                .namespace
                .get(key)
                .map(|v| (v.as_str(), Source::Namespace));
        }
        None
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether the pod was already injected (its `sidecar.istio.io/status` annotation). A user's
/// own `istio-proxy` container without it is an override, merged over the injected one.
pub fn already_injected(pod: &Pod) -> Option<&'static str> {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(keys::STATUS))
        .then_some("annotation sidecar.istio.io/status present")
}

/// Decides whether to inject; never fails except on an invalid selector in the config.
pub fn decide(
    pod: &Pod,
    namespace: &NamespaceInfo,
    config: &InjectorConfig,
    annotations: &EffectiveAnnotations<'_>,
) -> Result<Decision, InjectError> {
    let mut d = Decision {
        reason: Reason::Injected,
        warnings: Vec::new(),
        explanation: Vec::with_capacity(6),
    };
    let ns = namespace.name.as_str();

    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        d.explanation.push(
            "spec.hostNetwork is true -> skip (iptables would capture the node's traffic)".into(),
        );
        d.reason = Reason::HostNetwork;
        return Ok(d);
    }
    d.explanation.push("spec.hostNetwork is not set".into());

    if IGNORED_NAMESPACES.contains(&ns) {
        d.explanation.push(format!(
            "namespace {ns} is an ignored system namespace -> skip"
        ));
        d.reason = Reason::IgnoredNamespace;
        return Ok(d);
    }
    d.explanation
        .push(format!("namespace {ns}: not in ignored namespaces"));

    if let Some(why) = already_injected(pod) {
        d.explanation
            .push(format!("{why} -> already injected, skip (empty patch)"));
        d.reason = Reason::AlreadyInjected;
        return Ok(d);
    }
    d.explanation
        .push("not injected yet (no sidecar.istio.io/status, no istio-proxy container)".into());

    // Step 3: label wins over annotation; namespace annotation is the last default.
    let label_value = label(pod, keys::INJECT);
    let (value, source) = match label_value {
        Some(v) => (Some(v), "pod label"),
        None => match annotations.get(keys::INJECT) {
            Some((v, Source::Pod)) => (Some(v), "pod annotation"),
            Some((v, Source::Namespace)) => (Some(v), "namespace annotation"),
            None => (None, ""),
        },
    };
    let explicit = match value {
        Some("true") => {
            d.explanation.push(format!(
                "{source} sidecar.istio.io/inject=\"true\" -> inject"
            ));
            if source == "pod annotation" {
                warn_annotation_opt_in(pod, namespace, &mut d.warnings);
            }
            Some(true)
        }
        Some("false") => {
            d.explanation.push(format!(
                "{source} sidecar.istio.io/inject=\"false\" -> skip"
            ));
            d.reason = if label_value.is_some() {
                Reason::DisabledByLabel
            } else {
                Reason::DisabledByAnnotation
            };
            return Ok(d);
        }
        Some(other) => {
            let shown = short(other);
            d.warnings.push(format!(
                "{source} sidecar.istio.io/inject=\"{shown}\" is neither \"true\" nor \"false\"; \
                 ignored, the injection policy applies"
            ));
            d.explanation.push(format!(
                "{source} sidecar.istio.io/inject=\"{shown}\" is not true/false -> ignored, use policy"
            ));
            None
        }
        None => {
            d.explanation.push(
                "pod label sidecar.istio.io/inject absent; annotation absent -> use policy".into(),
            );
            None
        }
    };
    if explicit == Some(true) {
        d.explanation.push("explicit opt-in -> inject".into());
        return Ok(d);
    }

    // Step 4: selectors, only when no explicit choice was made.
    let labels = pod.metadata.labels.as_ref();
    for (i, sel) in config.never_inject_selector.iter().enumerate() {
        if selector_matches(sel, labels, "neverInjectSelector", i)? {
            d.explanation.push(format!(
                "neverInjectSelector[{i}] matches the pod labels -> skip"
            ));
            d.reason = Reason::NeverInjectSelector;
            return Ok(d);
        }
    }
    for (i, sel) in config.always_inject_selector.iter().enumerate() {
        if selector_matches(sel, labels, "alwaysInjectSelector", i)? {
            d.explanation.push(format!(
                "alwaysInjectSelector[{i}] matches the pod labels -> inject"
            ));
            return Ok(d);
        }
    }
    if !config.never_inject_selector.is_empty() || !config.always_inject_selector.is_empty() {
        d.explanation
            .push("no neverInjectSelector/alwaysInjectSelector matches".into());
    }

    // Step 5: policy.
    match config.policy {
        InjectionPolicy::Enabled => {
            d.explanation.push("policy enabled -> inject".into());
        }
        InjectionPolicy::Disabled => {
            d.explanation.push(
                "policy disabled -> skip (opt in with label sidecar.istio.io/inject=true)".into(),
            );
            d.reason = Reason::PolicyDisabled;
        }
    }
    Ok(d)
}

/// A user value for a warning or explanation: escaped and at most 64 characters.
pub fn short(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if value.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// Istio's pain point: the opt-in annotation is invisible to the webhook's objectSelector.
fn warn_annotation_opt_in(pod: &Pod, namespace: &NamespaceInfo, warnings: &mut Vec<String>) {
    let ns_labelled = namespace
        .labels
        .contains_key(crate::istio::NAMESPACE_INJECTION_LABEL)
        || namespace.labels.contains_key(crate::istio::REVISION_LABEL);
    let pod_rev = label(pod, crate::istio::REVISION_LABEL).is_some();
    if !ns_labelled && !pod_rev {
        warnings.push(format!(
            "namespace {} has no istio-injection/istio.io/rev label and the sidecar.istio.io/inject \
             annotation is invisible to the webhook's objectSelector: use the pod label instead",
            namespace.name
        ));
    } else {
        warnings.push(
            "annotation sidecar.istio.io/inject is deprecated; use the pod label sidecar.istio.io/inject".into(),
        );
    }
}

/// Evaluates a LabelSelector (matchLabels AND matchExpressions) against pod labels.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
    field: &'static str,
    index: usize,
) -> Result<bool, InjectError> {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if let Some(ml) = &sel.match_labels {
        for (k, v) in ml {
            if get(k) != Some(v.as_str()) {
                return Ok(false);
            }
        }
    }
    if let Some(exprs) = &sel.match_expressions {
        for (j, e) in exprs.iter().enumerate() {
            let values = e.values.as_deref().unwrap_or(&[]);
            let current = get(&e.key);
            let ok = match e.operator.as_str() {
                "In" => current.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => current.is_none_or(|c| values.iter().all(|v| v != c)),
                "Exists" => current.is_some(),
                "DoesNotExist" => current.is_none(),
                other => {
                    return Err(InjectError::InvalidConfig {
                        field: format!("{field}[{index}].matchExpressions[{j}].operator"),
                        value: other.to_string(),
                        problem: "must be In, NotIn, Exists or DoesNotExist".into(),
                    });
                }
            };
            if !ok {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
