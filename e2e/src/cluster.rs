//! A real control plane on loopback: etcd, kube-apiserver and kube-controller-manager as
//! supervised local processes, with generated certificates and an admin kubeconfig.
//!
//! There is no kubelet and no scheduler: Deployments get ReplicaSets and Pods (through the real
//! admission chain, webhooks included), and the Pods stay Pending. That is all the webhook needs.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::node::{self, CgroupRoot, NodePaths};
use crate::pki::{ClusterPki, write_file};
use crate::proc::{Proc, log_tail};
use crate::sandbox::{Forward, NODE_IP, Sandbox};
use crate::tools::tools_bin_dir;
use crate::wait::{Poll, free_port, wait_for};

/// How long each control-plane component may take to become ready on a slow, shared machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Keep state (certs, etcd data, logs) here instead of a fresh temporary directory; it is
    /// not removed on shutdown.
    pub state_dir: Option<PathBuf>,
    /// Keep the temporary state directory after shutdown (for debugging; also `SKJOLD_E2E_KEEP=1`).
    pub keep_state: bool,
    /// Run the whole cluster in a node sandbox with a real node (containerd, kubelet,
    /// kube-proxy; see [`crate::node`]) instead of on the machine's loopback without one.
    pub node: bool,
}

/// A running local cluster (or an attached existing one, see [`Cluster::shared`]).
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    temp: Mutex<Option<tempfile::TempDir>>,
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    pki: Option<ClusterPki>,
    apiserver_port: Option<u16>,
    /// Started in dependency order; stopped in reverse.
    procs: Mutex<Vec<Proc>>,
    log_seq: AtomicUsize,
    /// With a real node: the namespaces everything runs in, the machine's loopback port of the
    /// API server, and the pods' cgroup root.
    node: Option<NodeParts>,
}

#[derive(Debug)]
struct NodeParts {
    sandbox: Sandbox,
    forward: Mutex<Option<Forward>>,
    cgroups: CgroupRoot,
    paths: NodePaths,
}

