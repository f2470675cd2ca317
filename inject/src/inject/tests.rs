//! Unit tests of the public surface: patch shape, idempotency, limits and error reporting.

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;
use crate::config::{InjectorConfig, PreparedConfig};

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("valid pod")
}

fn ns(name: &str) -> NamespaceInfo {
    NamespaceInfo {
        name: name.into(),
        labels: BTreeMap::from([("istio-injection".into(), "enabled".into())]),
        annotations: BTreeMap::new(),
    }
}

fn run(p: &Pod, config: &InjectorConfig) -> Result<Outcome, InjectError> {
    inject(&InjectRequest {
        pod: p,
        namespace: &ns("demo"),
        config: &PreparedConfig::new(config.clone()).expect("a valid config"),
        nodes: crate::inject::NodeSupport::Unknown,
    })
}

fn op_paths(o: &Outcome) -> Vec<String> {
    o.patch
        .0
        .iter()
        .map(|op| match op {
            PatchOperation::Add(a) => format!("add {}", a.path),
            PatchOperation::Replace(r) => format!("replace {}", r.path),
            PatchOperation::Remove(r) => format!("remove {}", r.path),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn patch_applies_to_bare_pod_and_creates_metadata_maps() {
    let input =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "a"}]}});
    let p = pod(input.clone());
    let out = run(&p, &InjectorConfig::default()).unwrap();
    assert_eq!(out.reason, Reason::Injected);
    let paths = op_paths(&out);
    assert!(
        paths.contains(&"add /metadata/annotations".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"add /metadata/labels".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"add /spec/initContainers".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"add /spec/containers/1".to_string()),
        "{paths:?}"
    );
    let patched = injected(&input, &out);
    assert_eq!(
        names(&patched["spec"]["containers"]),
        ["app", "istio-proxy"]
    );
    assert_eq!(
        patched["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    assert_eq!(
        patched["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "app"
    );
    let status: Value = serde_json::from_str(
        patched["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["containers"], json!(["istio-proxy"]));
    assert_eq!(status["initContainers"], json!(["istio-init"]));
    assert_eq!(status["revision"], "default");
}

#[test]
fn hold_inserts_proxy_first_with_a_single_add() {
    let mut config = InjectorConfig::default();
    config.proxy.hold_application_until_proxy_starts = true;
    let input =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let out = run(&pod(input.clone()), &config).unwrap();
    let paths = op_paths(&out);
    assert!(
        paths.contains(&"add /spec/containers/0".to_string()),
        "{paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("replace /spec/containers")),
        "{paths:?}"
    );
    let mut patched = input;
    json_patch::patch(&mut patched, &out.patch).unwrap();
    assert_eq!(patched["spec"]["containers"][0]["name"], "istio-proxy");
    assert_eq!(
        patched["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"],
        json!(["pilot-agent", "wait"])
    );
    assert_eq!(patched["spec"]["containers"][1]["name"], "a");
}

#[test]
fn reinjection_is_idempotent() {
    let input =
        json!({"metadata": {"generateName": "w-"}, "spec": {"containers": [{"name": "a"}]}});
    let config = InjectorConfig::default();
    let patched = injected(&input, &run(&pod(input.clone()), &config).unwrap());
    let second = run(&pod(patched), &config).unwrap();
    assert_eq!(second.reason, Reason::AlreadyInjected);
    assert!(second.patch.0.is_empty());
}

/// A webhook reinvocation after the API server's ServiceAccount plugin mounted its token into the
/// injected containers: nothing to change (the mount stays).
#[test]
fn reinjection_keeps_what_others_added_to_the_injected_containers() {
    let input = json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]}});
    let config = InjectorConfig::default();
    let mut patched = injected(&input, &run(&pod(input.clone()), &config).unwrap());
    let sa_mount = json!({"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true});
    for list in ["containers", "initContainers"] {
        for c in patched["spec"][list].as_array_mut().unwrap() {
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.push(sa_mount.clone());
            }
        }
    }
    patched["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "kube-api-access-x", "projected": {"sources": []}}));
    let second = run(&pod(patched), &config).unwrap();
    assert_eq!(second.reason, Reason::AlreadyInjected, "{:?}", second.patch);
    assert!(second.patch.0.is_empty());
}

/// The reinvocation sees the pod as the API server decoded it: quantities canonical (`2000m` is
/// `2`, `1024Mi` is `1Gi`). That is no change either.
#[test]
fn reinjection_ignores_canonical_quantity_spelling() {
    let input = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    let config = InjectorConfig::default();
    let mut patched = injected(&input, &run(&pod(input.clone()), &config).unwrap());
    for list in ["containers", "initContainers"] {
        for c in patched["spec"][list].as_array_mut().unwrap() {
            if c["name"] == "a" {
                continue;
            }
            c["resources"]["limits"]["cpu"] = json!("2");
            c["resources"]["limits"]["memory"] = json!("1Gi");
        }
    }
    let second = run(&pod(patched), &config).unwrap();
    assert_eq!(second.reason, Reason::AlreadyInjected, "{:?}", second.patch);
}

/// ... and with the API server's volume defaults (`defaultMode`, a fieldRef's `apiVersion`).
#[test]
fn reinjection_ignores_the_api_servers_volume_defaults() {
    let input = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    let config = InjectorConfig::default();
    let mut patched = injected(&input, &run(&pod(input.clone()), &config).unwrap());
    for v in patched["spec"]["volumes"].as_array_mut().unwrap() {
        for src in ["configMap", "projected", "downwardAPI"] {
            if v[src].is_object() {
                v[src]["defaultMode"] = json!(420);
            }
        }
        if let Some(items) = v
            .get_mut("downwardAPI")
            .and_then(|d| d.get_mut("items"))
            .and_then(Value::as_array_mut)
        {
            for item in items {
                item["fieldRef"]["apiVersion"] = json!("v1");
            }
        }
    }
    let second = run(&pod(patched), &config).unwrap();
    assert_eq!(second.reason, Reason::AlreadyInjected, "{:?}", second.patch);
}

/// The same for a grpc-agent pod, whose app containers the template renders too: the token mount
/// the ServiceAccount plugin put into the app containers stays.
#[test]
fn grpc_reinjection_keeps_what_others_added_to_the_app_containers() {
    let input = json!({"metadata": {"name": "p", "annotations": {"inject.istio.io/templates": "grpc-agent"}},
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
    let config = InjectorConfig::default();
    let mut patched = injected(&input, &run(&pod(input.clone()), &config).unwrap());
    let sa_mount = json!({"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true});
    for c in patched["spec"]["containers"].as_array_mut().unwrap() {
        if let Some(m) = c["volumeMounts"].as_array_mut() {
            m.push(sa_mount.clone());
        }
    }
    let second = run(&pod(patched), &config).unwrap();
    assert_eq!(second.reason, Reason::AlreadyInjected, "{:?}", second.patch);
}

/// A webhook reinvocation after another webhook added a container: the proxy is re-rendered for
/// it (its name in ISTIO_META_APP_CONTAINERS, its probe rewritten), the first app's rewritten
/// probe keeps its original, and the result is stable.
#[test]
fn reinjection_renders_for_a_container_added_since() {
    let input = json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]}});
    let config = InjectorConfig::default();
    let mut patched = injected(&input, &run(&pod(input.clone()), &config).unwrap());
    patched["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "vault-agent", "livenessProbe": {"tcpSocket": {"port": 8200}}}));
    let second = run(&pod(patched.clone()), &config).unwrap();
    assert_eq!(second.reason, Reason::Injected);
    json_patch::patch(&mut patched, &second.patch).unwrap();
    let names: Vec<&str> = patched["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["a", "vault-agent", "istio-proxy"],
        "the proxy stays last"
    );
    let proxy = &patched["spec"]["containers"][2];
    let env = |n: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .map(|e| e["value"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(env("ISTIO_META_APP_CONTAINERS"), "a,vault-agent");
    let probers: Value = serde_json::from_str(&env("ISTIO_KUBE_APP_PROBERS")).unwrap();
    assert_eq!(
        probers["/app-health/a/readyz"]["httpGet"]["port"], 8080,
        "{probers}"
    );
    assert_eq!(
        probers["/app-health/vault-agent/livez"]["tcpSocket"]["port"], 8200,
        "{probers}"
    );
    assert_eq!(
        patched["spec"]["containers"][1]["livenessProbe"]["httpGet"]["port"],
        15020
    );
    let third = run(&pod(patched), &config).unwrap();
    assert_eq!(third.reason, Reason::AlreadyInjected, "{:?}", third.patch);
}

#[test]
fn not_injected_means_empty_patch_and_explained() {
    let p = pod(
        json!({"metadata": {"name": "p", "labels": {"sidecar.istio.io/inject": "false"}},
                       "spec": {"containers": [{"name": "a"}]}}),
    );
    let out = run(&p, &InjectorConfig::default()).unwrap();
    assert_eq!(out.reason, Reason::DisabledByLabel);
    assert!(out.patch.0.is_empty());
    assert!(
        out.explanation
            .iter()
            .any(|s| s.contains("namespace demo: not in ignored namespaces"))
    );
    assert_eq!(
        out.explanation.last().map(String::as_str),
        Some("decision: disabled-by-label")
    );
}

#[test]
fn errors_are_aggregated_and_labelled() {
    let p = pod(json!({"metadata": {"name": "p", "annotations": {
        "sidecar.istio.io/proxyCPU": "lots",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0/8"}},
        "spec": {"containers": [{"name": "a"}]}}));
    let err = run(&p, &InjectorConfig::default()).unwrap_err();
    assert_eq!(err.reason(), "invalid-annotation");
    let msg = err.to_string();
    assert!(msg.starts_with("invalid sidecar annotations: "), "{msg}");
    assert!(
        msg.contains("sidecar.istio.io/proxyCPU=\"lots\": not a valid Kubernetes quantity"),
        "{msg}"
    );
    assert!(
        msg.contains("traffic.sidecar.istio.io/excludeOutboundIPRanges=\"10.0.0/8\""),
        "{msg}"
    );
}

#[test]
fn hostile_input_is_refused_without_panic() {
    let containers: Vec<Value> = (0..=MAX_CONTAINERS)
        .map(|i| json!({"name": format!("c{i}")}))
        .collect();
    let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}));
    let err = run(&p, &InjectorConfig::default()).unwrap_err();
    assert_eq!(err.reason(), "invalid-pod");
    assert!(err.to_string().contains("101 containers"), "{err}");

    let huge = "1".repeat(annotations::MAX_ANNOTATION_VALUE_BYTES + 1);
    let p = pod(
        json!({"metadata": {"name": "p", "annotations": {"traffic.sidecar.istio.io/excludeInboundPorts": huge}},
                       "spec": {"containers": [{"name": "a"}]}}),
    );
    let msg = run(&p, &InjectorConfig::default()).unwrap_err().to_string();
    assert!(msg.contains("65537 bytes"), "{msg}");
    assert!(
        msg.len() < 400,
        "message must not echo the whole value: {} bytes",
        msg.len()
    );

    let p = pod(json!({"metadata": {"name": "p"}}));
    assert_eq!(
        run(&p, &InjectorConfig::default()).unwrap_err().reason(),
        "invalid-pod"
    );
}

#[test]
fn bad_selector_operator_is_a_config_error() {
    let yaml = "neverInjectSelector:\n- matchExpressions: [{key: a, operator: Maybe}]\n";
    // Refused when the config is loaded (the webhook's cache keeps the last good config) ...
    let e = InjectorConfig::from_yaml(yaml).unwrap_err().to_string();
    assert!(
        e.contains("neverInjectSelector[0].matchExpressions[0]"),
        "{e}"
    );
    // ... and a config built without parsing cannot reach an admission: the injector takes only
    // a prepared config, and preparing refuses it with the same field.
    let config: InjectorConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let e = PreparedConfig::new(config).unwrap_err().to_string();
    assert!(
        e.contains("neverInjectSelector[0].matchExpressions[0]") && e.contains("Maybe"),
        "{e}"
    );
}

#[test]
fn a_default_resource_that_does_not_parse_is_refused_when_prepared() {
    let mut config = InjectorConfig::default();
    config.proxy.resources.limits.memory = "lots".into();
    let e = match PreparedConfig::new(config) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unparseable default limit was accepted"),
    };
    assert!(
        e.contains("proxy.resources.limits.memory") && e.contains("lots"),
        "{e}"
    );
    let prepared = PreparedConfig::default();
    assert_eq!(prepared.hash(), InjectorConfig::default().hash());
    assert!(prepared.default_resources().cpu_request.is_some());
}

#[test]
fn reasons_are_kebab_case_and_distinct() {
    let names: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
    assert!(
        names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
    );
}

#[test]
fn warnings_stay_short_for_kubectl() {
    let long = "y".repeat(10_000);
    let p = pod(json!({"metadata": {"name": "p", "annotations": {
        "sidecar.istio.io/inject": long, "sidecar.istio.io/proxyImage": "x".repeat(1000)}},
        "spec": {"containers": [{"name": "a"}]}}));
    let out = run(&p, &InjectorConfig::default()).unwrap();
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(
        out.warnings.iter().all(|w| w.len() <= 256),
        "{:?}",
        out.warnings
    );
}

#[test]
fn unknown_key_warnings_are_capped() {
    let annotations: serde_json::Map<String, Value> = (0..50)
        .map(|i| {
            (
                format!("sidecar.istio.io/typo{i}"),
                Value::String("x".into()),
            )
        })
        .collect();
    let p = pod(
        json!({"metadata": {"name": "p", "annotations": annotations},
                       "spec": {"containers": [{"name": "a"}]}}),
    );
    let out = run(&p, &InjectorConfig::default()).unwrap();
    assert_eq!(
        out.warnings.len(),
        MAX_KEY_WARNINGS + 1,
        "{:?}",
        out.warnings
    );
    assert!(
        out.warnings.last().unwrap().starts_with("40 more"),
        "{:?}",
        out.warnings
    );
    assert!(
        out.explanation
            .iter()
            .any(|e| e.contains("requests cpu=100m memory=128Mi, limits cpu=2000m memory=1024Mi")),
        "{:?}",
        out.explanation
    );
}

/// Throughput check; run with `cargo test --release -p skjold-webhook --lib perf -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn perf_typical_pod() {
    let p = pod(json!({
        "metadata": {"generateName": "web-7d4b9c-", "namespace": "demo",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                            "sidecar.istio.io/proxyCPU": "200m"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                 "uid": "u", "controller": true}]},
        "spec": {"containers": [{"name": "web", "image": "nginx",
            "ports": [{"containerPort": 8080, "name": "http"}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "resources": {"requests": {"cpu": "100m"}}}]}
    }));
    let config = InjectorConfig::default();
    let n = 20_000;
    let cpu_before = thread_cpu_ns();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        let out = run(&p, &config).unwrap();
        samples.push(t.elapsed());
        assert_eq!(out.reason, Reason::Injected);
    }
    if let (Some(a), Some(b)) = (cpu_before, thread_cpu_ns()) {
        println!(
            "inject(): mean on-CPU time {} ns (unaffected by other load)",
            (b - a) / n as u64
        );
    }
    samples.sort();
    let total: std::time::Duration = samples.iter().sum();
    println!(
        "inject(): n={n} mean={:?} p50={:?} p99={:?} max={:?} => {:.0}/s single core",
        total / n as u32,
        samples[n / 2],
        samples[n * 99 / 100],
        samples[n - 1],
        n as f64 / total.as_secs_f64()
    );
}

