//! What the webhook tells a pod's owner about an admission, decided here and recorded by the
//! webhook as an Event on the owner (its controller: ReplicaSet, Job, StatefulSet, DaemonSet), as
//! Linkerd's injector does: admission warnings reach the user who ran `kubectl`, but for pods a
//! controller creates they would be lost, and a refusal shows on the owner only as the
//! controller's generic `FailedCreate`.
//!
//! - `InjectionRefused` when the injector refuses a pod for its own input (an invalid annotation),
//! - `InjectedWithWarnings` / `InjectionSkippedWithWarnings` when it admitted a pod but warned.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};

use crate::inject::{InjectError, Outcome, Reason};

/// Longest Event message (the API server allows 1 KiB for `note`).
const MAX_MESSAGE: usize = 1000;

/// One Event to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub owner: ObjectReference,
    pub reason: &'static str,
    pub message: String,
}

/// The pod's controller as an Event's object, when it has one (a bare pod has nothing that
/// outlives the refused request).
pub fn owner_of(pod: &Pod, namespace: &str) -> Option<ObjectReference> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    Some(ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(namespace.to_string()),
        uid: Some(owner.uid.clone()),
        ..Default::default()
    })
}

/// What to record for one admission, if anything.
pub fn note_for(
    pod: &Pod,
    namespace: &str,
    result: Result<&Outcome, &InjectError>,
) -> Option<Note> {
    let (reason, message) = match result {
        Err(e @ (InjectError::InvalidAnnotations(_) | InjectError::InvalidPod { .. })) => (
            "InjectionRefused",
            format!("the sidecar injector refused a pod: {e}"),
        ),
        Err(_) => return None,
        Ok(o) if o.warnings.is_empty() => return None,
        Ok(o) if o.reason == Reason::Injected => (
            "InjectedWithWarnings",
            format!("sidecar injected with warnings: {}", o.warnings.join("; ")),
        ),
        Ok(o) if o.reason == Reason::AlreadyInjected => return None,
        Ok(o) => (
            "InjectionSkippedWithWarnings",
            format!(
                "sidecar not injected ({}) with warnings: {}",
                o.reason,
                o.warnings.join("; ")
            ),
        ),
    };
    // Only now, when there is something to say: most admissions have nothing.
    let owner = owner_of(pod, namespace)?;
    Some(Note {
        owner,
        reason,
        message: truncate(message),
    })
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.owner_references = Some(vec![
            OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "not-the-controller".into(),
                uid: "u0".into(),
                ..Default::default()
            },
            OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-7d9f8".into(),
                uid: "u1".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        p
    }

    fn outcome(reason: Reason, warnings: &[&str]) -> Outcome {
        Outcome {
            reason,
            patch: json_patch::Patch::default(),
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
            explanation: Vec::new(),
        }
    }

    #[test]
    fn the_controller_owns_the_event() {
        let o = owner_of(&owned_pod(), "shop").unwrap();
        assert_eq!(o.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(o.name.as_deref(), Some("web-7d9f8"));
        assert_eq!(o.namespace.as_deref(), Some("shop"));
        assert!(owner_of(&Pod::default(), "shop").is_none(), "a bare pod");
    }

    #[test]
    fn what_is_recorded() {
        let pod = owned_pod();
        let refused = InjectError::InvalidPod {
            field: "spec",
            problem: "missing".into(),
        };
        let n = note_for(&pod, "shop", Err(&refused)).unwrap();
        assert_eq!(n.reason, "InjectionRefused");
        assert!(n.message.contains("spec"), "{}", n.message);
        let warned = outcome(
            Reason::Injected,
            &["unknown annotation sidecar.istio.io/proxyCpu"],
        );
        assert_eq!(
            note_for(&pod, "shop", Ok(&warned)).unwrap().reason,
            "InjectedWithWarnings"
        );
        let skipped = outcome(Reason::DisabledByAnnotation, &["w"]);
        assert_eq!(
            note_for(&pod, "shop", Ok(&skipped)).unwrap().reason,
            "InjectionSkippedWithWarnings"
        );
        assert!(
            note_for(&pod, "shop", Ok(&outcome(Reason::Injected, &[]))).is_none(),
            "nothing to say"
        );
        assert!(
            note_for(&Pod::default(), "shop", Err(&refused)).is_none(),
            "no owner"
        );
        assert!(
            note_for(&pod, "shop", Err(&InjectError::Internal("x".into()))).is_none(),
            "our own faults go to the log and metrics, not to the user's workload"
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "é".repeat(2000);
        let n = note_for(
            &owned_pod(),
            "shop",
            Ok(&outcome(Reason::Injected, &[&long])),
        )
        .unwrap();
        assert!(n.message.len() <= MAX_MESSAGE && n.message.ends_with("..."));
    }
}
