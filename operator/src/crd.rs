//! The `MeshConfig` custom resource (`skjold.io/v1alpha1`): the one place where a mesh operator
//! states what they want. Field names mirror Istio's IstioOperator/MeshConfig so existing
//! `istioctl install --set ...` knowledge carries over.
//!
//! Fields whose default depends on the profile (e.g. the demo profile's access log and tiny
//! requests) are `Option`s without a schema default: `None` means "what the profile says".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use skjold_inject::config::InjectionPolicy;

/// API group of the MeshConfig CRD.
pub const GROUP: &str = "skjold.io";
/// Finalizer that removes cluster-scoped objects (MWC, ClusterRole/Binding) on delete.
pub const FINALIZER: &str = "skjold.io/cluster-cleanup";

/// Desired state of one control-plane revision and its mesh-wide settings.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "skjold.io",
    version = "v1alpha1",
    kind = "MeshConfig",
    plural = "meshconfigs",
    singular = "meshconfig",
    shortname = "smc",
    namespaced,
    status = "MeshConfigStatus",
    doc = "Skjold mesh configuration: control plane, mesh-wide settings and sidecar injection for one revision",
    printcolumn = r#"{"name":"Profile","type":"string","jsonPath":".spec.profile"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Outbound","type":"string","jsonPath":".spec.meshConfig.outboundTrafficPolicy.mode"}"#,
    printcolumn = r#"{"name":"AccessLog","type":"string","jsonPath":".status.accessLogFile"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.revision == oldSelf.revision").message("revision is immutable: create a new MeshConfig for a canary revision"))]
#[serde(rename_all = "camelCase")]
pub struct MeshConfigSpec {
    /// Installation profile, as in `istioctl install --set profile=...`.
    #[serde(default)]
    pub profile: Profile,
    /// Control-plane revision (`istio.io/rev`); empty means the default revision.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == '' || (size(self) <= 40 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("revision must be empty or a DNS label of at most 40 characters (lowercase letters, digits, '-')"))]
    #[x_kube(validation = Rule::new("self != 'default'").message("revision 'default' is reserved: leave revision empty for the default revision"))]
    pub revision: String,
    /// Image registry of istiod, proxyv2 and the gateways.
    #[serde(default = "default_hub")]
    #[x_kube(validation = Rule::new("self != ''").message("hub must not be empty"))]
    pub hub: String,
    /// Image tag of istiod, proxyv2 and the gateways.
    #[serde(default = "default_tag")]
    #[x_kube(validation = Rule::new("self != ''").message("tag must not be empty"))]
    pub tag: String,
    #[serde(default)]
    pub pilot: PilotSpec,
    #[serde(default)]
    pub components: ComponentsSpec,
    #[serde(default)]
    pub proxy: ProxySpec,
    #[serde(default)]
    pub mesh_config: MeshSettingsSpec,
    #[serde(default)]
    pub injection: InjectionSpec,
}

fn default_hub() -> String {
    crate::istio::ISTIO_HUB.into()
}

fn default_tag() -> String {
    crate::istio::ISTIO_VERSION.into()
}

/// Istio install profiles (each an overlay on `default`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// istiod + ingress gateway.
    #[default]
    Default,
    /// default + egress gateway, access log on stdout, tiny resource requests.
    Demo,
    /// istiod only.
    Minimal,
    /// No control plane: only the injector ConfigMap and the webhook configuration (istiod and its
    /// mesh ConfigMap are managed elsewhere).
    Empty,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Demo => "demo",
            Profile::Minimal => "minimal",
            Profile::Empty => "empty",
        }
    }
}

/// istiod settings (`components.pilot.k8s` / `values.pilot`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PilotSpec {
    /// istiod replica count.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// istiod container resources; unset means the profile's (500m/2048Mi, demo 10m/100Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for PilotSpec {
    fn default() -> Self {
        PilotSpec {
            replicas: default_replicas(),
            resources: None,
        }
    }
}

fn default_replicas() -> i32 {
    1
}

/// Optional components; an unset `enabled` takes the profile's choice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsSpec {
    #[serde(default)]
    pub ingress_gateway: ComponentToggle,
    #[serde(default)]
    pub egress_gateway: ComponentToggle,
}