/// Breakdown of the main costs; run like `perf_typical_pod`.
#[test]
#[ignore = "timing; run in release"]
fn perf_breakdown() {
    let config = InjectorConfig::default();
    let n = 20_000u32;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(config.hash());
    }
    println!("config.hash(): {:?}", t.elapsed() / n);
    let p = pod(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "a"}]}}),
    );
    let out = run(&p, &config).unwrap();
    let mut patched = serde_json::to_value(&p).unwrap();
    json_patch::patch(&mut patched, &out.patch).unwrap();
    let injected: Pod = serde_json::from_value(patched).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_value(&injected).unwrap());
    }
    println!("to_value(injected pod): {:?}", t.elapsed() / n);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(injected.clone());
    }
    println!("clone(injected pod): {:?}", t.elapsed() / n);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(run(&p, &config).unwrap());
    }
    println!("inject(minimal pod): {:?}", t.elapsed() / n);
}

/// This thread's on-CPU time in ns (Linux `schedstat`), to measure despite a busy machine.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `name`s of a container list.
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect()
}

/// The injected pod: the patch applied to the input.
fn injected(input: &Value, out: &Outcome) -> Value {
    let mut v = input.clone();
    json_patch::patch(&mut v, &out.patch).expect("patch applies");
    v
}

