//! Object names and labels. Revisions get a `-<rev>` suffix so canary control planes sit next to
//! the default one; cluster-scoped names also carry the namespace when it is not `istio-system`
//! (as Istio does), so two control planes in different namespaces never collide.

use std::collections::BTreeMap;

/// Field manager for every server-side apply.
pub const FIELD_MANAGER: &str = "skjold-operator";
/// The conventional control-plane namespace; cluster-scoped names omit it.
pub const DEFAULT_NAMESPACE: &str = "istio-system";
/// Label naming the MeshConfig that rendered an object (pruning and cluster-scoped cleanup).
pub const MESHCONFIG_LABEL: &str = "skjold.io/meshconfig";
/// Label naming the control-plane namespace of that MeshConfig (cluster-scoped objects).
pub const MESHCONFIG_NAMESPACE_LABEL: &str = "skjold.io/meshconfig-namespace";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "skjold-operator";
pub use skjold_inject::istio::REVISION_LABEL as REV_LABEL;
/// Pod-template annotation holding a hash of the Deployment's own inputs.
pub const CONFIG_HASH_ANNOTATION: &str = "skjold.io/config-hash";

/// `base` for the default revision, `base-<rev>` otherwise.
pub fn with_revision(base: &str, revision: &str) -> String {
    skjold_inject::istio::with_revision(base, revision)
}

pub fn istiod(revision: &str) -> String {
    with_revision("istiod", revision)
}

pub fn mesh_config_map(revision: &str) -> String {
    with_revision("istio", revision)
}

pub fn ingress_gateway(revision: &str) -> String {
    with_revision("istio-ingressgateway", revision)
}

pub fn egress_gateway(revision: &str) -> String {
    with_revision("istio-egressgateway", revision)
}

/// Base name of the MutatingWebhookConfiguration (before revision and namespace suffixes).
pub const WEBHOOK_CONFIGURATION_BASE: &str = "skjold-sidecar-injector";

/// `skjold-sidecar-injector[-rev][-ns]`.
pub fn webhook_configuration(revision: &str, namespace: &str) -> String {
    cluster_scoped(
        &with_revision(WEBHOOK_CONFIGURATION_BASE, revision),
        namespace,
    )
}

/// `istiod-clusterrole[-rev]-<ns>` (Istio's naming; used for the ClusterRole and its binding).
pub fn istiod_cluster_role(revision: &str, namespace: &str) -> String {
    format!(
        "{}-{namespace}",
        with_revision("istiod-clusterrole", revision)
    )
}

/// `istio-validator[-rev]-<ns>`: the ValidatingWebhookConfiguration of Istio's resources, served
/// by istiod's `/validate` (Istio's naming, so `istioctl` and Istio's docs find it).
pub fn istiod_validator(revision: &str, namespace: &str) -> String {
    format!("{}-{namespace}", with_revision("istio-validator", revision))
}

/// `istiod-default-validator[-ns]`: the default revision's validator of every Istio resource
/// (Istio's name for the control plane in `istio-system`).
pub fn default_validator(namespace: &str) -> String {
    cluster_scoped("istiod-default-validator", namespace)
}

fn cluster_scoped(name: &str, namespace: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{name}-{namespace}")
    }
}

/// xDS/CA address of a revision's istiod.
pub fn discovery_address(revision: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc:15012", istiod(revision))
}

/// Labels put on every managed object.
pub fn common_labels(
    meshconfig: &str,
    namespace: &str,
    revision: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (MESHCONFIG_LABEL.to_string(), meshconfig.to_string()),
        (
            MESHCONFIG_NAMESPACE_LABEL.to_string(),
            namespace.to_string(),
        ),
        (REV_LABEL.to_string(), revision.to_string()),
    ])
}

/// Label selector matching everything one MeshConfig rendered.
pub fn owned_selector(meshconfig: &str, namespace: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{MESHCONFIG_LABEL}={meshconfig},{MESHCONFIG_NAMESPACE_LABEL}={namespace}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_suffixes() {
        assert_eq!(istiod(""), "istiod");
        assert_eq!(istiod("default"), "istiod");
        assert_eq!(istiod("canary"), "istiod-canary");
        assert_eq!(mesh_config_map("canary"), "istio-canary");
        assert_eq!(
            webhook_configuration("", "istio-system"),
            "skjold-sidecar-injector"
        );
        assert_eq!(
            webhook_configuration("canary", "istio-system"),
            "skjold-sidecar-injector-canary"
        );
        assert_eq!(
            webhook_configuration("", "mesh"),
            "skjold-sidecar-injector-mesh"
        );
        assert_eq!(
            istiod_cluster_role("", "istio-system"),
            "istiod-clusterrole-istio-system"
        );
        assert_eq!(
            discovery_address("canary", "istio-system"),
            "istiod-canary.istio-system.svc:15012"
        );
    }
}
