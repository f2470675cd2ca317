//! Renders the injected containers and volumes: `istio-init`, `istio-proxy` and the volumes the
//! real `proxyv2` image needs to bootstrap and reach istiod. Names, paths and env are Istio's.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe, ProjectedVolumeSource,
    ResourceFieldSelector, SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::iptables::{self, PROXY_UID};
use super::settings::{Settings, Template};
use crate::config::{InboundTrafficPolicy, InjectorConfig, InterceptionMode};

pub use crate::istio::INIT_CONTAINER as INIT_NAME;
pub use crate::istio::PROXY_CONTAINER as PROXY_NAME;
/// The `grpc-simple` template's init container, which writes the gRPC xDS bootstrap.
pub const GRPC_BOOTSTRAP_NAME: &str = "grpc-bootstrap-init";
/// The `grpc-simple` template's volume holding that bootstrap.
const GRPC_BOOTSTRAP_VOLUME: &str = "grpc-io-proxyless-bootstrap";
/// Secret volume of `mountMtlsCerts` (certificates mounted at `/etc/certs/`).
const MTLS_CERTS_VOLUME: &str = "istio-certs";
/// Envoy's health port, probed by the kubelet.
const HEALTH_PORT: i32 = 15021;
/// Envoy's Prometheus port.
const ENVOY_PROM_PORT: i32 = 15090;

/// The volumes Istio's sidecar template adds, in its order.
pub const VOLUME_NAMES: &[&str] = &[
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
    "istio-ca-crl",
];

