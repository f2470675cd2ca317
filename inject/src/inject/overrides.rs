//! A user's own `istio-proxy` or `istio-init` container is an override, as in Istio
//! ("customizing injection"): it is merged over the container Skjold renders with the API
//! server's strategic-merge rules (the user's fields win, `ports`/`env`/`volumeMounts`/
//! `volumeDevices` are united by their merge key, every other list is replaced), `image: auto`
//! keeps the injected image, the user's copy leaves its place in the pod (the merged container
//! goes where the injector puts it), and the overlay is recorded in `proxy.istio.io/overrides`
//! so a re-injection applies it again.
//!
//! Pure: JSON values in, JSON values out.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Map, Value};

use super::keys;
use super::patch::List;
use super::types::InjectError;

/// Istio's image placeholder: keep the injected image.
pub const AUTO_IMAGE: &str = "auto";

/// One user container that overrides a rendered one.
#[derive(Debug, Clone)]
pub struct Override {
    pub name: String,
    /// Where the user's container is in the pod as sent (it is removed from there).
    pub at: Option<(List, usize)>,
    /// What is merged over the rendered container (Go's zero values and `image: auto` dropped).
    pub overlay: Value,
}

/// The overrides a pod carries for the containers named `names`: from the hidden annotation
/// `proxy.istio.io/overrides` (a pod copied from an injected one) first, else the pod's own
/// container of that name (in `containers`, then `initContainers`).
pub fn find(pod: &Pod, names: &[&'static str]) -> Result<Vec<Override>, InjectError> {
    let recorded = recorded(pod)?;
    let spec = pod.spec.as_ref();
    let lists = [
        (List::Containers, spec.map(|s| &s.containers)),
        (
            List::InitContainers,
            spec.and_then(|s| s.init_containers.as_ref()),
        ),
    ];
    let mut out = Vec::new();
    for &name in names {
        let at = lists.iter().find_map(|(list, cs)| {
            cs.and_then(|cs| cs.iter().position(|c| c.name == name))
                .map(|i| (*list, i))
        });
        let overlay = match recorded.iter().find(|(_, c)| c["name"] == name) {
            Some((_, v)) => Some(clean(v.clone())),
            None => match at {
                Some((list, i)) => {
                    let cs = lists
                        .iter()
                        .find(|(l, _)| *l == list)
                        .and_then(|(_, cs)| *cs);
                    let c: &Container = &cs.expect("list found above")[i];
                    Some(clean(serde_json::to_value(c).map_err(internal)?))
                }
                None => None,
            },
        };
        if let Some(overlay) = overlay {
            out.push(Override {
                name: name.to_string(),
                at,
                overlay,
            });
        }
    }
    Ok(out)
}

/// For a template that renders every app container (`template`, named per container): each app
/// container merged over its rendered one (the user's fields win), with its index, as an override.
pub fn app_containers(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    template: &Container,
) -> Result<Vec<(usize, Container, Override)>, InjectError> {
    let mut out = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        if c.name == super::render::PROXY_NAME {
            continue;
        }
        let rendered = Container {
            name: c.name.clone(),
            ..template.clone()
        };
        let overlay = clean(serde_json::to_value(c).map_err(internal)?);
        let merged = apply(&rendered, &overlay)?;
        out.push((
            i,
            merged,
            Override {
                name: c.name.clone(),
                at: Some((List::Containers, i)),
                overlay,
            },
        ));
    }
    Ok(out)
}

/// The containers recorded in `proxy.istio.io/overrides`, with the list each is recorded under;
/// each checked to be a Container.
pub fn recorded(pod: &Pod) -> Result<Vec<(List, Value)>, InjectError> {
    let Some(raw) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::PROXY_OVERRIDES))
    else {
        return Ok(Vec::new());
    };
    let invalid = |problem: String| InjectError::InvalidPod {
        field: "metadata.annotations[proxy.istio.io/overrides]",
        problem,
    };
    let v: Value = serde_json::from_str(raw).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(invalid(
            "must be an object with containers and initContainers".into(),
        ));
    };
    let mut out = Vec::new();
    for (k, list) in m {
        let l = match k.as_str() {
            "containers" => List::Containers,
            "initContainers" => List::InitContainers,
            _ => {
                return Err(invalid(format!(
                    "unknown field {k:?} (containers, initContainers)"
                )));
            }
        };
        for c in list.as_array().into_iter().flatten() {
            serde_json::from_value::<Container>(c.clone())
                .map_err(|e| invalid(format!("{k}: not a container: {e}")))?;
            out.push((l, c.clone()));
        }
    }
    Ok(out)
}

