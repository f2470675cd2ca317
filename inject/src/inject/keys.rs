//! Annotation and label names (Istio's, verbatim) and the table of known keys used to warn on
//! unknown or deprecated `sidecar.istio.io/*` annotations.

/// Pod annotation choosing Istio's injection templates (comma-separated names).
pub const INJECT_TEMPLATES: &str = "inject.istio.io/templates";
/// Pod label naming the workload for telemetry (`ISTIO_META_WORKLOAD_NAME`).
pub const WORKLOAD_NAME_LABEL: &str = "service.istio.io/workload-name";
pub use crate::istio::INJECT_LABEL as INJECT;
pub const STATUS: &str = "sidecar.istio.io/status";
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
pub const PROXY_IMAGE_TYPE: &str = "sidecar.istio.io/proxyImageType";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
pub const COMPONENT_LOG_LEVEL: &str = "sidecar.istio.io/componentLogLevel";
pub const AGENT_LOG_LEVEL: &str = "sidecar.istio.io/agentLogLevel";
pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
pub const BOOTSTRAP_OVERRIDE: &str = "sidecar.istio.io/bootstrapOverride";
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
pub const CAP_NET_BIND_SERVICE: &str = "sidecar.istio.io/capNetBindService";

pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";

pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
pub const READINESS_INITIAL_DELAY: &str = "readiness.status.sidecar.istio.io/initialDelaySeconds";
pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
pub const READINESS_FAILURE_THRESHOLD: &str = "readiness.status.sidecar.istio.io/failureThreshold";

pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
/// A user's own `istio-proxy`/`istio-init` as merged over the injected one (re-applied on
/// re-injection).
pub const PROXY_OVERRIDES: &str = "proxy.istio.io/overrides";
pub const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";

pub const PROM_SCRAPE: &str = "prometheus.io/scrape";
pub const PROM_PORT: &str = "prometheus.io/port";
pub const PROM_PATH: &str = "prometheus.io/path";

pub use crate::istio::REVISION_LABEL as REV_ANNOTATION;
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";
/// Skjold's own record of the injector config hash, so stale pods can be found.
pub const CONFIG_HASH: &str = "skjold.io/injector-config-hash";

pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";

/// `sidecar.istio.io/*` and `traffic.sidecar.istio.io/*` keys that are read by the injector or
/// by the agent (so they must not be reported as unknown). Sorted for binary search.
const KNOWN: &[&str] = &[
    "sidecar.istio.io/agentLogLevel",
    "sidecar.istio.io/bootstrapOverride",
    "sidecar.istio.io/capNetBindService",
    "sidecar.istio.io/componentLogLevel",
    "sidecar.istio.io/inject",
    "sidecar.istio.io/interceptionMode",
    "sidecar.istio.io/logLevel",
    "sidecar.istio.io/nativeSidecar",
    "sidecar.istio.io/proxyCPU",
    "sidecar.istio.io/proxyCPULimit",
    "sidecar.istio.io/proxyImage",
    "sidecar.istio.io/proxyImageType",
    "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/proxyMemoryLimit",
    "sidecar.istio.io/rewriteAppHTTPProbers",
    "sidecar.istio.io/statsEvictionInterval",
    "sidecar.istio.io/statsFlushInterval",
    "sidecar.istio.io/statsHistogramBins",
    "sidecar.istio.io/statsHistogramBuckets",
    "sidecar.istio.io/status",
    "sidecar.istio.io/userVolume",
    "sidecar.istio.io/userVolumeMount",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/excludeInterfaces",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeOutboundPorts",
];

/// Deprecated or removed keys, with what to do instead. Sorted for binary search.
const DEPRECATED: &[(&str, &str)] = &[
    (
        "sidecar.istio.io/discoveryAddress",
        "deprecated and ignored; the discovery address comes from the mesh config",
    ),
    (
        "sidecar.istio.io/enableCoreDump",
        "removed in Istio 1.24 and ignored",
    ),
    (
        "sidecar.istio.io/extraStatTags",
        "deprecated and ignored; use the Telemetry API",
    ),
    (
        "sidecar.istio.io/statsCompression",
        "deprecated and ignored",
    ),
    (
        "sidecar.istio.io/statsInclusionPrefixes",
        "deprecated and ignored; use proxy.istio.io/config proxyStatsMatcher",
    ),
    (
        "sidecar.istio.io/statsInclusionRegexps",
        "deprecated and ignored; use proxy.istio.io/config proxyStatsMatcher",
    ),
    (
        "sidecar.istio.io/statsInclusionSuffixes",
        "deprecated and ignored; use proxy.istio.io/config proxyStatsMatcher",
    ),
    (
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        "deprecated; use istio.io/reroute-virtual-interfaces (still honoured)",
    ),
];

/// Whether a key is in one of the annotation families a Namespace may default for its pods.
pub fn inherits_from_namespace(key: &str) -> bool {
    key != STATUS
        && (key.starts_with("sidecar.istio.io/")
            || key.starts_with("traffic.sidecar.istio.io/")
            || key == PROXY_CONFIG)
}

/// Whether a key belongs to the families we check for typos.
pub fn is_checked_family(key: &str) -> bool {
    key.starts_with("sidecar.istio.io/") || key.starts_with("traffic.sidecar.istio.io/")
}

/// Classification of a key in a checked family.
pub enum KeyKind {
    Known,
    Deprecated(&'static str),
    Unknown,
}

/// Looks a key up in the known and deprecated tables.
pub fn classify(key: &str) -> KeyKind {
    if KNOWN.binary_search(&key).is_ok() {
        return KeyKind::Known;
    }
    match DEPRECATED.binary_search_by(|(k, _)| k.cmp(&key)) {
        Ok(i) => KeyKind::Deprecated(DEPRECATED[i].1),
        Err(_) => KeyKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted() {
        assert!(KNOWN.windows(2).all(|w| w[0] < w[1]));
        assert!(DEPRECATED.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn classify_keys() {
        assert!(matches!(classify(PROXY_CPU), KeyKind::Known));
        assert!(matches!(
            classify("sidecar.istio.io/proxyCpu"),
            KeyKind::Unknown
        ));
        assert!(matches!(
            classify(KUBEVIRT_INTERFACES),
            KeyKind::Deprecated(_)
        ));
    }
}
