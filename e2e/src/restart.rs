//! Fault injection for a started [`Cluster`]: kill its kube-apiserver and start it again on the
//! same port against the same etcd, so every client (operator, webhook, tests) reconnects to the
//! same URL with the same credentials, as after an API server crash or a control-plane upgrade.
//!
//! Use it only on a cluster of your own (`Cluster::start` with its own state directory): the
//! cluster's own handle to the killed process reports it as exited afterwards, so
//! [`Cluster::check_processes`] fails from then on.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::cluster::{Cluster, raw_get};
use crate::proc::Proc;
use crate::wait::{Poll, wait_for};

/// How long a restarted API server may take to become ready on a slow, shared machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A kube-apiserver that was killed by [`kill_apiserver`]: what it ran, to start it again.
#[derive(Debug)]
pub struct KilledApiServer {
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    killed_at: Instant,
}

/// A kube-apiserver started again by [`KilledApiServer::restart`]; killed when dropped.
#[derive(Debug)]
pub struct RestartedApiServer {
    pub proc: Proc,
    /// From the SIGKILL until `/readyz` answered `ok` again.
    pub downtime: Duration,
}

/// SIGKILLs the kube-apiserver of `cluster` (a crash: no graceful shutdown, open watches break)
/// and waits until its port refuses connections.
pub async fn kill_apiserver(cluster: &Cluster) -> Result<KilledApiServer> {
    let port = apiserver_port(cluster)?;
    let (pid, argv) = find_apiserver(port)?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("kube-apiserver pid {pid} has an empty command line"))?;
    let raw = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
    // SAFETY: signalling a child of this process found by its parent pid and command line.
    if unsafe { libc::kill(raw, libc::SIGKILL) } != 0 {
        bail!(
            "SIGKILL kube-apiserver pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    let killed_at = Instant::now();
    wait_for(
        &format!("killed kube-apiserver to free 127.0.0.1:{port}"),
        Duration::from_secs(20),
        || async move {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => Poll::Pending("still accepting connections".into()),
                Err(_) => Poll::Ready(()),
            }
        },
    )
    .await?;
    Ok(KilledApiServer {
        program: PathBuf::from(program),
        args: args.to_vec(),
        port,
        killed_at,
    })
}

impl KilledApiServer {
    /// Starts the API server again with the same command line (same port, certificates and etcd)
    /// and waits until `/readyz` is `ok`.
    pub async fn restart(self, cluster: &Cluster) -> Result<RestartedApiServer> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        let name = "kube-apiserver-restarted";
        let mut proc = Proc::spawn(name, cmd, &cluster.log_path(name))?;
        let client = cluster.client().await?;
        let ready = wait_for(
            &format!("restarted kube-apiserver /readyz on port {}", self.port),
            READY_TIMEOUT,
            || {
                let client = client.clone();
                let running = proc.check_running().map_err(|e| format!("{e:#}"));
                async move {
                    if let Err(e) = running {
                        return Poll::Pending(e);
                    }
                    match raw_get(&client, "/readyz").await {
                        Ok(body) if body.trim() == "ok" => Poll::Ready(()),
                        Ok(body) => Poll::Pending(body),
                        Err(e) => Poll::Pending(format!("{e:#}")),
                    }
                }
            },
        )
        .await;
        if let Err(e) = ready {
            bail!("{e:#}\nlog:\n{}", proc.log_tail(30));
        }
        Ok(RestartedApiServer {
            proc,
            downtime: self.killed_at.elapsed(),
        })
    }
}

fn apiserver_port(cluster: &Cluster) -> Result<u16> {
    let url = cluster
        .apiserver_url()
        .ok_or_else(|| anyhow!("an attached cluster's API server cannot be restarted"))?;
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no port in API server URL {url}"))
}

/// The pid and command line of this process's kube-apiserver child serving `port`. The cluster
/// keeps its process handles private, so the child is found through /proc by parent pid.
fn find_apiserver(port: u16) -> Result<(u32, Vec<String>)> {
    let me = std::process::id();
    let flag = format!("--secure-port={port}");
    let entries = std::fs::read_dir("/proc").context("listing /proc")?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let mut rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace())
            .into_iter()
            .flatten();
        let state = rest.next();
        let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) || state == Some("Z") {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_apiserver = argv.first().is_some_and(|p| p.ends_with("kube-apiserver"));
        if is_apiserver && argv.contains(&flag) {
            return Ok((pid, argv));
        }
    }
    bail!("no running kube-apiserver child of pid {me} with {flag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_apiserver_names_the_port() {
        let err = find_apiserver(1).unwrap_err().to_string();
        assert!(err.contains("--secure-port=1"), "{err}");
    }

    #[test]
    fn finds_a_child_by_its_secure_port_flag() {
        // A stand-in child named kube-apiserver: a shell under that name (the trailing `true`
        // keeps it from exec'ing into sleep), the flag as an ignored positional argument.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("kube-apiserver");
        std::os::unix::fs::symlink("/bin/sh", &fake).unwrap();
        let mut child = Command::new(&fake)
            .args(["-c", "sleep 30; true", "sh", "--secure-port=65001"])
            .spawn()
            .unwrap();
        // The child is found once it has exec'd (its /proc entry shows the new image): poll.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            match find_apiserver(65001) {
                Ok(f) => break Ok(f),
                Err(e) if std::time::Instant::now() > deadline => break Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let (pid, argv) = found.unwrap();
        assert_eq!(pid, child.id());
        assert_eq!(argv.last().map(String::as_str), Some("--secure-port=65001"));
    }
}
