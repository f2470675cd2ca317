//! Fuzz harnesses for skjold-inject: one function per libFuzzer target.
//!
//! Each function takes the raw fuzzer bytes and drives the same public code path the server
//! uses, then checks invariants that must hold for every input (the response encodes, a patch
//! applies to the pod it was computed for, injecting the patched pod again is a no-op, error
//! messages render). A violated invariant panics, which libFuzzer reports as a crash.
//!
//! This file is also compiled into `inject/tests/fuzz_regressions.rs` (via `#[path]`), which
//! replays every saved input under `fuzz/regressions/<target>/` on stable Rust in `cargo test`,
//! so it may only use crates that are dependencies of skjold-inject.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use skjold_inject::admission;
use skjold_inject::config::{InjectorConfig, PreparedConfig};
use skjold_inject::inject::{self, InjectRequest, NamespaceInfo, Outcome, Reason, annotations};
use skjold_inject::inject::{iptables, keys};
use skjold_inject::verdict::{self, Lookup};

/// One fuzz target: it panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name: the directory names under `fuzz/regressions/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("admission_inject", admission_inject),
    ("annotation_parsers", annotation_parsers),
    ("inject_annotations", inject_annotations),
];

/// Istio's defaults (policy `enabled`), built once.
fn config() -> &'static PreparedConfig {
    static CONFIG: OnceLock<PreparedConfig> = OnceLock::new();
    CONFIG.get_or_init(PreparedConfig::default)
}

/// Target `admission_inject`: the whole admission path of one request body through
/// [`verdict::respond`], the function the webhook's handler calls (with fixed lookups instead of
/// the watch caches): decode the AdmissionReview, decide, encode the response. A body that
/// decodes always gets an answer for its uid; the injector never panics (`InternalError`); a
/// patch it sends applies to the pod and re-injection of the result is a no-op.
pub fn admission_inject(data: &[u8]) {
    let lookup = lookup();
    let Ok((verdict, out)) = verdict::respond(data, "", lookup) else {
        return;
    };
    assert_ne!(
        verdict.kind,
        verdict::Kind::InternalError,
        "injector fault: {:?}",
        verdict.fault
    );
    let review = admission::decode(data).expect("respond decoded it");
    let v: Value = serde_json::from_slice(&out).expect("the response is JSON");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], review.uid.as_str());
    assert_eq!(
        v["response"]["allowed"],
        verdict.kind != verdict::Kind::Denied,
        "allowed matches the verdict"
    );
    if verdict.kind == verdict::Kind::Injected
        && let Ok(pod) = review.pod()
    {
        let namespace = lookup.namespace(review.namespace_of(&pod));
        inject_checked(&pod, &namespace).expect("the injector agrees with the verdict");
    }
}

/// The fuzzed namespaces: every one labelled `istio-injection=enabled`, Istio's defaults.
fn lookup() -> &'static verdict::Fixed {
    static LOOKUP: OnceLock<verdict::Fixed> = OnceLock::new();
    LOOKUP.get_or_init(|| {
        let mut fixed = verdict::Fixed::new(config().clone());
        fixed.namespace.labels.insert(
            skjold_inject::istio::NAMESPACE_INJECTION_LABEL.into(),
            "enabled".into(),
        );
        fixed
    })
}

