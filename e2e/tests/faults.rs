//! Operator faults against a real kube-apiserver: the API server crashes and comes back on the same
//! port mid-reconcile, the operator's RBAC is revoked and restored, and the leader of two replicas
//! is SIGKILLed. Each time the MeshConfig converges (status, ConfigMap `istio`) and the number of
//! reconciles over an idle period afterwards stays small (no hot loop).
//!
//! The operator runs as its real binary (`skjold-operator run`), so a SIGKILL is a real crash and
//! its credentials are a real kubeconfig. The API-server restart uses a private cluster: restarting
//! the shared one would break the other tests of this binary.
//!
//! Run: `cargo test -p skjold-e2e --test faults -- --nocapture` (prints the measured times).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skjold_e2e::https::http_get;
use skjold_e2e::k8s::{create_namespace, delete_namespace};
use skjold_e2e::{
    Cluster, ClusterOptions, Poll, Proc, free_port, kill_apiserver, wait_for, workspace_bin,
    workspace_root,
};
use skjold_operator::crd::{MeshConfig, MeshConfigSpec};

const WAIT: Duration = Duration::from_secs(30);
/// Lease duration 15 s + follower retry 2 s (docs/operator.md), plus slack for a loaded machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(25);
/// Quiet period after convergence over which reconciles are counted.
const IDLE: Duration = Duration::from_secs(10);
/// At most this many reconciles in [`IDLE`] once converged: a status write may cause one more
/// no-op pass; a hot loop would do dozens.
const IDLE_RECONCILE_BOUND: u64 = 3;

/// A `skjold-operator run` process with its metrics address.
struct Operator {
    proc: Proc,
    metrics: SocketAddr,
    name: String,
}

impl Operator {
    /// Starts the binary against `kubeconfig` for control-plane namespace `ns`; `name` becomes
    /// the Lease identity prefix (`POD_NAME`).
    fn start(
        kubeconfig: &Path,
        log_dir: &Path,
        ns: &str,
        name: &str,
        extra: &[&str],
    ) -> Result<Operator> {
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut cmd = std::process::Command::new(workspace_bin("skjold-operator"));
        cmd.args(["run", "--namespace", ns])
            .args(["--metrics-addr", &metrics.to_string()])
            .args([
                "--webhook-url",
                &format!("https://127.0.0.1:{}/inject", free_port()),
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let log = log_dir.join(format!("{ns}-{name}.log"));
        let proc = Proc::spawn(name, cmd, &log)?;
        Ok(Operator {
            proc,
            metrics,
            name: name.to_string(),
        })
    }

    async fn metrics_text(&self) -> Result<String> {
        let (code, body) = http_get(self.metrics, "/metrics").await?;
        ensure!(
            code == 200,
            "{} /metrics answered {code}: {body}",
            self.name
        );
        Ok(body)
    }

    /// `skjold_operator_reconciles_total` summed over results (ok + error).
    async fn reconciles(&self) -> Result<u64> {
        Ok(sum_metric(
            &self.metrics_text().await?,
            "skjold_operator_reconciles_total",
        ))
    }

    async fn is_leader(&self) -> bool {
        match self.metrics_text().await {
            Ok(text) => text.lines().any(|l| l == "skjold_operator_leader 1"),
            Err(_) => false,
        }
    }

    fn context(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow!(
            "{e:#}\n--- {} log ---\n{}",
            self.name,
            self.proc.log_tail(40)
        )
    }
}

/// Sum of all samples of `metric` (any labels) in Prometheus text.
fn sum_metric(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // Counters are whole numbers here; the float format is Prometheus text's.
        .map(|v| v as u64)
        .sum()
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "skjold_e2e=warn".into()))
        .with_test_writer()
        .try_init();
}

async fn wait_crd_served(client: &Client, ns: &str) -> Result<()> {
    let api: Api<MeshConfig> = Api::namespaced(client.clone(), ns);
    wait_for("MeshConfig CRD served", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await
}

async fn create_meshconfig(client: &Client, ns: &str) -> Result<MeshConfig> {
    let spec: MeshConfigSpec = serde_json::from_value(json!({"profile": "minimal"}))?;
    Api::<MeshConfig>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &MeshConfig::new("default", spec))
        .await
        .with_context(|| format!("creating MeshConfig {ns}/default"))
}

