//! Re-injection of a pod that already carries `sidecar.istio.io/status`, as Istio does it: the
//! containers, volumes and pull secrets the status lists are taken out, the pod is injected
//! again, and each re-rendered container is merged over the one it replaces (so what others added
//! to it since, such as the ServiceAccount plugin's token mount, stays). Probes rewritten by the
//! first injection keep their originals from the old `ISTIO_KUBE_APP_PROBERS`. When the result
//! equals the pod as sent, nothing changes (already injected, empty patch): re-injection is
//! idempotent, and a webhook reinvocation after another webhook added a container re-renders the
//! proxy for it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::patch::List;
use super::types::InjectError;
use super::{keys, render};

/// What the first injection left, by container name.
#[derive(Debug, Default)]
pub struct Previous {
    pub containers: BTreeMap<String, Value>,
    /// The old proxy's `ISTIO_KUBE_APP_PROBERS`.
    pub probers: serde_json::Map<String, Value>,
    /// The volumes the status lists, as stored (with the API server's defaults).
    pub volumes: BTreeMap<String, Value>,
}

impl Previous {
    /// The stored volume of that name when it is the rendered one plus only the API server's
    /// defaults (`defaultMode`, a fieldRef's `apiVersion: v1`): keeping it is no change.
    pub fn same_volume(&self, rendered: &Value) -> Option<&Value> {
        let old = self.volumes.get(rendered["name"].as_str()?)?;
        (without_defaults(old.clone()) == without_defaults(rendered.clone())).then_some(old)
    }
}

/// A volume without the fields the API server defaults.
fn without_defaults(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("defaultMode");
                if m.get("apiVersion").and_then(Value::as_str) == Some("v1")
                    && m.contains_key("fieldPath")
                {
                    m.remove("apiVersion");
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The pod without what its status annotation lists, and what was taken out; `None` when the
/// status cannot be read (the pod is then left alone, as Istio does).
pub fn strip(pod: &Pod) -> Result<Option<(Pod, Previous)>, InjectError> {
    let Some(raw) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::STATUS))
    else {
        return Ok(None);
    };
    let Ok(status) = serde_json::from_str::<Value>(raw) else {
        return Ok(None);
    };
    let names = |key: &str| -> Vec<String> {
        status[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (containers, inits, volumes, secrets) = (
        names("containers"),
        names("initContainers"),
        names("volumes"),
        names("imagePullSecrets"),
    );
    let mut out = pod.clone();
    let mut previous = Previous::default();
    if let Some(a) = out.metadata.annotations.as_mut() {
        a.remove(keys::STATUS);
    }
    let Some(spec) = out.spec.as_mut() else {
        return Ok(None);
    };
    let mut take = |list: &mut Vec<k8s_openapi::api::core::v1::Container>, names: &[String]| {
        let mut kept = Vec::with_capacity(list.len());
        for c in list.drain(..) {
            if names.contains(&c.name) {
                let v =
                    serde_json::to_value(&c).map_err(|e| InjectError::Internal(e.to_string()))?;
                previous.containers.insert(c.name.clone(), v);
            } else {
                kept.push(c);
            }
        }
        *list = kept;
        Ok::<(), InjectError>(())
    };
    take(&mut spec.containers, &containers)?;
    if let Some(list) = spec.init_containers.as_mut() {
        take(list, &inits)?;
        if list.is_empty() {
            spec.init_containers = None;
        }
    }
    if let Some(list) = spec.volumes.as_mut() {
        for v in list.iter().filter(|v| volumes.contains(&v.name)) {
            let stored =
                serde_json::to_value(v).map_err(|e| InjectError::Internal(e.to_string()))?;
            previous.volumes.insert(v.name.clone(), stored);
        }
        list.retain(|v| !volumes.contains(&v.name));
        if list.is_empty() {
            spec.volumes = None;
        }
    }
    if let Some(list) = spec.image_pull_secrets.as_mut() {
        list.retain(|s| !secrets.contains(&s.name));
        if list.is_empty() {
            spec.image_pull_secrets = None;
        }
    }
    // Istio's `reinsertOverrides`: the user's override containers go back in, so the pod is
    // rendered as the first time (their ports are the pod's, and they are merged again).
    for (list, c) in super::overrides::recorded(pod)? {
        let c: k8s_openapi::api::core::v1::Container =
            serde_json::from_value(c).map_err(|e| InjectError::Internal(e.to_string()))?;
        let target = match list {
            List::Containers => &mut spec.containers,
            List::InitContainers => spec.init_containers.get_or_insert_with(Vec::new),
        };
        if !target.iter().any(|t| t.name == c.name) {
            target.push(c);
        }
    }
    if let Some(env) = previous
        .containers
        .get(render::PROXY_NAME)
        .and_then(|c| c["env"].as_array())
        && let Some(Value::String(s)) = env
            .iter()
            .find(|e| e["name"] == "ISTIO_KUBE_APP_PROBERS")
            .map(|e| &e["value"])
        && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(s)
    {
        previous.probers = m;
    }
    Ok(Some((out, previous)))
}
