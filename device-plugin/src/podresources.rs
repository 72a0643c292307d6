//! The kubelet's PodResources API (v1), the client side: which devices a pod was allocated.
//! (The kubelet stand-in's server side is in `plexus-sim`.)
//!
//! `Get` (one pod) needs the kubelet's `KubeletPodResourcesGet` feature (beta and on since
//! Kubernetes 1.29); a kubelet without it answers `Unimplemented`, and `List` (every pod of the
//! node) is used instead.

use std::path::Path;

use tonic::{Code, Status};

use crate::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::podresources::{GetPodResourcesRequest, ListPodResourcesRequest};
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
/// the kubelet at `socket`.
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
        Err(status) if status.code() == Code::Unimplemented => {
            let list = client
                .list(ListPodResourcesRequest {})
                .await
                .map_err(|status| PodResourcesError::Call { call: "List", status })?;
            list.into_inner().pod_resources.into_iter().find(|p| p.namespace == namespace && p.name == name)
        }
        Err(status) => return Err(PodResourcesError::Call { call: "Get", status }),
    };
    let mut ids: Vec<String> = pod
        .into_iter()
        .flat_map(|p| p.containers)
        .flat_map(|c| c.devices)
        .filter(|d| d.resource_name == resource)
        .flat_map(|d| d.device_ids)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}
