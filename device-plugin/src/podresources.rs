//! The kubelet's PodResources API (v1), the client side: which devices a pod was allocated,
//! by device plugins and, where the kubelet reports them, by DRA claims.
//! (The kubelet stand-in's server side is in `plexus-sim`.)
//!
//! `Get` (one pod) needs the kubelet's `KubeletPodResourcesGet` feature gate: alpha (off) from
//! Kubernetes 1.27, beta (on) from 1.34. A kubelet with the gate off answers gRPC `Unknown`
//! ("PodResources API Get method disabled"); one older than 1.27, `Unimplemented`. So any
//! answer but `NotFound` (the pod is not the kubelet's: no devices) makes `List` (every pod of
//! the node) the source.

use std::path::Path;

use tonic::{Code, Status};

use crate::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::podresources::{DynamicResource, GetPodResourcesRequest, ListPodResourcesRequest};
use crate::transport::{self, TransportError};

/// The PodResources socket, relative to the kubelet's directory.
pub const SOCKET: &str = "pod-resources/kubelet.sock";

/// A failed PodResources query.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// The socket could not be dialled.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The kubelet answered with an error.
    #[error("PodResources {call}: {status}")]
    Call {
        /// `Get` or `List`.
        call: &'static str,
        /// What the kubelet said.
        status: Status,
    },
}

/// The IDs of the devices of `resource` allocated to pod `namespace/name`, sorted, asked of
/// the kubelet at `socket`; none for a pod the kubelet does not know.
pub async fn pod_devices(
    socket: &Path,
    namespace: &str,
    name: &str,
    resource: &str,
) -> Result<Vec<String>, PodResourcesError> {
    let mut client = PodResourcesListerClient::new(transport::connect(socket).await?);
    let request = GetPodResourcesRequest { pod_name: name.to_owned(), pod_namespace: namespace.to_owned() };
    let pod = match client.get(request).await {
        Ok(response) => response.into_inner().pod_resources,
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => {
            tracing::debug!("PodResources Get: {status}; asking List");
            let list = client
                .list(ListPodResourcesRequest {})
                .await
                .map_err(|status| PodResourcesError::Call { call: "List", status })?;
            list.into_inner().pod_resources.into_iter().find(|p| p.namespace == namespace && p.name == name)
        }
    };
    let mut ids = Vec::new();
    for container in pod.into_iter().flat_map(|p| p.containers) {
        for devices in container.devices.into_iter().filter(|d| d.resource_name == resource) {
            ids.extend(devices.device_ids);
        }
        for claim in &container.dynamic_resources {
            ids.extend(claim_devices(claim, resource));
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The devices of a DRA claim the kubelet reports, when `resource` (a NAD's resourceName)
/// names it: by the claim's name (`name` or `namespace/name`), its driver, or its CDI devices'
/// kind (`vendor.com/class` of `vendor.com/class=id`). A device is its CDI name's ID (the part
/// after `=`, as Multus takes it), else the allocated device's name.
fn claim_devices(claim: &DynamicResource, resource: &str) -> Vec<String> {
    let qualified = format!("{}/{}", claim.claim_namespace, claim.claim_name);
    let by_claim = claim.claim_name == resource || qualified == resource;
    let mut ids = Vec::new();
    for allocated in &claim.claim_resources {
        let by_driver = !allocated.driver_name.is_empty() && allocated.driver_name == resource;
        for cdi in &allocated.cdi_devices {
            let (kind, id) = cdi.name.split_once('=').unwrap_or(("", &cdi.name));
            if by_claim || by_driver || kind == resource {
                ids.push(id.to_owned());
            }
        }
        if allocated.cdi_devices.is_empty() && (by_claim || by_driver) && !allocated.device_name.is_empty() {
            ids.push(allocated.device_name.clone());
        }
    }
    ids
}
