//! The device plugin at run time: one socket and `DevicePlugin` service per pool, registered
//! with the kubelet, and kept true while the node changes.
//!
//! The runner
//! - listens to the kernel ([`plexus_hw::events`]): a PCI device added, removed, bound or
//!   unbound, or a link of one of the node's functions changing, makes it discover again and
//!   send each pool's new devices and health to its ListAndWatch streams at once;
//! - as a safety net, every few seconds (`device_poll_interval`) reads a cheap fingerprint of
//!   the node (devices present, each PF's `sriov_numvfs` and link state) and discovers again
//!   when it changed, or every few seconds anyway (`FULL_DISCOVERY_EVERY`);
//! - every tick (200 ms by default) checks that each pool's socket is still there and that the
//!   kubelet's socket is the one it registered with: a restarting kubelet deletes every socket
//!   in `device-plugins/` and makes a new `kubelet.sock`, so the runner serves again and
//!   registers again, well inside the kubelet's patience.
//!
//! On shutdown it stops serving and removes its sockets and device-info files.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_hw::discover::{Discovery, Fingerprint};
use plexus_hw::events::{Event, EventSource, Listener};
use plexus_hw::{SysfsError, SysfsRoot, discover};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::allocate;
use crate::config::{PoolConfig, PoolSpec};
use crate::pools::{self, PoolDevice};
use crate::proto::deviceplugin::device_plugin_server::DevicePluginServer;
use crate::proto::deviceplugin::registration_client::RegistrationClient;
use crate::proto::deviceplugin::{DevicePluginOptions, RegisterRequest};
use crate::service::{PoolService, PoolSnapshot};
use crate::transport::{self, TransportError};

/// The kubelet's directory of device plugin sockets, under the kubelet dir.
pub const DEVICE_PLUGINS_DIR: &str = "device-plugins";
/// The kubelet's registration socket in it.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The device plugin API version.
pub const API_VERSION: &str = "v1beta1";

/// Where the runner finds things, and how often it looks.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// sysfs (or a simulated node's root).
    pub sysfs_root: SysfsRoot,
    /// The kubelet's directory (`/var/lib/kubelet`).
    pub kubelet_dir: PathBuf,
    /// Where device-info files go (`<dir>/dp/`).
    pub devinfo_dir: PathBuf,
    /// The IPv4 routing table, to skip a device that carries the default route.
    pub route_file: PathBuf,
    /// How often the kubelet (and, without kernel events, the node) is checked.
    pub poll_interval: Duration,
    /// Where the kernel's device events come from; `None` to poll the node every
    /// `poll_interval` instead.
    pub events: Option<EventSource>,
    /// With events, how often the node is polled anyway (the safety net).
    pub device_poll_interval: Duration,
}

impl PluginOptions {
    /// The defaults of a real node, with sysfs at `sysfs_root`.
    pub fn new(sysfs_root: SysfsRoot) -> Self {
        Self {
            sysfs_root,
            kubelet_dir: PathBuf::from("/var/lib/kubelet"),
            devinfo_dir: PathBuf::from(allocate::DEFAULT_DEVINFO_DIR),
            route_file: PathBuf::from("/proc/net/route"),
            poll_interval: Duration::from_millis(200),
            events: Some(EventSource::Kernel),
            device_poll_interval: Duration::from_secs(2),
        }
    }

    fn plugins_dir(&self) -> PathBuf {
        self.kubelet_dir.join(DEVICE_PLUGINS_DIR)
    }
}