/// Runs the injector, checks its invariants and returns the outcome (or the refusal message).
pub fn inject_checked(pod: &Pod, namespace: &NamespaceInfo) -> Result<Outcome, String> {
    let request = InjectRequest {
        pod,
        namespace,
        config: config(),
        nodes: skjold_inject::inject::NodeSupport::Unknown,
    };
    let outcome = match inject::inject(&request) {
        Ok(outcome) => outcome,
        Err(err) => {
            let message = err.to_string();
            assert!(!message.is_empty());
            assert!(!err.reason().is_empty());
            return Err(message);
        }
    };
    assert!(
        outcome.warnings.len() <= inject::MAX_KEY_WARNINGS + 4,
        "warnings are bounded: {:?}",
        outcome.warnings
    );
    if outcome.reason != Reason::Injected {
        assert!(outcome.patch.0.is_empty(), "no patch without injection");
        return Ok(outcome);
    }
    assert!(!outcome.patch.0.is_empty(), "an injection has a patch");
    // The patch must apply to the very object it was computed for ...
    let mut doc = serde_json::to_value(pod).expect("a pod serializes");
    json_patch::patch(&mut doc, &outcome.patch)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\npatch: {:?}", outcome.patch));
    // ... and the result must be a pod the injector recognises as injected (idempotence under
    // the API server's reinvocationPolicy: IfNeeded).
    let patched: Pod = serde_json::from_value(doc).expect("the patched pod is a pod");
    let again = inject::inject(&InjectRequest {
        pod: &patched,
        namespace,
        config: config(),
        nodes: skjold_inject::inject::NodeSupport::Unknown,
    })
    .unwrap_or_else(|e| panic!("re-injection of the patched pod refused: {e}"));
    assert_eq!(
        again.reason,
        Reason::AlreadyInjected,
        "re-injection: {:?}",
        again.patch
    );
    assert!(again.patch.0.is_empty());
    Ok(outcome)
}

/// Target `annotation_parsers`: the first byte picks a parser, the rest (UTF-8, as annotation
/// values always are) is its input.
pub fn annotation_parsers(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    let ok_or_problem = |r: Result<(), String>| {
        if let Err(problem) = r {
            assert!(!problem.is_empty(), "a refusal names its problem");
        }
    };
    match selector % 23 {
        0 => ok_or_problem(annotations::parse_quantity(value).map(|q| {
            // Deterministic and exact: parsing the same text twice gives the same value.
            assert_eq!(annotations::parse_quantity(value).ok(), Some(q));
        })),
        1 => ok_or_problem(annotations::parse_resource_quantity(value).map(|q| {
            assert!(
                q.nanos() >= 0,
                "a resource quantity is not negative: {value:?}"
            );
        })),
        2 => ok_or_problem(annotations::parse_bool(value).map(drop)),
        3 => ok_or_problem(annotations::parse_port(value).map(drop)),
        4 => ok_or_problem(annotations::parse_port_list(value).map(|ports| {
            assert!(ports.len() <= annotations::MAX_LIST_ITEMS);
        })),
        5 => ok_or_problem(annotations::parse_port_selection(value).map(drop)),
        6 => ok_or_problem(annotations::parse_cidr(value).map(drop)),
        7 => ok_or_problem(annotations::parse_cidr_list(value).map(|cidrs| {
            assert!(cidrs.len() <= annotations::MAX_LIST_ITEMS);
        })),
        8 => ok_or_problem(annotations::parse_cidr_selection(value).map(drop)),
        9 => ok_or_problem(annotations::parse_interface_list(value).map(|list| {
            assert!(list.len() <= annotations::MAX_LIST_ITEMS);
        })),
        10 => ok_or_problem(annotations::parse_envoy_log_level(value).map(drop)),
        11 => ok_or_problem(annotations::parse_component_log_level(value).map(drop)),
        12 => ok_or_problem(annotations::parse_agent_log_level(value).map(drop)),
        13 => ok_or_problem(annotations::parse_non_negative_i32(value).map(|n| {
            assert!(n >= 0, "{value:?} -> {n}");
        })),
        14 => ok_or_problem(annotations::parse_status_port(value).map(drop)),
        15 => ok_or_problem(annotations::parse_image(value).map(drop)),
        16 => ok_or_problem(annotations::parse_dns_subdomain(value).map(|s| {
            assert!(s.len() <= 253, "{s:?}");
        })),
        17 => ok_or_problem(annotations::parse_dns_label(value).map(|s| {
            assert!(s.len() <= 63, "{s:?}");
        })),
        18 => ok_or_problem(annotations::parse_proxy_config(value).map(drop)),
        19 => ok_or_problem(annotations::parse_interception_mode(value).map(drop)),
        20 => ok_or_problem(annotations::parse_image_type(value).map(drop)),
        21 => {
            let port = u16::from(rest.first().copied().unwrap_or(0)) * 97;
            let _ = iptables::exclude_inbound_ports(value, port);
        }
        _ => {
            // The injector config comes from a ConfigMap anyone with edit rights can write.
            if let Ok(config) = InjectorConfig::from_yaml(value) {
                let _ = config.validate().map_err(|e| e.to_string());
                let _ = config.hash();
                // What loads into the webhook's cache: prepared, or refused with a message.
                if let Err(err) = PreparedConfig::new(config) {
                    assert!(!err.to_string().is_empty());
                }
            } else if let Err(err) = InjectorConfig::from_yaml(value) {
                assert!(!err.to_string().is_empty());
            }
        }
    }
}

