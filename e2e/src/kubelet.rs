//! A kubelet stand-in for control-plane pods, until the local cluster has a real node: it takes
//! a Pending Pod of a Deployment (as the scheduler and kubelet would: bind it to a Node, resolve
//! its spec, run it, report its status) and runs its container's binary on this machine with
//! exactly the args, env and volumes the Pod spec says, read back from the API server.
//!
//! What it resolves like a kubelet:
//! - `env` values, `fieldRef` (metadata.name/namespace/uid/labels/annotations, spec.nodeName,
//!   spec.serviceAccountName, status.podIP/hostIP), `resourceFieldRef`, `configMapKeyRef`,
//!   `secretKeyRef`; plus `KUBERNETES_SERVICE_HOST/PORT` for the in-cluster API address;
//! - `emptyDir`, `configMap`, `secret` and `projected` (serviceAccountToken with its audience and
//!   expiry from the TokenRequest API, bound to the Pod; configMap, secret, downwardAPI) volumes,
//!   published with the kubelet's `..data` layout. The ServiceAccount admission plugin's
//!   `kube-api-access-*` volume is one of them, so the binary authenticates with in-cluster config
//!   as its own ServiceAccount, never as an admin;
//! - `securityContext.runAsUser/runAsGroup` (the process runs as that uid, so a Deployment that
//!   needs root or an unwritable path fails here as it would on a node), `workingDir`;
//! - the readiness probe (httpGet): the Pod's `Ready` condition follows it, so the ReplicaSet,
//!   the Deployment and the operator's status see the same availability a node would report.
//!
//! How: each Pod gets a private mount namespace (`unshare --mount`) in which a directory of the
//! harness is bind-mounted over `/run` (`/var/run`), holding the Pod's volumes at their mount
//! paths and the binary at `/run/.image/<name>`; nothing is mounted in the machine's own mount
//! namespace, and the namespace disappears with the process. The process keeps the harness's
//! parent-death signal across the uid change (`setpriv --pdeathsig keep`).
//!
//! Limits, said where they matter: the process shares the machine's network namespace (the Pod
//! reports `podIP` 127.0.0.1, like a host-network Pod on a node whose address is loopback), so
//! its ports are the machine's and one such Pod per port set can run at a time; mount paths must
//! lie under `/var/run` (or `/run`); ConfigMap/Secret volumes are written once, not kept in sync;
//! tokens are not refreshed (test runs are far shorter than their expiry).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Node, Pod, Secret, ServiceAccount, Volume,
};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use crate::cluster::Cluster;
use crate::proc::Proc;
use crate::secret_volume::write_atomic;
use crate::wait::{Poll, wait_for};

/// The Node the stand-in binds its Pods to.
pub const NODE_NAME: &str = "skjold-local";
/// The address the stand-in's Pods report (they share the machine's loopback).
pub const POD_IP: &str = "127.0.0.1";

/// Which local binary stands for which image: the image's repository name (`.../pilot:TAG`) and
/// the file its entrypoint runs.
#[derive(Clone, Debug)]
pub struct ImageBinary {
    pub repository: String,
    pub binary: PathBuf,
}

/// A Pod run by the stand-in; the process is killed on drop.
#[derive(Debug)]
pub struct LocalPod {
    pub name: String,
    pub namespace: String,
    /// The container it runs, as read back from the API server.
    container: Container,
    proc: Proc,
}

