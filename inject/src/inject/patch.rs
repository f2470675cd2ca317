//! RFC 6902 patch built directly from the list of changes.
//!
//! The injector knows exactly what it changes, so it emits one op per change instead of
//! serializing and diffing two whole pods (which cost more than everything else together).
//! Ops use `add` with explicit final indices, so they apply in order to the original pod:
//! a missing map or list is added whole, otherwise its members are added one by one.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde::Serialize;
use serde_json::Value;

use super::InjectError;

/// Which container list of the pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Containers,
    InitContainers,
}

impl List {
    fn field(self) -> &'static str {
        match self {
            List::Containers => "containers",
            List::InitContainers => "initContainers",
        }
    }
}

/// Everything the injection changes in a pod.
#[derive(Debug, Default)]
pub struct Changes {
    /// Rewritten probes and lifecycle hooks: list, container index, JSON field, new value.
    pub probes: Vec<(List, usize, &'static str, Value)>,
    /// Containers replaced in place (indices in the pod as sent): app containers a template
    /// renders (the gRPC templates).
    pub replaces: Vec<(List, usize, Container)>,
    /// The user's own override containers, removed (indices in the pod as sent).
    pub removes: Vec<(List, usize)>,
    /// Inserted containers at their final index (after the removals), ascending per list.
    pub inserts: Vec<(List, usize, Container)>,
    /// Volumes appended to `spec.volumes`.
    pub volumes: Vec<Volume>,
    /// Labels to add (only keys not present).
    pub labels: BTreeMap<String, String>,
    /// Annotations to set (added or overwritten).
    pub annotations: BTreeMap<String, String>,
    /// Existing annotations to remove (never one that is also set).
    pub remove_annotations: Vec<String>,
    /// `spec.securityContext.sysctls` to set (the gateway template's).
    pub sysctls: Option<Vec<k8s_openapi::api::core::v1::Sysctl>>,
    /// The pod's new `spec.imagePullSecrets`, when the config adds any.
    pub image_pull_secrets: Option<Vec<k8s_openapi::api::core::v1::LocalObjectReference>>,
}

/// Serializes a piece of the pod for the patch.
pub fn to_value<T: Serialize>(v: &T) -> Result<Value, InjectError> {
    serde_json::to_value(v).map_err(|e| InjectError::Internal(e.to_string()))
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// Adds map entries one by one, or the whole map when the pod has none.
fn add_map(
    ops: &mut Vec<PatchOperation>,
    field: &str,
    present: bool,
    entries: BTreeMap<String, String>,
) {
    if entries.is_empty() {
        return;
    }
    if present {
        for (k, v) in entries {
            ops.push(add(
                PointerBuf::from_tokens(["metadata", field, k.as_str()]),
                Value::String(v),
            ));
        }
    } else {
        let map = entries
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        ops.push(add(
            PointerBuf::from_tokens(["metadata", field]),
            Value::Object(map),
        ));
    }
}

/// Builds the patch that turns `pod` into the injected pod.
pub fn build(pod: &Pod, changes: Changes) -> Result<Patch, InjectError> {
    let spec = pod.spec.as_ref().ok_or_else(|| InjectError::InvalidPod {
        field: "spec",
        problem: "missing".into(),
    })?;
    let mut ops = Vec::with_capacity(
        changes.probes.len()
            + changes.inserts.len()
            + changes.volumes.len()
            + changes.annotations.len()
            + 4,
    );

    // Probes first: their indices refer to the original lists.
    for (list, index, field, probe) in &changes.probes {
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(["spec", list.field(), &index.to_string(), field]),
            value: probe.clone(),
        }));
    }

    for (list, index, container) in &changes.replaces {
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(["spec", list.field(), &index.to_string()]),
            value: to_value(container)?,
        }));
    }
    // Then the removals, from the back so the indices stay those of the pod as sent.
    let mut removes = changes.removes.clone();
    removes.sort_by_key(|(l, i)| (*l == List::Containers, std::cmp::Reverse(*i)));
    for (list, index) in removes {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(["spec", list.field(), &index.to_string()]),
        }));
    }

    for list in [List::InitContainers, List::Containers] {
        let present = match list {
            List::Containers => true,
            List::InitContainers => spec.init_containers.is_some(),
        };
        let inserts: Vec<&(List, usize, Container)> = changes
            .inserts
            .iter()
            .filter(|(l, _, _)| *l == list)
            .collect();
        if inserts.is_empty() {
            continue;
        }
        if present {
            for (_, index, container) in inserts {
                ops.push(add(
                    PointerBuf::from_tokens(["spec", list.field(), &index.to_string()]),
                    to_value(container)?,
                ));
            }
        } else {
            let all = inserts
                .into_iter()
                .map(|(_, _, c)| to_value(c))
                .collect::<Result<Vec<_>, _>>()?;
            ops.push(add(
                PointerBuf::from_tokens(["spec", list.field()]),
                Value::Array(all),
            ));
        }
    }

    match spec.volumes.as_ref() {
        // Injected volumes go first, as Istio's template merge puts them.
        Some(_) => {
            for (k, v) in changes.volumes.iter().enumerate() {
                ops.push(add(
                    PointerBuf::from_tokens(["spec", "volumes", &k.to_string()]),
                    to_value(v)?,
                ));
            }
        }
        None if !changes.volumes.is_empty() => {
            ops.push(add(
                PointerBuf::from_tokens(["spec", "volumes"]),
                to_value(&changes.volumes)?,
            ));
        }
        None => {}
    }

    if let Some(sysctls) = &changes.sysctls {
        // A strategic merge replaces the list inside the pod's securityContext.
        ops.push(match spec.security_context {
            Some(_) => add(
                PointerBuf::from_tokens(["spec", "securityContext", "sysctls"]),
                to_value(sysctls)?,
            ),
            None => add(
                PointerBuf::from_tokens(["spec", "securityContext"]),
                serde_json::json!({ "sysctls": to_value(sysctls)? }),
            ),
        });
    }
    if let Some(secrets) = &changes.image_pull_secrets {
        ops.push(add(
            PointerBuf::from_tokens(["spec", "imagePullSecrets"]),
            to_value(secrets)?,
        ));
    }
    add_map(
        &mut ops,
        "labels",
        pod.metadata.labels.is_some(),
        changes.labels,
    );
    for k in &changes.remove_annotations {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", k.as_str()]),
        }));
    }
    add_map(
        &mut ops,
        "annotations",
        pod.metadata.annotations.is_some(),
        changes.annotations,
    );
    Ok(Patch(ops))
}
