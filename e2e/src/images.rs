//! The images a real install needs on the node, built from this machine's binaries (no Docker,
//! no registry) under exactly the names the Helm chart and the operator render, so the kubelet
//! finds every image already present and `imagePullPolicy: IfNotPresent` never pulls.
//!
//! Which binary stands for which image is decided by the image's repository name (the last path
//! component), never by the full reference, so a `--set image.registry=...` or a bumped tag needs
//! no change here:
//!
//! | repository | contents | entrypoint |
//! |---|---|---|
//! | `skjold-operator`, `skjold-webhook` | the workspace's binary | `/usr/local/bin/<name>` |
//! | `kubectl` (the chart's pre-delete hook) | the pinned kubectl | `/bin/kubectl` |
//! | `pilot` (istiod) | Istio's `pilot-discovery`, Envoy's bootstrap template | `/usr/local/bin/pilot-discovery` |
//! | `proxyv2` (sidecar, `istio-init`) | Istio's `pilot-agent`, Envoy's bootstrap template, Debian's iptables (legacy and nft, with their libraries and extensions) | `/usr/local/bin/pilot-agent` |
//!
//! Dynamically linked binaries carry the shared libraries `ldd` names for them, at the same
//! paths. Istio's `proxyv2` also carries Envoy; Envoy cannot be had on this machine, so the
//! image has none and `pilot-agent` stops where it would start it (see docs/e2e.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

use crate::Cluster;
use crate::node::{Image, node_bin_dir};
use crate::tools::{tools_bin_dir, workspace_bin};

/// Where Istio's images keep Envoy's bootstrap template (pilot-agent reads it before it starts
/// Envoy).
const ENVOY_BOOTSTRAP: &str = "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json";
/// Debian's iptables extensions (`-m owner`, `-j REDIRECT`, ...), loaded at run time.
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// Every distinct `image:` a `helm template` output renders (Deployments, the hook Job).
pub fn rendered_images(manifests: &str) -> Vec<String> {
    let images: BTreeSet<String> = manifests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
        .filter(|v| !v.is_empty())
        .collect();
    images.into_iter().collect()
}

/// The repository's last path component: `ghcr.io/skjold-mesh/skjold-webhook:0.1.0` ->
/// `skjold-webhook`; a digest or tag is dropped.
pub fn repository_name(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

/// The image for `reference`, from the binary that stands for its repository (module docs).
pub fn image_for(reference: &str) -> Result<Image> {
    let tools = tools_bin_dir()?;
    let mut b = ImageBuilder::new(reference);
    match repository_name(reference) {
        name @ ("skjold-operator" | "skjold-webhook") => {
            let bin = workspace_bin(name);
            if !bin.is_file() {
                bail!(
                    "image {reference}: {} is missing (run `make build`)",
                    bin.display()
                );
            }
            b.binary(&bin, &format!("/usr/local/bin/{name}"))?;
            b.entrypoint(&format!("/usr/local/bin/{name}"));
            b.user("65532:65532");
        }
        "kubectl" => {
            b.binary(&tools.join("kubectl"), "/bin/kubectl")?;
            b.entrypoint("/bin/kubectl");
        }
        "pilot" => {
            b.binary(
                &tools.join("pilot-discovery"),
                "/usr/local/bin/pilot-discovery",
            )?;
            b.file(&istio_bootstrap(&tools)?, ENVOY_BOOTSTRAP, 0o644);
            b.entrypoint("/usr/local/bin/pilot-discovery");
            b.user("1337:1337");
        }
        "proxyv2" => {
            b.binary(&tools.join("pilot-agent"), "/usr/local/bin/pilot-agent")?;
            b.file(&istio_bootstrap(&tools)?, ENVOY_BOOTSTRAP, 0o644);
            b.iptables()?;
            b.entrypoint("/usr/local/bin/pilot-agent");
            b.user("1337:1337");
        }
        other => bail!(
            "no local binary stands for image {reference} (repository {other:?}); known: skjold-operator, skjold-webhook, kubectl, pilot, proxyv2"
        ),
    }
    Ok(b.build())
}

fn istio_bootstrap(tools: &Path) -> Result<PathBuf> {
    let p = tools.join("envoy_bootstrap.json");
    if !p.is_file() {
        bail!(
            "{} is missing: e2e/scripts/build-tools.sh copies it from the istio.io/istio module",
            p.display()
        );
    }
    Ok(p)
}

/// The shared libraries `ldd` lists for `bin` (none for a static binary), interpreter included.
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("running ldd {}", bin.display()))?;
    // ldd exits 1 for a static binary ("not a dynamic executable").
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("ldd {}: {line}", bin.display());
        }
    }
    Ok(libs)
}

/// Collects the `skjold-oci-image` arguments of one image.
struct ImageBuilder {
    name: String,
    files: BTreeSet<(String, String, u32)>,
    links: BTreeSet<(String, String)>,
    tail: Vec<String>,
}

impl ImageBuilder {
    fn new(name: &str) -> ImageBuilder {
        ImageBuilder {
            name: name.into(),
            files: BTreeSet::new(),
            links: BTreeSet::new(),
            tail: Vec::new(),
        }
    }