/// Sets `meshConfig.enableTracing` and returns the new generation.
async fn set_tracing(client: &Client, ns: &str, on: bool) -> Result<i64> {
    let mc = Api::<MeshConfig>::namespaced(client.clone(), ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"meshConfig": {"enableTracing": on}}})),
        )
        .await
        .context("patching MeshConfig")?;
    mc.metadata
        .generation
        .ok_or_else(|| anyhow!("MeshConfig without generation"))
}

/// `Reconciled` has `status` (and `reason`, if given) for at least `generation`; returns the
/// whole status as JSON (component messages carry the API server's refusal).
async fn wait_reconciled(
    client: &Client,
    ns: &str,
    status: &str,
    reason: Option<&str>,
    generation: i64,
    timeout: Duration,
) -> Result<String> {
    let api: Api<MeshConfig> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{ns}/default Reconciled={status} at generation {generation}"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let mc = match api.get("default").await {
                    Ok(mc) => mc,
                    Err(e) => return Poll::Pending(e.to_string()),
                };
                let st = mc.status.unwrap_or_default();
                let hit = st.conditions.iter().find(|c| {
                    c.type_ == "Reconciled"
                        && c.status == status
                        && reason.is_none_or(|r| c.reason == r)
                        && c.observed_generation.unwrap_or_default() >= generation
                });
                match hit {
                    Some(_) => Poll::Ready(serde_json::to_string(&st).unwrap_or_default()),
                    None => Poll::Pending(format!("conditions {:?}", st.conditions)),
                }
            }
        },
    )
    .await
}

/// ConfigMap `istio` says `enableTracing: want` (the edit reached the rendered object).
async fn wait_mesh_tracing(client: &Client, ns: &str, want: bool) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{ns}/istio mesh enableTracing={want}"),
        WAIT,
        || {
            let api = api.clone();
            async move {
                let cm = api.get("istio").await.map_err(|e| e.to_string())?;
                let mesh = cm
                    .data
                    .and_then(|d| d.get("mesh").cloned())
                    .ok_or("no mesh key")?;
                let v: Value = serde_yaml_ng::from_str(&mesh).map_err(|e| e.to_string())?;
                if v["enableTracing"] == json!(want) {
                    Ok(())
                } else {
                    Err(format!("enableTracing is {}", v["enableTracing"]))
                }
            }
        },
    )
    .await
}

/// Reconciles of `op` over [`IDLE`] once converged; fails above [`IDLE_RECONCILE_BOUND`].
async fn assert_idle(op: &Operator, what: &str) -> Result<u64> {
    let before = op.reconciles().await?;
    tokio::time::sleep(IDLE).await;
    let after = op.reconciles().await?;
    let delta = after.saturating_sub(before);
    eprintln!(
        "[{what}] reconciles over {}s idle: {delta} (total {after})",
        IDLE.as_secs()
    );
    ensure!(
        delta <= IDLE_RECONCILE_BOUND,
        "{what}: {delta} reconciles in {}s after convergence (bound {IDLE_RECONCILE_BOUND}): hot loop",
        IDLE.as_secs()
    );
    Ok(delta)
}

