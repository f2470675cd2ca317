//! Watch-backed caches of namespaces and injector configs, so no admission waits on an API call.
//!
//! Two kube-runtime watchers feed in-memory maps: namespace metadata (labels and annotations) and
//! the injector ConfigMaps (label `skjold.io/injector-config=true` in `--config-namespace`), keyed
//! by revision. Lookups are a read lock and an `Arc` clone. Without a cluster (offline mode) only the
//! `--config` file (or Istio's defaults) is known and namespaces are known by name only.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;

use crate::config::PreparedConfig;
use crate::inject::{NamespaceInfo, NodeSupport, kubelet_supports_native_sidecars};
use crate::istio::{
    DEFAULT_REVISION, INJECTOR_CONFIG_KEY, INJECTOR_CONFIG_MAP_LABEL, injector_config_map_name,
    injector_config_map_revision, normalize_revision,
};
use crate::metrics::Metrics;

/// No injector config is known for the revision a request asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no injector config for revision {revision:?} (ConfigMap {namespace}/{config_map})")]
pub struct UnknownRevision {
    pub revision: String,
    pub namespace: String,
    pub config_map: String,
}

/// Why an injector ConfigMap was ignored (the last good config of its revision stays in use).
#[derive(Debug, thiserror::Error)]
pub enum ConfigMapError {
    #[error("injector ConfigMap {namespace}/{name} has no key {INJECTOR_CONFIG_KEY:?}")]
    MissingKey { namespace: String, name: String },
    #[error(
        "injector ConfigMap {namespace}/{name} key {INJECTOR_CONFIG_KEY:?} is invalid: {source}"
    )]
    Invalid {
        namespace: String,
        name: String,
        #[source]
        source: crate::config::ConfigError,
    },
}

/// One injector ConfigMap's last good config.
#[derive(Clone, Debug)]
struct ConfigEntry {
    revision: String,
    config: Arc<PreparedConfig>,
}

#[derive(Default)]
struct ConfigState {
    /// ConfigMap name -> its last good config.
    by_config_map: BTreeMap<String, ConfigEntry>,
    /// Revision -> config, derived from `by_config_map` (first ConfigMap name wins on conflicts).
    by_revision: HashMap<String, Arc<PreparedConfig>>,
    /// Buffer of a re-list in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<String, ConfigEntry>>,
}

#[derive(Default)]
struct NamespaceState {
    by_name: HashMap<String, Arc<NamespaceInfo>>,
    relist: Option<HashMap<String, Arc<NamespaceInfo>>>,
}

/// The namespaces and injector configs the webhook decides with.
pub struct Cache {
    config_namespace: String,
    /// Configs from `--config` (or built-in defaults) that apply when no ConfigMap provides one.
    static_configs: HashMap<String, Arc<PreparedConfig>>,
    configs: RwLock<ConfigState>,
    namespaces: RwLock<NamespaceState>,
    /// Whether the namespace and ConfigMap stores must be synced before ready.
    kubernetes: bool,
    namespaces_synced: AtomicBool,
    configs_synced: AtomicBool,
    /// Node name -> whether its kubelet runs native sidecars (Istio's `auto` rule).
    nodes: RwLock<NodeState>,
    /// Where ConfigMap loads and refusals are counted (none in tests that do not look).
    metrics: Option<Arc<Metrics>>,
}

#[derive(Default)]
struct NodeState {
    by_name: HashMap<String, bool>,
    relist: Option<HashMap<String, bool>>,
    synced: bool,
    /// Derived from the above on every event, so an admission reads it without walking the nodes.
    support: NodeSupport,
}

impl NodeState {
    fn derive(&mut self) {
        self.support = if !self.synced || self.by_name.is_empty() {
            NodeSupport::Unknown
        } else if self.by_name.values().all(|native| *native) {
            NodeSupport::NativeSidecars
        } else {
            NodeSupport::Classic
        };
    }
}

