//! The pure render step: one `MeshConfig` plus a [`RenderContext`] becomes the complete list of
//! objects the operator server-side applies. No I/O here, so every profile has a golden test.

pub mod configmaps;
pub mod controlplane;
pub mod gateways;
pub mod names;
pub mod profile;
pub mod validation;
pub mod webhook;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use crate::crd::MeshConfig;

/// Component names used in status (`status.components`).
pub mod component {
    pub const ISTIOD: &str = "istiod";
    pub const INGRESS_GATEWAY: &str = "ingressGateway";
    pub const EGRESS_GATEWAY: &str = "egressGateway";
    pub const MESH_CONFIG: &str = "meshConfig";
    pub const INJECTOR: &str = "injector";
    pub const WEBHOOK: &str = "webhook";
}

/// Where the API server sends admission requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookTarget {
    /// In-cluster: `clientConfig.service` (port 443).
    Service { name: String, namespace: String },
    /// Out-of-cluster development: `clientConfig.url` (`/rev/<rev>` appended for revisions).
    Url(String),
}

/// Everything besides the MeshConfig that shapes the output.
#[derive(Clone, Debug)]
pub struct RenderContext {
    /// Control-plane namespace (where namespaced objects are written).
    pub namespace: String,
    pub webhook: WebhookTarget,
    /// PEM CA bundle for the webhook's `caBundle` (may hold several CAs during rotation).
    pub ca_bundle: String,
    /// cert-manager mode: `namespace/certificate` for `cert-manager.io/inject-ca-from`; the
    /// operator then leaves `caBundle` to cert-manager's cainjector.
    pub ca_injection_from: Option<String>,
    /// Out-of-cluster development: the API server calls istiod's `/validate` at this https://
    /// URL (istiod's certificate then also names its host) instead of the istiod Service.
    pub istiod_validation_url: Option<String>,
}

/// Why a MeshConfig could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("MeshConfig has no metadata.{field}")]
    MissingMetadata { field: &'static str },
    #[error("field `{field}` has invalid value {value:?}: {reason}")]
    InvalidField {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("could not build {what}: {source}")]
    Build {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// One object the operator manages, typed so it can be applied with the matching `Api<K>`.
// Objects are built once per reconciliation and applied right away: boxing the large
// Deployment variant would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ManagedObject {
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    Deployment(Deployment),
    Service(Service),
    PodDisruptionBudget(PodDisruptionBudget),
    ConfigMap(ConfigMap),
    MutatingWebhookConfiguration(MutatingWebhookConfiguration),
    ValidatingWebhookConfiguration(ValidatingWebhookConfiguration),
}

impl ManagedObject {
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            ManagedObject::ServiceAccount(o) => &o.metadata,
            ManagedObject::ClusterRole(o) => &o.metadata,
            ManagedObject::ClusterRoleBinding(o) => &o.metadata,
            ManagedObject::Role(o) => &o.metadata,
            ManagedObject::RoleBinding(o) => &o.metadata,
            ManagedObject::Deployment(o) => &o.metadata,
            ManagedObject::Service(o) => &o.metadata,
            ManagedObject::PodDisruptionBudget(o) => &o.metadata,
            ManagedObject::ConfigMap(o) => &o.metadata,
            ManagedObject::MutatingWebhookConfiguration(o) => &o.metadata,
            ManagedObject::ValidatingWebhookConfiguration(o) => &o.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ManagedObject::ServiceAccount(_) => "ServiceAccount",
            ManagedObject::ClusterRole(_) => "ClusterRole",
            ManagedObject::ClusterRoleBinding(_) => "ClusterRoleBinding",
            ManagedObject::Role(_) => "Role",
            ManagedObject::RoleBinding(_) => "RoleBinding",
            ManagedObject::Deployment(_) => "Deployment",
            ManagedObject::Service(_) => "Service",
            ManagedObject::PodDisruptionBudget(_) => "PodDisruptionBudget",
            ManagedObject::ConfigMap(_) => "ConfigMap",
            ManagedObject::MutatingWebhookConfiguration(_) => "MutatingWebhookConfiguration",
            ManagedObject::ValidatingWebhookConfiguration(_) => "ValidatingWebhookConfiguration",
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// Cluster-scoped objects cannot have a namespaced owner; they are removed by the finalizer.
    pub fn is_cluster_scoped(&self) -> bool {
        matches!(
            self,
            ManagedObject::ClusterRole(_)
                | ManagedObject::ClusterRoleBinding(_)
                | ManagedObject::MutatingWebhookConfiguration(_)
                | ManagedObject::ValidatingWebhookConfiguration(_)
        )
    }

    /// `Kind/name`, for logs and Events.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            ManagedObject::ServiceAccount(o) => &mut o.metadata,
            ManagedObject::ClusterRole(o) => &mut o.metadata,
            ManagedObject::ClusterRoleBinding(o) => &mut o.metadata,
            ManagedObject::Role(o) => &mut o.metadata,
            ManagedObject::RoleBinding(o) => &mut o.metadata,
            ManagedObject::Deployment(o) => &mut o.metadata,
            ManagedObject::Service(o) => &mut o.metadata,
            ManagedObject::PodDisruptionBudget(o) => &mut o.metadata,
            ManagedObject::ConfigMap(o) => &mut o.metadata,
            ManagedObject::MutatingWebhookConfiguration(o) => &mut o.metadata,
            ManagedObject::ValidatingWebhookConfiguration(o) => &mut o.metadata,
        }
    }
}

