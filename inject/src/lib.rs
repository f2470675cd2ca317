//! Skjold's injection core, shared by the webhook, the operator, `skjoldctl`, fuzzing and the
//! benchmarks.
//!
//! Everything here is a pure function of its inputs: no async runtime, no network, no
//! filesystem, no clock. The webhook crate is the HTTP/TLS/cache/metrics edge around it.
//!
//! - [`config`]: the injector config (one revision), validated when it is loaded;
//! - [`inject`]: the decision and the patch for one pod ([`inject::inject`]);
//! - [`admission`]: AdmissionReview decoding and encoding;
//! - [`verdict`]: one admission's answer ([`verdict::verdict`]), as the webhook sends it;
//! - [`workload`]: the offline walker over manifests (`skjoldctl inject`);
//! - [`notes`]: what to tell a pod's owner about an admission (the webhook records it as an Event);
//! - [`istio`]: the pinned Istio version.

pub mod admission;
pub mod config;
pub mod inject;
pub mod istio;
pub mod notes;
pub mod verdict;
pub mod workload;
