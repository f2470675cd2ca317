//! Small Kubernetes helpers shared by the scenarios: unique namespaces, minimal Pods and
//! Deployments, and reading back what the API server stored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::json;

use crate::wait::{Poll, wait_for};

/// The proxy and init container names Istio (and Skjold) inject.
pub const PROXY: &str = "istio-proxy";
pub const INIT: &str = "istio-init";

/// A namespace name unique to this process and call: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a uniquely named namespace with `labels` and waits (30 s) for its `default`
/// ServiceAccount, without which the ServiceAccount admission plugin refuses Pods.
pub async fn create_namespace(
    client: &Client,
    prefix: &str,
    labels: &[(&str, &str)],
) -> Result<String> {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(to_map(labels)),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(
        &format!("ServiceAccount {name}/default"),
        Duration::from_secs(30),
        || {
            let sas = sas.clone();
            async move {
                match sas.get_opt("default").await {
                    Ok(Some(_)) => Poll::Ready(()),
                    Ok(None) => Poll::Pending("not created yet by kube-controller-manager".into()),
                    Err(e) => Poll::Pending(e.to_string()),
                }
            }
        },
    )
    .await?;
    Ok(name)
}

/// Deletes a namespace without waiting (test cleanup; errors are logged, not raised).
/// Runs `f` in a fresh namespace of `cluster` (created with `labels`, deleted afterwards whatever
/// `f` returns) and returns what `f` returned.
pub async fn in_namespace<T, F, Fut>(
    cluster: &crate::Cluster,
    prefix: &str,
    labels: &[(&str, &str)],
    f: F,
) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let client = cluster.client().await?;
    let ns = create_namespace(&client, prefix, labels).await?;
    let result = f(ns.clone()).await;
    delete_namespace(&client, &ns).await;
    result
}

pub async fn delete_namespace(client: &Client, name: &str) {
    if let Err(e) = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        tracing::warn!("deleting namespace {name}: {e}");
    }
}

/// A minimal Pod (one `app` container that is never pulled: there is no kubelet).
pub fn pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(to_map(labels)),
            annotations: Some(to_map(annotations)),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Deployment of `replicas` Pods labelled `app=<name>` plus `pod_labels`.
pub fn deployment(name: &str, replicas: i32, pod_labels: &[(&str, &str)]) -> Result<Deployment> {
    let mut labels = to_map(pod_labels);
    labels.insert("app".into(), name.into());
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
            }
        }
    }))
    .context("building a Deployment")
}

/// Creates `pod` in `namespace` and returns the object the API server stored (after all
/// mutating admission).
pub async fn create_pod(client: &Client, namespace: &str, pod: &Pod) -> kube::Result<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), pod)
        .await
}

/// Server-side dry run of a Pod create: the full admission chain runs (webhooks included,
/// they declare `sideEffects: None`) but nothing is stored.
pub async fn dry_run_pod(client: &Client, namespace: &str, pod: &Pod) -> kube::Result<Pod> {
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&pp, pod)
        .await
}

/// Waits (60 s) until the ReplicaSet controller has created `count` Pods labelled `app=<app>`.
pub async fn wait_for_pods(
    client: &Client,
    namespace: &str,
    app: &str,
    count: usize,
) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("app={app}"));
    wait_for(
        &format!("{count} pod(s) of Deployment {namespace}/{app}"),
        Duration::from_secs(60),
        || {
            let (pods, lp) = (pods.clone(), lp.clone());
            async move {
                match pods.list(&lp).await {
                    Ok(list) if list.items.len() >= count => Poll::Ready(list.items),
                    Ok(list) => Poll::Pending(format!("{} pod(s) so far", list.items.len())),
                    Err(e) => Poll::Pending(e.to_string()),
                }
            }
        },
    )
    .await
}

/// Names of the regular and init containers of a stored Pod.
pub fn container_names(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let spec = pod.spec.as_ref();
    let names = |cs: Option<&Vec<Container>>| -> Vec<String> {
        cs.map(|cs| cs.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    };
    (
        names(spec.map(|s| &s.containers)),
        names(spec.and_then(|s| s.init_containers.as_ref())),
    )
}

/// True when the Pod carries the sidecar (as a container or a native-sidecar init container).
pub fn is_injected(pod: &Pod) -> bool {
    let (containers, init) = container_names(pod);
    containers.iter().chain(init.iter()).any(|c| c == PROXY)
}

/// The named container (regular or init) of a stored Pod.
pub fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// `requests`/`limits` of a container as plain strings (as the API server stored them; it
/// canonicalises quantities, e.g. `2000m` is stored as `2` and `1024Mi` as `1Gi`).
pub fn resources(c: &Container) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let to_strings =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
                .unwrap_or_default()
        };
    let r = c.resources.as_ref();
    (
        to_strings(r.and_then(|r| r.requests.as_ref())),
        to_strings(r.and_then(|r| r.limits.as_ref())),
    )
}

/// The value of env var `name` on a container.
pub fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// The message of an API error (e.g. a webhook's denial), or the error's text.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn to_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("a"), unique_name("a"));
    }

    #[test]
    fn injected_detection_covers_native_sidecars() {
        let mut p = pod("p", &[], &[]);
        assert!(!is_injected(&p));
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers = Some(vec![Container {
            name: PROXY.into(),
            ..Default::default()
        }]);
        assert!(is_injected(&p));
        assert_eq!(container_names(&p).1, vec![PROXY.to_string()]);
    }

    #[test]
    fn deployment_selects_its_pods() {
        let d = deployment("web", 2, &[("sidecar.istio.io/inject", "true")]).unwrap();
        let spec = d.spec.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            labels.get("sidecar.istio.io/inject").map(String::as_str),
            Some("true")
        );
        assert_eq!(spec.replicas, Some(2));
    }
}
