//! Lease-based leader election (`coordination.k8s.io/v1`), so that of several operator replicas
//! exactly one reconciles. kube-runtime 5 has no election helper; this follows client-go's
//! algorithm: take the Lease when it is free or expired, renew it well before it expires, and
//! write only with the `resourceVersion` just read (optimistic concurrency), so two candidates
//! can never both win the same round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use tracing::{debug, info, warn};

/// Election timing and identity.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (pod name + random suffix).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews (must be well below `lease_duration`).
    pub renew_period: Duration,
    /// How often a follower retries.
    pub retry_period: Duration,
    /// The holder's own Pod, set as the Lease's owner whenever this replica takes it: when the
    /// holding pod is deleted (a failover, `helm uninstall`) the garbage collector removes the
    /// Lease even if the replica could not delete it itself (its RBAC already gone).
    pub owner: Option<OwnerReference>,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
            owner: None,
        }
    }

    pub fn owned_by(mut self, owner: Option<OwnerReference>) -> Self {
        self.owner = owner;
        self
    }
}

/// The owner reference of Pod `name`/`uid` (from the downward API), for the Lease.
pub fn pod_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: name.into(),
        uid: uid.into(),
        ..OwnerReference::default()
    }
}

/// Why an election step failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("could not {verb} Lease {namespace}/{name}: {source}")]
    Kube {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Lease {namespace}/{name} is now held by {holder:?}")]
    Lost {
        namespace: String,
        name: String,
        holder: String,
    },
    #[error("could not renew Lease {namespace}/{name} within {deadline:?}")]
    RenewDeadline {
        namespace: String,
        name: String,
        deadline: Duration,
    },
}

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Free or expired: take it (a new term).
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds a live Lease.
    Wait { holder: String },
}

/// Pure election rule.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let expires = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|t| t.0.checked_add(duration).ok());
    match expires {
        Some(expires) if expires > now => Decision::Wait { holder },
        _ => Decision::Acquire,
    }
}

/// Runs the election for one replica.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    fn err(&self, verb: &'static str) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        move |source| LeaderError::Kube {
            verb,
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source: Box::new(source),
        }
    }

    /// One round: returns true when this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(self.err("read"))?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.cfg.identity,
            now,
        );
        let holder_secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        match (decision, current) {
            (Decision::Wait { holder }, _) => {
                debug!(%holder, lease = %self.cfg.name, "lease held by another replica");
                Ok(false)
            }
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        owner_references: self.cfg.owner.clone().map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(holder_secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    // Another replica created it first: it won this round.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(self.err("create")(e)),
                }
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if decision == Decision::Acquire {
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    spec.acquire_time = Some(MicroTime(now));
                    spec.holder_identity = Some(self.cfg.identity.clone());
                    lease.metadata.owner_references = self.cfg.owner.clone().map(|o| vec![o]);
                }
                spec.lease_duration_seconds = Some(holder_secs);
                spec.renew_time = Some(MicroTime(now));
                // `lease` still carries the resourceVersion we read: a concurrent writer makes
                // this replace fail with 409 instead of both replicas believing they lead.
                match self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(self.err("update")(e)),
                }
            }
        }
    }

    /// Blocks until this replica is the leader.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews until leadership is lost; returns why. The caller must stop reconciling then.
    pub async fn hold(&self) -> LeaderError {
        // Give up a little before the Lease could expire, so a successor never overlaps us.
        let deadline = self
            .cfg
            .lease_duration
            .saturating_sub(self.cfg.retry_period);
        let mut last_renew = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renew = tokio::time::Instant::now(),
                Ok(false) => {
                    let holder = self
                        .api
                        .get_opt(&self.cfg.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec?.holder_identity)
                        .unwrap_or_default();
                    return LeaderError::Lost {
                        namespace: self.cfg.namespace.clone(),
                        name: self.cfg.name.clone(),
                        holder,
                    };
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    if last_renew.elapsed() >= deadline {
                        return LeaderError::RenewDeadline {
                            namespace: self.cfg.namespace.clone(),
                            name: self.cfg.name.clone(),
                            deadline,
                        };
                    }
                }
            }
        }
    }

    /// Gives the Lease up on clean shutdown: deletes it, on the condition that it is still the
    /// version this replica holds (a successor's Lease is never touched), so a standby takes
    /// over at once instead of waiting for expiry, and `helm uninstall` leaves no Lease behind.
    pub async fn release(&self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.cfg.identity.as_str()) {
            return;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.cfg.name, &params).await {
            Ok(_) => info!(lease = %self.cfg.name, "released the lease (deleted)"),
            Err(e) => warn!(error = %e, "could not release lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                now.checked_sub(SignedDuration::from_secs(renewed_secs_ago))
                    .unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn free_or_missing_lease_is_acquired() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "me", now), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "me", now),
            Decision::Acquire
        );
    }

    #[test]
    fn live_lease_of_other_is_respected_expired_is_taken() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&spec("other", 3)), "me", now),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&spec("other", 30)), "me", now),
            Decision::Acquire
        );
        assert_eq!(decide(Some(&spec("me", 3)), "me", now), Decision::Renew);
    }
}