/// The render output: objects to apply plus which components are switched on.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub objects: Vec<(&'static str, ManagedObject)>,
    /// Every known component with whether it is enabled (disabled ones show in status).
    pub components: Vec<(&'static str, bool)>,
    pub effective: profile::Effective,
}

impl Rendered {
    /// Multi-document YAML, as used by the golden files.
    pub fn to_yaml(&self) -> Result<String, RenderError> {
        let mut out = String::new();
        for (_, obj) in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(obj).map_err(|source| {
                RenderError::Serialize {
                    what: "rendered object",
                    source,
                }
            })?);
        }
        Ok(out)
    }
}

/// Renders every object for `mc`. Namespaced objects get a controller owner reference to `mc`
/// (garbage collection); cluster-scoped ones are found again by label for cleanup.
pub fn render(mc: &MeshConfig, ctx: &RenderContext) -> Result<Rendered, RenderError> {
    let name = mc
        .metadata
        .name
        .clone()
        .ok_or(RenderError::MissingMetadata { field: "name" })?;
    let owner = owner_reference(mc)?;
    let spec = &mc.spec;
    let eff = profile::resolve(spec);
    let rev = spec.revision_name().to_string();
    let labels = names::common_labels(&name, &ctx.namespace, &rev);
    let input = Input {
        spec,
        eff: &eff,
        ctx,
        rev: &rev,
        labels: &labels,
    };

    let mut objects: Vec<(&'static str, ManagedObject)> = Vec::new();
    if eff.istiod {
        for o in controlplane::render(&input)? {
            objects.push((component::ISTIOD, o));
        }
        for o in validation::render(&input)? {
            objects.push((component::ISTIOD, o));
        }
    }
    if eff.ingress_gateway {
        for o in gateways::render(&input, gateways::Kind::Ingress)? {
            objects.push((component::INGRESS_GATEWAY, o));
        }
    }
    if eff.egress_gateway {
        for o in gateways::render(&input, gateways::Kind::Egress)? {
            objects.push((component::EGRESS_GATEWAY, o));
        }
    }
    if eff.mesh_config_map {
        objects.push((component::MESH_CONFIG, configmaps::mesh(&input)?));
    }
    objects.push((component::INJECTOR, configmaps::injector(&input)?));
    objects.push((component::WEBHOOK, webhook::render(&input)?));

    for (_, obj) in &mut objects {
        let cluster_scoped = obj.is_cluster_scoped();
        let meta = obj.meta_mut();
        if !cluster_scoped {
            meta.namespace = Some(ctx.namespace.clone());
            meta.owner_references = Some(vec![owner.clone()]);
        }
    }

    Ok(Rendered {
        objects,
        components: vec![
            (component::ISTIOD, eff.istiod),
            (component::INGRESS_GATEWAY, eff.ingress_gateway),
            (component::EGRESS_GATEWAY, eff.egress_gateway),
            (component::MESH_CONFIG, eff.mesh_config_map),
            (component::INJECTOR, true),
            (component::WEBHOOK, true),
        ],
        effective: eff,
    })
}

/// Shared inputs of the per-component renderers.
pub(crate) struct Input<'a> {
    pub spec: &'a crate::crd::MeshConfigSpec,
    pub eff: &'a profile::Effective,
    pub ctx: &'a RenderContext,
    /// Effective revision name (`default` for the default revision).
    pub rev: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
}

impl Input<'_> {
    /// Object metadata with the common labels plus `extra`.
    pub fn meta(&self, name: String, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut labels = self.labels.clone();
        for (k, v) in extra {
            labels.insert((*k).to_string(), (*v).to_string());
        }
        ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        }
    }
}

