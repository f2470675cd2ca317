//! Resolves the effective per-pod settings: pod annotation, else namespace annotation, else
//! injector config. Every honoured annotation is validated here and all problems are collected,
//! so one refusal names every bad annotation at once.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use super::annotations as parse;
use super::decision::EffectiveAnnotations;
use super::keys;
use super::types::{AnnotationProblem, NodeSupport, Source};
use crate::config::{InterceptionMode, PreparedConfig};

/// The resolved settings one injection renders from.
#[derive(Debug)]
pub struct Settings<'a> {
    /// The injection template (`inject.istio.io/templates`).
    pub template: Template,
    pub image: Cow<'a, str>,
    /// `istio-init`'s image: the config's, with the image type suffix (not `proxyImage`).
    pub init_image: Cow<'a, str>,
    pub image_pull_policy: &'a str,
    pub resources: ResourceRequirements,
    pub interception_mode: InterceptionMode,
    pub include_ip_ranges: &'a str,
    pub exclude_ip_ranges: &'a str,
    pub include_inbound_ports: &'a str,
    pub exclude_inbound_ports: &'a str,
    pub include_outbound_ports: Option<&'a str>,
    pub exclude_outbound_ports: Option<&'a str>,
    pub exclude_interfaces: Option<&'a str>,
    pub reroute_interfaces: Option<&'a str>,
    pub status_port: u16,
    pub readiness_initial_delay: i32,
    pub readiness_period: i32,
    pub readiness_failure_threshold: i32,
    /// Effective ProxyConfig overlay: mesh `defaultConfig` then `proxy.istio.io/config`.
    pub proxy_config: serde_json::Map<String, serde_json::Value>,
    pub hold_application: bool,
    pub native_sidecar: bool,
    pub rewrite_probes: bool,
    pub merge_metrics: bool,
    pub log_level: &'a str,
    pub component_log_level: &'a str,
    pub agent_log_level: &'a str,
    pub user_volumes: BTreeMap<String, Volume>,
    pub user_volume_mounts: BTreeMap<String, VolumeMount>,
    pub bootstrap_override: Option<&'a str>,
    pub cap_net_bind_service: bool,
    pub concurrency: Option<i64>,
}

/// Istio's built-in injection templates Skjold renders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Template {
    /// `sidecar`: istio-init (or none with interception NONE) and the proxy as a sidecar.
    #[default]
    Sidecar,
    /// `gateway`: the pod is a gateway (`proxy router`); no iptables, never a native sidecar,
    /// the proxy's resources are the pod author's.
    Gateway,
    /// `grpc-agent`: proxyless gRPC with pilot-agent (no Envoy) serving xDS to the app.
    GrpcAgent,
    /// `grpc-simple`: proxyless gRPC talking to istiod directly; no proxy at all.
    GrpcSimple,
}

impl Template {
    pub fn as_str(self) -> &'static str {
        match self {
            Template::Sidecar => "sidecar",
            Template::Gateway => "gateway",
            Template::GrpcAgent => "grpc-agent",
            Template::GrpcSimple => "grpc-simple",
        }
    }
}

/// Collects problems while reading annotations.
struct Reader<'a, 'b> {
    ann: &'b EffectiveAnnotations<'a>,
    problems: Vec<AnnotationProblem>,
    warnings: &'b mut Vec<String>,
}

impl<'a> Reader<'a, '_> {
    /// Raw value of an honoured annotation, size-checked.
    fn raw(&mut self, key: &str) -> Option<(&'a str, Source)> {
        let (value, source) = self.ann.get(key)?;
        if value.len() > parse::MAX_ANNOTATION_VALUE_BYTES {
            self.problems.push(AnnotationProblem {
                annotation: key.to_string(),
                value: value.to_string(),
                problem: format!(
                    "value is {} bytes, larger than the {}-byte limit",
                    value.len(),
                    parse::MAX_ANNOTATION_VALUE_BYTES
                ),
                source,
            });
            return None;
        }
        Some((value, source))
    }

    /// Reads and parses an annotation; a parse failure is recorded and yields `None`.
    fn get<T>(
        &mut self,
        key: &str,
        parser: impl FnOnce(&'a str) -> Result<T, String>,
    ) -> Option<T> {
        let (value, source) = self.raw(key)?;
        match parser(value) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.problems.push(AnnotationProblem {
                    annotation: key.to_string(),
                    value: value.to_string(),
                    problem,
                    source,
                });
                None
            }
        }
    }

    /// Reads a validated string annotation, keeping the original text.
    fn text<T>(
        &mut self,
        key: &str,
        parser: impl FnOnce(&'a str) -> Result<T, String>,
    ) -> Option<&'a str> {
        let (value, _) = self.ann.get(key)?;
        self.get(key, parser).map(|_| value)
    }

    fn problem(&mut self, key: &str, problem: String) {
        if let Some((value, source)) = self.ann.get(key) {
            self.problems.push(AnnotationProblem {
                annotation: key.to_string(),
                value: value.to_string(),
                problem,
                source,
            });
        }
    }
}

