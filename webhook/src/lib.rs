//! Skjold's sidecar injector.
//!
//! The decision and the patch are pure functions ([`inject::inject`]) of the pod, its namespace
//! and the [`config::InjectorConfig`]; the HTTP server only decodes, calls and encodes.

pub mod config;
pub mod inject;
