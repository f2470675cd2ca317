//! Injector configuration: the contract between the operator (which renders it into the
//! injector ConfigMap, key [`crate::istio::INJECTOR_CONFIG_KEY`]) and the webhook / `skjoldctl inject` (which read it).
//!
//! Every field defaults to Istio's own default, so an empty document (or no `--config` at all)
//! injects exactly what a stock `istioctl install` would.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ResourcePair {
    #[serde(deserialize_with = "null_as_empty")]
    pub cpu: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub memory: String,
    /// `ephemeral-storage`, as in Istio's values; unset by default.
    #[serde(
        rename = "ephemeral-storage",
        alias = "ephemeralStorage",
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub ephemeral_storage: String,
}

/// Istio's values write `memory: null` to unset a default; here that is the empty string.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Proxy resources (`values.global.proxy.resources`); also applied to `istio-init`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
                ephemeral_storage: String::new(),
            },
            limits: ResourcePair {
                cpu: "2000m".into(),
                memory: "1024Mi".into(),
                ephemeral_storage: String::new(),
            },
        }
    }
}

/// Settings of the injected `istio-proxy` / `istio-init` containers (`values.global.proxy.*`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProxySettings {
    /// Full image reference of `istio-proxy`.
    pub image: String,
    /// Full image reference of `istio-init` (Istio's `values.global.proxy_init.image`); like
    /// Istio's, it does not follow `image`.
    pub init_image: String,
    /// `imagePullPolicy` of the injected containers; omitted when empty.
    pub image_pull_policy: String,
    pub resources: ProxyResources,
    /// Start the proxy before the application containers (classic mode only).
    pub hold_application_until_proxy_starts: bool,
    /// Inject the proxy as a native sidecar (init container with `restartPolicy: Always`):
    /// `true`/`false`, or unset for Istio's `ENABLE_NATIVE_SIDECARS=auto`: native when every
    /// node's kubelet is 1.33 or newer (Kubernetes' native sidecars are stable there), classic
    /// when a node is older or the nodes are not known (offline injection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_sidecar: Option<bool>,
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
    /// pilot-agent status port (app-health, probe rewrite); 0 turns the proxy's probes and the
    /// probe rewrite off, as in Istio.
    pub status_port: u16,
    /// `istio-proxy` readiness probe (`values.global.proxy.readiness*`).
    pub readiness_initial_delay_seconds: i32,
    pub readiness_period_seconds: i32,
    pub readiness_failure_threshold: i32,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            image: crate::istio::default_proxy_image(),
            init_image: crate::istio::default_proxy_image(),
            image_pull_policy: String::new(),
            resources: ProxyResources::default(),
            hold_application_until_proxy_starts: false,
            native_sidecar: None,
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
            readiness_initial_delay_seconds: 0,
            readiness_period_seconds: 15,
            readiness_failure_threshold: 4,
        }
    }
}

/// Mesh-wide values the injector bakes into pods (a subset of Istio's MeshConfig).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
    /// `meshConfig.inboundTrafficPolicy.mode`; `LOCALHOST` makes rewritten probes reach the app
    /// on localhost, as apps bound to 127.0.0.1 need.
    pub inbound_traffic_policy: InboundTrafficPolicy,
    /// Istio's `COMPLIANCE_POLICY` (e.g. `fips-140-3`), passed to the proxy.
    pub compliance_policy: String,
    /// The mesh has an OpenTelemetry provider with `serviceAttributeEnrichment:
    /// OTEL_SEMANTIC_CONVENTIONS`: the proxy gets `OTEL_RESOURCE_ATTRIBUTES` (service.namespace,
    /// service.version, service.instance.id) derived from the pod, as Istio renders it.
    pub otel_semantic_conventions: bool,
}

/// `meshConfig.inboundTrafficPolicy.mode`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum InboundTrafficPolicy {
    #[default]
    Passthrough,
    Localhost,
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
            inbound_traffic_policy: InboundTrafficPolicy::Passthrough,
            compliance_policy: String::new(),
            otel_semantic_conventions: false,
        }
    }
}

