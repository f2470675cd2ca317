//! Istio's own components against the local cluster: istiod run from the Deployment the operator
//! rendered (by the kubelet stand-in, with istiod's own ServiceAccount token), and an xDS client
//! that connects to it as the sidecar of an injected Pod (`skjold-xds-probe`, Istio's `pkg/adsc`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use crate::cluster::Cluster;
use crate::kubelet::{ImageBinary, LocalPod};
use crate::mesh::CONTROL_PLANE_NS;
use crate::proc::Proc;
use crate::tools::{cache_dir, tools_bin_dir};
use crate::wait::{Poll, wait_for};

/// istiod's plaintext xDS port (the probe connects here; the rendered Service calls it grpc-xds).
pub const XDS_PORT: u16 = 15010;
/// The Istio release the operator deploys (`pilot`/`proxyv2` image tag).
pub const ISTIO_VERSION: &str = skjold_inject::istio::ISTIO_VERSION;

/// A binary of the pinned Istio build (`pilot-discovery`, `pilot-agent`, `istioctl`, ...).
pub fn istio_bin(name: &str) -> Result<PathBuf> {
    let path = tools_bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} missing: run bash e2e/scripts/build-tools.sh",
            path.display()
        );
    }
    Ok(path)
}

/// istiod running as the Pod of the rendered `istiod` Deployment; stopped on drop.
#[derive(Debug)]
pub struct Istiod {
    pub pod: LocalPod,
    /// How long from process start until its readiness probe passed.
    pub ready_after: Duration,
    _ports: PortLock,
}

impl Istiod {
    /// Starts istiod from Deployment `istio-system/istiod` as the operator rendered it and waits
    /// until its readiness probe passes (the Pod is then reported Ready).
    pub async fn start(cluster: &Cluster, timeout: Duration) -> Result<Istiod> {
        // istiod's ports are fixed by its Deployment and shared with the machine: one at a time.
        let ports = PortLock::acquire(Duration::from_secs(600))?;
        let image = ImageBinary {
            repository: "pilot".into(),
            binary: istio_bin("pilot-discovery")?,
        };
        let mut pod = cluster
            .run_deployment_pod(CONTROL_PLANE_NS, "istiod", "discovery", &image)
            .await?;
        let ready_after = cluster
            .report_readiness(&mut pod, timeout)
            .await
            .map_err(|e| anyhow!("{e:#}\n--- istiod log ---\n{}", pod.log_tail(40)))?;
        Ok(Istiod {
            pod,
            ready_after,
            _ports: ports,
        })
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.pod.log_tail(lines)
    }

    /// The whole istiod log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.pod.log_path()).unwrap_or_default()
    }

    /// Waits until istiod has started no push for `quiet` (at most `timeout`): no config change
    /// of earlier work (namespaces still being deleted, endpoints settling) is in flight.
    ///
    /// Why the mesh-edit test needs this: in the pinned Istio, `pushConnection`
    /// (pilot/pkg/xds/ads.go) skips `computeProxyState` when every key of a push is an Endpoints
    /// key, without looking at `Forced`. A mesh change is a forced push with no keys; when the
    /// debouncer merges it with an Endpoints-only update, the merged push is forced but has only
    /// Endpoints keys, so proxies keep their old SidecarScope: the new access-log encoding arrives
    /// (it is read from the push's mesh) while the old outbound policy stays (it is read from the
    /// SidecarScope) until an unrelated ServiceEntry/DestinationRule/VirtualService/Sidecar/
    /// PeerAuthentication change or another forced push. See docs/e2e.md, "Known issues".
    pub async fn wait_push_quiet(&self, quiet: Duration, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let pushes = || self.log().matches("Push debounce stable").count();
        let mut seen = pushes();
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = pushes();
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "istiod did not go {quiet:?} without a push within {timeout:?} (pushes keep coming: {}",
                    self.log_tail(5)
                );
            }
        }
    }

    /// The mesh config istiod itself holds now (its `/debug/mesh` on the HTTP debug port 8080),
    /// to tell "istiod did not see the ConfigMap change" from "istiod did not push it".
    pub async fn debug_mesh(&self) -> Result<serde_json::Value> {
        let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 8080));
        let (code, body) = crate::https::http_get(addr, "/debug/mesh").await?;
        if code != 200 {
            bail!("istiod /debug/mesh: HTTP {code}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("istiod /debug/mesh: {body}"))
    }
}

/// An exclusive lock on the machine-wide ports istiod listens on.
#[derive(Debug)]
struct PortLock {
    _file: File,
}