/// One resource field: annotation value, else the config default (empty = unset), with the
/// default's quantity parsed when the config was prepared.
fn resource<'a>(
    r: &mut Reader<'a, '_>,
    key: &str,
    default: &'a str,
    default_q: Option<parse::Quantity>,
) -> (Option<&'a str>, Option<parse::Quantity>) {
    if let Some(q) = r.get(key, parse::parse_resource_quantity) {
        let (text, _) = r.ann.get(key).unwrap_or((default, Source::Pod));
        return (Some(text), Some(q));
    }
    if r.ann.get(key).is_some() {
        // Invalid: already recorded; render nothing for it.
        return (None, None);
    }
    if default.is_empty() {
        (None, None)
    } else {
        (Some(default), default_q)
    }
}

/// Resolves the settings for one pod, or every problem found.
pub fn resolve<'a>(
    ann: &EffectiveAnnotations<'a>,
    config: &'a PreparedConfig,
    nodes: NodeSupport,
    warnings: &mut Vec<String>,
) -> Result<Settings<'a>, Vec<AnnotationProblem>> {
    let proxy = &config.proxy;
    let mut r = Reader {
        ann,
        problems: Vec::new(),
        warnings,
    };

    // Resources, per field (deliberately better than Istio: the other defaults stay).
    let res = &proxy.resources;
    let d = config.default_resources();
    let (mut cpu_req, cpu_req_q) =
        resource(&mut r, keys::PROXY_CPU, &res.requests.cpu, d.cpu_request);
    let (mut mem_req, mem_req_q) = resource(
        &mut r,
        keys::PROXY_MEMORY,
        &res.requests.memory,
        d.memory_request,
    );
    let (mut cpu_lim, cpu_lim_q) =
        resource(&mut r, keys::PROXY_CPU_LIMIT, &res.limits.cpu, d.cpu_limit);
    let (mut mem_lim, mem_lim_q) = resource(
        &mut r,
        keys::PROXY_MEMORY_LIMIT,
        &res.limits.memory,
        d.memory_limit,
    );
    // A user's value is never refused because of a default: the conflicting default is dropped
    // (with a warning). Only a user's own request above the user's own limit is refused.
    for (req_key, req, req_q, lim_key, lim, lim_q) in [
        (
            keys::PROXY_CPU,
            &mut cpu_req,
            cpu_req_q,
            keys::PROXY_CPU_LIMIT,
            &mut cpu_lim,
            cpu_lim_q,
        ),
        (
            keys::PROXY_MEMORY,
            &mut mem_req,
            mem_req_q,
            keys::PROXY_MEMORY_LIMIT,
            &mut mem_lim,
            mem_lim_q,
        ),
    ] {
        let (Some(rq), Some(lq)) = (req_q, lim_q) else {
            continue;
        };
        if rq <= lq {
            continue;
        }
        let (req_text, lim_text) = (req.unwrap_or_default(), lim.unwrap_or_default());
        match (r.ann.get(req_key).is_some(), r.ann.get(lim_key).is_some()) {
            (true, true) => r.problem(
                req_key,
                format!("request {req_text} is greater than the limit {lim_text} ({lim_key})"),
            ),
            (true, false) => {
                r.warnings.push(format!(
                    "{req_key}={req_text} is above the default limit {lim_text}: the default \
                     limit is dropped (set {lim_key} to keep one)"
                ));
                *lim = None;
            }
            (false, true) => {
                r.warnings.push(format!(
                    "{lim_key}={lim_text} is below the default request {req_text}: the default \
                     request is dropped (set {req_key} to keep one)"
                ));
                *req = None;
            }
            // Both defaults: the config is checked when it is loaded.
            (false, false) => {}
        }
    }
    let quantities = |cpu: Option<&str>, mem: Option<&str>, storage: &str| {
        let mut m = BTreeMap::new();
        if let Some(c) = cpu {
            m.insert("cpu".to_string(), K8sQuantity(c.to_string()));
        }
        if let Some(mm) = mem {
            m.insert("memory".to_string(), K8sQuantity(mm.to_string()));
        }
        if !storage.is_empty() {
            m.insert(
                "ephemeral-storage".to_string(),
                K8sQuantity(storage.to_string()),
            );
        }
        (!m.is_empty()).then_some(m)
    };
    let resources = ResourceRequirements {
        requests: quantities(cpu_req, mem_req, &res.requests.ephemeral_storage),
        limits: quantities(cpu_lim, mem_lim, &res.limits.ephemeral_storage),
        ..Default::default()
    };

    // Image.
    let mut image: Cow<'a, str> = Cow::Borrowed(proxy.image.as_str());
    let mut init_image: Cow<'a, str> = Cow::Borrowed(proxy.init_image.as_str());
    if let Some(custom) = r.get(keys::PROXY_IMAGE, parse::parse_image) {
        if custom.contains('/') {
            // Istio's template applies the annotation to istio-init too.
            image = Cow::Borrowed(custom);
            init_image = Cow::Borrowed(custom);
        } else {
            r.warnings.push(format!(
                "annotation {}=\"{}\" is ignored: like Istio, only a full image reference containing '/' is used",
                keys::PROXY_IMAGE,
                super::decision::short(custom)
            ));
        }
    }
    if let Some(suffix) = r.get(keys::PROXY_IMAGE_TYPE, parse::parse_image_type)
        && !suffix.is_empty()
    {
        match with_tag_suffix(&image, suffix) {
            Some(s) => image = Cow::Owned(s),
            None => r.problem(
                keys::PROXY_IMAGE_TYPE,
                format!("cannot apply to image {image}: it has a digest or no tag"),
            ),
        }
        if let Some(s) = with_tag_suffix(&init_image, suffix) {
            init_image = Cow::Owned(s);
        }
    }

    // ProxyConfig: mesh default, then the annotation overlay.
    let mut proxy_config = config.mesh.default_config.clone();
    if let Some(overlay) = r.get(keys::PROXY_CONFIG, parse::parse_proxy_config) {
        merge_json(&mut proxy_config, overlay);
    }
    let hold_application = hold_application_until_proxy_starts(
        &proxy_config,
        proxy.hold_application_until_proxy_starts,
    );
    let concurrency = proxy_config
        .get("concurrency")
        .and_then(serde_json::Value::as_i64);

    let interception_mode = r
        .get(keys::INTERCEPTION_MODE, parse::parse_interception_mode)
        .or_else(|| {
            proxy_config
                .get("interceptionMode")
                .and_then(serde_json::Value::as_str)
                .and_then(|m| parse::parse_interception_mode(m).ok())
        })
        .unwrap_or(proxy.interception_mode);

    let include_ip_ranges = r
        .text(
            keys::INCLUDE_OUTBOUND_IP_RANGES,
            parse::parse_cidr_selection,
        )
        .unwrap_or(&proxy.include_ip_ranges);
    let exclude_ip_ranges = r
        .text(keys::EXCLUDE_OUTBOUND_IP_RANGES, parse::parse_cidr_list)
        .unwrap_or(&proxy.exclude_ip_ranges);
    let include_inbound_ports = r
        .text(keys::INCLUDE_INBOUND_PORTS, parse::parse_port_selection)
        .unwrap_or(&proxy.include_inbound_ports);
    let exclude_inbound_ports = r
        .text(keys::EXCLUDE_INBOUND_PORTS, parse::parse_port_list)
        .unwrap_or(&proxy.exclude_inbound_ports);
    let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
    let include_outbound_ports = r
        .text(keys::INCLUDE_OUTBOUND_PORTS, parse::parse_port_list)
        .or_else(|| non_empty(&proxy.include_outbound_ports));
    let exclude_outbound_ports = r
        .text(keys::EXCLUDE_OUTBOUND_PORTS, parse::parse_port_list)
        .or_else(|| non_empty(&proxy.exclude_outbound_ports));
    let exclude_interfaces = r.text(keys::EXCLUDE_INTERFACES, parse::parse_interface_list);
    let reroute_interfaces = r
        .text(
            keys::REROUTE_VIRTUAL_INTERFACES,
            parse::parse_interface_list,
        )
        .or_else(|| r.text(keys::KUBEVIRT_INTERFACES, parse::parse_interface_list));

    let status_port = r
        .get(keys::STATUS_PORT, parse::parse_status_port)
        .unwrap_or(proxy.status_port);
    let readiness_initial_delay = r
        .get(keys::READINESS_INITIAL_DELAY, parse::parse_non_negative_i32)
        .unwrap_or(proxy.readiness_initial_delay_seconds);
    let readiness_period = r
        .get(keys::READINESS_PERIOD, parse::parse_non_negative_i32)
        .unwrap_or(proxy.readiness_period_seconds);
    let readiness_failure_threshold = r
        .get(
            keys::READINESS_FAILURE_THRESHOLD,
            parse::parse_non_negative_i32,
        )
        .unwrap_or(proxy.readiness_failure_threshold);

    // The pod's annotation, else the config, else Istio's `auto` rule on the nodes.
    let native_sidecar = r
        .get(keys::NATIVE_SIDECAR, parse::parse_bool)
        .or(proxy.native_sidecar)
        .unwrap_or(nodes == NodeSupport::NativeSidecars);
    let rewrite_probes = r
        .get(keys::REWRITE_PROBES, parse::parse_bool)
        .unwrap_or(proxy.rewrite_app_http_probe);
    let merge_metrics = config.mesh.enable_prometheus_merge
        && r.get(keys::MERGE_METRICS, parse::parse_bool)
            .unwrap_or(true);
    let cap_net_bind_service = r
        .get(keys::CAP_NET_BIND_SERVICE, parse::parse_bool)
        .unwrap_or(false);

    let log_level = r
        .text(keys::LOG_LEVEL, parse::parse_envoy_log_level)
        .unwrap_or(&proxy.log_level);
    let component_log_level = r
        .text(keys::COMPONENT_LOG_LEVEL, parse::parse_component_log_level)
        .unwrap_or(&proxy.component_log_level);
    let agent_log_level = r
        .text(keys::AGENT_LOG_LEVEL, parse::parse_agent_log_level)
        .unwrap_or(&proxy.agent_log_level);

    let user_volumes: BTreeMap<String, Volume> = r
        .get(keys::USER_VOLUME, |v| named_map(v, "Volume"))
        .unwrap_or_default();
    let user_volume_mounts: BTreeMap<String, VolumeMount> = r
        .get(keys::USER_VOLUME_MOUNT, |v| named_map(v, "VolumeMount"))
        .unwrap_or_default();
    let bootstrap_override = r.text(keys::BOOTSTRAP_OVERRIDE, parse::parse_dns_subdomain);

    let mut template = Template::Sidecar;
    if let Some((value, _)) = r.raw(keys::INJECT_TEMPLATES) {
        let mut chosen: Vec<Template> = Vec::new();
        for name in value.split(',').map(str::trim) {
            let t = match name {
                "sidecar" => Template::Sidecar,
                "gateway" => Template::Gateway,
                "grpc-agent" => Template::GrpcAgent,
                "grpc-simple" => Template::GrpcSimple,
                "waypoint" | "kube-gateway" => {
                    r.warnings.push(format!(
                        "{}: Istio's template \"{name}\" is not built into Skjold yet; the \
                         standard sidecar template is used",
                        keys::INJECT_TEMPLATES
                    ));
                    Template::Sidecar
                }
                other => {
                    let shown = super::decision::short(other);
                    r.problem(
                        keys::INJECT_TEMPLATES,
                        format!(
                            "unknown injection template \"{shown}\"; Skjold has Istio's \"sidecar\", \
                             \"gateway\", \"grpc-agent\" and \"grpc-simple\""
                        ),
                    );
                    continue;
                }
            };
            if !chosen.contains(&t) {
                chosen.push(t);
            }
        }
        match chosen.as_slice() {
            [] => {}
            [one] => template = *one,
            _ => r.problem(
                keys::INJECT_TEMPLATES,
                "these templates cannot be combined: a pod is a sidecar-injected workload, a \
                 gateway or a proxyless gRPC workload"
                    .into(),
            ),
        }
    }

    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    // A gateway's proxy is the pod's main container: never a native sidecar, no iptables.
    let native_sidecar = native_sidecar && template == Template::Sidecar;
    // The gRPC templates set sidecar.istio.io/rewriteAppHTTPProbers: "false" on the pod.
    let rewrite_probes =
        rewrite_probes && !matches!(template, Template::GrpcAgent | Template::GrpcSimple);
    Ok(Settings {
        template,
        image,
        init_image,
        image_pull_policy: &proxy.image_pull_policy,
        resources,
        interception_mode,
        include_ip_ranges,
        exclude_ip_ranges,
        include_inbound_ports,
        exclude_inbound_ports,
        include_outbound_ports,
        exclude_outbound_ports,
        exclude_interfaces,
        reroute_interfaces,
        status_port,
        readiness_initial_delay,
        readiness_period,
        readiness_failure_threshold,
        proxy_config,
        hold_application,
        native_sidecar,
        rewrite_probes,
        merge_metrics,
        log_level,
        component_log_level,
        agent_log_level,
        user_volumes,
        user_volume_mounts,
        bootstrap_override,
        cap_net_bind_service,
        concurrency,
    })
}

