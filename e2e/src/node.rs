//! A real node in the local cluster: containerd and runc (Debian's packages), kubelet and
//! kube-proxy (the pinned Kubernetes build) and the CNI plugins bridge, host-local, loopback and
//! portmap, all inside the cluster's [`Sandbox`], with images built locally and imported into
//! containerd (no registry, no pull).
//!
//! Choices, each for a reason a reviewer can check:
//! - cgroup v1 with the `cgroupfs` driver (this machine has no systemd and no cgroup v2); every
//!   pod cgroup lives under one root per cluster (`/skjold-<pid>-<n>` in every hierarchy), removed
//!   on teardown.
//! - containerd's `restrict_oom_score_adj = true`: this sandbox lacks `CAP_SYS_RESOURCE`, so
//!   lowering an `oom_score_adj` is refused (`echo -998 > /proc/self/oom_score_adj`: "Permission
//!   denied"), and runc would fail every pod sandbox (which containerd gives -998) with "can't
//!   get final child's PID from pipe". With it, scores below containerd's own are raised to it.
//! - `imagePullPolicy` as rendered: the images exist before any pod asks (imported at start),
//!   so `IfNotPresent` never pulls; image GC is off (the thresholds are 100%).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::pki::{ClusterPki, write_file};
use crate::sandbox::{NODE_IP, Sandbox};
use crate::tools::workspace_root;

/// The Node's name (and the kubelet's `--hostname-override`).
pub const NODE_NAME: &str = "skjold-node";
/// Pod addresses (the CNI bridge's host-local range).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// Service addresses (`--service-cluster-ip-range`); kube-proxy's rules exist only in the
/// sandbox.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The sandbox image containerd runs each pod's namespaces in: our `pause` binary.
pub const PAUSE_IMAGE: &str = "localhost/skjold/pause:e2e";
/// The cluster DNS Service address (`kube-system/kube-dns`, the kubelet's `clusterDNS`).
pub const CLUSTER_DNS: &str = "10.96.0.10";
/// CoreDNS's image: e2e/tools/coredns, built by build-node-tools.sh.
pub const COREDNS_IMAGE: &str = "localhost/skjold/coredns:e2e";
/// A small image for test workloads: Debian's static busybox (`sh`, `httpd`, `wget`, `nc`, ...).
pub const BUSYBOX_IMAGE: &str = "localhost/skjold/busybox:e2e";
/// The API server's port inside the sandbox.
pub const APISERVER_PORT: u16 = 6443;

