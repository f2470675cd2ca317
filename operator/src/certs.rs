//! Webhook TLS: a private CA and a serving certificate for the webhook Service, kept valid and
//! rotated with an overlap window so no admission call fails during rotation.
//!
//! Two Secrets in the webhook namespace:
//! - `<cert-secret>` (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`) mounted by the webhook;
//!   `ca.crt` is the CA bundle, identical to every webhook's `caBundle`.
//! - `<cert-secret>-ca` (`tls.crt`, `tls.key`): the signing CA, read only by the operator, so the
//!   webhook pods never hold the CA key.
//!
//! Rotation order: a new CA is first *added* to the bundle (old CAs stay while valid) and the
//! still-valid serving certificate is kept; serving certificates are only re-issued when they
//! themselves are due. Serving certificates live much shorter than the CA rotation margin, so a
//! serving certificate never outlives the CA that signed it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use skjold_certs::{CertError, CertificateAuthority, IssuedCert};

use crate::render::names::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";

/// Lifetimes and renewal margins.
#[derive(Clone, Debug)]
pub struct CertPolicy {
    pub ca_validity: Duration,
    /// The CA is replaced when less than this (or a third of its life) remains.
    pub ca_renew_before: Duration,
    pub serving_validity: Duration,
    /// The serving certificate is re-issued when less than this (or a third of its life) remains.
    pub serving_renew_before: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            ca_validity: DAY * 730,
            ca_renew_before: DAY * 180,
            serving_validity: DAY * 90,
            serving_renew_before: DAY * 30,
        }
    }
}

/// Names the serving certificate must cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl SubjectNames {
    /// The webhook Service's DNS names, plus the host of `--webhook-url` when set.
    pub fn for_webhook(
        service: &str,
        namespace: &str,
        url: Option<&str>,
    ) -> Result<Self, CertsError> {
        let mut names = SubjectNames {
            dns: skjold_certs::service_dns_names(service, namespace),
            ips: Vec::new(),
        };
        if let Some(url) = url {
            match url_host(url)? {
                Host::Ip(ip) => names.ips.push(ip),
                Host::Dns(d) => {
                    if !names.dns.contains(&d) {
                        names.dns.push(d)
                    }
                }
            }
        }
        Ok(names)
    }
}

enum Host {
    Ip(IpAddr),
    Dns(String),
}

/// Host part of an `https://host[:port][/path]` URL (IPv6 in brackets).
fn url_host(url: &str) -> Result<Host, CertsError> {
    let bad = |reason: &str| CertsError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("must start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Dns(host.to_ascii_lowercase()),
    })
}

/// Why the webhook certificates could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("--webhook-url {url:?} {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not {action} the CA: {source}")]
    Ca {
        action: &'static str,
        #[source]
        source: CertError,
    },
    #[error("could not issue the serving certificate for {names:?}: {source}")]
    Issue {
        names: Vec<String>,
        #[source]
        source: CertError,
    },
    #[error("could not {verb} Secret {namespace}/{name}: {source}")]
    Kube {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// What is currently stored (any part may be missing or garbage).
#[derive(Clone, Default)]
pub struct StoredCerts {
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub serving_cert: Option<String>,
    pub serving_key: Option<String>,
    pub bundle: Option<String>,
}

impl std::fmt::Debug for StoredCerts {
    // Keys must never reach a log line through `{:?}`: show only whether they are present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &Option<String>| k.as_ref().map(|_| "<redacted>");
        f.debug_struct("StoredCerts")
            .field("ca_cert", &self.ca_cert)
            .field("ca_key", &key(&self.ca_key))
            .field("serving_cert", &self.serving_cert)
            .field("serving_key", &key(&self.serving_key))
            .field("bundle", &self.bundle)
            .finish()
    }
}

/// The state to store, and what changed (human-readable, for Events).
#[derive(Clone, Debug)]
pub struct CertPlan {
    pub ca: IssuedCert,
    pub serving: IssuedCert,
    pub bundle: String,
    pub ca_changed: bool,
    pub serving_changed: bool,
    pub bundle_changed: bool,
    pub reasons: Vec<String>,
    pub serving_not_after: SystemTime,
    /// When the next rotation check is due (serving or CA).
    pub next_check: SystemTime,
}

impl CertPlan {
    pub fn changed(&self) -> bool {
        self.ca_changed || self.serving_changed || self.bundle_changed
    }
}