/// What stops the device plugin from starting.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The first discovery failed (a wrong sysfs root, usually).
    #[error("discovering devices: {0}")]
    Discovery(#[from] SysfsError),
    /// The kubelet's device plugin directory cannot be made.
    #[error("creating {path}: {error}")]
    PluginsDir {
        /// The directory.
        path: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
}

/// The socket file name of a pool under `device-plugins/`: also its registration endpoint.
pub fn socket_name(pool: &PoolSpec) -> String {
    format!("plexus-{}-{}.sock", pool.prefix, pool.name)
}

/// A socket file's identity: a recreated file has a new inode.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// One running generation of a pool's gRPC server.
struct Server {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    socket: PathBuf,
    identity: Option<(u64, u64)>,
}

impl Server {
    async fn shut_down(self) {
        let _ = self.stop.send(true);
        // ListAndWatch streams end on `stop`, so the graceful shutdown is quick; don't wait
        // forever on a stuck connection.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

struct Pool {
    spec: Arc<PoolSpec>,
    snapshots: watch::Sender<Arc<PoolSnapshot>>,
    server: Option<Server>,
    /// The kubelet socket this pool registered with.
    registered_with: Option<(u64, u64)>,
}

/// Runs the device plugin for `config` until `shutdown` completes, then cleans up.
pub async fn run(
    config: PoolConfig,
    options: PluginOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    let plugins_dir = options.plugins_dir();
    std::fs::create_dir_all(&plugins_dir)
        .map_err(|error| PluginError::PluginsDir { path: plugins_dir.clone(), error })?;
    let mut node = NodeView::new(&options, &config).await?;
    let mut pools: Vec<Pool> = config
        .pools
        .iter()
        .zip(node.snapshots())
        .map(|(spec, snapshot)| {
            tracing::info!(
                "pool {}: {} devices, socket {}",
                spec.resource_name(),
                snapshot.devices.len(),
                socket_name(spec)
            );
            Pool {
                spec: Arc::new(spec.clone()),
                snapshots: watch::Sender::new(Arc::new(snapshot)),
                server: None,
                registered_with: None,
            }
        })
        .collect();

    let devinfo_dir = Arc::new(options.devinfo_dir.clone());
    let mut ticker = tokio::time::interval(options.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (listener, mut events) = listen(&options);
    let device_poll = if listener.is_some() { options.device_poll_interval } else { options.poll_interval };
    let mut device_ticker = tokio::time::interval(device_poll);
    device_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let refresh = tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => Refresh::No,
            _ = device_ticker.tick() => Refresh::IfChanged,
            Some(event) = events.recv() => {
                // A burst (a VF count change is a uevent per VF) is taken whole.
                let mut all = vec![event];
                while let Ok(event) = events.try_recv() {
                    all.push(event);
                }
                if node.concerned(&all) { Refresh::Now } else { Refresh::No }
            }
        };
        if refresh != Refresh::No && node.refresh(&options, &config, refresh == Refresh::Now).await {
            for (pool, snapshot) in pools.iter().zip(node.snapshots()) {
                pool.snapshots.send_if_modified(|current| {
                    let changed = **current != snapshot;
                    if changed {
                        tracing::info!(
                            "pool {}: {} devices, {} unhealthy",
                            pool.spec.resource_name(),
                            snapshot.devices.len(),
                            snapshot.devices.iter().filter(|d| !d.healthy).count()
                        );
                        *current = Arc::new(snapshot);
                    }
                    changed
                });
            }
        }
        let kubelet = identity(&plugins_dir.join(KUBELET_SOCKET));
        for pool in &mut pools {
            serve_and_register(pool, &plugins_dir, kubelet, &devinfo_dir).await;
        }
    }

    drop(listener);
    for pool in pools {
        if let Some(server) = pool.server {
            let socket = server.socket.clone();
            server.shut_down().await;
            let _ = std::fs::remove_file(&socket);
        }
        match allocate::remove_device_info(&options.devinfo_dir, &pool.spec) {
            Ok(n) if n > 0 => {
                tracing::info!("pool {}: removed {n} device-info files", pool.spec.resource_name())
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("pool {}: removing device-info files: {e}", pool.spec.resource_name()),
        }
    }
    tracing::info!("device plugin stopped");
    Ok(())
}

/// Whether to look at the node again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    No,
    /// When the fingerprint changed (the slow poll).
    IfChanged,
    /// Now (an event said something changed).
    Now,
}

/// Starts listening to the kernel's events, when the options ask for it; a listener that
/// cannot start leaves the runner polling, with a warning.
fn listen(options: &PluginOptions) -> (Option<Listener>, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = options.events.as_ref().and_then(|source| {
        Listener::start(source, move |event| {
            let _ = tx.send(event);
        })
        .inspect_err(|e| {
            tracing::warn!(
                "listening to kernel events ({source:?}): {e}; polling the node every {:?}",
                options.poll_interval
            )
        })
        .ok()
    });
    (listener, rx)
}

/// Starts the pool's server when it is not running or its socket was removed, and registers
/// with the kubelet when the kubelet socket is new to the pool.
async fn serve_and_register(
    pool: &mut Pool,
    plugins_dir: &Path,
    kubelet: Option<(u64, u64)>,
    devinfo_dir: &Arc<PathBuf>,
) {
    let name = socket_name(&pool.spec);
    let socket = plugins_dir.join(&name);
    let healthy = pool
        .server
        .as_ref()
        .is_some_and(|s| !s.task.is_finished() && s.identity.is_some() && identity(&s.socket) == s.identity);
    if !healthy {
        if let Some(old) = pool.server.take() {
            tracing::info!(
                "pool {}: socket {} gone, serving again",
                pool.spec.resource_name(),
                socket.display()
            );
            old.shut_down().await;
        }
        match start_server(pool, &socket, devinfo_dir) {
            Ok(server) => pool.server = Some(server),
            Err(e) => {
                tracing::warn!("pool {}: {e}", pool.spec.resource_name());
                return;
            }
        }
        pool.registered_with = None;
    }
    let Some(kubelet) = kubelet else {
        return;
    };
    if pool.registered_with == Some(kubelet) {
        return;
    }
    let request = RegisterRequest {
        version: API_VERSION.to_owned(),
        endpoint: name,
        resource_name: pool.spec.resource_name(),
        options: Some(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }),
    };
    match register(&plugins_dir.join(KUBELET_SOCKET), request).await {
        Ok(()) => {
            tracing::info!("pool {}: registered with the kubelet", pool.spec.resource_name());
            pool.registered_with = Some(kubelet);
        }
        Err(e) => tracing::warn!("pool {}: registering with the kubelet: {e}", pool.spec.resource_name()),
    }
}

fn start_server(pool: &Pool, socket: &Path, devinfo_dir: &Arc<PathBuf>) -> Result<Server, TransportError> {
    let incoming = transport::listen(socket)?;
    let (stop, stop_rx) = watch::channel(false);
    let service =
        PoolService::new(pool.spec.clone(), devinfo_dir.clone(), pool.snapshots.subscribe(), stop_rx.clone());
    let resource = pool.spec.resource_name();
    let mut stopped = stop_rx;
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let served = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(DevicePluginServer::new(service), incoming, signal)
            .await;
        if let Err(e) = served {
            tracing::warn!("pool {resource}: gRPC server stopped: {e}");
        }
    });
    Ok(Server { stop, task, socket: socket.to_owned(), identity: identity(socket) })
}