/// Turns a component on or off regardless of the profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentToggle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Injected sidecar settings (`values.global.proxy.*`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// Full proxy image; unset means `<hub>/proxyv2:<tag>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("proxy.image must not be empty when set"))]
    pub image: Option<String>,
    /// Sidecar requests/limits; unset fields take the profile's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ProxyResourcesSpec>,
    #[serde(default)]
    pub hold_application_until_proxy_starts: bool,
    /// Inject the proxy as a native sidecar; unset: Istio's `auto` (native when every node's
    /// kubelet is 1.33 or newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_sidecar: Option<bool>,
}

/// Sidecar requests and limits, checked by the API server (request must not exceed limit).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || !has(self.limits.cpu) || quantity(self.requests.cpu).compareTo(quantity(self.limits.cpu)) <= 0").message("proxy.resources.requests.cpu must not exceed proxy.resources.limits.cpu"))]
#[x_kube(validation = Rule::new("!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || !has(self.limits.memory) || quantity(self.requests.memory).compareTo(quantity(self.limits.memory)) <= 0").message("proxy.resources.requests.memory must not exceed proxy.resources.limits.memory"))]
#[serde(rename_all = "camelCase")]
pub struct ProxyResourcesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<QuantityPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<QuantityPair>,
}

/// A CPU/memory pair of Kubernetes quantities (`100m`, `128Mi`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuantityPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("cpu must be a Kubernetes quantity such as 100m or 2"))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("memory must be a Kubernetes quantity such as 128Mi or 1Gi"))]
    pub memory: Option<String>,
}

/// Mesh-wide settings rendered into ConfigMap `istio` key `mesh` (istiod applies them live).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshSettingsSpec {
    /// Envoy access log path; `""` disables access logging; unset takes the profile's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    #[serde(default)]
    pub access_log_encoding: AccessLogEncoding,
    /// Envoy access log format; empty means Istio's default format.
    #[serde(default)]
    pub access_log_format: String,
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    #[serde(default)]
    pub enable_tracing: bool,
    /// SPIFFE trust domain of the mesh's workload identities (`meshConfig.trustDomain`): the mesh
    /// ConfigMap, every injected sidecar's `TRUST_DOMAIN`/`ISTIO_META_MESH_ID`, and the gateways.
    #[serde(default = "default_trust_domain")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?$')").message("trustDomain must be a DNS-like name such as cluster.local"))]
    pub trust_domain: String,
    /// ProxyConfig defaults (applied at injection: pods must restart to pick them up).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub default_config: serde_json::Map<String, serde_json::Value>,
}

fn default_trust_domain() -> String {
    "cluster.local".into()
}

impl Default for MeshSettingsSpec {
    fn default() -> Self {
        MeshSettingsSpec {
            access_log_file: None,
            access_log_encoding: AccessLogEncoding::default(),
            access_log_format: String::new(),
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            enable_tracing: false,
            trust_domain: default_trust_domain(),
            default_config: serde_json::Map::new(),
        }
    }
}

/// `meshConfig.accessLogEncoding`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AccessLogEncoding {
    #[default]
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

/// `meshConfig.outboundTrafficPolicy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

/// Where traffic to unknown destinations goes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum OutboundMode {
    /// Passed through (PassthroughCluster).
    #[default]
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
    /// Dropped (BlackHoleCluster): surfaces missing ServiceEntries.
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
}

impl OutboundMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundMode::AllowAny => "ALLOW_ANY",
            OutboundMode::RegistryOnly => "REGISTRY_ONLY",
        }
    }
}

/// Injection policy and selectors (`values.global.proxy.autoInject`, `sidecarInjectorWebhook.*`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjectionSpec {
    #[serde(default)]
    pub policy: InjectionPolicy,
    /// Namespace label that opts a namespace in with value `enabled`.
    #[serde(default = "default_namespace_label")]
    #[x_kube(validation = Rule::new("self.matches('^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && size(self) <= 316").message("namespaceLabel must be a valid label key such as istio-injection"))]
    pub namespace_label: String,
    #[serde(default)]
    pub never_inject_selector: Vec<LabelSelector>,
    #[serde(default)]
    pub always_inject_selector: Vec<LabelSelector>,
}

impl Default for InjectionSpec {
    fn default() -> Self {
        InjectionSpec {
            policy: InjectionPolicy::Enabled,
            namespace_label: default_namespace_label(),
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
        }
    }
}

fn default_namespace_label() -> String {
    "istio-injection".into()
}

