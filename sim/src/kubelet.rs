//! A kubelet stand-in: the kubelet's side of the device plugin API over real unix sockets in a
//! directory of its own. It serves `Registration` on `device-plugins/kubelet.sock`, records
//! the registrations, dials the plugins' sockets as the kubelet does, and restarts as the
//! kubelet does (every socket in `device-plugins/` deleted, a new `kubelet.sock`); and it
//! serves the PodResources API from what a test assigned. The tests and the demo run the device
//! plugin and the agent against it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plexus_device_plugin::plugin::{API_VERSION, DEVICE_PLUGINS_DIR, KUBELET_SOCKET};
use plexus_device_plugin::proto::deviceplugin::device_plugin_client::DevicePluginClient;
use plexus_device_plugin::proto::deviceplugin::registration_server::{Registration, RegistrationServer};
use plexus_device_plugin::proto::deviceplugin::{Empty, RegisterRequest};
use plexus_device_plugin::proto::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use plexus_device_plugin::proto::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, CdiDevice, ClaimResource, ContainerDevices,
    ContainerResources, DynamicResource, GetPodResourcesRequest, GetPodResourcesResponse,
    ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use plexus_device_plugin::transport::{self, TransportError};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct Registrations {
    list: Mutex<Vec<RegisterRequest>>,
    changed: Notify,
}

#[derive(Debug, Clone)]
struct RegistrationService(Arc<Registrations>);

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        // As the kubelet: only the version it speaks.
        if request.version != API_VERSION {
            return Err(Status::invalid_argument(format!("unsupported version {:?}", request.version)));
        }
        self.0.list.lock().unwrap_or_else(PoisonError::into_inner).push(request);
        self.0.changed.notify_waiters();
        Ok(Response::new(Empty {}))
    }
}

/// A server task that ends when its sender is used or dropped.
type Served = (oneshot::Sender<()>, JoinHandle<()>);

/// The shutdown signal a server is given.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Spawns the server `serve` makes, which stops when the future it is given completes: when
/// the returned sender is used or dropped.
fn spawn<F>(what: &'static str, serve: impl FnOnce(BoxFuture<'static, ()>) -> F) -> Served
where
    F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let server = serve(Box::pin(async move {
        let _ = stopped.await;
    }));
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!("{what}: {e}");
        }
    });
    (stop, task)
}

/// The stand-in kubelet.
#[derive(Debug)]
pub struct KubeletStandIn {
    plugins_dir: PathBuf,
    registrations: Arc<Registrations>,
    server: Option<Served>,
    pod_resources: PodResourcesStandIn,
    pod_resources_server: Option<Served>,
}

impl KubeletStandIn {
    /// Starts serving `Registration` under `kubelet_dir/device-plugins/`.
    pub async fn start(kubelet_dir: &Path) -> Result<Self, TransportError> {
        let mut standin = Self {
            plugins_dir: kubelet_dir.join(DEVICE_PLUGINS_DIR),
            registrations: Arc::default(),
            server: None,
            pod_resources: PodResourcesStandIn::default(),
            pod_resources_server: None,
        };
        standin.serve()?;
        standin.serve_pod_resources(&kubelet_dir.join(plexus_device_plugin::podresources::SOCKET))?;
        Ok(standin)
    }

    /// What the stand-in's PodResources API answers: assign devices to pods through it.
    pub fn pod_resources(&self) -> &PodResourcesStandIn {
        &self.pod_resources
    }

