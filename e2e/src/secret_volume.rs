//! A Secret volume without a kubelet: mirrors a Secret into a directory the way the kubelet's
//! atomic writer does, so the webhook's real certificate reload path is exercised.
//!
//! Layout (like `/var/run/secrets/...` in a pod):
//! ```text
//! ..2026_11_21_23_45_06.123456789/tls.crt   the payload, one timestamped dir per version
//! ..data -> ..2026_11_21_23_45_06.123456789  swapped atomically (symlink + rename)
//! tls.crt -> ..data/tls.crt                   stable per-key links, created once
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use tokio::sync::oneshot;

use crate::runtime::background;

const DATA_LINK: &str = "..data";
const POLL: Duration = Duration::from_millis(200);

/// A directory kept in step with one Secret until dropped.
#[derive(Debug)]
pub struct SecretVolume {
    dir: PathBuf,
    updates: Arc<AtomicUsize>,
    task: tokio::task::AbortHandle,
}

impl SecretVolume {
    /// Waits (up to `timeout`) for Secret `namespace/name`, writes it into `dir`, then keeps
    /// mirroring changes every 200 ms on the harness's background runtime.
    pub async fn start(
        kubeconfig: &Path,
        namespace: &str,
        name: &str,
        dir: &Path,
        timeout: Duration,
    ) -> Result<SecretVolume> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let updates = Arc::new(AtomicUsize::new(0));
        let (kubeconfig, namespace, name, target) = (
            kubeconfig.to_path_buf(),
            namespace.to_string(),
            name.to_string(),
            dir.to_path_buf(),
        );
        let counter = updates.clone();
        let task = background().spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let client = match client_for(&kubeconfig).await {
                Ok(c) => c,
                Err(e) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                    return;
                }
            };
            let api: Api<Secret> = Api::namespaced(client, &namespace);
            let mut current: Option<BTreeMap<String, Vec<u8>>> = None;
            loop {
                match api.get_opt(&name).await {
                    Ok(Some(secret)) => {
                        let data: BTreeMap<String, Vec<u8>> = secret
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect();
                        if current.as_ref() != Some(&data) {
                            match write_atomic(&target, &data) {
                                Ok(()) => {
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    tracing::info!(secret = %name, dir = %target.display(), "secret volume updated");
                                    current = Some(data);
                                    if let Some(tx) = ready_tx.take() {
                                        let _ = tx.send(Ok(()));
                                    }
                                }
                                Err(e) => tracing::error!(dir = %target.display(), "secret volume write failed: {e}"),
                            }
                        }
                    }
                    // Like the kubelet: a missing Secret leaves the last written files in place.
                    Ok(None) => {}
                    Err(e) => tracing::debug!("reading secret {namespace}/{name}: {e}"),
                }
                tokio::time::sleep(POLL).await;
            }
        });
        let volume = SecretVolume {
            dir: dir.to_path_buf(),
            updates,
            task: task.abort_handle(),
        };
        match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(volume),
            Ok(Ok(Err(e))) => Err(anyhow!("secret volume for {}: {e}", dir.display())),
            Ok(Err(_)) => Err(anyhow!("secret volume task for {} ended", dir.display())),
            Err(_) => Err(anyhow!(
                "timed out after {}s waiting for the Secret to exist (volume {})",
                timeout.as_secs(),
                dir.display()
            )),
        }
    }

    /// The mounted directory (`tls.crt`, `tls.key`, `ca.crt` links live here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many versions have been written (1 after start; +1 per observed Secret change).
    pub fn updates(&self) -> usize {
        self.updates.load(Ordering::SeqCst)
    }

    /// The current content of `key` as seen through the volume.
    pub fn read(&self, key: &str) -> Result<String> {
        let path = self.dir.join(key);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(Client::try_from(config)?)
}

/// Publishes `files` as the new content of `dir` in one atomic step, like the kubelet.
pub fn write_atomic(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for key in files.keys() {
        if key.is_empty() || key.contains('/') || key.starts_with("..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("secret key {key:?} is not a valid file name"),
            ));
        }
    }
    let data_link = dir.join(DATA_LINK);
    let old_target = fs::read_link(&data_link).ok();

    let ts_dir = tempfile::Builder::new()
        .prefix(&format!("..{}.", timestamp(SystemTime::now())))
        .rand_bytes(9)
        .tempdir_in(dir)?
        .keep();
    for (key, value) in files {
        fs::write(ts_dir.join(key), value)?;
    }
    let ts_name = ts_dir
        .file_name()
        .ok_or_else(|| io::Error::other("timestamped dir has no name"))?;

    // Swap ..data atomically: a new symlink under a temporary name, renamed over the old one.
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    symlink(ts_name, &tmp_link)?;
    fs::rename(&tmp_link, &data_link)?;

    for key in files.keys() {
        let link = dir.join(key);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(key), &link)?;
        }
    }
    // Keys that disappeared from the Secret lose their link, as with the kubelet.
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !files.contains_key(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old_target
        && old.as_os_str() != ts_name
    {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// `2006_01_02_15_04_05` in UTC, the kubelet's directory name format.
fn timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn swaps_data_link_and_keeps_stable_key_links() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), &files(&[("tls.crt", "one"), ("tls.key", "k1")])).unwrap();
        let first = fs::read_link(dir.path().join("..data")).unwrap();
        assert!(first.to_string_lossy().starts_with(".."));
        assert_eq!(
            fs::read_link(dir.path().join("tls.crt")).unwrap(),
            Path::new("..data/tls.crt")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("tls.crt")).unwrap(),
            "one"
        );

        write_atomic(dir.path(), &files(&[("tls.crt", "two"), ("ca.crt", "ca")])).unwrap();
        let second = fs::read_link(dir.path().join("..data")).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            fs::read_to_string(dir.path().join("tls.crt")).unwrap(),
            "two"
        );
        assert_eq!(fs::read_to_string(dir.path().join("ca.crt")).unwrap(), "ca");
        assert!(!dir.path().join(&first).exists(), "old version removed");
        assert!(
            fs::symlink_metadata(dir.path().join("tls.key")).is_err(),
            "dropped key unlinked"
        );
    }

    #[test]
    fn rejects_path_like_keys() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(dir.path(), &files(&[("../evil", "x")])).unwrap_err();
        assert!(err.to_string().contains("../evil"), "{err}");
    }

    #[test]
    fn timestamp_matches_kubelet_layout() {
        // 2026-11-21T23:45:06Z
        let t = UNIX_EPOCH + Duration::from_secs(1_795_304_706);
        assert_eq!(timestamp(t), "2026_11_21_23_45_06");
        assert_eq!(timestamp(UNIX_EPOCH), "1970_01_01_00_00_00");
    }
}
