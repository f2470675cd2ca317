//! Istio's own CRDs of the pinned version ([`ISTIO_MODULE_VERSION`]), which the operator applies
//! at start: `helm/skjold/crds/istio-crds.gen.yaml`, generated from the `istio.io/istio` module by
//! `scripts/gen-istio-crds.sh` (Helm users get the same file from the chart's `crds/`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

pub use skjold_inject::istio::{ISTIO_HUB, ISTIO_MODULE_VERSION, ISTIO_VERSION};
/// Istio's CRD manifest, as generated.
pub const CRDS_YAML: &str = include_str!("../../helm/skjold/crds/istio-crds.gen.yaml");
/// Annotation on every Istio CRD the operator applies: the Istio module version it came from.
pub const CRD_VERSION_ANNOTATION: &str = "skjold.io/istio-module-version";
/// Label on every Istio CRD the operator applies (`kubectl get crd -l skjold.io/istio-crds=true`).
pub const CRD_LABEL: &str = "skjold.io/istio-crds";

/// Istio's CRDs, parsed from [`CRDS_YAML`], each annotated with [`CRD_VERSION_ANNOTATION`].
pub fn crds() -> Result<Vec<CustomResourceDefinition>, serde_yaml_ng::Error> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(CRDS_YAML) {
        let value = serde_yaml_ng::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let mut crd: CustomResourceDefinition = serde_yaml_ng::from_value(value)?;
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CRD_VERSION_ANNOTATION.into(), ISTIO_MODULE_VERSION.into());
        crd.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(CRD_LABEL.into(), "true".into());
        out.push(crd);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(crds: &[CustomResourceDefinition], name: &str) -> Vec<String> {
        let crd = crds
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("CRD {name} missing"));
        crd.spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.clone())
            .collect()
    }

    #[test]
    fn crd_file_comes_from_the_pinned_module() {
        // A file generated from another Istio version than e2e/versions.env pins fails here,
        // before any cluster sees it (scripts/gen-istio-crds.sh --check compares the content).
        let header = format!("# skjold.io/istio-module-version: {ISTIO_MODULE_VERSION}\n");
        assert!(
            CRDS_YAML.contains(&header),
            "helm/skjold/crds/istio-crds.gen.yaml was not generated from istio.io/istio@{ISTIO_MODULE_VERSION}: run scripts/gen-istio-crds.sh"
        );
    }

    #[test]
    fn serves_every_api_version_the_guides_use() {
        let crds = crds().unwrap();
        assert_eq!(crds.len(), 15);
        for name in [
            "destinationrules.networking.istio.io",
            "virtualservices.networking.istio.io",
            "gateways.networking.istio.io",
            "serviceentries.networking.istio.io",
            "sidecars.networking.istio.io",
        ] {
            let v = served(&crds, name);
            for want in ["v1alpha3", "v1beta1", "v1"] {
                assert!(
                    v.contains(&want.to_string()),
                    "{name} does not serve {want}: {v:?}"
                );
            }
        }
        for name in [
            "peerauthentications.security.istio.io",
            "authorizationpolicies.security.istio.io",
            "requestauthentications.security.istio.io",
        ] {
            let v = served(&crds, name);
            for want in ["v1beta1", "v1"] {
                assert!(
                    v.contains(&want.to_string()),
                    "{name} does not serve {want}: {v:?}"
                );
            }
        }
        for crd in &crds {
            let ann = crd.metadata.annotations.as_ref().unwrap();
            assert_eq!(ann[CRD_VERSION_ANNOTATION], ISTIO_MODULE_VERSION);
            // Istio's base chart keeps its CRDs on uninstall; so does Skjold's.
            assert_eq!(ann["helm.sh/resource-policy"], "keep");
        }
    }

    #[test]
    fn default_tag_is_the_pinned_release() {
        assert!(
            ISTIO_VERSION.split('.').count() == 3
                && ISTIO_VERSION.split('.').all(|p| p.parse::<u32>().is_ok()),
            "ISTIO_VERSION {ISTIO_VERSION:?} is not a release version"
        );
    }
}