    fn serve_pod_resources(&mut self, socket: &Path) -> Result<(), TransportError> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|error| TransportError::Listen { path: dir.to_owned(), error })?;
        }
        let incoming = transport::listen(socket)?;
        let service = PodResourcesListerServer::new(self.pod_resources.clone());
        self.pod_resources_server = Some(spawn("kubelet stand-in PodResources", |stopped| {
            tonic::transport::Server::builder().serve_with_incoming_shutdown(service, incoming, stopped)
        }));
        Ok(())
    }

    fn serve(&mut self) -> Result<(), TransportError> {
        let socket = self.plugins_dir.join(KUBELET_SOCKET);
        std::fs::create_dir_all(&self.plugins_dir)
            .map_err(|error| TransportError::Listen { path: self.plugins_dir.clone(), error })?;
        let incoming = transport::listen(&socket)?;
        let service = RegistrationServer::new(RegistrationService(self.registrations.clone()));
        self.server = Some(spawn("kubelet stand-in", |stopped| {
            tonic::transport::Server::builder().serve_with_incoming_shutdown(service, incoming, stopped)
        }));
        Ok(())
    }

    /// The `device-plugins/` directory.
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// Every registration received so far, in order.
    pub fn registrations(&self) -> Vec<RegisterRequest> {
        self.registrations.list.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits up to `timeout` for a registration of `resource` beyond the first `seen`
    /// registrations (of any resource).
    pub async fn wait_for_registration(
        &self,
        resource: &str,
        seen: usize,
        timeout: Duration,
    ) -> Option<RegisterRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.registrations.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) =
                self.registrations().into_iter().skip(seen).find(|r| r.resource_name == resource)
            {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// A client for the plugin registered with `endpoint` (a socket name in `device-plugins/`).
    pub async fn plugin(&self, endpoint: &str) -> Result<DevicePluginClient<Channel>, TransportError> {
        Ok(DevicePluginClient::new(transport::connect(&self.plugins_dir.join(endpoint)).await?))
    }

    /// Restarts as the kubelet does: stops, deletes every socket in `device-plugins/`, and serves
    /// a new `kubelet.sock`.
    pub async fn restart(&mut self) -> Result<(), TransportError> {
        self.shut_down().await;
        let entries = std::fs::read_dir(&self.plugins_dir)
            .map_err(|error| TransportError::Listen { path: self.plugins_dir.clone(), error })?;
        for entry in entries.flatten() {
            use std::os::unix::fs::FileTypeExt;
            if entry.file_type().is_ok_and(|t| t.is_socket()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        self.serve()
    }

    /// Stops serving and removes `kubelet.sock`.
    pub async fn stop(mut self) {
        self.shut_down().await;
        if let Some((stop, task)) = self.pod_resources_server.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let _ = std::fs::remove_file(self.plugins_dir.join(KUBELET_SOCKET));
    }

    async fn shut_down(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// Pod -> container -> resource -> device IDs.
type Assignments = BTreeMap<(String, String), BTreeMap<String, BTreeMap<String, Vec<String>>>>;

/// The stand-in kubelet's PodResources service: it answers from what the test assigned.
#[derive(Debug, Clone)]
pub struct PodResourcesStandIn {
    assignments: Arc<Mutex<Assignments>>,
    claims: Arc<Mutex<Claims>>,
    get_supported: Arc<std::sync::atomic::AtomicBool>,
}

/// Pod -> (container, DRA claim) prepared for it.
type Claims = BTreeMap<(String, String), Vec<(String, DynamicResource)>>;

impl Default for PodResourcesStandIn {
    /// As a real kubelet up to 1.33: the `KubeletPodResourcesGet` gate off.
    fn default() -> Self {
        Self { assignments: Arc::default(), claims: Arc::default(), get_supported: Arc::new(false.into()) }
    }
}

impl PodResourcesStandIn {
    /// `true`: the `KubeletPodResourcesGet` gate on (the default from Kubernetes 1.34).
    /// `false` (the default here, as on kubelets up to 1.33): `Get` answers `Unknown` with
    /// "PodResources API Get method disabled", as the kubelet's server does.
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

    /// Records that the DRA claim `claim` (in the pod's namespace, of driver `driver`) was
    /// prepared for container `container` of pod `namespace/name` with `cdi_devices`, as a
    /// kubelet with DRA reports it.
    pub fn assign_claim(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        claim: &str,
        driver: &str,
        cdi_devices: &[&str],
    ) {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        claims.entry((namespace.to_owned(), name.to_owned())).or_default().push((
            container.to_owned(),
            DynamicResource {
                claim_name: claim.to_owned(),
                claim_namespace: namespace.to_owned(),
                claim_resources: vec![ClaimResource {
                    cdi_devices: cdi_devices.iter().map(|d| CdiDevice { name: (*d).to_owned() }).collect(),
                    driver_name: driver.to_owned(),
                    ..Default::default()
                }],
            },
        ));
        drop(claims);
        // A pod with only claims is still listed.
        let mut all = self.assignments.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry((namespace.to_owned(), name.to_owned()))
            .or_default()
            .entry(container.to_owned())
            .or_default();
    }

    fn pod(&self, key: &(String, String)) -> Option<PodResources> {
        // Claims before assignments, as everywhere both are held.
        let claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
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
                    dynamic_resources: claims
                        .get(key)
                        .into_iter()
                        .flatten()
                        .filter(|(container, _)| container == name)
                        .map(|(_, claim)| claim.clone())
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
            // The kubelet returns a plain error here, which gRPC sends as Unknown.
            return Err(Status::unknown("PodResources API Get method disabled"));
        }
        let request = request.into_inner();
        let key = (request.pod_namespace, request.pod_name);
        match self.pod(&key) {
            Some(pod) => Ok(Response::new(GetPodResourcesResponse { pod_resources: Some(pod) })),
            None => Err(Status::not_found(format!("pod {}/{} not found", key.0, key.1))),
        }
    }
}
