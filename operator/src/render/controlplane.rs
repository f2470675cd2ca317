//! istiod: ServiceAccount, least-privilege RBAC, Deployment, Service and PodDisruptionBudget.
//!
//! istiod does not mount the mesh ConfigMap: without `/etc/istio/config/mesh` it watches ConfigMap
//! `istio[-rev]` through the API, so mesh-wide edits apply without a restart or kubelet sync delay.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::names::{self, CONFIG_HASH_ANNOTATION};
use super::{Input, ManagedObject, RenderError, typed};

/// Ports of the istiod Service: xDS plaintext, xDS/CA TLS, webhook (443 -> 15017), monitoring.
pub const SERVICE_PORTS: [(&str, i32, i32); 4] = [
    ("grpc-xds", 15010, 15010),
    ("https-dns", 15012, 15012),
    ("https-webhook", 443, 15017),
    ("http-monitoring", 15014, 15014),
];

pub(crate) fn render(input: &Input<'_>) -> Result<Vec<ManagedObject>, RenderError> {
    let ns = input.ctx.namespace.as_str();
    let name = names::istiod(input.rev);
    let role_name = names::istiod_cluster_role(input.rev, ns);
    let selector = json!({"app": "istiod", "istio.io/rev": input.rev});
    let app_labels = [("app", "istiod"), ("istio", "pilot")];

    let sa = ManagedObject::ServiceAccount(typed(
        "istiod ServiceAccount",
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": input.meta(name.clone(), &app_labels),
        }),
    )?);

    let cluster_role = ManagedObject::ClusterRole(typed(
        "istiod ClusterRole",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": input.meta(role_name.clone(), &app_labels),
            "rules": cluster_rules(&super::validation::validator_names(input.rev, input.spec.is_default_revision(), ns)),
        }),
    )?);
    let cluster_binding = ManagedObject::ClusterRoleBinding(typed(
        "istiod ClusterRoleBinding",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": input.meta(role_name.clone(), &app_labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        }),
    )?);

    let role = ManagedObject::Role(typed(
        "istiod Role",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": input.meta(name.clone(), &app_labels),
            "rules": namespace_rules(),
        }),
    )?);
    let role_binding = ManagedObject::RoleBinding(typed(
        "istiod RoleBinding",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": input.meta(name.clone(), &app_labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        }),
    )?);

    let deployment = ManagedObject::Deployment(typed(
        "istiod Deployment",
        deployment(input, &name, &selector)?,
    )?);

    let ports: Vec<_> = SERVICE_PORTS
        .iter()
        .map(|(n, port, target)| json!({"name": n, "port": port, "targetPort": target, "protocol": "TCP"}))
        .collect();
    let service = ManagedObject::Service(typed(
        "istiod Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": input.meta(name.clone(), &app_labels),
            "spec": {"selector": selector, "ports": ports},
        }),
    )?);

    // maxUnavailable 1 (not minAvailable 1): a single replica must not block node drains.
    let pdb = ManagedObject::PodDisruptionBudget(typed(
        "istiod PodDisruptionBudget",
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": input.meta(name.clone(), &app_labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        }),
    )?);

    Ok(vec![
        sa,
        cluster_role,
        cluster_binding,
        role,
        role_binding,
        deployment,
        service,
        pdb,
    ])
}

