//! The two ConfigMaps read live: `istio[-rev]` key `mesh` (istiod) and `skjold-injector[-rev]`
//! key `config` (the webhook). Neither reader needs a restart to pick up a change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};
use skjold_inject::config::{InjectorConfig, MeshSettings, PreparedConfig, ProxySettings};
use skjold_inject::istio;

use super::names;
use super::{Input, ManagedObject, RenderError};
use crate::crd::AccessLogEncoding;

/// Key of the mesh ConfigMap that istiod reads.
pub const MESH_KEY: &str = "mesh";

/// MeshConfig YAML for istiod (Istio's field names and enum spellings).
pub(crate) fn mesh_yaml(input: &Input<'_>) -> Result<String, RenderError> {
    let mc = &input.spec.mesh_config;
    let ns = input.ctx.namespace.as_str();
    let mut default_config = mc.default_config.clone();
    default_config
        .entry("discoveryAddress")
        .or_insert_with(|| json!(names::discovery_address(input.rev, ns)));
    let encoding = match mc.access_log_encoding {
        AccessLogEncoding::Text => "TEXT",
        AccessLogEncoding::Json => "JSON",
    };
    let mesh = json!({
        "accessLogFile": input.eff.access_log_file,
        "accessLogEncoding": encoding,
        "accessLogFormat": mc.access_log_format,
        "outboundTrafficPolicy": {"mode": mc.outbound_traffic_policy.mode.as_str()},
        "enableTracing": mc.enable_tracing,
        "enablePrometheusMerge": true,
        "rootNamespace": ns,
        "trustDomain": mc.trust_domain,
        "defaultConfig": Value::Object(default_config),
    });
    serde_yaml_ng::to_string(&mesh).map_err(|source| RenderError::Serialize {
        what: "mesh config",
        source,
    })
}

pub(crate) fn mesh(input: &Input<'_>) -> Result<ManagedObject, RenderError> {
    Ok(ManagedObject::ConfigMap(ConfigMap {
        metadata: input.meta(names::mesh_config_map(input.rev), &[("app", "istiod")]),
        data: Some(BTreeMap::from([
            (MESH_KEY.to_string(), mesh_yaml(input)?),
            ("meshNetworks".to_string(), "networks: {}\n".to_string()),
        ])),
        ..Default::default()
    }))
}

/// The webhook's [`InjectorConfig`] for this revision.
pub(crate) fn injector_config(input: &Input<'_>) -> Result<InjectorConfig, RenderError> {
    let spec = input.spec;
    let ns = input.ctx.namespace.as_str();
    // `holdApplicationUntilProxyStarts` is decided per pod by the injector
    // (`skjold_inject::inject::settings::hold_application_until_proxy_starts`), from both the
    // install-wide setting and the ProxyConfig (`defaultConfig` + annotation): both pass through.
    let default_config = spec.mesh_config.default_config.clone();
    let cfg = InjectorConfig {
        revision: input.rev.to_string(),
        policy: spec.injection.policy,
        never_inject_selector: spec.injection.never_inject_selector.clone(),
        always_inject_selector: spec.injection.always_inject_selector.clone(),
        injected_annotations: BTreeMap::new(),
        image_pull_secrets: Vec::new(),
        mount_mtls_certs: false,
        proxy: ProxySettings {
            image: input.eff.proxy_image.clone(),
            init_image: input.eff.proxy_init_image.clone(),
            resources: input.eff.proxy_resources.clone(),
            hold_application_until_proxy_starts: spec.proxy.hold_application_until_proxy_starts,
            native_sidecar: spec.proxy.native_sidecar,
            ..ProxySettings::default()
        },
        mesh: MeshSettings {
            control_plane_namespace: ns.to_string(),
            discovery_address: names::discovery_address(input.rev, ns),
            trust_domain: spec.mesh_config.trust_domain.clone(),
            default_config,
            ..MeshSettings::default()
        },
    };
    // Exactly the check the webhook's cache makes when it loads the ConfigMap, so a config the
    // webhook would refuse is never rendered (it would keep serving the previous one).
    PreparedConfig::new(cfg.clone()).map_err(|e| RenderError::InvalidField {
        field: "spec.proxy",
        value: cfg.proxy.image.clone(),
        reason: e.to_string(),
    })?;
    Ok(cfg)
}

