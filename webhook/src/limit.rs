//! Connection limits of the admission server: a cap on open connections and a deadline for a
//! connection's first request.
//!
//! Each stalled TLS client costs the server its TLS and HTTP buffers (about 37 KB measured), so
//! without a cap a few thousand clients that connect and never finish a request can push the
//! webhook past its memory limit; with `failurePolicy: Fail` that blocks pod creation in every
//! injected namespace. So:
//!
//! - at most `max_connections` are open; a connection beyond the cap **waits** briefly for a free
//!   slot (`connection_wait`, 100 ms: a reconnect racing the close of an old connection gets
//!   through), then is **closed** before its TLS handshake. Not a long wait: each waiting
//!   connection holds an accept task of about 7 KB (measured with 10,000: a 5 s wait cost
//!   70 MiB), the very memory the cap protects;
//! - a connection that has not completed its first request's headers within the first-request
//!   deadline (counted from accept, the TLS handshake included) is closed, whatever it trickles.
//!   Later requests on a kept-alive connection are not bound by it: closing idle keep-alive
//!   connections from the server side races the client's next POST (see `Settings::idle_timeout`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// Caps open connections and bounds the wait for a connection's first request.
#[derive(Clone)]
pub struct LimitAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
    /// How long a connection beyond the cap waits for a slot.
    wait: Duration,
    first_request: Duration,
    metrics: Arc<Metrics>,
}

impl<A> LimitAcceptor<A> {
    pub fn new(
        inner: A,
        max_connections: usize,
        wait: Duration,
        first_request: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        LimitAcceptor {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            wait,
            first_request,
            metrics,
        }
    }
}

impl<A, I, S> Accept<I, S> for LimitAcceptor<A>
where
    A: Accept<I, S> + Clone + Send + Sync + 'static,
    A::Future: Send,
    A::Stream: Send,
    A::Service: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Limited<A::Stream>;
    type Service = FirstRequest<A::Service>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let permit =
                match tokio::time::timeout(this.wait, this.permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        this.metrics.record_connection("refused");
                        return Err(io::Error::other(
                            "connection limit reached: no slot freed within the wait",
                        ));
                    }
                };
            this.metrics.record_connection("accepted");
            let deadline = Box::pin(tokio::time::sleep(this.first_request));
            let (stream, service) = this.inner.accept(stream, service).await?;
            let seen = Arc::new(AtomicBool::new(false));
            Ok((
                Limited {
                    inner: stream,
                    _permit: permit,
                    first_request: Some(deadline),
                    seen: seen.clone(),
                },
                FirstRequest {
                    inner: service,
                    seen,
                },
            ))
        })
    }
}

/// A connection holding its slot until it closes, cut at the first-request deadline.
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    /// Until the first request arrives.
    first_request: Option<Pin<Box<Sleep>>>,
    seen: Arc<AtomicBool>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.first_request.as_mut() {
            if this.seen.load(Ordering::Acquire) {
                this.first_request = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request within the first-request deadline",
                )));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connection's service: marks the first request as arrived (its headers are complete).
#[derive(Clone)]
pub struct FirstRequest<S> {
    inner: S,
    seen: Arc<AtomicBool>,
}

impl<S, R> tower_service::Service<R> for FirstRequest<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.seen.store(true, Ordering::Release);
        self.inner.call(req)
    }
}
