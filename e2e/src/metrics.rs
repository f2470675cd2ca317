//! Reading histograms from Prometheus text (the API server's own
//! `apiserver_admission_webhook_admission_duration_seconds`, the webhook's
//! `skjold_webhook_request_duration_seconds`) and estimating quantiles the way PromQL's
//! `histogram_quantile` does.

use std::collections::BTreeMap;

/// A cumulative histogram summed over all matching series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound `le`, cumulative count), ascending; the last bound is `+Inf`.
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

/// Sums the `<metric>_bucket`, `_count` and `_sum` series whose labels satisfy `matches`.
pub fn histogram(
    text: &str,
    metric: &str,
    matches: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Histogram {
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut h = Histogram::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        let Some(suffix) = name.strip_prefix(metric) else {
            continue;
        };
        if !matches(&labels) {
            continue;
        }
        match suffix {
            "_bucket" => {
                let Some(le) = labels.get("le").and_then(|v| parse_float(v)) else {
                    continue;
                };
                // f64 bounds as sortable keys (all bounds are non-negative).
                let entry = buckets.entry(le.to_bits()).or_insert((le, 0.0));
                entry.1 += value;
            }
            "_count" => h.count += value,
            "_sum" => h.sum += value,
            _ => {}
        }
    }
    h.buckets = buckets.into_values().collect();
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    h
}

impl Histogram {
    /// `self - before` per bucket: the observations made between two scrapes.
    pub fn minus(&self, before: &Histogram) -> Histogram {
        let prev = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, c - prev(le)))
                .collect(),
            count: self.count - before.count,
            sum: self.sum - before.sum,
        }
    }

    /// The `q` quantile (0..=1) with linear interpolation inside the bucket, like PromQL; `None`
    /// without observations. Observations in the `+Inf` bucket report the highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            if cum >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cum - lower.1;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
            }
            lower = (le, cum);
        }
        Some(lower.0)
    }
}

fn parse_float(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// `name{k="v",...} value [timestamp]` -> (name, labels, value).
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => {
            let (n, r) = line.split_once(' ')?;
            (n, r)
        }
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut end = None;
        loop {
            // key
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                if c == '}' {
                    end = Some(i);
                    break;
                }
                if c != ',' && !c.is_whitespace() {
                    key.push(c);
                }
            }
            if end.is_some() {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => value.push(c),
                }
            }
            labels.insert(key, value);
        }
        &body[end? + 1..]
    } else {
        rest
    };
    let value = parse_float(rest.split_whitespace().next()?)?;
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP x_seconds test
# TYPE x_seconds histogram
x_seconds_bucket{name="a",le="0.005"} 10
x_seconds_bucket{name="a",le="0.025"} 90
x_seconds_bucket{name="a",le="0.1"} 100
x_seconds_bucket{name="a",le="+Inf"} 100
x_seconds_sum{name="a"} 1.5
x_seconds_count{name="a"} 100
x_seconds_bucket{name="b",le="0.005"} 1000
x_seconds_bucket{name="b",le="+Inf"} 1000
x_seconds_count{name="b"} 1000
other_total 3
"#;

    #[test]
    fn filters_series_and_interpolates_quantiles() {
        let h = histogram(TEXT, "x_seconds", |l| {
            l.get("name").map(String::as_str) == Some("a")
        });
        assert_eq!(h.count, 100.0);
        assert_eq!(h.sum, 1.5);
        assert_eq!(h.buckets.len(), 4);
        // rank 50 lies in (0.005, 0.025] holding 80 observations: 0.005 + 0.02 * 40/80.
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.015).abs() < 1e-9, "{p50}");
        // rank 99 lies in (0.025, 0.1] holding 10: 0.025 + 0.075 * 9/10.
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - 0.0925).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn difference_between_scrapes() {
        let all = histogram(TEXT, "x_seconds", |_| true);
        assert_eq!(all.count, 1100.0);
        let a = histogram(TEXT, "x_seconds", |l| {
            l.get("name").map(String::as_str) == Some("a")
        });
        let b_only = all.minus(&a);
        assert_eq!(b_only.count, 1000.0);
        assert_eq!(b_only.quantile(0.99), Some(0.005 * 0.99));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn parses_escaped_label_values() {
        let (name, labels, v) = parse_sample(r#"m{a="x\"y",b="z"} 2"#).unwrap();
        assert_eq!(name, "m");
        assert_eq!(labels["a"], "x\"y");
        assert_eq!(labels["b"], "z");
        assert_eq!(v, 2.0);
        assert!(parse_sample("garbage").is_none());
    }
}
