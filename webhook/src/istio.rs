//! The one Istio version Skjold targets, pinned in `e2e/versions.env` and read by `build.rs`, so
//! the default proxy image, the operator's default tag and the CRDs it installs, and the Istio
//! binaries the tests build all name the same version.

/// The Istio release line: default tag of the `pilot` and `proxyv2` images.
pub const ISTIO_VERSION: &str = env!("SKJOLD_ISTIO_VERSION");
/// The `istio.io/istio` Go module version the tests' Istio binaries and the CRDs come from.
pub const ISTIO_MODULE_VERSION: &str = env!("SKJOLD_ISTIO_MODULE_VERSION");
/// Default registry of Istio's images.
pub const ISTIO_HUB: &str = "docker.io/istio";

/// `<hub>/proxyv2:<ISTIO_VERSION>`, the default sidecar image.
pub fn default_proxy_image() -> String {
    format!("{ISTIO_HUB}/proxyv2:{ISTIO_VERSION}")
}