#[test]
fn a_users_resource_value_drops_the_conflicting_default_with_a_warning() {
    let input = json!({"metadata": {"name": "p", "annotations": {
        "sidecar.istio.io/proxyCPU": "4000m",
        "sidecar.istio.io/proxyMemoryLimit": "64Mi"}},
        "spec": {"containers": [{"name": "app", "image": "a"}]}});
    let out = run(&pod(input.clone()), &InjectorConfig::default()).unwrap();
    let pod = injected(&input, &out);
    let proxy = &pod["spec"]["containers"][1]["resources"];
    assert_eq!(proxy["requests"]["cpu"], "4000m");
    assert_eq!(proxy["limits"].get("cpu"), None, "{proxy}");
    assert_eq!(proxy["limits"]["memory"], "64Mi");
    assert_eq!(proxy["requests"].get("memory"), None, "{proxy}");
    assert_eq!(
        out.warnings
            .iter()
            .filter(|w| w.contains("is dropped"))
            .count(),
        2,
        "{:?}",
        out.warnings
    );
    // The user's own request above the user's own limit is still refused, naming both.
    let both = pod_with(&[
        ("sidecar.istio.io/proxyCPU", "2"),
        ("sidecar.istio.io/proxyCPULimit", "1"),
    ]);
    let err = run(&both, &InjectorConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("proxyCPU=\"2\"") && err.contains("proxyCPULimit"),
        "{err}"
    );
}

