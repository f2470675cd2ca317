//! The offline commands: `inject`, `explain`, `version`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use skjold_inject::config::PreparedConfig;
use skjold_inject::inject::{self, InjectRequest, NamespaceInfo, Reason};
use skjold_inject::workload::{self, OfflineOptions};

/// Crate version (the `--version` output).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest input read from a file or stdin.
const MAX_INPUT: u64 = workload::MAX_INPUT_BYTES as u64;

/// `skjoldctl version`: version plus the git sha given at build time (`SKJOLD_GIT_SHA`).
pub fn version_line() -> String {
    let sha = option_env!("SKJOLD_GIT_SHA")
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    format!("skjoldctl {VERSION} (git {sha})")
}

/// Options shared by `inject` and `explain`.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Input file with one or more YAML documents; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub file: String,
    /// Namespace for objects without `metadata.namespace`.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// InjectorConfig YAML (or the injector ConfigMap with key `config`); default: Istio's defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Namespace annotations (defaults for the pods), `k=v,k2=v2`; repeatable.
    #[arg(long, value_name = "K=V,..")]
    pub namespace_annotations: Vec<String>,
    /// Namespace labels (`istio-injection`, `istio.io/rev`), `k=v,k2=v2`; repeatable.
    #[arg(long, value_name = "K=V,..")]
    pub namespace_labels: Vec<String>,
}

