//! Offline injection of multi-document YAML (`skjoldctl inject`, like `istioctl kube-inject`).
//!
//! Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and
//! CronJobs go through the same [`inject::inject`] as the webhook, and its patch is applied to the
//! template. Every other document (and every document left alone by the decision) is copied
//! byte for byte, comments included.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Deserialize;
use serde_json::Value;

use crate::config::PreparedConfig;
use crate::inject::{self, InjectError, InjectRequest, NamespaceInfo, Outcome, Reason};

/// Largest input accepted (the API server's own object limit is far smaller).
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// What the offline injector needs besides the documents.
#[derive(Clone, Debug)]
pub struct OfflineOptions<'a> {
    pub config: &'a PreparedConfig,
    /// Namespace for objects without `metadata.namespace`.
    pub default_namespace: &'a str,
    /// Labels/annotations of the namespace(s), as the webhook would see them.
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub namespace_annotations: &'a BTreeMap<String, String>,
}

/// What happened to one injectable object.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectReport {
    /// 0-based document index in the input.
    pub document: usize,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub reason: Reason,
    pub warnings: Vec<String>,
}

/// The injected output plus one report per injectable object.
#[derive(Clone, Debug, Default)]
pub struct Injected {
    pub output: String,
    pub reports: Vec<ObjectReport>,
    /// One line per document copied through untouched, saying why (for stderr).
    pub untouched: Vec<String>,
}

/// Why an object was left as it is, for `untouched`.
fn untouched_line(document: usize, obj: &Value, why: &str) -> String {
    let kind = match str_at(obj, "/kind") {
        "" => "(no kind)",
        k => k,
    };
    let name = str_at(obj, "/metadata/name");
    format!("document {document}: {kind} {name} passed through unchanged: {why}")
}

/// Why a document could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("input is {size} bytes, larger than the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("document {document}: {kind} {name}: {field}: {message}")]
    Invalid {
        document: usize,
        kind: String,
        name: String,
        field: &'static str,
        message: String,
    },
    #[error("document {document}: {kind} {name} refused: {error}")]
    Refused {
        document: usize,
        kind: String,
        name: String,
        error: Box<InjectError>,
    },
}