/// Pure decision: keep, rotate or issue. `now` is passed in so tests can move the clock.
pub fn plan(
    stored: &StoredCerts,
    names: &SubjectNames,
    policy: &CertPolicy,
    now: SystemTime,
) -> Result<CertPlan, CertsError> {
    let mut reasons = Vec::new();
    let existing_ca = match (&stored.ca_cert, &stored.ca_key) {
        (Some(c), Some(k)) => match CertificateAuthority::from_pem(c, k) {
            Ok(ca) => match skjold_certs::inspect(c) {
                Ok(info) if !skjold_certs::needs_rotation(&info, now, policy.ca_renew_before) => {
                    Some(ca)
                }
                Ok(_) => {
                    reasons.push("CA is due for rotation".to_string());
                    None
                }
                Err(e) => {
                    reasons.push(format!("stored CA is unreadable: {e}"));
                    None
                }
            },
            Err(e) => {
                reasons.push(format!("stored CA is unusable: {e}"));
                None
            }
        },
        _ => {
            reasons.push("no CA stored yet".to_string());
            None
        }
    };
    let ca_changed = existing_ca.is_none();
    let ca = match existing_ca {
        Some(ca) => ca,
        None => CertificateAuthority::generate("skjold-webhook-ca", policy.ca_validity).map_err(
            |source| CertsError::Ca {
                action: "generate",
                source,
            },
        )?,
    };

    let old_bundle = stored.bundle.clone().unwrap_or_default();
    let bundle = skjold_certs::merge_ca_bundle(&old_bundle, ca.cert_pem(), now);
    let bundle_changed = bundle != old_bundle;

    let keep_serving = match (&stored.serving_cert, &stored.serving_key) {
        (Some(cert), Some(key)) => match serving_ok(cert, key, &bundle, names, policy, now) {
            Ok(info) => Some((cert.clone(), key.clone(), info.not_after)),
            Err(reason) => {
                reasons.push(reason);
                None
            }
        },
        _ => {
            reasons.push("no serving certificate stored yet".to_string());
            None
        }
    };
    let serving_changed = keep_serving.is_none();
    let (serving, serving_not_after) = match keep_serving {
        Some((cert_pem, key_pem, not_after)) => (IssuedCert { cert_pem, key_pem }, not_after),
        None => {
            let issued = ca
                .issue_serving(&names.dns, &names.ips, policy.serving_validity)
                .map_err(|source| CertsError::Issue {
                    names: names.dns.clone(),
                    source,
                })?;
            let info =
                skjold_certs::inspect(&issued.cert_pem).map_err(|source| CertsError::Issue {
                    names: names.dns.clone(),
                    source,
                })?;
            (issued, info.not_after)
        }
    };
    let ca_info = skjold_certs::inspect(ca.cert_pem()).map_err(|source| CertsError::Ca {
        action: "inspect",
        source,
    })?;
    let next_check = [
        due_at(
            serving_not_after,
            policy.serving_validity,
            policy.serving_renew_before,
        ),
        due_at(
            ca_info.not_after,
            policy.ca_validity,
            policy.ca_renew_before,
        ),
    ]
    .into_iter()
    .min()
    .unwrap_or(now);
    if !bundle_changed && !ca_changed && !serving_changed {
        reasons.clear();
    }
    Ok(CertPlan {
        ca: IssuedCert {
            cert_pem: ca.cert_pem().to_string(),
            key_pem: ca.key_pem().to_string(),
        },
        serving,
        bundle,
        ca_changed,
        serving_changed,
        bundle_changed,
        reasons,
        serving_not_after,
        next_check,
    })
}

/// Earliest moment `needs_rotation` can flip for a certificate of this lifetime.
fn due_at(not_after: SystemTime, lifetime: Duration, renew_before: Duration) -> SystemTime {
    not_after
        .checked_sub(renew_before.max(lifetime / 3))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn serving_ok(
    cert: &str,
    key: &str,
    bundle: &str,
    names: &SubjectNames,
    policy: &CertPolicy,
    now: SystemTime,
) -> Result<skjold_certs::CertInfo, String> {
    let info =
        skjold_certs::inspect(cert).map_err(|e| format!("serving certificate unreadable: {e}"))?;
    skjold_certs::verify_signed_by(cert, bundle)
        .map_err(|e| format!("serving certificate does not verify against the bundle: {e}"))?;
    skjold_certs::server_config(cert, key)
        .map_err(|e| format!("serving certificate and key do not form a usable pair: {e}"))?;
    if let Some(missing) = names.dns.iter().find(|d| !info.dns_names.contains(d)) {
        return Err(format!("serving certificate does not cover {missing}"));
    }
    if let Some(missing) = names.ips.iter().find(|ip| !info.ip_addresses.contains(ip)) {
        return Err(format!("serving certificate does not cover {missing}"));
    }
    if skjold_certs::needs_rotation(&info, now, policy.serving_renew_before) {
        return Err("serving certificate is due for rotation".to_string());
    }
    Ok(info)
}

/// Where the certificates live.
#[derive(Clone, Debug)]
pub struct CertTarget {
    pub namespace: String,
    pub secret: String,
    pub names: SubjectNames,
    pub policy: CertPolicy,
    /// Owner of both Secrets: in a cluster, the operator's own ServiceAccount (same namespace),
    /// so the certificates live exactly as long as the installation (`helm uninstall` deletes
    /// the ServiceAccount, the garbage collector the Secrets), and deleting and re-creating
    /// MeshConfigs keeps the CA every webhook replica already trusts.
    pub owner: Option<OwnerReference>,
}

impl CertTarget {
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.secret)
    }
}

