//! Ingress/egress gateways: a ServiceAccount, a Deployment running `proxyv2` in router mode and a
//! Service. They are rendered complete (not injected), so they work even though the
//! control-plane namespace is excluded from the injection webhook.

use serde_json::json;

use super::names;
use super::{Input, ManagedObject, RenderError, typed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ingress,
    Egress,
}

impl Kind {
    fn base(self) -> &'static str {
        match self {
            Kind::Ingress => "istio-ingressgateway",
            Kind::Egress => "istio-egressgateway",
        }
    }

    fn istio_label(self) -> &'static str {
        match self {
            Kind::Ingress => "ingressgateway",
            Kind::Egress => "egressgateway",
        }
    }
}

pub(crate) fn render(input: &Input<'_>, kind: Kind) -> Result<Vec<ManagedObject>, RenderError> {
    let name = match kind {
        Kind::Ingress => names::ingress_gateway(input.rev),
        Kind::Egress => names::egress_gateway(input.rev),
    };
    let sa_name = format!("{name}-service-account");
    let app_labels = [("app", kind.base()), ("istio", kind.istio_label())];
    let selector =
        json!({"app": kind.base(), "istio": kind.istio_label(), "istio.io/rev": input.rev});

    let sa = ManagedObject::ServiceAccount(typed(
        "gateway ServiceAccount",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": input.meta(sa_name.clone(), &app_labels)}),
    )?);

    let (service_type, service_ports) = match kind {
        Kind::Ingress => (
            "LoadBalancer",
            json!([
                {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
                {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
            ]),
        ),
        Kind::Egress => (
            "ClusterIP",
            json!([
                {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
            ]),
        ),
    };
    let service = ManagedObject::Service(typed(
        "gateway Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": input.meta(name.clone(), &app_labels),
            "spec": {"type": service_type, "selector": selector, "ports": service_ports},
        }),
    )?);

    let ns = input.ctx.namespace.as_str();
    let field_env = |env: &str, path: &str| json!({"name": env, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let container = json!({
        "name": "istio-proxy",
        "image": input.eff.proxy_image,
        "args": [
            "proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
            "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info",
        ],
        "ports": [
            {"name": "status-port", "containerPort": 15021, "protocol": "TCP"},
            {"name": "http2", "containerPort": 8080, "protocol": "TCP"},
            {"name": "https", "containerPort": 8443, "protocol": "TCP"},
            {"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"},
        ],
        "env": [
            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
            {"name": "CA_ADDR", "value": names::discovery_address(input.rev, ns)},
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("INSTANCE_IP", "status.podIP"),
            field_env("HOST_IP", "status.hostIP"),
            field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            {"name": "ISTIO_META_WORKLOAD_NAME", "value": name},
            {"name": "ISTIO_META_OWNER", "value": format!("kubernetes://apis/apps/v1/namespaces/{ns}/deployments/{name}")},
            {"name": "ISTIO_META_MESH_ID", "value": input.spec.mesh_config.trust_domain},
            {"name": "TRUST_DOMAIN", "value": input.spec.mesh_config.trust_domain},
            {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
            {"name": "ISTIO_META_ROUTER_MODE", "value": "standard"},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"}, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 30},
        "resources": input.eff.gateway_resources,
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "privileged": false,
            "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
            {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
            {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
            {"name": "podinfo", "mountPath": "/etc/istio/pod"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
            {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
        ],
    });
    let pod_spec = json!({
        "serviceAccountName": sa_name,
        // Binding 80/443 inside the pod needs no privilege: the container listens on 8080/8443.
        "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
        "containers": [container],
        "volumes": [
            {"name": "workload-socket", "emptyDir": {}},
            {"name": "credential-socket", "emptyDir": {}},
            {"name": "workload-certs", "emptyDir": {}},
            {"name": "istio-envoy", "emptyDir": {}},
            {"name": "istio-data", "emptyDir": {}},
            {"name": "podinfo", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            ]}},
            {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
            {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
        ],
    });
    let hash = super::controlplane::config_hash(&pod_spec)?;
    let mut pod_labels = selector.clone();
    if let Some(labels) = pod_labels.as_object_mut() {
        labels.insert("sidecar.istio.io/inject".into(), json!("false"));
        labels.insert("service.istio.io/canonical-name".into(), json!(kind.base()));
    }
    let deployment = ManagedObject::Deployment(typed(
        "gateway Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": input.meta(name.clone(), &app_labels),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {
                            names::CONFIG_HASH_ANNOTATION: hash,
                            "prometheus.io/port": "15020", "prometheus.io/scrape": "true", "prometheus.io/path": "/stats/prometheus",
                        },
                    },
                    "spec": pod_spec,
                },
            },
        }),
    )?);
    Ok(vec![sa, deployment, service])
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, meshconfig};
    use super::super::{ManagedObject, render};
    use crate::crd::Profile;

    #[test]
    fn gateway_uses_proxy_image_and_revision_ca() {
        let mut mc = meshconfig(Profile::Demo, "canary");
        mc.spec.hub = "reg.example/istio".into();
        let r = render(&mc, &ctx()).unwrap();
        let dep = r
            .objects
            .iter()
            .find_map(|(_, o)| match o {
                ManagedObject::Deployment(d) if o.name() == "istio-egressgateway-canary" => {
                    Some(d.clone())
                }
                _ => None,
            })
            .unwrap();
        let c = &dep.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(format!("reg.example/istio/proxyv2:{}", crate::istio::ISTIO_VERSION).as_str())
        );
        let ca = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "CA_ADDR")
            .unwrap();
        assert_eq!(
            ca.value.as_deref(),
            Some("istiod-canary.istio-system.svc:15012")
        );
    }
}