/// Splits a YAML stream at `---` lines, keeping each document's text verbatim.
pub fn split_documents(input: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in input.split_inclusive('\n') {
        let is_sep =
            line.starts_with("---") && line[3..].chars().next().is_none_or(|c| c.is_whitespace());
        if is_sep {
            docs.push(&input[start..offset]);
            // Anything after `---` on the same line belongs to the next document.
            start = offset + 3;
        }
        offset += line.len();
    }
    docs.push(&input[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// Where a kind keeps its pod template.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        // ReplicationController and OpenShift's DeploymentConfig keep it where a Deployment does.
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController"
        | "DeploymentConfig" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The pod the webhook would see for this object, and the pointer of its template.
/// `None` for kinds that have no pod template.
pub fn pod_for_object(
    obj: &Value,
    default_namespace: &str,
    document: usize,
) -> Result<Option<(Pod, String, &'static str)>, WorkloadError> {
    let kind = str_at(obj, "/kind");
    let Some(pointer) = template_pointer(kind) else {
        return Ok(None);
    };
    let name = str_at(obj, "/metadata/name");
    let namespace = match str_at(obj, "/metadata/namespace") {
        "" => default_namespace.to_string(),
        ns => ns.to_string(),
    };
    let invalid = |field: &'static str, message: String| WorkloadError::Invalid {
        document,
        kind: kind.to_string(),
        name: name.to_string(),
        field,
        message,
    };
    let Some(template) = obj.pointer(pointer) else {
        return Err(invalid("spec.template", "missing".into()));
    };
    let mut pod = if kind == "Pod" {
        Pod::deserialize(template).map_err(|e| invalid("spec", e.to_string()))?
    } else {
        let t = PodTemplateSpec::deserialize(template)
            .map_err(|e| invalid("spec.template", e.to_string()))?;
        let mut metadata = t.metadata.unwrap_or_default();
        // What the controller would set on CREATE: generateName and the owner reference.
        if metadata.name.is_none() && metadata.generate_name.is_none() && !name.is_empty() {
            metadata.generate_name = Some(format!("{name}-"));
        }
        if metadata.owner_references.is_none() && !name.is_empty() {
            metadata.owner_references = Some(vec![OwnerReference {
                api_version: str_at(obj, "/apiVersion").to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
                controller: Some(true),
                uid: String::new(),
                block_owner_deletion: None,
            }]);
        }
        Pod {
            metadata,
            spec: t.spec,
            status: None,
        }
    };
    if pod.spec.is_none() {
        return Err(invalid("spec", "the pod template has no spec".into()));
    }
    pod.metadata.namespace = Some(namespace.clone());
    Ok(Some((pod, namespace, pointer)))
}

/// Injects one parsed object in place; `None` for kinds without a pod template.
fn inject_object(
    obj: &mut Value,
    options: &OfflineOptions<'_>,
    document: usize,
) -> Result<Option<(ObjectReport, Outcome)>, WorkloadError> {
    let Some((pod, namespace, pointer)) = pod_for_object(obj, options.default_namespace, document)?
    else {
        return Ok(None);
    };
    let kind = str_at(obj, "/kind").to_string();
    let name = str_at(obj, "/metadata/name").to_string();
    let ns_info = NamespaceInfo {
        name: namespace.clone(),
        labels: options.namespace_labels.clone(),
        annotations: options.namespace_annotations.clone(),
    };
    let outcome = inject::inject(&InjectRequest {
        pod: &pod,
        namespace: &ns_info,
        config: options.config,
        nodes: crate::inject::NodeSupport::Unknown,
    })
    .map_err(|error| WorkloadError::Refused {
        document,
        kind: kind.clone(),
        name: name.clone(),
        error: Box::new(error),
    })?;
    let mut warnings = outcome.warnings.clone();
    if outcome.reason == Reason::Injected {
        let Some(template) = obj.pointer_mut(pointer) else {
            return Err(WorkloadError::Invalid {
                document,
                kind,
                name,
                field: "spec.template",
                message: "missing".into(),
            });
        };
        if let Some(t) = template.as_object_mut() {
            t.entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
        }
        json_patch::patch(template, &outcome.patch).map_err(|e| WorkloadError::Invalid {
            document,
            kind: kind.clone(),
            name: name.clone(),
            field: "spec.template",
            message: format!("patch does not apply: {e}"),
        })?;
        let classic = template
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| str_at(c, "/name") == inject::render::PROXY_NAME)
            });
        if classic && matches!(kind.as_str(), "Job" | "CronJob") {
            warnings.push(format!(
                "{kind} {name}: a classic istio-proxy sidecar keeps running after the job's containers exit, \
                 so the Job never completes; set proxy.nativeSidecar: true in the injector config (the webhook \
                 does so by itself on Kubernetes >= 1.33 nodes when it is unset) or the annotation \
                 sidecar.istio.io/nativeSidecar: \"true\""
            ));
        }
    }
    let report = ObjectReport {
        document,
        kind,
        name,
        namespace,
        reason: outcome.reason,
        warnings,
    };
    Ok(Some((report, outcome)))
}