impl Cache {
    /// A cache with only the static config; `kubernetes` says whether watchers will feed it.
    ///
    /// `file_config` (from `--config`) is the `default` revision's config; when it names another
    /// revision it also serves that one.
    pub fn new(
        file_config: Option<PreparedConfig>,
        config_namespace: &str,
        kubernetes: bool,
    ) -> Self {
        let file_config = Arc::new(file_config.unwrap_or_default());
        let mut static_configs = HashMap::new();
        static_configs.insert(file_config.revision_name().to_string(), file_config.clone());
        static_configs.insert(DEFAULT_REVISION.to_string(), file_config);
        Cache {
            config_namespace: config_namespace.to_string(),
            static_configs,
            configs: RwLock::new(ConfigState::default()),
            namespaces: RwLock::new(NamespaceState::default()),
            kubernetes,
            namespaces_synced: AtomicBool::new(false),
            configs_synced: AtomicBool::new(false),
            nodes: RwLock::new(NodeState::default()),
            metrics: None,
        }
    }

    /// Counts ConfigMap loads and refusals in `metrics` (`skjold_webhook_config_loads_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// What the nodes support, for the `auto` native-sidecar rule: unknown until the Node watch
    /// has listed (or when it is refused), then native only when every kubelet is >= 1.33.
    pub fn node_support(&self) -> NodeSupport {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .support
    }

