//! The pod's workload identity: workload name/kind (for `ISTIO_META_WORKLOAD_NAME`,
//! `ISTIO_META_OWNER`) and the canonical service name/revision labels.
//!
//! On CREATE a pod usually has no `metadata.name` yet (`generateName`), so the name comes from
//! the controller owner reference, then from `generateName`.

use k8s_openapi::api::core::v1::Pod;

use super::keys;

/// Kubernetes' maximum label value length.
const MAX_LABEL_VALUE: usize = 63;

/// The controlling workload of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub kind: String,
    /// `apps/v1`, `batch/v1`, `v1`, ...
    pub api_version: String,
}

impl Workload {
    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kinds>/<name>`, as pilot-agent expects.
    pub fn owner_uri(&self, namespace: &str) -> String {
        format!(
            "kubernetes://apis/{}/namespaces/{namespace}/{}s/{}",
            self.api_version,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Strips `-<suffix>` from `name` if present.
fn strip_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    name.strip_suffix(suffix)?.strip_suffix('-')
}

/// Derives the controlling workload, following Istio's conventions.
pub fn workload(pod: &Pod) -> Workload {
    let hash = label(pod, "pod-template-hash");
    let owner = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)).or(o.first()));
    if let Some(owner) = owner {
        if owner.kind == "ReplicaSet"
            && let Some(deployment) = hash.and_then(|h| strip_suffix(&owner.name, h))
        {
            return Workload {
                name: deployment.to_string(),
                kind: "Deployment".into(),
                api_version: "apps/v1".into(),
            };
        }
        if owner.kind == "Job"
            && let Some((cron, ts)) = owner.name.rsplit_once('-')
            && ts.len() >= 8
            && ts.bytes().all(|b| b.is_ascii_digit())
        {
            return Workload {
                name: cron.to_string(),
                kind: "CronJob".into(),
                api_version: "batch/v1".into(),
            };
        }
        return Workload {
            name: owner.name.clone(),
            kind: owner.kind.clone(),
            api_version: owner.api_version.clone(),
        };
    }
    let name = match pod.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => {
            let generated = pod.metadata.generate_name.as_deref().unwrap_or("");
            let base = generated.strip_suffix('-').unwrap_or(generated);
            if let Some(deployment) = hash.and_then(|h| strip_suffix(base, h)) {
                return Workload {
                    name: deployment.to_string(),
                    kind: "Deployment".into(),
                    api_version: "apps/v1".into(),
                };
            }
            base.to_string()
        }
    };
    Workload {
        name,
        kind: "Pod".into(),
        api_version: "v1".into(),
    }
}

/// Truncates to a valid label value (63 bytes, ending alphanumeric).
fn label_value(s: &str) -> String {
    let mut end = s.len().min(MAX_LABEL_VALUE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end]
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// `service.istio.io/canonical-name`: the label, `app.kubernetes.io/name`, `app`, else the workload.
pub fn canonical_name(pod: &Pod, workload: &Workload) -> String {
    let name = label(pod, keys::CANONICAL_NAME_LABEL)
        .or_else(|| label(pod, "app.kubernetes.io/name"))
        .or_else(|| label(pod, "app"))
        .unwrap_or(&workload.name);
    label_value(name)
}

/// `service.istio.io/canonical-revision`: the label, `app.kubernetes.io/version`, `version`,
/// else `latest`.
pub fn canonical_revision(pod: &Pod) -> String {
    let rev = label(pod, keys::CANONICAL_REVISION_LABEL)
        .or_else(|| label(pod, "app.kubernetes.io/version"))
        .or_else(|| label(pod, "version"))
        .unwrap_or("latest");
    label_value(rev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(generate: &str, labels: &[(&str, &str)], owner: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.generate_name = Some(generate.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.metadata.owner_references = owner.map(|(kind, name)| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: name.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        p
    }

    #[test]
    fn replicaset_owner_maps_to_deployment() {
        let p = pod(
            "web-7d4b9c-",
            &[("pod-template-hash", "7d4b9c")],
            Some(("ReplicaSet", "web-7d4b9c")),
        );
        let w = workload(&p);
        assert_eq!(w.name, "web");
        assert_eq!(w.kind, "Deployment");
        assert_eq!(
            w.owner_uri("demo"),
            "kubernetes://apis/apps/v1/namespaces/demo/deployments/web"
        );
        assert_eq!(canonical_name(&p, &w), "web");
        assert_eq!(canonical_revision(&p), "latest");
    }

    #[test]
    fn generate_name_without_owner() {
        let p = pod("batch-", &[], None);
        assert_eq!(workload(&p).name, "batch");
        let long = "a".repeat(70) + "-";
        assert_eq!(
            canonical_name(&p, &workload(&pod(&long, &[], None))).len(),
            63
        );
    }
}
