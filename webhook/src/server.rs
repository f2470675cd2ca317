//! The HTTPS admission server: routes, request limits, timeouts and graceful shutdown.
//!
//! The injector runs inline on the request task: it is CPU-bound and takes microseconds, so a
//! hop to a blocking pool would cost more than it saves. Every failure path answers; nothing a
//! client sends can panic the server (an injector panic is caught and refuses that one pod).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::TokioTimer;
use tokio::task::JoinHandle;

use skjold_inject::verdict::{self, BodyError, Kind};

use crate::cache::Cache;
use crate::istio::DEFAULT_REVISION;
use crate::metrics::{self, Metrics, RequestResult};

/// Limits and timeouts of the server.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Whole-request budget (headers, body, decision); below the API server's 10 s webhook timeout.
    pub request_timeout: Duration,
    /// Largest accepted request body; larger bodies get HTTP 413 without being read.
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace: Duration,
    /// How long to keep serving after a shutdown starts, with `/readyz` failing and every
    /// HTTP/1.1 response carrying `Connection: close`, before the listener stops.
    ///
    /// Closing an idle keep-alive connection races with a client that is writing a request on
    /// it (measured with `benches/chaos_load.rs`: a few failed admissions per SIGTERM under load).
    /// During the delay, endpoints drop the pod and every client connection is closed by the
    /// protocol after its next response, so no request can be caught by the close.
    pub shutdown_delay: Duration,
    /// TLS handshake budget, so a client that connects and stays silent is dropped.
    pub handshake_timeout: Duration,
    /// How long an HTTP/1.1 connection may sit before (or while) sending request headers.
    ///
    /// Longer than kube-apiserver's 90 s idle-connection timeout on purpose: the client should be
    /// the one closing idle keep-alive connections, since a server-side close can race a POST.
    pub idle_timeout: Duration,
    /// Open connections at most; one more waits up to `connection_wait` for a slot, then is
    /// closed before its TLS handshake (see [`crate::limit`]).
    pub max_connections: usize,
    /// How long a connection beyond the cap waits for a slot. Short on purpose: every waiting
    /// connection holds a task of about 7 KB (measured), which is what the cap protects.
    pub connection_wait: Duration,
    /// How long a new connection has to complete its first request's headers (TLS handshake
    /// included), so clients that connect and trickle are cut early.
    pub first_request_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            request_timeout: Duration::from_millis(4000),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(20),
            shutdown_delay: Duration::ZERO,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_connections: 256,
            connection_wait: Duration::from_millis(100),
            first_request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the handlers share.
pub struct AppState {
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Events on the pods' owners (with a cluster only).
    pub events: Option<crate::events::WorkloadEvents>,
    /// Set on SIGTERM so `/readyz` fails while in-flight requests drain.
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(cache: Arc<Cache>, metrics: Arc<Metrics>, settings: Settings) -> Arc<Self> {
        Self::with_events(cache, metrics, settings, None)
    }

    /// As [`AppState::new`], recording Events on the pods' owners through `events`.
    pub fn with_events(
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        settings: Settings,
        events: Option<crate::events::WorkloadEvents>,
    ) -> Arc<Self> {
        Arc::new(AppState {
            cache,
            metrics,
            settings,
            events,
            shutting_down: AtomicBool::new(false),
        })
    }
}

/// The routes of the TLS listener.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/inject", post(inject_default))
        .route("/inject/rev/{rev}", post(inject_revision))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            close_when_draining,
        ))
        .with_state(state)
}

/// While shutting down, ends each HTTP/1.x connection after its response (`Connection: close`),
/// so the client opens its next connection elsewhere instead of racing our close. HTTP/2 gets a
/// GOAWAY from the graceful shutdown, which has no such race.
async fn close_when_draining(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = req.version() < axum::http::Version::HTTP_2;
    let mut resp = next.run(req).await;
    if http1 && state.shutting_down.load(Ordering::Acquire) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A running server: its bound address and the handle to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    handle: Handle<SocketAddr>,
    state: Arc<AppState>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Fails readiness, keeps serving for the shutdown delay (closing each HTTP/1.1 connection
    /// after its next response), then stops accepting and lets in-flight requests finish (up to
    /// the grace period).
    pub fn graceful_shutdown(&self) {
        self.state.shutting_down.store(true, Ordering::Release);
        let settings = &self.state.settings;
        let grace = settings.shutdown_grace;
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            // Outside a runtime (e.g. a drop after it ended) there is nothing to keep serving.
            Ok(runtime) if !settings.shutdown_delay.is_zero() => {
                let handle = self.handle.clone();
                let delay = settings.shutdown_delay;
                runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    handle.graceful_shutdown(Some(grace));
                });
            }
            _ => self.handle.graceful_shutdown(Some(grace)),
        }
    }

    /// Waits until the server has stopped (after a shutdown, or on a fatal listener error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        }
    }
}