    /// Applies one Node watch event (only the kubelet version is kept).
    pub fn apply_node_event(&self, event: Event<Node>) {
        let native = |n: &Node| {
            n.status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .is_some_and(|i| kubelet_supports_native_sidecars(&i.kubelet_version))
        };
        let mut state = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Init => state.relist = Some(HashMap::new()),
            Event::InitApply(n) => {
                if let Some(name) = n.metadata.name.clone() {
                    let v = native(&n);
                    state
                        .relist
                        .get_or_insert_with(HashMap::new)
                        .insert(name, v);
                }
            }
            Event::InitDone => {
                if let Some(fresh) = state.relist.take() {
                    state.by_name = fresh;
                }
                state.synced = true;
            }
            Event::Apply(n) => {
                if let Some(name) = n.metadata.name.clone() {
                    let v = native(&n);
                    state.by_name.insert(name, v);
                }
            }
            Event::Delete(n) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    state.by_name.remove(name);
                }
            }
        }
        state.derive();
    }

    /// Ready when, with Kubernetes, both stores have completed their first list.
    pub fn is_ready(&self) -> bool {
        !self.kubernetes
            || (self.namespaces_synced.load(Ordering::Acquire)
                && self.configs_synced.load(Ordering::Acquire))
    }

    /// The injector config of `revision` (`""` means `default`).
    pub fn config(&self, revision: &str) -> Result<Arc<PreparedConfig>, UnknownRevision> {
        let revision = normalize_revision(revision);
        let from_config_map = self
            .configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_revision
            .get(revision)
            .cloned();
        from_config_map
            .or_else(|| self.static_configs.get(revision).cloned())
            .ok_or_else(|| UnknownRevision {
                revision: revision.to_string(),
                namespace: self.config_namespace.clone(),
                config_map: injector_config_map_name(revision),
            })
    }

    /// The namespace as last seen; unknown namespaces (offline, or not yet seen) are name-only.
    pub fn namespace(&self, name: &str) -> Arc<NamespaceInfo> {
        if let Some(ns) = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_name
            .get(name)
        {
            return ns.clone();
        }
        if self.kubernetes {
            tracing::debug!(
                namespace = name,
                "namespace not in cache; deciding on pod metadata alone"
            );
        }
        Arc::new(NamespaceInfo {
            name: name.to_string(),
            ..NamespaceInfo::default()
        })
    }

    /// Applies one namespace watch event.
    pub fn apply_namespace_event(&self, event: Event<PartialObjectMeta<Namespace>>) {
        let mut state = self
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Init => state.relist = Some(HashMap::new()),
            Event::InitApply(ns) => {
                if let Some(info) = namespace_info(&ns) {
                    state
                        .relist
                        .get_or_insert_with(HashMap::new)
                        .insert(info.name.clone(), Arc::new(info));
                }
            }
            Event::InitDone => {
                if let Some(fresh) = state.relist.take() {
                    state.by_name = fresh;
                }
                self.namespaces_synced.store(true, Ordering::Release);
            }
            Event::Apply(ns) => {
                if let Some(info) = namespace_info(&ns) {
                    state.by_name.insert(info.name.clone(), Arc::new(info));
                }
            }
            Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    state.by_name.remove(name);
                }
            }
        }
    }

    /// Applies one injector ConfigMap watch event; a bad ConfigMap keeps its revision's last good config.
    pub fn apply_config_map_event(&self, event: Event<ConfigMap>) {
        let mut state = self.configs.write().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        match event {
            Event::Init => state.relist = Some(BTreeMap::new()),
            Event::InitApply(cm) => {
                let previous = state.by_config_map.clone();
                let buffer = state.relist.get_or_insert_with(BTreeMap::new);
                self.upsert(buffer, &previous, &cm);
            }
            Event::InitDone => {
                if let Some(fresh) = state.relist.take() {
                    state.by_config_map = fresh;
                    state.by_revision = derive_by_revision(&state.by_config_map);
                }
                self.configs_synced.store(true, Ordering::Release);
            }
            Event::Apply(cm) => {
                let previous = state.by_config_map.clone();
                self.upsert(&mut state.by_config_map, &previous, &cm);
                state.by_revision = derive_by_revision(&state.by_config_map);
            }
            Event::Delete(cm) => {
                if let Some(name) = cm.metadata.name.as_deref()
                    && state.by_config_map.remove(name).is_some()
                {
                    tracing::info!(config_map = name, "injector ConfigMap deleted");
                    state.by_revision = derive_by_revision(&state.by_config_map);
                }
            }
        }
    }

    /// Parses `cm` into `target`; on error logs it and carries over the last good entry.
    fn upsert(
        &self,
        target: &mut BTreeMap<String, ConfigEntry>,
        previous: &BTreeMap<String, ConfigEntry>,
        cm: &ConfigMap,
    ) {
        let Some(name) = cm.metadata.name.clone() else {
            return;
        };
        match self.parse_config_map(cm, &name) {
            Ok(entry) => {
                tracing::info!(
                    config_map = %name,
                    revision = %entry.revision,
                    hash = %entry.config.hash(),
                    "injector config loaded"
                );
                if let Some(m) = &self.metrics {
                    m.record_config_load(true);
                }
                target.insert(name, entry);
            }
            Err(err) => {
                tracing::error!(error = %err, "ignoring injector ConfigMap; keeping the last good config");
                if let Some(m) = &self.metrics {
                    m.record_config_load(false);
                }
                if let Some(old) = previous.get(&name) {
                    target.insert(name, old.clone());
                }
            }
        }
    }

    fn parse_config_map(&self, cm: &ConfigMap, name: &str) -> Result<ConfigEntry, ConfigMapError> {
        let namespace = cm
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| self.config_namespace.clone());
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(INJECTOR_CONFIG_KEY))
            .ok_or_else(|| ConfigMapError::MissingKey {
                namespace: namespace.clone(),
                name: name.to_string(),
            })?;
        let config = PreparedConfig::from_yaml(text).map_err(|source| ConfigMapError::Invalid {
            namespace,
            name: name.to_string(),
            source,
        })?;
        let revision = injector_config_map_revision(&config.revision, cm.metadata.labels.as_ref());
        Ok(ConfigEntry {
            revision,
            config: Arc::new(config),
        })
    }

    /// Starts the namespace, ConfigMap and Node watchers; they retry with backoff until aborted.
    pub fn spawn_watchers(self: &Arc<Self>, client: Client) -> Vec<JoinHandle<()>> {
        let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &self.config_namespace);
        let cm_config =
            watcher::Config::default().labels(&format!("{INJECTOR_CONFIG_MAP_LABEL}=true"));

        let cache = self.clone();
        let ns_task = tokio::spawn(async move {
            let mut stream = watcher::watcher(namespaces, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => cache.apply_namespace_event(event),
                    Err(err) => tracing::warn!(error = %err, "namespace watch failed; retrying"),
                }
            }
        });
        let cache = self.clone();
        let cm_task = tokio::spawn(async move {
            let mut stream = watcher::watcher(config_maps, cm_config)
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => cache.apply_config_map_event(event),
                    Err(err) => {
                        tracing::warn!(error = %err, "injector ConfigMap watch failed; retrying")
                    }
                }
            }
        });
        // Nodes only feed the `auto` native-sidecar rule: never a readiness condition, and a
        // refused watch (no RBAC for nodes) leaves injection classic, as Istio does without a
        // Node client.
        let nodes: Api<Node> = Api::all(client);
        let cache = self.clone();
        let node_task = tokio::spawn(async move {
            let mut stream = watcher::watcher(nodes, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => cache.apply_node_event(event),
                    Err(err) => {
                        tracing::warn!(error = %err, "node watch failed; native sidecars stay off until it lists; retrying")
                    }
                }
            }
        });
        vec![ns_task, cm_task, node_task]
    }
}

