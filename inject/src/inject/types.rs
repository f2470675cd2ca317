//! The injector's vocabulary: what it is asked (the request, the namespace, what the nodes
//! support) and what it answers (reason, outcome, refusal). A leaf module: every step of the
//! injection uses these types and none of them depends on a step.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use crate::config::PreparedConfig;

/// Upper bound on warnings about unknown/deprecated annotation keys for one pod.
pub const MAX_KEY_WARNINGS: usize = 10;

/// Upper bound on `containers` + `initContainers` of a pod we accept to process.
pub const MAX_CONTAINERS: usize = 100;

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
    pub config: &'a PreparedConfig,
    /// What the cluster's nodes support (the webhook's Node watch; offline: unknown).
    pub nodes: NodeSupport,
}

/// Whether the cluster's kubelets run native sidecars, for Istio's `auto` rule (used when neither
/// the pod's `sidecar.istio.io/nativeSidecar` nor the config's `proxy.nativeSidecar` decides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeSupport {
    /// No nodes known (offline injection, or the Node watch has not listed yet): classic.
    #[default]
    Unknown,
    /// Every node's kubelet is 1.33 or newer.
    NativeSidecars,
    /// At least one node is older (or its version cannot be read).
    Classic,
}

/// Kubernetes' native sidecars are stable from kubelet 1.33 (Istio's `DetectNativeSidecar`).
pub const NATIVE_SIDECAR_MIN_MINOR: u32 = 33;

/// Whether a kubelet version (`v1.34.4`, `v1.33.1-eks-abc`) runs native sidecars; an unreadable
/// version does not.
pub fn kubelet_supports_native_sidecars(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    matches!((major, minor), (Some(1), Some(m)) if m >= NATIVE_SIDECAR_MIN_MINOR)
        || matches!(major, Some(m) if m > 1)
}

/// Why a pod was or was not injected; used as a metrics label and in logs and `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The sidecar was added.
    Injected,
    /// Pod label `sidecar.istio.io/inject: "false"`.
    DisabledByLabel,
    /// Pod (or namespace) annotation `sidecar.istio.io/inject: "false"`.
    DisabledByAnnotation,
    /// `spec.hostNetwork: true`: capture would hit the node.
    HostNetwork,
    /// kube-system, kube-public, kube-node-lease, local-path-storage.
    IgnoredNamespace,
    /// Status annotation or `istio-proxy` container present: idempotent skip.
    AlreadyInjected,
    /// No opt-in and the config's policy is `disabled`.
    PolicyDisabled,
    /// A `neverInjectSelector` matched.
    NeverInjectSelector,
}

impl Reason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [Reason; 8] = [
        Reason::Injected,
        Reason::DisabledByLabel,
        Reason::DisabledByAnnotation,
        Reason::HostNetwork,
        Reason::IgnoredNamespace,
        Reason::AlreadyInjected,
        Reason::PolicyDisabled,
        Reason::NeverInjectSelector,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Injected => "injected",
            Reason::DisabledByLabel => "disabled-by-label",
            Reason::DisabledByAnnotation => "disabled-by-annotation",
            Reason::HostNetwork => "host-network",
            Reason::IgnoredNamespace => "ignored-namespace",
            Reason::AlreadyInjected => "already-injected",
            Reason::PolicyDisabled => "policy-disabled",
            Reason::NeverInjectSelector => "never-inject-selector",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// One or more honoured annotations have invalid values; all are listed.
    #[error("invalid sidecar annotations: {}", ProblemList(.0))]
    InvalidAnnotations(Vec<AnnotationProblem>),
    /// Hostile or broken input the injector refuses to process.
    #[error("invalid pod: {field}: {problem}")]
    InvalidPod {
        field: &'static str,
        problem: String,
    },
    /// The injector config cannot be applied (e.g. a bad selector operator).
    #[error("injector config field {field} has invalid value {value:?}: {problem}")]
    InvalidConfig {
        field: String,
        value: String,
        problem: String,
    },
    /// Serialization of the pod failed; not caused by user input in practice.
    #[error("internal error building the patch: {0}")]
    Internal(String),
}

impl InjectError {
    /// Short kebab-case label for metrics (`skjold_webhook_denials_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            InjectError::InvalidAnnotations(_) => "invalid-annotation",
            InjectError::InvalidPod { .. } => "invalid-pod",
            InjectError::InvalidConfig { .. } => "invalid-config",
            InjectError::Internal(_) => "internal-error",
        }
    }
}

/// Renders `k="v": problem; k2="v2": problem2`, shortening huge values.
struct ProblemList<'a>(&'a [AnnotationProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if p.value.len() > 128 {
                let mut end = 64;
                while !p.value.is_char_boundary(end) {
                    end -= 1;
                }
                write!(
                    f,
                    "{}=\"{}...\" ({} bytes)",
                    p.annotation,
                    p.value[..end].escape_debug(),
                    p.value.len()
                )?;
            } else {
                write!(f, "{}=\"{}\"", p.annotation, p.value.escape_debug())?;
            }
            if p.source == Source::Namespace {
                f.write_str(" (namespace default)")?;
            }
            write!(f, ": {}", p.problem)?;
        }
        Ok(())
    }
}

/// Where an effective annotation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Pod,
    Namespace,
}

/// One invalid annotation: which key, which value, what is wrong, and where it was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationProblem {
    pub annotation: String,
    pub value: String,
    pub problem: String,
    pub source: Source,
}