impl PortLock {
    fn acquire(timeout: Duration) -> Result<PortLock> {
        let dir = cache_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("istiod-ports.lock");
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let start = Instant::now();
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(PortLock { _file: f });
            }
            if start.elapsed() > timeout {
                bail!(
                    "another istiod of this harness (make demo or a test run) holds {} for its ports 8080/15010/15012/15014/15017",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Makes an admitted (injected) Pod look scheduled and running for istiod: bound to the local
/// Node, `Running`, `Ready`, with `ip` as its address. Its containers do not run (there is no
/// container runtime yet), but istiod knows a proxy by exactly these fields. The address is only
/// written to the API: it is never configured on any interface.
pub async fn report_pod_running(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    ip: &str,
) -> Result<Pod> {
    let client = cluster.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    crate::kubelet::bind_pod(&client, namespace, name).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "hostIP": crate::kubelet::POD_IP, "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .with_context(|| format!("reporting Pod {namespace}/{name} running"))
}

/// `skjold-xds-probe` connected to istiod as the sidecar of one Pod; each change of what istiod
/// serves it is one JSON line in its log.
#[derive(Debug)]
pub struct XdsProbe {
    proc: Proc,
}

impl XdsProbe {
    /// On a cluster with a real node the probe runs inside the node's sandbox and dials
    /// istiod's Service address (kube-proxy's rules); otherwise istiod listens on the machine's
    /// loopback ([`Istiod::start`]).
    pub fn start(cluster: &Cluster, pod: &Pod) -> Result<XdsProbe> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let file = cluster.dir().join(format!("xds-probe-{name}.pod.json"));
        std::fs::write(&file, serde_json::to_vec(pod)?)?;
        let bin = istio_bin("skjold-xds-probe")?;
        let (mut cmd, addr) = match cluster.node_sandbox() {
            Some(sandbox) => {
                let ip = cluster.kubectl_ok(
                    &[
                        "get",
                        "service",
                        "istiod",
                        "-n",
                        CONTROL_PLANE_NS,
                        "-o",
                        "jsonpath={.spec.clusterIP}",
                    ],
                    None,
                )?;
                (sandbox.command(&bin), format!("{}:{XDS_PORT}", ip.trim()))
            }
            None => (Command::new(&bin), format!("127.0.0.1:{XDS_PORT}")),
        };
        cmd.arg("--addr")
            .arg(addr)
            .arg("--pod")
            .arg(&file)
            .arg("--istio-version")
            .arg(ISTIO_VERSION);
        let mut proc = Proc::spawn(
            &format!("xds-probe {name}"),
            cmd,
            &cluster.log_path(&format!("xds-probe-{name}")),
        )?;
        if cluster.node_sandbox().is_some() {
            // nsenter forks the probe and does not pass signals on.
            proc = proc.signal_group();
        }
        Ok(XdsProbe { proc })
    }

    /// The newest configuration istiod sent, if a complete one arrived.
    pub fn latest(&self) -> Option<serde_json::Value> {
        newest_summary(self.proc.log_path())
    }

    /// Waits until istiod's newest configuration satisfies `check` (which says what it saw when
    /// not), and returns it with the time waited.
    pub async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> std::result::Result<(), String>,
    ) -> Result<(serde_json::Value, Duration)> {
        let start = Instant::now();
        let check = &check;
        let proc = &mut self.proc;
        let v = wait_for(what, timeout, || {
            let running = proc.check_running();
            let latest = newest_summary(proc.log_path());
            async move {
                if let Err(e) = running {
                    return Poll::Failed(format!("{e:#}"));
                }
                match latest {
                    None => Poll::Pending("no complete xDS configuration yet".into()),
                    Some(v) => match check(&v) {
                        Ok(()) => Poll::Ready(v),
                        Err(why) => Poll::Pending(why),
                    },
                }
            }
        })
        .await?;
        Ok((v, start.elapsed()))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
}

/// The probe's newest JSON line (one complete configuration) in its log.
fn newest_summary(log: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
}

/// Listeners whose HTTP connection managers or TCP proxies log to a file, with path and format.
pub fn access_logs(summary: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for l in summary["listeners"].as_array().into_iter().flatten() {
        for al in l["access_logs"].as_array().into_iter().flatten() {
            out.push((
                l["name"].as_str().unwrap_or_default().to_string(),
                al["path"].as_str().unwrap_or_default().to_string(),
                al["format"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}