impl LocalPod {
    pub fn check_running(&mut self) -> Result<()> {
        self.proc.check_running()
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
}

impl Cluster {
    /// Binds the Pending Pod of Deployment `namespace/deployment` to the local Node and runs its
    /// container `container` (image mapped to a local binary by `image`). Returns once the
    /// process runs; the Pod's Ready condition then follows its readiness probe (see
    /// [`LocalPod`] and [`Cluster::report_readiness`]).
    pub async fn run_deployment_pod(
        &self,
        namespace: &str,
        deployment: &str,
        container: &str,
        image: &ImageBinary,
    ) -> Result<LocalPod> {
        let client = self.client().await?;
        let pod = pending_pod(&client, namespace, deployment).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        bind_pod(&client, namespace, &name).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let pod = pods.get(&name).await?;
        let spec = pod.spec.clone().context("Pod has no spec")?;
        let c = spec
            .containers
            .iter()
            .find(|c| c.name == container)
            .with_context(|| format!("Pod {namespace}/{name} has no container {container}"))?;
        let image_ref = c.image.clone().unwrap_or_default();
        let repo = image_ref
            .rsplit('/')
            .next()
            .and_then(|last| last.split([':', '@']).next())
            .unwrap_or_default();
        if repo != image.repository {
            bail!(
                "container {container} of Pod {namespace}/{name} runs image {image_ref:?}; the local stand-in has a binary for repository {:?} only",
                image.repository
            );
        }

        let root = self.dir().join(format!("pods/{namespace}_{name}"));
        let run = root.join("run");
        fs::create_dir_all(&run)?;
        let (uid, gid) = run_as(&spec, c);
        let sa = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        for mount in c.volume_mounts.iter().flatten() {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .with_context(|| format!("volumeMount {} names no volume", mount.name))?;
            let files = volume_files(&client, namespace, &sa, &pod, volume).await?;
            match files {
                Some(files) => publish(&run, &mount.mount_path, &files)?,
                None => {
                    // emptyDir: a directory the container's user may write.
                    let dir = under_run(&run, &mount.mount_path)?;
                    fs::create_dir_all(&dir)?;
                    chown(&dir, uid, gid)?;
                }
            }
        }
        let env = resolve_env(&client, namespace, &pod, c, self.apiserver_port()).await?;
        let image_dir = run.join(".image");
        fs::create_dir_all(&image_dir)?;
        let bin_name = image
            .binary
            .file_name()
            .context("image binary has no file name")?
            .to_string_lossy()
            .into_owned();
        // A placeholder the real binary is bind-mounted over inside the Pod's mount namespace
        // (its own path may not be readable by the container's uid).
        fs::write(image_dir.join(&bin_name), b"")?;

        let mut script = String::from("set -e\n");
        // /run first: a later bind onto a file below it is visible through it.
        script.push_str(&format!(
            "mount --bind {} /run\nmount --bind {} /run/.image/{bin_name}\n",
            sh_quote(&run.to_string_lossy()),
            sh_quote(&image.binary.to_string_lossy()),
        ));
        script.push_str(&format!(
            "cd {}\nexec setpriv --reuid={uid} --regid={gid} --clear-groups --pdeathsig=keep -- /run/.image/{bin_name} \"$@\"\n",
            sh_quote(c.working_dir.as_deref().unwrap_or("/"))
        ));
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&script)
            .arg("sh");
        // No `command`: the image's entrypoint (the binary) with the container's args.
        if c.command.as_ref().is_some_and(|v| !v.is_empty()) {
            bail!(
                "container {container} overrides the image's command ({:?}); the stand-in runs the entrypoint only",
                c.command
            );
        }
        cmd.args(c.args.iter().flatten());
        cmd.env_clear();
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(
            &format!("pod {namespace}/{name}"),
            cmd,
            &self.log_path(&format!("pod-{name}")),
        )?;
        set_status(&client, namespace, &name, false, "").await?;
        Ok(LocalPod {
            name,
            namespace: namespace.to_string(),
            container: c.clone(),
            proc,
        })
    }

