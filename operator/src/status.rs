//! Pure status computation: conditions (`Reconciled`, `Ready`, `Degraded`), per-component state,
//! and the revision-conflict rule. Kept free of I/O so the transitions are unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{ComponentState, ComponentStatus, MeshConfig, MeshConfigStatus};

pub const RECONCILED: &str = "Reconciled";
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";

/// What applying one rendered object gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// Written (created, updated or unchanged).
    Object,
    /// A Deployment written; `available` and its replica message from its status.
    Deployment { available: bool, message: String },
    /// Not written; the error text.
    Failed(String),
}

/// One object's apply result, tagged with its component and `Kind/name`.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectResult {
    pub component: &'static str,
    pub object: String,
    pub applied: Applied,
}

/// Each component's state from its objects' results: `Failed` if any object failed (first error
/// wins), else `Progressing` if any Deployment is not available (naming it), else `Available`
/// if it has a Deployment, else `Applied`; components switched off are `Disabled`.
pub fn component_states(
    components: &[(&'static str, bool)],
    results: &[ObjectResult],
) -> BTreeMap<String, ComponentStatus> {
    let mut out: BTreeMap<String, ComponentStatus> = components
        .iter()
        .map(|(c, enabled)| {
            let state = if *enabled {
                ComponentState::Applied
            } else {
                ComponentState::Disabled
            };
            (
                (*c).to_string(),
                ComponentStatus {
                    state,
                    message: String::new(),
                },
            )
        })
        .collect();
    for r in results {
        let entry = out.entry(r.component.to_string()).or_default();
        match (&r.applied, entry.state) {
            (_, ComponentState::Failed) => {}
            (Applied::Failed(e), _) => {
                entry.state = ComponentState::Failed;
                entry.message = e.clone();
            }
            (
                Applied::Deployment {
                    available: false,
                    message,
                },
                _,
            ) => {
                entry.state = ComponentState::Progressing;
                entry.message = format!("{}: {message}", r.object);
            }
            (
                Applied::Deployment {
                    available: true,
                    message,
                },
                s,
            ) if s != ComponentState::Progressing => {
                entry.state = ComponentState::Available;
                entry.message = message.clone();
            }
            _ => {}
        }
    }
    out
}

/// Sets one condition, keeping `lastTransitionTime` when the status did not flip (so a steady
/// state produces an identical status and no write).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// The outcome of one reconciliation, in the terms status needs.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub revision: String,
    pub access_log_file: String,
    pub components: BTreeMap<String, ComponentStatus>,
    /// Set when nothing could be applied (conflict, invalid spec): `(reason, message)`.
    pub blocked: Option<(String, String)>,
    pub certificate_not_after: Option<String>,
}

impl Outcome {
    /// Nothing was applied (revision conflict, invalid spec): `reason` and `message` say why.
    pub fn blocked(revision: String, reason: &str, message: String) -> Outcome {
        Outcome {
            revision,
            blocked: Some((reason.to_string(), message)),
            ..Default::default()
        }
    }
}

/// Builds the new status from the previous one and this reconciliation's outcome.
pub fn build(
    previous: Option<&MeshConfigStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    now: Timestamp,
) -> MeshConfigStatus {
    let mut conditions = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    let failed: Vec<&String> = outcome
        .components
        .iter()
        .filter(|(_, c)| c.state == ComponentState::Failed)
        .map(|(n, _)| n)
        .collect();
    let progressing: Vec<&String> = outcome
        .components
        .iter()
        .filter(|(_, c)| c.state == ComponentState::Progressing)
        .map(|(n, _)| n)
        .collect();
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");

    if let Some((reason, message)) = &outcome.blocked {
        set_condition(
            &mut conditions,
            RECONCILED,
            false,
            reason,
            message,
            generation,
            now,
        );
        set_condition(
            &mut conditions,
            DEGRADED,
            true,
            reason,
            message,
            generation,
            now,
        );
        set_condition(
            &mut conditions,
            READY,
            false,
            reason,
            message,
            generation,
            now,
        );
    } else if !failed.is_empty() {
        let msg = format!("failed to apply: {}", list(&failed));
        set_condition(
            &mut conditions,
            RECONCILED,
            false,
            "ApplyFailed",
            &msg,
            generation,
            now,
        );
        set_condition(
            &mut conditions,
            DEGRADED,
            true,
            "ApplyFailed",
            &msg,
            generation,
            now,
        );
        set_condition(
            &mut conditions,
            READY,
            false,
            "ApplyFailed",
            &msg,
            generation,
            now,
        );
    } else {
        let applied = "all managed objects match the spec";
        set_condition(
            &mut conditions,
            RECONCILED,
            true,
            "Applied",
            applied,
            generation,
            now,
        );
        set_condition(
            &mut conditions,
            DEGRADED,
            false,
            "AsExpected",
            "",
            generation,
            now,
        );
        if progressing.is_empty() {
            set_condition(
                &mut conditions,
                READY,
                true,
                "ComponentsAvailable",
                "",
                generation,
                now,
            );
        } else {
            let msg = format!("waiting for: {}", list(&progressing));
            set_condition(
                &mut conditions,
                READY,
                false,
                "ComponentsProgressing",
                &msg,
                generation,
                now,
            );
        }
    }

    MeshConfigStatus {
        observed_generation: generation,
        revision: outcome.revision.clone(),
        access_log_file: outcome.access_log_file.clone(),
        conditions,
        components: if outcome.blocked.is_some() {
            previous.map(|s| s.components.clone()).unwrap_or_default()
        } else {
            outcome.components.clone()
        },
        webhook_certificate_not_after: outcome
            .certificate_not_after
            .clone()
            .or_else(|| previous.and_then(|s| s.webhook_certificate_not_after.clone())),
    }
}

/// If another live MeshConfig already claims `me`'s revision, the name of the one that wins
/// (oldest first, then by name). The loser is reported Degraded instead of fighting over objects.
pub fn revision_conflict(me: &MeshConfig, all: &[std::sync::Arc<MeshConfig>]) -> Option<String> {
    let my_rev = me.spec.revision_name();
    let key = |m: &MeshConfig| {
        (
            m.metadata.creation_timestamp.as_ref().map(|t| t.0),
            m.metadata.name.clone().unwrap_or_default(),
        )
    };
    let mine = key(me);
    all.iter()
        .filter(|o| o.metadata.uid != me.metadata.uid)
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| o.spec.revision_name() == my_rev)
        .filter(|o| key(o) < mine)
        .min_by_key(|o| key(o))
        .and_then(|o| o.metadata.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;
    use std::sync::Arc;

    fn comp(state: ComponentState) -> ComponentStatus {
        ComponentStatus {
            state,
            message: String::new(),
        }
    }

    #[test]
    fn component_states_from_object_results() {
        let r = |component, object: &str, applied| ObjectResult {
            component,
            object: object.into(),
            applied,
        };
        let dep = |available, message: &str| Applied::Deployment {
            available,
            message: message.into(),
        };
        let states = component_states(
            &[
                ("istiod", true),
                ("ingressGateway", true),
                ("egressGateway", false),
                ("webhook", true),
                ("meshConfig", true),
            ],
            &[
                r("istiod", "ServiceAccount/istiod", Applied::Object),
                r(
                    "istiod",
                    "Deployment/istiod",
                    dep(true, "1/1 replicas available"),
                ),
                r(
                    "ingressGateway",
                    "Deployment/istio-ingressgateway",
                    dep(false, "0/1 replicas available"),
                ),
                r(
                    "webhook",
                    "MutatingWebhookConfiguration/x",
                    Applied::Failed("forbidden".into()),
                ),
                r("webhook", "Deployment/late", dep(true, "ok")),
                r("meshConfig", "ConfigMap/istio", Applied::Object),
            ],
        );
        assert_eq!(states["istiod"].state, ComponentState::Available);
        assert_eq!(states["istiod"].message, "1/1 replicas available");
        assert_eq!(states["ingressGateway"].state, ComponentState::Progressing);
        assert_eq!(
            states["ingressGateway"].message,
            "Deployment/istio-ingressgateway: 0/1 replicas available"
        );
        assert_eq!(states["egressGateway"].state, ComponentState::Disabled);
        // A failure is not hidden by a later success of the same component.
        assert_eq!(states["webhook"].state, ComponentState::Failed);
        assert_eq!(states["webhook"].message, "forbidden");
        assert_eq!(states["meshConfig"].state, ComponentState::Applied);
        // The wire format stays the strings users and skjoldctl read.
        assert_eq!(
            serde_json::to_value(ComponentState::Progressing).unwrap(),
            "Progressing"
        );
    }

    fn cond<'a>(s: &'a MeshConfigStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_when_all_available_and_transition_time_is_sticky() {
        let t0 = Timestamp::now();
        let outcome = Outcome {
            revision: "default".into(),
            components: BTreeMap::from([
                ("istiod".into(), comp(ComponentState::Available)),
                ("injector".into(), comp(ComponentState::Applied)),
            ]),
            ..Default::default()
        };
        let s1 = build(None, Some(1), &outcome, t0);
        assert_eq!(cond(&s1, READY).status, "True");
        assert_eq!(cond(&s1, DEGRADED).status, "False");
        assert_eq!(s1.observed_generation, Some(1));
        let t1 = t0.checked_add(SignedDuration::from_secs(60)).unwrap();
        let s2 = build(Some(&s1), Some(1), &outcome, t1);
        assert_eq!(s1, s2, "steady state must not change status");
    }

    #[test]
    fn progressing_and_failed_components() {
        let now = Timestamp::now();
        let mut outcome = Outcome {
            components: BTreeMap::from([("istiod".into(), comp(ComponentState::Progressing))]),
            ..Default::default()
        };
        let s = build(None, Some(2), &outcome, now);
        assert_eq!(cond(&s, READY).reason, "ComponentsProgressing");
        assert!(cond(&s, READY).message.contains("istiod"));
        assert_eq!(cond(&s, RECONCILED).status, "True");
        outcome
            .components
            .insert("webhook".into(), comp(ComponentState::Failed));
        let s = build(Some(&s), Some(2), &outcome, now);
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!(cond(&s, RECONCILED).reason, "ApplyFailed");
        assert!(cond(&s, RECONCILED).message.contains("webhook"));
    }

    #[test]
    fn blocked_keeps_previous_components() {
        let now = Timestamp::now();
        let ok = Outcome {
            components: BTreeMap::from([("istiod".into(), comp(ComponentState::Available))]),
            ..Default::default()
        };
        let s1 = build(None, Some(1), &ok, now);
        let blocked = Outcome {
            blocked: Some(("RevisionConflict".into(), "taken by a".into())),
            ..Default::default()
        };
        let s2 = build(Some(&s1), Some(2), &blocked, now);
        assert_eq!(cond(&s2, DEGRADED).reason, "RevisionConflict");
        assert_eq!(cond(&s2, READY).status, "False");
        assert_eq!(s2.components, s1.components);
    }

    fn mc(name: &str, rev: &str, created_secs: i64) -> Arc<MeshConfig> {
        let mut m = MeshConfig::new(name, serde_json::from_str("{}").unwrap());
        m.spec.revision = rev.into();
        m.metadata.uid = Some(format!("uid-{name}"));
        m.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_700_000_000 + created_secs).unwrap(),
        ));
        Arc::new(m)
    }

    #[test]
    fn oldest_meshconfig_wins_a_revision() {
        let a = mc("a", "", 0);
        let b = mc("b", "", 10);
        let c = mc("c", "canary", 5);
        let all = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(revision_conflict(&a, &all), None);
        assert_eq!(revision_conflict(&b, &all), Some("a".into()));
        assert_eq!(revision_conflict(&c, &all), None);
        // Same timestamp: the name breaks the tie.
        let d = mc("d", "canary", 5);
        assert_eq!(
            revision_conflict(&d, &[c.clone(), d.clone()]),
            Some("c".into())
        );
    }
}