/// Pod facts the proxy env needs.
pub struct PodFacts<'a> {
    pub app_containers: String,
    pub pod_ports: String,
    pub workload_name: &'a str,
    pub owner: String,
    pub prometheus_annotations: Option<String>,
    pub app_probers: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES` when the mesh asks for OTel semantic conventions.
    pub otel_resource_attributes: Option<String>,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

fn resource_env(name: &str, resource: &str, divisor: Option<&str>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: None,
                divisor: divisor.map(|d| Quantity(d.to_string())),
                resource: resource.into(),
            }),
            ..Default::default()
        }),
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn pull_policy(s: &Settings<'_>) -> Option<String> {
    (!s.image_pull_policy.is_empty()).then(|| s.image_pull_policy.to_string())
}

/// `proxyMetadata` entries as env vars (istio-init and istio-proxy both get them).
fn proxy_metadata_env(s: &Settings<'_>) -> Vec<EnvVar> {
    s.proxy_config
        .get("proxyMetadata")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| env(k, v)))
                .collect()
        })
        .unwrap_or_default()
}

/// `istio-init`: programs iptables, with NET_ADMIN and NET_RAW and nothing else.
pub fn init_container(s: &Settings<'_>, config: &InjectorConfig) -> Container {
    let env = proxy_metadata_env(s);
    Container {
        name: INIT_NAME.into(),
        image: Some(s.init_image.to_string()),
        image_pull_policy: pull_policy(s),
        args: Some(iptables::args(s, config)),
        env: (!env.is_empty()).then_some(env),
        resources: Some(s.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ready_probe(s: &Settings<'_>, startup: bool) -> Probe {
    let (delay, period, threshold) = if startup {
        (0, 1, 600)
    } else {
        (
            s.readiness_initial_delay,
            s.readiness_period,
            s.readiness_failure_threshold,
        )
    };
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(HEALTH_PORT),
            ..Default::default()
        }),
        // Kubernetes stores a zero delay as absent (Go's omitempty): render it the same way, so a
        // re-injection compares equal to the stored pod.
        initial_delay_seconds: (delay > 0).then_some(delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(threshold),
        ..Default::default()
    }
}

/// Istio's `otelResourceAttributes`: service.namespace (annotation, else the namespace),
/// service.version (annotation, else `app.kubernetes.io/version`, else a single container's image
/// tag/digest), service.instance.id (annotation, else `<ns>.$(POD_NAME).<first container>`).
pub fn otel_resource_attributes(
    pod: &k8s_openapi::api::core::v1::Pod,
    namespace: &str,
) -> Option<String> {
    let ann = |k: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .filter(|v| !v.is_empty())
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    let mut attrs = Vec::new();
    if let Some(v) = ann("resource.opentelemetry.io/service.namespace") {
        attrs.push(format!("service.namespace={v}"));
    } else if !namespace.is_empty() {
        attrs.push(format!("service.namespace={namespace}"));
    }
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/version"))
        .filter(|v| !v.is_empty());
    if let Some(v) = ann("resource.opentelemetry.io/service.version").or(label) {
        attrs.push(format!("service.version={v}"));
    } else if let [only] = containers {
        let image = only.image.as_deref().unwrap_or_default();
        let (rest, digest) = image.split_once('@').unwrap_or((image, ""));
        let tag = match (rest.rfind(':'), rest.rfind('/')) {
            (Some(c), Some(s)) if c > s => &rest[c + 1..],
            (Some(c), None) => &rest[c + 1..],
            _ => "",
        };
        let version = match (tag.is_empty(), digest.is_empty()) {
            (false, false) => format!("{tag}@{digest}"),
            (true, false) => digest.to_string(),
            (false, true) => tag.to_string(),
            (true, true) => String::new(),
        };
        if !version.is_empty() {
            attrs.push(format!("service.version={version}"));
        }
    }
    if let Some(v) = ann("resource.opentelemetry.io/service.instance.id") {
        attrs.push(format!("service.instance.id={v}"));
    } else if let Some(first) = containers.first() {
        attrs.push(format!(
            "service.instance.id={namespace}.$(POD_NAME).{}",
            first.name
        ));
    }
    (!attrs.is_empty()).then(|| attrs.join(","))
}

/// pilot-agent's arguments: `proxy <mode>` and the log levels.
fn agent_args(s: &Settings<'_>, mode: &str) -> Vec<String> {
    vec![
        "proxy".to_string(),
        mode.into(),
        "--domain".into(),
        "$(POD_NAMESPACE).svc.cluster.local".into(),
        format!("--proxyLogLevel={}", s.log_level),
        format!("--proxyComponentLogLevel={}", s.component_log_level),
        format!("--log_output_level={}", s.agent_log_level),
    ]
}

/// The agent's identity and CA env, first in every Istio proxy template.
fn identity_env(mesh: &crate::config::MeshSettings) -> Vec<EnvVar> {
    vec![
        env("PILOT_CERT_PROVIDER", "istiod"),
        env("CA_ADDR", mesh.discovery_address.clone()),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
    ]
}

/// `COMPLIANCE_POLICY` (and Go's FIPS-only mode for `fips-140-3`), when the mesh sets one.
fn compliance_env(mesh: &crate::config::MeshSettings) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if !mesh.compliance_policy.is_empty() {
        env.push(self::env(
            "COMPLIANCE_POLICY",
            mesh.compliance_policy.clone(),
        ));
        if mesh.compliance_policy == "fips-140-3" {
            env.push(self::env("GODEBUG", "fips140=only"));
        }
    }
    env
}

/// `istio-proxy`: pilot-agent + Envoy, uid 1337.
pub fn proxy_container(
    s: &Settings<'_>,
    config: &InjectorConfig,
    facts: &PodFacts<'_>,
) -> Container {
    let mesh = &config.mesh;
    let mut args = agent_args(s, "sidecar");
    // Istio passes a concurrency only when it is positive (0 lets the agent size it).
    if let Some(c) = s.concurrency.filter(|c| *c > 0) {
        args.push("--concurrency".into());
        args.push(c.to_string());
    }
    let proxy_config_json = serde_json::to_string(&s.proxy_config).unwrap_or_else(|_| "{}".into());
    let mut env = identity_env(mesh);
    env.extend([
        resource_env("ISTIO_CPU_LIMIT", "limits.cpu", Some("1")),
        self::env("PROXY_CONFIG", proxy_config_json),
        self::env("ISTIO_META_POD_PORTS", facts.pod_ports.clone()),
        self::env("ISTIO_META_APP_CONTAINERS", facts.app_containers.clone()),
        resource_env("GOMEMLIMIT", "limits.memory", None),
        // Istio 1.32: the agent's Go runtime sized to the proxy's CPU limit.
        resource_env("GOMAXPROCS", "limits.cpu", Some("1")),
        self::env("ISTIO_META_CLUSTER_ID", mesh.cluster_id.clone()),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        self::env("ISTIO_META_INTERCEPTION_MODE", s.interception_mode.as_str()),
        self::env("ISTIO_META_WORKLOAD_NAME", facts.workload_name),
        self::env("ISTIO_META_OWNER", facts.owner.clone()),
        self::env("ISTIO_META_MESH_ID", mesh.trust_domain.clone()),
        self::env("TRUST_DOMAIN", mesh.trust_domain.clone()),
    ]);
    if let Some(a) = &facts.otel_resource_attributes {
        env.push(self::env("OTEL_RESOURCE_ATTRIBUTES", a.clone()));
    }
    if mesh.inbound_traffic_policy == InboundTrafficPolicy::Localhost {
        env.push(self::env(
            "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION",
            "true",
        ));
    }
    env.extend(compliance_env(mesh));
    env.extend(proxy_metadata_env(s));
    if s.bootstrap_override.is_some() {
        env.push(env_bootstrap_override());
    }
    if let Some(p) = &facts.prometheus_annotations {
        env.push(self::env("ISTIO_PROMETHEUS_ANNOTATIONS", p.clone()));
    }
    if let Some(p) = &facts.app_probers {
        env.push(self::env("ISTIO_KUBE_APP_PROBERS", p.clone()));
    }

    let mut mounts = vec![
        mount("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
        mount("credential-socket", "/var/run/secrets/credential-uds"),
        mount(
            "workload-certs",
            "/var/run/secrets/workload-spiffe-credentials",
        ),
        mount("istiod-ca-cert", "/var/run/secrets/istio"),
        mount("istio-ca-crl", "/var/run/secrets/istio/crl"),
        mount("istio-data", "/var/lib/istio/data"),
    ];
    if s.bootstrap_override.is_some() {
        mounts.push(mount(
            "custom-bootstrap-volume",
            "/etc/istio/custom-bootstrap",
        ));
    }
    mounts.push(mount("istio-envoy", "/etc/istio/proxy"));
    mounts.push(mount("istio-token", "/var/run/secrets/tokens"));
    if config.mount_mtls_certs {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(MTLS_CERTS_VOLUME, "/etc/certs/")
        });
    }
    mounts.push(mount("istio-podinfo", "/etc/istio/pod"));
    for (name, m) in &s.user_volume_mounts {
        let mut m = m.clone();
        m.name = name.clone();
        mounts.push(m);
    }

    // TPROXY needs NET_ADMIN and root; capNetBindService lets Envoy bind ports < 1024.
    let tproxy = s.interception_mode == InterceptionMode::Tproxy;
    let root = tproxy || s.cap_net_bind_service;
    let mut add = Vec::new();
    if tproxy {
        add.push("NET_ADMIN".to_string());
    }
    if s.cap_net_bind_service {
        add.push("NET_BIND_SERVICE".to_string());
    }
    let security_context = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then_some(add),
            drop: Some(vec!["ALL".into()]),
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_group: Some(PROXY_UID),
        run_as_non_root: Some(!root),
        run_as_user: Some(if root { 0 } else { PROXY_UID }),
        ..Default::default()
    };

    let probes_enabled = s.status_port != 0;
    let lifecycle = if s.native_sidecar {
        Some(Lifecycle {
            pre_stop: Some(exec_hook(&[
                "pilot-agent",
                "request",
                &format!("--debug-port={}", s.status_port),
                "POST",
                "drain",
            ])),
            ..Default::default()
        })
    } else if s.hold_application {
        Some(Lifecycle {
            post_start: Some(exec_hook(&["pilot-agent", "wait"])),
            ..Default::default()
        })
    } else {
        None
    };

    Container {
        name: PROXY_NAME.into(),
        image: Some(s.image.to_string()),
        image_pull_policy: pull_policy(s),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            container_port: ENVOY_PROM_PORT,
            name: Some("http-envoy-prom".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: probes_enabled.then(|| ready_probe(s, false)),
        startup_probe: probes_enabled.then(|| ready_probe(s, true)),
        resources: Some(s.resources.clone()),
        security_context: Some(security_context),
        volume_mounts: Some(mounts),
        lifecycle,
        restart_policy: s.native_sidecar.then(|| "Always".to_string()),
        ..Default::default()
    }
}

/// `istio-proxy` of Istio's `gateway` template: the pod is the gateway (`proxy router`). Only
/// what that template renders: no iptables or probe settings of a sidecar, uid 1337 without the
/// sidecar's hardening (the gateway's Deployment brings its own), no resources (the gateway's
/// Deployment sets them), a readiness probe on Envoy's health port.
pub fn gateway_container(
    s: &Settings<'_>,
    config: &InjectorConfig,
    facts: &PodFacts<'_>,
) -> Container {
    let mesh = &config.mesh;
    let args = agent_args(s, "router");
    let proxy_config_json = serde_json::to_string(&s.proxy_config).unwrap_or_else(|_| "{}".into());
    let mut env = identity_env(mesh);
    env.extend([
        resource_env("ISTIO_CPU_LIMIT", "limits.cpu", Some("1")),
        self::env("PROXY_CONFIG", proxy_config_json),
        self::env("ISTIO_META_POD_PORTS", facts.pod_ports.clone()),
        resource_env("GOMEMLIMIT", "limits.memory", None),
        resource_env("GOMAXPROCS", "limits.cpu", Some("1")),
    ]);
    env.extend(compliance_env(mesh));
    env.extend([
        self::env("ISTIO_META_APP_CONTAINERS", facts.app_containers.clone()),
        self::env("ISTIO_META_CLUSTER_ID", mesh.cluster_id.clone()),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        self::env("ISTIO_META_INTERCEPTION_MODE", s.interception_mode.as_str()),
        self::env("ISTIO_META_WORKLOAD_NAME", facts.workload_name),
        self::env("ISTIO_META_OWNER", facts.owner.clone()),
    ]);
    if s.bootstrap_override.is_some() {
        env.push(env_bootstrap_override());
    }
    env.push(self::env("ISTIO_META_MESH_ID", mesh.trust_domain.clone()));
    env.push(self::env("TRUST_DOMAIN", mesh.trust_domain.clone()));
    env.extend(proxy_metadata_env(s));
    if let Some(p) = &facts.prometheus_annotations {
        env.push(self::env("ISTIO_PROMETHEUS_ANNOTATIONS", p.clone()));
    }
    if let Some(p) = &facts.app_probers {
        env.push(self::env("ISTIO_KUBE_APP_PROBERS", p.clone()));
    }

    let mut mounts = vec![
        mount("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
        mount("credential-socket", "/var/run/secrets/credential-uds"),
        mount(
            "workload-certs",
            "/var/run/secrets/workload-spiffe-credentials",
        ),
        mount("istiod-ca-cert", "/var/run/secrets/istio"),
        mount("istio-data", "/var/lib/istio/data"),
    ];
    if s.bootstrap_override.is_some() {
        mounts.push(mount(
            "custom-bootstrap-volume",
            "/etc/istio/custom-bootstrap",
        ));
    }
    mounts.push(mount("istio-envoy", "/etc/istio/proxy"));
    mounts.push(mount("istio-token", "/var/run/secrets/tokens"));
    if config.mount_mtls_certs {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(MTLS_CERTS_VOLUME, "/etc/certs/")
        });
    }
    mounts.push(mount("istio-podinfo", "/etc/istio/pod"));

    Container {
        name: PROXY_NAME.into(),
        image: Some(s.image.to_string()),
        image_pull_policy: pull_policy(s),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            container_port: ENVOY_PROM_PORT,
            name: Some("http-envoy-prom".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(ready_probe(s, false)),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// `istio-proxy` of Istio's `grpc-agent` template: pilot-agent without Envoy (`DISABLE_ENVOY`),
/// serving xDS and certificates to the app's gRPC library over `/etc/istio/proxy`; readiness on the
/// agent's 15020, the app held until the agent is ready.
pub fn grpc_agent_container(
    s: &Settings<'_>,
    config: &InjectorConfig,
    facts: &PodFacts<'_>,
) -> Container {
    let mesh = &config.mesh;
    let args = agent_args(s, "sidecar");
    let proxy_config_json = serde_json::to_string(&s.proxy_config).unwrap_or_else(|_| "{}".into());
    let mut env = vec![
        env("ISTIO_META_GENERATOR", "grpc"),
        env("OUTPUT_CERTS", "/var/lib/istio/data"),
    ];
    if mesh.inbound_traffic_policy == InboundTrafficPolicy::Localhost {
        env.push(self::env(
            "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION",
            "true",
        ));
    }
    env.extend(identity_env(mesh));
    env.extend([
        self::env("PROXY_CONFIG", format!("{proxy_config_json}\n")),
        self::env("ISTIO_META_POD_PORTS", facts.pod_ports.clone()),
        self::env("ISTIO_META_APP_CONTAINERS", facts.app_containers.clone()),
        self::env("ISTIO_META_CLUSTER_ID", mesh.cluster_id.clone()),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        self::env("ISTIO_META_WORKLOAD_NAME", facts.workload_name),
        self::env("ISTIO_META_OWNER", facts.owner.clone()),
        self::env("ISTIO_META_MESH_ID", mesh.trust_domain.clone()),
        self::env("TRUST_DOMAIN", mesh.trust_domain.clone()),
    ]);
    env.extend(proxy_metadata_env(s));
    // gRPC resolves xds:/// names itself: no DNS capture, and no Envoy to start.
    env.push(self::env("ISTIO_META_DNS_CAPTURE", "false"));
    env.push(self::env("DISABLE_ENVOY", "true"));
    if let Some(p) = &facts.prometheus_annotations {
        env.push(self::env("ISTIO_PROMETHEUS_ANNOTATIONS", p.clone()));
    }
    let mut mounts = vec![
        mount("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
        mount(
            "workload-certs",
            "/var/run/secrets/workload-spiffe-credentials",
        ),
        mount("istiod-ca-cert", "/var/run/secrets/istio"),
        mount("istio-data", "/var/lib/istio/data"),
        mount("istio-xds", "/etc/istio/proxy"),
        mount("istio-token", "/var/run/secrets/tokens"),
    ];
    if config.mount_mtls_certs {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(MTLS_CERTS_VOLUME, "/etc/certs/")
        });
    }
    mounts.push(mount("istio-podinfo", "/etc/istio/pod"));
    for (name, m) in &s.user_volume_mounts {
        let mut m = m.clone();
        m.name = name.clone();
        mounts.push(m);
    }
    let probe = (s.status_port != 0).then(|| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(15020),
            ..Default::default()
        }),
        initial_delay_seconds: (s.readiness_initial_delay > 0).then_some(s.readiness_initial_delay),
        period_seconds: Some(s.readiness_period),
        timeout_seconds: Some(3),
        failure_threshold: Some(s.readiness_failure_threshold),
        ..Default::default()
    });
    Container {
        name: PROXY_NAME.into(),
        image: Some(s.image.to_string()),
        image_pull_policy: pull_policy(s),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            container_port: 15020,
            name: Some("mesh-metrics".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        lifecycle: Some(Lifecycle {
            post_start: Some(exec_hook(&[
                "pilot-agent",
                "wait",
                "--url=http://localhost:15020/healthz/ready",
            ])),
            ..Default::default()
        }),
        readiness_probe: probe,
        resources: Some(s.resources.clone()),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// What the gRPC templates render for every app container (the user's container is merged over
/// it): the bootstrap's env and mounts. `None` for the other templates.
pub fn grpc_app_overlay(template: Template) -> Option<Container> {
    let (env, mounts) = match template {
        Template::GrpcAgent => (
            vec![
                env("GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT", "true"),
                env("GRPC_XDS_BOOTSTRAP", "/etc/istio/proxy/grpc-bootstrap.json"),
            ],
            vec![
                mount("istio-data", "/var/lib/istio/data"),
                mount("istio-xds", "/etc/istio/proxy"),
                mount(
                    "workload-certs",
                    "/var/run/secrets/workload-spiffe-credentials",
                ),
            ],
        ),
        Template::GrpcSimple => (
            vec![
                env("GRPC_XDS_BOOTSTRAP", "/var/lib/grpc/data/bootstrap.json"),
                env("GRPC_GO_LOG_VERBOSITY_LEVEL", "99"),
                env("GRPC_GO_LOG_SEVERITY_LEVEL", "info"),
            ],
            vec![mount(GRPC_BOOTSTRAP_VOLUME, "/var/lib/grpc/data/")],
        ),
        Template::Sidecar | Template::Gateway => return None,
    };
    Some(Container {
        env: Some(env),
        volume_mounts: Some(mounts),
        ..Default::default()
    })
}

/// The `grpc-simple` template's init container: writes the gRPC xDS bootstrap pointing at istiod's
/// plaintext port for the pod's node id.
pub fn grpc_bootstrap_init(config: &InjectorConfig) -> Container {
    let script = r#"NODE_ID="sidecar~${INSTANCE_IP}~${POD_NAME}.${POD_NAMESPACE}~cluster.local"
SERVER_URI="dns:///istiod.${ISTIO_NAMESPACE}.svc:15010"
echo '
{
  "xds_servers": [
    {
      "server_uri": "'${SERVER_URI}'",
      "channel_creds": [{"type": "insecure"}],
      "server_features" : ["xds_v3"]
    }
  ],
  "node": {
    "id": "'${NODE_ID}'",
    "metadata": {
      "GENERATOR": "grpc"
    }
  }
}' > /var/lib/grpc/data/bootstrap.json"#;
    Container {
        name: GRPC_BOOTSTRAP_NAME.into(),
        image: Some("busybox:1.28".into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        env: Some(vec![
            field_env("INSTANCE_IP", "status.podIP"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            env(
                "ISTIO_NAMESPACE",
                format!("{}\n", config.mesh.control_plane_namespace),
            ),
        ]),
        volume_mounts: Some(vec![mount(GRPC_BOOTSTRAP_VOLUME, "/var/lib/grpc/data/")]),
        ..Default::default()
    }
}

/// The gateway template's pod-level setting: Envoy may bind ports below 1024 without a
/// capability.
pub fn gateway_sysctls() -> Vec<k8s_openapi::api::core::v1::Sysctl> {
    vec![k8s_openapi::api::core::v1::Sysctl {
        name: "net.ipv4.ip_unprivileged_port_start".into(),
        value: "0".into(),
    }]
}

fn mtls_certs_volume(service_account: &str) -> Volume {
    let sa = if service_account.is_empty() {
        "default"
    } else {
        service_account
    };
    Volume {
        name: MTLS_CERTS_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            optional: Some(true),
            secret_name: Some(format!("istio.{sa}")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn podinfo_volume() -> Volume {
    Volume {
        name: "istio-podinfo".into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                downward("labels", "metadata.labels"),
                downward("annotations", "metadata.annotations"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn token_volume() -> Volume {
    Volume {
        name: "istio-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some("istio-ca".into()),
                    expiration_seconds: Some(43200),
                    path: "istio-token".into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `grpc-agent` template's volumes, in its order.
fn grpc_agent_volumes(
    s: &Settings<'_>,
    config: &InjectorConfig,
    service_account: &str,
) -> Vec<Volume> {
    let mut v = vec![
        empty_dir("workload-socket", None),
        empty_dir("workload-certs", None),
    ];
    if let Some(cm) = s.bootstrap_override {
        v.push(config_map("custom-bootstrap-volume", cm, false));
    }
    v.extend([
        empty_dir("istio-xds", Some("Memory")),
        empty_dir("istio-data", None),
        podinfo_volume(),
        token_volume(),
        config_map("istiod-ca-cert", "istio-ca-root-cert", false),
    ]);
    if config.mount_mtls_certs {
        v.push(mtls_certs_volume(service_account));
    }
    for (name, vol) in &s.user_volumes {
        let mut vol = vol.clone();
        vol.name = name.clone();
        v.push(vol);
    }
    v
}

fn env_bootstrap_override() -> EnvVar {
    env(
        "ISTIO_BOOTSTRAP_OVERRIDE",
        "/etc/istio/custom-bootstrap/custom_bootstrap.json",
    )
}

fn exec_hook(cmd: &[&str]) -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
        }),
        ..Default::default()
    }
}

fn empty_dir(name: &str, medium: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_string),
            size_limit: None,
        }),
        ..Default::default()
    }
}

fn config_map(name: &str, cm: &str, optional: bool) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: cm.into(),
            optional: optional.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn downward(path: &str, field: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: field.into(),
        }),
        ..Default::default()
    }
}

/// The pod volumes, in [`VOLUME_NAMES`] order, then the optional ones. `service_account` names
/// the pod's ServiceAccount (empty: `default`), for `mountMtlsCerts`.
pub fn volumes(s: &Settings<'_>, config: &InjectorConfig, service_account: &str) -> Vec<Volume> {
    match s.template {
        Template::GrpcSimple => return vec![empty_dir(GRPC_BOOTSTRAP_VOLUME, None)],
        Template::GrpcAgent => return grpc_agent_volumes(s, config, service_account),
        Template::Sidecar | Template::Gateway => {}
    }
    let gateway = s.template == Template::Gateway;
    let mut v = vec![
        empty_dir("workload-socket", None),
        empty_dir("credential-socket", None),
        empty_dir("workload-certs", None),
    ];
    // The gateway template lists its bootstrap volume early and has no CRL volume.
    if gateway && let Some(cm) = s.bootstrap_override {
        v.push(config_map("custom-bootstrap-volume", cm, false));
    }
    v.extend([
        empty_dir("istio-envoy", Some("Memory")),
        empty_dir("istio-data", None),
        podinfo_volume(),
        token_volume(),
        config_map("istiod-ca-cert", "istio-ca-root-cert", false),
    ]);
    if !gateway {
        v.push(config_map("istio-ca-crl", "istio-ca-crl", true));
    }
    if config.mount_mtls_certs {
        v.push(mtls_certs_volume(service_account));
    }
    if gateway {
        return v;
    }
    if let Some(cm) = s.bootstrap_override {
        v.push(config_map("custom-bootstrap-volume", cm, false));
    }
    for (name, vol) in &s.user_volumes {
        let mut vol = vol.clone();
        vol.name = name.clone();
        v.push(vol);
    }
    v
}
