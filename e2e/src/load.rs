//! Continuous pod creation in an injecting namespace, every admission's outcome recorded: the
//! yardstick of the fault tests (goal: no failed and no uninjected admission while something
//! breaks).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::Client;
use tokio::task::JoinHandle;

use crate::k8s::{api_message, create_pod, dry_run_pod, is_injected, pod};

/// How each pod is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Stored (on a cluster without a node they stay Pending).
    Stored,
    /// `dryRun=All`: the whole admission chain, webhooks included, and nothing stored, so a
    /// real node is not flooded with pods to start.
    DryRun,
}

/// A running load; [`AdmissionLoad::finish`] stops it and returns what happened.
pub struct AdmissionLoad {
    stop: Arc<AtomicBool>,
    injected: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: JoinHandle<Vec<String>>,
}

/// Outcome of a load run.
#[derive(Debug)]
pub struct LoadReport {
    pub injected: usize,
    /// One line per failed or uninjected admission.
    pub failures: Vec<String>,
}

impl AdmissionLoad {
    /// Creates pods `load-<n>` in `ns` one after the other, `pause` apart, until finished.
    pub fn start(client: Client, ns: &str, create: Create, pause: Duration) -> AdmissionLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let task = {
            let (ns, stop, injected, failed) = (
                ns.to_string(),
                stop.clone(),
                injected.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let p = pod(&format!("load-{i}"), &[], &[]);
                    let result = match create {
                        Create::Stored => create_pod(&client, &ns, &p).await,
                        Create::DryRun => dry_run_pod(&client, &ns, &p).await,
                    };
                    match result {
                        Ok(p) if is_injected(&p) => {
                            injected.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            failures.push(format!("load-{i}: admitted without the sidecar"));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            failures.push(format!("load-{i}: {}", api_message(&e)));
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
                failures
            })
        };
        AdmissionLoad {
            stop,
            injected,
            failed,
            task,
        }
    }

    /// (injected, failed) so far, for per-phase counts.
    pub fn progress(&self) -> (usize, usize) {
        (
            self.injected.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }

    pub async fn finish(self) -> Result<LoadReport> {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self.task.await.context("the load task panicked")?;
        Ok(LoadReport {
            injected: self.injected.load(Ordering::SeqCst),
            failures,
        })
    }
}

impl LoadReport {
    /// Errors unless at least `min` pods were admitted (a thinner load proves nothing) and none
    /// failed; `what` names the fault.
    pub fn ensure_clean(&self, what: &str, min: usize) -> Result<()> {
        ensure!(
            self.injected >= min,
            "only {} pods admitted during {what}: load too thin to prove anything",
            self.injected
        );
        ensure!(
            self.failures.is_empty(),
            "{} of {} admissions failed during {what}: {:?}",
            self.failures.len(),
            self.injected + self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
        Ok(())
    }
}
