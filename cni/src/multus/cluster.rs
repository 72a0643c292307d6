//! What the meta-plugin needs from Kubernetes, behind a trait: the pod, its network
//! attachment definitions, and a place to write network-status. The `plexus` binary talks to
//! the API server itself (thin mode); the agent answers from its watch cache; with no API
//! access there is no cluster, and only static networks are attached.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::CniError;
use crate::spec::result::Dns;

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
    /// The pod, `None` when it does not exist.
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, CniError>;
    /// The NAD, `None` when it does not exist.
    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, CniError>;
    /// Writes the pod's network-status annotation; a pod that is gone is not an error.
    fn set_network_status(&self, pod: &Pod, status: &[NetworkStatus]) -> Result<(), CniError>;
    /// Records an Event on the pod (`AddedInterface`, `NoNetworkFound`); best effort.
    fn event(&self, pod: &Pod, reason: &str, message: &str, warning: bool);
}