/// Deletes the MeshConfig (the finalizer needs a working operator) and waits until it is gone.
async fn delete_meshconfig(client: &Client, ns: &str) -> Result<()> {
    let api: Api<MeshConfig> = Api::namespaced(client.clone(), ns);
    let _ = api.delete("default", &DeleteParams::default()).await;
    wait_for(&format!("MeshConfig {ns}/default gone"), WAIT, || {
        let api = api.clone();
        async move {
            match api.get_opt("default").await {
                Ok(None) => Poll::Ready(()),
                Ok(Some(m)) => Poll::Pending(format!("finalizers {:?}", m.finalizers())),
                Err(e) => Poll::Pending(e.to_string()),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_killed_mid_reconcile_converges_after_restart() -> Result<()> {
    init_tracing();
    if std::env::var_os("SKJOLD_E2E_KUBECONFIG").is_some() {
        eprintln!("SKIPPED: restarting the API server needs a cluster started by the harness");
        return Ok(());
    }
    let state = tempfile::Builder::new()
        .prefix("skjold-faults-restart-")
        .tempdir()?;
    if std::env::var_os("SKJOLD_E2E_KEEP").is_some() {
        eprintln!("keeping {}", state.path().display());
    }
    let cluster = Cluster::start(ClusterOptions {
        state_dir: Some(state.path().to_path_buf()),
        keep_state: false,
        node: false,
    })
    .await?;
    let res = restart_scenario(&cluster).await;
    if res.is_err() {
        eprintln!("{}", cluster.log_tails(20));
    }
    cluster.shutdown();
    if std::env::var_os("SKJOLD_E2E_KEEP").is_some() {
        let _ = state.keep();
    }
    res
}

async fn restart_scenario(cluster: &Cluster) -> Result<()> {
    let client = cluster.client().await?;
    let ns = create_namespace(&client, "faults-restart", &[]).await?;
    // Leader election is covered by its own test; here a slow restart must not make the single
    // replica give up its Lease and exit, which would test the supervisor, not reconnection.
    let mut op = Operator::start(
        cluster.kubeconfig(),
        &cluster.dir().join("logs"),
        &ns,
        "restart",
        &["--leader-election=false"],
    )?;
    let run = async {
        wait_crd_served(&client, &ns).await?;
        create_meshconfig(&client, &ns).await?;
        wait_reconciled(&client, &ns, "True", None, 1, WAIT).await?;
        wait_mesh_tracing(&client, &ns, false).await?;

        // Edit, then crash the API server while the operator reconciles the edit (~100 ms).
        let generation = set_tracing(&client, &ns, true).await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let killed = kill_apiserver(cluster).await?;
        // Stay down long enough that every watch and in-flight request of the operator fails.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let restarted = killed.restart(cluster).await?;
        let back = Instant::now();
        let client = cluster.client().await?;
        wait_reconciled(&client, &ns, "True", None, generation, WAIT).await?;
        wait_mesh_tracing(&client, &ns, true).await?;
        let converged = back.elapsed();

        // The watches reconnected: drift made after the restart is repaired.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        cms.delete("istio", &DeleteParams::default()).await?;
        let deleted = Instant::now();
        wait_mesh_tracing(&client, &ns, true).await?;
        let repaired = deleted.elapsed();
        eprintln!(
            "[apiserver restart] down {:?} (kill to ready), converged {converged:?} after ready, \
             deleted ConfigMap restored in {repaired:?}",
            restarted.downtime
        );
        op.proc.check_running()?;
        assert_idle(&op, "apiserver restart").await?;
        op.proc.check_running()?;
        delete_meshconfig(&client, &ns).await?;
        drop(restarted);
        Ok::<_, anyhow::Error>(())
    };
    let res = run.await.map_err(|e| op.context(e));
    op.proc.stop(Duration::from_secs(10));
    res
}

/// Issues a client certificate for `user` from the cluster CA and writes a kubeconfig for it.
fn user_kubeconfig(cluster: &Cluster, user: &str) -> Result<PathBuf> {
    let ca_cert = cluster
        .ca_cert_path()
        .ok_or_else(|| anyhow!("no cluster CA"))?;
    let ca_key = cluster.dir().join("pki").join("ca.key");
    let ca = skjold_certs::CertificateAuthority::from_pem(
        &std::fs::read_to_string(ca_cert)?,
        &std::fs::read_to_string(&ca_key)?,
    )?;
    let cert = ca.issue_client(user, &[], Duration::from_secs(3600))?;
    let dir = cluster.dir().join(format!("user-{user}"));
    std::fs::create_dir_all(&dir)?;
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt, &cert.cert_pem)?;
    std::fs::write(&key, &cert.key_pem)?;
    let server = cluster
        .apiserver_url()
        .ok_or_else(|| anyhow!("no API server URL"))?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
             certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {crt}\n    \
             client-key: {key}\ncontexts:\n- name: c\n  context: {{cluster: c, user: {user}}}\ncurrent-context: c\n",
            ca = ca_cert.display(),
            crt = crt.display(),
            key = key.display(),
        ),
    )?;
    Ok(kubeconfig)
}

/// The operator's RBAC exactly as the Helm chart renders it for namespace `ns`, bound to `user`
/// instead of the ServiceAccount; cluster-scoped names get `-<ns>` so runs never collide.
fn chart_rbac_for_user(cluster: &Cluster, ns: &str, user: &str) -> Result<Vec<Value>> {
    let chart = workspace_root().join("helm").join("skjold");
    let out = std::process::Command::new(cluster.bin_dir().join("helm"))
        .args(["template", "skjold"])
        .arg(&chart)
        .args([
            "--namespace",
            ns,
            "--show-only",
            "templates/rbac-operator.yaml",
        ])
        .output()
        .context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        if kind.starts_with("Cluster") {
            let name = format!(
                "{}-{ns}",
                v["metadata"]["name"].as_str().unwrap_or_default()
            );
            v["metadata"]["name"] = json!(name);
        }
        if kind == "ClusterRoleBinding" {
            let role = format!("{}-{ns}", v["roleRef"]["name"].as_str().unwrap_or_default());
            v["roleRef"]["name"] = json!(role);
        }
        if kind.ends_with("Binding") {
            v["subjects"] =
                json!([{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]);
        }
        docs.push(v);
    }
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    ensure!(
        kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"],
        "unexpected chart RBAC objects: {kinds:?}"
    );
    Ok(docs)
}

fn apply_docs(cluster: &Cluster, docs: &[&Value]) -> Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    cluster.apply_yaml(&list.to_string()).map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_revoked_and_restored_converges() -> Result<()> {
    init_tracing();
    let cluster = Cluster::shared()?;
    if cluster.ca_cert_path().is_none() {
        eprintln!("SKIPPED: issuing a user certificate needs a cluster started by the harness");
        return Ok(());
    }
    let client = cluster.client().await?;
    let ns = create_namespace(&client, "faults-rbac", &[]).await?;
    let user = format!("skjold-operator-{ns}");
    let kubeconfig = user_kubeconfig(cluster, &user)?;
    let docs = chart_rbac_for_user(cluster, &ns, &user)?;
    apply_docs(cluster, &docs.iter().collect::<Vec<_>>())?;
    let crb_name = docs[1]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cr_name = docs[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The CRD must exist before a MeshConfig can be created; the operator applies it itself.
    let mut op = Operator::start(
        &kubeconfig,
        &cluster.dir().join("logs"),
        &ns,
        "rbac",
        &["--leader-election=true"],
    )?;
    let res = rbac_scenario(cluster, &client, &ns, &op, &docs, &crb_name)
        .await
        .map_err(|e| op.context(e));
    let cleanup = delete_meshconfig(&client, &ns).await;
    op.proc.stop(Duration::from_secs(10));
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let _ = crbs.delete(&crb_name, &DeleteParams::default()).await;
    let crs: Api<ClusterRole> = Api::all(client.clone());
    let _ = crs.delete(&cr_name, &DeleteParams::default()).await;
    delete_namespace(&client, &ns).await;
    res.and(cleanup)
}

async fn rbac_scenario(
    cluster: &Cluster,
    client: &Client,
    ns: &str,
    op: &Operator,
    docs: &[Value],
    crb_name: &str,
) -> Result<()> {
    wait_crd_served(client, ns).await?;
    create_meshconfig(client, ns).await?;
    wait_reconciled(client, ns, "True", None, 1, WAIT).await?;

    // Cluster-scoped rights gone (webhook configuration, istiod's ClusterRole, Events): the edit
    // cannot be applied; status (still allowed by the namespaced Role) says why. Revoking the
    // namespaced Role instead also takes the Lease, so the replica exits after its renew deadline
    // (by design; a pod restarts) and nothing can be written: see docs/reliability.md.
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    crbs.delete(crb_name, &DeleteParams::default()).await?;
    let revoked = Instant::now();
    let errors_before = sum_metric(
        &op.metrics_text().await?,
        "skjold_operator_reconcile_errors_total",
    );
    let generation = set_tracing(client, ns, true).await?;
    let status =
        wait_reconciled(client, ns, "False", Some("ApplyFailed"), generation, WAIT).await?;
    ensure!(
        status.contains("forbidden"),
        "ApplyFailed status does not name the RBAC refusal: {status}"
    );
    let detected = revoked.elapsed();
    // Failing, it retries on a fixed interval rather than spinning.
    tokio::time::sleep(IDLE).await;
    let errors = sum_metric(
        &op.metrics_text().await?,
        "skjold_operator_reconcile_errors_total",
    )
    .saturating_sub(errors_before);
    eprintln!(
        "[rbac: ClusterRoleBinding revoked] ApplyFailed in status after {detected:?}; {errors} failed reconciles in {:?}: {status}",
        revoked.elapsed()
    );
    ensure!(
        (1..=6).contains(&errors),
        "{errors} failed reconciles in {:?} without cluster RBAC (expected a retry every ~5 s)",
        revoked.elapsed()
    );
    apply_docs(cluster, &[&docs[1]])?;
    let restored = Instant::now();
    wait_reconciled(client, ns, "True", None, generation, WAIT).await?;
    wait_mesh_tracing(client, ns, true).await?;
    eprintln!(
        "[rbac: ClusterRoleBinding restored] Reconciled=True after {:?}",
        restored.elapsed()
    );

    assert_idle(op, "rbac restored").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkilled_follower_takes_over() -> Result<()> {
    init_tracing();
    let cluster = Cluster::shared()?;
    let client = cluster.client().await?;
    let ns = create_namespace(&client, "faults-leader", &[]).await?;
    let logs = cluster.dir().join("logs");
    let a = Operator::start(cluster.kubeconfig(), &logs, &ns, "replica-a", &[])?;
    let b = Operator::start(cluster.kubeconfig(), &logs, &ns, "replica-b", &[])?;
    let mut ops = [a, b];
    let res = leader_scenario(&client, &ns, &mut ops).await;
    let res = match res {
        Ok(()) => Ok(()),
        Err(e) => Err(ops[1].context(ops[0].context(e))),
    };
    let cleanup = delete_meshconfig(&client, &ns).await;
    for op in &mut ops {
        op.proc.stop(Duration::from_secs(10));
    }
    delete_namespace(&client, &ns).await;
    res.and(cleanup)
}

async fn leader_scenario(client: &Client, ns: &str, ops: &mut [Operator; 2]) -> Result<()> {
    wait_crd_served(client, ns).await?;
    let leader = wait_for("exactly one leader", WAIT, || {
        let ops = &*ops;
        async move {
            let (a, b) = (ops[0].is_leader().await, ops[1].is_leader().await);
            match (a, b) {
                (true, false) => Ok(0),
                (false, true) => Ok(1),
                (true, true) => Err("two leaders".to_string()),
                (false, false) => Err("no leader yet".to_string()),
            }
        }
    })
    .await?;
    let follower = 1 - leader;
    create_meshconfig(client, ns).await?;
    wait_reconciled(client, ns, "True", None, 1, WAIT).await?;
    ensure!(
        ops[follower].reconciles().await? == 0,
        "the follower reconciled while not leading"
    );

    ops[leader].proc.kill();
    let killed = Instant::now();
    wait_for("follower takes over the Lease", TAKEOVER_BOUND, || {
        let op = &ops[follower];
        async move {
            if op.is_leader().await {
                Ok(())
            } else {
                Err("still follower")
            }
        }
    })
    .await?;
    let takeover = killed.elapsed();
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get("skjold-operator")
        .await?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let follower_name = ops[follower].name.clone();
    ensure!(
        holder.starts_with(&format!("{follower_name}_")),
        "Lease holder {holder}, expected {follower_name}"
    );

    let generation = set_tracing(client, ns, true).await?;
    wait_reconciled(client, ns, "True", None, generation, WAIT).await?;
    wait_mesh_tracing(client, ns, true).await?;
    let converged = killed.elapsed();
    eprintln!(
        "[leader SIGKILL] {follower_name} took over after {takeover:?}; edit converged {converged:?} after the kill"
    );
    ops[follower].proc.check_running()?;
    assert_idle(&ops[follower], "leader takeover").await?;
    Ok(())
}