    /// Probes the Pod's container readiness probe (httpGet on the Pod IP) until it succeeds,
    /// then reports the Pod Ready (the ReplicaSet and Deployment count it from then on).
    pub async fn report_readiness(
        &self,
        pod: &mut LocalPod,
        timeout: Duration,
    ) -> Result<Duration> {
        let client = self.client().await?;
        let c = pod.container.clone();
        let get = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .context("the container has no httpGet readiness probe")?;
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p as u16,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port as u16)
                .with_context(|| format!("probe port {name:?} is no container port"))?,
        };
        let path = get.path.unwrap_or_else(|| "/".into());
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let start = std::time::Instant::now();
        let pod_ref = &mut *pod;
        wait_for(
            &format!(
                "readiness probe http://{POD_IP}:{port}{path} of Pod {}",
                pod_ref.name
            ),
            timeout,
            || {
                let running = pod_ref.proc.check_running();
                let path = path.clone();
                async move {
                    if let Err(e) = running {
                        return Poll::Failed(format!("{e:#}"));
                    }
                    match crate::https::http_get(addr, &path).await {
                        Ok((200, _)) => Poll::Ready(()),
                        Ok((code, body)) => Poll::Pending(format!("HTTP {code}: {}", body.trim())),
                        Err(e) => Poll::Pending(format!("{e:#}")),
                    }
                }
            },
        )
        .await?;
        let took = start.elapsed();
        set_status(&client, &pod.namespace, &pod.name, true, &c.name).await?;
        Ok(took)
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn run_as(spec: &k8s_openapi::api::core::v1::PodSpec, c: &Container) -> (i64, i64) {
    let pod_sc = spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user))
        .unwrap_or(0);
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group))
        .unwrap_or(uid);
    (uid, gid)
}

fn chown(path: &Path, uid: i64, gid: i64) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid as u32), Some(gid as u32))
        .with_context(|| format!("chown {} to {uid}:{gid}", path.display()))
}

/// `mount_path` (absolute, under /var/run or /run) inside the Pod's run directory.
fn under_run(run: &Path, mount_path: &str) -> Result<PathBuf> {
    let rel = mount_path
        .strip_prefix("/var/run/")
        .or_else(|| mount_path.strip_prefix("/run/"))
        .ok_or_else(|| {
            anyhow!(
                "volume mount path {mount_path:?}: the local stand-in can place volumes only under /var/run"
            )
        })?;
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        bail!("volume mount path {mount_path:?} is not a clean absolute path");
    }
    Ok(run.join(rel))
}

/// Writes `files` at `mount_path` with the kubelet's atomic `..data` layout (world-readable, as
/// the kubelet's default mode 0644).
fn publish(run: &Path, mount_path: &str, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let dir = under_run(run, mount_path)?;
    fs::create_dir_all(&dir)?;
    write_atomic(&dir, files).with_context(|| format!("writing volume at {mount_path}"))?;
    // The kubelet's defaultMode 0644; directories traversable.
    for entry in walk(&dir)? {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(&entry, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_symlink() {
            continue;
        }
        if ty.is_dir() {
            out.extend(walk(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// The files of a volume, or None for an emptyDir. Unsupported kinds are refused by name.
async fn volume_files(
    client: &Client,
    namespace: &str,
    sa: &str,
    pod: &Pod,
    volume: &Volume,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    if volume.empty_dir.is_some() {
        return Ok(None);
    }
    let mut files = BTreeMap::new();
    if let Some(cm) = &volume.config_map {
        let all = config_map_files(client, namespace, &cm.name, cm.optional).await?;
        files.extend(select_items(all, cm.items.as_deref()));
    } else if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let all = secret_files(client, namespace, &name, s.optional).await?;
        files.extend(select_items(all, s.items.as_deref()));
    } else if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                let tok = token(
                    client,
                    namespace,
                    sa,
                    pod,
                    t.audience.clone(),
                    t.expiration_seconds,
                )
                .await?;
                files.insert(t.path.clone(), tok.into_bytes());
            } else if let Some(cm) = &source.config_map {
                let all = config_map_files(client, namespace, &cm.name, cm.optional).await?;
                files.extend(select_items(all, cm.items.as_deref()));
            } else if let Some(s) = &source.secret {
                let all = secret_files(client, namespace, &s.name, s.optional).await?;
                files.extend(select_items(all, s.items.as_deref()));
            } else if let Some(d) = &source.downward_api {
                for item in d.items.iter().flatten() {
                    let path = item
                        .field_ref
                        .as_ref()
                        .map(|f| f.field_path.as_str())
                        .with_context(|| {
                            format!("downwardAPI item {}: only fieldRef is supported", item.path)
                        })?;
                    files.insert(
                        item.path.clone(),
                        field_value(pod, namespace, path)?.into_bytes(),
                    );
                }
            } else {
                bail!(
                    "projected volume {}: only serviceAccountToken, configMap, secret and downwardAPI sources are supported by the local stand-in",
                    volume.name
                );
            }
        }
    } else {
        bail!(
            "volume {}: only emptyDir, configMap, secret and projected volumes are supported by the local stand-in",
            volume.name
        );
    }
    Ok(Some(files))
}

async fn config_map_files(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await? {
        Some(cm) => Ok(cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .chain(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            )
            .collect()),
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => bail!(
            "ConfigMap {namespace}/{name} of a volume does not exist (the kubelet would keep the Pod in ContainerCreating)"
        ),
    }
}

async fn secret_files(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await? {
        Some(s) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => bail!(
            "Secret {namespace}/{name} of a volume does not exist (the kubelet would keep the Pod in ContainerCreating)"
        ),
    }
}

/// A token of ServiceAccount `sa` bound to the Pod (TokenRequest API), like the kubelet's.
async fn token(
    client: &Client,
    namespace: &str,
    sa: &str,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        metadata: Default::default(),
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        status: None,
    };
    let resp: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{sa}"))?;
    Ok(resp.status.context("TokenRequest has no status")?.token)
}

async fn resolve_env(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    c: &Container,
    apiserver_port: Option<u16>,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(port) = apiserver_port {
        out.push(("KUBERNETES_SERVICE_HOST".into(), POD_IP.into()));
        out.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
    }
    for e in c.env.iter().flatten() {
        let value = env_value(client, namespace, pod, c, e).await?;
        // $(VAR) references to earlier variables, as the kubelet expands them.
        let value = expand(&value, &out);
        out.retain(|(k, _)| k != &e.name);
        out.push((e.name.clone(), value));
    }
    Ok(out)
}

fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut s = value.to_string();
    for (k, v) in env {
        s = s.replace(&format!("$({k})"), v);
    }
    s
}