/// Binds `listen` and serves HTTP/1.1 and HTTP/2 over TLS until [`RunningServer::graceful_shutdown`].
pub async fn start(
    listen: SocketAddr,
    tls: RustlsConfig,
    state: Arc<AppState>,
) -> std::io::Result<RunningServer> {
    let handle = Handle::<SocketAddr>::new();
    // TCP_NODELAY: a response leaves as more than one TLS record; with Nagle's algorithm the
    // second waits for the client's delayed ACK, which put ~40 ms on about 0.1% of admissions
    // (p999 in benches/chaos_load.rs).
    let tls = RustlsAcceptor::new(tls)
        .handshake_timeout(state.settings.handshake_timeout)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    let acceptor = crate::limit::LimitAcceptor::new(
        tls,
        state.settings.max_connections,
        state.settings.connection_wait,
        state.settings.first_request_timeout,
        state.metrics.clone(),
    );
    let mut server = axum_server::bind(listen)
        .acceptor(acceptor)
        .handle(handle.clone());
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.idle_timeout)
        .keep_alive(true);
    server
        .http_builder()
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    let app = router(state.clone());
    let task = tokio::spawn(server.serve(app.into_make_service()));
    match handle.listening().await {
        Some(addr) => Ok(RunningServer {
            addr,
            handle,
            state,
            task,
        }),
        None => match task.await {
            Ok(Err(err)) => Err(err),
            Ok(Ok(())) => Err(std::io::Error::other(format!(
                "server on {listen} stopped before listening"
            ))),
            Err(join) => Err(std::io::Error::other(join)),
        },
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !state.cache.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "namespace and injector ConfigMap caches not synced yet\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: use POST /inject, POST /inject/rev/{rev}, GET /healthz, /readyz, /metrics\n",
    )
        .into_response()
}

async fn inject_default(State(state): State<Arc<AppState>>, req: Request) -> Response {
    admit(&state, DEFAULT_REVISION, req).await
}

async fn inject_revision(
    State(state): State<Arc<AppState>>,
    Path(rev): Path<String>,
    req: Request,
) -> Response {
    admit(&state, &rev, req).await
}

/// Reads, decides, answers and records one admission request.
async fn admit(state: &AppState, revision: &str, req: Request) -> Response {
    let start = Instant::now();
    let (result, response) = match read_body(state, req, start).await {
        Ok(body) => match decide(state, revision, &body, start) {
            Ok((result, json)) => (result, json_response(json)),
            Err(err) => (RequestResult::BadRequest, err.into_response()),
        },
        Err(err) => {
            let result = if err.status == StatusCode::REQUEST_TIMEOUT {
                RequestResult::Timeout
            } else {
                RequestResult::BadRequest
            };
            (result, err.into_response())
        }
    };
    state.metrics.record_request(result, start.elapsed());
    response
}

fn json_response(json: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(json));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An HTTP-level rejection: the request is not an AdmissionReview we can answer.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        tracing::debug!(status = self.status.as_u16(), message = %self.message, "admission request rejected");
        let mut message = self.message;
        message.push('\n');
        (self.status, message).into_response()
    }
}

/// Checks the content type and reads the body within the size and time limits.
async fn read_body(state: &AppState, req: Request, start: Instant) -> Result<Bytes, HttpError> {
    let settings = &state.settings;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {content_type:?}: expected \"application/json\""),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > settings.max_body_bytes as u64
    {
        return Err(too_large(settings.max_body_bytes));
    }
    let deadline = tokio::time::Instant::from_std(start + settings.request_timeout);
    let limited = Limited::new(req.into_body(), settings.max_body_bytes);
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} ms",
                settings.request_timeout.as_millis()
            ),
        )),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_large(settings.max_body_bytes))
        }
        Ok(Err(err)) => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {err}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn too_large(max: usize) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than the limit of {max} bytes"),
    )
}

/// `application/json`, optionally with parameters (`; charset=utf-8`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Answers one request body with the core's verdict, and records it: metrics, the Event for
/// the pod's owner, one debug line per admission, and an error line for a fault of ours.
fn decide(
    state: &AppState,
    revision: &str,
    body: &[u8],
    start: Instant,
) -> Result<(RequestResult, Vec<u8>), HttpError> {
    let (verdict, json) =
        verdict::respond(body, revision, state.cache.as_ref()).map_err(|e| match e {
            BodyError::Review(e) => HttpError::new(StatusCode::BAD_REQUEST, e.to_string()),
            BodyError::Encode(_) => {
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        })?;
    let result = match verdict.kind {
        Kind::Injected => RequestResult::Injected,
        Kind::Allowed => RequestResult::Allowed,
        Kind::Denied => RequestResult::Denied,
        Kind::InternalError => RequestResult::InternalError,
    };
    match verdict.kind {
        Kind::Injected | Kind::Allowed => state
            .metrics
            .record_decision(verdict.reason, verdict.kind == Kind::Injected),
        Kind::Denied | Kind::InternalError => state.metrics.record_denial(verdict.reason),
    }
    if let Some(fault) = &verdict.fault {
        tracing::error!(
            uid = %verdict.response.uid,
            namespace = %verdict.pod_namespace,
            pod = %verdict.pod_name,
            fault = %fault,
            "the injector failed; refusing the pod"
        );
    }
    if let (Some(events), Some(note)) = (&state.events, verdict.note) {
        events.note(note);
    }
    tracing::debug!(
        uid = %verdict.response.uid,
        namespace = %verdict.pod_namespace,
        pod = %verdict.pod_name,
        revision,
        reason = verdict.reason,
        result = result.as_str(),
        duration_us = start.elapsed().as_micros() as u64,
        "admission"
    );
    Ok((result, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(!is_json("application/yaml"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
