//! Pure injection: `(pod, namespace, config) -> Result<Outcome, InjectError>`, no I/O.
//!
//! Submodules, one concern each: [`annotations`] (value parsers), [`keys`] (names),
//! [`decision`] (whether to inject and why), [`settings`] (annotation/namespace/config
//! resolution and validation), [`render`] (containers and volumes), [`iptables`],
//! [`probes`] (app probe rewrite), [`identity`] (workload and canonical names) and [`patch`].

pub mod annotations;
pub mod decision;
pub mod identity;
pub mod iptables;
pub mod keys;
pub mod overrides;
pub mod patch;
pub mod probes;
pub mod prometheus;
pub mod reinject;
pub mod render;
pub mod settings;
#[cfg(test)]
mod tests;
pub mod types;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::config::InterceptionMode;
use decision::EffectiveAnnotations;
pub use types::*;

/// Warnings for unknown and deprecated `sidecar.istio.io/*` keys on the pod.
fn key_warnings(pod: &Pod, warnings: &mut Vec<String>) {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return;
    };
    let mut emitted = 0usize;
    let mut suppressed = 0usize;
    for key in annotations.keys().filter(|k| keys::is_checked_family(k)) {
        let warning = match keys::classify(key) {
            keys::KeyKind::Known => continue,
            keys::KeyKind::Deprecated(what) => format!("annotation {key} is {what}"),
            keys::KeyKind::Unknown => format!(
                "annotation {key} is not a known Istio annotation and has no effect (typo?)"
            ),
        };
        // Bounded: kubectl prints every warning, and a pod may carry thousands of keys.
        if emitted < MAX_KEY_WARNINGS {
            warnings.push(warning);
            emitted += 1;
        } else {
            suppressed += 1;
        }
    }
    if suppressed > 0 {
        warnings.push(format!(
            "{suppressed} more unknown or deprecated sidecar.istio.io annotations not listed"
        ));
    }
    if annotations.contains_key(keys::KUBEVIRT_INTERFACES)
        && annotations.contains_key(keys::REROUTE_VIRTUAL_INTERFACES)
    {
        warnings.push(format!(
            "both {} and {} are set; {} wins",
            keys::REROUTE_VIRTUAL_INTERFACES,
            keys::KUBEVIRT_INTERFACES,
            keys::REROUTE_VIRTUAL_INTERFACES
        ));
    }
}

/// Decides and renders the injection for one pod.
pub fn inject(req: &InjectRequest<'_>) -> Result<Outcome, InjectError> {
    let pod = req.pod;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(InjectError::InvalidPod {
            field: "spec",
            problem: "missing".into(),
        });
    };
    let ann = EffectiveAnnotations::new(pod, req.namespace);
    let decision = decision::decide(pod, req.namespace, req.config, &ann)?;
    let mut warnings = decision.warnings;
    let mut explanation = decision.explanation;
    key_warnings(pod, &mut warnings);
    if decision.reason == Reason::AlreadyInjected {
        return reinject(req, warnings, explanation);
    }
    if decision.reason != Reason::Injected {
        explanation.push(format!("decision: {}", decision.reason));
        return Ok(Outcome {
            reason: decision.reason,
            patch: json_patch::Patch::default(),
            warnings,
            explanation,
        });
    }

    // Checked after the decision: a pod we leave alone is never refused for its size.
    let count = spec.containers.len() + spec.init_containers.as_ref().map_or(0, Vec::len);
    if count > MAX_CONTAINERS {
        return Err(InjectError::InvalidPod {
            field: "spec.containers",
            problem: format!(
                "{count} containers and init containers, at most {MAX_CONTAINERS} are accepted"
            ),
        });
    }

    let settings = settings::resolve(&ann, req.config, req.nodes, &mut warnings)
        .map_err(InjectError::InvalidAnnotations)?;
    let changes = mutate(pod, req, &settings, &mut warnings, &mut explanation, None)?;
    let patch = patch::build(pod, changes)?;
    explanation.push(format!(
        "decision: injected ({} patch operations)",
        patch.0.len()
    ));
    Ok(Outcome {
        reason: Reason::Injected,
        patch,
        warnings,
        explanation,
    })
}

