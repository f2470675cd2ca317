//! Injector configuration: the contract between the operator (which renders it into the
//! injector ConfigMap, key [`CONFIG_KEY`]) and the webhook / `skjoldctl inject` (which read it).
//!
//! Every field defaults to Istio's own default, so an empty document (or no `--config` at all)
//! injects exactly what a stock `istioctl install` would.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Key of the injector ConfigMap holding the YAML of [`InjectorConfig`].
pub const CONFIG_KEY: &str = "config";
/// Label that marks a ConfigMap as injector configuration the webhook should watch.
pub const CONFIG_MAP_LABEL: &str = "skjold.io/injector-config";
/// The revision name used when `revision` is empty.
pub const DEFAULT_REVISION: &str = "default";

/// Name of the injector ConfigMap for a revision (`skjold-injector` or `skjold-injector-<rev>`).
pub fn config_map_name(revision: &str) -> String {
    if revision.is_empty() || revision == DEFAULT_REVISION {
        "skjold-injector".to_string()
    } else {
        format!("skjold-injector-{revision}")
    }
}

/// Whether pods that neither opt in nor opt out get the sidecar (`values.global.proxy.autoInject`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum InjectionPolicy {
    #[default]
    Enabled,
    Disabled,
}

/// Traffic interception mode for istio-iptables (`-m`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum InterceptionMode {
    #[default]
    Redirect,
    Tproxy,
    None,
}

impl InterceptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::Tproxy => "TPROXY",
            InterceptionMode::None => "NONE",
        }
    }
}

/// A CPU/memory pair. An empty string means "not set" (the field is omitted from the pod).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourcePair {
    pub cpu: String,
    pub memory: String,
}

/// Proxy resources (`values.global.proxy.resources`); also applied to `istio-init`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyResources {
    pub requests: ResourcePair,
    pub limits: ResourcePair,
}

impl Default for ProxyResources {
    fn default() -> Self {
        ProxyResources {
            requests: ResourcePair {
                cpu: "100m".into(),
                memory: "128Mi".into(),
            },
            limits: ResourcePair {
                cpu: "2000m".into(),
                memory: "1024Mi".into(),
            },
        }
    }
}

/// Settings of the injected `istio-proxy` / `istio-init` containers (`values.global.proxy.*`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxySettings {
    /// Full image reference used for both `istio-proxy` and `istio-init`.
    pub image: String,
    /// `imagePullPolicy` of the injected containers; omitted when empty.
    pub image_pull_policy: String,
    pub resources: ProxyResources,
    /// Start the proxy before the application containers (classic mode only).
    pub hold_application_until_proxy_starts: bool,
    /// Inject the proxy as a native sidecar (init container with `restartPolicy: Always`).
    pub native_sidecar: bool,
    /// Rewrite HTTP/TCP/gRPC probes of app containers to the agent (`rewriteAppHTTPProbe`).
    pub rewrite_app_http_probe: bool,
    /// Envoy log level (`--proxyLogLevel`).
    pub log_level: String,
    /// Envoy component log levels (`--proxyComponentLogLevel`).
    pub component_log_level: String,
    /// pilot-agent log level (`--log_output_level`).
    pub agent_log_level: String,
    pub interception_mode: InterceptionMode,
    /// Outbound CIDRs captured (`-i`), `*` for all.
    pub include_ip_ranges: String,
    /// Outbound CIDRs bypassed (`-x`).
    pub exclude_ip_ranges: String,
    /// Inbound ports captured (`-b`), `*` for all.
    pub include_inbound_ports: String,
    /// Inbound ports bypassed (`-d`); the status and health ports are always added.
    pub exclude_inbound_ports: String,
    /// Outbound ports bypassed (`-o`).
    pub exclude_outbound_ports: String,
    /// Outbound ports always captured (`-q`).
    pub include_outbound_ports: String,
    /// pilot-agent status port (app-health, merged metrics).
    pub status_port: u16,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            image: crate::istio::default_proxy_image(),
            image_pull_policy: String::new(),
            resources: ProxyResources::default(),
            hold_application_until_proxy_starts: false,
            native_sidecar: false,
            rewrite_app_http_probe: true,
            log_level: "warning".into(),
            component_log_level: "misc:error".into(),
            agent_log_level: "default:info".into(),
            interception_mode: InterceptionMode::Redirect,
            include_ip_ranges: "*".into(),
            exclude_ip_ranges: String::new(),
            include_inbound_ports: "*".into(),
            exclude_inbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            include_outbound_ports: String::new(),
            status_port: 15020,
        }
    }
}

