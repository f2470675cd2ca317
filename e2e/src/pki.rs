//! The local cluster's certificates and kubeconfig, generated with `skjold-certs`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use skjold_certs::CertificateAuthority;

/// Long enough for a demo left running for weeks; the cluster is throw-away.
const VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Paths of the files written by [`ClusterPki::write`].
#[derive(Clone, Debug)]
pub struct ClusterPki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// Service-account token signing key (private, PKCS#8) and its public half.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

/// A client certificate and key written next to the CA.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClusterPki {
    /// Generates a CA, the API server's serving cert (127.0.0.1, localhost, kubernetes.default...),
    /// an admin client cert (CN=admin, O=system:masters) and a service-account key into `dir`.
    pub fn write(dir: &Path) -> Result<ClusterPki> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = CertificateAuthority::generate("skjold-local-cluster-ca", VALIDITY)
            .context("generating the cluster CA")?;
        let dns: Vec<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from)
        .to_vec();
        // 10.96.0.1 is the `kubernetes` Service IP of --service-cluster-ip-range.
        let ips = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
            // The node's address when the cluster runs in a node sandbox (crate::sandbox).
            IpAddr::V4(crate::sandbox::NODE_IP),
        ];
        let serving = ca
            .issue_serving(&dns, &ips, VALIDITY)
            .context("issuing the API server certificate")?;
        let admin = ca
            .issue_client("admin", &["system:masters".to_string()], VALIDITY)
            .context("issuing the admin client certificate")?;
        let (sa_private, sa_public) =
            skjold_certs::generate_signing_key().context("generating the service-account key")?;
        let pki = ClusterPki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        write_file(&pki.ca_cert, ca.cert_pem(), false)?;
        write_file(&pki.ca_key, ca.key_pem(), true)?;
        write_file(&pki.apiserver_cert, &serving.cert_pem, false)?;
        write_file(&pki.apiserver_key, &serving.key_pem, true)?;
        write_file(&pki.admin_cert, &admin.cert_pem, false)?;
        write_file(&pki.admin_key, &admin.key_pem, true)?;
        write_file(&pki.sa_key, &sa_private, true)?;
        write_file(&pki.sa_pub, &sa_public, false)?;
        Ok(pki)
    }

    /// Issues a client certificate (`CN=common_name`, `O=` each of `orgs`) from the cluster CA
    /// into `<name>.crt` / `<name>.key` next to it: the kubelet's `system:node:<node>` in
    /// `system:nodes`, kube-proxy's `system:kube-proxy`, the API server's kubelet client.
    pub fn issue_client(&self, name: &str, common_name: &str, orgs: &[&str]) -> Result<ClientCert> {
        let ca = CertificateAuthority::from_pem(
            &fs::read_to_string(&self.ca_cert).context("reading the cluster CA")?,
            &fs::read_to_string(&self.ca_key).context("reading the cluster CA key")?,
        )
        .context("loading the cluster CA")?;
        let orgs: Vec<String> = orgs.iter().map(|o| o.to_string()).collect();
        let issued = ca
            .issue_client(common_name, &orgs, VALIDITY)
            .with_context(|| format!("issuing the client certificate {common_name}"))?;
        let dir = self.ca_cert.parent().unwrap_or(Path::new("."));
        let out = ClientCert {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        write_file(&out.cert, &issued.cert_pem, false)?;
        write_file(&out.key, &issued.key_pem, true)?;
        Ok(out)
    }

    /// A kubeconfig for `server` authenticating with `client` (paths by absolute file name).
    pub fn kubeconfig_for(&self, server: &str, client: &ClientCert) -> String {
        self.kubeconfig(server, "user", &client.cert, &client.key)
    }

    /// An admin kubeconfig for `https://127.0.0.1:<port>` referring to the PEM files by absolute
    /// path (the cluster is local, so the files are always next to it).
    pub fn kubeconfig_yaml(&self, apiserver_port: u16) -> String {
        self.kubeconfig(
            &format!("https://127.0.0.1:{apiserver_port}"),
            "admin",
            &self.admin_cert,
            &self.admin_key,
        )
    }

    fn kubeconfig(&self, server: &str, user: &str, cert: &Path, key: &Path) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: skjold-local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: skjold-local
  context:
    cluster: skjold-local
    user: {user}
current-context: skjold-local
",
            ca = self.ca_cert.display(),
            cert = cert.display(),
            key = key.display(),
        )
    }
}

/// Writes `content`; private keys get mode 0600.
pub(crate) fn write_file(path: &Path, content: &str, private: bool) -> Result<()> {
    fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    if private {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_consistent_pki_and_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::write(dir.path()).unwrap();
        let ca = fs::read_to_string(&pki.ca_cert).unwrap();
        let serving = fs::read_to_string(&pki.apiserver_cert).unwrap();
        skjold_certs::verify_signed_by(&serving, &ca).unwrap();
        let info = skjold_certs::inspect(&serving).unwrap();
        assert!(info.ip_addresses.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(info.dns_names.iter().any(|d| d == "kubernetes.default.svc"));
        let admin = skjold_certs::inspect(&fs::read_to_string(&pki.admin_cert).unwrap()).unwrap();
        assert!(admin.subject.contains("admin"), "{}", admin.subject);
        let mode = fs::metadata(&pki.admin_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let yaml = pki.kubeconfig_yaml(6443);
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("skjold-local"));
        let server = parsed.clusters[0].cluster.as_ref().unwrap().server.clone();
        assert_eq!(server.as_deref(), Some("https://127.0.0.1:6443"));
    }
}