async fn env_value(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    c: &Container,
    e: &EnvVar,
) -> Result<String> {
    let Some(from) = &e.value_from else {
        return Ok(e.value.clone().unwrap_or_default());
    };
    if let Some(f) = &from.field_ref {
        return field_value(pod, namespace, &f.field_path)
            .with_context(|| format!("env {}", e.name));
    }
    if let Some(r) = &from.resource_field_ref {
        let res = c.resources.as_ref();
        let (kind, which) = r
            .resource
            .split_once('.')
            .with_context(|| format!("env {}: resource {:?}", e.name, r.resource))?;
        let map = match kind {
            "limits" => res.and_then(|r| r.limits.as_ref()),
            _ => res.and_then(|r| r.requests.as_ref()),
        };
        let q = map.and_then(|m| m.get(which)).map(|q| q.0.clone());
        // Like the kubelet: no limit means the node's allocatable; report the machine's CPUs.
        let value = match (which, q) {
            ("cpu", Some(q)) => cpu_cores(&q).to_string(),
            ("cpu", None) => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string(),
            (_, Some(q)) => bytes(&q).to_string(),
            (_, None) => "0".into(),
        };
        return Ok(value);
    }
    if let Some(k) = &from.config_map_key_ref {
        let files = config_map_files(client, namespace, &k.name, k.optional).await?;
        return Ok(files
            .get(&k.key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default());
    }
    if let Some(k) = &from.secret_key_ref {
        let files = secret_files(client, namespace, &k.name, k.optional).await?;
        return Ok(files
            .get(&k.key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default());
    }
    bail!("env {}: unsupported valueFrom", e.name)
}

/// `items` of a ConfigMap/Secret volume: only the listed keys, at their paths (all when none).
fn select_items(
    all: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        None | Some([]) => all,
        Some(items) => items
            .iter()
            .filter_map(|i| Some((i.path.clone(), all.get(&i.key)?.clone())))
            .collect(),
    }
}

/// A downward-API field of the Pod, as the kubelet resolves it.
fn field_value(pod: &Pod, namespace: &str, path: &str) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|k| k.strip_suffix("']"))
            .and_then(|k| map.as_ref()?.get(k).cloned())
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => namespace.to_string(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => NODE_NAME.into(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => POD_IP.into(),
        p if p.starts_with("metadata.labels['") => keyed(&meta.labels, "metadata.labels['"),
        p if p.starts_with("metadata.annotations['") => {
            keyed(&meta.annotations, "metadata.annotations['")
        }
        other => bail!("fieldRef {other:?} is not supported by the local stand-in"),
    })
}