/// Everything the injector needs besides the pod and its namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
    /// Image pull secrets added to every injected pod (`values.global.imagePullSecrets`), so the
    /// proxy image can be pulled from a private registry.
    pub image_pull_secrets: Vec<String>,
    /// Mount the legacy `istio.<serviceAccount>` Secret at `/etc/certs/` (`values.global.mountMtlsCerts`).
    pub mount_mtls_certs: bool,
    pub proxy: ProxySettings,
    pub mesh: MeshSettings,
}

/// An injector config validated and prepared once, when it is loaded: what an admission reads.
///
/// The webhook's cache, `skjoldctl inject` and the tests build one per config document; every
/// admission then does per-pod work only. It reads as the config it holds (`Deref`), plus what
/// was worked out from it: the config hash recorded on injected pods and the default proxy
/// resources as parsed quantities (a default that does not parse is refused here, at load).
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedConfig {
    config: InjectorConfig,
    hash: String,
    resources: DefaultResources,
}

/// The config's default proxy resources, parsed: `None` where the field is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultResources {
    pub cpu_request: Option<crate::inject::annotations::Quantity>,
    pub memory_request: Option<crate::inject::annotations::Quantity>,
    pub cpu_limit: Option<crate::inject::annotations::Quantity>,
    pub memory_limit: Option<crate::inject::annotations::Quantity>,
}

impl PreparedConfig {
    /// Validates `config` and prepares it; the error names the field and value.
    pub fn new(config: InjectorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let res = &config.proxy.resources;
        let parse = |field: &str, text: &str| {
            if text.is_empty() {
                return Ok(None);
            }
            crate::inject::annotations::parse_resource_quantity(text)
                .map(Some)
                .map_err(|reason| ConfigError::Invalid {
                    field: format!("proxy.resources.{field}"),
                    value: text.to_string(),
                    reason,
                })
        };
        let resources = DefaultResources {
            cpu_request: parse("requests.cpu", &res.requests.cpu)?,
            memory_request: parse("requests.memory", &res.requests.memory)?,
            cpu_limit: parse("limits.cpu", &res.limits.cpu)?,
            memory_limit: parse("limits.memory", &res.limits.memory)?,
        };
        let hash = config.hash();
        Ok(PreparedConfig {
            config,
            hash,
            resources,
        })
    }

    /// Parses, validates and prepares a config document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::new(InjectorConfig::parse_yaml(text)?)
    }

    /// The config as loaded.
    pub fn config(&self) -> &InjectorConfig {
        &self.config
    }

    /// [`InjectorConfig::hash`], computed once.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The default proxy resources, parsed.
    pub fn default_resources(&self) -> &DefaultResources {
        &self.resources
    }
}

impl Default for PreparedConfig {
    /// Istio's defaults.
    fn default() -> Self {
        PreparedConfig::new(InjectorConfig::default()).expect("Istio's defaults are valid")
    }
}

impl std::ops::Deref for PreparedConfig {
    type Target = InjectorConfig;
    fn deref(&self) -> &InjectorConfig {
        &self.config
    }
}

/// Why an injector config document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("injector config is not valid YAML/JSON: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("injector config field `{field}` has invalid value {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
}

impl InjectorConfig {
    /// Parses a YAML (or JSON) document; missing fields take Istio's defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg = Self::parse_yaml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a config document without validating it (an empty document is Istio's defaults).
    fn parse_yaml(text: &str) -> Result<Self, ConfigError> {
        Ok(if text.trim().is_empty() {
            InjectorConfig::default()
        } else {
            serde_yaml_ng::from_str(text)?
        })
    }

