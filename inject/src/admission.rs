//! AdmissionReview decoding and encoding (`admission.k8s.io/v1`, and `v1beta1` like Istio).
//!
//! The review is decoded in two steps: first the envelope with `request.object` kept as raw JSON,
//! then, only for a pod CREATE, the object as a typed [`Pod`]. Requests the injector does not care
//! about (other kinds, other operations) thus never pay for decoding the object, and a non-pod
//! object cannot fail the typed decode. Nesting depth is bounded by serde_json's recursion limit
//! (128), so a deeply nested body is a decode error, not a stack overflow.
//!
//! Responses are built with kube's [`AdmissionResponse`] and written in the API server's own wire
//! format: `patch` as a base64 string, as Go encodes `[]byte` (and as Istio sends it). kube-core
//! would write the bytes as a JSON number array, which the API server also accepts but which is
//! about three times larger and several times slower to produce.

use k8s_openapi::api::core::v1::Pod;
use kube_core::admission::{AdmissionResponse, Operation};
use kube_core::response::{Status, StatusSummary};
use kube_core::{GroupVersionKind, GroupVersionResource};
use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `apiVersion` of the AdmissionReview we answer with by default.
pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
/// The older version Istio still accepts; the response echoes the request's version.
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
const KIND: &str = "AdmissionReview";
/// Decision reason for a request about another kind (or a pod subresource): allowed unchanged.
pub const SKIP_NOT_A_POD: &str = "not-a-pod";
/// Decision reason for a pod UPDATE/DELETE/CONNECT: allowed unchanged.
pub const SKIP_NOT_CREATE: &str = "not-create";

/// Why a request body is not an AdmissionReview we can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(#[source] serde_json::Error),
    #[error(
        "unsupported AdmissionReview apiVersion {api_version:?} kind {kind:?} (expected apiVersion {API_VERSION_V1:?} kind \"AdmissionReview\")"
    )]
    Unsupported { api_version: String, kind: String },
    #[error("AdmissionReview has no `request`")]
    MissingRequest,
}

/// Why `request.object` could not be used as a pod (answered with `allowed: false`).
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("AdmissionReview request for a pod CREATE has no `object`")]
    Missing,
    #[error("AdmissionReview `request.object` is not a valid Pod: {0}")]
    Json(#[source] serde_json::Error),
}

/// The envelope exactly as sent; unknown fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<WireRequest<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: bool,
}

/// A decoded AdmissionReview request; borrows the pod JSON from the body.
#[derive(Debug)]
pub struct Review<'a> {
    /// The request's `apiVersion`, echoed in the response.
    pub api_version: &'static str,
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub dry_run: bool,
    object: Option<&'a RawValue>,
}

/// What to do with a review: run the injector on a pod, or allow it untouched (with the reason).
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Pod,
    Skip(&'static str),
}

/// Decodes the envelope of an AdmissionReview body.
pub fn decode(body: &[u8]) -> Result<Review<'_>, ReviewError> {
    let wire: WireReview<'_> = serde_json::from_slice(body).map_err(ReviewError::Json)?;
    let api_version = match (wire.api_version.as_str(), wire.kind.as_str()) {
        (API_VERSION_V1, KIND) => API_VERSION_V1,
        (API_VERSION_V1BETA1, KIND) => API_VERSION_V1BETA1,
        _ => {
            return Err(ReviewError::Unsupported {
                api_version: wire.api_version,
                kind: wire.kind,
            });
        }
    };
    let req = wire.request.ok_or(ReviewError::MissingRequest)?;
    Ok(Review {
        api_version,
        uid: req.uid,
        kind: req.kind,
        resource: req.resource,
        sub_resource: req.sub_resource.filter(|s| !s.is_empty()),
        name: req.name,
        namespace: req.namespace.filter(|s| !s.is_empty()),
        operation: req.operation,
        dry_run: req.dry_run,
        object: req.object,
    })
}

impl Review<'_> {
    /// Only a CREATE of the pod resource itself (no subresource) is injected.
    pub fn target(&self) -> Target {
        let is_pod = self.kind.group.is_empty()
            && self.kind.kind == "Pod"
            && self.resource.resource == "pods"
            && self.sub_resource.is_none();
        if !is_pod {
            Target::Skip(SKIP_NOT_A_POD)
        } else if self.operation != Operation::Create {
            Target::Skip(SKIP_NOT_CREATE)
        } else {
            Target::Pod
        }
    }

    /// Decodes `request.object` as a pod, without `managedFields` (never needed, often large).
    pub fn pod(&self) -> Result<Pod, PodError> {
        let raw = self.object.ok_or(PodError::Missing)?;
        if raw.get() == "null" {
            return Err(PodError::Missing);
        }
        let mut pod: Pod = serde_json::from_str(raw.get()).map_err(PodError::Json)?;
        pod.metadata.managed_fields = None;
        Ok(pod)
    }

    /// The pod's namespace: the request's (authoritative), else the object's.
    pub fn namespace_of<'p>(&'p self, pod: &'p Pod) -> &'p str {
        self.namespace
            .as_deref()
            .or(pod.metadata.namespace.as_deref())
            .unwrap_or("default")
    }

    /// An allowed response with no patch.
    pub fn allow(&self) -> AdmissionResponse {
        let mut resp = AdmissionResponse::invalid("");
        resp.uid = self.uid.clone();
        resp.allowed = true;
        resp.result = Status::default();
        resp
    }

    /// A refusal shown to the user as `admission webhook ... denied the request: <message>`.
    pub fn deny(&self, code: u16, reason: &str, message: impl Into<String>) -> AdmissionResponse {
        let mut resp = self.allow();
        resp.allowed = false;
        resp.result = Status {
            status: Some(StatusSummary::Failure),
            code,
            message: message.into(),
            reason: reason.to_string(),
            ..Status::default()
        };
        resp
    }
}

