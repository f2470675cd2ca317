//! Writing rendered objects: server-side apply with the operator's field manager, pruning of
//! objects a MeshConfig no longer renders, and removal of cluster-scoped objects on delete.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};

use crate::render::ManagedObject;
use crate::render::names::{FIELD_MANAGER, owned_selector};

/// What a server-side apply did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        }
    }
}

/// A failed write, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("could not convert {kind}/{name} for apply: {source}")]
    Convert {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not {verb} {kind}/{name}: {source}")]
    Kube {
        verb: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

fn resource_of(obj: &ManagedObject) -> ApiResource {
    match obj {
        ManagedObject::ServiceAccount(_) => ApiResource::erase::<ServiceAccount>(&()),
        ManagedObject::ClusterRole(_) => ApiResource::erase::<ClusterRole>(&()),
        ManagedObject::ClusterRoleBinding(_) => ApiResource::erase::<ClusterRoleBinding>(&()),
        ManagedObject::Role(_) => ApiResource::erase::<Role>(&()),
        ManagedObject::RoleBinding(_) => ApiResource::erase::<RoleBinding>(&()),
        ManagedObject::Deployment(_) => ApiResource::erase::<Deployment>(&()),
        ManagedObject::Service(_) => ApiResource::erase::<Service>(&()),
        ManagedObject::PodDisruptionBudget(_) => ApiResource::erase::<PodDisruptionBudget>(&()),
        ManagedObject::ConfigMap(_) => ApiResource::erase::<ConfigMap>(&()),
        ManagedObject::MutatingWebhookConfiguration(_) => {
            ApiResource::erase::<MutatingWebhookConfiguration>(&())
        }
        ManagedObject::ValidatingWebhookConfiguration(_) => {
            ApiResource::erase::<ValidatingWebhookConfiguration>(&())
        }
    }
}

/// Every kind the operator may have written, with whether it is namespaced (for pruning).
pub fn managed_kinds() -> Vec<(ApiResource, bool)> {
    vec![
        (ApiResource::erase::<ServiceAccount>(&()), true),
        (ApiResource::erase::<Role>(&()), true),
        (ApiResource::erase::<RoleBinding>(&()), true),
        (ApiResource::erase::<Deployment>(&()), true),
        (ApiResource::erase::<Service>(&()), true),
        (ApiResource::erase::<PodDisruptionBudget>(&()), true),
        (ApiResource::erase::<ConfigMap>(&()), true),
        (ApiResource::erase::<ClusterRole>(&()), false),
        (ApiResource::erase::<ClusterRoleBinding>(&()), false),
        (
            ApiResource::erase::<MutatingWebhookConfiguration>(&()),
            false,
        ),
        (
            ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
            false,
        ),
    ]
}

fn api_for(client: &kube::Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Server-side applies one object (force: the operator owns these fields) and reports whether
/// it was created, changed, or already as desired. The applied object is returned so callers can
/// read its status (e.g. Deployment availability).
pub async fn apply(
    client: &kube::Client,
    obj: &ManagedObject,
) -> Result<(Change, DynamicObject), ApplyError> {
    let ar = resource_of(obj);
    let name = obj.name().to_string();
    let api = api_for(client, &ar, obj.meta().namespace.as_deref());
    let kube_err = |verb| {
        let name = name.clone();
        move |source| ApplyError::Kube {
            verb,
            kind: obj.kind().to_string(),
            name,
            source,
        }
    };
    let body = serde_json::to_value(obj).map_err(|source| ApplyError::Convert {
        kind: obj.kind(),
        name: name.clone(),
        source,
    })?;
    let before = api.get_opt(&name).await.map_err(kube_err("read"))?;
    let after = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_err("apply"))?;
    let change = match before {
        None => Change::Created,
        Some(b) if b.metadata.resource_version != after.metadata.resource_version => {
            Change::Updated
        }
        Some(_) => Change::Unchanged,
    };
    Ok((change, after))
}

/// An object found by label that the current render no longer contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub kind: String,
    pub name: String,
}

/// Deletes objects labelled as rendered by this MeshConfig that are not in `keep`
/// (`(kind, name)` pairs), e.g. the egress gateway after switching from `demo` to `default`.
/// With `keep` empty and `namespaced == false` this is the finalizer's cluster-scoped cleanup.
pub async fn prune(
    client: &kube::Client,
    meshconfig: &str,
    namespace: &str,
    keep: &[(String, String)],
    cluster_scoped_only: bool,
) -> Result<Vec<Stale>, ApplyError> {
    let selector = owned_selector(meshconfig, namespace);
    let lp = ListParams::default().labels(&selector);
    // One LIST per kind, concurrently: pruning runs on every reconciliation.
    let kinds = managed_kinds()
        .into_iter()
        .filter(|(_, namespaced)| !(cluster_scoped_only && *namespaced));
    let listed = futures::future::join_all(kinds.map(|(ar, namespaced)| {
        let api = api_for(client, &ar, namespaced.then_some(namespace));
        let lp = lp.clone();
        async move {
            let list = api.list_metadata(&lp).await;
            (ar, api, list)
        }
    }))
    .await;
    let mut removed = Vec::new();
    for (ar, api, list) in listed {
        let list = list.map_err(|source| ApplyError::Kube {
            verb: "list",
            kind: ar.kind.clone(),
            name: selector.clone(),
            source,
        })?;
        for item in list.items {
            let Some(name) = item.metadata.name.clone() else {
                continue;
            };
            if item.metadata.deletion_timestamp.is_some()
                || keep.iter().any(|(k, n)| *k == ar.kind && *n == name)
            {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(ApplyError::Kube {
                        verb: "delete",
                        kind: ar.kind.clone(),
                        name,
                        source,
                    });
                }
            }
            removed.push(Stale {
                kind: ar.kind.clone(),
                name,
            });
        }
    }
    Ok(removed)
}

/// Whether a Deployment applied by [`apply`] has its desired replicas available.
pub fn deployment_available(obj: &DynamicObject) -> (bool, String) {
    let desired = obj
        .data
        .pointer("/spec/replicas")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(1);
    let available = obj
        .data
        .pointer("/status/availableReplicas")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    let ok = available >= desired.min(1);
    (ok, format!("{available}/{desired} replicas available"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn availability() {
        let d = dynamic(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 2}, "status": {"availableReplicas": 1}
        }));
        assert_eq!(
            deployment_available(&d),
            (true, "1/2 replicas available".into())
        );
        let d = dynamic(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 1}
        }));
        assert!(!deployment_available(&d).0);
        let d = dynamic(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 0}
        }));
        assert!(deployment_available(&d).0, "scaled to zero is as desired");
    }

    #[test]
    fn every_rendered_kind_is_prunable() {
        let kinds: Vec<String> = managed_kinds().into_iter().map(|(ar, _)| ar.kind).collect();
        let r = crate::render::render(
            &crate::render::tests::meshconfig(crate::crd::Profile::Demo, ""),
            &crate::render::tests::ctx(),
        )
        .unwrap();
        for (_, o) in &r.objects {
            assert!(
                kinds.contains(&o.kind().to_string()),
                "{} not prunable",
                o.kind()
            );
            assert_eq!(resource_of(o).kind, o.kind());
        }
    }
}
