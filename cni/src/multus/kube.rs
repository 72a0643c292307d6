//! Thin mode: the `plexus` binary reads pods and NADs and writes network-status itself, with
//! kube-rs, as Multus thin does. The agent later answers the same questions from its cache.
//!
//! The [`Cluster`] trait is synchronous (a CNI call is a short-lived process, or a blocking
//! task of the agent), so the client runs on a runtime of its own.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod as KubePod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use super::cluster::{Cluster, ClusterError, NETWORK_STATUS_ANNOTATION, Nad, NetworkStatus, Pod, pod_from};
use super::config::MetaConfig;

/// The NetworkAttachmentDefinition resource (`k8s.cni.cncf.io/v1`).
pub fn nad_resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".into(),
        version: "v1".into(),
        api_version: "k8s.cni.cncf.io/v1".into(),
        kind: "NetworkAttachmentDefinition".into(),
        plural: "network-attachment-definitions".into(),
    }
}

fn api_error(what: String, e: impl std::error::Error + Send + Sync + 'static) -> ClusterError {
    ClusterError::api(what, e)
}

/// Where the client's futures run: a runtime of its own (the binary), or the agent's, from
/// one of its blocking threads.
enum Exec {
    Own(tokio::runtime::Runtime),
    Shared(tokio::runtime::Handle),
}

impl Exec {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Self::Own(runtime) => runtime.block_on(future),
            Self::Shared(handle) => handle.block_on(future),
        }
    }
}

/// Kubernetes through kube-rs.
pub struct KubeCluster {
    runtime: Exec,
    client: Client,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// Kubernetes for `config`: its `kubeconfig`, else the in-cluster service account when
    /// the process runs in a pod, else `None` (static networks only, as Multus without one).
    pub fn from_config(config: &MetaConfig) -> Result<Option<Self>, ClusterError> {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if config.kubeconfig.is_none() && !in_cluster {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Setup { what: "starting a runtime".into(), error: Box::new(e) })?;
        let client = runtime.block_on(async {
            let kube_config = match &config.kubeconfig {
                Some(path) => from_kubeconfig(path).await?,
                None => {
                    Config::incluster().map_err(|e| api_error("in-cluster Kubernetes config".into(), e))?
                }
            };
            Client::try_from(kube_config).map_err(|e| api_error("making the Kubernetes client".into(), e))
        })?;
        Ok(Some(Self { runtime: Exec::Own(runtime), client }))
    }

    /// Kubernetes through `client`, made within `runtime` (tests give a client over a test
    /// double of the API server).
    pub fn with_client(runtime: tokio::runtime::Runtime, client: Client) -> Self {
        Self { runtime: Exec::Own(runtime), client }
    }

    /// Kubernetes through `client`, whose futures run on `handle`'s runtime; calls must come
    /// from threads that are not that runtime's workers (its blocking threads).
    pub fn with_handle(handle: tokio::runtime::Handle, client: Client) -> Self {
        Self { runtime: Exec::Shared(handle), client }
    }
}

async fn from_kubeconfig(path: &Path) -> Result<Config, ClusterError> {
    let what = || format!("kubeconfig {}", path.display());
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| api_error(what(), e))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| api_error(what(), e))
}

impl Cluster for KubeCluster {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError> {
        let api: Api<KubePod> = Api::namespaced(self.client.clone(), namespace);
        let pod = self
            .runtime
            .block_on(api.get_opt(name))
            .map_err(|e| api_error(format!("getting pod {namespace}/{name}"), e))?;
        Ok(pod.map(|pod| Pod { namespace: namespace.to_owned(), name: name.to_owned(), ..pod_from(&pod) }))
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &nad_resource());
        let nad = self
            .runtime
            .block_on(api.get_opt(name))
            .map_err(|e| api_error(format!("getting NetworkAttachmentDefinition {namespace}/{name}"), e))?;
        Ok(nad.map(|nad| Nad {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            config: nad.data["spec"]["config"].as_str().unwrap_or_default().to_owned(),
            annotations: nad.metadata.annotations.unwrap_or_default(),
        }))
    }

    fn set_network_status(&self, pod: &Pod, status: &[NetworkStatus]) -> Result<(), ClusterError> {
        let text = serde_json::to_string_pretty(status).unwrap_or_default();
        let annotations = BTreeMap::from([(NETWORK_STATUS_ANNOTATION.to_owned(), text)]);
        self.set_annotations(pod, &annotations)
    }

    fn set_annotations(&self, pod: &Pod, annotations: &BTreeMap<String, String>) -> Result<(), ClusterError> {
        let api: Api<KubePod> = Api::namespaced(self.client.clone(), &pod.namespace);
        // Through pods/status, as Multus does: the status subresource is what CNI is granted.
        let patch = json!({ "metadata": { "annotations": annotations } });
        match self.runtime.block_on(api.patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )) {
            Ok(_) => Ok(()),
            // The pod went away meanwhile: nothing to report on.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(api_error(format!("annotating pod {}/{}", pod.namespace, pod.name), e)),
        }
    }

    fn event(&self, pod: &Pod, reason: &str, message: &str, warning: bool) {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", pod.name)),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: (!pod.uid.is_empty()).then(|| pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource { component: Some("plexus".into()), host: None }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        if let Err(e) = self.runtime.block_on(api.create(&PostParams::default(), &event)) {
            tracing::warn!("event {reason} on pod {}/{}: {e}", pod.namespace, pod.name);
        }
    }
}
