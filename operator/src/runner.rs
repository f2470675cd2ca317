//! Process wiring shared by `skjold-operator run` and in-process tests: install the CRD, serve
//! metrics, win the Lease, run the controller, and step down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{Condition, conditions};
use tracing::{error, info, warn};

use crate::certs::{CertPolicy, CertTarget, CertsError, SubjectNames};
use crate::crd::MeshConfig;
use crate::leader::{LeaderElector, LeaderError, LeaseConfig};
use crate::metrics::Metrics;
use crate::reconcile::{self, CertSource, Context, Settings};
use crate::render::WebhookTarget;
use crate::render::names::FIELD_MANAGER;

/// Everything `run` needs (the CLI flags of `skjold-operator run`).
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub namespace: String,
    pub webhook_service: String,
    pub webhook_namespace: String,
    pub webhook_url: Option<String>,
    /// Out-of-cluster development: `clientConfig.url` of istiod's validation webhooks.
    pub istiod_validation_url: Option<String>,
    pub cert_secret: String,
    /// cert-manager mode (`namespace/name` of a Certificate): no issuing, CA injected by cert-manager.
    pub cert_manager_certificate: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    pub leader_election: bool,
    pub lease_name: String,
    pub manage_crd: bool,
    /// Identity in the Lease and in Events (pod name plus a unique suffix).
    pub identity: String,
    /// In a cluster: this replica's Pod, the owner of the Lease while it holds it.
    pub pod_owner: Option<OwnerReference>,
    /// In a cluster: this replica's ServiceAccount (in `namespace`), the owner of the webhook
    /// certificate Secrets.
    pub service_account: Option<String>,
    pub cert_policy: CertPolicy,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not apply the MeshConfig CRD: {0}")]
    Crd(#[source] Box<kube::Error>),
    #[error("the MeshConfig CRD did not become Established within {0:?}")]
    CrdNotEstablished(Duration),
    #[error("the embedded Istio CRD manifest does not parse: {0}")]
    IstioCrdsInvalid(#[source] serde_yaml_ng::Error),
    #[error("could not apply Istio's CRD {name}: {source}")]
    IstioCrd {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Istio's CRD {0} did not become Established within {1:?}")]
    IstioCrdNotEstablished(String, Duration),
    #[error(transparent)]
    Certs(#[from] CertsError),
    #[error("--cert-manager-certificate {0:?} must be <namespace>/<name>")]
    CertManagerCertificate(String),
    #[error("metrics server on {addr} failed: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost leadership: {0}")]
    LostLease(#[source] LeaderError),
}

impl RunConfig {
    /// Controller settings derived from the flags.
    pub fn settings(&self) -> Result<Settings, RunError> {
        let webhook = match &self.webhook_url {
            Some(url) => WebhookTarget::Url(url.clone()),
            None => WebhookTarget::Service {
                name: self.webhook_service.clone(),
                namespace: self.webhook_namespace.clone(),
            },
        };
        let names = SubjectNames::for_webhook(
            &self.webhook_service,
            &self.webhook_namespace,
            self.webhook_url.as_deref(),
        )?;
        let cert = match &self.cert_manager_certificate {
            Some(c) => {
                let valid = c.split_once('/').is_some_and(|(ns, name)| {
                    !ns.is_empty() && !name.is_empty() && !name.contains('/')
                });
                if !valid {
                    return Err(RunError::CertManagerCertificate(c.clone()));
                }
                CertSource::CertManager {
                    certificate: c.clone(),
                }
            }
            None => CertSource::Issue(Box::new(CertTarget {
                namespace: self.webhook_namespace.clone(),
                secret: self.cert_secret.clone(),
                names,
                policy: self.cert_policy.clone(),
                owner: None,
            })),
        };
        Ok(Settings {
            namespace: self.namespace.clone(),
            webhook,
            cert,
            istiod_validation_url: self.istiod_validation_url.clone(),
        })
    }
}

/// The owner reference of the operator's ServiceAccount `name` for the certificate Secrets, when
/// they live in its namespace (owners cannot be in another namespace). Without one (out of
/// cluster, another namespace, the ServiceAccount unreadable) the Secrets have no owner and
/// outlive an uninstall, as before; said in the log.
async fn certificate_owner(
    client: &kube::Client,
    namespace: &str,
    secret_namespace: &str,
    name: &str,
) -> Option<OwnerReference> {
    if namespace != secret_namespace {
        warn!(%namespace, %secret_namespace, "the certificate Secrets are in another namespace than the operator's ServiceAccount: they get no owner");
        return None;
    }
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(sa) => sa.metadata.uid.map(|uid| OwnerReference {
            api_version: "v1".into(),
            kind: "ServiceAccount".into(),
            name: name.into(),
            uid,
            ..OwnerReference::default()
        }),
        Err(e) => {
            warn!(error = %e, serviceaccount = %name, "cannot read the operator's ServiceAccount: the certificate Secrets get no owner");
            None
        }
    }
}

/// Server-side applies the MeshConfig CRD and waits until the API server serves it.
pub async fn install_crd(client: &kube::Client) -> Result<(), RunError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = MeshConfig::crd();
    let name = MeshConfig::crd_name();
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|e| RunError::Crd(Box::new(e)))?;
    let timeout = Duration::from_secs(30);
    tokio::time::timeout(timeout, wait_established(&api, name))
        .await
        .map_err(|_| RunError::CrdNotEstablished(timeout))
}

/// Server-side applies Istio's CRDs of the pinned version (so upgrading the operator upgrades
/// them; Helm never upgrades `crds/`) and waits until all are Established. They are never deleted
/// by the operator: like Istio's base chart, an uninstall keeps them (and so the users' Istio
/// resources); `kubectl delete crd -l skjold.io/istio-crds=true` removes them on purpose.
pub async fn install_istio_crds(client: &kube::Client) -> Result<usize, RunError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = crate::istio::crds().map_err(RunError::IstioCrdsInvalid)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = futures::future::join_all(crds.iter().map(|crd| {
        let api = api.clone();
        let params = params.clone();
        async move {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .map(|_| name.clone())
                .map_err(|e| RunError::IstioCrd {
                    name,
                    source: Box::new(e),
                })
        }
    }))
    .await;
    let names = applied.into_iter().collect::<Result<Vec<_>, _>>()?;
    let timeout = Duration::from_secs(60);
    for name in &names {
        tokio::time::timeout(timeout, wait_established(&api, name))
            .await
            .map_err(|_| RunError::IstioCrdNotEstablished(name.clone(), timeout))?;
    }
    Ok(names.len())
}

