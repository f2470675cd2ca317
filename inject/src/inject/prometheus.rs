//! Metrics merging, as Istio does it: the pod's `prometheus.io/*` annotations (in any spelling
//! Prometheus accepts: `prometheus.io/scrape`, `prometheus.io.scrape`, `prometheus-io/scrape`) move
//! into pilot-agent's `ISTIO_PROMETHEUS_ANNOTATIONS`, and the pod's annotations point Prometheus at
//! the agent's merged endpoint. `prometheus.istio.io/scrape-targets` (`port:path,...`) scrapes
//! several app ports.

use std::collections::BTreeMap;

// Go's `strconv.ParseBool`, which Istio applies to the scrape annotation.
use super::annotations::parse_bool;

/// The pieces of one merge.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merge {
    /// Value of `ISTIO_PROMETHEUS_ANNOTATIONS`, when the app had any scrape settings.
    pub env: Option<String>,
    /// The port written to `prometheus.io/port` (the mesh's agent status port).
    pub port: String,
    /// Existing annotation keys to remove (every variant spelling and the scrape targets).
    pub remove: Vec<String>,
}

const SCRAPE: &str = "prometheus_io_scrape";
const PORT: &str = "prometheus_io_port";
const PATH: &str = "prometheus_io_path";
const TARGETS: &str = "prometheus_istio_io_scrape_targets";

/// Ports the data plane owns; scraping them would hit a non-app surface or count twice.
const RESERVED: &[(&str, &str)] = &[
    ("15000", "Envoy admin"),
    ("15001", "outbound traffic capture"),
    ("15004", "pilot debug"),
    ("15006", "inbound traffic capture"),
    ("15008", "HBONE tunnel"),
    ("15020", "pilot-agent status / merged Prometheus"),
    ("15021", "Envoy health"),
    ("15053", "DNS proxy"),
    ("15090", "Envoy Prometheus (already merged)"),
];

/// Prometheus' label-name sanitising: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitise(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether the app allows scraping (any spelling of `prometheus.io/scrape`; default true).
pub fn scrape_enabled(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| sanitise(k) == SCRAPE)
        .find_map(|(_, v)| parse_bool(v).ok())
        .unwrap_or(true)
}

/// The problem with one scrape setting: (annotation key, value, message).
pub type Problem = (String, String, String);

fn check_port(key: &str, port: &str, agent_port: &str) -> Result<(), Problem> {
    let bad = |msg: String| Err((key.to_string(), port.to_string(), msg));
    let n: u32 = match port.parse() {
        Ok(n) if (1..=65535).contains(&n) => n,
        _ => return bad("not a port between 1 and 65535".into()),
    };
    let canon = n.to_string();
    if canon == agent_port {
        return bad(format!(
            "port {port} is the agent's merged-metrics port; point it at the app's own port"
        ));
    }
    if let Some((_, why)) = RESERVED.iter().find(|(p, _)| *p == canon) {
        return bad(format!(
            "port {port} is reserved for Istio ({why}) and cannot be scraped"
        ));
    }
    Ok(())
}

/// Works out the merge; `None` when the pod already points at the agent (re-injection).
pub fn merge(
    annotations: Option<&BTreeMap<String, String>>,
    agent_port: u16,
) -> Result<Option<Merge>, Problem> {
    let agent_port = agent_port.to_string();
    let mut scrape = String::new();
    let mut port: Option<(String, String)> = None;
    let mut path = String::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut targets_key = String::new();
    let mut remove = Vec::new();
    for (k, v) in annotations.into_iter().flatten() {
        match sanitise(k).as_str() {
            SCRAPE => scrape = v.clone(),
            PORT => port = Some((k.clone(), v.clone())),
            PATH => path = v.clone(),
            TARGETS => {
                targets_key = k.clone();
                targets = parse_targets(v).map_err(|e| (k.clone(), v.clone(), e))?;
            }
            _ => continue,
        }
        remove.push(k.clone());
    }
    if port.as_ref().is_some_and(|(_, p)| *p == agent_port) {
        return Ok(None);
    }
    let mut port_value = port.as_ref().map(|(_, p)| p.clone()).unwrap_or_default();
    if let Some((p, first_path)) = targets.first() {
        port_value = p.clone();
        path = first_path.clone();
        for (p, _) in &targets {
            check_port(&targets_key, p, &agent_port)?;
        }
    } else if let Some((key, p)) = &port
        && !p.is_empty()
    {
        check_port(key, p, &agent_port)?;
    }
    let empty = scrape.is_empty() && path.is_empty() && port_value.is_empty() && targets.is_empty();
    let env = (!empty).then(|| {
        let mut m = serde_json::Map::new();
        m.insert("scrape".into(), scrape.into());
        m.insert("path".into(), path.into());
        m.insert("port".into(), port_value.into());
        if !targets.is_empty() {
            let list = targets
                .iter()
                .map(|(p, path)| serde_json::json!({"port": p, "path": path}))
                .collect();
            m.insert("targets".into(), serde_json::Value::Array(list));
        }
        serde_json::Value::Object(m).to_string()
    });
    Ok(Some(Merge {
        env,
        port: agent_port,
        remove,
    }))
}

/// `8080:/metrics,9100` -> [(8080, /metrics), (9100, /metrics)].
fn parse_targets(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (port, path) = entry.split_once(':').unwrap_or((entry, ""));
        let port = port.trim();
        if port.is_empty() {
            return Err(format!("empty port in scrape target \"{entry}\""));
        }
        let path = match path.trim() {
            "" => "/metrics",
            p => p,
        };
        out.push((port.to_string(), path.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_spelling_of_scrape_counts() {
        assert!(!scrape_enabled(Some(&ann(&[(
            "prometheus.io.scrape",
            "false"
        )]))));
        assert!(!scrape_enabled(Some(&ann(&[(
            "prometheus-io/scrape",
            "0"
        )]))));
        assert!(scrape_enabled(Some(&ann(&[(
            "prometheus.io/scrape",
            "maybe"
        )]))));
        assert!(scrape_enabled(None));
    }

    #[test]
    fn scrape_targets_set_the_primary_endpoint() {
        let a = ann(&[
            ("prometheus.io/scrape", "true"),
            (
                "prometheus.istio.io/scrape-targets",
                "8080:/metrics, 9100:/custom-metrics",
            ),
        ]);
        let m = merge(Some(&a), 15020).unwrap().unwrap();
        let env: serde_json::Value = serde_json::from_str(m.env.as_deref().unwrap()).unwrap();
        assert_eq!(env["port"], "8080");
        assert_eq!(env["path"], "/metrics");
        assert_eq!(env["targets"][1]["port"], "9100");
        assert_eq!(m.remove.len(), 2);
    }

    #[test]
    fn reserved_and_agent_ports_are_refused_by_name() {
        let a = ann(&[("prometheus.io/port", "15090")]);
        let (key, value, msg) = merge(Some(&a), 15020).unwrap_err();
        assert_eq!(
            (key.as_str(), value.as_str()),
            ("prometheus.io/port", "15090")
        );
        assert!(msg.contains("reserved"), "{msg}");
        let a = ann(&[("prometheus.istio.io/scrape-targets", "9100,abc")]);
        assert!(merge(Some(&a), 15020).is_err());
    }

    #[test]
    fn already_pointing_at_the_agent_is_left_alone() {
        let a = ann(&[("prometheus.io/port", "15020")]);
        assert_eq!(merge(Some(&a), 15020).unwrap(), None);
    }
}