/// Merges `overlay` over `rendered` as Istio does it: the rendered container over the user's,
/// then the user's over that again (so the user's fields win and the lists keep the API server's
/// order of that double merge: the injected mounts first, the user's own after them).
pub fn apply(rendered: &Container, overlay: &Value) -> Result<Container, InjectError> {
    let mut base = overlay.clone();
    merge_object(
        &mut base,
        &serde_json::to_value(rendered).map_err(internal)?,
        true,
    );
    merge_object(&mut base, overlay, true);
    serde_json::from_value(base).map_err(|e| InjectError::InvalidPod {
        field: "spec.containers[istio-proxy]",
        problem: format!("the user's container does not merge over the injected one: {e}"),
    })
}

/// The value of `proxy.istio.io/overrides`: the overlays, listed where the injected containers
/// went.
pub fn annotation(applied: &[(List, &Override)]) -> String {
    let mut m = Map::new();
    for list in [List::Containers, List::InitContainers] {
        let items: Vec<Value> = applied
            .iter()
            .filter(|(l, _)| *l == list)
            .map(|(_, o)| o.overlay.clone())
            .collect();
        if !items.is_empty() {
            let key = match list {
                List::Containers => "containers",
                List::InitContainers => "initContainers",
            };
            m.insert(key.into(), Value::Array(items));
        }
    }
    Value::Object(m).to_string()
}

/// `patch` merged over `base` with the API server's strategic-merge rules for a Container.
pub fn merge_container(base: &Value, patch: &Value) -> Value {
    let mut out = base.clone();
    merge_object(&mut out, patch, true);
    out
}

fn internal(e: serde_json::Error) -> InjectError {
    InjectError::Internal(e.to_string())
}

/// What Istio's Go structs drop before merging (`omitempty` zero values, nulls) and
/// `image: auto`.
fn clean(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|k, x| match x {
            Value::Null => false,
            Value::String(s) => !(s.is_empty() || (k == "image" && s == AUTO_IMAGE)),
            Value::Bool(b) => *b || !matches!(k.as_str(), "stdin" | "stdinOnce" | "tty"),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        });
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(Value::Object(p)) = m.get_mut(probe) {
                p.retain(|k, x| {
                    !(x.is_null()
                        || (x.as_i64() == Some(0)
                            && matches!(
                                k.as_str(),
                                "initialDelaySeconds"
                                    | "timeoutSeconds"
                                    | "periodSeconds"
                                    | "successThreshold"
                                    | "failureThreshold"
                            )))
                });
            }
        }
    }
    v
}

/// The merge key of a Container's list field, when it has the `merge` patch strategy.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "ports" => Some("containerPort"),
        "env" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        _ => None,
    }
}

/// Strategic merge of `patch` into `base`: objects key by key, `null` deletes, lists with a merge
/// key (only at the container's top level) united, other values replaced.
fn merge_object(base: &mut Value, patch: &Value, top: bool) {
    let (Value::Object(b), Value::Object(p)) = (&mut *base, patch) else {
        *base = patch.clone();
        return;
    };
    for (k, pv) in p {
        if pv.is_null() {
            b.remove(k);
            continue;
        }
        let key = if top { merge_key(k) } else { None };
        match (b.get_mut(k), pv, key) {
            (Some(Value::Array(bl)), Value::Array(pl), Some(key)) => {
                *bl = merge_list(bl, pl, key);
            }
            (Some(bv @ Value::Object(_)), Value::Object(_), _) => merge_object(bv, pv, false),
            _ => {
                b.insert(k.clone(), pv.clone());
            }
        }
    }
}