fn namespace_info(ns: &PartialObjectMeta<Namespace>) -> Option<NamespaceInfo> {
    let name = ns.metadata.name.clone()?;
    Some(NamespaceInfo {
        name,
        labels: ns.metadata.labels.clone().unwrap_or_default(),
        annotations: ns.metadata.annotations.clone().unwrap_or_default(),
    })
}

fn derive_by_revision(
    by_config_map: &BTreeMap<String, ConfigEntry>,
) -> HashMap<String, Arc<PreparedConfig>> {
    let mut out: HashMap<String, Arc<PreparedConfig>> = HashMap::new();
    for (name, entry) in by_config_map {
        if out.contains_key(&entry.revision) {
            tracing::warn!(
                config_map = %name,
                revision = %entry.revision,
                "another injector ConfigMap already provides this revision; ignoring this one"
            );
            continue;
        }
        out.insert(entry.revision.clone(), entry.config.clone());
    }
    out
}

/// The verdict's view of the cluster is this cache.
impl skjold_inject::verdict::Lookup for Cache {
    type ConfigError = UnknownRevision;
    fn config(&self, revision: &str) -> Result<Arc<PreparedConfig>, UnknownRevision> {
        Cache::config(self, revision)
    }
    fn namespace(&self, name: &str) -> Arc<NamespaceInfo> {
        Cache::namespace(self, name)
    }
    fn nodes(&self) -> NodeSupport {
        self.node_support()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn node(name: &str, kubelet: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"nodeInfo": {"kubeletVersion": kubelet, "architecture": "", "bootID": "",
                "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""}}
        }))
        .unwrap()
    }

    #[test]
    fn node_support_needs_every_kubelet_at_1_33() {
        let cache = Cache::new(None, "istio-system", true);
        assert_eq!(
            cache.node_support(),
            NodeSupport::Unknown,
            "before the first list"
        );
        cache.apply_node_event(Event::Init);
        cache.apply_node_event(Event::InitApply(node("a", "v1.34.4")));
        cache.apply_node_event(Event::InitApply(node("b", "v1.33.1")));
        cache.apply_node_event(Event::InitDone);
        assert_eq!(cache.node_support(), NodeSupport::NativeSidecars);
        // An older node joins: classic for everyone, as Istio decides.
        cache.apply_node_event(Event::Apply(node("old", "v1.31.0")));
        assert_eq!(cache.node_support(), NodeSupport::Classic);
        cache.apply_node_event(Event::Delete(node("old", "v1.31.0")));
        assert_eq!(cache.node_support(), NodeSupport::NativeSidecars);
        // A node whose version cannot be read (the e2e stand-in reports none) counts as old.
        cache.apply_node_event(Event::Apply(node("standin", "")));
        assert_eq!(cache.node_support(), NodeSupport::Classic);
        // Nodes never gate readiness: only namespaces and configs do.
        assert!(!cache.is_ready());
    }

    fn cm(name: &str, rev_label: Option<&str>, config: Option<&str>) -> ConfigMap {
        let mut labels =
            BTreeMap::from([(INJECTOR_CONFIG_MAP_LABEL.to_string(), "true".to_string())]);
        if let Some(rev) = rev_label {
            labels.insert(crate::istio::REVISION_LABEL.to_string(), rev.to_string());
        }
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            data: config
                .map(|c| BTreeMap::from([(INJECTOR_CONFIG_KEY.to_string(), c.to_string())])),
            ..ConfigMap::default()
        }
    }

    fn ns(name: &str, label: (&str, &str)) -> PartialObjectMeta<Namespace> {
        let mut meta = PartialObjectMeta::<Namespace>::default();
        meta.metadata.name = Some(name.into());
        meta.metadata.labels = Some(BTreeMap::from([(label.0.to_string(), label.1.to_string())]));
        meta
    }

    #[test]
    fn offline_serves_defaults_and_names_missing_revisions() {
        let cache = Cache::new(None, "istio-system", false);
        assert!(cache.is_ready());
        assert_eq!(*cache.config("").unwrap(), PreparedConfig::default());
        let err = cache.config("canary").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"no injector config for revision "canary" (ConfigMap istio-system/skjold-injector-canary)"#
        );
        assert_eq!(cache.namespace("shop").name, "shop");
        assert!(cache.namespace("shop").labels.is_empty());
    }

    #[test]
    fn file_config_with_a_revision_serves_default_and_that_revision() {
        let file = PreparedConfig::from_yaml("revision: blue\nproxy: {image: my/proxy:1}").unwrap();
        let cache = Cache::new(Some(file), "istio-system", false);
        assert_eq!(cache.config("default").unwrap().proxy.image, "my/proxy:1");
        assert_eq!(cache.config("blue").unwrap().proxy.image, "my/proxy:1");
    }

    #[test]
    fn config_maps_key_by_revision_and_keep_last_good() {
        let metrics = Arc::new(Metrics::new());
        let cache = Cache::new(None, "istio-system", true).with_metrics(metrics.clone());
        assert!(!cache.is_ready());
        cache.apply_config_map_event(Event::Init);
        cache.apply_config_map_event(Event::InitApply(cm(
            "skjold-injector-canary",
            Some("canary"),
            Some("proxy: {image: canary/proxy:1}"),
        )));
        cache.apply_config_map_event(Event::InitApply(cm(
            "skjold-injector",
            None,
            Some("revision: default\nproxy: {image: stable/proxy:1}"),
        )));
        cache.apply_config_map_event(Event::InitDone);
        assert_eq!(
            cache.config("canary").unwrap().proxy.image,
            "canary/proxy:1"
        );
        assert_eq!(cache.config("").unwrap().proxy.image, "stable/proxy:1");

        // A bad update keeps the last good config of that revision.
        cache.apply_config_map_event(Event::Apply(cm(
            "skjold-injector-canary",
            Some("canary"),
            Some("policy: sometimes"),
        )));
        assert_eq!(
            cache.config("canary").unwrap().proxy.image,
            "canary/proxy:1"
        );
        // A default that does not parse is refused when the config is prepared, not per pod.
        cache.apply_config_map_event(Event::Apply(cm(
            "skjold-injector-canary",
            Some("canary"),
            Some("proxy: {image: canary/proxy:2, resources: {requests: {cpu: lots}}}"),
        )));
        assert_eq!(
            cache.config("canary").unwrap().proxy.image,
            "canary/proxy:1"
        );
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("skjold_webhook_config_loads_total{result=\"refused\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("skjold_webhook_config_loads_total{result=\"loaded\"} 2"),
            "{text}"
        );
        cache.apply_config_map_event(Event::Apply(cm(
            "skjold-injector-canary",
            Some("canary"),
            None,
        )));
        assert_eq!(
            cache.config("canary").unwrap().proxy.image,
            "canary/proxy:1"
        );

        // A good update applies to the next lookup.
        cache.apply_config_map_event(Event::Apply(cm(
            "skjold-injector-canary",
            Some("canary"),
            Some("proxy: {image: canary/proxy:2}"),
        )));
        assert_eq!(
            cache.config("canary").unwrap().proxy.image,
            "canary/proxy:2"
        );

        // Deleting falls back: canary is unknown again, default returns to the static config.
        cache.apply_config_map_event(Event::Delete(cm(
            "skjold-injector-canary",
            Some("canary"),
            None,
        )));
        cache.apply_config_map_event(Event::Delete(cm("skjold-injector", None, None)));
        assert!(cache.config("canary").is_err());
        assert_eq!(*cache.config("default").unwrap(), PreparedConfig::default());
    }

    #[test]
    fn relist_replaces_namespaces_and_marks_ready() {
        let cache = Cache::new(None, "istio-system", true);
        cache.apply_namespace_event(Event::Apply(ns("gone", ("a", "b"))));
        cache.apply_namespace_event(Event::Init);
        cache.apply_namespace_event(Event::InitApply(ns("shop", ("istio-injection", "enabled"))));
        // Until InitDone the old view is served.
        assert_eq!(
            cache.namespace("gone").labels.get("a").map(String::as_str),
            Some("b")
        );
        cache.apply_namespace_event(Event::InitDone);
        assert!(cache.namespace("gone").labels.is_empty());
        assert_eq!(
            cache
                .namespace("shop")
                .labels
                .get("istio-injection")
                .map(String::as_str),
            Some("enabled")
        );
        assert!(!cache.is_ready(), "ConfigMaps not synced yet");
        cache.apply_config_map_event(Event::Init);
        cache.apply_config_map_event(Event::InitDone);
        assert!(cache.is_ready());
        cache.apply_namespace_event(Event::Delete(ns("shop", ("x", "y"))));
        assert!(cache.namespace("shop").labels.is_empty());
    }
}
