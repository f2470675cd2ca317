//! One process-wide tokio runtime for harness tasks that must outlive a single test's runtime
//! (each `#[tokio::test]` has its own, dropped when the test ends), e.g. the Secret volume.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// The background runtime (2 worker threads, started on first use, never shut down).
pub fn background() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("skjold-e2e-bg")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("building the harness background runtime: {e}"))
    })
}