/// An already-injected pod: strip what the status lists, inject again, and answer with the
/// difference to the pod as sent (none: already injected, empty patch).
fn reinject(
    req: &InjectRequest<'_>,
    warnings: Vec<String>,
    mut explanation: Vec<String>,
) -> Result<Outcome, InjectError> {
    let unchanged = |warnings, mut explanation: Vec<String>, why: &str| {
        explanation.push(format!("decision: already injected, {why} (empty patch)"));
        Ok(Outcome {
            reason: Reason::AlreadyInjected,
            patch: json_patch::Patch::default(),
            warnings,
            explanation,
        })
    };
    let Some((stripped, previous)) = reinject::strip(req.pod)? else {
        return unchanged(
            warnings,
            explanation,
            "its status annotation is unreadable: left alone",
        );
    };
    let ann = EffectiveAnnotations::new(&stripped, req.namespace);
    let d = decision::decide(&stripped, req.namespace, req.config, &ann)?;
    if d.reason != Reason::Injected {
        return unchanged(
            warnings,
            explanation,
            &format!("injection would now skip it ({}): left as it is", d.reason),
        );
    }
    let mut again = Vec::new();
    let mut steps = Vec::new();
    let settings = settings::resolve(&ann, req.config, req.nodes, &mut again)
        .map_err(InjectError::InvalidAnnotations)?;
    let sreq = InjectRequest {
        pod: &stripped,
        ..*req
    };
    let changes = mutate(
        &stripped,
        &sreq,
        &settings,
        &mut again,
        &mut steps,
        Some(&previous),
    )?;
    let patch = patch::build(&stripped, changes)?;
    let mut result = patch::to_value(&stripped)?;
    json_patch::patch(&mut result, &patch).map_err(|e| InjectError::Internal(e.to_string()))?;
    let original = patch::to_value(req.pod)?;
    let mut diff = json_patch::diff(&original, &result);
    // The API server stores quantities canonically (`2000m` comes back as `2`): a quantity that
    // differs only in spelling is no change.
    diff.0
        .retain(|op| !same_quantity(&original, op) && !zero_the_api_server_drops(op));
    if diff.0.is_empty() {
        return unchanged(warnings, explanation, "re-rendering gives the same pod");
    }
    explanation.extend(steps);
    explanation.push(format!(
        "decision: re-injected: what the status lists was re-rendered for the pod as it is now ({} patch operations)",
        diff.0.len()
    ));
    let mut warnings = warnings;
    warnings.extend(again);
    Ok(Outcome {
        reason: Reason::Injected,
        patch: diff,
        warnings,
        explanation,
    })
}

/// Whether `op` adds a probe's zero count that the API server stores as absent (Go's omitempty), as
/// a user's override may carry.
fn zero_the_api_server_drops(op: &json_patch::PatchOperation) -> bool {
    let json_patch::PatchOperation::Add(a) = op else {
        return false;
    };
    let field = a.path.as_str().rsplit('/').next().unwrap_or_default();
    a.value.as_i64() == Some(0)
        && matches!(
            field,
            "initialDelaySeconds"
                | "timeoutSeconds"
                | "periodSeconds"
                | "successThreshold"
                | "failureThreshold"
        )
}

/// Whether `op` replaces a resource quantity with the same amount spelt differently.
fn same_quantity(original: &serde_json::Value, op: &json_patch::PatchOperation) -> bool {
    let json_patch::PatchOperation::Replace(r) = op else {
        return false;
    };
    let path = r.path.as_str();
    if !(path.contains("/resources/limits/") || path.contains("/resources/requests/")) {
        return false;
    }
    let (Some(old), Some(new)) = (
        original.pointer(path).and_then(serde_json::Value::as_str),
        r.value.as_str(),
    ) else {
        return false;
    };
    matches!(
        (annotations::parse_quantity(old), annotations::parse_quantity(new)),
        (Ok(a), Ok(b)) if a.nanos() == b.nanos()
    )
}

/// Sidecar status annotation (`sidecar.istio.io/status`), Istio's JSON shape and field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    init_containers: Option<Vec<&'a str>>,
    containers: Option<Vec<&'a str>>,
    volumes: Vec<&'a str>,
    image_pull_secrets: Option<Vec<&'a str>>,
    revision: &'a str,
}