fn deployment(
    input: &Input<'_>,
    name: &str,
    selector: &serde_json::Value,
) -> Result<serde_json::Value, RenderError> {
    let spec = input.spec;
    let ns = input.ctx.namespace.as_str();
    // istiod's serving certificate names these hosts (plus its Service names).
    let mut custom_hosts = format!("{name}.{ns}.svc");
    if let Some(host) = input
        .ctx
        .istiod_validation_url
        .as_deref()
        .and_then(super::validation::url_host)
    {
        custom_hosts.push(',');
        custom_hosts.push_str(host);
    }
    let field_env = |env: &str, path: &str| json!({"name": env, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let container = json!({
        "name": "discovery",
        "image": format!("{}/pilot:{}", spec.hub, spec.tag),
        "args": [
            "discovery", "--monitoringAddr=:15014", "--log_output_level=default:info",
            "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m",
        ],
        "ports": [
            {"name": "http-debug", "containerPort": 8080, "protocol": "TCP"},
            {"name": "grpc-xds", "containerPort": 15010, "protocol": "TCP"},
            {"name": "tls-xds", "containerPort": 15012, "protocol": "TCP"},
            {"name": "https-webhooks", "containerPort": 15017, "protocol": "TCP"},
            {"name": "http-monitoring", "containerPort": 15014, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5},
        "env": [
            {"name": "REVISION", "value": input.rev},
            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            {"name": "CLUSTER_ID", "value": "Kubernetes"},
            {"name": "ISTIOD_CUSTOM_HOST", "value": custom_hosts},
            {"name": "PILOT_TRACE_SAMPLING", "value": input.eff.trace_sampling},
            // Skjold's webhook injects and the operator owns the injector's webhook
            // configuration: istiod neither serves injection nor patches that caBundle. It does
            // validate Istio's resources, and fills its validators' caBundle (validation.rs).
            {"name": "INJECTION_WEBHOOK_CONFIG_NAME", "value": ""},
            {"name": "VALIDATION_WEBHOOK_CONFIG_NAME", "value": names::istiod_validator(input.rev, ns)},
            {"name": "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER", "value": "false"},
        ],
        "resources": input.eff.pilot_resources,
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "local-certs", "mountPath": "/var/run/secrets/istio-dns"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
        ],
    });
    let pod_spec = json!({
        "serviceAccountName": name,
        "containers": [container],
        "volumes": [
            {"name": "local-certs", "emptyDir": {"medium": "Memory"}},
            {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
        ],
    });
    // The hash covers only the pod template's own inputs: mesh-wide settings live in ConfigMap
    // `istio`, which istiod watches, so editing them never rolls istiod.
    let hash = config_hash(&pod_spec)?;
    let mut pod_labels = selector.clone();
    if let Some(labels) = pod_labels.as_object_mut() {
        labels.insert("istio".into(), json!("pilot"));
        labels.insert("sidecar.istio.io/inject".into(), json!("false"));
    }
    Ok(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": input.meta(name.to_string(), &[("app", "istiod"), ("istio", "pilot")]),
        "spec": {
            "replicas": spec.pilot.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {CONFIG_HASH_ANNOTATION: hash, "prometheus.io/port": "15014", "prometheus.io/scrape": "true"},
                },
                "spec": pod_spec,
            },
        },
    }))
}

/// Short hash of a pod spec, stamped on the template to roll pods only when their inputs change.
pub(crate) fn config_hash(value: &serde_json::Value) -> Result<String, RenderError> {
    let bytes = serde_json::to_vec(value).map_err(|source| RenderError::Build {
        what: "config hash input".into(),
        source,
    })?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..8]))
}

