//! Prometheus metrics of the admission server (names fixed in `docs/architecture.md`).
//!
//! Label values are `&'static str` taken from closed sets (request results, injector reasons), so
//! the number of series is bounded whatever the requests contain.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission;
use crate::inject::Reason;

/// How an HTTP request to an admission endpoint ended; the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestResult {
    /// A patch was returned.
    Injected,
    /// Allowed without a patch (not a pod CREATE, or the injector decided not to inject).
    Allowed,
    /// The pod was refused (`allowed: false`) by the injector or for an unknown revision.
    Denied,
    /// The HTTP request itself was rejected (4xx): malformed, wrong content type, too large.
    BadRequest,
    /// The body did not arrive within the request timeout.
    Timeout,
    /// The injector failed unexpectedly (a bug); the pod was refused.
    InternalError,
}

impl RequestResult {
    pub const ALL: [RequestResult; 6] = [
        RequestResult::Injected,
        RequestResult::Allowed,
        RequestResult::Denied,
        RequestResult::BadRequest,
        RequestResult::Timeout,
        RequestResult::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Injected => "injected",
            RequestResult::Allowed => "allowed",
            RequestResult::Denied => "denied",
            RequestResult::BadRequest => "bad-request",
            RequestResult::Timeout => "timeout",
            RequestResult::InternalError => "internal-error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Label values of `skjold_webhook_workload_events_total`.
pub const WORKLOAD_EVENT_RESULTS: [&str; 4] = ["recorded", "rate-limited", "dropped", "failed"];

/// All metrics of the webhook and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<ResultLabel, Counter>,
    injections: Family<ReasonLabel, Counter>,
    decisions: Family<ReasonLabel, Counter>,
    denials: Family<ReasonLabel, Counter>,
    duration: Histogram,
    cert_reloads: Family<ResultLabel, Counter>,
    workload_events: Family<ResultLabel, Counter>,
    connections: Family<ResultLabel, Counter>,
    config_loads: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ResultLabel, Counter>::default();
        let injections = Family::<ReasonLabel, Counter>::default();
        let decisions = Family::<ReasonLabel, Counter>::default();
        let denials = Family::<ReasonLabel, Counter>::default();
        // 25 µs .. ~1.6 s: the interesting range is sub-millisecond.
        let duration = Histogram::new(exponential_buckets(0.000_025, 2.0, 17));
        let cert_reloads = Family::<ResultLabel, Counter>::default();
        let workload_events = Family::<ResultLabel, Counter>::default();
        let connections = Family::<ResultLabel, Counter>::default();
        let config_loads = Family::<ResultLabel, Counter>::default();
        for result in ["loaded", "refused"] {
            let _ = config_loads.get_or_create(&ResultLabel { result });
        }
        for result in ["accepted", "refused"] {
            let _ = connections.get_or_create(&ResultLabel { result });
        }
        for result in WORKLOAD_EVENT_RESULTS {
            let _ = workload_events.get_or_create(&ResultLabel { result });
        }
        // Known label values start at 0 so dashboards and rate() see them before the first event.
        for result in RequestResult::ALL {
            let _ = requests.get_or_create(&ResultLabel {
                result: result.as_str(),
            });
        }
        let skips = [admission::SKIP_NOT_A_POD, admission::SKIP_NOT_CREATE];
        for reason in Reason::ALL.iter().map(|r| r.as_str()).chain(skips) {
            let _ = decisions.get_or_create(&ReasonLabel { reason });
        }
        let _ = injections.get_or_create(&ReasonLabel {
            reason: Reason::Injected.as_str(),
        });
        // The text encoder appends `_total` to counters.
        registry.register(
            "skjold_webhook_requests",
            "Admission HTTP requests by result",
            requests.clone(),
        );
        registry.register(
            "skjold_webhook_injections",
            "Pods that received a sidecar patch, by injector reason",
            injections.clone(),
        );
        registry.register(
            "skjold_webhook_decisions",
            "Injector decisions (injected or not) by reason",
            decisions.clone(),
        );
        registry.register(
            "skjold_webhook_denials",
            "Pods refused (allowed: false), by reason",
            denials.clone(),
        );
        registry.register(
            "skjold_webhook_request_duration_seconds",
            "Time from request start to response for admission requests",
            duration.clone(),
        );
        registry.register(
            "skjold_webhook_certificate_reloads",
            "Serving certificate reloads by result (success or error)",
            cert_reloads.clone(),
        );
        registry.register(
            "skjold_webhook_workload_events",
            "Events on pods' owners by result (recorded, rate-limited, dropped: queue full, failed)",
            workload_events.clone(),
        );
        registry.register(
            "skjold_webhook_connections",
            "TLS connections by result (accepted, refused: the connection cap stayed full for the wait)",
            connections.clone(),
        );
        registry.register(
            "skjold_webhook_config_loads",
            "Injector ConfigMap loads by result (loaded; refused: invalid, the last good config stays)",
            config_loads.clone(),
        );
        Metrics {
            config_loads,
            connections,
            workload_events,
            registry,
            requests,
            injections,
            decisions,
            denials,
            duration,
            cert_reloads,
        }
    }

    /// Counts one admission request and its latency.
    pub fn record_request(&self, result: RequestResult, elapsed: Duration) {
        self.requests
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts an injector decision; `injected` when the response carries a patch.
    pub fn record_decision(&self, reason: &'static str, injected: bool) {
        let label = ReasonLabel { reason };
        self.decisions.get_or_create(&label).inc();
        if injected {
            self.injections.get_or_create(&label).inc();
        }
    }

    /// Counts a refused pod.
    /// Counts one connection by whether it got a slot under the cap.
    pub fn record_connection(&self, result: &'static str) {
        self.connections
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts one Event note on a pod's owner by what became of it.
    pub fn record_workload_event(&self, result: &'static str) {
        self.workload_events
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn record_denial(&self, reason: &'static str) {
        self.denials.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one injector ConfigMap load; `ok: false` when it was refused as invalid.
    pub fn record_config_load(&self, ok: bool) {
        let result = if ok { "loaded" } else { "refused" };
        self.config_loads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn record_cert_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.cert_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Renders the registry in the OpenMetrics text format (accepted by Prometheus).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_contract_names_with_labels() {
        let m = Metrics::new();
        m.record_request(RequestResult::Injected, Duration::from_micros(300));
        m.record_request(RequestResult::BadRequest, Duration::from_micros(30));
        m.record_decision("injected", true);
        m.record_decision("policy-disabled", false);
        m.record_denial("invalid-annotation");
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"skjold_webhook_requests_total{result="timeout"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skjold_webhook_decisions_total{reason="host-network"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skjold_webhook_requests_total{result="injected"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skjold_webhook_requests_total{result="bad-request"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skjold_webhook_injections_total{reason="injected"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"skjold_webhook_injections_total{reason="policy-disabled"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skjold_webhook_decisions_total{reason="policy-disabled"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skjold_webhook_denials_total{reason="invalid-annotation"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("skjold_webhook_request_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains(r#"skjold_webhook_request_duration_seconds_bucket{le="0.0004"} 2"#),
            "{text}"
        );
    }
}