/// The node's binaries (kubelet, kube-proxy, cni/, pause, skjold-oci-image):
/// `e2e/scripts/build-node-tools.sh`, built once into the cache.
pub fn node_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = workspace_root().join("e2e/scripts/build-node-tools.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} failed ({})", script.display(), out.status));
        }
        let dir = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or("")
                .trim(),
        );
        for b in [
            "kubelet",
            "kube-proxy",
            "kube-scheduler",
            "pause",
            "skjold-oci-image",
            "cni/bridge",
            "coredns",
        ] {
            if !dir.join(b).is_file() {
                return Err(format!(
                    "{} missing after {}",
                    dir.join(b).display(),
                    script.display()
                ));
            }
        }
        Ok(dir)
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Checks the machine can run a node and says what to install when not.
pub fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("a real node needs root (namespaces, mounts, cgroups, iptables)");
    }
    let mut missing = Vec::new();
    for (bin, pkg) in [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("ctr", "containerd"),
        ("iptables", "iptables"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
    ] {
        if which(bin).is_none() {
            missing.push(format!("{bin} (Debian package {pkg})"));
        }
    }
    if busybox().is_none() {
        missing.push("a static busybox (Debian package busybox-static)".into());
    }
    if !missing.is_empty() {
        bail!(
            "a real node needs {}: run `make setup` (scripts/setup.sh installs them)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Debian's static busybox.
fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
}

/// The pod cgroup root of one cluster, in every cgroup v1 hierarchy; removed on drop.
#[derive(Debug)]
pub struct CgroupRoot {
    name: String,
    dirs: Vec<PathBuf>,
}

impl CgroupRoot {
    pub fn create() -> Result<CgroupRoot> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "skjold-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mounts =
            std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
        let mut root = CgroupRoot {
            name,
            dirs: Vec::new(),
        };
        let hierarchies: Vec<PathBuf> = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() >= 3 && (f[2] == "cgroup" || f[2] == "cgroup2"))
            .map(|f| PathBuf::from(f[1]))
            .collect();
        remove_stale_roots(&hierarchies);
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 || f[2] != "cgroup" {
                continue;
            }
            let dir = Path::new(f[1]).join(&root.name);
            std::fs::create_dir_all(&dir).with_context(|| {
                format!(
                    "creating cgroup {} (cgroup v1 hierarchy {})",
                    dir.display(),
                    f[1]
                )
            })?;
            root.dirs.push(dir.clone());
            // A new cpuset cgroup starts with no CPUs or memory nodes: give it its parent's.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = Path::new(f[1]).join(file);
                if parent.is_file() {
                    let v = std::fs::read_to_string(&parent).unwrap_or_default();
                    std::fs::write(dir.join(file), v.trim())
                        .with_context(|| format!("writing {}", dir.join(file).display()))?;
                }
            }
        }
        // In hybrid mode runc also mirrors each container's cgroup into the cgroup2 hierarchy;
        // it creates those itself, they only need removing.
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 3 && f[2] == "cgroup2" && !root.dirs.is_empty() {
                root.dirs.push(Path::new(f[1]).join(&root.name));
            }
        }
        if root.dirs.is_empty() {
            bail!(
                "no cgroup v1 hierarchy is mounted (this harness's kubelet runs with cgroup v1, cgroupfs)"
            );
        }
        Ok(root)
    }

    /// The kubelet's `cgroupRoot`.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// Directories of this root that still exist (empty after a clean teardown).
    pub fn remaining(&self) -> Vec<PathBuf> {
        self.dirs.iter().filter(|d| d.exists()).cloned().collect()
    }

    /// Removes the tree (children first); processes must be gone. Retries briefly while the
    /// kernel finishes tearing down the last tasks.
    pub fn remove(&self) {
        let start = Instant::now();
        loop {
            for d in &self.dirs {
                remove_cgroup_tree(d);
            }
            if self.remaining().is_empty() || start.elapsed() > Duration::from_secs(10) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        self.remove();
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // cgroup directories are removed with rmdir even though they list control files.
    let _ = std::fs::remove_dir(dir);
}

/// Paths of one node's state under the cluster directory.
#[derive(Clone, Debug)]
pub struct NodePaths {
    pub dir: PathBuf,
    pub containerd_socket: PathBuf,
}

impl NodePaths {
    pub fn new(cluster_dir: &Path) -> NodePaths {
        let dir = cluster_dir.join("node");
        NodePaths {
            containerd_socket: dir.join("containerd/containerd.sock"),
            dir,
        }
    }
}

/// containerd's config: own root/state/socket under the node directory, CRI with our pause
/// image, runc with cgroupfs, our CNI plugins and config.
pub fn containerd_config(paths: &NodePaths, bins: &Path) -> String {
    let d = paths.dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bins}/cni"
    conf_dir = "{d}/cni/conf"
"#,
        sock = paths.containerd_socket.display(),
        bins = bins.display(),
    )
}

/// The CNI network: a bridge `cni0` in the sandbox, host-local addresses from [`POD_CIDR`],
/// portmap for hostPorts.
pub fn cni_config(paths: &NodePaths) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "skjold",
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": paths.dir.join("cni/ipam").display().to_string(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// The kubelet's configuration file.
pub fn kubelet_config(paths: &NodePaths, pki: &ClusterPki, cgroup_root: &str) -> String {
    let d = paths.dir.display();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
clusterDomain: cluster.local
clusterDNS: [{CLUSTER_DNS}]
resolvConf: {d}/resolv.conf
podLogsDir: {d}/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: \"1Mi\", nodefs.available: \"1Mi\", imagefs.available: \"1Mi\", nodefs.inodesFree: \"1\"}}
localStorageCapacityIsolation: false
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
",
        ca = pki.ca_cert.display(),
        sock = paths.containerd_socket.display(),
    )
}

/// One image written by `skjold-oci-image` and imported into containerd's `k8s.io` namespace.
#[derive(Debug)]
pub struct Image {
    pub name: String,
    pub args: Vec<String>,
}

impl Image {
    /// The sandbox image: our static `pause`.
    pub fn pause(bins: &Path) -> Image {
        Image {
            name: PAUSE_IMAGE.into(),
            args: vec![
                format!("--file={}:/pause:0755", bins.join("pause").display()),
                "--entrypoint=/pause".into(),
            ],
        }
    }

    /// CoreDNS (cluster DNS).
    pub fn coredns(bins: &Path) -> Image {
        Image {
            name: COREDNS_IMAGE.into(),
            args: vec![
                format!("--file={}:/coredns:0755", bins.join("coredns").display()),
                "--entrypoint=/coredns".into(),
            ],
        }
    }

