//! The controller: watches MeshConfigs and every object they render (drift is repaired within
//! seconds), renders, server-side applies, prunes, and reports status and Events.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::apply::{self, ApplyError, Change};
use crate::certs::{self, CertTarget, CertsError};
use crate::crd::{FINALIZER, MeshConfig};
use crate::metrics::{ChangeLabels, ErrorLabels, Metrics, ResultLabels};
use crate::render::names::{
    FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MESHCONFIG_LABEL, MESHCONFIG_NAMESPACE_LABEL,
};
use crate::render::{self, ManagedObject, RenderContext, WebhookTarget};
use crate::status::{self, Outcome};

/// How often a healthy MeshConfig is re-checked even without events.
const RESYNC: Duration = Duration::from_secs(300);
/// Retry delay after a failed reconciliation.
const RETRY: Duration = Duration::from_secs(5);

/// Static settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Control-plane namespace: MeshConfigs are watched and objects written here.
    pub namespace: String,
    pub webhook: WebhookTarget,
    pub cert: CertSource,
    /// Out-of-cluster development: where the API server calls istiod's `/validate`.
    pub istiod_validation_url: Option<String>,
}

/// Who provides the webhook's serving certificate and the `caBundle`.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// The operator issues and rotates them (default).
    Issue(Box<CertTarget>),
    /// cert-manager issues the Secret from this `Certificate` (`namespace/name`); its cainjector
    /// fills `caBundle` because the MWC carries `cert-manager.io/inject-ca-from`.
    CertManager { certificate: String },
}

/// Shared state of all reconciliations.
pub struct Context {
    pub client: kube::Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Serialises certificate issuance across MeshConfigs (one Secret for all revisions).
    cert_lock: tokio::sync::Mutex<()>,
    /// The controller's MeshConfig cache, set when the controller starts.
    store: std::sync::OnceLock<Store<MeshConfig>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance,
            },
        );
        Context {
            client,
            settings,
            metrics,
            recorder,
            cert_lock: tokio::sync::Mutex::new(()),
            store: std::sync::OnceLock::new(),
        }
    }
}