/// Every annotation key the injector reads, so fuzzed lines can name one by index.
const KEYS: &[&str] = &[
    keys::INJECT,
    keys::STATUS,
    keys::PROXY_CPU,
    keys::PROXY_MEMORY,
    keys::PROXY_CPU_LIMIT,
    keys::PROXY_MEMORY_LIMIT,
    keys::PROXY_IMAGE,
    keys::PROXY_IMAGE_TYPE,
    keys::INTERCEPTION_MODE,
    keys::REWRITE_PROBES,
    keys::LOG_LEVEL,
    keys::COMPONENT_LOG_LEVEL,
    keys::AGENT_LOG_LEVEL,
    keys::USER_VOLUME,
    keys::USER_VOLUME_MOUNT,
    keys::BOOTSTRAP_OVERRIDE,
    keys::NATIVE_SIDECAR,
    keys::CAP_NET_BIND_SERVICE,
    keys::INCLUDE_OUTBOUND_IP_RANGES,
    keys::EXCLUDE_OUTBOUND_IP_RANGES,
    keys::INCLUDE_INBOUND_PORTS,
    keys::EXCLUDE_INBOUND_PORTS,
    keys::INCLUDE_OUTBOUND_PORTS,
    keys::EXCLUDE_OUTBOUND_PORTS,
    keys::EXCLUDE_INTERFACES,
    keys::KUBEVIRT_INTERFACES,
    keys::REROUTE_VIRTUAL_INTERFACES,
    keys::STATUS_PORT,
    keys::READINESS_INITIAL_DELAY,
    keys::READINESS_PERIOD,
    keys::READINESS_FAILURE_THRESHOLD,
    keys::PROXY_CONFIG,
    keys::MERGE_METRICS,
    keys::PROM_SCRAPE,
    keys::PROM_PORT,
    keys::PROM_PATH,
    keys::REV_ANNOTATION,
    keys::DEFAULT_CONTAINER,
    keys::DEFAULT_LOGS_CONTAINER,
];

/// Target `inject_annotations`: a typical pod whose annotations come from the fuzzer, one
/// `KEY=VALUE` per line; a numeric `KEY` names `KEYS[KEY]`. A line starting with `ns:` sets a
/// namespace annotation instead (the namespace-default source).
pub fn inject_annotations(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut pod_annotations = BTreeMap::new();
    let mut ns_annotations = BTreeMap::new();
    for line in text.split('\n') {
        let (target, line) = match line.strip_prefix("ns:") {
            Some(rest) => (&mut ns_annotations, rest),
            None => (&mut pod_annotations, line),
        };
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = match key.parse::<usize>() {
            Ok(i) => KEYS[i % KEYS.len()].to_string(),
            Err(_) => key.to_string(),
        };
        target.insert(key, value.to_string());
    }
    let pod: Pod =
        serde_json::from_value(typical_pod(pod_annotations)).expect("the typical pod is a pod");
    let namespace = NamespaceInfo {
        name: "shop".into(),
        labels: BTreeMap::new(),
        annotations: ns_annotations,
    };
    let _ = inject_checked(&pod, &namespace);
}

/// A Deployment pod with probes, ports and a service-account volume, as the API server sends it.
pub fn typical_pod(annotations: BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c6b5-",
            "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5",
                                 "uid": "6b0c3f47-1f8d-4f0e-9a55-0d5b7b2f4a11", "controller": true}]
        },
        "spec": {
            "serviceAccountName": "web",
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}},
                "startupProbe": {"tcpSocket": {"port": 8080}},
                "lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 8080}}}
            }],
            "initContainers": [{"name": "migrate", "image": "busybox", "restartPolicy": "Always",
                                "readinessProbe": {"httpGet": {"path": "/r", "port": 9000}}}],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]
        }
    })
}