    /// Debian's static busybox with `sh` linked to it.
    pub fn busybox() -> Result<Image> {
        let bb = busybox().ok_or_else(|| anyhow!("busybox-static is not installed"))?;
        Ok(Image {
            name: BUSYBOX_IMAGE.into(),
            args: vec![
                format!("--file={}:/bin/busybox:0755", bb.display()),
                "--symlink=/bin/sh:busybox".into(),
                "--entrypoint=/bin/busybox".into(),
                "--cmd=sh".into(),
            ],
        })
    }

    /// Writes the archive into `dir` and imports it through containerd's socket.
    pub fn import(&self, bins: &Path, dir: &Path, socket: &Path) -> Result<()> {
        let file = dir.join(format!("{}.tar", self.name.replace(['/', ':'], "_")));
        let out = Command::new(bins.join("skjold-oci-image"))
            .arg(format!("--out={}", file.display()))
            .arg(format!("--name={}", self.name))
            .args(&self.args)
            .output()
            .context("running skjold-oci-image")?;
        if !out.status.success() {
            bail!(
                "building image {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&file)
            .output()
            .context("running ctr images import")?;
        if !out.status.success() {
            bail!(
                "ctr images import {} ({}): {}",
                file.display(),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// The resolv.conf the kubelet gives pods with `dnsPolicy: ClusterFirst` before a cluster DNS
/// exists: the cluster DNS address and search path only (nothing of the machine's resolvers).
pub fn write_resolv_conf(paths: &NodePaths) -> Result<()> {
    write_file(
        &paths.dir.join("resolv.conf"),
        &format!(
            "nameserver {CLUSTER_DNS}\nsearch svc.cluster.local cluster.local\noptions ndots:5\n"
        ),
        false,
    )
}

/// Cluster DNS as kubeadm installs it, on CoreDNS: ServiceAccount, RBAC to read Services,
/// EndpointSlices, Pods and Namespaces, the Corefile, a Deployment and Service `kube-dns` at
/// [`CLUSTER_DNS`]. Names under `cluster.local` (and reverse lookups of pod and Service
/// addresses) are answered; there is no upstream to forward other names to.
pub fn coredns_manifests() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {COREDNS_IMAGE}
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 10}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {CLUSTER_DNS}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}

/// The API server's address inside the sandbox, as the node's components reach it.
pub fn apiserver_in_sandbox() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, APISERVER_PORT))
}

/// Waits for containerd's socket to answer `ctr version`.
pub fn wait_containerd(socket: &Path, sandbox: &Sandbox, log: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        let ok = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if !sandbox.is_alive() {
            bail!("the node sandbox ended while containerd started");
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "containerd did not answer on {} within 60 s: {}",
                socket.display(),
                crate::proc::log_tail(log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sandboxes and cgroup roots to end at process exit: a cluster in a `static` is never dropped,
/// and cgroup directories outlive their processes (the kernel ends the sandbox itself when the
/// harness dies, see [`crate::sandbox`], but only this hook removes the cgroups).
static AT_EXIT: std::sync::Mutex<Vec<(u32, u32, Vec<PathBuf>)>> = std::sync::Mutex::new(Vec::new());

pub fn register_exit_cleanup(sandbox: &Sandbox, cgroups: &CgroupRoot) {
    static HOOK: OnceLock<()> = OnceLock::new();
    extern "C" fn cleanup() {
        let entries = match AT_EXIT.try_lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return,
        };
        for (unshare, init, dirs) in entries {
            if let Ok(pid) = i32::try_from(unshare)
                && pid > 0
            {
                // SAFETY: SIGKILL to the sandbox's unshare, our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let start = Instant::now();
            while Path::new(&format!("/proc/{init}")).exists()
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let root = CgroupRoot {
                name: String::new(),
                dirs,
            };
            root.remove();
            std::mem::forget(root);
        }
    }
    AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()).push((
        sandbox.unshare_pid(),
        sandbox.init_pid(),
        cgroups.dirs.clone(),
    ));
    HOOK.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(cleanup);
        }
    });
}

/// Removes cgroup roots left by a harness that was killed (`skjold-<pid>-<n>` whose process is
/// gone and which hold no task).
fn remove_stale_roots(hierarchies: &[PathBuf]) {
    for h in hierarchies {
        let Ok(rd) = std::fs::read_dir(h) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("skjold-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
}