/// How long a registration may take: the kubelet answers at once, or it is not there.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A registration that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The kubelet socket could not be dialled.
    #[error(transparent)]
    Connect(#[from] TransportError),
    /// The kubelet refused the registration.
    #[error("kubelet refused: {0}")]
    Refused(#[from] tonic::Status),
    /// The kubelet did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Registers one pool through the kubelet socket at `kubelet_socket`.
pub async fn register(kubelet_socket: &Path, request: RegisterRequest) -> Result<(), RegisterError> {
    let call = async {
        let channel = transport::connect(kubelet_socket).await?;
        RegistrationClient::new(channel).register(request).await?;
        Ok(())
    };
    tokio::time::timeout(REGISTER_TIMEOUT, call)
        .await
        .map_err(|_| RegisterError::Timeout(REGISTER_TIMEOUT))?
}

/// The node as the runner last saw it.
struct NodeView {
    found: Discovery,
    fingerprint: Fingerprint,
    routes: BTreeSet<String>,
    /// Devices each pool advertised last time, by pool index.
    last: Vec<Vec<PoolDevice>>,
    last_full: Instant,
}

/// Discover again at least this often, even when the fingerprint is unchanged (a driver rebind
/// changes no fingerprint; its uevent is the quick way).
const FULL_DISCOVERY_EVERY: Duration = Duration::from_secs(5);

impl NodeView {
    async fn new(options: &PluginOptions, config: &PoolConfig) -> Result<Self, PluginError> {
        let (found, fingerprint) = discover_with_fingerprint(&options.sysfs_root).await?;
        for problem in &found.problems {
            tracing::warn!("{problem}");
        }
        let routes = read_routes(&options.route_file);
        let last = pools::assign(config, &found, &routes).pools;
        Ok(Self { found, fingerprint, routes, last, last_full: Instant::now() })
    }

    /// Whether `events` may change what discovery finds: any PCI device event, lost events,
    /// and link events of the node's functions' netdevs (not the pods' veths and bridges that
    /// come and go on a busy node).
    fn concerned(&self, events: &[Event]) -> bool {
        events.iter().any(|event| match event {
            Event::Pci { .. } | Event::Lost => true,
            Event::Link { name: Some(name), .. } => {
                self.found.pfs.iter().any(|pf| pf.function.netdev_name() == Some(name))
                    || self.found.vfs().any(|(_, vf)| vf.function.netdev_name() == Some(name))
            }
            Event::Link { name: None, .. } => false,
        })
    }

    /// Discovers again when the node changed (`now`: an event says it did); true when what the
    /// pools hold changed.
    async fn refresh(&mut self, options: &PluginOptions, config: &PoolConfig, now: bool) -> bool {
        if !now {
            let root = options.sysfs_root.clone();
            let found = std::mem::take(&mut self.found);
            let (found, fingerprint) = blocking(move || {
                let fingerprint = Fingerprint::read(&root, &found);
                (found, fingerprint)
            })
            .await;
            self.found = found;
            if fingerprint == self.fingerprint && self.last_full.elapsed() < FULL_DISCOVERY_EVERY {
                return false;
            }
        }
        (self.found, self.fingerprint) = match discover_with_fingerprint(&options.sysfs_root).await {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!("discovering devices: {e}");
                return false;
            }
        };
        self.routes = read_routes(&options.route_file);
        self.last_full = Instant::now();
        let mut pools = pools::assign(config, &self.found, &self.routes).pools;
        keep_vanished(&mut pools, &self.last, &self.found);
        let changed = pools != self.last;
        self.last = pools;
        changed
    }

    /// Each pool's snapshot, in config order.
    fn snapshots(&self) -> Vec<PoolSnapshot> {
        self.last
            .iter()
            .map(|devices| PoolSnapshot { devices: devices.clone(), topology: self.found.numa.clone() })
            .collect()
    }
}

/// A device a pool advertised that discovery no longer finds stays in the pool, unhealthy, while
/// its PF still has it (VF index below `sriov_numvfs`) or the PF itself is gone: the device is
/// broken or unplugged, and pods may still hold it. VFs removed by lowering `sriov_numvfs` are
/// dropped, and so is a device that another pool took.
fn keep_vanished(pools: &mut [Vec<PoolDevice>], last: &[Vec<PoolDevice>], found: &Discovery) {
    let everywhere: BTreeSet<_> = pools.iter().flatten().map(|d| d.address).collect();
    let pfs: HashMap<_, _> = found.pfs.iter().map(|pf| (pf.function.address, pf.num_vfs)).collect();
    for (devices, previous) in pools.iter_mut().zip(last) {
        for device in previous {
            if everywhere.contains(&device.address) {
                continue;
            }
            let still_expected = match (device.pf, device.vf_index) {
                (Some(pf), Some(index)) => pfs.get(&pf).is_none_or(|num_vfs| index.0 < *num_vfs),
                _ => !pfs.contains_key(&device.address),
            };
            if still_expected {
                devices.push(PoolDevice { healthy: false, ..device.clone() });
            }
        }
        devices.sort_by_key(|d| d.address);
    }
}

/// Discovers, and reads the fingerprint of what was found, off the runtime's workers.
async fn discover_with_fingerprint(root: &SysfsRoot) -> Result<(Discovery, Fingerprint), SysfsError> {
    let root = root.clone();
    blocking(move || {
        let found = discover(&root)?;
        let fingerprint = Fingerprint::read(&root, &found);
        Ok((found, fingerprint))
    })
    .await
}

fn read_routes(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path).map(|text| pools::default_route_netdevs(&text)).unwrap_or_default()
}

/// Runs blocking sysfs work off the runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        // A panic in discovery is a bug: let it surface where it would have without the thread.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down and drops this task anyway.
        Err(_) => std::future::pending().await,
    }
}
