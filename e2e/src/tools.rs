//! Where the external binaries come from: the pinned, cached Kubernetes/etcd/helm build
//! (`e2e/scripts/build-tools.sh`) and our own workspace binaries built by cargo.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is e2e/ at compile time; its parent is the workspace.
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR"));
    e2e.parent()
        .map_or_else(|| e2e.to_path_buf(), Path::to_path_buf)
}

/// The directory with etcd, kube-apiserver, kube-controller-manager, kubectl and helm.
///
/// `$SKJOLD_BIN_DIR` wins; otherwise runs `e2e/scripts/build-tools.sh` (instant once cached;
/// builds from the pinned Go modules the first time, with progress on stderr).
pub fn tools_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| find_tools().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_tools() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SKJOLD_BIN_DIR") {
        let dir = PathBuf::from(dir);
        check_tools(&dir)?;
        return Ok(dir);
    }
    let script = workspace_root().join("e2e/scripts/build-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        // stderr carries the build progress: show it to whoever runs us.
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(printed.lines().last().unwrap_or("").trim());
    check_tools(&dir)?;
    Ok(dir)
}

fn check_tools(dir: &Path) -> Result<()> {
    for tool in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        let path = dir.join(tool);
        if !path.is_file() {
            bail!("tool {tool} missing: {} does not exist", path.display());
        }
    }
    Ok(())
}

/// The cargo output directory of the running binary (`target/<profile>`).
fn cargo_profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("executable {} has no parent dir", exe.display()))?
        .to_path_buf();
    // Test binaries live in target/<profile>/deps, bins in target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The workspace binary `name` (e.g. `skjold-webhook`) next to the running executable.
///
/// `$SKJOLD_<NAME>_BIN` (e.g. `SKJOLD_WEBHOOK_BIN`) overrides. When the file is missing it is built
/// with `cargo build -p <package> --bin <name>` into the same target dir; `make e2e` builds them up
/// front because a `cargo test` run may hold the target-dir lock.
pub fn workspace_bin(name: &str) -> PathBuf {
    match try_workspace_bin(name) {
        Ok(p) => p,
        Err(e) => {
            // Callers treat this as a path; a missing binary then fails at spawn time with
            // this message in the log, so report it here too.
            tracing::error!("{e:#}");
            cargo_profile_dir().unwrap_or_default().join(name)
        }
    }
}

/// Like [`workspace_bin`], but reports why the binary is unavailable.
pub fn try_workspace_bin(name: &str) -> Result<PathBuf> {
    let env_key = format!(
        "SKJOLD_{}_BIN",
        name.trim_start_matches("skjold-")
            .to_uppercase()
            .replace('-', "_")
    );
    if let Some(p) = std::env::var_os(&env_key) {
        return Ok(PathBuf::from(p));
    }
    let dir = cargo_profile_dir()?;
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    let package = match name {
        "skjold-webhook" => "skjold-webhook",
        "skjold-operator" => "skjold-operator",
        "skjoldctl" => "skjoldctl",
        "skjold-cluster" => "skjold-e2e",
        other => bail!("unknown workspace binary {other:?}"),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent (target dir)", dir.display()))?;
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", package, "--bin", name])
        .env("CARGO_TARGET_DIR", target_dir);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("skjold-e2e: building {name} (cargo build -p {package} --bin {name})");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() || !path.is_file() {
        bail!("cargo build -p {package} --bin {name} failed ({status})");
    }
    Ok(path)
}

/// Where Skjold keeps caches and the demo kubeconfig: `$SKJOLD_CACHE` or `~/.cache/skjold`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKJOLD_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("skjold");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/skjold")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_has_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn unknown_workspace_binary_is_an_error() {
        let err = try_workspace_bin("no-such-bin").unwrap_err().to_string();
        assert!(err.contains("no-such-bin"), "{err}");
    }
}
