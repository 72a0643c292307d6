//! What the meta-plugin needs from Kubernetes, behind a trait: the pod, its network
//! attachment definitions, and a place to write network-status. The `plexus` binary talks to
//! the API server itself (thin mode); the agent answers from its watch cache; with no API
//! access there is no cluster, and only static networks are attached.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::ErrorCode;
use crate::spec::result::Dns;

/// A failure to reach Kubernetes or to get an answer from it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server failed the request, or could not be reached (the spec's "try again
    /// later").
    #[error("{what}: {error}")]
    Api {
        /// The request (`reading pod ns/name`).
        what: String,
        /// What the client said.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client could not be set up (its runtime, its config).
    #[error("{what}: {error}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClusterError {
    /// An [`Api`](Self::Api) error.
    pub fn api(what: impl Into<String>, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Api { what: what.into(), error: Box::new(error) }
    }
}

impl crate::error::Failure for ClusterError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::Api { .. } => ErrorCode::TryAgainLater,
            Self::Setup { .. } => ErrorCode::Io,
        };
        code.into()
    }
}

/// The pod network-status annotation.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The NAD annotation naming the device plugin resource its devices come from.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// What the meta-plugin reads of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its volume named `shared-dir`, where vhost-user sockets go (the userspace plugin's
    /// convention).
    pub shared_dir: Option<SharedDir>,
}

/// The pod's volume named `shared-dir`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedDir {
    /// A hostPath volume's path; `None` for an emptyDir (it is under the kubelet's pods dir).
    pub host_path: Option<String>,
    /// Where the pod's first container that mounts it mounts it.
    pub mount_path: Option<String>,
}

/// The volume name the userspace plugin's users give the directory they share with the host.
pub const SHARED_DIR_VOLUME: &str = "shared-dir";

/// A Kubernetes pod as the meta-plugin and the delegates read it.
pub fn pod_from(pod: &k8s_openapi::api::core::v1::Pod) -> Pod {
    let spec = pod.spec.as_ref();
    let shared_dir = spec
        .and_then(|s| s.volumes.as_ref())
        .and_then(|volumes| volumes.iter().find(|v| v.name == SHARED_DIR_VOLUME))
        .map(|volume| SharedDir {
            host_path: volume.host_path.as_ref().map(|h| h.path.clone()),
            mount_path: spec.and_then(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| c.volume_mounts.iter().flatten())
                    .find_map(|m| (m.name == SHARED_DIR_VOLUME).then(|| m.mount_path.clone()))
            }),
        });
    Pod {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        shared_dir,
    }
}

/// A NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nad {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.config`: a conf or conflist, or empty (then the conf in confDir with this name).
    pub config: String,
    /// Annotations (`k8s.v1.cni.cncf.io/resourceName`).
    pub annotations: BTreeMap<String, String>,
}

/// One entry of the network-status annotation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `<namespace>/<nad>` for a NAD, else the network's name.
    pub name: String,
    /// The interface in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Its addresses, without prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Its MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// True for the network that has the pod's default route.
    #[serde(default)]
    pub default: bool,
    /// DNS.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    /// Gateways of the default route this attachment has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
    /// The device-info of a device attachment.
    #[serde(default, rename = "device-info", skip_serializing_if = "Option::is_none")]
    pub device_info: Option<serde_json::Value>,
}

/// Kubernetes, as the meta-plugin sees it.
pub trait Cluster {
    /// The pod, `None` when it does not exist. ADD may wait a little for a pod just created
    /// to reach a watch cache.
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError>;
    /// The pod as it is now, for a DEL: never waits for a pod to appear (a DEL's pod is more
    /// likely gone than not there yet).
    fn existing_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError> {
        self.pod(namespace, name)
    }
    /// The NAD, `None` when it does not exist.
    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError>;
    /// Writes the pod's network-status annotation; a pod that is gone is not an error.
    fn set_network_status(&self, pod: &Pod, status: &[NetworkStatus]) -> Result<(), ClusterError>;
    /// Sets annotations on the pod (merged with the others; the userspace delegate's
    /// `userspace/configuration-data`); a pod that is gone is not an error.
    fn set_annotations(&self, pod: &Pod, annotations: &BTreeMap<String, String>) -> Result<(), ClusterError>;
    /// Records an Event on the pod (`AddedInterface`, `NoNetworkFound`); best effort.
    fn event(&self, pod: &Pod, reason: &str, message: &str, warning: bool);
}

/// One cluster shared by several calls (the agent's watch caches, a test's client).
impl<T: Cluster + ?Sized> Cluster for std::sync::Arc<T> {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError> {
        (**self).pod(namespace, name)
    }
    fn existing_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError> {
        (**self).existing_pod(namespace, name)
    }
    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        (**self).nad(namespace, name)
    }
    fn set_network_status(&self, pod: &Pod, status: &[NetworkStatus]) -> Result<(), ClusterError> {
        (**self).set_network_status(pod, status)
    }
    fn set_annotations(&self, pod: &Pod, annotations: &BTreeMap<String, String>) -> Result<(), ClusterError> {
        (**self).set_annotations(pod, annotations)
    }
    fn event(&self, pod: &Pod, reason: &str, message: &str, warning: bool) {
        (**self).event(pod, reason, message, warning)
    }
}