/// Reads the Secrets, plans, and writes whatever changed (CA Secret first, so a crash between
/// the two writes leaves a state the next run repairs).
pub async fn ensure(client: &kube::Client, target: &CertTarget) -> Result<CertPlan, CertsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let kube_err = |verb, name: &str| {
        let namespace = target.namespace.clone();
        let name = name.to_string();
        move |source| CertsError::Kube {
            verb,
            namespace,
            name,
            source: Box::new(source),
        }
    };
    let ca_name = target.ca_secret();
    let ca_secret = api
        .get_opt(&ca_name)
        .await
        .map_err(kube_err("read", &ca_name))?;
    let serving_secret = api
        .get_opt(&target.secret)
        .await
        .map_err(kube_err("read", &target.secret))?;
    let stored = StoredCerts {
        ca_cert: secret_str(ca_secret.as_ref(), TLS_CRT),
        ca_key: secret_str(ca_secret.as_ref(), TLS_KEY),
        serving_cert: secret_str(serving_secret.as_ref(), TLS_CRT),
        serving_key: secret_str(serving_secret.as_ref(), TLS_KEY),
        bundle: secret_str(serving_secret.as_ref(), CA_CRT),
    };
    let plan = plan(&stored, &target.names, &target.policy, SystemTime::now())?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // A Secret written before it had an owner (an upgrade) gets it now.
    let lacks_owner = |s: &Option<Secret>| {
        target.owner.as_ref().is_some_and(|o| {
            s.as_ref().is_some_and(|s| {
                !s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == o.uid)
            })
        })
    };
    if plan.ca_changed || ca_secret.is_none() || lacks_owner(&ca_secret) {
        let secret = tls_secret(&ca_name, "Opaque", &plan.ca, None, target.owner.as_ref());
        api.patch(&ca_name, &params, &Patch::Apply(&secret))
            .await
            .map_err(kube_err("write", &ca_name))?;
    }
    if plan.serving_changed
        || plan.bundle_changed
        || serving_secret.is_none()
        || lacks_owner(&serving_secret)
    {
        let secret = tls_secret(
            &target.secret,
            "kubernetes.io/tls",
            &plan.serving,
            Some(&plan.bundle),
            target.owner.as_ref(),
        );
        api.patch(&target.secret, &params, &Patch::Apply(&secret))
            .await
            .map_err(kube_err("write", &target.secret))?;
    }
    Ok(plan)
}