/// A free-form object kept as-is by the API server (ProxyConfig is large and evolves with Istio).
fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Observed state, written by the operator through the status subresource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfigStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Effective revision name (`default` when `spec.revision` is empty).
    #[serde(default)]
    pub revision: String,
    /// Effective access log path after applying the profile (empty: off).
    #[serde(default)]
    pub access_log_file: String,
    /// `Reconciled`, `Ready`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Per-component state, keyed by component name (`istiod`, `ingressGateway`, `webhook`, ...).
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStatus>,
    /// Expiry of the webhook serving certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_certificate_not_after: Option<String>,
}

/// State of one component: `Applied` (written, nothing to wait for), `Available` (its Deployment is
/// available), `Progressing` (its Deployment is not yet), `Disabled`, `Failed` (see `message`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ComponentState {
    /// Every object written; nothing to wait for (no Deployment).
    #[default]
    Applied,
    /// Written, and its Deployment has the replicas it needs available.
    Available,
    /// Written; its Deployment is not available yet.
    Progressing,
    /// Switched off by the profile or `spec.components`.
    Disabled,
    /// An object could not be written; the message says which and why.
    Failed,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Applied => "Applied",
            ComponentState::Available => "Available",
            ComponentState::Progressing => "Progressing",
            ComponentState::Disabled => "Disabled",
            ComponentState::Failed => "Failed",
        }
    }
}

/// State of one rendered component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub state: ComponentState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl MeshConfigSpec {
    /// Effective revision name: `default` when unset.
    pub fn revision_name(&self) -> &str {
        if self.revision.is_empty() {
            skjold_inject::istio::DEFAULT_REVISION
        } else {
            &self.revision
        }
    }

    /// True for the default revision, which owns the `namespace.*`/`object.*` webhooks.
    pub fn is_default_revision(&self) -> bool {
        self.revision.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn crd_json() -> serde_json::Value {
        serde_json::to_value(MeshConfig::crd()).unwrap()
    }

    #[test]
    fn crd_identity_matches_contract() {
        let crd = MeshConfig::crd();
        assert_eq!(crd.spec.group, "skjold.io");
        assert_eq!(crd.spec.names.plural, "meshconfigs");
        assert_eq!(crd.spec.names.kind, "MeshConfig");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
    }

    #[test]
    fn crd_schema_has_enums_defaults_and_cel() {
        let crd = crd_json();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let props = &spec["properties"];
        assert_eq!(
            props["profile"]["enum"],
            serde_json::json!(["default", "demo", "minimal", "empty"])
        );
        assert_eq!(props["hub"]["default"], "docker.io/istio");
        let mode =
            &props["meshConfig"]["properties"]["outboundTrafficPolicy"]["properties"]["mode"];
        assert_eq!(
            mode["enum"],
            serde_json::json!(["ALLOW_ANY", "REGISTRY_ONLY"])
        );
        let enc = &props["meshConfig"]["properties"]["accessLogEncoding"];
        assert_eq!(enc["enum"], serde_json::json!(["TEXT", "JSON"]));
        let text = crd.to_string();
        assert!(
            text.contains("revision is immutable"),
            "transition rule missing"
        );
        assert!(
            text.contains("quantity(self.requests.cpu)"),
            "request<=limit rule missing"
        );
        assert_eq!(
            props["meshConfig"]["properties"]["defaultConfig"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
    }

    #[test]
    fn crd_printer_columns() {
        let crd = MeshConfig::crd();
        let cols: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            cols,
            [
                "Profile",
                "Revision",
                "Outbound",
                "AccessLog",
                "Ready",
                "Age"
            ]
        );
    }

    #[test]
    fn empty_spec_deserializes_to_defaults() {
        let spec: MeshConfigSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.profile, Profile::Default);
        assert_eq!(spec.hub, "docker.io/istio");
        assert_eq!(spec.tag, crate::istio::ISTIO_VERSION);
        assert_eq!(spec.pilot.replicas, 1);
        assert_eq!(spec.injection.namespace_label, "istio-injection");
        assert_eq!(spec.revision_name(), "default");
        assert_eq!(
            spec.mesh_config.outbound_traffic_policy.mode,
            OutboundMode::AllowAny
        );
    }

    #[test]
    fn bad_enum_is_refused_client_side_too() {
        let err = serde_json::from_str::<MeshConfigSpec>(
            r#"{"meshConfig":{"outboundTrafficPolicy":{"mode":"DENY_ALL"}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("DENY_ALL"), "{err}");
    }
}
