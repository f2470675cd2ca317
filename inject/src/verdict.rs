//! One admission's answer: the AdmissionReview body in, the response body and what the edge
//! records out (the metric label, the note for the pod's owner, a fault for the log).
//!
//! This is the whole decision the webhook makes per request; the server only reads the body,
//! looks things up in its caches (through [`Lookup`]) and writes the bytes. Fuzzing and the
//! benchmarks call the same function, so they exercise what the server does, not a copy.

use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use kube_core::admission::AdmissionResponse;

use crate::admission::{self, Review, ReviewError, Target};
use crate::config::PreparedConfig;
use crate::inject::{self, InjectError, InjectRequest, NamespaceInfo, NodeSupport, Reason};
use crate::notes::{self, Note};

/// What a verdict needs to know about the cluster: the webhook answers from its watch-fed
/// caches, offline callers from fixed values ([`Fixed`]).
pub trait Lookup {
    type ConfigError: Display;
    /// The injector config of a revision (`""` and `default` are the default revision).
    fn config(&self, revision: &str) -> Result<Arc<PreparedConfig>, Self::ConfigError>;
    /// The pod's namespace as last seen (labels and annotations); unknown names get empty ones.
    fn namespace(&self, name: &str) -> Arc<NamespaceInfo>;
    /// What the cluster's kubelets support.
    fn nodes(&self) -> NodeSupport;
}

/// How an admission ended, for the request metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Allowed with a patch.
    Injected,
    /// Allowed without a patch (another kind or operation, or the injector chose not to inject).
    Allowed,
    /// Refused (`allowed: false`): the user's input, or an unknown revision.
    Denied,
    /// Refused because the injector failed (a bug); see [`Verdict::fault`].
    InternalError,
}

/// One admission's outcome.
#[derive(Debug)]
pub struct Verdict {
    pub kind: Kind,
    /// The decision reason (metric label, audit annotation), e.g. `injected`, `invalid-annotation`.
    pub reason: &'static str,
    pub response: AdmissionResponse,
    /// The pod's namespace (from the request, else the pod).
    pub pod_namespace: String,
    /// `generateName` (pods of workloads have no name yet), else `name`.
    pub pod_name: String,
    /// What to tell the pod's owner (never for dry runs: the webhook has `sideEffects: None`).
    pub note: Option<Note>,
    /// An injector panic's message, for the log (the user only sees "internal error").
    pub fault: Option<String>,
}