/// Injects every injectable object of a multi-document YAML stream.
pub fn inject_documents(
    input: &str,
    options: &OfflineOptions<'_>,
) -> Result<Injected, WorkloadError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(WorkloadError::TooLarge {
            size: input.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    let mut out = Injected::default();
    let mut parts: Vec<String> = Vec::new();
    for (document, text) in split_documents(input).into_iter().enumerate() {
        let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| WorkloadError::Yaml {
            document,
            message: e.to_string(),
        })?;
        let mut changed = false;
        let one = |obj: &mut Value, out: &mut Injected| -> Result<bool, WorkloadError> {
            match inject_object(obj, options, document)? {
                Some((report, _)) => {
                    let injected = report.reason == Reason::Injected;
                    if !injected {
                        out.untouched.push(untouched_line(
                            document,
                            obj,
                            &format!("not injected ({})", report.reason),
                        ));
                    }
                    out.reports.push(report);
                    Ok(injected)
                }
                None => {
                    if !value_is_empty(obj) {
                        out.untouched.push(untouched_line(
                            document,
                            obj,
                            "the kind has no pod template",
                        ));
                    }
                    Ok(false)
                }
            }
        };
        if str_at(&value, "/kind") == "List" {
            if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    changed |= one(item, &mut out)?;
                }
            }
        } else {
            changed = one(&mut value, &mut out)?;
        }
        if changed {
            let yaml = serde_yaml_ng::to_string(&value).map_err(|e| WorkloadError::Yaml {
                document,
                message: e.to_string(),
            })?;
            parts.push(yaml);
        } else {
            let mut t = text.trim_start_matches(['\n', '\r']).to_string();
            if !t.ends_with('\n') {
                t.push('\n');
            }
            parts.push(t);
        }
    }
    out.output = parts.join("---\n");
    Ok(out)
}

fn value_is_empty(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty)
}

/// Parses the first injectable object of a YAML stream into the pod the webhook would see.
pub fn first_pod(
    input: &str,
    default_namespace: &str,
) -> Result<Option<(Pod, String)>, WorkloadError> {
    for (document, text) in split_documents(input).into_iter().enumerate() {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| WorkloadError::Yaml {
            document,
            message: e.to_string(),
        })?;
        if let Some((pod, ns, _)) = pod_for_object(&value, default_namespace, document)? {
            return Ok(Some((pod, ns)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_text_and_drops_empty() {
        let docs = split_documents("---\na: 1\n# c\n---\n\n--- \nb: 2\n");
        assert_eq!(docs, vec!["\na: 1\n# c\n", " \nb: 2\n"]);
        assert_eq!(split_documents("x: ---\n"), vec!["x: ---\n"]);
    }

    fn opts(config: &PreparedConfig, empty: &BTreeMap<String, String>) -> OfflineOptions<'static> {
        let config: &'static PreparedConfig = Box::leak(Box::new(config.clone()));
        let empty: &'static BTreeMap<String, String> = Box::leak(Box::new(empty.clone()));
        OfflineOptions {
            config,
            default_namespace: "default",
            namespace_labels: empty,
            namespace_annotations: empty,
        }
    }

    #[test]
    fn other_kinds_pass_through_verbatim() {
        let input = "# keep me\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";
        let out =
            inject_documents(input, &opts(&PreparedConfig::default(), &BTreeMap::new())).unwrap();
        assert_eq!(out.output, input);
        assert!(out.reports.is_empty());
    }

    #[test]
    fn deployment_template_is_injected_and_idempotent() {
        let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo}\nspec:\n  template:\n    spec:\n      containers: [{name: app, image: nginx}]\n";
        let o = opts(&PreparedConfig::default(), &BTreeMap::new());
        let once = inject_documents(input, &o).unwrap();
        assert_eq!(once.reports[0].reason, Reason::Injected);
        assert_eq!(once.reports[0].namespace, "demo");
        let v: Value = serde_yaml_ng::from_str(&once.output).unwrap();
        let names: Vec<&str> = v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app", "istio-proxy"]);
        assert!(
            v["spec"]["template"]["metadata"]
                .get("ownerReferences")
                .is_none()
        );
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"]["service.istio.io/canonical-name"],
            "web"
        );
        let twice = inject_documents(&once.output, &o).unwrap();
        assert_eq!(twice.reports[0].reason, Reason::AlreadyInjected);
        assert_eq!(twice.output, once.output);
    }
}