    /// YAML rendering, as stored in the injector ConfigMap.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("InjectorConfig always serializes")
    }

    /// The effective revision name (`default` when unset).
    pub fn revision_name(&self) -> &str {
        crate::istio::normalize_revision(&self.revision)
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
                field: "proxy.image".into(),
                value: self.proxy.image.clone(),
                reason: "must be a non-empty image reference".into(),
            });
        }
        if !matches!(
            self.mesh.compliance_policy.as_str(),
            "" | "fips-140-2" | "fips-140-3" | "pqc"
        ) {
            return Err(ConfigError::Invalid {
                field: "mesh.compliancePolicy".into(),
                value: self.mesh.compliance_policy.clone(),
                reason: "must be empty, fips-140-2, fips-140-3 or pqc".into(),
            });
        }
        if self.proxy.init_image.trim().is_empty() {
            return Err(ConfigError::Invalid {
                field: "proxy.initImage".into(),
                value: self.proxy.init_image.clone(),
                reason: "must be a non-empty image reference".into(),
            });
        }
        for (field, v) in [
            (
                "proxy.readinessInitialDelaySeconds",
                self.proxy.readiness_initial_delay_seconds,
            ),
            (
                "proxy.readinessPeriodSeconds",
                self.proxy.readiness_period_seconds,
            ),
            (
                "proxy.readinessFailureThreshold",
                self.proxy.readiness_failure_threshold,
            ),
        ] {
            if v < 0 {
                return Err(ConfigError::Invalid {
                    field: field.into(),
                    value: v.to_string(),
                    reason: "must not be negative".into(),
                });
            }
        }
        self.validate_traffic_and_resources()?;
        for (kind, list) in [
            ("neverInjectSelector", &self.never_inject_selector),
            ("alwaysInjectSelector", &self.always_inject_selector),
        ] {
            for (i, sel) in list.iter().enumerate() {
                for (j, e) in sel.match_expressions.iter().flatten().enumerate() {
                    let field = format!("{kind}[{i}].matchExpressions[{j}]");
                    let values = e.values.as_deref().unwrap_or(&[]);
                    let problem = match e.operator.as_str() {
                        "In" | "NotIn" if values.is_empty() => Some("In and NotIn need values"),
                        "Exists" | "DoesNotExist" if !values.is_empty() => {
                            Some("Exists and DoesNotExist take no values")
                        }
                        "In" | "NotIn" | "Exists" | "DoesNotExist" => None,
                        _ => Some("operator must be In, NotIn, Exists or DoesNotExist"),
                    };
                    if let Some(reason) = problem {
                        return Err(ConfigError::Invalid {
                            field,
                            value: format!("{} {:?}", e.operator, values),
                            reason: reason.into(),
                        });
                    }
                }
            }
        }
        for (i, name) in self.image_pull_secrets.iter().enumerate() {
            if name.is_empty() || name.len() > 253 {
                return Err(ConfigError::Invalid {
                    field: "imagePullSecrets".into(),
                    value: format!("[{i}] {name:?}"),
                    reason: "must be a Secret name".into(),
                });
            }
        }
        Ok(())
    }
}