/// A request body that gets no AdmissionReview answer.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not an AdmissionReview we can read (HTTP 400).
    #[error(transparent)]
    Review(#[from] ReviewError),
    /// The response could not be encoded (HTTP 500; a bug).
    #[error("cannot encode AdmissionReview response: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The answer to one request body: the verdict and the encoded AdmissionReview response, in the
/// request's `apiVersion`.
pub fn respond(
    body: &[u8],
    revision: &str,
    lookup: &impl Lookup,
) -> Result<(Verdict, Vec<u8>), BodyError> {
    let review = admission::decode(body)?;
    let verdict = verdict(&review, revision, lookup);
    let json =
        admission::encode(review.api_version, &verdict.response).map_err(BodyError::Encode)?;
    Ok((verdict, json))
}

/// The verdict on one decoded review for the injector of `revision`.
pub fn verdict(review: &Review<'_>, revision: &str, lookup: &impl Lookup) -> Verdict {
    let request_ns = || review.namespace.clone().unwrap_or_default();
    if let Target::Skip(reason) = review.target() {
        return Verdict {
            kind: Kind::Allowed,
            reason,
            response: review.allow(),
            pod_namespace: request_ns(),
            pod_name: review.name.clone(),
            note: None,
            fault: None,
        };
    }
    let denied =
        |reason: &'static str, code: u16, status: &str, message: String, ns, name| Verdict {
            kind: Kind::Denied,
            reason,
            response: review.deny(code, status, message),
            pod_namespace: ns,
            pod_name: name,
            note: None,
            fault: None,
        };
    let pod = match review.pod() {
        Ok(pod) => pod,
        Err(err) => {
            let (ns, name) = (request_ns(), review.name.clone());
            return denied("invalid-pod", 400, "BadRequest", err.to_string(), ns, name);
        }
    };
    let ns_name = review.namespace_of(&pod).to_string();
    let pod_name = pod
        .metadata
        .generate_name
        .clone()
        .filter(|g| !g.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let config = match lookup.config(revision) {
        Ok(config) => config,
        Err(err) => {
            let message = err.to_string();
            return denied(
                "unknown-revision",
                500,
                "InternalError",
                message,
                ns_name,
                pod_name,
            );
        }
    };
    let namespace = lookup.namespace(&ns_name);
    let request = InjectRequest {
        pod: &pod,
        namespace: &namespace,
        config: &config,
        nodes: lookup.nodes(),
    };
    let result = match catch_unwind(AssertUnwindSafe(|| inject::inject(&request))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return Verdict {
                kind: Kind::InternalError,
                reason: "internal-error",
                response: review.deny(
                    500,
                    "InternalError",
                    "internal error in the sidecar injector; see the webhook's log",
                ),
                pod_namespace: ns_name,
                pod_name,
                note: None,
                fault: Some(format!("injector panicked: {what}")),
            };
        }
    };
    let note = if review.dry_run {
        None
    } else {
        notes::note_for(&pod, &ns_name, result.as_ref())
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            let (code, status) = denial_status(&err);
            let mut v = denied(
                err.reason(),
                code,
                status,
                err.to_string(),
                ns_name,
                pod_name,
            );
            v.note = note;
            return v;
        }
    };
    let reason = outcome.reason.as_str();
    let mut response = review.allow();
    if !outcome.warnings.is_empty() {
        response.warnings = Some(outcome.warnings);
    }
    // With reinvocationPolicy IfNeeded the API server calls again after the ServiceAccount
    // plugin has touched the injected containers; that call answers already-injected, and audit
    // annotations may not change value within one request. Record the first decision only.
    if outcome.reason != Reason::AlreadyInjected {
        response
            .audit_annotations
            .insert("reason".to_string(), reason.to_string());
    }
    let (kind, response) = if outcome.patch.0.is_empty() {
        (Kind::Allowed, response)
    } else {
        match response.with_patch(outcome.patch) {
            Ok(r) => (Kind::Injected, r),
            Err(err) => {
                return Verdict {
                    kind: Kind::InternalError,
                    reason: "internal-error",
                    response: review.deny(
                        500,
                        "InternalError",
                        "internal error: cannot serialize the injection patch",
                    ),
                    pod_namespace: ns_name,
                    pod_name,
                    note,
                    fault: Some(format!("cannot serialize the injection patch: {err}")),
                };
            }
        }
    };
    Verdict {
        kind,
        reason,
        response,
        pod_namespace: ns_name,
        pod_name,
        note,
        fault: None,
    }
}

/// The AdmissionResponse status of an injector refusal: the user's input (400) or ours (500).
fn denial_status(err: &InjectError) -> (u16, &'static str) {
    match err {
        InjectError::InvalidAnnotations(_) | InjectError::InvalidPod { .. } => (400, "BadRequest"),
        InjectError::InvalidConfig { .. } | InjectError::Internal(_) => (500, "InternalError"),
    }
}

/// A [`Lookup`] with fixed answers, for offline callers (fuzzing, benchmarks, tests): one config
/// for every revision, every namespace with the same labels and annotations.
#[derive(Clone, Debug)]
pub struct Fixed {
    pub config: Arc<PreparedConfig>,
    /// Labels and annotations every namespace has (its name is the one asked for).
    pub namespace: NamespaceInfo,
    pub nodes: NodeSupport,
}

impl Fixed {
    pub fn new(config: PreparedConfig) -> Self {
        Fixed {
            config: Arc::new(config),
            namespace: NamespaceInfo::default(),
            nodes: NodeSupport::Unknown,
        }
    }
}

