//! Compares Skjold's output with Istio's on what a user relies on. Not behaviour, and so
//! normalised away (as the goldens' NOTICE says): quantity spelling (`"2"` vs `2000m`), env order,
//! JSON spacing inside env values, `null`/empty fields, and the order of map keys. Everything else
//! is compared field by field: container and init-container names and order, images, args, ports,
//! env values, probes, lifecycle, securityContext, resources, volume mounts, volumes, labels,
//! annotations (the status annotation parsed) and the rest of the pod spec.

use std::fmt;

use serde_json::{Map, Value};

/// One difference, at a JSON-pointer-like path.
#[derive(Debug, Clone)]
pub struct Diff {
    pub path: String,
    pub want: String,
    pub got: String,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: Istio {} / Skjold {}",
            self.path, self.want, self.got
        )
    }
}

/// The outcome of one case.
#[derive(Debug)]
pub enum Verdict {
    Match,
    RefusedAsExpected(String),
    OutOfScope(&'static str),
    Differs(Vec<Diff>),
    Failed(String),
}

/// The part of an object injection is about: for a workload its pod template (a CronJob's job
/// template), for a Pod or any other kind the object without `status`; `List`s item by item.
pub fn view(doc: &Value) -> Value {
    let mut out = doc.clone();
    let Value::Object(m) = &mut out else {
        return out;
    };
    m.remove("status");
    if let Some(Value::Array(items)) = m.get_mut("items") {
        for item in items.iter_mut() {
            *item = view(item);
        }
    }
    let template = doc
        .pointer("/spec/template")
        .map(|t| ("template", t.clone()))
        .or_else(|| {
            doc.pointer("/spec/jobTemplate")
                .map(|t| ("jobTemplate", t.clone()))
        });
    if let Some((key, t)) = template {
        let mut spec = Map::new();
        spec.insert(key.into(), t);
        m.insert("spec".into(), Value::Object(spec));
    }
    out
}

/// Canonical form of a Kubernetes object for comparison.
pub fn canonical(v: &Value) -> Value {
    let mut v = v.clone();
    normalise(&mut v, "");
    prune(&mut v);
    v
}

fn normalise(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            if key == "env" {
                return;
            }
            for (k, child) in m.iter_mut() {
                normalise(child, k);
            }
            if matches!(key, "limits" | "requests") {
                for q in m.values_mut() {
                    if let Some(n) = quantity(q) {
                        *q = Value::String(n);
                    }
                }
            }
            // JSON annotations compared parsed (and their containers normalised).
            for key in [
                skjold_inject::inject::keys::STATUS,
                skjold_inject::inject::keys::PROXY_OVERRIDES,
            ] {
                if let Some(Value::String(s)) = m.get(key)
                    && let Ok(mut parsed) = serde_json::from_str::<Value>(s)
                {
                    normalise(&mut parsed, "");
                    m.insert(key.into(), parsed);
                }
            }
            // Skjold's own bookkeeping annotations are not part of the comparison.
            m.retain(|k, _| !k.starts_with("skjold.io/"));
            // API defaults, written by one side and not the other.
            match key {
                "fieldRef" if m.get("apiVersion") == Some(&Value::from("v1")) => {
                    m.remove("apiVersion");
                }
                "resourceFieldRef"
                    if m.get("divisor")
                        .is_some_and(|d| quantity(d).as_deref() == Some("1000")) =>
                {
                    m.remove("divisor");
                }
                "readinessProbe" | "livenessProbe" | "startupProbe"
                    if m.get("initialDelaySeconds") == Some(&Value::from(0)) =>
                {
                    m.remove("initialDelaySeconds");
                }
                _ => {}
            }
        }
        Value::Array(a) => {
            if key == "env" {
                *v = env_map(a);
                return;
            }
            if key == "volumes" {
                for vol in a.iter_mut() {
                    if let Value::Object(m) = vol {
                        // A volume without a source is an emptyDir (Istio renders `emptyDir:`).
                        if m.keys().all(|k| k == "name")
                            || matches!(m.get("emptyDir"), Some(Value::Null))
                        {
                            m.insert("emptyDir".into(), Value::Object(Map::new()));
                        }
                    }
                }
            }
            for child in a.iter_mut() {
                normalise(child, "");
            }
            if matches!(key, "containers" | "initContainers") {
                for c in a.iter_mut() {
                    if let Some(Value::Array(ports)) = c.get_mut("ports") {
                        for p in ports {
                            if let Value::Object(p) = p {
                                p.entry("protocol").or_insert_with(|| "TCP".into());
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Env as a name -> value map; JSON values parsed, so spacing and key order do not matter.
fn env_map(list: &[Value]) -> Value {
    let mut m = Map::new();
    for e in list {
        let Some(name) = e.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = match (e.get("value"), e.get("valueFrom")) {
            (Some(Value::String(s)), _) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(|p| p.is_object() || p.is_array())
                .unwrap_or_else(|| Value::String(s.clone())),
            (_, Some(from)) => canonical(from),
            _ => Value::String(String::new()),
        };
        m.insert(name.to_string(), value);
    }
    Value::Object(m)
}

/// Drops nulls, empty maps and empty lists (an `emptyDir: {}` is kept: it is a volume source).
fn prune(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                prune(child);
            }
            m.retain(|k, c| {
                !(c.is_null()
                    || (k != "emptyDir" && c.as_object().is_some_and(Map::is_empty))
                    || c.as_array().is_some_and(Vec::is_empty))
            });
        }
        Value::Array(a) => a.iter_mut().for_each(prune),
        _ => {}
    }
}

/// A CPU or memory quantity as an exact decimal count of milli-units.
fn quantity(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (num, mult): (&str, f64) = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s.as_str(), 1.0));
    let n: f64 = num.parse().ok()?;
    Some(format!("{}", (n * mult * 1000.0).round() as i128))
}

/// Field-by-field differences of two canonical values.
pub fn diff(want: &Value, got: &Value, path: &str, out: &mut Vec<Diff>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}/{k}");
                match g.get(k) {
                    Some(gv) => diff(wv, gv, &p, out),
                    None => out.push(Diff {
                        path: p,
                        want: short(wv),
                        got: "(absent)".into(),
                    }),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(Diff {
                        path: format!("{path}/{k}"),
                        want: "(absent)".into(),
                        got: short(gv),
                    });
                }
            }
        }
        (Value::Array(w), Value::Array(g))
            if is_named_list(w) && is_named_list(g) && !path.contains("/env/") =>
        {
            let names = |l: &Vec<Value>| -> Vec<String> {
                l.iter()
                    .map(|x| x["name"].as_str().unwrap_or_default().to_string())
                    .collect()
            };
            let (wn, gn) = (names(w), names(g));
            if wn != gn {
                out.push(Diff {
                    path: format!("{path}[names]"),
                    want: wn.join(","),
                    got: gn.join(","),
                });
            }
            for wv in w {
                let name = wv["name"].as_str().unwrap_or_default();
                if let Some(gv) = g.iter().find(|x| x["name"] == wv["name"]) {
                    diff(wv, gv, &format!("{path}[{name}]"), out);
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() && !is_scalars(w) => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(wv, gv, &format!("{path}/{i}"), out);
            }
        }
        (w, g) if w != g => out.push(Diff {
            path: path.to_string(),
            want: short(w),
            got: short(g),
        }),
        _ => {}
    }
}

fn is_named_list(l: &[Value]) -> bool {
    !l.is_empty()
        && l.iter()
            .all(|x| x.get("name").and_then(Value::as_str).is_some())
}

fn is_scalars(l: &[Value]) -> bool {
    l.iter().all(|x| !x.is_object() && !x.is_array())
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        let mut end = 157;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}
