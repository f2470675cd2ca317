//! Skjold's sidecar injector.
//!
//! The decision and the patch are pure functions ([`inject::inject`]) of the pod, its namespace
//! and the [`config::InjectorConfig`]; the HTTP server only decodes, calls and encodes.

pub mod admission;
pub mod cache;
pub mod config;
pub mod events;
pub mod inject;
pub mod istio;
pub mod limit;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod workload;