impl InjectorConfig {
    /// The proxy defaults that annotations would otherwise override: each parsed with the same
    /// parser as its annotation, so a bad default is refused when the config is loaded (the cache
    /// keeps the last good config) instead of being dropped at every admission.
    fn validate_traffic_and_resources(&self) -> Result<(), ConfigError> {
        use crate::inject::annotations as parse;
        let p = &self.proxy;
        let check = |field: &str, value: &str, r: Result<(), String>| {
            r.map_err(|reason| ConfigError::Invalid {
                field: field.to_string(),
                value: value.to_string(),
                reason,
            })
        };
        let opt = |v: &str, f: fn(&str) -> Result<(), String>| {
            if v.trim().is_empty() { Ok(()) } else { f(v) }
        };
        check(
            "proxy.includeIpRanges",
            &p.include_ip_ranges,
            parse::parse_cidr_selection(&p.include_ip_ranges).map(drop),
        )?;
        check(
            "proxy.excludeIpRanges",
            &p.exclude_ip_ranges,
            opt(&p.exclude_ip_ranges, |v| {
                parse::parse_cidr_list(v).map(drop)
            }),
        )?;
        check(
            "proxy.includeInboundPorts",
            &p.include_inbound_ports,
            parse::parse_port_selection(&p.include_inbound_ports).map(drop),
        )?;
        for (field, v) in [
            ("proxy.excludeInboundPorts", &p.exclude_inbound_ports),
            ("proxy.includeOutboundPorts", &p.include_outbound_ports),
            ("proxy.excludeOutboundPorts", &p.exclude_outbound_ports),
        ] {
            check(field, v, opt(v, |v| parse::parse_port_list(v).map(drop)))?;
        }
        check(
            "proxy.logLevel",
            &p.log_level,
            parse::parse_envoy_log_level(&p.log_level).map(drop),
        )?;
        check(
            "proxy.componentLogLevel",
            &p.component_log_level,
            parse::parse_component_log_level(&p.component_log_level).map(drop),
        )?;
        check(
            "proxy.agentLogLevel",
            &p.agent_log_level,
            parse::parse_agent_log_level(&p.agent_log_level).map(drop),
        )?;
        let r = &p.resources;
        let q = |field: &str, v: &str| -> Result<Option<i128>, ConfigError> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            parse::parse_resource_quantity(v)
                .map(|q| Some(q.nanos()))
                .map_err(|reason| ConfigError::Invalid {
                    field: field.to_string(),
                    value: v.to_string(),
                    reason,
                })
        };
        for (name, req, lim) in [
            ("cpu", &r.requests.cpu, &r.limits.cpu),
            ("memory", &r.requests.memory, &r.limits.memory),
            (
                "ephemeral-storage",
                &r.requests.ephemeral_storage,
                &r.limits.ephemeral_storage,
            ),
        ] {
            let (rq, lq) = (
                q(&format!("proxy.resources.requests.{name}"), req)?,
                q(&format!("proxy.resources.limits.{name}"), lim)?,
            );
            if let (Some(rq), Some(lq)) = (rq, lq)
                && rq > lq
            {
                return Err(ConfigError::Invalid {
                    field: format!("proxy.resources.requests.{name}"),
                    value: req.clone(),
                    reason: format!("greater than proxy.resources.limits.{name} {lim}"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_defaults_are_refused_at_load_by_field() {
        for (yaml, field) in [
            (
                "proxy: {includeIpRanges: 10.0.0.0}",
                "proxy.includeIpRanges",
            ),
            (
                "proxy: {excludeInboundPorts: \"80,http\"}",
                "proxy.excludeInboundPorts",
            ),
            ("proxy: {logLevel: loud}", "proxy.logLevel"),
            (
                "proxy: {resources: {requests: {cpu: lots}}}",
                "proxy.resources.requests.cpu",
            ),
            (
                "proxy: {resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}",
                "proxy.resources.requests.memory",
            ),
            (
                "neverInjectSelector: [{matchExpressions: [{key: a, operator: Maybe}]}]",
                "neverInjectSelector[0].matchExpressions[0]",
            ),
            (
                "alwaysInjectSelector: [{matchExpressions: [{key: a, operator: In}]}]",
                "alwaysInjectSelector[0].matchExpressions[0]",
            ),
        ] {
            let e = InjectorConfig::from_yaml(yaml).unwrap_err().to_string();
            assert!(e.contains(field), "{yaml}: {e}");
        }
        // Empty lists and the defaults are fine.
        InjectorConfig::from_yaml("proxy: {excludeIpRanges: \"\", excludeOutboundPorts: \"\"}")
            .unwrap();
        InjectorConfig::default().validate().unwrap();
    }

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
    fn unknown_fields_are_refused_by_name() {
        let err = InjectorConfig::from_yaml("proxy:\n  imagePullPolicyy: Always\n").unwrap_err();
        assert!(err.to_string().contains("imagePullPolicyy"), "{err}");
    }

    #[test]
    fn istio_style_null_resources_unset_the_default() {
        let cfg = InjectorConfig::from_yaml(
            "proxy:\n  resources:\n    limits: {cpu: null, ephemeral-storage: 1Gi}\n",
        )
        .unwrap();
        assert_eq!(cfg.proxy.resources.limits.cpu, "");
        assert_eq!(cfg.proxy.resources.limits.ephemeral_storage, "1Gi");
        assert_eq!(cfg.proxy.resources.limits.memory, "");
    }
}