/// Why a reconciliation failed (it is retried after [`RETRY`]).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("MeshConfig has no metadata.{0}")]
    MissingMetadata(&'static str),
    #[error(transparent)]
    Certs(#[from] CertsError),
    #[error("{failed} of {total} objects failed to apply; first: {first}")]
    Apply {
        failed: usize,
        total: usize,
        first: Box<ApplyError>,
    },
    #[error("pruning stale objects failed: {0}")]
    Prune(#[source] Box<ApplyError>),
    #[error("could not list MeshConfigs in {namespace}: {source}")]
    List {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("could not write status of MeshConfig {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

impl ReconcileError {
    /// Low-cardinality label for `reconcile_errors_total{reason}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::MissingMetadata(_) => "metadata",
            ReconcileError::Certs(_) => "certificates",
            ReconcileError::Apply { .. } => "apply",
            ReconcileError::Prune(_) => "prune",
            ReconcileError::List { .. } => "list",
            ReconcileError::Status { .. } => "status",
            ReconcileError::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }
}

/// Entry point of one reconciliation: finalizer handling, then apply or cleanup.
pub async fn reconcile(mc: Arc<MeshConfig>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = mc.name_any();
    let namespace = mc.namespace().unwrap_or_default();
    let span = info_span!("reconcile", meshconfig = %name, namespace = %namespace);
    async move {
        let _timer = ctx.metrics.time_reconcile();
        let api: Api<MeshConfig> = Api::namespaced(ctx.client.clone(), &namespace);
        let result = finalizer(&api, FINALIZER, mc, |event| async {
            match event {
                FinalizerEvent::Apply(mc) => apply_meshconfig(&mc, &ctx).await,
                FinalizerEvent::Cleanup(mc) => cleanup(&mc, &ctx).await,
            }
        })
        .await
        .or_else(|e| match e {
            // The object vanished between cleanup and finalizer removal (a second, racing
            // cleanup already removed it): nothing left to do.
            kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
                if s.code == 404 =>
            {
                Ok(Action::await_change())
            }
            e => Err(ReconcileError::Finalizer(Box::new(e))),
        });
        let result_label = if result.is_ok() { "ok" } else { "error" };
        ctx.metrics
            .reconciles
            .get_or_create(&ResultLabels {
                result: result_label,
            })
            .inc();
        result
    }
    .instrument(span)
    .await
}

/// Retry policy: count the error, log it, try again shortly.
pub fn error_policy(mc: Arc<MeshConfig>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels {
            reason: err.metric_label(),
        })
        .inc();
    warn!(meshconfig = %mc.name_any(), error = %err, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

async fn publish(
    ctx: &Context,
    mc: &MeshConfig,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &mc.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish Event");
    }
}

/// One reconciliation of a live MeshConfig: conflict -> certificates -> render -> apply ->
/// prune -> status. Each phase is a function below; this one only sequences them.
async fn apply_meshconfig(mc: &MeshConfig, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = mc
        .metadata
        .name
        .clone()
        .ok_or(ReconcileError::MissingMetadata("name"))?;
    let revision = mc.spec.revision_name().to_string();
    let t0 = std::time::Instant::now();

    if let Some(msg) = revision_conflict(mc, ctx).await? {
        let outcome = Outcome::blocked(revision, "RevisionConflict", msg);
        write_status(ctx, mc, &name, &outcome).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let certs = certificates(mc, ctx).await?;
    let rendered = match render_objects(mc, ctx, &certs).await {
        Ok(r) => r,
        Err(msg) => {
            // A spec the API server accepted but we cannot render: the user must fix it, so
            // report it and wait for the next change rather than retrying hot.
            let outcome = Outcome::blocked(revision, "InvalidSpec", msg);
            write_status(ctx, mc, &name, &outcome).await?;
            return Ok(Action::requeue(RESYNC));
        }
    };
    let t_certs = t0.elapsed();
    let (results, failures) = apply_objects(mc, ctx, &rendered).await;
    let t_apply = t0.elapsed();
    let pruned = if failures.is_empty() {
        prune_stale(ctx, &name, &rendered).await
    } else {
        Ok(Vec::new())
    };

    let outcome = Outcome {
        revision,
        access_log_file: rendered.effective.access_log_file.clone(),
        components: status::component_states(&rendered.components, &results),
        blocked: None,
        certificate_not_after: certs.not_after.map(|t| t.to_string()),
    };
    write_status(ctx, mc, &name, &outcome).await?;
    debug!(
        certs_ms = t_certs.as_millis() as u64,
        applied_ms = t_apply.as_millis() as u64,
        done_ms = t0.elapsed().as_millis() as u64,
        "reconcile phases (cumulative)"
    );

    report_pruned(ctx, mc, pruned?).await;
    let total = rendered.objects.len();
    let failed = failures.len();
    if let Some(first) = failures.into_iter().next() {
        return Err(ReconcileError::Apply {
            failed,
            total,
            first: Box::new(first),
        });
    }
    // Come back when the certificate is due, or at the regular resync, whichever is first.
    let until_rotation = certs
        .next_check
        .map(|t| {
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::from_secs(1))
        })
        .unwrap_or(RESYNC);
    Ok(Action::requeue(
        until_rotation.clamp(Duration::from_secs(1), RESYNC),
    ))
}

/// Two MeshConfigs claiming one revision would overwrite each other's objects: the younger one
/// is refused (the message says by whom, and is published as an Event).
async fn revision_conflict(
    mc: &MeshConfig,
    ctx: &Context,
) -> Result<Option<String>, ReconcileError> {
    let ns = &ctx.settings.namespace;
    let all: Vec<Arc<MeshConfig>> = match ctx.store.get() {
        // The controller's cache already holds every MeshConfig of the namespace.
        Some(store) => store.state(),
        None => {
            let api: Api<MeshConfig> = Api::namespaced(ctx.client.clone(), ns);
            let list =
                api.list(&ListParams::default())
                    .await
                    .map_err(|source| ReconcileError::List {
                        namespace: ns.clone(),
                        source,
                    })?;
            list.items.into_iter().map(Arc::new).collect()
        }
    };
    let Some(winner) = status::revision_conflict(mc, &all) else {
        return Ok(None);
    };
    let msg = format!(
        "revision {:?} is already managed by MeshConfig {ns}/{winner}; nothing applied",
        mc.spec.revision_name()
    );
    publish(
        ctx,
        mc,
        EventType::Warning,
        "RevisionConflict",
        "Reconcile",
        msg.clone(),
    )
    .await;
    Ok(Some(msg))
}

/// What the certificate phase hands on: the `caBundle` (or cert-manager's injection source) and
/// when to look again.
struct CertState {
    ca_bundle: String,
    ca_injection_from: Option<String>,
    next_check: Option<SystemTime>,
    not_after: Option<Timestamp>,
}

/// Issues or rotates the webhook's certificates (or, in cert-manager mode, leaves them to it).
async fn certificates(mc: &MeshConfig, ctx: &Context) -> Result<CertState, ReconcileError> {
    let target = match &ctx.settings.cert {
        CertSource::CertManager { certificate } => {
            return Ok(CertState {
                ca_bundle: String::new(),
                ca_injection_from: Some(certificate.clone()),
                next_check: None,
                not_after: None,
            });
        }
        CertSource::Issue(target) => target,
    };
    let plan = {
        let _guard = ctx.cert_lock.lock().await;
        certs::ensure(&ctx.client, target).await?
    };
    if plan.changed() {
        let note = format!("webhook certificates updated: {}", plan.reasons.join("; "));
        info!(%note);
        publish(
            ctx,
            mc,
            EventType::Normal,
            "CertificatesUpdated",
            "Rotate",
            note,
        )
        .await;
    }
    let not_after = Timestamp::try_from(plan.serving_not_after).ok();
    if let Some(t) = not_after {
        ctx.metrics.cert_expiry.set(t.as_second());
    }
    Ok(CertState {
        ca_bundle: plan.bundle,
        ca_injection_from: None,
        next_check: Some(plan.next_check),
        not_after,
    })
}

/// Renders every object of the MeshConfig; an error is the user's to fix (published as Event).
async fn render_objects(
    mc: &MeshConfig,
    ctx: &Context,
    certs: &CertState,
) -> Result<render::Rendered, String> {
    let render_ctx = RenderContext {
        namespace: ctx.settings.namespace.clone(),
        webhook: ctx.settings.webhook.clone(),
        ca_bundle: certs.ca_bundle.clone(),
        ca_injection_from: certs.ca_injection_from.clone(),
        istiod_validation_url: ctx.settings.istiod_validation_url.clone(),
    };
    match render::render(mc, &render_ctx) {
        Ok(r) => Ok(r),
        Err(e) => {
            let msg = e.to_string();
            publish(
                ctx,
                mc,
                EventType::Warning,
                "InvalidSpec",
                "Render",
                msg.clone(),
            )
            .await;
            Err(msg)
        }
    }
}

/// Server-side applies all objects concurrently; records changes and failures as Events and
/// returns, per object, what status needs to know.
async fn apply_objects(
    mc: &MeshConfig,
    ctx: &Context,
    rendered: &render::Rendered,
) -> (Vec<status::ObjectResult>, Vec<ApplyError>) {
    let results = futures::future::join_all(
        rendered
            .objects
            .iter()
            .map(|(comp, obj)| async move { (*comp, obj, apply::apply(&ctx.client, obj).await) }),
    )
    .await;
    let mut out = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (component, obj, result) in results {
        let applied = match result {
            Ok((change, applied)) => {
                if change != Change::Unchanged {
                    record_change(ctx, mc, obj, change).await;
                }
                match obj {
                    ManagedObject::Deployment(_) => {
                        let (available, message) = apply::deployment_available(&applied);
                        status::Applied::Deployment { available, message }
                    }
                    _ => status::Applied::Object,
                }
            }
            Err(e) => {
                publish(
                    ctx,
                    mc,
                    EventType::Warning,
                    "ApplyFailed",
                    "Apply",
                    e.to_string(),
                )
                .await;
                let applied = status::Applied::Failed(e.to_string());
                failures.push(e);
                applied
            }
        };
        out.push(status::ObjectResult {
            component,
            object: obj.describe(),
            applied,
        });
    }
    (out, failures)
}

/// Deletes objects this MeshConfig rendered before but no longer does.
async fn prune_stale(
    ctx: &Context,
    name: &str,
    rendered: &render::Rendered,
) -> Result<Vec<apply::Stale>, ReconcileError> {
    let keep: Vec<(String, String)> = rendered
        .objects
        .iter()
        .map(|(_, o)| (o.kind().to_string(), o.name().to_string()))
        .collect();
    apply::prune(&ctx.client, name, &ctx.settings.namespace, &keep, false)
        .await
        .map_err(|e| ReconcileError::Prune(Box::new(e)))
}

async fn report_pruned(ctx: &Context, mc: &MeshConfig, removed: Vec<apply::Stale>) {
    for stale in removed {
        ctx.metrics
            .object_changes
            .get_or_create(&ChangeLabels {
                kind: "stale",
                change: "pruned",
            })
            .inc();
        publish(
            ctx,
            mc,
            EventType::Normal,
            "Pruned",
            "Prune",
            format!("deleted {}/{} (no longer rendered)", stale.kind, stale.name),
        )
        .await;
    }
}

async fn record_change(ctx: &Context, mc: &MeshConfig, obj: &ManagedObject, change: Change) {
    ctx.metrics
        .object_changes
        .get_or_create(&ChangeLabels {
            kind: obj.kind(),
            change: change.as_str(),
        })
        .inc();
    let (reason, verb) = match change {
        Change::Created => ("Created", "created"),
        _ => ("Updated", "updated"),
    };
    debug!(object = %obj.describe(), change = change.as_str(), "applied");
    publish(
        ctx,
        mc,
        EventType::Normal,
        reason,
        "Apply",
        format!("{verb} {}", obj.describe()),
    )
    .await;
}

async fn write_status(
    ctx: &Context,
    mc: &MeshConfig,
    name: &str,
    outcome: &Outcome,
) -> Result<(), ReconcileError> {
    let new = status::build(
        mc.status.as_ref(),
        mc.metadata.generation,
        outcome,
        Timestamp::now(),
    );
    if mc.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<MeshConfig> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let body = json!({
        "apiVersion": MeshConfig::api_version(&()),
        "kind": MeshConfig::kind(&()),
        "status": new,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| ReconcileError::Status {
        name: name.to_string(),
        source,
    })?;
    Ok(())
}

/// Removes what owner references cannot: the cluster-scoped MWC and ClusterRole/Binding.
/// Namespaced objects are garbage-collected through their owner reference.
async fn cleanup(mc: &MeshConfig, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = mc
        .metadata
        .name
        .clone()
        .ok_or(ReconcileError::MissingMetadata("name"))?;
    let removed = apply::prune(&ctx.client, &name, &ctx.settings.namespace, &[], true)
        .await
        .map_err(|e| ReconcileError::Prune(Box::new(e)))?;
    let list: Vec<String> = removed
        .iter()
        .map(|s| format!("{}/{}", s.kind, s.name))
        .collect();
    info!(removed = ?list, "cleaned up cluster-scoped objects");
    publish(
        ctx,
        mc,
        EventType::Normal,
        "CleanedUp",
        "Cleanup",
        format!(
            "deleted {}",
            if list.is_empty() {
                "nothing".into()
            } else {
                list.join(", ")
            }
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// Maps a labelled cluster-scoped object back to the MeshConfig that rendered it.
fn owner_from_labels(obj: &impl ResourceExt, namespace: &str) -> Option<ObjectRef<MeshConfig>> {
    let labels = obj.labels();
    if labels.get(MESHCONFIG_NAMESPACE_LABEL).map(String::as_str) != Some(namespace) {
        return None;
    }
    labels
        .get(MESHCONFIG_LABEL)
        .map(|n| ObjectRef::new(n).within(namespace))
}

fn all_meshconfigs(store: &Store<MeshConfig>) -> Vec<ObjectRef<MeshConfig>> {
    store
        .state()
        .iter()
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// Backoff of the controller's merged watch streams. kube-runtime applies ONE backoff to all
/// watches together, so after an API-server restart every watch's `410 Gone` (its resource
/// version predates the new watch cache) grows the shared delay: with the default (0.8 s doubling
/// to 30 s, reset after 120 s quiet) drift went unnoticed for minutes. Capped at 1 s, the ~11
/// watches relist within seconds, and a dead API server still sees about one request a second.
#[derive(Debug)]
struct TriggerBackoff {
    next: Duration,
    last: Option<std::time::Instant>,
}

impl TriggerBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);
    /// Quiet time after which the next error starts from [`Self::FIRST`] again.
    const RESET_AFTER: Duration = Duration::from_secs(30);
}

impl Default for TriggerBackoff {
    fn default() -> Self {
        TriggerBackoff {
            next: Self::FIRST,
            last: None,
        }
    }
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) > Self::RESET_AFTER)
        {
            self.next = Self::FIRST;
        }
        self.last = Some(now);
        let current = self.next;
        self.next = (current * 2).min(Self::MAX);
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.clone();
    let managed =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let controller = Controller::new(
        Api::<MeshConfig>::namespaced(client.clone(), &ns),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    let _ = ctx.store.set(store.clone());
    let secret_store = store.clone();
    let (ns1, ns2, ns3, ns4) = (ns.clone(), ns.clone(), ns.clone(), ns.clone());
    let mut controller = controller
        .owns(
            Api::<ConfigMap>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .owns(
            Api::<Deployment>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .owns(
            Api::<Service>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .owns(
            Api::<ServiceAccount>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .owns(
            Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .owns(
            Api::<Role>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .owns(
            Api::<RoleBinding>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .watches(
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            managed.clone(),
            move |o| owner_from_labels(&o, &ns1),
        )
        .watches(
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            managed.clone(),
            move |o| owner_from_labels(&o, &ns4),
        )
        .watches(
            Api::<ClusterRole>::all(client.clone()),
            managed.clone(),
            move |o| owner_from_labels(&o, &ns2),
        )
        .watches(
            Api::<ClusterRoleBinding>::all(client.clone()),
            managed.clone(),
            move |o| owner_from_labels(&o, &ns3),
        );
    // The certificate Secrets are shared by all revisions: any change re-checks them all.
    if let CertSource::Issue(target) = &ctx.settings.cert {
        controller = controller.watches(
            Api::<Secret>::namespaced(client.clone(), &target.namespace),
            managed,
            move |_| all_meshconfigs(&secret_store),
        );
    }
    controller
        .trigger_backoff(TriggerBackoff::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(meshconfig = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile loop error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_objects_map_to_their_meshconfig() {
        let mut cr = ClusterRole::default();
        cr.metadata.labels = Some(crate::render::names::common_labels(
            "default",
            "istio-system",
            "default",
        ));
        let r = owner_from_labels(&cr, "istio-system").unwrap();
        assert_eq!(r.name, "default");
        assert_eq!(r.namespace.as_deref(), Some("istio-system"));
        assert!(
            owner_from_labels(&cr, "other").is_none(),
            "another operator's object"
        );
        assert!(owner_from_labels(&ClusterRole::default(), "istio-system").is_none());
    }

    #[test]
    fn trigger_backoff_doubles_to_one_second_and_resets() {
        use kube::runtime::utils::Backoff;
        let mut b = TriggerBackoff::default();
        let first: Vec<u128> = b.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(first, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(100)));
        // Long quiet: starts over even without an explicit reset.
        b.last = Some(std::time::Instant::now() - Duration::from_secs(60));
        b.next = TriggerBackoff::MAX;
        assert_eq!(b.next(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn error_labels_are_stable() {
        let e = ReconcileError::MissingMetadata("name");
        assert_eq!(e.metric_label(), "metadata");
        let wrapped = ReconcileError::Finalizer(Box::new(
            kube::runtime::finalizer::Error::ApplyFailed(ReconcileError::MissingMetadata("uid")),
        ));
        assert_eq!(wrapped.metric_label(), "metadata");
    }
}
