//! The node's sandbox: new PID, mount and network namespaces that the harness creates for a
//! local cluster with a real node, the way kind uses a container per node.
//!
//! Everything of that cluster runs inside (etcd, kube-apiserver, kube-controller-manager,
//! containerd, kubelet, kube-proxy, the pods): pod and Service addresses, the CNI bridge and the
//! nat rules exist only in the sandbox's network namespace, never on the machine's interfaces.
//! The machine reaches the API server only through [`Forward`], a loopback port of the harness
//! process whose connections are dialled from inside the namespace.
//!
//! Teardown cannot leak: the sandbox's PID 1 is our `pause` under `unshare --kill-child`, and
//! `unshare` is a supervised child of the harness ([`Proc`], SIGKILL on harness death). When it
//! dies the kernel kills every process of the PID namespace (containerd's shims and the
//! containers included, which re-parent away from containerd), and with the last of them go the
//! mount namespace (overlay rootfs, Secret tmpfs, pod network namespace mounts) and the network
//! namespace. Only cgroups outlive processes; [`crate::node`] removes its cgroup tree.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::proc::Proc;

/// The node's own address inside the sandbox (on its loopback interface): the API server
/// advertises it, the kubelet reports it as the Node's InternalIP.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);

/// A set of namespaces with a PID 1 that holds them open; see the module docs.
#[derive(Debug)]
pub struct Sandbox {
    /// `unshare`, whose death ends the sandbox.
    unshare: std::sync::Mutex<Option<Proc>>,
    /// The sandbox's PID 1 as the machine sees it.
    init_pid: u32,
    /// Its network namespace, for dialling in from harness threads.
    netns: Arc<File>,
}

impl Sandbox {
    /// Creates the namespaces and brings up loopback with [`NODE_IP`]. `pause` is the binary to
    /// run as PID 1 (it reaps orphans and exits on SIGTERM).
    pub fn create(pause: &Path, log: &Path) -> Result<Sandbox> {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--propagation",
            "private",
            "--mount-proc",
            "--net",
            "--",
        ])
        .arg(pause);
        let unshare = Proc::spawn("node-sandbox", cmd, log)
            .context("starting the node sandbox (unshare --pid --mount --net; needs root)")?;
        let outer = unshare.pid();
        let start = Instant::now();
        // unshare forks the sandbox's PID 1: find it as unshare's child with a new netns.
        let init_pid = loop {
            if let Some(pid) = child_of(outer)
                && ns_differs(pid, "net")?
            {
                break pid;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "the node sandbox did not start within 10 s: {}",
                    crate::proc::log_tail(log, 10)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let netns = File::open(format!("/proc/{init_pid}/ns/net"))
            .with_context(|| format!("opening the sandbox's network namespace (pid {init_pid})"))?;
        let sandbox = Sandbox {
            unshare: std::sync::Mutex::new(Some(unshare)),
            init_pid,
            netns: Arc::new(netns),
        };
        sandbox.run_ok(&["ip", "link", "set", "lo", "up"])?;
        sandbox.run_ok(&["ip", "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])?;
        Ok(sandbox)
    }

    /// The `unshare` process holding the sandbox (0 once destroyed).
    pub fn unshare_pid(&self) -> u32 {
        self.unshare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, Proc::pid)
    }

    /// The sandbox's PID 1 as the machine sees it.
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    /// A command that runs `program` inside the sandbox (its PID, mount and network namespaces;
    /// the file system is the machine's, so paths are the same inside and out).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.init_pid.to_string())
            .args(["-p", "-m", "-n", "--"])
            .arg(program);
        cmd
    }

    /// Runs `args` inside the sandbox and returns its output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = args.split_first().ok_or_else(|| anyhow!("empty command"))?;
        self.command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} in the node sandbox", args.join(" ")))
    }

    /// Like [`Sandbox::run`], but fails (with stderr) unless the command succeeds; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "{} in the node sandbox failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A TCP connection to `addr` as seen from inside the sandbox.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        connect_in(&self.netns, addr, timeout)
    }

    /// Forwards a new loopback port of the machine to `to` inside the sandbox, until the
    /// returned [`Forward`] is dropped.
    pub fn forward(&self, to: SocketAddr) -> Result<Forward> {
        Forward::start(self.netns.clone(), to)
    }

    /// Ends the sandbox and everything in it (see the module docs) and waits until its PID 1
    /// is gone. Idempotent.
    pub fn destroy(&self) {
        let Some(mut unshare) = self
            .unshare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        unshare.kill();
        let start = Instant::now();
        while Path::new(&format!("/proc/{}", self.init_pid)).exists()
            && start.elapsed() < Duration::from_secs(10)
        {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the sandbox's PID 1 still exists.
    pub fn is_alive(&self) -> bool {
        Path::new(&format!("/proc/{}/ns/net", self.init_pid)).exists()
            && self
                .unshare
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The first process whose parent is `parent`.
fn child_of(parent: u32) -> Option<u32> {
    let rd = std::fs::read_dir("/proc").ok()?;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name (2nd field) may contain spaces; the fields after its ')' are fixed.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

fn ns_differs(pid: u32, ns: &str) -> Result<bool> {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"));
    let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .with_context(|| format!("reading /proc/self/ns/{ns}"))?;
    Ok(theirs.is_ok_and(|t| t != ours))
}

/// Connects from a short-lived thread that has entered `netns` (a network namespace is a
/// per-thread attribute; the socket keeps the namespace it was created in).
fn connect_in(netns: &Arc<File>, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let netns = netns.clone();
    thread::Builder::new()
        .name("skjold-netns-dial".into())
        .spawn(move || {
            // SAFETY: setns(2) on this thread only, with a namespace fd we hold open.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            TcpStream::connect_timeout(&addr, timeout)
        })?
        .join()
        .map_err(|_| io::Error::other("the netns dialling thread panicked"))?
}

/// A loopback port of the machine forwarded into the sandbox (see [`Sandbox::forward`]).
#[derive(Debug)]
pub struct Forward {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Forward {
    fn start(netns: Arc<File>, to: SocketAddr) -> Result<Forward> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the forwarded loopback port")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::Builder::new()
            .name(format!("skjold-forward-{port}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let netns = netns.clone();
                    let _ = thread::Builder::new()
                        .name("skjold-forward-conn".into())
                        .spawn(move || {
                            if let Ok(upstream) = connect_in(&netns, to, Duration::from_secs(5)) {
                                pump(client, upstream);
                            }
                        });
                }
            })
            .context("starting the forwarding thread")?;
        Ok(Forward { port, stop })
    }

    /// The machine's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Copies both ways until either side closes, then closes both.
fn pump(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let back = thread::spawn(move || {
        let (mut from, mut to) = (b2, a2);
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let (mut from, mut to) = (a, b);
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}
