//! Golden tests of the pure render step: one YAML file per profile (plus a canary revision and
//! the CRD). Regenerate with `UPDATE_GOLDEN=1 cargo test -p skjold-operator --test golden`, then
//! review the diff like code.

use std::path::PathBuf;

use kube::CustomResourceExt;
use skjold_operator::crd::{MeshConfig, MeshConfigSpec, Profile};
use skjold_operator::render::{RenderContext, WebhookTarget, render};

const FAKE_CA: &str =
    "-----BEGIN CERTIFICATE-----\nZmFrZS1jYS1mb3ItZ29sZGVuLXRlc3Rz\n-----END CERTIFICATE-----\n";

fn meshconfig(profile: Profile, revision: &str) -> MeshConfig {
    let mut spec: MeshConfigSpec = serde_json::from_str("{}").expect("empty spec takes defaults");
    spec.profile = profile;
    spec.revision = revision.to_string();
    let name = if revision.is_empty() {
        "default".to_string()
    } else {
        revision.to_string()
    };
    let mut mc = MeshConfig::new(&name, spec);
    mc.metadata.namespace = Some("istio-system".into());
    mc.metadata.uid = Some("6d1c7a4e-0000-4000-8000-000000000001".into());
    mc
}

fn ctx() -> RenderContext {
    RenderContext {
        namespace: "istio-system".into(),
        webhook: WebhookTarget::Service {
            name: "skjold-webhook".into(),
            namespace: "istio-system".into(),
        },
        ca_bundle: FAKE_CA.into(),
        ca_injection_from: None,
        istiod_validation_url: None,
    }
}

fn check(file: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    pretty_assertions::assert_eq!(
        expected,
        actual,
        "{} is stale; rerun with UPDATE_GOLDEN=1 and review",
        file
    );
}

fn golden(profile: Profile, revision: &str, file: &str) {
    let rendered = render(&meshconfig(profile, revision), &ctx()).expect("render");
    check(file, &rendered.to_yaml().expect("yaml"));
}

#[test]
fn default_profile() {
    golden(Profile::Default, "", "default.yaml");
}

#[test]
fn demo_profile() {
    golden(Profile::Demo, "", "demo.yaml");
}

#[test]
fn minimal_profile() {
    golden(Profile::Minimal, "", "minimal.yaml");
}

#[test]
fn empty_profile() {
    golden(Profile::Empty, "", "empty.yaml");
}

#[test]
fn minimal_canary_revision() {
    golden(Profile::Minimal, "canary", "minimal-canary.yaml");
}

#[test]
fn crd() {
    let yaml = serde_yaml_ng::to_string(&MeshConfig::crd()).expect("crd yaml");
    check("crd.yaml", &yaml);
}