impl Lookup for Fixed {
    type ConfigError = std::convert::Infallible;
    fn config(&self, _revision: &str) -> Result<Arc<PreparedConfig>, Self::ConfigError> {
        Ok(self.config.clone())
    }
    fn namespace(&self, name: &str) -> Arc<NamespaceInfo> {
        Arc::new(NamespaceInfo {
            name: name.to_string(),
            ..self.namespace.clone()
        })
    }
    fn nodes(&self) -> NodeSupport {
        self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review(object: Value, dry_run: bool) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "dryRun": dry_run,
                "object": object,
            }
        }))
        .unwrap()
    }

    fn owned_pod(annotations: Value) -> Value {
        json!({
            "metadata": {
                "generateName": "web-7d9f8-",
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f8", "uid": "u1", "controller": true}]
            },
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        })
    }

    fn injecting() -> Fixed {
        let mut f = Fixed::new(PreparedConfig::default());
        f.namespace
            .labels
            .insert("istio-injection".into(), "enabled".into());
        f
    }

    #[test]
    fn an_injected_pod_gets_a_patch_and_its_reason() {
        let (v, json) = respond(&review(owned_pod(json!({})), false), "", &injecting()).unwrap();
        assert_eq!(v.kind, Kind::Injected);
        assert_eq!(v.reason, "injected");
        assert_eq!(
            (v.pod_namespace.as_str(), v.pod_name.as_str()),
            ("shop", "web-7d9f8-")
        );
        let out: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        assert_eq!(out["response"]["auditAnnotations"]["reason"], "injected");
    }

    #[test]
    fn a_bad_annotation_is_refused_and_told_to_the_owner_except_in_dry_runs() {
        let pod = owned_pod(json!({"sidecar.istio.io/proxyCPU": "lots"}));
        let (v, json) = respond(&review(pod.clone(), false), "", &injecting()).unwrap();
        assert_eq!(v.kind, Kind::Denied);
        let out: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(out["response"]["allowed"], false);
        assert_eq!(out["response"]["status"]["code"], 400);
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("sidecar.istio.io/proxyCPU") && message.contains("lots"),
            "{message}"
        );
        let note = v.note.expect("a note for the ReplicaSet");
        assert_eq!(note.reason, "InjectionRefused");
        assert_eq!(note.owner.name.as_deref(), Some("web-7d9f8"));
        let (dry, _) = respond(&review(pod, true), "", &injecting()).unwrap();
        assert_eq!(dry.kind, Kind::Denied);
        assert!(dry.note.is_none(), "no side effects for a dry run");
    }

    #[test]
    fn other_kinds_and_bodies() {
        let mut body: Value = serde_json::from_slice(&review(json!({}), false)).unwrap();
        body["request"]["kind"]["kind"] = json!("ConfigMap");
        body["request"]["resource"]["resource"] = json!("configmaps");
        let (v, _) = respond(&serde_json::to_vec(&body).unwrap(), "", &injecting()).unwrap();
        assert_eq!(
            (v.kind, v.reason),
            (Kind::Allowed, admission::SKIP_NOT_A_POD)
        );
        assert!(matches!(
            respond(b"{", "", &injecting()),
            Err(BodyError::Review(_))
        ));
        let (v, _) = respond(&review(json!("not a pod"), false), "", &injecting()).unwrap();
        assert_eq!((v.kind, v.reason), (Kind::Denied, "invalid-pod"));
    }

    #[test]
    fn an_unknown_revision_is_refused_by_name() {
        struct NoRevision;
        impl Lookup for NoRevision {
            type ConfigError = String;
            fn config(&self, revision: &str) -> Result<Arc<PreparedConfig>, String> {
                Err(format!("no injector config for revision {revision:?}"))
            }
            fn namespace(&self, name: &str) -> Arc<NamespaceInfo> {
                injecting().namespace(name)
            }
            fn nodes(&self) -> NodeSupport {
                NodeSupport::Unknown
            }
        }
        let (v, json) =
            respond(&review(owned_pod(json!({})), false), "canary", &NoRevision).unwrap();
        assert_eq!((v.kind, v.reason), (Kind::Denied, "unknown-revision"));
        assert!(String::from_utf8_lossy(&json).contains(r#"revision \"canary\""#));
    }
}
