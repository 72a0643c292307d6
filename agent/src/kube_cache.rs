//! The agent's view of Kubernetes: kube-rs reflectors over the Pods of this node (field
//! selector `spec.nodeName`, each object trimmed to what CNI reads before it is stored) and
//! over NetworkAttachmentDefinitions. ADD reads from them; a pod not seen yet (its watch event
//! may trail the kubelet's CNI call) is waited for briefly, then fetched with one GET.
//! network-status patches and Events go to the API server as the thin binary sends them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod as KubePod;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use plexus_cni::multus::cluster::{
    Cluster, ClusterError, Nad, NetworkStatus, Pod, SHARED_DIR_VOLUME, pod_from,
};
use plexus_cni::multus::kube::{KubeCluster, nad_resource};

/// How long ADD waits for a pod to reach the cache before asking the API server.
const POD_WAIT: Duration = Duration::from_millis(500);

/// The watch caches, and a client for what they cannot answer.
pub struct KubeCache {
    pods: Store<KubePod>,
    nads: Store<DynamicObject>,
    /// Set once the NAD cache holds a full list: from then on a NAD it lacks does not exist.
    nads_listed: Arc<AtomicBool>,
    /// Set once the pod cache holds a full list: from then on, for a DEL, a pod it lacks is gone.
    pods_listed: Arc<AtomicBool>,
    api: KubeCluster,
}

impl std::fmt::Debug for KubeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCache").field("pods", &self.pods.len()).field("nads", &self.nads.len()).finish()
    }
}

/// What CNI reads of a pod: its identity, annotations and its `shared-dir` volume with where
/// it is mounted. The rest (spec, status, managed fields) would cost the cache memory for
/// every pod of the node.
fn trim(pod: &mut KubePod) {
    if let Some(spec) = pod.spec.take() {
        let volumes: Vec<_> =
            spec.volumes.into_iter().flatten().filter(|v| v.name == SHARED_DIR_VOLUME).collect();
        let containers = spec
            .containers
            .into_iter()
            .map(|c| k8s_openapi::api::core::v1::Container {
                name: c.name,
                volume_mounts: c
                    .volume_mounts
                    .map(|m| m.into_iter().filter(|m| m.name == SHARED_DIR_VOLUME).collect()),
                ..Default::default()
            })
            .collect();
        let kept = k8s_openapi::api::core::v1::PodSpec {
            volumes: (!volumes.is_empty()).then_some(volumes),
            containers,
            ..Default::default()
        };
        pod.spec = Some(kept);
    }
    pod.status = None;
    pod.metadata.managed_fields = None;
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
}

/// A flag set once `store` holds a full list (logged as `what`).
fn listed<K>(runtime: &tokio::runtime::Handle, store: Store<K>, what: &'static str) -> Arc<AtomicBool>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    runtime.spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            set.store(true, Ordering::Release);
            tracing::info!("{what} listed: {}", store.len());
        }
    });
    flag
}

impl KubeCache {
    /// Starts the reflectors on the current runtime for the pods of node `node`.
    pub fn start(client: Client, node: &str) -> Arc<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (pods, pod_writer) = reflector::store::<KubePod>();
        let pod_api: Api<KubePod> = Api::all(client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let pod_stream = watcher(pod_api, config).modify(trim).reflect(pod_writer).applied_objects();
        runtime.spawn(pod_stream.for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!("watching pods: {e}");
            }
        }));

        let resource = nad_resource();
        let nad_writer = reflector::store::Writer::new(resource.clone());
        let nads = nad_writer.as_reader();
        let nad_api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let nad_stream = watcher(nad_api, watcher::Config::default()).reflect(nad_writer).applied_objects();
        runtime.spawn(nad_stream.for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!("watching NetworkAttachmentDefinitions: {e}");
            }
        }));
        let nads_listed = listed(&runtime, nads.clone(), "NetworkAttachmentDefinitions");
        let pods_listed = listed(&runtime, pods.clone(), "pods of the node");
        let api = KubeCluster::with_handle(runtime, client);
        Arc::new(Self { pods, nads, nads_listed, pods_listed, api })
    }

    fn cached_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let pod = self.pods.get(&ObjectRef::new(name).within(namespace))?;
        Some(Pod { namespace: namespace.to_owned(), name: name.to_owned(), ..pod_from(&pod) })
    }
}

impl Cluster for KubeCache {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError> {
        let deadline = std::time::Instant::now() + POD_WAIT;
        loop {
            if let Some(pod) = self.cached_pod(namespace, name) {
                return Ok(Some(pod));
            }
            if std::time::Instant::now() >= deadline {
                tracing::info!("pod {namespace}/{name} not in the watch cache yet: asking the API server");
                return self.api.pod(namespace, name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn existing_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError> {
        if let Some(pod) = self.cached_pod(namespace, name) {
            return Ok(Some(pod));
        }
        if self.pods_listed.load(Ordering::Acquire) {
            // The runtime's later DELs (at the sandbox's garbage collection) come after the pod
            // object is deleted: the synced cache's "no" is the answer, not a GET that 404s.
            tracing::debug!("pod {namespace}/{name} is gone");
            return Ok(None);
        }
        self.api.pod(namespace, name)
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        let key = ObjectRef::new_with(name, nad_resource()).within(namespace);
        match self.nads.get(&key) {
            Some(nad) => Ok(Some(Nad {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                config: nad.data["spec"]["config"].as_str().unwrap_or_default().to_owned(),
                annotations: nad.metadata.annotations.clone().unwrap_or_default(),
            })),
            // The cluster network is looked up as a NAD before a conf file on every ADD: once
            // listed, the cache's "no" is the answer, not a GET per call.
            None if self.nads_listed.load(Ordering::Acquire) => Ok(None),
            // Not listed yet: the API server knows.
            None => self.api.nad(namespace, name),
        }
    }

    fn set_network_status(&self, pod: &Pod, status: &[NetworkStatus]) -> Result<(), ClusterError> {
        self.api.set_network_status(pod, status)
    }

    fn set_annotations(
        &self,
        pod: &Pod,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        self.api.set_annotations(pod, annotations)
    }

    fn event(&self, pod: &Pod, reason: &str, message: &str, warning: bool) {
        self.api.event(pod, reason, message, warning)
    }
}
