//! Local real Kubernetes control plane on loopback and Skjold running against it, for the
//! end-to-end tests and `skjold-cluster up|demo`.
//!
//! - [`Cluster`]: etcd + kube-apiserver + kube-controller-manager from the pinned, cached build
//!   (`e2e/scripts/build-tools.sh`), with generated certificates and an admin kubeconfig.
//! - [`Mesh`]: `skjold-operator` and `skjold-webhook` as local processes in URL mode, the
//!   webhook reading its certificate from an emulated Secret volume ([`SecretVolume`]).
//! - [`Proc`]: supervised children that never outlive the harness.

pub mod cluster;
pub mod https;
pub mod images;
pub mod istio;
pub mod k8s;
pub mod kubelet;
pub mod load;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod proc;
pub mod restart;
pub mod runtime;
pub mod sandbox;
pub mod secret_volume;
pub mod tools;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions, block_on_fresh_runtime, raw_get};
pub use mesh::{CERT_SECRET, CONTROL_PLANE_NS, DEFAULT_MESHCONFIG, Mesh, WEBHOOK_CONFIG};
pub use proc::Proc;
pub use restart::{KilledApiServer, RestartedApiServer, kill_apiserver};
pub use secret_volume::SecretVolume;
pub use tools::{tools_bin_dir, try_workspace_bin, workspace_bin, workspace_root};
pub use wait::{Poll, free_port, wait_for};
