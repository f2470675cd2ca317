//! Skjold on the local cluster in out-of-cluster URL mode: `skjold-operator` and
//! `skjold-webhook` as local processes, the MutatingWebhookConfiguration pointing at
//! `https://127.0.0.1:<port>/inject`, and the webhook's certificate delivered through an emulated
//! Secret volume.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;

use crate::cluster::{Cluster, block_on_fresh_runtime};
use crate::https::https_get;
use crate::k8s::{self, PROXY};
use crate::proc::Proc;
use crate::secret_volume::SecretVolume;
use crate::tools::workspace_bin;
use crate::wait::{Poll, free_port, wait_for};

/// Control-plane namespace (operator `--namespace`, webhook `--config-namespace`).
pub const CONTROL_PLANE_NS: &str = "istio-system";
/// The webhook serving certificate Secret written by the operator.
pub const CERT_SECRET: &str = "skjold-webhook-tls";
/// The default revision's MutatingWebhookConfiguration.
pub const WEBHOOK_CONFIG: &str = "skjold-sidecar-injector";

/// The MeshConfig of the guides: access log to stdout, only registered destinations.
pub const DEFAULT_MESHCONFIG: &str = "apiVersion: skjold.io/v1alpha1
kind: MeshConfig
metadata:
  name: default
  namespace: istio-system
spec:
  profile: default
  meshConfig:
    accessLogFile: /dev/stdout
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
";

/// Where the API server calls istiod's `/validate` in URL mode: istiod listens on the machine's
/// port 15017 (see `skjold_e2e::istio`), and `localhost` is the name its certificate is given.
pub const VALIDATION_URL: &str = "https://localhost:15017/validate";

/// Startup budget for each of: CRD established, Secret issued, webhook ready, first injection.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

impl Cluster {
    /// Starts `skjold-operator run` in URL mode against this cluster (metrics on a free loopback
    /// port so parallel runs on one machine do not collide).
    pub fn start_operator(&self, webhook_url: &str, extra_args: &[&str]) -> Result<Proc> {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(workspace_bin("skjold-operator"));
        cmd.args([
            "run",
            "--namespace",
            CONTROL_PLANE_NS,
            "--webhook-url",
            webhook_url,
            "--metrics-addr",
            &metrics,
        ])
        .args(extra_args);
        self.component_env(&mut cmd);
        Proc::spawn("skjold-operator", cmd, &self.log_path("skjold-operator"))
    }

    /// Starts `skjold-webhook` on `127.0.0.1:port` reading its certificate from `cert_dir`.
    pub fn start_webhook(&self, port: u16, cert_dir: &Path, extra_args: &[&str]) -> Result<Proc> {
        let mut cmd = Command::new(workspace_bin("skjold-webhook"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert-file")
            .arg(cert_dir.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(cert_dir.join("tls.key"))
            .args(["--kubernetes", "on", "--config-namespace", CONTROL_PLANE_NS])
            .args(extra_args);
        self.component_env(&mut cmd);
        Proc::spawn("skjold-webhook", cmd, &self.log_path("skjold-webhook"))
    }

    fn component_env(&self, cmd: &mut Command) {
        cmd.env("KUBECONFIG", self.kubeconfig());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
    }

    /// Installs the MeshConfig CRD from `skjold-operator crd` (server-side apply as the operator's
    /// own field manager, so its `--manage-crd` apply does not conflict) and waits until it is
    /// established.
    pub fn install_crd(&self) -> Result<()> {
        let bin = workspace_bin("skjold-operator");
        let out = Command::new(&bin)
            .arg("crd")
            .output()
            .with_context(|| format!("running {} crd", bin.display()))?;
        if !out.status.success() {
            bail!(
                "skjold-operator crd failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let crd = String::from_utf8_lossy(&out.stdout);
        self.kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=skjold-operator",
                "-f",
                "-",
            ],
            Some(&crd),
        )?;
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/meshconfigs.skjold.io",
            ],
            None,
        )?;
        Ok(())
    }

    /// `kubectl patch meshconfig default -n istio-system --type=merge -p <patch>`, as a user edits it.
    pub fn patch_meshconfig(&self, patch: &str) -> Result<()> {
        self.kubectl_ok(
            &[
                "patch",
                "meshconfig",
                "default",
                "-n",
                CONTROL_PLANE_NS,
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )
        .map(drop)
    }

    /// Creates the control-plane namespace if missing.
    pub fn ensure_control_plane_namespace(&self) -> Result<()> {
        let yaml =
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {CONTROL_PLANE_NS}\n");
        self.apply_yaml(&yaml).map(drop)
    }
}

/// Operator + webhook running against a [`Cluster`]; both are stopped on drop.
#[derive(Debug)]
pub struct Mesh<'c> {
    cluster: &'c Cluster,
    port: u16,
    volume: SecretVolume,
    operator: Mutex<Option<Proc>>,
    webhook: Mutex<Option<Proc>>,
}

impl Mesh<'static> {
    /// Operator + webhook on [`Cluster::shared`], started once per process with
    /// [`DEFAULT_MESHCONFIG`]. Tests that change the MeshConfig restore it before they end.
    pub fn shared() -> Result<&'static Mesh<'static>> {
        static SHARED: OnceLock<Result<Mesh<'static>, String>> = OnceLock::new();
        let mesh = SHARED.get_or_init(|| {
            let started = Cluster::shared().and_then(|cluster| {
                block_on_fresh_runtime(Mesh::start(cluster, DEFAULT_MESHCONFIG))
            });
            started.map_err(|e| format!("{e:#}"))
        });
        mesh.as_ref()
            .map_err(|e| anyhow!("Skjold on the local cluster is unavailable: {e}"))
    }
}

