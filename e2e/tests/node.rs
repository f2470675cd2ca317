//! A real node: containerd + runc + kubelet + kube-proxy + CNI bridge in the cluster's node
//! sandbox (issue 12, part 1). Pods are scheduled to the node, started by the kubelet through
//! containerd, probed over their own addresses, reached through a Service's ClusterIP, and
//! their logs and exec work through the API server; none of their addresses exist on the
//! machine's interfaces, and tearing the cluster down leaves no process, mount or cgroup.
//!
//! Needs root and Debian's containerd, runc, iptables, busybox-static (`make setup`).
//! Run: `cargo test -p skjold-e2e --test node -- --test-threads=1` (see docs/e2e.md).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use skjold_e2e::k8s::in_namespace;
use skjold_e2e::node::{BUSYBOX_IMAGE, CLUSTER_DNS, NODE_NAME};
use skjold_e2e::{Cluster, ClusterOptions};

/// A busybox pod serving `text` over HTTP on 8080, with an HTTP readiness probe the kubelet
/// runs against the pod's own address, and a Service for it.
fn web(ns: &str, text: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: IfNotPresent
    command: [/bin/busybox, sh, -c, "mkdir -p /www && echo '{text}' > /www/index.html && echo serving && exec busybox httpd -f -v -p 8080 -h /www"]
    ports: [{{containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /index.html, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: IfNotPresent
    command: [/bin/busybox, sleep, "3600"]
"#
    )
}

fn wait_ready(cluster: &Cluster, ns: &str, pods: &[&str]) -> Result<()> {
    for p in pods {
        cluster
            .kubectl_ok(
                &[
                    "wait",
                    "-n",
                    ns,
                    "--for=condition=Ready",
                    &format!("pod/{p}"),
                    "--timeout=90s",
                ],
                None,
            )
            .map_err(|e| {
                let describe = cluster
                    .kubectl(&["describe", "pod", "-n", ns, p])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                anyhow!(
                    "{e:#}\n--- kubectl describe pod {p} ---\n{describe}\n--- logs ---\n{}",
                    cluster.log_tails(15)
                )
            })?;
    }
    Ok(())
}

/// The machine's own addresses (`ip -o addr` outside the sandbox).
fn host_addresses() -> Result<String> {
    let out = Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .context("ip -o addr")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn pods_run_on_the_node_with_addresses_only_in_the_sandbox() -> Result<()> {
    let cluster = Cluster::shared_node()?;
    let sandbox = cluster
        .node_sandbox()
        .ok_or_else(|| anyhow!("no node sandbox"))?;
    in_namespace(cluster, "node", &[], |ns| async move {
        let started = Instant::now();
        cluster.apply_yaml(&web(&ns, "hello from the node"))?;
        wait_ready(cluster, &ns, &["web", "client"])?;
        println!("2 pods scheduled, started and Ready in {:.1}s", started.elapsed().as_secs_f64());

        let get = |what: &str, path: &str| -> Result<String> {
            Ok(cluster
                .kubectl_ok(&["get", what, "-n", &ns, "-o", &format!("jsonpath={path}")], None)?
                .trim()
                .to_string())
        };
        ensure!(get("pod/web", "{.spec.nodeName}")? == NODE_NAME, "web is not on {NODE_NAME}");
        let ip = get("pod/web", "{.status.podIP}")?;
        ensure!(ip.starts_with("10.244.0."), "pod IP {ip:?} is not from the node's pod range 10.244.0.0/24");
        let cluster_ip = get("service/web", "{.spec.clusterIP}")?;

        // The pod's address and the bridge live in the sandbox, not on the machine.
        let inside = sandbox.run_ok(&["ip", "-o", "addr"])?;
        ensure!(inside.contains("cni0") && inside.contains("10.244.0.1/24"), "no CNI bridge in the sandbox: {inside}");
        let host = host_addresses()?;
        for needle in [ip.as_str(), "10.244.", "10.96.", "cni0", "10.250.0.2"] {
            ensure!(!host.contains(needle), "{needle} appears on the machine's interfaces:\n{host}");
        }

        // Through the API server to the kubelet: logs and exec.
        let logs = cluster.kubectl_ok(&["logs", "-n", &ns, "web"], None)?;
        ensure!(logs.contains("serving"), "kubectl logs web: {logs:?}");
        // Pod -> Service ClusterIP (kube-proxy's nat rules in the sandbox) -> pod.
        // (busybox's nc, not its wget: Debian's static busybox wget crashes without glibc's
        // NSS modules, which the image does not carry.)
        let request = format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 5 {cluster_ip} 80");
        let response = cluster.kubectl_ok(&["exec", "-n", &ns, "client", "--", "sh", "-c", &request], None)?;
        ensure!(
            response.starts_with("HTTP/1.1 200") && response.trim_end().ends_with("hello from the node"),
            "GET http://{cluster_ip}/index.html from pod client: {response:?}"
        );
        // Cluster DNS: the Service's name resolves to its ClusterIP from a pod (CoreDNS behind
        // kube-dns at the kubelet's clusterDNS, the pod's resolv.conf search path).
        let lookup = cluster.kubectl_ok(
            &["exec", "-n", &ns, "client", "--", "busybox", "nslookup", &format!("web.{ns}.svc.cluster.local")],
            None,
        )?;
        ensure!(
            lookup.contains(&format!("Address: {cluster_ip}")),
            "nslookup web.{ns}.svc.cluster.local from pod client: {lookup:?}"
        );
        let resolv = cluster.kubectl_ok(&["exec", "-n", &ns, "client", "--", "busybox", "cat", "/etc/resolv.conf"], None)?;
        ensure!(
            resolv.contains(&format!("nameserver {CLUSTER_DNS}")) && resolv.contains(&format!("search {ns}.svc.cluster.local")),
            "the pod's resolv.conf: {resolv:?}"
        );
        let rules = sandbox.run_ok(&["iptables-save", "-t", "nat"])?;
        ensure!(
            rules.contains(&format!("{cluster_ip}/32")) && rules.contains("KUBE-SERVICES"),
            "kube-proxy's rules for {cluster_ip} are not in the sandbox's nat table"
        );
        let host_rules = Command::new("iptables-save").args(["-t", "nat"]).output()?;
        ensure!(
            !String::from_utf8_lossy(&host_rules.stdout).contains("KUBE-SERVICES"),
            "kube-proxy's rules leaked into the machine's nat table"
        );
        println!("pod {ip} on {NODE_NAME}: HTTP probe Ready, logs and exec through the API server, Service {cluster_ip} answers and its name resolves through cluster DNS; none of it on the machine's interfaces");
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
async fn teardown_leaves_no_process_mount_or_cgroup() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        node: true,
        ..ClusterOptions::default()
    })
    .await?;
    let dir = cluster.dir().to_path_buf();
    let init = cluster
        .node_sandbox()
        .map(|s| s.init_pid())
        .unwrap_or_default();
    let cgroups = cluster.node_cgroups().map(|c| c.path()).unwrap_or_default();
    in_namespace(&cluster, "teardown", &[], |ns| {
        let cluster = &cluster;
        async move {
            cluster.apply_yaml(&web(&ns, "bye"))?;
            wait_ready(cluster, &ns, &["web"])
        }
    })
    .await?;
    // A running pod means containerd's shims, runc's cgroups, an overlay rootfs and a pod
    // network namespace all exist now.
    let mounts_before = std::fs::read_to_string(format!("/proc/{init}/mountinfo"))?;
    let marker = dir.display().to_string();
    ensure!(
        mounts_before
            .lines()
            .any(|l| l.contains(&marker) && l.contains("overlay")),
        "expected the pod's overlay rootfs under {marker} in the sandbox's mounts"
    );
    ensure!(
        !std::fs::read_to_string("/proc/self/mountinfo")?.contains(&marker),
        "the node's mounts are visible in the machine's mount namespace"
    );
    let started = Instant::now();
    cluster.shutdown();
    let took = started.elapsed();

    ensure!(
        !std::path::Path::new(&format!("/proc/{init}")).exists(),
        "the sandbox's PID 1 ({init}) is still running"
    );
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&marker)
        {
            left.push(format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    ensure!(
        left.is_empty(),
        "processes of the torn-down node are still running:\n{}",
        left.join("\n")
    );
    ensure!(
        !std::fs::read_to_string("/proc/self/mountinfo")?.contains(&marker),
        "mounts under {marker} are left"
    );
    let remaining: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")?
        .flatten()
        .map(|h| h.path().join(cgroups.trim_start_matches('/')))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    ensure!(remaining.is_empty(), "cgroups left: {remaining:?}");
    if std::env::var_os("SKJOLD_E2E_KEEP").is_none() {
        ensure!(!dir.exists(), "state directory {} is left", dir.display());
    }
    println!(
        "teardown with a running pod: {:.1}s; no process, mount, cgroup or directory left",
        took.as_secs_f64()
    );
    Ok(())
}
