//! Rewrites app containers' HTTP/TCP/gRPC probes to pilot-agent's status port, so the kubelet
//! (outside the mesh) can still probe under STRICT mTLS. The originals go into
//! `ISTIO_KUBE_APP_PROBERS`, keyed by the new path, in the format pilot-agent reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, Lifecycle, LifecycleHandler, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

/// Which probe of a container, and its path segment.
#[derive(Clone, Copy)]
enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Kind::Liveness => "livez",
            Kind::Readiness => "readyz",
            Kind::Startup => "startupz",
        }
    }
}

/// Resolves a named port against the container's ports.
fn resolve_port(port: &IntOrString, ports: Option<&Vec<ContainerPort>>) -> Option<i32> {
    match port {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            ports?
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }
    }
}

/// Rewrites one probe in place; returns the prober entry for the original, if rewritten.
fn rewrite_one(
    probe: &mut Probe,
    container: &str,
    ports: Option<&Vec<ContainerPort>>,
    kind: Kind,
    status_port: u16,
    warnings: &mut Vec<String>,
) -> Option<(String, Value)> {
    let status = i32::from(status_port);
    let path = format!("/app-health/{container}/{}", kind.segment());
    let mut prober = Map::new();
    if let Some(http) = probe.http_get.as_mut() {
        let Some(port) = resolve_port(&http.port, ports) else {
            warnings.push(named_port_warning(container, kind, &http.port));
            return None;
        };
        if port == status {
            return None;
        }
        let mut original = http.clone();
        original.port = IntOrString::Int(port);
        prober.insert("httpGet".into(), serde_json::to_value(&original).ok()?);
        http.port = IntOrString::Int(status);
        http.path = Some(path.clone());
        if http.scheme.as_deref() == Some("HTTPS") {
            http.scheme = Some("HTTP".into());
        }
    } else if let Some(tcp) = probe.tcp_socket.as_ref() {
        let Some(port) = resolve_port(&tcp.port, ports) else {
            warnings.push(named_port_warning(container, kind, &tcp.port));
            return None;
        };
        if port == status {
            return None;
        }
        let mut original = tcp.clone();
        original.port = IntOrString::Int(port);
        prober.insert("tcpSocket".into(), serde_json::to_value(&original).ok()?);
    } else if let Some(grpc) = probe.grpc.as_ref() {
        if grpc.port == status {
            return None;
        }
        prober.insert("grpc".into(), serde_json::to_value(grpc).ok()?);
    } else {
        return None;
    }
    if probe.http_get.is_none() {
        probe.tcp_socket = None;
        probe.grpc = None;
        probe.http_get = Some(HTTPGetAction {
            path: Some(path.clone()),
            port: IntOrString::Int(status),
            ..Default::default()
        });
    }
    if let Some(t) = probe.timeout_seconds.filter(|t| *t > 0) {
        prober.insert("timeoutSeconds".into(), Value::from(t));
    }
    Some((path, Value::Object(prober)))
}

fn named_port_warning(container: &str, kind: Kind, port: &IntOrString) -> String {
    let name = match port {
        IntOrString::Int(p) => p.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    format!(
        "container {container}: {} probe uses port \"{name}\" which is not a declared container port; \
         the probe was not rewritten and may fail under STRICT mTLS",
        kind.segment()
    )
}

/// Rewrites the probes of `container` without touching it: returns each rewritten probe with
/// its JSON field name (`livenessProbe`, ...) and adds the originals to `probers`.
/// `with_startup: false` leaves the startup probe as it is (and out of the probers).
pub fn rewrite_container(
    container: &Container,
    status_port: u16,
    with_startup: bool,
    probers: &mut BTreeMap<String, Value>,
    warnings: &mut Vec<String>,
) -> Vec<(&'static str, Probe)> {
    let mut rewritten = Vec::new();
    let startup = if with_startup {
        &container.startup_probe
    } else {
        &None
    };
    for (probe, kind, field) in [
        (&container.liveness_probe, Kind::Liveness, "livenessProbe"),
        (
            &container.readiness_probe,
            Kind::Readiness,
            "readinessProbe",
        ),
        (startup, Kind::Startup, "startupProbe"),
    ] {
        let Some(original) = probe else { continue };
        let mut p = original.clone();
        if let Some((path, prober)) = rewrite_one(
            &mut p,
            &container.name,
            container.ports.as_ref(),
            kind,
            status_port,
            warnings,
        ) {
            probers.insert(path, prober);
            rewritten.push((field, p));
        }
    }
    rewritten
}

/// Rewrites one httpGet/tcpSocket lifecycle handler; returns the prober entry for the original.
fn rewrite_hook(
    handler: &mut LifecycleHandler,
    container: &Container,
    segment: &str,
    status_port: u16,
) -> Option<(String, Value)> {
    let status = i32::from(status_port);
    let path = format!("/app-lifecycle/{}/{segment}", container.name);
    let ports = container.ports.as_ref();
    let mut prober = Map::new();
    if let Some(http) = handler.http_get.as_mut() {
        let port = resolve_port(&http.port, ports)?;
        // Already on the agent (a re-injection of a rewritten hook): nothing to do.
        if port == status {
            return None;
        }
        let mut original = http.clone();
        original.port = IntOrString::Int(port);
        prober.insert("httpGet".into(), serde_json::to_value(&original).ok()?);
        http.port = IntOrString::Int(status);
        http.path = Some(path.clone());
        if http.scheme.as_deref() == Some("HTTPS") {
            http.scheme = Some("HTTP".into());
        }
    } else if let Some(tcp) = handler.tcp_socket.as_ref() {
        let port = resolve_port(&tcp.port, ports)?;
        if port == status {
            return None;
        }
        let mut original = tcp.clone();
        original.port = IntOrString::Int(port);
        prober.insert("tcpSocket".into(), serde_json::to_value(&original).ok()?);
        handler.tcp_socket = None;
        handler.http_get = Some(HTTPGetAction {
            path: Some(path.clone()),
            port: IntOrString::Int(status),
            ..Default::default()
        });
    } else {
        return None;
    }
    Some((path, Value::Object(prober)))
}

/// Rewrites httpGet/tcpSocket `preStop`/`postStart` hooks to the agent like probes
/// (`/app-lifecycle/<container>/prestopz|poststartz`); `None` when nothing changed.
pub fn rewrite_lifecycle(
    container: &Container,
    status_port: u16,
    probers: &mut BTreeMap<String, Value>,
) -> Option<Lifecycle> {
    let original = container.lifecycle.as_ref()?;
    let mut lifecycle = original.clone();
    let mut changed = false;
    for (hook, segment) in [
        (&mut lifecycle.pre_stop, "prestopz"),
        (&mut lifecycle.post_start, "poststartz"),
    ] {
        if let Some(h) = hook.as_mut()
            && let Some((path, prober)) = rewrite_hook(h, container, segment, status_port)
        {
            probers.insert(path, prober);
            changed = true;
        }
    }
    changed.then_some(lifecycle)
}