impl<'c> Mesh<'c> {
    /// Installs the CRD, starts the operator, applies `meshconfig_yaml`, waits for the webhook
    /// certificate Secret, mirrors it into a Secret volume, starts the webhook, and waits until
    /// a dry-run Pod in an `istio-injection=enabled` namespace comes back injected.
    pub async fn start(cluster: &'c Cluster, meshconfig_yaml: &str) -> Result<Mesh<'c>> {
        let port = free_port();
        cluster.ensure_control_plane_namespace()?;
        cluster.install_crd()?;
        let operator = cluster.start_operator(
            &webhook_url(port),
            &["--istiod-validation-url", VALIDATION_URL],
        )?;
        let operator = Mutex::new(Some(operator));
        cluster
            .apply_yaml(meshconfig_yaml)
            .context("applying the MeshConfig")?;
        let cert_dir = cluster.dir().join(format!("secret-volume-{port}"));
        let volume = SecretVolume::start(
            cluster.kubeconfig(),
            CONTROL_PLANE_NS,
            CERT_SECRET,
            &cert_dir,
            STEP_TIMEOUT,
        )
        .await
        .map_err(|e| {
            anyhow!(
                "{e:#}: the operator did not issue Secret {CONTROL_PLANE_NS}/{CERT_SECRET}; logs:\n{}",
                cluster.log_tails(30)
            )
        })?;
        let mesh = Mesh {
            cluster,
            port,
            volume,
            operator,
            webhook: Mutex::new(None),
        };
        mesh.start_webhook().await?;
        mesh.wait_injecting().await?;
        Ok(mesh)
    }

    pub fn cluster(&self) -> &'c Cluster {
        self.cluster
    }

    pub fn webhook_port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:<port>/inject`, the URL the operator puts into the webhook config.
    pub fn webhook_url(&self) -> String {
        webhook_url(self.port)
    }

    /// The emulated Secret volume the webhook reads `tls.crt`/`tls.key` from.
    pub fn cert_volume(&self) -> &SecretVolume {
        &self.volume
    }

    /// Starts the webhook (if stopped) and waits until its `/readyz` answers 200.
    pub async fn start_webhook(&self) -> Result<()> {
        {
            let mut slot = self.webhook.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(
                    self.cluster
                        .start_webhook(self.port, self.volume.dir(), &[])?,
                );
            }
        }
        self.wait_webhook_ready().await
    }

    /// Stops the webhook process (graceful; the port is closed afterwards).
    pub fn stop_webhook(&self) {
        if let Some(mut p) = self
            .webhook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Errors with the log tail if the operator or webhook process has exited.
    pub fn check_processes(&self) -> Result<()> {
        for slot in [&self.operator, &self.webhook] {
            if let Some(p) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                p.check_running()?;
            }
        }
        Ok(())
    }

    /// `GET https://127.0.0.1:<port><path>` trusting the `ca.crt` of the webhook's Secret.
    pub async fn webhook_get(&self, path: &str) -> Result<(u16, String)> {
        let ca = self.volume.read("ca.crt")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        https_get(addr, "127.0.0.1", &ca, path).await
    }

    /// Waits until the webhook's `/readyz` is 200 (certificates loaded, caches synced).
    pub async fn wait_webhook_ready(&self) -> Result<()> {
        wait_for("skjold-webhook /readyz", STEP_TIMEOUT, || async {
            if let Err(e) = self.check_processes() {
                return Poll::Pending(format!("{e:#}"));
            }
            match self.webhook_get("/readyz").await {
                Ok((200, _)) => Poll::Ready(()),
                Ok((code, body)) => Poll::Pending(format!("HTTP {code}: {body}")),
                Err(e) => Poll::Pending(format!("{e:#}")),
            }
        })
        .await
        .map_err(|e| anyhow!("{e:#}; logs:\n{}", self.logs(30)))
    }

