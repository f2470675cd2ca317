//! Skjold operator: reconciles the `MeshConfig` custom resource into a control plane, mesh-wide
//! settings and the sidecar-injection webhook wiring.
//!
//! [`render`] is pure (MeshConfig -> objects); [`reconcile`] applies it with server-side apply;
//! [`certs`] keeps the webhook's serving certificate and CA bundle valid; [`leader`] makes sure
//! only one replica reconciles; [`runner`] wires it all into a process.

pub mod apply;
pub mod certs;
pub mod crd;
pub mod istio;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod runner;
pub mod status;