impl Cluster {
    /// The cluster of this test process: attaches to `$SKJOLD_E2E_KUBECONFIG` when set, otherwise
    /// starts one (once per process). Its processes die with the process; its temporary state is
    /// removed at exit unless `SKJOLD_E2E_KEEP=1`.
    pub fn shared() -> Result<&'static Cluster> {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        let cluster = SHARED.get_or_init(|| {
            let started = match std::env::var_os("SKJOLD_E2E_KUBECONFIG") {
                Some(path) => Cluster::attach(PathBuf::from(path)),
                None => block_on_fresh_runtime(Cluster::start(ClusterOptions::default())),
            };
            started.map_err(|e| format!("{e:#}"))
        });
        match cluster {
            Ok(c) => {
                c.remove_state_at_exit();
                Ok(c)
            }
            Err(e) => Err(anyhow!("local cluster unavailable: {e}")),
        }
    }

    /// Uses an existing cluster through `kubeconfig`; nothing is started or stopped.
    pub fn attach(kubeconfig: PathBuf) -> Result<Cluster> {
        if !kubeconfig.is_file() {
            bail!("kubeconfig {} does not exist", kubeconfig.display());
        }
        let dir = tempfile::Builder::new()
            .prefix("skjold-e2e-attached-")
            .tempdir()
            .context("creating a log directory")?;
        std::fs::create_dir_all(dir.path().join("logs")).context("creating the logs directory")?;
        Ok(Cluster {
            dir: dir.path().to_path_buf(),
            temp: Mutex::new(Some(dir)),
            kubeconfig,
            bin_dir: tools_bin_dir()?,
            pki: None,
            apiserver_port: None,
            procs: Mutex::new(Vec::new()),
            log_seq: AtomicUsize::new(0),
            node: None,
        })
    }

    /// The cluster with a real node of this test process (see [`ClusterOptions::node`]),
    /// started once per process; it ends with the process.
    pub fn shared_node() -> Result<&'static Cluster> {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        let cluster = SHARED.get_or_init(|| {
            block_on_fresh_runtime(Cluster::start(ClusterOptions {
                node: true,
                ..ClusterOptions::default()
            }))
            .map_err(|e| format!("{e:#}"))
        });
        match cluster {
            Ok(c) => {
                c.remove_state_at_exit();
                Ok(c)
            }
            Err(e) => Err(anyhow!("local cluster with a node unavailable: {e}")),
        }
    }

    /// Starts etcd, kube-apiserver and kube-controller-manager on free loopback ports and waits
    /// until the API server is ready and the controller manager has created the `default`
    /// ServiceAccount. On error everything started so far is stopped again.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        let bin_dir = tools_bin_dir()?;
        let (dir, temp) = match &opts.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("skjold-cluster-")
                    .tempdir()
                    .context("creating the cluster state directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let keep = opts.keep_state || std::env::var_os("SKJOLD_E2E_KEEP").is_some();
        let temp = if keep {
            temp.map(tempfile::TempDir::keep);
            None
        } else {
            temp
        };
        std::fs::create_dir_all(dir.join("logs")).context("creating the logs directory")?;
        let pki = ClusterPki::write(&dir.join("pki"))?;
        let node = if opts.node {
            node::check_prerequisites()?;
            let bins = node::node_bin_dir()?;
            let sandbox =
                Sandbox::create(&bins.join("pause"), &dir.join("logs/00-node-sandbox.log"))?;
            let forward = sandbox.forward(node::apiserver_in_sandbox())?;
            let cgroups = CgroupRoot::create()?;
            node::register_exit_cleanup(&sandbox, &cgroups);
            Some(NodeParts {
                sandbox,
                forward: Mutex::new(Some(forward)),
                cgroups,
                paths: NodePaths::new(&dir),
            })
        } else {
            None
        };
        let apiserver_port = match &node {
            Some(n) => n
                .forward
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map_or(0, Forward::port),
            None => free_port(),
        };
        let kubeconfig = dir.join("kubeconfig");
        write_file(&kubeconfig, &pki.kubeconfig_yaml(apiserver_port), true)?;
        let cluster = Cluster {
            dir,
            temp: Mutex::new(temp),
            kubeconfig,
            bin_dir,
            pki: Some(pki),
            apiserver_port: Some(apiserver_port),
            procs: Mutex::new(Vec::new()),
            log_seq: AtomicUsize::new(1),
            node,
        };
        if let Err(e) = cluster.boot().await {
            let logs = cluster.log_tails(30);
            cluster.shutdown();
            return Err(e.context(format!("starting the local cluster failed; logs:\n{logs}")));
        }
        Ok(cluster)
    }

    async fn boot(&self) -> Result<()> {
        let pki = self
            .pki
            .as_ref()
            .ok_or_else(|| anyhow!("no PKI for a started cluster"))?;
        let port = self
            .apiserver_port
            .ok_or_else(|| anyhow!("no API server port"))?;
        let in_node = self.node.is_some();
        // Inside the sandbox the ports are the sandbox's own: fixed, nothing else uses them.
        let (etcd_client, etcd_peer) = if in_node {
            (2379, 2380)
        } else {
            (free_port(), free_port())
        };
        let mut etcd = self.command(self.bin_dir.join("etcd"));
        etcd.args([
            "--name=default",
            &format!("--data-dir={}", self.dir.join("etcd").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
            &format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            &format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            // Throw-away data: durability buys nothing and fsync dominates on slow disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]);
        self.spawn("etcd", etcd)?;
        self.wait_tcp("etcd", etcd_client).await?;

        let p = |path: &Path| path.display().to_string();
        let mut apiserver = self.command(self.bin_dir.join("kube-apiserver"));
        let (secure_port, bind, advertise) = if in_node {
            (
                node::APISERVER_PORT,
                "0.0.0.0".to_string(),
                NODE_IP.to_string(),
            )
        } else {
            (port, "127.0.0.1".into(), "127.0.0.1".into())
        };
        apiserver.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            format!("--secure-port={secure_port}"),
            format!("--bind-address={bind}"),
            format!("--advertise-address={advertise}"),
            format!("--cert-dir={}", self.dir.join("apiserver").display()),
            format!("--tls-cert-file={}", p(&pki.apiserver_cert)),
            format!("--tls-private-key-file={}", p(&pki.apiserver_key)),
            format!("--client-ca-file={}", p(&pki.ca_cert)),
            format!("--service-account-key-file={}", p(&pki.sa_pub)),
            format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-cluster-ip-range={}", node::SERVICE_CIDR),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ]);
        if in_node {
            let kubelet_client = pki.issue_client(
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                &["system:masters"],
            )?;
            apiserver.args([
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--kubelet-client-certificate={}", p(&kubelet_client.cert)),
                format!("--kubelet-client-key={}", p(&kubelet_client.key)),
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]);
        } else {
            apiserver.args([
                "--authorization-mode=RBAC",
                // A loopback address is not a valid Endpoints address; nothing routes to it anyway.
                "--endpoint-reconciler-type=none",
            ]);
        }
        self.spawn("kube-apiserver", apiserver)?;
        self.wait_apiserver_ready().await?;

        let mut kcm = self.command(self.bin_dir.join("kube-controller-manager"));
        let kcm_port = if in_node { 10257 } else { free_port() };
        // Inside the sandbox the API server is at its own loopback address, not the forward.
        let kcm_kubeconfig = if in_node {
            let path = self.dir.join("kubeconfig-in-node");
            write_file(&path, &pki.kubeconfig_yaml(node::APISERVER_PORT), true)?;
            path
        } else {
            self.kubeconfig.clone()
        };
        kcm.args([
            format!("--kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--authentication-kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--authorization-kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--service-account-private-key-file={}", p(&pki.sa_key)),
            format!("--root-ca-file={}", p(&pki.ca_cert)),
            "--use-service-account-credentials=false".into(),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}"),
            format!("--cert-dir={}", self.dir.join("kcm").display()),
            "--controllers=*".into(),
        ]);
        self.spawn("kube-controller-manager", kcm)?;
        let client = self.client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
        wait_for(
            "kube-controller-manager to create ServiceAccount default/default",
            READY_TIMEOUT,
            || {
                let sas = sas.clone();
                async move {
                    if let Err(e) = self.check_processes() {
                        return Poll::Pending(format!("{e:#}"));
                    }
                    match sas.get_opt("default").await {
                        Ok(Some(_)) => Poll::Ready(()),
                        Ok(None) => Poll::Pending("not created yet".into()),
                        Err(e) => Poll::Pending(e.to_string()),
                    }
                }
            },
        )
        .await?;
        if in_node {
            // With a node, pods are really scheduled (without one they stay Pending, which is
            // all the webhook tests need).
            let cert = pki.issue_client("kube-scheduler", "system:kube-scheduler", &[])?;
            let kubeconfig = self.dir.join("kube-scheduler.kubeconfig");
            let server = format!("https://127.0.0.1:{}", node::APISERVER_PORT);
            write_file(&kubeconfig, &pki.kubeconfig_for(&server, &cert), true)?;
            let mut scheduler = self.command(node::node_bin_dir()?.join("kube-scheduler"));
            scheduler.args([
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kubeconfig)),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
            ]);
            self.spawn("kube-scheduler", scheduler)?;
            self.boot_node(pki).await?;
        }
        tracing::info!(kubeconfig = %self.kubeconfig.display(), "local cluster ready");
        Ok(())
    }

    /// containerd, images, kubelet and kube-proxy in the sandbox; waits for the Node to be Ready,
    /// then for cluster DNS.
    async fn boot_node(&self, pki: &ClusterPki) -> Result<()> {
        let parts = self
            .node
            .as_ref()
            .ok_or_else(|| anyhow!("no node sandbox"))?;
        let paths = &parts.paths;
        let bins = node::node_bin_dir()?;
        for d in [
            "containerd",
            "cni/conf",
            "pod-logs",
            "kubelet/pki",
            "images",
        ] {
            std::fs::create_dir_all(paths.dir.join(d))
                .with_context(|| format!("creating {}", paths.dir.join(d).display()))?;
        }
        let config = paths.dir.join("containerd/config.toml");
        write_file(&config, &node::containerd_config(paths, &bins), false)?;
        write_file(
            &paths.dir.join("cni/conf/10-skjold.conflist"),
            &node::cni_config(paths),
            false,
        )?;
        node::write_resolv_conf(paths)?;
        // Processes of the sandbox itself (the API server calling a webhook Service, the
        // kubelet) dial Service addresses; kube-proxy's OUTPUT rules rewrite them to a pod, but
        // the kernel routes before those rules run, and the sandbox has no default route. This
        // route only makes the range routable inside the sandbox (nothing leaves it: it has no
        // interface to the machine).
        parts.sandbox.run_ok(&[
            "ip",
            "route",
            "add",
            node::SERVICE_CIDR,
            "dev",
            "lo",
            "src",
            &NODE_IP.to_string(),
        ])?;
        let mut containerd = self.command("containerd");
        containerd.arg("--config").arg(&config);
        let log = self.log_path("containerd");
        self.spawn_logged("containerd", containerd, &log)?;
        node::wait_containerd(&paths.containerd_socket, &parts.sandbox, &log)?;
        for image in [
            node::Image::pause(&bins),
            node::Image::busybox()?,
            node::Image::coredns(&bins),
        ] {
            image.import(&bins, &paths.dir.join("images"), &paths.containerd_socket)?;
        }

        let in_node = format!("https://127.0.0.1:{}", node::APISERVER_PORT);
        let kubelet_cert = pki.issue_client(
            "kubelet",
            &format!("system:node:{}", node::NODE_NAME),
            &["system:nodes"],
        )?;
        let kubelet_kubeconfig = paths.dir.join("kubelet/kubeconfig");
        write_file(
            &kubelet_kubeconfig,
            &pki.kubeconfig_for(&in_node, &kubelet_cert),
            true,
        )?;
        let kubelet_config = paths.dir.join("kubelet/config.yaml");
        write_file(
            &kubelet_config,
            &node::kubelet_config(paths, pki, &parts.cgroups.path()),
            false,
        )?;
        let mut kubelet = self.command(bins.join("kubelet"));
        kubelet.args([
            format!("--config={}", kubelet_config.display()),
            format!("--kubeconfig={}", kubelet_kubeconfig.display()),
            format!("--root-dir={}", paths.dir.join("kubelet").display()),
            format!("--cert-dir={}", paths.dir.join("kubelet/pki").display()),
            format!("--node-ip={NODE_IP}"),
            format!("--hostname-override={}", node::NODE_NAME),
            "--v=1".into(),
        ]);
        self.spawn("kubelet", kubelet)?;

        let proxy_cert = pki.issue_client("kube-proxy", "system:kube-proxy", &[])?;
        let proxy_kubeconfig = paths.dir.join("kube-proxy.kubeconfig");
        write_file(
            &proxy_kubeconfig,
            &pki.kubeconfig_for(&in_node, &proxy_cert),
            true,
        )?;
        let mut proxy = self.command(bins.join("kube-proxy"));
        proxy.args([
            format!("--kubeconfig={}", proxy_kubeconfig.display()),
            format!("--hostname-override={}", node::NODE_NAME),
            "--proxy-mode=iptables".into(),
            "--cluster-cidr=10.244.0.0/16".into(),
            // Leave the (machine-wide) conntrack sysctls alone.
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            "--v=1".into(),
        ]);
        self.spawn("kube-proxy", proxy)?;

        let client = self.client().await?;
        let nodes: Api<Node> = Api::all(client);
        wait_for(
            &format!("Node {} to be Ready", node::NODE_NAME),
            READY_TIMEOUT,
            || {
                let nodes = nodes.clone();
                async move {
                    if let Err(e) = self.check_processes() {
                        return Poll::Failed(format!("{e:#}"));
                    }
                    match nodes.get_opt(node::NODE_NAME).await {
                        Ok(Some(n)) => {
                            let ready = n
                                .status
                                .and_then(|s| s.conditions)
                                .unwrap_or_default()
                                .into_iter()
                                .find(|c| c.type_ == "Ready");
                            match ready {
                                Some(c) if c.status == "True" => Poll::Ready(()),
                                Some(c) => Poll::Pending(format!(
                                    "Ready={}: {}",
                                    c.status,
                                    c.message.unwrap_or_default()
                                )),
                                None => Poll::Pending("no Ready condition yet".into()),
                            }
                        }
                        Ok(None) => {
                            Poll::Pending("the kubelet has not registered the Node yet".into())
                        }
                        Err(e) => Poll::Pending(e.to_string()),
                    }
                }
            },
        )
        .await?;
        // Cluster DNS, as kubeadm adds it: pods resolve Service names (istiod's address in
        // the injected proxy config is one).
        self.apply_yaml(&node::coredns_manifests())?;
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Available",
                "--timeout=120s",
                "deployment/coredns",
                "-n",
                "kube-system",
            ],
            None,
        )
        .context("waiting for CoreDNS (cluster DNS) to be Available")?;
        Ok(())
    }

    /// A command for a control-plane or node process: inside the node sandbox when there is
    /// one, on the machine otherwise.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.node {
            Some(n) => n.sandbox.command(program),
            None => Command::new(program),
        }
    }

    fn spawn(&self, name: &str, cmd: Command) -> Result<()> {
        let log = self.log_path(name);
        self.spawn_logged(name, cmd, &log)
    }

    fn spawn_logged(&self, name: &str, cmd: Command, log: &Path) -> Result<()> {
        let mut proc = Proc::spawn(name, cmd, log)?;
        if self.node.is_some() {
            // nsenter forks the real process and does not pass signals on.
            proc = proc.signal_group();
        }
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(proc);
        Ok(())
    }

    /// A fresh log file path for a process called `name` in this cluster's log directory.
    pub fn log_path(&self, name: &str) -> PathBuf {
        let n = self.log_seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join("logs").join(format!("{n:02}-{name}.log"))
    }

    /// Errors (with the log tail) if a control-plane process has exited.
    pub fn check_processes(&self) -> Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        for p in procs.iter_mut() {
            p.check_running()?;
        }
        Ok(())
    }

    async fn wait_tcp(&self, what: &str, port: u16) -> Result<()> {
        wait_for(
            &format!("{what} to listen on 127.0.0.1:{port}"),
            READY_TIMEOUT,
            || async move {
                if let Err(e) = self.check_processes() {
                    return Poll::Pending(format!("{e:#}"));
                }
                match &self.node {
                    Some(n) => n
                        .sandbox
                        .connect(
                            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
                            Duration::from_secs(1),
                        )
                        .map(drop)
                        .into(),
                    None => tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .map(drop)
                        .into(),
                }
            },
        )
        .await
    }

    async fn wait_apiserver_ready(&self) -> Result<()> {
        let client = self.client().await?;
        wait_for("kube-apiserver /readyz", READY_TIMEOUT, || {
            let client = client.clone();
            async move {
                if let Err(e) = self.check_processes() {
                    return Poll::Pending(format!("{e:#}"));
                }
                match raw_get(&client, "/readyz").await {
                    Ok(body) if body.trim() == "ok" => Poll::Ready(()),
                    Ok(body) => Poll::Pending(body),
                    Err(e) => Poll::Pending(format!("{e:#}")),
                }
            }
        })
        .await
    }

    /// A new admin client bound to the caller's tokio runtime.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", self.kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("loading the kubeconfig")?;
        Client::try_from(config).context("building the Kubernetes client")
    }

    /// The node sandbox, when this cluster runs with a real node.
    pub fn node_sandbox(&self) -> Option<&Sandbox> {
        self.node.as_ref().map(|n| &n.sandbox)
    }

    /// The node's pod cgroup root, when this cluster runs with a real node.
    pub fn node_cgroups(&self) -> Option<&CgroupRoot> {
        self.node.as_ref().map(|n| &n.cgroups)
    }

    /// The node's state paths (containerd socket, ...), when this cluster runs with a real node.
    pub fn node_paths(&self) -> Option<&NodePaths> {
        self.node.as_ref().map(|n| &n.paths)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// etcd, kube-apiserver, kube-controller-manager, kubectl and helm live here.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The state directory (pki/, logs/, etcd/, kubeconfig).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PEM of the cluster CA, when this harness started the cluster.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.pki.as_ref().map(|p| p.ca_cert.as_path())
    }

    /// The API server's loopback port, when this harness started the cluster.
    pub fn apiserver_port(&self) -> Option<u16> {
        self.apiserver_port
    }

    /// `https://127.0.0.1:<port>` of a started cluster.
    pub fn apiserver_url(&self) -> Option<String> {
        self.apiserver_port
            .map(|p| format!("https://127.0.0.1:{p}"))
    }

    /// Runs `kubectl --kubeconfig <ours> <args>` and returns its output whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_with_stdin(args, None)
    }

    /// A `kubectl --kubeconfig <ours>` command to add arguments and environment to (e.g.
    /// `KUBE_EDITOR` for a scripted `kubectl edit`).
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Like [`Cluster::kubectl`], feeding `stdin` (e.g. `apply -f -`).
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut cmd = self.kubectl_command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("running kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .context("writing kubectl stdin")?;
        }
        child.wait_with_output().context("waiting for kubectl")
    }

    /// kubectl that must succeed: returns stdout, or an error with the command and its stderr.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        stdout_of_success("kubectl", args, self.kubectl_with_stdin(args, stdin)?)
    }

    /// Runs `helm <args>` against this cluster (its own Helm state under the cluster directory)
    /// and returns stdout, or an error with the command and its stderr.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let state = self.dir.join("helm-home");
        let out = Command::new(self.bin_dir.join("helm"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", state.join("cache"))
            .env("HELM_CONFIG_HOME", state.join("config"))
            .env("HELM_DATA_HOME", state.join("data"))
            .output()
            .with_context(|| format!("running helm {}", args.join(" ")))?;
        stdout_of_success("helm", args, out)
    }

    /// `istioctl` built from the pinned Istio module, against this cluster; its output whatever
    /// the exit status.
    pub fn istioctl(&self, args: &[&str]) -> Result<Output> {
        Command::new(crate::istio::istio_bin("istioctl")?)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .with_context(|| format!("running istioctl {}", args.join(" ")))
    }

    /// `kubectl apply -f -` of a YAML document (stream).
    pub fn apply_yaml(&self, yaml: &str) -> Result<String> {
        self.kubectl_ok(&["apply", "-f", "-"], Some(yaml))
    }

    /// The tails of every log in this cluster's log directory (control plane and anything
    /// started through [`Cluster::log_path`]), newest last.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("logs"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| format!("==> {} <==\n{}\n", f.display(), log_tail(f, lines)))
            .collect()
    }

    /// Stops the control plane (reverse start order, SIGTERM then SIGKILL) and removes the
    /// temporary state. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        let mut procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(n) = &self.node {
            // Ending the sandbox ends every process in it at once (pods and shims too).
            n.sandbox.destroy();
            drop(n.forward.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
        while let Some(mut p) = procs.pop() {
            p.stop(Duration::from_secs(10));
        }
        if let Some(n) = &self.node {
            n.cgroups.remove();
        }
        drop(self.temp.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// A static cluster is never dropped: remove its temporary state from an `atexit` hook.
    fn remove_state_at_exit(&'static self) {
        static REGISTERED: OnceLock<()> = OnceLock::new();
        static DIR: OnceLock<PathBuf> = OnceLock::new();
        extern "C" fn remove_dir() {
            if let Some(dir) = DIR.get() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        REGISTERED.get_or_init(|| {
            let temp = self.temp.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = temp.as_ref() {
                let _ = DIR.set(t.path().to_path_buf());
                // SAFETY: registering a plain extern "C" fn.
                unsafe {
                    libc::atexit(remove_dir);
                }
            }
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The stdout of a finished `tool args` run, or an error with the command and its stderr.
fn stdout_of_success(tool: &str, args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GET a raw API server path (e.g. `/readyz`, `/metrics`) with the admin client.
pub async fn raw_get(client: &Client, path: &str) -> Result<String> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .with_context(|| format!("building GET {path}"))?;
    client
        .request_text(req)
        .await
        .with_context(|| format!("GET {path}"))
}

/// Runs `fut` to completion on a new thread with its own runtime, so synchronous callers (also
/// those already inside another runtime) can wait for async setup.
pub fn block_on_fresh_runtime<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("building a tokio runtime: {e}"))
            .block_on(fut)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