/// Turns a JSON manifest into its typed object (keeps the renderers close to the YAML they emit).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    what: &str,
    value: serde_json::Value,
) -> Result<T, RenderError> {
    serde_json::from_value(value).map_err(|source| RenderError::Build {
        what: what.to_string(),
        source,
    })
}

fn owner_reference(mc: &MeshConfig) -> Result<OwnerReference, RenderError> {
    use kube::Resource;
    Ok(OwnerReference {
        api_version: MeshConfig::api_version(&()).into_owned(),
        kind: MeshConfig::kind(&()).into_owned(),
        name: mc
            .metadata
            .name
            .clone()
            .ok_or(RenderError::MissingMetadata { field: "name" })?,
        uid: mc
            .metadata
            .uid
            .clone()
            .ok_or(RenderError::MissingMetadata { field: "uid" })?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{MeshConfigSpec, Profile};

    pub(crate) fn meshconfig(profile: Profile, revision: &str) -> MeshConfig {
        let mut spec: MeshConfigSpec = serde_json::from_str("{}").unwrap();
        spec.profile = profile;
        spec.revision = revision.into();
        let mut mc = MeshConfig::new("default", spec);
        mc.metadata.namespace = Some("istio-system".into());
        mc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
        mc
    }

    pub(crate) fn ctx() -> RenderContext {
        RenderContext {
            namespace: "istio-system".into(),
            webhook: WebhookTarget::Service {
                name: "skjold-webhook".into(),
                namespace: "istio-system".into(),
            },
            ca_bundle: String::new(),
            ca_injection_from: None,
            istiod_validation_url: None,
        }
    }

    #[test]
    fn namespaced_objects_are_owned_and_cluster_scoped_are_labelled() {
        let r = render(&meshconfig(Profile::Default, ""), &ctx()).unwrap();
        for (_, o) in &r.objects {
            let meta = o.meta();
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(
                labels[names::MESHCONFIG_LABEL],
                "default",
                "{}",
                o.describe()
            );
            if o.is_cluster_scoped() {
                assert!(meta.owner_references.is_none(), "{}", o.describe());
                assert!(meta.namespace.is_none());
            } else {
                let owners = meta.owner_references.as_ref().unwrap();
                assert_eq!(owners[0].kind, "MeshConfig");
                assert_eq!(owners[0].controller, Some(true));
                assert_eq!(meta.namespace.as_deref(), Some("istio-system"));
            }
        }
    }

    #[test]
    fn missing_uid_is_an_error() {
        let mut mc = meshconfig(Profile::Default, "");
        mc.metadata.uid = None;
        let err = render(&mc, &ctx()).unwrap_err();
        assert!(err.to_string().contains("uid"), "{err}");
    }

    #[test]
    fn object_sets_per_profile() {
        let kinds = |p: Profile| -> Vec<String> {
            render(&meshconfig(p, ""), &ctx())
                .unwrap()
                .objects
                .iter()
                .map(|(_, o)| o.describe())
                .collect()
        };
        let d = kinds(Profile::Default);
        assert!(d.contains(&"Deployment/istiod".to_string()));
        assert!(d.contains(&"Deployment/istio-ingressgateway".to_string()));
        assert!(!d.contains(&"Deployment/istio-egressgateway".to_string()));
        assert!(kinds(Profile::Demo).contains(&"Deployment/istio-egressgateway".to_string()));
        let m = kinds(Profile::Minimal);
        assert!(m.contains(&"Deployment/istiod".to_string()));
        assert!(!m.iter().any(|k| k.contains("gateway")));
        let e = kinds(Profile::Empty);
        assert_eq!(
            e,
            [
                "ConfigMap/skjold-injector",
                "MutatingWebhookConfiguration/skjold-sidecar-injector"
            ]
        );
    }

    #[test]
    fn revision_names_are_suffixed() {
        let r = render(&meshconfig(Profile::Minimal, "canary"), &ctx()).unwrap();
        let names: Vec<String> = r.objects.iter().map(|(_, o)| o.describe()).collect();
        for want in [
            "Deployment/istiod-canary",
            "Service/istiod-canary",
            "ConfigMap/istio-canary",
            "ConfigMap/skjold-injector-canary",
            "MutatingWebhookConfiguration/skjold-sidecar-injector-canary",
            "ClusterRole/istiod-clusterrole-canary-istio-system",
        ] {
            assert!(
                names.contains(&want.to_string()),
                "missing {want} in {names:?}"
            );
        }
    }
}