/// The response AdmissionReview as the API server reads it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
}

/// Serializes the response as an AdmissionReview of the given `apiVersion`.
pub fn encode(api_version: &'static str, resp: &AdmissionResponse) -> serde_json::Result<Vec<u8>> {
    let patch = resp.patch.as_ref().map(|p| BASE64.encode(p));
    let capacity = 512 + patch.as_ref().map_or(0, String::len);
    let wire = WireReviewOut {
        api_version,
        kind: KIND,
        response: WireResponse {
            uid: &resp.uid,
            allowed: resp.allowed,
            status: &resp.result,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            audit_annotations: &resp.audit_annotations,
            warnings: resp.warnings.as_ref(),
        },
    };
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, &wire)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review(kind: &str, resource: &str, op: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": resource},
                "namespace": "shop",
                "operation": op,
                "userInfo": {"username": "me"},
                "object": object,
            }
        }))
        .unwrap()
    }

    fn pod_json() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": "web-",
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            },
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        })
    }

    #[test]
    fn pod_create_is_a_target_and_drops_managed_fields() {
        let body = review("Pod", "pods", "CREATE", pod_json());
        let r = decode(&body).unwrap();
        assert_eq!(r.target(), Target::Pod);
        assert_eq!(r.uid, "u-1");
        let pod = r.pod().unwrap();
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(r.namespace_of(&pod), "shop");
    }

    #[test]
    fn other_kinds_and_operations_are_skipped_without_decoding_the_object() {
        let deploy = review(
            "Deployment",
            "deployments",
            "CREATE",
            json!({"kind": "Deployment"}),
        );
        assert_eq!(decode(&deploy).unwrap().target(), Target::Skip("not-a-pod"));
        for op in ["DELETE", "CONNECT", "UPDATE"] {
            let body = review("Pod", "pods", op, json!(null));
            assert_eq!(
                decode(&body).unwrap().target(),
                Target::Skip("not-create"),
                "{op}"
            );
        }
    }

    #[test]
    fn unknown_api_version_is_rejected_with_the_value() {
        let mut v: Value =
            serde_json::from_slice(&review("Pod", "pods", "CREATE", pod_json())).unwrap();
        v["apiVersion"] = json!("admission.k8s.io/v2");
        let err = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, ReviewError::Unsupported { .. }));
        assert!(err.to_string().contains("admission.k8s.io/v2"), "{err}");
    }

    #[test]
    fn v1beta1_is_answered_in_v1beta1() {
        let mut v: Value =
            serde_json::from_slice(&review("Pod", "pods", "CREATE", pod_json())).unwrap();
        v["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let body = serde_json::to_vec(&v).unwrap();
        let r = decode(&body).unwrap();
        let out: Value =
            serde_json::from_slice(&encode(r.api_version, &r.allow()).unwrap()).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], true);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut body = String::from(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","x":"#,
        );
        body.push_str(&"[".repeat(100_000));
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(matches!(err, ReviewError::Json(_)), "{err}");
    }

    #[test]
    fn deep_nesting_in_an_unknown_pod_field_is_skipped_iteratively() {
        let mut body = String::from(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"extra":"#,
        );
        body.push_str(&"[".repeat(200_000));
        body.push_str(&"]".repeat(200_000));
        body.push_str("}}}");
        let r = decode(body.as_bytes()).unwrap();
        assert_eq!(r.pod().unwrap().metadata.name.as_deref(), Some("p"));
        // A typed field nested too deeply is refused, naming the problem.
        let bad = body.replace(r#""metadata":{"name":"p"}"#, r#""metadata":{"name":{}}"#);
        let r = decode(bad.as_bytes()).unwrap();
        assert!(matches!(r.pod(), Err(PodError::Json(_))));
    }

    #[test]
    fn patch_is_base64_json_patch_like_go_writes_it() {
        let body = review("Pod", "pods", "CREATE", pod_json());
        let r = decode(&body).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
        ]))
        .unwrap();
        let mut resp = r.allow().with_patch(patch.clone()).unwrap();
        resp.warnings = Some(vec!["careful".into()]);
        let out: Value = serde_json::from_slice(&encode(r.api_version, &resp).unwrap()).unwrap();
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        assert_eq!(out["response"]["warnings"], json!(["careful"]));
        let bytes = BASE64
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let back: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, patch);
    }

    #[test]
    fn deny_carries_code_and_message() {
        let body = review("Pod", "pods", "CREATE", pod_json());
        let r = decode(&body).unwrap();
        let out: Value = serde_json::from_slice(
            &encode(r.api_version, &r.deny(400, "BadRequest", "bad value \"x\"")).unwrap(),
        )
        .unwrap();
        assert_eq!(out["response"]["allowed"], false);
        assert_eq!(out["response"]["status"]["code"], 400);
        assert_eq!(out["response"]["status"]["message"], "bad value \"x\"");
        assert_eq!(out["response"]["uid"], "u-1");
    }
}