/// CPU quantity to whole cores, rounded up (divisor 1, as the kubelet does).
fn cpu_cores(q: &str) -> u64 {
    if let Some(m) = q.strip_suffix('m') {
        m.parse::<u64>().map_or(1, |m| m.div_ceil(1000).max(1))
    } else {
        q.parse::<f64>().map_or(1, |c| c.ceil().max(1.0) as u64)
    }
}

/// Memory quantity to bytes.
fn bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().map_or(0, |n| n * mult);
        }
    }
    q.parse().unwrap_or(0)
}

/// The local Node, Ready, with address 127.0.0.1.
async fn ensure_node(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"}},
    }))?;
    let pp = PatchParams::apply("skjold-e2e-kubelet").force();
    nodes.patch(NODE_NAME, &pp, &Patch::Apply(&node)).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME},
        "status": {
            // InternalIP only: a Hostname address would make the API server look the node up in
            // DNS (kubelet-preferred-address-types) for port-forward/exec/logs.
            "addresses": [{"type": "InternalIP", "address": POD_IP}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "skjold e2e kubelet stand-in", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"},
        },
    });
    nodes
        .patch_status(NODE_NAME, &pp, &Patch::Apply(&status))
        .await?;
    Ok(())
}

/// The newest Pending, unbound Pod of the Deployment (waits for the ReplicaSet to create it).
async fn pending_pod(client: &Client, namespace: &str, deployment: &str) -> Result<Pod> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("a Pending Pod of Deployment {namespace}/{deployment}"),
        Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            let pods = pods.clone();
            async move {
                let d = match deployments.get_opt(deployment).await {
                    Ok(Some(d)) => d,
                    Ok(None) => return Poll::Pending("Deployment not created yet".into()),
                    Err(e) => return Poll::Pending(e.to_string()),
                };
                let selector = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.match_labels.clone())
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                match pods.list(&ListParams::default().labels(&selector)).await {
                    Ok(list) => {
                        let mut pending: Vec<Pod> = list
                            .items
                            .into_iter()
                            .filter(|p| {
                                p.metadata.deletion_timestamp.is_none()
                                    && p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
                            })
                            .collect();
                        pending.sort_by_key(|p| p.metadata.creation_timestamp.clone());
                        match pending.pop() {
                            Some(p) => Poll::Ready(p),
                            None => Poll::Pending("no unscheduled Pod yet".into()),
                        }
                    }
                    Err(e) => Poll::Pending(e.to_string()),
                }
            }
        },
    )
    .await
}

/// Binds Pod `namespace/name` to the local Node (creating the Node if needed), as the scheduler
/// would.
pub async fn bind_pod(client: &Client, namespace: &str, name: &str) -> Result<()> {
    ensure_node(client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let binding = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
    });
    let _: serde_json::Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .with_context(|| format!("binding Pod {namespace}/{name} to Node {NODE_NAME}"))?;
    Ok(())
}

/// Reports the Pod Running with IP [`POD_IP`]; Ready when `ready`.
async fn set_status(
    client: &Client,
    namespace: &str,
    name: &str,
    ready: bool,
    container: &str,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let flag = if ready { "True" } else { "False" };
    let mut status = serde_json::json!({
        "phase": "Running", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}],
        "hostIP": POD_IP, "hostIPs": [{"ip": POD_IP}], "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ],
    });
    if !container.is_empty() {
        status["containerStatuses"] = serde_json::json!([{
            "name": container, "ready": ready, "restartCount": 0, "started": true,
            "image": "", "imageID": "", "state": {"running": {"startedAt": now}},
        }]);
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": status})),
    )
    .await
    .with_context(|| format!("reporting status of Pod {namespace}/{name}"))?;
    Ok(())
}
