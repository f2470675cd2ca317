//! Istio's names and rules that every Skjold component shares: the pinned Istio version, the
//! labels and annotations users put on namespaces and pods, the namespaces Istio never injects,
//! revision names, and how an injector ConfigMap maps to a revision. One place for each fact;
//! the webhook, the operator, `skjoldctl` and the tests all read them from here.

use std::collections::BTreeMap;

/// The Istio release line: default tag of the `pilot` and `proxyv2` images. Pinned in
/// `e2e/versions.env` and read by `build.rs`, so the default proxy image, the operator's default
/// tag and the CRDs it installs, and the Istio binaries the tests build all name one version.
pub const ISTIO_VERSION: &str = env!("SKJOLD_ISTIO_VERSION");
/// The `istio.io/istio` Go module version the tests' Istio binaries and the CRDs come from.
pub const ISTIO_MODULE_VERSION: &str = env!("SKJOLD_ISTIO_MODULE_VERSION");
/// Default registry of Istio's images.
pub const ISTIO_HUB: &str = "docker.io/istio";

/// `<hub>/proxyv2:<ISTIO_VERSION>`, the default sidecar image.
pub fn default_proxy_image() -> String {
    format!("{ISTIO_HUB}/proxyv2:{ISTIO_VERSION}")
}

/// `<hub>/pilot:<ISTIO_VERSION>`, istiod's default image.
pub fn default_pilot_image() -> String {
    format!("{ISTIO_HUB}/pilot:{ISTIO_VERSION}")
}

/// Namespace label that turns injection on for the default revision (`enabled`) or off.
pub const NAMESPACE_INJECTION_LABEL: &str = "istio-injection";
/// Label (namespaces, pods, control-plane objects) and pod annotation naming a revision.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// Pod label (and, deprecated, annotation) that opts a pod in (`true`) or out (`false`).
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// The injected sidecar container.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The injected init container that installs the traffic redirection.
pub const INIT_CONTAINER: &str = "istio-init";

/// Namespaces Istio never injects, whatever the selectors say (Istio's `IgnoredNamespaces`).
pub const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// The revision name of the unnamed (default) control plane.
pub const DEFAULT_REVISION: &str = "default";

/// A revision as users may write it (`""` or `default` for the default one), normalised.
pub fn normalize_revision(revision: &str) -> &str {
    if revision.is_empty() {
        DEFAULT_REVISION
    } else {
        revision
    }
}

/// Whether `revision` names the default control plane.
pub fn is_default_revision(revision: &str) -> bool {
    normalize_revision(revision) == DEFAULT_REVISION
}

/// `base` for the default revision, `base-<rev>` otherwise (Istio's object naming).
pub fn with_revision(base: &str, revision: &str) -> String {
    if is_default_revision(revision) {
        base.to_string()
    } else {
        format!("{base}-{revision}")
    }
}

/// Label that marks a ConfigMap as injector configuration the webhook watches.
pub const INJECTOR_CONFIG_MAP_LABEL: &str = "skjold.io/injector-config";
/// Key of the injector ConfigMap holding the YAML of the injector config.
pub const INJECTOR_CONFIG_KEY: &str = "config";

/// Name of the injector ConfigMap of a revision (`skjold-injector` or `skjold-injector-<rev>`).
pub fn injector_config_map_name(revision: &str) -> String {
    with_revision("skjold-injector", revision)
}

/// The revision an injector ConfigMap serves: the config's own `revision` field, else the
/// ConfigMap's [`REVISION_LABEL`], else the default revision.
pub fn injector_config_map_revision(
    config_revision: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> String {
    if !config_revision.is_empty() {
        return config_revision.to_string();
    }
    labels
        .and_then(|l| l.get(REVISION_LABEL))
        .filter(|r| !r.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_REVISION.to_string())
}

/// The revision a namespace's labels select, Istio's rule: `istio-injection=enabled` means the
/// default revision and wins over `istio.io/rev`; any other `istio-injection` value means none.
/// `injection_label` is the label name in use (a MeshConfig may rename it).
pub fn namespace_revision(
    labels: Option<&BTreeMap<String, String>>,
    injection_label: &str,
) -> Option<String> {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    match (get(injection_label), get(REVISION_LABEL)) {
        (Some("enabled"), _) => Some(DEFAULT_REVISION.to_string()),
        (Some(_), _) => None,
        (None, Some(rev)) => Some(rev.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_normalise_and_name_objects() {
        assert_eq!(normalize_revision(""), "default");
        assert_eq!(normalize_revision("canary"), "canary");
        assert!(is_default_revision("") && is_default_revision("default"));
        assert_eq!(with_revision("istiod", ""), "istiod");
        assert_eq!(with_revision("istiod", "default"), "istiod");
        assert_eq!(with_revision("istiod", "1-27"), "istiod-1-27");
        assert_eq!(injector_config_map_name(""), "skjold-injector");
        assert_eq!(injector_config_map_name("canary"), "skjold-injector-canary");
    }

    #[test]
    fn an_injector_config_map_serves_its_config_revision_then_its_label() {
        let labels: BTreeMap<String, String> = [(REVISION_LABEL.into(), "canary".into())].into();
        assert_eq!(injector_config_map_revision("blue", Some(&labels)), "blue");
        assert_eq!(injector_config_map_revision("", Some(&labels)), "canary");
        assert_eq!(injector_config_map_revision("", None), "default");
        let empty: BTreeMap<String, String> = [(REVISION_LABEL.into(), String::new())].into();
        assert_eq!(injector_config_map_revision("", Some(&empty)), "default");
    }

    #[test]
    fn istio_injection_enabled_wins_over_a_revision_label() {
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let rev = |pairs: &[(&str, &str)]| namespace_revision(Some(&l(pairs)), "istio-injection");
        assert_eq!(
            rev(&[("istio-injection", "enabled")]).as_deref(),
            Some("default")
        );
        assert_eq!(
            rev(&[("istio-injection", "enabled"), ("istio.io/rev", "canary")]).as_deref(),
            Some("default")
        );
        assert_eq!(
            rev(&[("istio-injection", "disabled"), ("istio.io/rev", "canary")]),
            None
        );
        assert_eq!(
            rev(&[("istio.io/rev", "canary")]).as_deref(),
            Some("canary")
        );
        assert_eq!(rev(&[]), None);
        assert_eq!(namespace_revision(None, "istio-injection"), None);
    }
}