/// Mesh-wide values the injector bakes into pods (a subset of Istio's MeshConfig).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshSettings {
    /// Namespace of the control plane (istiod).
    pub control_plane_namespace: String,
    /// istiod xDS/CA address (`CA_ADDR`, `discoveryAddress`).
    pub discovery_address: String,
    pub trust_domain: String,
    pub cluster_id: String,
    /// Envoy outbound capture port (istio-iptables `-p`).
    pub proxy_listen_port: u16,
    /// Envoy inbound capture port (istio-iptables `-z`).
    pub proxy_inbound_listen_port: u16,
    /// `meshConfig.defaultConfig` (ProxyConfig) as a JSON object; `proxy.istio.io/config` overlays it.
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub default_config: serde_json::Map<String, serde_json::Value>,
    /// Metrics merging: rewrite `prometheus.io/*` annotations to the agent.
    pub enable_prometheus_merge: bool,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            control_plane_namespace: "istio-system".into(),
            discovery_address: "istiod.istio-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            proxy_listen_port: 15001,
            proxy_inbound_listen_port: 15006,
            default_config: serde_json::Map::new(),
            enable_prometheus_merge: true,
        }
    }
}

/// Everything the injector needs besides the pod and its namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct InjectorConfig {
    /// Control-plane revision this config belongs to (`default` when empty).
    pub revision: String,
    pub policy: InjectionPolicy,
    /// Pods matching any of these (and not explicitly opted in) are not injected.
    pub never_inject_selector: Vec<LabelSelector>,
    /// Pods matching any of these (and not explicitly opted out) are injected even with policy disabled.
    pub always_inject_selector: Vec<LabelSelector>,
    /// Extra annotations added to every injected pod.
    pub injected_annotations: BTreeMap<String, String>,
    pub proxy: ProxySettings,
    pub mesh: MeshSettings,
}

/// Why an injector config document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("injector config is not valid YAML/JSON: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("injector config field `{field}` has invalid value {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl InjectorConfig {
    /// Parses a YAML (or JSON) document; missing fields take Istio's defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: InjectorConfig = if text.trim().is_empty() {
            InjectorConfig::default()
        } else {
            serde_yaml_ng::from_str(text)?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// YAML rendering, as stored in the injector ConfigMap.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("InjectorConfig always serializes")
    }

    /// The effective revision name (`default` when unset).
    pub fn revision_name(&self) -> &str {
        if self.revision.is_empty() {
            DEFAULT_REVISION
        } else {
            &self.revision
        }
    }

    /// Short stable hash of the config, recorded on injected pods so stale pods can be found.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("InjectorConfig always serializes");
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// Checks values the injector would otherwise trip over at admission time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.proxy.image.trim().is_empty() {
            return Err(ConfigError::Invalid {
                field: "proxy.image",
                value: self.proxy.image.clone(),
                reason: "must be a non-empty image reference".into(),
            });
        }
        if self.proxy.status_port == 0 {
            return Err(ConfigError::Invalid {
                field: "proxy.statusPort",
                value: "0".into(),
                reason: "must be a port between 1 and 65535".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_istio_defaults() {
        let cfg = InjectorConfig::from_yaml("").unwrap();
        assert_eq!(cfg, InjectorConfig::default());
        assert_eq!(cfg.proxy.resources.requests.cpu, "100m");
        assert_eq!(cfg.proxy.resources.limits.memory, "1024Mi");
        assert_eq!(cfg.revision_name(), "default");
    }

    #[test]
    fn partial_document_keeps_other_defaults() {
        let cfg = InjectorConfig::from_yaml(
            "proxy:\n  holdApplicationUntilProxyStarts: true\n  resources:\n    requests: {cpu: 10m}\n",
        )
        .unwrap();
        assert!(cfg.proxy.hold_application_until_proxy_starts);
        assert_eq!(cfg.proxy.resources.requests.cpu, "10m");
        assert_eq!(cfg.proxy.resources.requests.memory, "");
        assert_eq!(cfg.proxy.status_port, 15020);
    }

    #[test]
    fn round_trips_through_yaml() {
        let cfg = InjectorConfig {
            revision: "canary".into(),
            policy: InjectionPolicy::Disabled,
            ..InjectorConfig::default()
        };
        let back = InjectorConfig::from_yaml(&cfg.to_yaml()).unwrap();
        assert_eq!(back, cfg);
        assert_ne!(back.hash(), InjectorConfig::default().hash());
    }

    #[test]
    fn bad_policy_names_the_value() {
        let err = InjectorConfig::from_yaml("policy: sometimes").unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn config_map_names() {
        assert_eq!(config_map_name(""), "skjold-injector");
        assert_eq!(config_map_name("default"), "skjold-injector");
        assert_eq!(config_map_name("canary"), "skjold-injector-canary");
    }
}
