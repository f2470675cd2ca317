//! Events on the workload that owns a pod (its controller: ReplicaSet, Job, StatefulSet,
//! DaemonSet), as Linkerd's injector records them: admission warnings reach the user who ran
//! `kubectl`, but for pods a controller creates they would be lost, and a refusal shows on the
//! owner only as the controller's generic `FailedCreate`. So the webhook records
//!
//! - `InjectionRefused` (Warning) when it refuses a pod for its own input (an invalid annotation),
//! - `InjectedWithWarnings` / `InjectionSkippedWithWarnings` (Warning) when it admitted a pod
//!   but warned (an unknown annotation key, an Istio template not built in, a dropped default).
//!
//! Recording never delays admission: notes go through a bounded queue to one task, and each
//! (owner, reason) is recorded at most once per [`WINDOW`]; a full queue drops the note and
//! counts it. What to say is decided in the core ([`skjold_inject::notes`]); the rate limit
//! ([`RateLimit`]) is tested without a cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
pub use skjold_inject::notes::{Note, note_for, owner_of};

/// At most one Event per owner and reason in this window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Owners remembered by the rate limit (older entries are forgotten first).
const MAX_TRACKED: usize = 10_000;
/// Notes waiting to be recorded; more are dropped.
const QUEUE: usize = 256;
/// Once per (owner uid, reason) per window.
#[derive(Default)]
pub struct RateLimit {
    last: HashMap<(String, &'static str), Instant>,
}

impl RateLimit {
    /// Whether `note` may be recorded now (and remembers it if so).
    pub fn allow(&mut self, note: &Note, now: Instant) -> bool {
        let key = (note.owner.uid.clone().unwrap_or_default(), note.reason);
        if let Some(t) = self.last.get(&key)
            && now.duration_since(*t) < WINDOW
        {
            return false;
        }
        if self.last.len() >= MAX_TRACKED {
            self.last.retain(|_, t| now.duration_since(*t) < WINDOW);
            if self.last.len() >= MAX_TRACKED {
                self.last.clear();
            }
        }
        self.last.insert(key, now);
        true
    }
}

/// The sending half: cheap to call from the admission path.
#[derive(Clone)]
pub struct WorkloadEvents {
    tx: mpsc::Sender<Note>,
    metrics: Arc<Metrics>,
}

impl WorkloadEvents {
    /// Starts the recording task.
    pub fn spawn(
        client: kube::Client,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Note>(QUEUE);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "skjold-webhook".into(),
                instance: Some(instance),
            },
        );
        let counts = metrics.clone();
        let task = tokio::spawn(async move {
            let mut limit = RateLimit::default();
            while let Some(note) = rx.recv().await {
                if !limit.allow(&note, Instant::now()) {
                    counts.record_workload_event("rate-limited");
                    continue;
                }
                let event = Event {
                    type_: EventType::Warning,
                    reason: note.reason.into(),
                    note: Some(note.message.clone()),
                    action: "Admit".into(),
                    secondary: None,
                };
                let published = recorder.publish(&event, &note.owner).await;
                counts.record_workload_event(if published.is_ok() {
                    "recorded"
                } else {
                    "failed"
                });
                if let Err(e) = published {
                    tracing::warn!(error = %e, reason = note.reason, owner = ?note.owner.name, "could not record an Event on the pod's owner");
                }
            }
        });
        (WorkloadEvents { tx, metrics }, task)
    }

    /// Queues a note; never waits (a full queue drops it, counted).
    pub fn note(&self, note: Note) {
        if self.tx.try_send(note).is_err() {
            self.metrics.record_workload_event("dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
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

    #[test]
    fn once_per_owner_and_reason_per_window() {
        let owner = owner_of(&owned_pod(), "shop").unwrap();
        let note = |reason| Note {
            owner: owner.clone(),
            reason,
            message: String::new(),
        };
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        assert!(limit.allow(&note("InjectionRefused"), t0));
        assert!(!limit.allow(&note("InjectionRefused"), t0 + Duration::from_secs(10)));
        assert!(limit.allow(&note("InjectedWithWarnings"), t0 + Duration::from_secs(10)));
        assert!(limit.allow(
            &note("InjectionRefused"),
            t0 + WINDOW + Duration::from_secs(1)
        ));
    }
}
