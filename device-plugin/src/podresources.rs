//! The kubelet's PodResources API (v1), both sides: the client the agent asks which devices a
//! pod was allocated, and the server half of the kubelet stand-in.
//!
//! `Get` (one pod) needs the kubelet's `KubeletPodResourcesGet` feature (beta and on since
//! Kubernetes 1.29); a kubelet without it answers `Unimplemented`, and `List` (every pod of the
//! node) is used instead.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::{Code, Request, Response, Status};

use crate::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::podresources::pod_resources_lister_server::PodResourcesLister;
use crate::proto::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices, ContainerResources,
    GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest, ListPodResourcesResponse,
    PodResources,
};
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

/// Pod -> container -> resource -> device IDs.
type Assignments = BTreeMap<(String, String), BTreeMap<String, BTreeMap<String, Vec<String>>>>;

/// The stand-in kubelet's PodResources service: it answers from what the test assigned.
#[derive(Debug, Clone)]
pub struct PodResourcesStandIn {
    assignments: Arc<Mutex<Assignments>>,
    get_supported: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for PodResourcesStandIn {
    fn default() -> Self {
        Self { assignments: Arc::default(), get_supported: Arc::new(true.into()) }
    }
}

impl PodResourcesStandIn {
    /// With `false`, `Get` answers `Unimplemented`, as a kubelet without the feature does.
    pub fn set_get_supported(&self, supported: bool) {
        self.get_supported.store(supported, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records that `ids` of `resource` were allocated to container `container` of pod
    /// `namespace/name`.
    pub fn assign(&self, namespace: &str, name: &str, container: &str, resource: &str, ids: &[&str]) {
        let mut all = self.assignments.lock().unwrap_or_else(PoisonError::into_inner);
        let pod = all.entry((namespace.to_owned(), name.to_owned())).or_default();
        let devices = pod.entry(container.to_owned()).or_default().entry(resource.to_owned()).or_default();
        devices.extend(ids.iter().map(|id| (*id).to_owned()));
    }

    fn pod(&self, key: &(String, String)) -> Option<PodResources> {
        let all = self.assignments.lock().unwrap_or_else(PoisonError::into_inner);
        let containers = all.get(key)?;
        Some(PodResources {
            name: key.1.clone(),
            namespace: key.0.clone(),
            containers: containers
                .iter()
                .map(|(name, resources)| ContainerResources {
                    name: name.clone(),
                    devices: resources
                        .iter()
                        .map(|(resource, ids)| ContainerDevices {
                            resource_name: resource.clone(),
                            device_ids: ids.clone(),
                            topology: None,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesStandIn {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        let keys: Vec<(String, String)> =
            self.assignments.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        let pod_resources = keys.iter().filter_map(|k| self.pod(k)).collect();
        Ok(Response::new(ListPodResourcesResponse { pod_resources }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Ok(Response::new(AllocatableResourcesResponse::default()))
    }

    async fn get(
        &self,
        request: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        if !self.get_supported.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Status::unimplemented(
                "PodResources Get is behind the KubeletPodResourcesGet feature gate",
            ));
        }
        let request = request.into_inner();
        let key = (request.pod_namespace, request.pod_name);
        match self.pod(&key) {
            Some(pod) => Ok(Response::new(GetPodResourcesResponse { pod_resources: Some(pod) })),
            None => Err(Status::not_found(format!("pod {}/{} not found", key.0, key.1))),
        }
    }
}