/// Polls the CRD by name until it is Established. A watch would need `list`/`watch` on every
/// CRD in the cluster; the operator's RBAC grants only `get` on its own CRD (least privilege).
async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) {
    let established = conditions::is_crd_established();
    loop {
        match api.get_opt(name).await {
            Ok(crd) if established.matches_object(crd.as_ref()) => return,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "reading the MeshConfig CRD"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the operator until `shutdown` resolves (Ok) or leadership is lost (Err: the process
/// should exit so that it restarts as a follower and never reconciles concurrently).
pub async fn run(
    client: kube::Client,
    cfg: RunConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let shutdown = shutdown.boxed().shared();
    let mut settings = cfg.settings()?;
    if let (CertSource::Issue(target), Some(sa)) = (&mut settings.cert, &cfg.service_account) {
        target.owner = certificate_owner(&client, &cfg.namespace, &target.namespace, sa).await;
    }
    if let Some(addr) = cfg.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
        let router = crate::metrics::router(metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                error!(error = %e, "metrics server stopped");
            }
        });
        info!(%addr, "serving /metrics, /healthz, /readyz");
    }
    if cfg.manage_crd {
        install_crd(&client).await?;
        info!("MeshConfig CRD applied and established");
        let n = install_istio_crds(&client).await?;
        info!(
            crds = n,
            istio = crate::istio::ISTIO_VERSION,
            module = crate::istio::ISTIO_MODULE_VERSION,
            "Istio CRDs applied and established"
        );
    }
    // Followers are ready too: they serve health and metrics and stand by for the Lease.
    metrics.set_ready(true);

    let elector = cfg.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig::new(&cfg.namespace, &cfg.lease_name, &cfg.identity)
                .owned_by(cfg.pod_owner.clone()),
        )
    });
    if let Some(elector) = &elector {
        info!(lease = %cfg.lease_name, identity = %cfg.identity, "waiting for leadership");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.clone() => return Ok(()),
        }
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics.clone(),
        Some(cfg.identity.clone()),
    ));
    let controller = reconcile::run(ctx, shutdown.clone());
    let result = match &elector {
        Some(elector) => tokio::select! {
            _ = controller => Ok(()),
            lost = elector.hold() => Err(RunError::LostLease(lost)),
        },
        None => {
            controller.await;
            Ok(())
        }
    };
    metrics.leader.set(0);
    if let (Some(elector), Ok(())) = (&elector, &result) {
        elector.release().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig {
            namespace: "istio-system".into(),
            webhook_service: "skjold-webhook".into(),
            webhook_namespace: "istio-system".into(),
            webhook_url: None,
            istiod_validation_url: None,
            cert_secret: "skjold-webhook-tls".into(),
            cert_manager_certificate: None,
            metrics_addr: None,
            leader_election: true,
            lease_name: "skjold-operator".into(),
            manage_crd: true,
            identity: "test".into(),
            pod_owner: None,
            service_account: None,
            cert_policy: CertPolicy::default(),
        }
    }

    #[test]
    fn settings_pick_cert_source_and_target() {
        let s = cfg().settings().unwrap();
        assert!(matches!(&s.cert, CertSource::Issue(t) if t.secret == "skjold-webhook-tls"));
        assert!(matches!(s.webhook, WebhookTarget::Service { .. }));

        let mut c = cfg();
        c.cert_manager_certificate = Some("istio-system/skjold-webhook".into());
        c.webhook_url = Some("https://10.0.0.1:15017/inject".into());
        let s = c.settings().unwrap();
        assert!(matches!(s.cert, CertSource::CertManager { .. }));
        assert!(matches!(s.webhook, WebhookTarget::Url(_)));

        c.cert_manager_certificate = Some("no-slash".into());
        let err = c.settings().unwrap_err();
        assert!(err.to_string().contains("no-slash"), "{err}");
    }
}