/// A list with a merge key, ordered as the API server orders it: the patch's items in the patch's
/// order, the base's other items kept where they were relative to them (Kubernetes'
/// `normalizeElementOrder`).
fn merge_list(base: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    let id = |v: &Value| v.get(key).cloned();
    let in_patch =
        |v: &Value| id(v).is_some_and(|k| patch.iter().any(|p| id(p) == Some(k.clone())));
    let base_pos =
        |v: &Value| id(v).and_then(|k| base.iter().position(|b| id(b) == Some(k.clone())));
    // The patch's items, merged over their base item when there is one, in patch order.
    let patched: Vec<Value> = patch
        .iter()
        .map(
            |p| match id(p).and_then(|k| base.iter().find(|b| id(b) == Some(k.clone()))) {
                Some(b) => {
                    let mut merged = b.clone();
                    merge_object(&mut merged, p, false);
                    merged
                }
                None => p.clone(),
            },
        )
        .collect();
    let server_only: Vec<&Value> = base.iter().filter(|b| !in_patch(b)).collect();
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let (mut i, mut j) = (0, 0);
    while i < server_only.len() || j < patched.len() {
        let take_server = if i >= server_only.len() {
            false
        } else if j >= patched.len() {
            true
        } else {
            matches!(
                (base_pos(server_only[i]), base_pos(&patched[j])),
                (Some(a), Some(b)) if a < b
            )
        };
        if take_server {
            out.push(server_only[i].clone());
            i += 1;
        } else {
            out.push(patched[j].clone());
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn user_fields_win_and_maps_merge() {
        let rendered = container(json!({
            "name": "istio-proxy", "image": "proxyv2:1.32", "args": ["proxy", "sidecar"],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2"}},
            "securityContext": {"runAsUser": 1337, "runAsNonRoot": true, "readOnlyRootFilesystem": true},
        }));
        let overlay = clean(json!({
            "name": "istio-proxy", "image": "auto", "args": ["proxy", "router"], "tty": false,
            "resources": {"requests": {"cpu": "123m"}},
            "securityContext": {"runAsUser": 1234, "readOnlyRootFilesystem": false},
        }));
        assert!(
            overlay.get("image").is_none(),
            "image auto keeps the injected image"
        );
        assert!(overlay.get("tty").is_none(), "Go drops a false tty");
        let merged = serde_json::to_value(apply(&rendered, &overlay).unwrap()).unwrap();
        assert_eq!(merged["image"], "proxyv2:1.32");
        assert_eq!(
            merged["args"],
            json!(["proxy", "router"]),
            "lists without a merge key are replaced"
        );
        assert_eq!(
            merged["resources"]["requests"],
            json!({"cpu": "123m", "memory": "128Mi"})
        );
        assert_eq!(merged["resources"]["limits"], json!({"cpu": "2"}));
        assert_eq!(
            merged["securityContext"],
            json!({"runAsUser": 1234, "runAsNonRoot": true, "readOnlyRootFilesystem": false})
        );
    }

    #[test]
    fn merge_key_lists_are_united_in_the_api_servers_order() {
        let base = [
            json!({"mountPath": "/a", "name": "a"}),
            json!({"mountPath": "/b", "name": "b"}),
        ];
        // New items of the patch come first, the base's own follow (Kubernetes' order).
        let patch = [json!({"mountPath": "/c", "name": "c"})];
        let names = |l: Vec<Value>| {
            l.iter()
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(merge_list(&base, &patch, "mountPath")),
            ["c", "a", "b"]
        );
        // An item in both is merged in place; base order is kept around it.
        let patch = [json!({"mountPath": "/b", "readOnly": true})];
        let merged = merge_list(&base, &patch, "mountPath");
        assert_eq!(names(merged.clone()), ["a", "b"]);
        assert_eq!(merged[1]["readOnly"], true);
    }

    #[test]
    fn env_merges_by_name() {
        let rendered = container(json!({"name": "istio-proxy", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}));
        let merged = apply(&rendered, &json!({"name": "istio-proxy", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]})).unwrap();
        let env: Vec<(String, String)> = merged
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        let want =
            [("A", "1"), ("B", "3"), ("C", "4")].map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(env, want);
    }

    #[test]
    fn recorded_overrides_must_be_containers() {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(
            [(
                keys::PROXY_OVERRIDES.to_string(),
                "{\"containers\":[{\"name\":1}]}".to_string(),
            )]
            .into(),
        );
        let e = find(&pod, &["istio-proxy"]).unwrap_err().to_string();
        assert!(e.contains("proxy.istio.io/overrides"), "{e}");
        pod.metadata.annotations = Some(
            [(
                keys::PROXY_OVERRIDES.to_string(),
                "{\"containers\":[{\"name\":\"istio-proxy\",\"tty\":true}]}".to_string(),
            )]
            .into(),
        );
        let found = find(&pod, &["istio-proxy"]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].overlay["tty"], true);
        assert!(found[0].at.is_none());
    }
}
