//! Skjold's sidecar injector webhook: the HTTP/TLS/cache/metrics edge around the pure
//! injection core ([`skjold_inject`]).
//!
//! Every admission is one call of [`skjold_inject::verdict::respond`] with the webhook's caches
//! as its [`skjold_inject::verdict::Lookup`]; the server only reads, limits, records and writes.

pub use skjold_inject::{admission, config, inject, istio, workload};

pub mod cache;
pub mod events;
pub mod limit;
pub mod metrics;
pub mod server;
pub mod tls;