/// What istiod needs cluster-wide: read the service registry and Istio/Gateway API config, write
/// their status, distribute `istio-ca-root-cert` ConfigMaps, authenticate proxies, and read the
/// webhook configurations. istiod lists and watches both webhook kinds even with its own injector
/// off (its revision-tag and validation controllers do; without them `/ready` stays 503 and the
/// xDS ports never open, found by running istiod against what this renders). It may write one
/// webhook configuration only: its own validator's `caBundle` (and `failurePolicy`), by name.
/// Deliberately absent: writes to the injector's MutatingWebhookConfiguration (the operator owns
/// it), CRD writes, CSR approval, and Deployment writes (gateway deployment controller disabled).
fn cluster_rules(validators: &[String]) -> serde_json::Value {
    let read = ["get", "list", "watch"];
    let istio_groups = [
        "config.istio.io",
        "security.istio.io",
        "networking.istio.io",
        "authentication.istio.io",
        "rbac.istio.io",
        "telemetry.istio.io",
        "extensions.istio.io",
    ];
    json!([
        {"apiGroups": istio_groups, "resources": ["*"], "verbs": read},
        {"apiGroups": istio_groups, "resources": ["*/status"], "verbs": ["update", "patch"]},
        {"apiGroups": ["gateway.networking.k8s.io", "gateway.networking.x-k8s.io"], "resources": ["*"], "verbs": read},
        {"apiGroups": ["gateway.networking.k8s.io", "gateway.networking.x-k8s.io"], "resources": ["*/status"], "verbs": ["update", "patch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": read},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"], "verbs": read},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "resourceNames": validators, "verbs": ["update", "patch"]},
        {"apiGroups": [""], "resources": ["pods", "nodes", "services", "namespaces", "endpoints", "secrets"], "verbs": read},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update", "patch"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ])
}

/// Namespace-local needs: the self-signed CA Secret (`istio-ca-secret`) and leader-election Leases.
fn namespace_rules() -> serde_json::Value {
    json!([
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "update", "delete"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
    ])
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, meshconfig};
    use super::super::{ManagedObject, render};
    use crate::crd::Profile;

    fn istiod_hash(mc: &crate::crd::MeshConfig) -> String {
        let r = render(mc, &ctx()).unwrap();
        r.objects
            .iter()
            .find_map(|(_, o)| match o {
                ManagedObject::Deployment(d) if o.name() == "istiod" => d
                    .spec
                    .as_ref()?
                    .template
                    .metadata
                    .as_ref()?
                    .annotations
                    .as_ref()?
                    .get(super::CONFIG_HASH_ANNOTATION)
                    .cloned(),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn config_hash_ignores_mesh_settings_but_follows_image() {
        let base = meshconfig(Profile::Default, "");
        let mut mesh_edit = base.clone();
        mesh_edit.spec.mesh_config.access_log_file = Some("/dev/stdout".into());
        mesh_edit.spec.mesh_config.outbound_traffic_policy.mode =
            crate::crd::OutboundMode::RegistryOnly;
        mesh_edit.spec.pilot.replicas = 3;
        assert_eq!(istiod_hash(&base), istiod_hash(&mesh_edit));
        let mut tag_edit = base.clone();
        tag_edit.spec.tag = "1.26.0".into();
        assert_ne!(istiod_hash(&base), istiod_hash(&tag_edit));
    }

    #[test]
    fn service_maps_webhook_port() {
        let r = render(&meshconfig(Profile::Minimal, ""), &ctx()).unwrap();
        let svc = r
            .objects
            .iter()
            .find_map(|(_, o)| match o {
                ManagedObject::Service(s) if o.name() == "istiod" => Some(s.clone()),
                _ => None,
            })
            .unwrap();
        let ports = svc.spec.unwrap().ports.unwrap();
        let webhook = ports.iter().find(|p| p.port == 443).unwrap();
        assert_eq!(
            webhook.target_port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15017))
        );
        let mut numbers: Vec<i32> = ports.iter().map(|p| p.port).collect();
        numbers.sort();
        assert_eq!(numbers, [443, 15010, 15012, 15014]);
    }

    #[test]
    fn cluster_role_is_least_privilege() {
        let rules = super::cluster_rules(&["istio-validator-istio-system".to_string()]);
        let text = serde_json::to_string(&rules).unwrap();
        assert!(!text.contains("\"delete\""));
        for rule in rules.as_array().unwrap() {
            let groups = rule["apiGroups"].as_array().unwrap();
            let verbs = rule["verbs"].as_array().unwrap();
            assert!(!verbs.iter().any(|v| v == "*"), "no wildcard verbs: {rule}");
            let writes = verbs
                .iter()
                .any(|v| v != "get" && v != "list" && v != "watch");
            // Webhook configurations: istiod reads both kinds (it does not become ready
            // otherwise) but may write only its own validator, by name.
            if groups.iter().any(|g| g == "admissionregistration.k8s.io") && writes {
                assert_eq!(
                    rule["resources"],
                    serde_json::json!(["validatingwebhookconfigurations"])
                );
                assert_eq!(
                    rule["resourceNames"],
                    serde_json::json!(["istio-validator-istio-system"])
                );
            }
            let resources = rule["resources"].as_array().unwrap();
            if resources.iter().any(|r| r == "secrets") {
                assert_eq!(rule["verbs"], serde_json::json!(["get", "list", "watch"]));
            }
        }
        let ns_rules = serde_json::to_string(&super::namespace_rules()).unwrap();
        assert!(ns_rules.contains("leases"));
    }
}