fn pod_with(annotations: &[(&str, &str)]) -> Pod {
    let a: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    pod(json!({"metadata": {"name": "p", "annotations": a},
        "spec": {"containers": [{"name": "app", "image": "a"}]}}))
}

#[test]
fn interception_none_adds_no_istio_init_even_as_native_sidecar() {
    let mut config = InjectorConfig::default();
    config.proxy.native_sidecar = Some(true);
    let p = pod_with(&[("sidecar.istio.io/interceptionMode", "NONE")]);
    let input = serde_json::to_value(&p).unwrap();
    let out = run(&p, &config).unwrap();
    let pod = injected(&input, &out);
    assert_eq!(names(&pod["spec"]["initContainers"]), ["istio-proxy"]);
}

#[test]
fn metrics_merge_clears_every_spelling_and_honours_false() {
    let off = pod_with(&[("prometheus.io.scrape", "false")]);
    let out = run(&off, &InjectorConfig::default()).unwrap();
    assert!(
        !op_paths(&out)
            .iter()
            .any(|p| p.contains("prometheus.io~1port"))
    );
    let on = pod_with(&[("prometheus-io/path", "/m"), ("prometheus.io/port", "9090")]);
    let input = serde_json::to_value(&on).unwrap();
    let out = run(&on, &InjectorConfig::default()).unwrap();
    let pod = injected(&input, &out);
    let a = pod["metadata"]["annotations"].as_object().unwrap();
    assert!(!a.contains_key("prometheus-io/path"), "{a:?}");
    assert_eq!(a["prometheus.io/port"], "15020");
    assert_eq!(a["prometheus.io/path"], "/stats/prometheus");
    let env = pod["spec"]["containers"][1]["env"].as_array().unwrap();
    let prom = env
        .iter()
        .find(|e| e["name"] == "ISTIO_PROMETHEUS_ANNOTATIONS")
        .unwrap();
    let v: Value = serde_json::from_str(prom["value"].as_str().unwrap()).unwrap();
    assert_eq!(v["path"], "/m");
    assert_eq!(v["port"], "9090");
}