fn secret_str(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn tls_secret(
    name: &str,
    type_: &str,
    cert: &IssuedCert,
    bundle: Option<&str>,
    owner: Option<&OwnerReference>,
) -> Secret {
    let mut data = BTreeMap::from([
        (
            TLS_CRT.to_string(),
            ByteString(cert.cert_pem.clone().into_bytes()),
        ),
        (
            TLS_KEY.to_string(),
            ByteString(cert.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some(bundle) = bundle {
        data.insert(CA_CRT.to_string(), ByteString(bundle.as_bytes().to_vec()));
    }
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        type_: Some(type_.to_string()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> SubjectNames {
        SubjectNames::for_webhook("skjold-webhook", "istio-system", None).unwrap()
    }

    fn stored_from(plan: &CertPlan) -> StoredCerts {
        StoredCerts {
            ca_cert: Some(plan.ca.cert_pem.clone()),
            ca_key: Some(plan.ca.key_pem.clone()),
            serving_cert: Some(plan.serving.cert_pem.clone()),
            serving_key: Some(plan.serving.key_pem.clone()),
            bundle: Some(plan.bundle.clone()),
        }
    }

    #[test]
    fn first_run_issues_everything_and_second_run_keeps_it() {
        let now = SystemTime::now();
        let p1 = plan(
            &StoredCerts::default(),
            &names(),
            &CertPolicy::default(),
            now,
        )
        .unwrap();
        assert!(p1.ca_changed && p1.serving_changed && p1.bundle_changed);
        skjold_certs::verify_signed_by(&p1.serving.cert_pem, &p1.bundle).unwrap();
        let info = skjold_certs::inspect(&p1.serving.cert_pem).unwrap();
        assert!(
            info.dns_names
                .contains(&"skjold-webhook.istio-system.svc".to_string())
        );

        let p2 = plan(&stored_from(&p1), &names(), &CertPolicy::default(), now).unwrap();
        assert!(!p2.changed(), "{:?}", p2.reasons);
        assert_eq!(p2.serving.cert_pem, p1.serving.cert_pem);
        assert!(p2.next_check > now);
    }

    #[test]
    fn ca_rotation_keeps_old_ca_in_bundle_and_serving_cert() {
        let now = SystemTime::now();
        let p1 = plan(
            &StoredCerts::default(),
            &names(),
            &CertPolicy::default(),
            now,
        )
        .unwrap();
        // A policy under which the stored CA is already due, but the serving cert is not.
        let policy = CertPolicy {
            ca_renew_before: DAY * 731,
            ..CertPolicy::default()
        };
        let p2 = plan(&stored_from(&p1), &names(), &policy, now).unwrap();
        assert!(p2.ca_changed && p2.bundle_changed);
        assert!(
            !p2.serving_changed,
            "serving cert must survive a CA rotation"
        );
        let cas = skjold_certs::inspect_all(&p2.bundle).unwrap();
        assert_eq!(cas.len(), 2, "overlap window holds new and old CA");
        assert!(p2.bundle.starts_with(&p2.ca.cert_pem));
        // The old serving cert still verifies against the merged bundle.
        skjold_certs::verify_signed_by(&p2.serving.cert_pem, &p2.bundle).unwrap();
    }

    #[test]
    fn serving_due_is_reissued_from_current_ca() {
        let now = SystemTime::now();
        let p1 = plan(
            &StoredCerts::default(),
            &names(),
            &CertPolicy::default(),
            now,
        )
        .unwrap();
        let policy = CertPolicy {
            serving_renew_before: DAY * 91,
            ..CertPolicy::default()
        };
        let p2 = plan(&stored_from(&p1), &names(), &policy, now).unwrap();
        assert!(p2.serving_changed && !p2.ca_changed);
        assert_ne!(p2.serving.cert_pem, p1.serving.cert_pem);
        skjold_certs::verify_signed_by(&p2.serving.cert_pem, &p2.bundle).unwrap();
    }

    #[test]
    fn missing_name_or_garbage_forces_reissue() {
        let now = SystemTime::now();
        let p1 = plan(
            &StoredCerts::default(),
            &names(),
            &CertPolicy::default(),
            now,
        )
        .unwrap();
        let with_url = SubjectNames::for_webhook(
            "skjold-webhook",
            "istio-system",
            Some("https://127.0.0.1:8443/inject"),
        )
        .unwrap();
        let p2 = plan(&stored_from(&p1), &with_url, &CertPolicy::default(), now).unwrap();
        assert!(p2.serving_changed);
        let info = skjold_certs::inspect(&p2.serving.cert_pem).unwrap();
        assert!(info.ip_addresses.contains(&"127.0.0.1".parse().unwrap()));

        let mut broken = stored_from(&p1);
        broken.serving_key = Some("not a key".into());
        let p3 = plan(&broken, &names(), &CertPolicy::default(), now).unwrap();
        assert!(p3.serving_changed && !p3.ca_changed);
        assert!(
            p3.reasons.iter().any(|r| r.contains("usable pair")),
            "{:?}",
            p3.reasons
        );
    }

    #[test]
    fn url_hosts() {
        let n = SubjectNames::for_webhook("s", "ns", Some("https://[::1]:9443/inject")).unwrap();
        assert_eq!(n.ips, vec!["::1".parse::<IpAddr>().unwrap()]);
        let n = SubjectNames::for_webhook("s", "ns", Some("https://Dev.Example:9443")).unwrap();
        assert!(n.dns.contains(&"dev.example".to_string()));
        let err = SubjectNames::for_webhook("s", "ns", Some("http://x")).unwrap_err();
        assert!(err.to_string().contains("http://x"), "{err}");
    }
}
