//! Golden tests: `tests/golden/<case>.input.yaml` -> `tests/golden/<case>.expected.yaml`.
//!
//! An input holds `namespace` (name, labels, annotations), an optional `config`
//! (InjectorConfig) and the `pod` as the API server would send it. The expected file records the
//! reason, the warnings and either the injected pod (the patch applied to the input) or the
//! refusal message. `tests/golden/offline/*.input.yaml` run through `workload::inject_documents`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p skjold-inject --test golden` rewrites the expected files;
//! review the diff before committing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use pretty_assertions::assert_eq;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skjold_inject::config::PreparedConfig;
use skjold_inject::inject::{InjectRequest, NamespaceInfo, Reason, inject};
use skjold_inject::workload::{OfflineOptions, inject_documents};

/// Placeholder for the config hash, so expected files survive unrelated config additions.
const HASH_PLACEHOLDER: &str = "<config-hash>";
const HASH_KEY: &str = "skjold.io/injector-config-hash";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    namespace: Namespace,
    #[serde(default)]
    config: Option<Value>,
    pod: Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Namespace {
    #[serde(default = "default_ns")]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn default_ns() -> String {
    "demo".into()
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct Expected {
    reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<Value>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    v.sort();
    v
}

fn expected_path(input: &Path) -> PathBuf {
    PathBuf::from(
        input
            .to_string_lossy()
            .replace(".input.yaml", ".expected.yaml"),
    )
}

fn updating() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

fn config_of(input: &Input) -> PreparedConfig {
    match &input.config {
        Some(v) => PreparedConfig::from_yaml(&serde_yaml_ng::to_string(v).expect("config yaml"))
            .expect("valid config"),
        None => PreparedConfig::default(),
    }
}

/// Runs one case; returns the actual result as Expected.
fn run_case(path: &Path) -> Expected {
    let text = std::fs::read_to_string(path).expect("read input");
    let input: Input =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config = config_of(&input);
    let pod: Pod = serde_json::from_value(input.pod.clone())
        .unwrap_or_else(|e| panic!("{}: pod: {e}", path.display()));
    let ns = NamespaceInfo {
        name: input.namespace.name.clone(),
        labels: input.namespace.labels.clone(),
        annotations: input.namespace.annotations.clone(),
    };
    let req = InjectRequest {
        pod: &pod,
        namespace: &ns,
        config: &config,
        nodes: skjold_inject::inject::NodeSupport::Unknown,
    };
    match inject(&req) {
        Err(e) => Expected {
            reason: e.reason().to_string(),
            warnings: Vec::new(),
            error: Some(e.to_string()),
            pod: None,
        },
        Ok(outcome) => {
            if outcome.reason != Reason::Injected {
                assert!(
                    outcome.patch.0.is_empty(),
                    "{}: not injected but patch is not empty",
                    path.display()
                );
                return Expected {
                    reason: outcome.reason.as_str().to_string(),
                    warnings: outcome.warnings,
                    error: None,
                    pod: None,
                };
            }
            // The patch must apply cleanly to the pod exactly as it was sent.
            let mut patched = input.pod.clone();
            json_patch::patch(&mut patched, &outcome.patch)
                .unwrap_or_else(|e| panic!("{}: patch does not apply: {e}", path.display()));
            // It must be a valid Pod, and injecting it again must be a no-op.
            let again: Pod =
                serde_json::from_value(patched.clone()).expect("patched pod deserializes");
            let second = inject(&InjectRequest {
                pod: &again,
                namespace: &ns,
                config: &config,
                nodes: skjold_inject::inject::NodeSupport::Unknown,
            })
            .expect("re-injection succeeds");
            assert_eq!(
                second.reason,
                Reason::AlreadyInjected,
                "{}: not idempotent: {:?}",
                path.display(),
                second.patch
            );
            assert!(
                second.patch.0.is_empty(),
                "{}: second patch not empty",
                path.display()
            );
            // The config hash is checked here, then masked in the expected file.
            let hash = patched.pointer_mut(&format!(
                "/metadata/annotations/{}",
                HASH_KEY.replace('/', "~1")
            ));
            let hash =
                hash.unwrap_or_else(|| panic!("{}: no config hash annotation", path.display()));
            assert_eq!(hash.as_str(), Some(config.hash()));
            *hash = Value::String(HASH_PLACEHOLDER.into());
            Expected {
                reason: outcome.reason.as_str().to_string(),
                warnings: outcome.warnings,
                error: None,
                pod: Some(patched),
            }
        }
    }
}

fn check_or_update(path: &Path, actual: &str, failures: &mut Vec<String>) {
    let exp = expected_path(path);
    if updating() {
        std::fs::write(&exp, actual).expect("write expected");
        return;
    }
    match std::fs::read_to_string(&exp) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => {
            eprintln!("--- {} differs:", exp.display());
            for (i, (a, b)) in expected.lines().zip(actual.lines()).enumerate() {
                if a != b {
                    eprintln!("line {}:\n  expected: {a}\n  actual:   {b}", i + 1);
                    break;
                }
            }
            failures.push(exp.display().to_string());
        }
        Err(e) => failures.push(format!("{}: {e} (run with UPDATE_GOLDEN=1)", exp.display())),
    }
}

#[test]
fn golden_pods() {
    let paths = cases(&golden_dir());
    assert!(
        paths.len() >= 25,
        "expected at least 25 golden cases, found {}",
        paths.len()
    );
    let mut failures = Vec::new();
    for path in &paths {
        let actual = run_case(path);
        let yaml = serde_yaml_ng::to_string(&actual).expect("yaml");
        check_or_update(path, &yaml, &mut failures);
    }
    assert!(failures.is_empty(), "golden mismatches: {failures:#?}");
}

/// Offline cases: an optional first line `# namespace: NAME` sets the default namespace.
#[test]
fn golden_offline_documents() {
    let paths = cases(&golden_dir().join("offline"));
    assert!(!paths.is_empty());
    let mut failures = Vec::new();
    let config = PreparedConfig::default();
    let empty = BTreeMap::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("read");
        let out = inject_documents(
            &text,
            &OfflineOptions {
                config: &config,
                default_namespace: "default",
                namespace_labels: &empty,
                namespace_annotations: &empty,
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let masked = out.output.replace(config.hash(), HASH_PLACEHOLDER);
        check_or_update(path, &masked, &mut failures);
        // Running the output through again changes nothing.
        let again = inject_documents(
            &out.output,
            &OfflineOptions {
                config: &config,
                default_namespace: "default",
                namespace_labels: &empty,
                namespace_annotations: &empty,
            },
        )
        .expect("second pass");
        assert_eq!(
            again.output,
            out.output,
            "{}: offline injection not idempotent",
            path.display()
        );
    }
    assert!(failures.is_empty(), "golden mismatches: {failures:#?}");
}