#[test]
fn an_unknown_injection_template_is_refused_by_name() {
    let p = pod_with(&[("inject.istio.io/templates", "sidecar,mytemplate")]);
    let err = run(&p, &InjectorConfig::default()).unwrap_err().to_string();
    assert!(
        err.contains("inject.istio.io/templates") && err.contains("mytemplate"),
        "{err}"
    );
    // Istio's templates that are not built in yet are named in a warning.
    let p = pod_with(&[("inject.istio.io/templates", "waypoint")]);
    let out = run(&p, &InjectorConfig::default()).unwrap();
    assert!(
        out.warnings.iter().any(|w| w.contains("waypoint")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn the_gateway_template_cannot_be_combined_with_the_sidecar() {
    let p = pod_with(&[("inject.istio.io/templates", "gateway, sidecar")]);
    let err = run(&p, &InjectorConfig::default()).unwrap_err().to_string();
    assert!(
        err.contains("inject.istio.io/templates") && err.contains("cannot be combined"),
        "{err}"
    );
    // Repeating one template is that template.
    let p = pod_with(&[("inject.istio.io/templates", "gateway,gateway")]);
    let out = run(&p, &InjectorConfig::default()).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn native_sidecars_follow_istios_auto_rule_on_the_nodes() {
    use crate::inject::{NodeSupport, kubelet_supports_native_sidecars};
    for (v, native) in [
        ("v1.34.4", true),
        ("v1.33.0-eks-4f4795d", true),
        ("v1.32.9", false),
        ("1.33", true),
        ("v2.0.0", true),
        ("", false),
        ("garbage", false),
    ] {
        assert_eq!(kubelet_supports_native_sidecars(v), native, "{v}");
    }
    let p = pod_with(&[]);
    let config = InjectorConfig::default();
    let shape = |nodes: NodeSupport, config: &InjectorConfig, p: &Pod| {
        let out = inject(&InjectRequest {
            pod: p,
            namespace: &ns("demo"),
            config: &PreparedConfig::new(config.clone()).expect("a valid config"),
            nodes,
        })
        .unwrap();
        let s = serde_json::to_string(&out.patch).unwrap();
        s.contains("\"restartPolicy\":\"Always\"")
    };
    // Unset config: auto. Native only when every node is known to run native sidecars.
    assert!(shape(NodeSupport::NativeSidecars, &config, &p));
    assert!(!shape(NodeSupport::Classic, &config, &p));
    assert!(!shape(NodeSupport::Unknown, &config, &p));
    // The config decides over the nodes, and the pod's annotation over both.
    let mut classic = InjectorConfig::default();
    classic.proxy.native_sidecar = Some(false);
    assert!(!shape(NodeSupport::NativeSidecars, &classic, &p));
    let annotated = pod_with(&[("sidecar.istio.io/nativeSidecar", "true")]);
    assert!(shape(NodeSupport::Classic, &classic, &annotated));
}
