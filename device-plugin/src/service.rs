//! The `DevicePlugin` gRPC service of one pool.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use plexus_hw::NumaTopology;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::allocate::{self, AllocateError};
use crate::allocator;
use crate::config::PoolSpec;
use crate::pools::PoolDevice;
use crate::proto::deviceplugin::device_plugin_server::DevicePlugin;
use crate::proto::deviceplugin::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device, DevicePluginOptions,
    Empty, ListAndWatchResponse, NumaNode, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse, TopologyInfo,
};

/// The kubelet's health strings.
pub const HEALTHY: &str = "Healthy";
/// See [`HEALTHY`].
pub const UNHEALTHY: &str = "Unhealthy";

/// A pool's devices at one moment, and the NUMA distances the allocator weighs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// The devices, sorted by address.
    pub devices: Vec<PoolDevice>,
    /// The node's NUMA topology.
    pub topology: NumaTopology,
}

/// One pool's `DevicePlugin` service. Cloned per connection; all clones watch the same
/// snapshots.
#[derive(Debug, Clone)]
pub struct PoolService {
    spec: Arc<PoolSpec>,
    devinfo_dir: Arc<PathBuf>,
    snapshots: watch::Receiver<Arc<PoolSnapshot>>,
    stop: watch::Receiver<bool>,
}

impl PoolService {
    /// A service for `spec` that serves the snapshots sent on the channel, until `stop` turns
    /// true (which also ends every ListAndWatch stream, so a graceful shutdown can finish).
    pub fn new(
        spec: Arc<PoolSpec>,
        devinfo_dir: Arc<PathBuf>,
        snapshots: watch::Receiver<Arc<PoolSnapshot>>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self { spec, devinfo_dir, snapshots, stop }
    }

    fn snapshot(&self) -> Arc<PoolSnapshot> {
        self.snapshots.borrow().clone()
    }
}

/// The ListAndWatch message for a snapshot.
pub fn list_response(spec: &PoolSpec, snapshot: &PoolSnapshot) -> ListAndWatchResponse {
    ListAndWatchResponse {
        devices: snapshot
            .devices
            .iter()
            .map(|d| Device {
                id: d.id(),
                health: if d.healthy { HEALTHY } else { UNHEALTHY }.to_owned(),
                topology: match (spec.exclude_topology, d.numa_node) {
                    (false, Some(node)) => {
                        Some(TopologyInfo { nodes: vec![NumaNode { id: i64::from(node.0) }] })
                    }
                    _ => None,
                },
            })
            .collect(),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PoolService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<ListStream>, Status> {
        let spec = self.spec.clone();
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // WatchStream yields the current snapshot first, then every change.
        let stream = WatchStream::new(self.snapshots.clone())
            .map(move |snapshot| Ok(list_response(&spec, &snapshot)))
            .take_until(Box::pin(stopped));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let snapshot = self.snapshot();
        let mut container_responses = Vec::new();
        for req in request.into_inner().container_requests {
            let size = usize::try_from(req.allocation_size).map_err(|_| {
                Status::invalid_argument(format!("allocation_size {} is negative", req.allocation_size))
            })?;
            let ids = allocator::preferred(
                &snapshot.devices,
                &snapshot.topology,
                &req.available_device_i_ds,
                &req.must_include_device_i_ds,
                size,
            )
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", self.spec.resource_name())))?;
            container_responses.push(ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let snapshot = self.snapshot();
        let mut container_responses = Vec::new();
        for req in request.into_inner().container_requests {
            let response = allocate::container_response(
                &self.spec,
                &snapshot.devices,
                &req.devices_ids,
                &self.devinfo_dir,
            )
            .map_err(|e| match e {
                AllocateError::UnknownDevice(..) | AllocateError::NoIommuGroup(_) => {
                    Status::invalid_argument(e.to_string())
                }
                AllocateError::DeviceInfo { .. } => Status::internal(e.to_string()),
            })?;
            container_responses.push(response);
        }
        Ok(Response::new(AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
