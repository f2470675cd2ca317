//! Prometheus metrics and the plain-HTTP `/metrics`, `/healthz`, `/readyz` endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub kind: &'static str,
    pub change: &'static str,
}

/// Operator metrics (prefix `skjold_operator_`).
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub object_changes: Family<ChangeLabels, Counter>,
    pub leader: Gauge,
    pub cert_expiry: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skjold_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let object_changes = Family::<ChangeLabels, Counter>::default();
        let leader = Gauge::default();
        let cert_expiry = Gauge::default();
        registry.register(
            "reconciles",
            "MeshConfig reconciliations by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        registry.register(
            "object_changes",
            "Managed objects created, updated or pruned",
            object_changes.clone(),
        );
        registry.register(
            "leader",
            "Whether this replica holds the leader Lease (1) or not (0)",
            leader.clone(),
        );
        registry.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "notAfter of the webhook serving certificate (Unix seconds)",
            cert_expiry.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            object_changes,
            leader,
            cert_expiry,
            ready: AtomicBool::new(false),
        }
    }

    /// Starts timing one reconciliation; the duration is recorded when the guard drops.
    pub fn time_reconcile(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    /// Marks the process ready (CRD installed, controller started or waiting for the Lease).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Drop guard recording a reconciliation's duration.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// The HTTP router for `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

async fn serve_metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves the router until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histogram() {
        let m = Metrics::new();
        m.reconciles
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        m.errors
            .get_or_create(&ErrorLabels { reason: "apply" })
            .inc();
        {
            let _t = m.time_reconcile();
        }
        let text = m.encode();
        assert!(
            text.contains("skjold_operator_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("skjold_operator_reconcile_errors_total{reason=\"apply\"} 1"));
        assert!(text.contains("skjold_operator_reconcile_duration_seconds_count 1"));
    }

    #[tokio::test]
    async fn readyz_follows_flag() {
        let m = Arc::new(Metrics::new());
        assert_eq!(
            readyz(State(m.clone())).await.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        m.set_ready(true);
        assert_eq!(
            readyz(State(m)).await.into_response().status(),
            StatusCode::OK
        );
    }
}