/// Appends `suffix` to the image tag (`proxyv2:1.25.0` -> `proxyv2:1.25.0-distroless`).
fn with_tag_suffix(image: &str, suffix: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    image[name_start..]
        .contains(':')
        .then(|| format!("{image}{suffix}"))
}

/// Recursive JSON merge: objects merge key by key, anything else replaces.
fn merge_json(
    base: &mut serde_json::Map<String, serde_json::Value>,
    overlay: serde_json::Map<String, serde_json::Value>,
) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(serde_json::Value::Object(b)), serde_json::Value::Object(o)) => merge_json(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Parses Istio's `{"name": {...}}` maps (userVolume, userVolumeMount); the key is the name.
fn named_map<T: serde::de::DeserializeOwned>(
    value: &str,
    what: &str,
) -> Result<BTreeMap<String, T>, String> {
    let raw: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(value)
            .map_err(|e| format!("not a JSON map of name to {what}: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, mut obj) in raw {
        super::annotations::parse_dns_label(&name)
            .map_err(|e| format!("{what} name \"{}\": {e}", name.escape_debug()))?;
        obj.insert("name".into(), serde_json::Value::String(name.clone()));
        let parsed = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| format!("{what} {name}: {e}"))?;
        out.insert(name, parsed);
    }
    Ok(out)
}

/// The one rule for `holdApplicationUntilProxyStarts`, as Istio applies it: the pod's effective
/// ProxyConfig (mesh `defaultConfig` overlaid by `proxy.istio.io/config`) **or** the install-wide
/// proxy setting (`values.global.proxy`, Skjold's `spec.proxy`). A ProxyConfig `false` does not
/// turn off an install-wide `true` (Istio's `hello-probes-noProxyHoldApplication-ProxyConfig` case).
pub fn hold_application_until_proxy_starts(
    proxy_config: &serde_json::Map<String, serde_json::Value>,
    install_wide: bool,
) -> bool {
    install_wide
        || proxy_config
            .get("holdApplicationUntilProxyStarts")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
}

#[cfg(test)]
mod hold_tests {
    use super::hold_application_until_proxy_starts as hold;

    #[test]
    fn install_wide_or_proxy_config_as_istio() {
        let pc = |v: Option<bool>| {
            let mut m = serde_json::Map::new();
            if let Some(v) = v {
                m.insert("holdApplicationUntilProxyStarts".into(), v.into());
            }
            m
        };
        assert!(!hold(&pc(None), false));
        assert!(hold(&pc(None), true));
        assert!(hold(&pc(Some(true)), false));
        // A ProxyConfig `false` does not undo the install-wide setting (Istio ORs them).
        assert!(hold(&pc(Some(false)), true));
        assert!(!hold(&pc(Some(false)), false));
    }
}