/// Works out every change to the pod, without cloning or re-serializing it.
fn mutate(
    pod: &Pod,
    req: &InjectRequest<'_>,
    s: &settings::Settings<'_>,
    warnings: &mut Vec<String>,
    explanation: &mut Vec<String>,
    previous: Option<&reinject::Previous>,
) -> Result<patch::Changes, InjectError> {
    let config = req.config;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(InjectError::InvalidPod {
            field: "spec",
            problem: "missing".into(),
        });
    };
    let mut changes = patch::Changes::default();

    // Interception NONE programs no iptables: no istio-init, native sidecar or not (as Istio).
    // The gateway template programs none either: the gateway is the pod's main process.
    let needs_init =
        s.interception_mode != InterceptionMode::None && s.template == settings::Template::Sidecar;
    // A user's own istio-proxy (and istio-init, when one is injected) is merged over ours.
    let names: &[&'static str] = if needs_init {
        &[render::INIT_NAME, render::PROXY_NAME]
    } else {
        &[render::PROXY_NAME]
    };
    let overrides = overrides::find(pod, names)?;
    let overridden =
        |list: patch::List, i: usize| overrides.iter().any(|o| o.at == Some((list, i)));

    // Facts about the app containers.
    let app_names: Vec<&str> = spec
        .containers
        .iter()
        .enumerate()
        .filter(|(i, _)| !overridden(patch::List::Containers, *i))
        .map(|(_, c)| c.name.as_str())
        .collect();
    let ports: Vec<serde_json::Value> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    let pod_ports = serde_json::Value::Array(ports).to_string();

    // Probe rewrite.
    let mut probers = BTreeMap::new();
    if s.rewrite_probes && s.status_port != 0 {
        let lists = [
            (patch::List::Containers, Some(&spec.containers)),
            (patch::List::InitContainers, spec.init_containers.as_ref()),
        ];
        for (list, containers) in lists {
            for (i, c) in containers.into_iter().flatten().enumerate() {
                if overridden(list, i) {
                    continue;
                }
                // Of the init containers only the user's native sidecars (restartPolicy Always)
                // are probed while the pod runs; Istio rewrites them in both modes.
                if list == patch::List::InitContainers
                    && c.restart_policy.as_deref() != Some("Always")
                {
                    continue;
                }
                // Deliberately unlike Istio: in classic mode the agent starts after every init
                // container, so a native sidecar's startup probe sent to it could never pass and
                // the pod would never start. Readiness and liveness are rewritten as Istio does.
                let with_startup = list == patch::List::Containers || s.native_sidecar;
                for (field, probe) in probes::rewrite_container(
                    c,
                    s.status_port,
                    with_startup,
                    &mut probers,
                    warnings,
                ) {
                    changes
                        .probes
                        .push((list, i, field, patch::to_value(&probe)?));
                }
                if let Some(lifecycle) = probes::rewrite_lifecycle(c, s.status_port, &mut probers) {
                    changes
                        .probes
                        .push((list, i, "lifecycle", patch::to_value(&lifecycle)?));
                }
            }
        }
        explanation.push(format!(
            "app probes and lifecycle hooks rewritten to the agent on port {}: {}",
            s.status_port,
            probers.len()
        ));
    } else {
        explanation.push("app probe rewriting off".into());
    }
    // Re-injection: probes the first injection rewrote keep their originals.
    for (path, prober) in previous.map(|p| &p.probers).into_iter().flatten() {
        probers
            .entry(path.clone())
            .or_insert_with(|| prober.clone());
    }
    let app_probers = (!probers.is_empty())
        .then(|| serde_json::Value::Object(probers.into_iter().collect()).to_string());

    // Metrics merging (Istio's rules: any spelling of prometheus.io/scrape, scrape targets, the
    // mesh's agent status port).
    let pod_annotations = pod.metadata.annotations.as_ref();
    let merge = if s.merge_metrics && prometheus::scrape_enabled(pod_annotations) {
        let agent_port = config
            .mesh
            .default_config
            .get("statusPort")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(15020);
        prometheus::merge(pod_annotations, agent_port).map_err(|(annotation, value, problem)| {
            InjectError::InvalidAnnotations(vec![AnnotationProblem {
                annotation,
                value,
                problem,
                source: Source::Pod,
            }])
        })?
    } else {
        None
    };
    let prometheus_annotations = merge.as_ref().and_then(|m| m.env.clone());

    let workload = identity::workload(pod);
    let ns = req.namespace.name.as_str();
    let facts = render::PodFacts {
        app_containers: app_names.join(","),
        pod_ports,
        // The pod's `service.istio.io/workload-name` label names the workload, as in Istio.
        workload_name: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::WORKLOAD_NAME_LABEL))
            .filter(|n| !n.is_empty())
            .unwrap_or(&workload.name),
        owner: workload.owner_uri(ns),
        prometheus_annotations,
        app_probers,
        otel_resource_attributes: config
            .mesh
            .otel_semantic_conventions
            .then(|| render::otel_resource_attributes(pod, ns))
            .flatten(),
    };
    let mut proxy = match s.template {
        settings::Template::Sidecar => Some(render::proxy_container(s, config, &facts)),
        settings::Template::Gateway => {
            changes.sysctls = Some(render::gateway_sysctls());
            explanation.push(
                "template: gateway (proxy router, no istio-init, pod may bind ports < 1024)".into(),
            );
            Some(render::gateway_container(s, config, &facts))
        }
        settings::Template::GrpcAgent => {
            explanation.push(
                "template: grpc-agent (proxyless gRPC: the agent serves xDS, no Envoy, no istio-init)"
                    .into(),
            );
            Some(render::grpc_agent_container(s, config, &facts))
        }
        settings::Template::GrpcSimple => {
            explanation.push(
                "template: grpc-simple (proxyless gRPC bootstrap written by an init container, no proxy)"
                    .into(),
            );
            None
        }
    };
    let mut init = needs_init.then(|| render::init_container(s, config));
    let mut applied: Vec<(patch::List, &overrides::Override)> = Vec::new();
    for o in &overrides {
        let (target, list) = match (o.name.as_str(), proxy.as_mut()) {
            (render::PROXY_NAME, Some(p)) if s.native_sidecar => (p, patch::List::InitContainers),
            (render::PROXY_NAME, Some(p)) => (p, patch::List::Containers),
            (render::PROXY_NAME, None) => continue,
            _ => match init.as_mut() {
                Some(i) => (i, patch::List::InitContainers),
                None => continue,
            },
        };
        *target = overrides::apply(target, &o.overlay)?;
        applied.push((list, o));
        if let Some(at) = o.at {
            changes.removes.push(at);
        }
        explanation.push(format!(
            "the pod's own {} merged over the injected one (proxy.istio.io/overrides)",
            o.name
        ));
    }
    if let Some(o) = overrides.iter().find(|o| o.name == render::PROXY_NAME)
        && let Some(p) = proxy.as_mut()
    {
        adjust_init_user(o, s, p, init.as_mut());
    }
    // The gRPC templates render each app container too (bootstrap env and mounts); as in Istio,
    // the user's container is then an override of that one: merged in place, recorded in
    // proxy.istio.io/overrides and listed in the status.
    let app_overlays = match render::grpc_app_overlay(s.template) {
        Some(template) => overrides::app_containers(spec, &template)?,
        None => Vec::new(),
    };
    for (i, merged, o) in &app_overlays {
        // Re-injection: merged over the container as it was, so what others added to it since
        // (the ServiceAccount plugin's token mount) stays, as for the proxy below.
        let merged = match previous.and_then(|p| p.containers.get(&o.name)) {
            Some(old) => {
                serde_json::from_value(overrides::merge_container(old, &patch::to_value(merged)?))
                    .map_err(|e| InjectError::Internal(e.to_string()))?
            }
            None => merged.clone(),
        };
        changes.replaces.push((patch::List::Containers, *i, merged));
        applied.push((patch::List::Containers, o));
    }
    let grpc_bootstrap =
        (s.template == settings::Template::GrpcSimple).then(|| render::grpc_bootstrap_init(config));
    // Re-injection: each re-rendered container is merged over the one it replaces, so what
    // others added to it since (the ServiceAccount plugin's token mount) stays.
    if let Some(previous) = previous {
        for c in proxy.iter_mut().chain(init.as_mut()) {
            if let Some(old) = previous.containers.get(&c.name) {
                let merged = overrides::merge_container(old, &patch::to_value(&*c)?);
                *c = serde_json::from_value(merged)
                    .map_err(|e| InjectError::Internal(e.to_string()))?;
            }
        }
    }
    let removed = |list: patch::List| changes.removes.iter().filter(|(l, _)| *l == list).count();
    let (removed_inits, removed_containers) = (
        removed(patch::List::InitContainers),
        removed(patch::List::Containers),
    );

    // Placement, as final indices in the lists (after the overrides' removal).
    let user_inits = spec.init_containers.as_ref().map_or(0, Vec::len) - removed_inits;
    let app_count = spec.containers.len() - removed_containers;
    let mut status_inits: Vec<&str> = Vec::new();
    let mut status_containers: Vec<&str> = Vec::new();
    if let Some(b) = grpc_bootstrap {
        // A new init container of the template goes first, as the API server's merge puts it.
        status_inits.push(render::GRPC_BOOTSTRAP_NAME);
        changes.inserts.push((patch::List::InitContainers, 0, b));
    }
    let (native_proxy, classic_proxy) = if s.native_sidecar {
        (proxy, None)
    } else {
        (None, proxy)
    };
    if let Some(proxy) = native_proxy {
        let mut at = 0;
        if let Some(i) = init {
            changes.inserts.push((patch::List::InitContainers, at, i));
            status_inits.push(render::INIT_NAME);
            at += 1;
        }
        changes
            .inserts
            .push((patch::List::InitContainers, at, proxy));
        status_inits.push(render::PROXY_NAME);
        explanation.push(
            "mode: native sidecar (istio-proxy is an init container with restartPolicy Always)"
                .into(),
        );
        if s.hold_application {
            explanation.push(
                "holdApplicationUntilProxyStarts not needed in native mode (startup probe gates the app)"
                    .into(),
            );
        }
    } else if let Some(proxy) = classic_proxy {
        if let Some(i) = init {
            changes
                .inserts
                .push((patch::List::InitContainers, user_inits, i));
            status_inits.push(render::INIT_NAME);
        }
        status_containers.push(render::PROXY_NAME);
        if s.hold_application {
            changes.inserts.push((patch::List::Containers, 0, proxy));
            explanation.push(
                "mode: classic sidecar, holdApplicationUntilProxyStarts (istio-proxy first, postStart waits)"
                    .into(),
            );
        } else {
            changes
                .inserts
                .push((patch::List::Containers, app_count, proxy));
            explanation.push("mode: classic sidecar (istio-proxy after the app containers)".into());
        }
    }
    status_containers.extend(app_overlays.iter().map(|(_, _, o)| o.name.as_str()));
    if !needs_init && s.template == settings::Template::Sidecar {
        explanation.push("interception mode NONE: no istio-init".into());
    }

    explanation.push(settings_summary(s));
    let volumes = render::volumes(
        s,
        config,
        spec.service_account_name.as_deref().unwrap_or_default(),
    );
    // Image pull secrets of the config first, then the pod's own (a name only once).
    let added_secrets: Vec<&str> = config
        .image_pull_secrets
        .iter()
        .map(String::as_str)
        .collect();
    if !added_secrets.is_empty() {
        let own = spec.image_pull_secrets.iter().flatten();
        let mut all: Vec<k8s_openapi::api::core::v1::LocalObjectReference> = added_secrets
            .iter()
            .map(|n| k8s_openapi::api::core::v1::LocalObjectReference {
                name: n.to_string(),
            })
            .collect();
        all.extend(
            own.filter(|o| !added_secrets.contains(&o.name.as_str()))
                .cloned(),
        );
        changes.image_pull_secrets = Some(all);
    }
    let status = Status {
        init_containers: (!status_inits.is_empty()).then_some(status_inits),
        containers: (!status_containers.is_empty()).then_some(status_containers),
        volumes: volumes.iter().map(|v| v.name.as_str()).collect(),
        image_pull_secrets: (!added_secrets.is_empty()).then_some(added_secrets),
        revision: config.revision_name(),
    };
    let status_json =
        serde_json::to_string(&status).map_err(|e| InjectError::Internal(e.to_string()))?;
    // Re-injection: a volume as stored (with the API server's defaults) stays when it is what
    // would be rendered.
    let volumes = match previous {
        Some(p) => volumes
            .into_iter()
            .map(|v| {
                let rendered = patch::to_value(&v)?;
                match p.same_volume(&rendered) {
                    Some(old) => serde_json::from_value(old.clone())
                        .map_err(|e| InjectError::Internal(e.to_string())),
                    None => Ok(v),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => volumes,
    };
    changes.volumes = volumes;

    // Labels: existing values are kept.
    let labels = pod.metadata.labels.as_ref();
    let mut add_label = |key: &str, value: String| {
        if !labels.is_some_and(|l| l.contains_key(key)) {
            changes.labels.insert(key.to_string(), value);
        }
    };
    // A gateway terminates mTLS itself: the gateway template sets no tlsMode label.
    if s.template == settings::Template::Sidecar {
        add_label(keys::TLS_MODE_LABEL, "istio".into());
    }
    // The grpc-simple template sets no labels and no rev/default-container annotations.
    let simple = s.template == settings::Template::GrpcSimple;
    let canonical_name = identity::canonical_name(pod, &workload);
    if !canonical_name.is_empty() && !simple {
        add_label(keys::CANONICAL_NAME_LABEL, canonical_name);
    }
    if !simple {
        add_label(
            keys::CANONICAL_REVISION_LABEL,
            identity::canonical_revision(pod),
        );
    }

    // Annotations.
    let existing = |key: &str| pod_annotations.and_then(|a| a.get(key));
    let a = &mut changes.annotations;
    if let Some(app) = app_names.first().filter(|_| !simple) {
        // A user-chosen default container is also the natural default for logs.
        let default = match existing(keys::DEFAULT_CONTAINER) {
            Some(d) => d.clone(),
            None => {
                a.insert(keys::DEFAULT_CONTAINER.into(), app.to_string());
                app.to_string()
            }
        };
        if existing(keys::DEFAULT_LOGS_CONTAINER).is_none() {
            a.insert(keys::DEFAULT_LOGS_CONTAINER.into(), default);
        }
    }
    if let Some(m) = merge {
        a.insert(keys::PROM_SCRAPE.into(), "true".into());
        a.insert(keys::PROM_PORT.into(), m.port);
        a.insert(keys::PROM_PATH.into(), "/stats/prometheus".into());
        changes.remove_annotations = m
            .remove
            .into_iter()
            .filter(|k| !a.contains_key(k))
            .collect();
        explanation.push("metrics merging: prometheus.io/* annotations point at the agent".into());
    }
    if !simple {
        a.insert(
            keys::REV_ANNOTATION.into(),
            config.revision_name().to_string(),
        );
    }
    if matches!(
        s.template,
        settings::Template::GrpcAgent | settings::Template::GrpcSimple
    ) {
        a.insert(keys::REWRITE_PROBES.into(), "false".into());
    }
    a.insert(keys::CONFIG_HASH.into(), config.hash().to_string());
    for (k, v) in &config.injected_annotations {
        a.insert(k.clone(), v.clone());
    }
    if !applied.is_empty() {
        a.insert(
            keys::PROXY_OVERRIDES.into(),
            overrides::annotation(&applied),
        );
    }
    a.insert(keys::STATUS.into(), status_json);
    // Setting a value that is already there is not a change.
    a.retain(|k, v| existing(k) != Some(v));
    Ok(changes)
}

/// A user's `istio-proxy` that sets `runAsUser`/`runAsGroup` runs the proxy as that user, so
/// istio-init's iptables owner match (`-u`) follows a non-zero uid; in TPROXY mode the proxy itself
/// must stay uid 0 (as Istio's `adjustInitContainerUser`).
fn adjust_init_user(
    o: &overrides::Override,
    s: &settings::Settings<'_>,
    proxy: &mut k8s_openapi::api::core::v1::Container,
    init: Option<&mut k8s_openapi::api::core::v1::Container>,
) {
    let user = o.overlay["securityContext"]["runAsUser"].as_i64();
    if s.interception_mode == InterceptionMode::Tproxy
        && user.is_some()
        && let Some(sc) = proxy.security_context.as_mut()
    {
        sc.run_as_user = Some(0);
    }
    let (Some(uid), Some(init)) = (user.filter(|u| *u != 0), init) else {
        return;
    };
    if let Some(args) = init.args.as_mut()
        && let Some(i) = args.iter().position(|a| a == "-u")
        && i + 1 < args.len()
    {
        args[i + 1] = uid.to_string();
    }
}

/// One explanation line with the effective proxy settings (after annotations and defaults).
fn settings_summary(s: &settings::Settings<'_>) -> String {
    let quantity =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .map_or("-", |q| q.0.as_str())
                .to_string()
        };
    format!(
        "proxy: image {}, requests cpu={} memory={}, limits cpu={} memory={}, interception {}, status port {}",
        s.image,
        quantity(&s.resources.requests, "cpu"),
        quantity(&s.resources.requests, "memory"),
        quantity(&s.resources.limits, "cpu"),
        quantity(&s.resources.limits, "memory"),
        s.interception_mode.as_str(),
        s.status_port
    )
}
