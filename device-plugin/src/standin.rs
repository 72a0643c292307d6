//! A kubelet stand-in: the kubelet's side of the device plugin API over real unix sockets in a
//! directory of its own. It serves `Registration` on `device-plugins/kubelet.sock`, records
//! the registrations, dials the plugins' sockets as the kubelet does, and restarts as the
//! kubelet does (every socket in `device-plugins/` deleted, a new `kubelet.sock`). The tests
//! and the demo run the device plugin against it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::plugin::{API_VERSION, DEVICE_PLUGINS_DIR, KUBELET_SOCKET};
use crate::podresources::PodResourcesStandIn;
use crate::proto::deviceplugin::device_plugin_client::DevicePluginClient;
use crate::proto::deviceplugin::registration_server::{Registration, RegistrationServer};
use crate::proto::deviceplugin::{Empty, RegisterRequest};
use crate::proto::podresources::pod_resources_lister_server::PodResourcesListerServer;
use crate::transport::{self, TransportError};

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

/// The stand-in kubelet.
#[derive(Debug)]
pub struct KubeletStandIn {
    plugins_dir: PathBuf,
    registrations: Arc<Registrations>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    pod_resources: PodResourcesStandIn,
    pod_resources_server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
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
        standin.serve_pod_resources(&kubelet_dir.join(crate::podresources::SOCKET))?;
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
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.await;
            };
            if let Err(e) = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, incoming, signal)
                .await
            {
                tracing::warn!("kubelet stand-in PodResources: {e}");
            }
        });
        self.pod_resources_server = Some((stop, task));
        Ok(())
    }

    fn serve(&mut self) -> Result<(), TransportError> {
        let socket = self.plugins_dir.join(KUBELET_SOCKET);
        std::fs::create_dir_all(&self.plugins_dir)
            .map_err(|error| TransportError::Listen { path: self.plugins_dir.clone(), error })?;
        let incoming = transport::listen(&socket)?;
        let service = RegistrationServer::new(RegistrationService(self.registrations.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.await;
            };
            if let Err(e) = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, incoming, signal)
                .await
            {
                tracing::warn!("kubelet stand-in: {e}");
            }
        });
        self.server = Some((stop, task));
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