    /// Waits until the API server injects through our webhook: the operator has written the
    /// MutatingWebhookConfiguration and a dry-run Pod in a labelled namespace comes back with
    /// `istio-proxy`.
    pub async fn wait_injecting(&self) -> Result<()> {
        let client = self.cluster.client().await?;
        let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        wait_for(
            &format!("MutatingWebhookConfiguration {WEBHOOK_CONFIG}"),
            STEP_TIMEOUT,
            || {
                let mwcs = mwcs.clone();
                async move {
                    match mwcs.get_opt(WEBHOOK_CONFIG).await {
                        Ok(Some(_)) => Poll::Ready(()),
                        Ok(None) => Poll::Pending("not created by the operator yet".into()),
                        Err(e) => Poll::Pending(e.to_string()),
                    }
                }
            },
        )
        .await
        .map_err(|e| anyhow!("{e:#}; logs:\n{}", self.logs(30)))?;
        let ns = k8s::create_namespace(&client, "probe", &[("istio-injection", "enabled")]).await?;
        let result = wait_injected_dry_run(&client, &ns).await;
        k8s::delete_namespace(&client, &ns).await;
        result.map_err(|e| anyhow!("{e:#}; logs:\n{}", self.logs(30)))
    }

    /// The operator's half of a MeshConfig edit: waits until the `mesh` key of ConfigMap
    /// `istio-system/istio` (what istiod reads) satisfies `check`, and returns the time waited.
    /// Fails at once, with its log, if the operator has exited.
    pub async fn wait_mesh_configmap(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_yaml_ng::Value) -> std::result::Result<(), String>,
    ) -> Result<Duration> {
        let start = std::time::Instant::now();
        let client = self.cluster.client().await?;
        let cms: Api<ConfigMap> = Api::namespaced(client, CONTROL_PLANE_NS);
        let name = skjold_operator::render::names::mesh_config_map("default");
        let (check, name) = (&check, name.as_str());
        wait_for(what, timeout, || {
            let cms = cms.clone();
            let operator = self.check_processes();
            async move {
                if let Err(e) = operator {
                    return Poll::Failed(format!("{e:#}"));
                }
                let cm = match cms.get_opt(name).await {
                    Ok(Some(cm)) => cm,
                    Ok(None) => return Poll::Pending(format!("no ConfigMap {name}")),
                    Err(e) => return Poll::Pending(e.to_string()),
                };
                let text = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get("mesh"))
                    .cloned()
                    .unwrap_or_default();
                match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
                    Ok(mesh) => match check(&mesh) {
                        Ok(()) => Poll::Ready(()),
                        Err(why) => Poll::Pending(format!("ConfigMap {name}: {why}")),
                    },
                    Err(e) => Poll::Pending(format!("ConfigMap {name} key mesh: {e}")),
                }
            }
        })
        .await
        .map_err(|e| {
            anyhow!(
                "{e:#}\n--- skjold-operator log ---\n{}",
                self.operator_log_tail(20)
            )
        })?;
        Ok(start.elapsed())
    }

    /// The last `lines` lines of the operator's log.
    pub fn operator_log_tail(&self, lines: usize) -> String {
        self.operator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    /// Runs a scenario; on failure the error carries the tails of all logs (control plane,
    /// operator, webhook) so a CI failure explains itself.
    pub async fn with_logs<T>(&self, scenario: impl Future<Output = Result<T>>) -> Result<T> {
        scenario
            .await
            .map_err(|e| anyhow!("{e:#}\n--- logs ---\n{}", self.logs(40)))
    }

    /// Puts MeshConfig `istio-system/default` back to [`DEFAULT_MESHCONFIG`]'s spec (a merge
    /// patch, so the operator's finalizer and status stay), for tests that edit it.
    pub fn restore_default_meshconfig(&self) -> Result<()> {
        self.cluster.patch_meshconfig(
            r#"{"spec":{"profile":"default","proxy":null,"injection":null,"meshConfig":{"accessLogFile":"/dev/stdout","outboundTrafficPolicy":{"mode":"REGISTRY_ONLY"}}}}"#,
        )
    }

    /// Tails of all logs of the cluster, operator and webhook.
    pub fn logs(&self, lines: usize) -> String {
        self.cluster.log_tails(lines)
    }

    /// Stops webhook and operator. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        self.stop_webhook();
        if let Some(mut p) = self
            .operator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            p.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Mesh<'_> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn webhook_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}/inject")
}

/// Dry-run Pod creates in `namespace` until one comes back with the proxy.
async fn wait_injected_dry_run(client: &Client, namespace: &str) -> Result<()> {
    let probe = k8s::pod("probe", &[], &[]);
    wait_for(
        &format!("a dry-run Pod in {namespace} to be injected"),
        STEP_TIMEOUT,
        || {
            let probe = probe.clone();
            async move {
                match k8s::dry_run_pod(client, namespace, &probe).await {
                    Ok(pod) if k8s::is_injected(&pod) => Poll::Ready(()),
                    Ok(pod) => Poll::Pending(format!(
                        "admitted without {PROXY}: containers {:?}",
                        k8s::container_names(&pod)
                    )),
                    Err(e) => Poll::Pending(k8s::api_message(&e)),
                }
            }
        },
    )
    .await
}

/// Path of the kubeconfig file `skjold-cluster up`/`demo` writes by default.
pub fn default_kubeconfig_out() -> PathBuf {
    crate::tools::cache_dir().join("demo").join("kubeconfig")
}
