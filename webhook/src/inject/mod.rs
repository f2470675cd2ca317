//! Pure injection: `(pod, namespace, config) -> Result<Outcome, InjectError>`, no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::config::InjectorConfig;

/// The namespace as the injector sees it: name plus the labels/annotations that act as defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// One admission decision to make.
#[derive(Clone, Copy, Debug)]
pub struct InjectRequest<'a> {
    pub pod: &'a Pod,
    pub namespace: &'a NamespaceInfo,
    pub config: &'a InjectorConfig,
}

/// Why a pod was or was not injected; used as a metrics label and in logs and `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Injected,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Injected => "injected",
        }
    }
}

/// The result of a decision: the reason, the RFC 6902 patch (empty when not injected),
/// warnings for `kubectl` and the step-by-step explanation.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub reason: Reason,
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
    pub explanation: Vec<String>,
}

/// Refusal of a pod after a positive decision.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("invalid pod: {0}")]
    InvalidPod(String),
}

/// Decides and renders the injection for one pod.
pub fn inject(_req: &InjectRequest<'_>) -> Result<Outcome, InjectError> {
    todo!("implemented by the injection module")
}