pub(crate) fn injector(input: &Input<'_>) -> Result<ManagedObject, RenderError> {
    let cfg = injector_config(input)?;
    let yaml = serde_yaml_ng::to_string(&cfg).map_err(|source| RenderError::Serialize {
        what: "injector config",
        source,
    })?;
    Ok(ManagedObject::ConfigMap(ConfigMap {
        metadata: input.meta(
            istio::injector_config_map_name(input.rev),
            &[(istio::INJECTOR_CONFIG_MAP_LABEL, "true")],
        ),
        data: Some(BTreeMap::from([(
            istio::INJECTOR_CONFIG_KEY.to_string(),
            yaml,
        )])),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, meshconfig};
    use super::super::{ManagedObject, render};
    use crate::crd::{OutboundMode, Profile};
    use skjold_inject::config::{InjectionPolicy, InjectorConfig};

    fn config_map(mc: &crate::crd::MeshConfig, name: &str, key: &str) -> String {
        let r = render(mc, &ctx()).unwrap();
        r.objects
            .iter()
            .find_map(|(_, o)| match o {
                ManagedObject::ConfigMap(cm) if o.name() == name => {
                    cm.data.as_ref()?.get(key).cloned()
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {name}/{key}"))
    }

    #[test]
    fn mesh_config_carries_access_log_and_outbound_mode() {
        let mut mc = meshconfig(Profile::Default, "");
        mc.spec.mesh_config.access_log_file = Some("/dev/stdout".into());
        mc.spec.mesh_config.outbound_traffic_policy.mode = OutboundMode::RegistryOnly;
        let mesh: serde_json::Value =
            serde_yaml_ng::from_str(&config_map(&mc, "istio", "mesh")).unwrap();
        assert_eq!(mesh["accessLogFile"], "/dev/stdout");
        assert_eq!(mesh["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
        assert_eq!(
            mesh["defaultConfig"]["discoveryAddress"],
            "istiod.istio-system.svc:15012"
        );
        assert_eq!(mesh["rootNamespace"], "istio-system");
    }

    #[test]
    fn user_discovery_address_is_kept() {
        let mut mc = meshconfig(Profile::Default, "");
        mc.spec
            .mesh_config
            .default_config
            .insert("discoveryAddress".into(), "ext:15012".into());
        let mesh: serde_json::Value =
            serde_yaml_ng::from_str(&config_map(&mc, "istio", "mesh")).unwrap();
        assert_eq!(mesh["defaultConfig"]["discoveryAddress"], "ext:15012");
    }

    #[test]
    fn trust_domain_reaches_mesh_config_injector_and_gateways() {
        let mut mc = meshconfig(Profile::Default, "");
        mc.spec.mesh_config.trust_domain = "prod.example.org".into();
        let r = super::super::render(&mc, &super::super::tests::ctx()).unwrap();
        let yaml = r.to_yaml().unwrap();
        let mesh = config_map(&mc, "istio", "mesh");
        assert!(mesh.contains("trustDomain: prod.example.org"), "{mesh}");
        let injector =
            InjectorConfig::from_yaml(&config_map(&mc, "skjold-injector", "config")).unwrap();
        assert_eq!(injector.mesh.trust_domain, "prod.example.org");
        // The ingress gateway's TRUST_DOMAIN and MESH_ID.
        assert_eq!(yaml.matches("value: prod.example.org").count(), 2, "{yaml}");
        assert!(!yaml.contains("trustDomain: cluster.local"));
    }

    #[test]
    fn injector_config_round_trips_and_maps_spec() {
        let mut mc = meshconfig(Profile::Demo, "canary");
        mc.spec.injection.policy = InjectionPolicy::Disabled;
        mc.spec.proxy.native_sidecar = Some(true);
        mc.spec
            .mesh_config
            .default_config
            .insert("holdApplicationUntilProxyStarts".into(), true.into());
        let text = config_map(&mc, "skjold-injector-canary", "config");
        let cfg = InjectorConfig::from_yaml(&text).unwrap();
        assert_eq!(cfg.revision, "canary");
        assert_eq!(cfg.policy, InjectionPolicy::Disabled);
        assert_eq!(cfg.proxy.native_sidecar, Some(true));
        // Passed through as given; the injector decides per pod (one rule, see injector_config).
        assert!(!cfg.proxy.hold_application_until_proxy_starts);
        assert_eq!(
            cfg.mesh.default_config["holdApplicationUntilProxyStarts"],
            true
        );
        assert_eq!(cfg.proxy.resources.requests.cpu, "10m");
        assert_eq!(
            cfg.mesh.discovery_address,
            "istiod-canary.istio-system.svc:15012"
        );
    }

    #[test]
    fn empty_proxy_image_is_refused() {
        let mut mc = meshconfig(Profile::Default, "");
        mc.spec.proxy.image = Some("  ".into());
        let err = render(&mc, &ctx()).unwrap_err();
        assert!(err.to_string().contains("spec.proxy"), "{err}");
    }
}