    fn file(&mut self, host: &Path, at: &str, mode: u32) {
        self.files
            .insert((host.display().to_string(), at.to_string(), mode));
    }

    /// `bin` at `at`, with the shared libraries it needs at their own paths.
    fn binary(&mut self, bin: &Path, at: &str) -> Result<()> {
        if !bin.is_file() {
            bail!("image {}: {} is missing", self.name, bin.display());
        }
        self.file(bin, at, 0o755);
        self.libraries_of(bin)
    }

    fn libraries_of(&mut self, bin: &Path) -> Result<()> {
        for lib in shared_libraries(bin)? {
            // The file itself (ldd names the link, e.g. libc.so.6), under the name ldd printed.
            let real = std::fs::canonicalize(&lib)
                .with_context(|| format!("resolving {}", lib.display()))?;
            self.file(&real, &lib.display().to_string(), 0o755);
        }
        Ok(())
    }

    /// Debian's iptables, legacy and nft, under the names pilot-agent's `istio-iptables` looks
    /// for, with their extensions.
    fn iptables(&mut self) -> Result<()> {
        let sbin = Path::new("/usr/sbin");
        for multi in ["xtables-legacy-multi", "xtables-nft-multi"] {
            self.binary(&sbin.join(multi), &format!("/usr/sbin/{multi}"))?;
        }
        for family in ["iptables", "ip6tables"] {
            for suffix in ["", "-save", "-restore"] {
                for (variant, multi) in [
                    ("-legacy", "xtables-legacy-multi"),
                    ("-nft", "xtables-nft-multi"),
                ] {
                    self.links
                        .insert((format!("/usr/sbin/{family}{variant}{suffix}"), multi.into()));
                }
                // The plain name is what Debian's alternatives default to: nft.
                self.links.insert((
                    format!("/usr/sbin/{family}{suffix}"),
                    "xtables-nft-multi".into(),
                ));
            }
        }
        let dir = std::fs::read_dir(XTABLES_DIR).with_context(|| {
            format!("reading {XTABLES_DIR} (Debian package iptables; `make setup`)")
        })?;
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "so") {
                let real = std::fs::canonicalize(&p)?;
                self.file(&real, &p.display().to_string(), 0o644);
                self.libraries_of(&real)?;
            }
        }
        Ok(())
    }

    fn entrypoint(&mut self, path: &str) {
        self.tail.push(format!("--entrypoint={path}"));
    }

    fn user(&mut self, user: &str) {
        self.tail.push(format!("--user={user}"));
    }

    fn build(self) -> Image {
        let mut args: Vec<String> = self
            .files
            .iter()
            .map(|(host, at, mode)| format!("--file={host}:{at}:{mode:o}"))
            .collect();
        args.extend(
            self.links
                .iter()
                .map(|(at, target)| format!("--symlink={at}:{target}")),
        );
        args.extend(self.tail);
        Image {
            name: self.name,
            args,
        }
    }
}

/// The images of a chart install (its `helm template` output), plus the Istio images the
/// operator deploys by default (istiod's `pilot`, the sidecar's `proxyv2`).
pub fn install_images(chart_manifests: &str) -> Result<Vec<Image>> {
    let mut refs = rendered_images(chart_manifests);
    refs.push(skjold_inject::istio::default_pilot_image());
    refs.push(skjold_inject::istio::default_proxy_image());
    refs.sort();
    refs.dedup();
    refs.iter()
        .map(|r| image_for(r).map_err(|e| anyhow!("{e:#}")))
        .collect()
}

/// Builds the images `helm template <args>` renders plus Istio's, imports them into the node's
/// containerd and returns their names (for a cluster with a node).
pub fn import_for_chart(cluster: &Cluster, template_args: &[&str]) -> Result<Vec<String>> {
    let paths = cluster
        .node_paths()
        .ok_or_else(|| anyhow!("the cluster has no node to import images into"))?;
    let mut args = vec!["template"];
    args.extend(template_args);
    let rendered = cluster.helm(&args)?;
    let bins = node_bin_dir()?;
    let images = install_images(&rendered)?;
    for image in &images {
        image.import(&bins, &paths.dir.join("images"), &paths.containerd_socket)?;
    }
    Ok(images.into_iter().map(|i| i.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        assert_eq!(
            repository_name("ghcr.io/skjold-mesh/skjold-webhook:0.1.0"),
            "skjold-webhook"
        );
        assert_eq!(
            repository_name("registry.k8s.io/kubectl:v1.34.4"),
            "kubectl"
        );
        assert_eq!(
            repository_name("docker.io/istio/proxyv2@sha256:ab"),
            "proxyv2"
        );
        assert_eq!(repository_name("localhost:5000/pilot"), "pilot");
    }

    #[test]
    fn rendered_images_are_distinct_and_unquoted() {
        let m =
            "  image: \"a/b:1\"\n    image: a/b:1\nimage: c:2\n  imagePullPolicy: IfNotPresent\n";
        assert_eq!(rendered_images(m), vec!["a/b:1".to_string(), "c:2".into()]);
    }

    #[test]
    fn a_dynamic_binary_lists_its_libraries_and_the_interpreter() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
    }
}
