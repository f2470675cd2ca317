//! Finds the cases in a golden directory, renders each with Skjold and compares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use skjold_inject::config::PreparedConfig;
use skjold_inject::workload::{self, OfflineOptions};

use super::cases::{self, Setup};
use super::compare::{self, Verdict};

pub struct CaseResult {
    pub case: String,
    pub verdict: Verdict,
}

/// Every case in `dir`: the explicit variants, every other `X.yaml` + `X.yaml.injected` pair with
/// Istio's test defaults, and every input without a golden as a case Istio refuses.
pub fn run_all(dir: &Path) -> Vec<CaseResult> {
    let files: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let mut planned: BTreeMap<String, (String, Setup)> = BTreeMap::new();
    for v in cases::VARIANTS {
        planned.insert(v.want.to_string(), (v.input.to_string(), v.setup));
    }
    let mut results = Vec::new();
    let inputs_of_variants: BTreeSet<&str> = cases::VARIANTS.iter().map(|v| v.input).collect();
    for f in &files {
        if !f.ends_with(".yaml") || f.ends_with(".iop.yaml") {
            continue;
        }
        let want = format!("{f}.injected");
        if files.contains(&want) {
            planned
                .entry(want)
                .or_insert_with(|| (f.clone(), Setup::Config("")));
        } else if !inputs_of_variants.contains(f.as_str()) {
            results.push(CaseResult {
                case: f.clone(),
                verdict: expect_refusal(dir, f),
            });
        }
    }
    for f in files.iter().filter(|f| f.ends_with(".injected")) {
        if !planned.contains_key(f) {
            results.push(CaseResult {
                case: f.clone(),
                verdict: Verdict::Failed(
                    "a golden with no input of the same name and no entry in cases::VARIANTS: \
                     map Istio's settings for it (inject_test.go)"
                        .into(),
                ),
            });
        }
    }
    for (want, (input, setup)) in planned {
        if !files.contains(&want) {
            // A variant of another Istio version; not in this one.
            continue;
        }
        let verdict = match setup {
            Setup::OutOfScope(why) => Verdict::OutOfScope(why),
            Setup::Config(overlay) => render_and_compare(dir, &input, &want, overlay),
        };
        results.push(CaseResult {
            case: want,
            verdict,
        });
    }
    results
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("reading {f}: {e}"))
}

/// Istio's config for a case: its test defaults, then the case's settings.
pub fn config(overlay: &str) -> Result<PreparedConfig, String> {
    let mut base: Value = serde_yaml_ng::from_str(cases::BASE_CONFIG).map_err(|e| e.to_string())?;
    if !overlay.trim().is_empty() {
        let o: Value = serde_yaml_ng::from_str(overlay).map_err(|e| e.to_string())?;
        merge(&mut base, o);
    }
    let yaml = serde_yaml_ng::to_string(&base).map_err(|e| e.to_string())?;
    PreparedConfig::from_yaml(&yaml).map_err(|e| e.to_string())
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_object() && v.is_object() => merge(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn inject(input: &str, config: &PreparedConfig) -> Result<String, String> {
    let empty = BTreeMap::new();
    workload::inject_documents(
        input,
        &OfflineOptions {
            config,
            default_namespace: "default",
            namespace_labels: &empty,
            namespace_annotations: &empty,
        },
    )
    .map(|i| i.output)
    .map_err(|e| e.to_string())
}

fn documents(text: &str) -> Result<Vec<Value>, String> {
    workload::split_documents(text)
        .into_iter()
        .map(|d| serde_yaml_ng::from_str::<Value>(d).map_err(|e| e.to_string()))
        .filter(|d| !matches!(d, Ok(Value::Null)))
        .collect()
}

fn render_and_compare(dir: &Path, input: &str, want: &str, overlay: &str) -> Verdict {
    let config = match config(overlay) {
        Ok(c) => c,
        Err(e) => return Verdict::Failed(format!("Skjold config for the case: {e}")),
    };
    let got = match inject(&read(dir, input), &config) {
        Ok(g) => g,
        Err(e) => return Verdict::Failed(format!("Skjold refused: {e}")),
    };
    // Injecting Skjold's own output again changes nothing (as `istioctl kube-inject` twice).
    match inject(&got, &config) {
        Ok(again) => {
            let (Ok(a), Ok(b)) = (documents(&got), documents(&again)) else {
                return Verdict::Failed("YAML of the re-injected output".into());
            };
            let mut diffs = Vec::new();
            for (x, y) in a.iter().zip(&b) {
                compare::diff(
                    &compare::canonical(x),
                    &compare::canonical(y),
                    "",
                    &mut diffs,
                );
            }
            if a.len() != b.len() || !diffs.is_empty() {
                let shown: Vec<String> = diffs.iter().take(3).map(ToString::to_string).collect();
                return Verdict::Failed(format!("not idempotent: {}", shown.join("; ")));
            }
        }
        Err(e) => return Verdict::Failed(format!("re-injecting Skjold's output refused: {e}")),
    }
    let (want_docs, got_docs) = match (documents(&read(dir, want)), documents(&got)) {
        (Ok(w), Ok(g)) => (w, g),
        (Err(e), _) | (_, Err(e)) => return Verdict::Failed(format!("YAML: {e}")),
    };
    if want_docs.len() != got_docs.len() {
        return Verdict::Failed(format!(
            "{} documents from Istio, {} from Skjold",
            want_docs.len(),
            got_docs.len()
        ));
    }
    let mut diffs = Vec::new();
    for (i, (w, g)) in want_docs.iter().zip(&got_docs).enumerate() {
        let prefix = if want_docs.len() > 1 {
            format!("doc{i}")
        } else {
            String::new()
        };
        compare::diff(
            &compare::canonical(&compare::view(w)),
            &compare::canonical(&compare::view(g)),
            &prefix,
            &mut diffs,
        );
    }
    if diffs.is_empty() {
        Verdict::Match
    } else {
        Verdict::Differs(diffs)
    }
}

/// An input Istio refuses (`expectedError` in inject_test.go): Skjold must refuse it too, naming
/// the annotation (`traffic-annotations-bad-includeipranges.yaml` -> `includeipranges`).
fn expect_refusal(dir: &Path, input: &str) -> Verdict {
    let config = config("").expect("base config");
    match inject(&read(dir, input), &config) {
        Ok(_) => Verdict::Failed("Istio refuses this input; Skjold injected it".into()),
        Err(e) => {
            let word = input
                .trim_end_matches(".yaml")
                .rsplit("bad-")
                .next()
                .unwrap_or_default()
                .to_lowercase();
            // Istio's test names the setting (`includeipranges`); Skjold names the annotation
            // (`includeOutboundIPRanges`).
            let message = e.to_lowercase();
            if message.contains(&word) || message.replace("outbound", "").contains(&word) {
                Verdict::RefusedAsExpected(e)
            } else {
                Verdict::Failed(format!(
                    "refused, but the message does not name {word}: {e}"
                ))
            }
        }
    }
}
