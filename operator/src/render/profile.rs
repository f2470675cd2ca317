//! Profile resolution: turns a spec plus its profile into concrete values, so the rest of the
//! render step never has to ask "which profile is this?".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skjold_inject::config::{ProxyResources, ResourcePair};

use crate::crd::{MeshConfigSpec, Profile};

/// Values after applying the profile and the user's overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective {
    pub istiod: bool,
    pub ingress_gateway: bool,
    pub egress_gateway: bool,
    /// ConfigMap `istio` is left to whoever runs istiod under the `empty` profile.
    pub mesh_config_map: bool,
    pub access_log_file: String,
    pub proxy_image: String,
    /// `istio-init`'s image: Istio's `proxyv2` of the hub and tag, whatever `proxy.image` says.
    pub proxy_init_image: String,
    pub proxy_resources: ProxyResources,
    pub pilot_resources: ResourceRequirements,
    pub gateway_resources: ResourceRequirements,
    /// `PILOT_TRACE_SAMPLING` (percent); the demo profile samples everything.
    pub trace_sampling: &'static str,
}

/// Resolves the profile overlay (Istio's `manifests/profiles/*.yaml`) and the spec's overrides.
pub fn resolve(spec: &MeshConfigSpec) -> Effective {
    let profile = spec.profile;
    let demo = profile == Profile::Demo;
    let (istiod, ingress, egress) = match profile {
        Profile::Default => (true, true, false),
        Profile::Demo => (true, true, true),
        Profile::Minimal => (true, false, false),
        Profile::Empty => (false, false, false),
    };
    let profile_access_log = if demo { "/dev/stdout" } else { "" };

    let mut proxy_resources = ProxyResources::default();
    if demo {
        proxy_resources.requests = ResourcePair {
            cpu: "10m".into(),
            memory: "40Mi".into(),
            ..ResourcePair::default()
        };
    }
    // Per-field overlay: setting only requests.cpu keeps the other defaults (unlike Istio).
    if let Some(res) = &spec.proxy.resources {
        overlay_pair(&mut proxy_resources.requests, res.requests.as_ref());
        overlay_pair(&mut proxy_resources.limits, res.limits.as_ref());
    }

    let pilot_resources = spec.pilot.resources.clone().unwrap_or_else(|| {
        if demo {
            requirements(("10m", "100Mi"), None)
        } else {
            requirements(("500m", "2048Mi"), None)
        }
    });
    let gateway_resources = if demo {
        requirements(("10m", "40Mi"), Some(("2000m", "1024Mi")))
    } else {
        requirements(("100m", "128Mi"), Some(("2000m", "1024Mi")))
    };

    Effective {
        istiod,
        ingress_gateway: spec.components.ingress_gateway.enabled.unwrap_or(ingress),
        egress_gateway: spec.components.egress_gateway.enabled.unwrap_or(egress),
        mesh_config_map: profile != Profile::Empty,
        access_log_file: spec
            .mesh_config
            .access_log_file
            .clone()
            .unwrap_or_else(|| profile_access_log.to_string()),
        proxy_image: spec
            .proxy
            .image
            .clone()
            .unwrap_or_else(|| format!("{}/proxyv2:{}", spec.hub, spec.tag)),
        proxy_init_image: format!("{}/proxyv2:{}", spec.hub, spec.tag),
        proxy_resources,
        pilot_resources,
        gateway_resources,
        trace_sampling: if demo { "100" } else { "1.0" },
    }
}

fn overlay_pair(base: &mut ResourcePair, over: Option<&crate::crd::QuantityPair>) {
    if let Some(over) = over {
        if let Some(cpu) = &over.cpu {
            base.cpu = cpu.clone();
        }
        if let Some(memory) = &over.memory {
            base.memory = memory.clone();
        }
    }
}

fn requirements(requests: (&str, &str), limits: Option<(&str, &str)>) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(requests)),
        limits: limits.map(pair),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ProxyResourcesSpec, QuantityPair};

    fn spec(profile: Profile) -> MeshConfigSpec {
        MeshConfigSpec {
            profile,
            ..serde_json::from_str("{}").unwrap()
        }
    }

    #[test]
    fn profile_components() {
        let d = resolve(&spec(Profile::Default));
        assert!(d.istiod && d.ingress_gateway && !d.egress_gateway);
        let demo = resolve(&spec(Profile::Demo));
        assert!(demo.istiod && demo.ingress_gateway && demo.egress_gateway);
        assert_eq!(demo.access_log_file, "/dev/stdout");
        assert_eq!(demo.proxy_resources.requests.cpu, "10m");
        let min = resolve(&spec(Profile::Minimal));
        assert!(min.istiod && !min.ingress_gateway && !min.egress_gateway);
        let empty = resolve(&spec(Profile::Empty));
        assert!(!empty.istiod && !empty.mesh_config_map && !empty.ingress_gateway);
    }

    #[test]
    fn explicit_toggles_beat_profile() {
        let mut s = spec(Profile::Minimal);
        s.components.egress_gateway.enabled = Some(true);
        s.mesh_config.access_log_file = Some(String::new());
        let e = resolve(&s);
        assert!(e.egress_gateway);
        let mut demo = spec(Profile::Demo);
        demo.mesh_config.access_log_file = Some(String::new());
        demo.components.ingress_gateway.enabled = Some(false);
        let e = resolve(&demo);
        assert_eq!(
            e.access_log_file, "",
            "explicit empty must disable the demo access log"
        );
        assert!(!e.ingress_gateway);
    }

    #[test]
    fn proxy_resources_overlay_per_field() {
        let mut s = spec(Profile::Default);
        s.proxy.resources = Some(ProxyResourcesSpec {
            requests: Some(QuantityPair {
                cpu: Some("250m".into()),
                memory: None,
            }),
            limits: None,
        });
        let e = resolve(&s);
        assert_eq!(e.proxy_resources.requests.cpu, "250m");
        assert_eq!(e.proxy_resources.requests.memory, "128Mi");
        assert_eq!(e.proxy_resources.limits.cpu, "2000m");
    }

    #[test]
    fn proxy_image_follows_hub_and_tag() {
        let mut s = spec(Profile::Default);
        s.hub = "reg.example/istio".into();
        s.tag = "1.26.1".into();
        assert_eq!(resolve(&s).proxy_image, "reg.example/istio/proxyv2:1.26.1");
        s.proxy.image = Some("custom/proxy:x".into());
        assert_eq!(resolve(&s).proxy_image, "custom/proxy:x");
    }
}