/// `skjoldctl inject`.
#[derive(Args, Debug)]
pub struct InjectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `skjoldctl explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also print the JSON patch the webhook would return.
    #[arg(long)]
    pub show_patch: bool,
}

/// Parses `k=v,k2=v2`. A comma segment without `=` continues the previous value, so
/// `traffic.sidecar.istio.io/excludeOutboundPorts=80,443` keeps its comma.
pub fn parse_key_values(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for arg in args {
        let mut last: Option<String> = None;
        for segment in arg.split(',') {
            match segment.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    let k = k.trim().to_string();
                    out.insert(k.clone(), v.to_string());
                    last = Some(k);
                }
                _ => match &last {
                    Some(k) => {
                        if let Some(v) = out.get_mut(k) {
                            v.push(',');
                            v.push_str(segment);
                        }
                    }
                    None if segment.trim().is_empty() => {}
                    None => bail!("expected key=value, got {segment:?}"),
                },
            }
        }
    }
    Ok(out)
}

fn read_input(file: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .take(MAX_INPUT + 1)
            .read_to_string(&mut text)
            .context("reading stdin")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("opening {file}"))?
            .take(MAX_INPUT + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {file}"))?;
    }
    if text.len() as u64 > MAX_INPUT {
        bail!("{file}: input larger than {MAX_INPUT} bytes");
    }
    Ok(text)
}

/// Loads an InjectorConfig file, also accepting the injector ConfigMap itself.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<PreparedConfig> {
    let Some(path) = path else {
        return Ok(PreparedConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let probe: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if probe.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
        let inner = probe
            .get("data")
            .and_then(|d| d.get(skjold_inject::istio::INJECTOR_CONFIG_KEY))
            .and_then(|c| c.as_str())
            .with_context(|| {
                format!(
                    "{}: ConfigMap has no data.{}",
                    path.display(),
                    skjold_inject::istio::INJECTOR_CONFIG_KEY
                )
            })?;
        return PreparedConfig::from_yaml(inner)
            .with_context(|| format!("{}: data.config", path.display()));
    }
    PreparedConfig::from_yaml(&text).with_context(|| format!("{}", path.display()))
}

/// `skjoldctl inject`: injected YAML on stdout, warnings on stderr.
pub fn run_inject(args: &InjectArgs) -> anyhow::Result<ExitCode> {
    let c = &args.common;
    let config = load_config(c.config.as_ref())?;
    let labels = parse_key_values(&c.namespace_labels).context("--namespace-labels")?;
    let annotations =
        parse_key_values(&c.namespace_annotations).context("--namespace-annotations")?;
    let input = read_input(&c.file)?;
    let injected = workload::inject_documents(
        &input,
        &OfflineOptions {
            config: &config,
            default_namespace: &c.namespace,
            namespace_labels: &labels,
            namespace_annotations: &annotations,
        },
    )?;
    let mut err = std::io::stderr().lock();
    for r in &injected.reports {
        for w in &r.warnings {
            writeln!(
                err,
                "warning: {} {} (document {}): {w}",
                r.kind, r.name, r.document
            )?;
        }
    }
    for line in &injected.untouched {
        writeln!(err, "warning: {line}")?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(injected.output.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `skjoldctl explain`: the decision, step by step; exit 1 when the webhook would refuse the pod.
pub fn run_explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let c = &args.common;
    let config = load_config(c.config.as_ref())?;
    let labels = parse_key_values(&c.namespace_labels).context("--namespace-labels")?;
    let annotations =
        parse_key_values(&c.namespace_annotations).context("--namespace-annotations")?;
    let input = read_input(&c.file)?;
    let Some((pod, namespace)) = workload::first_pod(&input, &c.namespace)? else {
        bail!("{}: no Pod or workload with a pod template found", c.file);
    };
    let ns = NamespaceInfo {
        name: namespace,
        labels,
        annotations,
    };
    let text = explain_text(&pod, &ns, &config, args.show_patch);
    print!("{}", text.0);
    Ok(if text.1 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Renders the explanation; the flag is false when the webhook would refuse the pod.
pub fn explain_text(
    pod: &k8s_openapi::api::core::v1::Pod,
    ns: &NamespaceInfo,
    config: &PreparedConfig,
    show_patch: bool,
) -> (String, bool) {
    use std::fmt::Write as _;
    let mut s = String::new();
    let who = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_else(|| "<unnamed>".into());
    let _ = writeln!(
        s,
        "pod {}/{who} (injector revision {})",
        ns.name,
        config.revision_name()
    );
    // Step 0, as the API server takes it: does any entry of the revision's
    // MutatingWebhookConfiguration select this namespace and pod at all?
    let selected = match selecting_webhook(pod, ns, config) {
        Ok(Some(entry)) => format!(
            "webhook {entry} of {} selects namespace {} and the pod -> the API server calls the injector",
            webhook_configuration_name(config),
            ns.name
        ),
        Ok(None) => {
            let _ = writeln!(
                s,
                "  1. no webhook of {} selects namespace {} (labels {}) with pod labels {} -> the API server does not call the injector",
                webhook_configuration_name(config),
                ns.name,
                show_labels(&ns.labels),
                show_labels(&pod.metadata.labels.clone().unwrap_or_default())
            );
            // The webhooks' objectSelector already excludes an explicit opt-out: name that.
            let opted_out = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("sidecar.istio.io/inject"))
                .is_some_and(|v| v == "false");
            if opted_out {
                let _ = writeln!(
                    s,
                    "  2. pod label sidecar.istio.io/inject=\"false\" -> skip"
                );
            }
            let reason = if opted_out {
                Reason::DisabledByLabel.to_string()
            } else {
                "not-selected".into()
            };
            let _ = writeln!(s, "result: skip (reason: {reason})");
            return (s, true);
        }
        Err(e) => format!("webhook selection unknown ({e}); assuming the injector is called"),
    };
    let _ = writeln!(s, "  1. {selected}");
    let result = inject::inject(&InjectRequest {
        pod,
        namespace: ns,
        config,
        nodes: skjold_inject::inject::NodeSupport::Unknown,
    });
    match result {
        Ok(outcome) => {
            for (i, step) in outcome.explanation.iter().enumerate() {
                let _ = writeln!(s, "  {}. {step}", i + 2);
            }
            let verdict = if outcome.reason == Reason::Injected {
                "inject"
            } else {
                "skip"
            };
            let _ = writeln!(s, "result: {verdict} (reason: {})", outcome.reason);
            for w in &outcome.warnings {
                let _ = writeln!(s, "warning: {w}");
            }
            if show_patch {
                let patch = serde_json::to_string_pretty(&outcome.patch).unwrap_or_default();
                let _ = writeln!(s, "patch:\n{patch}");
            }
            (s, true)
        }
        Err(e) => {
            // The decision itself succeeded (or failed on the config); show how far it got.
            let annotations = inject::decision::EffectiveAnnotations::new(pod, ns);
            if let Ok(d) = inject::decision::decide(pod, ns, config, &annotations) {
                for (i, step) in d.explanation.iter().enumerate() {
                    let _ = writeln!(s, "  {}. {step}", i + 2);
                }
            }
            let _ = writeln!(s, "result: refused (reason: {}): {e}", e.reason());
            (s, false)
        }
    }
}

fn webhook_configuration_name(config: &PreparedConfig) -> String {
    skjold_operator::render::names::webhook_configuration(
        config.revision_name(),
        CONTROL_PLANE_NAMESPACE,
    )
}

/// The control-plane namespace the webhook configuration is evaluated for (Istio's default).
const CONTROL_PLANE_NAMESPACE: &str = "istio-system";

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "{}".into();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// The name of the first entry of the MutatingWebhookConfiguration the operator renders for the
/// config's revision whose namespaceSelector and objectSelector match, as the API server
/// evaluates them (the namespace also carries its automatic `kubernetes.io/metadata.name` label).
/// The selectors are the operator's own rendering, not a second copy of Istio's rules.
fn selecting_webhook(
    pod: &k8s_openapi::api::core::v1::Pod,
    ns: &NamespaceInfo,
    config: &PreparedConfig,
) -> anyhow::Result<Option<String>> {
    use skjold_operator::render::{ManagedObject, RenderContext, WebhookTarget, render};
    let rev = config.revision_name();
    let revision = if rev == skjold_inject::istio::DEFAULT_REVISION {
        ""
    } else {
        rev
    };
    let mc: skjold_operator::crd::MeshConfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "skjold.io/v1alpha1", "kind": "MeshConfig",
        "metadata": {"name": "explain", "namespace": CONTROL_PLANE_NAMESPACE, "uid": "explain"},
        "spec": {"revision": revision},
    }))?;
    let ctx = RenderContext {
        namespace: CONTROL_PLANE_NAMESPACE.into(),
        webhook: WebhookTarget::Service {
            name: "skjold-webhook".into(),
            namespace: CONTROL_PLANE_NAMESPACE.into(),
        },
        ca_bundle: String::new(),
        ca_injection_from: None,
        istiod_validation_url: None,
    };
    let rendered = render(&mc, &ctx)?;
    let mut ns_labels = ns.labels.clone();
    ns_labels.insert("kubernetes.io/metadata.name".into(), ns.name.clone());
    let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
    for (_, obj) in &rendered.objects {
        let ManagedObject::MutatingWebhookConfiguration(mwc) = obj else {
            continue;
        };
        for w in mwc.webhooks.iter().flatten() {
            let matches =
                |sel: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
                 labels: &BTreeMap<String, String>| {
                    sel.as_ref().map_or(Ok(true), |sel| {
                        inject::decision::selector_matches(sel, Some(labels), "webhook selector", 0)
                    })
                };
            if matches(&w.namespace_selector, &ns_labels)?
                && matches(&w.object_selector, &pod_labels)?
            {
                return Ok(Some(w.name.clone()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn key_values_keep_commas_in_values() {
        let m = parse_key_values(&[
            "traffic.sidecar.istio.io/excludeOutboundPorts=80,443,sidecar.istio.io/proxyCPU=50m"
                .into(),
            "a=".into(),
        ])
        .unwrap();
        assert_eq!(m["traffic.sidecar.istio.io/excludeOutboundPorts"], "80,443");
        assert_eq!(m["sidecar.istio.io/proxyCPU"], "50m");
        assert_eq!(m["a"], "");
        assert!(parse_key_values(&["novalue".into()]).is_err());
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn explain_lists_steps_and_reason() {
        let p = pod(
            "metadata: {name: p, labels: {sidecar.istio.io/inject: 'false'}}\nspec: {containers: [{name: a}]}",
        );
        let ns = NamespaceInfo {
            name: "demo".into(),
            labels: [("istio-injection".to_string(), "enabled".to_string())].into(),
            ..Default::default()
        };
        let (text, ok) = explain_text(&p, &ns, &PreparedConfig::default(), false);
        assert!(ok);
        assert!(
            text.contains("pod label sidecar.istio.io/inject=\"false\""),
            "{text}"
        );
        assert!(
            text.contains("result: skip (reason: disabled-by-label)"),
            "{text}"
        );
    }

    #[test]
    fn explain_reports_refusal() {
        let p = pod(
            "metadata: {name: p, annotations: {sidecar.istio.io/proxyCPU: lots}}\nspec: {containers: [{name: a}]}",
        );
        let ns = NamespaceInfo {
            name: "demo".into(),
            labels: [("istio-injection".to_string(), "enabled".to_string())].into(),
            ..Default::default()
        };
        let (text, ok) = explain_text(&p, &ns, &PreparedConfig::default(), false);
        assert!(!ok);
        assert!(
            text.contains("refused (reason: invalid-annotation)"),
            "{text}"
        );
        assert!(
            text.contains("sidecar.istio.io/proxyCPU=\"lots\""),
            "{text}"
        );
    }

    #[test]
    fn explain_follows_the_webhook_selectors() {
        let plain = pod("metadata: {name: p}\nspec: {containers: [{name: a}]}");
        let opted_in = pod(
            "metadata: {name: p, labels: {sidecar.istio.io/inject: 'true'}}\nspec: {containers: [{name: a}]}",
        );
        let unlabelled = NamespaceInfo {
            name: "demo".into(),
            ..Default::default()
        };
        let (text, ok) = explain_text(&plain, &unlabelled, &PreparedConfig::default(), false);
        assert!(ok);
        assert!(
            text.contains("result: skip (reason: not-selected)"),
            "{text}"
        );
        assert!(
            text.contains("no webhook of skjold-sidecar-injector selects namespace demo"),
            "{text}"
        );
        let (text, _) = explain_text(&opted_in, &unlabelled, &PreparedConfig::default(), false);
        assert!(
            text.contains("webhook object.sidecar-injector.istio.io"),
            "{text}"
        );
        assert!(text.contains("result: inject"), "{text}");
        let system = NamespaceInfo {
            name: "kube-system".into(),
            labels: [("istio-injection".to_string(), "enabled".to_string())].into(),
            ..Default::default()
        };
        let (text, _) = explain_text(&plain, &system, &PreparedConfig::default(), false);
        assert!(text.contains("reason: not-selected"), "{text}");
    }

    #[test]
    fn version_has_crate_version() {
        assert!(version_line().starts_with(&format!("skjoldctl {VERSION} (git ")));
    }
}
