//! The `userspace` delegate for OVS-DPDK: a vhost-user port on an OVS bridge whose socket sits
//! in a directory the pod shares, as the userspace CNI plugin makes it, with its NAD keys and
//! the pod annotations DPDK images read (`userspace/configuration-data`,
//! `userspace/mapped-dir`). OVS is reached over OVSDB (`ovsdb`, `ovs`), not `ovs-vsctl`.
//!
//! Every attachment keeps a record (`<dataDir>/<container>-<ifname>.json`) of what it made,
//! written before OVS is touched, so DEL undoes exactly that, twice or after a crash. A DEL
//! that cannot reach ovsdb-server does the local part and leaves the port in a pending list
//! that the next call reaching OVS removes.

pub mod config;
pub mod lab;
pub mod ovs;
pub mod ovsdb;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::config::{DEFAULT_OVS_RUN_DIR, DEFAULT_OVSDB_SOCKET, UserspaceConfig, VhostMode};
use self::ovsdb::{Ovsdb, OvsdbError};
use crate::delegate::InProcessPlugin;
use crate::files;
use crate::ipam;
use crate::multus::cluster::{Cluster, Pod};
use crate::multus::devices::{cni_device_info_path, write_cni_device_info};
use crate::spec::result::{CniResult, Interface};
use crate::spec::version::CniVersion;
use crate::spec::{CniError, Command, ErrorCode, Invocation};

/// Where records go unless the config says `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/plexus/userspace";
/// The pod annotation with what each userspace attachment gave the pod.
pub const CONFIGURATION_DATA_ANNOTATION: &str = "userspace/configuration-data";
/// The pod annotation with where the shared directory is inside the pod.
pub const MAPPED_DIR_ANNOTATION: &str = "userspace/mapped-dir";
/// The longest unix socket path (`sun_path` is 108 bytes with the terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// The delegate, with the node's paths.
#[derive(Debug, Clone)]
pub struct Userspace {
    /// ovsdb-server's socket, unless the config says `ovsdbSocket`.
    pub ovsdb_socket: PathBuf,
    /// ovs-vswitchd's run directory (server-mode sockets), unless the config says `ovsRunDir`.
    pub ovs_run_dir: PathBuf,
    /// The kubelet's directory (emptyDir volumes are under `pods/<uid>/volumes/`).
    pub kubelet_dir: PathBuf,
    /// Where short paths to long socket directories are made (`<run_dir>/vhost/<port>`).
    pub run_dir: PathBuf,
    /// Where the device-info for the CNI side is written (`<devinfo>/cni/`).
    pub devinfo_dir: PathBuf,
    /// How long ovsdb-server and ovs-vswitchd may take.
    pub timeout: Duration,
}

impl Default for Userspace {
    fn default() -> Self {
        Self {
            ovsdb_socket: std::env::var_os("PLEXUS_OVSDB_SOCKET")
                .map_or_else(|| DEFAULT_OVSDB_SOCKET.into(), PathBuf::from),
            ovs_run_dir: DEFAULT_OVS_RUN_DIR.into(),
            kubelet_dir: "/var/lib/kubelet".into(),
            run_dir: crate::forward::DEFAULT_SOCKET_DIR.into(),
            devinfo_dir: crate::multus::devices::DEFAULT_DEVINFO_DIR.into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What one attachment made, for DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub container_id: String,
    pub ifname: String,
    pub ovsdb_socket: PathBuf,
    pub port: String,
    pub bridge: String,
    /// Plexus made the bridge for this port.
    pub bridge_created: bool,
    /// The socket in the pod's directory (host path).
    pub socket: PathBuf,
    /// Server mode: the socket OVS made, shown at `socket` by a bind mount.
    pub ovs_socket: Option<PathBuf>,
    /// Bind mounts made (unmounted, then removed, on DEL).
    pub mounts: Vec<PathBuf>,
    /// A directory made for the sockets (removed on DEL).
    pub made_dir: Option<PathBuf>,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CniError {
    move |e| CniError::new(ErrorCode::Io, format!("userspace: {what}")).with_details(e.to_string())
}

fn ovs_error(e: OvsdbError) -> CniError {
    CniError::new(
        if e.is_unreachable() { ErrorCode::TryAgainLater } else { ErrorCode::Plugin },
        format!("userspace: {e}"),
    )
}

fn data_dir(raw: &Value) -> PathBuf {
    files::data_dir(raw, DEFAULT_DATA_DIR)
}

/// The port's name, as the userspace plugin names it: the container ID's first 12
/// characters and the interface.
pub fn port_name(container_id: &str, ifname: &str) -> String {
    let prefix: String = container_id.chars().take(12).collect();
    format!("{prefix}-{ifname}")
}

/// The records of one data directory.
struct Records {
    dir: PathBuf,
}

impl Records {
    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join("pending")
    }

    fn save(&self, record: &Record) -> Result<(), CniError> {
        std::fs::create_dir_all(&self.dir).map_err(io(self.dir.display()))?;
        let path = self.path(&record.container_id, &record.ifname);
        let bytes =
            serde_json::to_vec_pretty(record).map_err(|e| CniError::new(ErrorCode::Io, e.to_string()))?;
        files::write_atomic(&path, &bytes, true).map_err(io(path.display()))
    }

    fn load(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, CniError> {
        let path = self.path(container_id, ifname);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CniError::new(ErrorCode::Io, format!("userspace: record {}", path.display()))
                    .with_details(e.to_string())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path.display())(e)),
        }
    }

    fn remove(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path.display())(e)),
            _ => Ok(()),
        }
    }

    /// Keeps `record`'s port for removal once ovsdb-server answers again.
    fn defer(&self, record: &Record) -> Result<(), CniError> {
        let dir = self.pending_dir();
        std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        let path = dir.join(format!("{}.json", record.port));
        let bytes = serde_json::to_vec(record).map_err(|e| CniError::new(ErrorCode::Io, e.to_string()))?;
        files::write_atomic(&path, &bytes, true).map_err(io(path.display()))
    }

    /// Removes the ports left by DELs that could not reach `socket`'s server.
    fn sweep(&self, db: &mut Ovsdb, socket: &Path, timeout: Duration) {
        for entry in std::fs::read_dir(self.pending_dir()).into_iter().flatten().flatten() {
            let Ok(record) = std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
            else {
                continue;
            };
            if record.ovsdb_socket != socket {
                continue;
            }
            match ovs::del_port(db, &record.port, timeout) {
                Ok(_) => {
                    tracing::info!("removed port {} left by a DEL while OVS was down", record.port);
                    let _ = std::fs::remove_file(entry.path());
                }
                Err(e) => tracing::warn!("port {} left by an earlier DEL: {e}", record.port),
            }
        }
    }
}

fn bind_mount(source: &Path, target: &Path) -> Result<(), CniError> {
    nix::mount::mount(Some(source), target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).map_err(
        |e| {
            CniError::new(
                ErrorCode::Io,
                format!("userspace: bind-mounting {} on {}", source.display(), target.display()),
            )
            .with_details(e.to_string())
        },
    )
}

fn unmount(target: &Path) {
    match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!("unmounting {}: {e}", target.display()),
    }
}

fn remove_path(path: &Path) {
    let result = if path.is_dir() { std::fs::remove_dir(path) } else { std::fs::remove_file(path) };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", path.display());
    }
}

/// The pod the call is for, when the meta-plugin has Kubernetes access.
fn pod_of(invocation: &Invocation, cluster: Option<&dyn Cluster>) -> Result<Option<Pod>, CniError> {
    let (Some(cluster), Some((namespace, name, _))) = (cluster, crate::meta::pod_ref(invocation)) else {
        return Ok(None);
    };
    cluster.pod(&namespace, &name)
}

impl Userspace {
    fn ovsdb_socket(&self, config: &UserspaceConfig) -> PathBuf {
        config.ovsdb_socket.clone().unwrap_or_else(|| self.ovsdb_socket.clone())
    }

    fn connect(&self, socket: &Path) -> Result<Ovsdb, OvsdbError> {
        Ovsdb::connect(socket, self.timeout)
    }

    /// The socket directory on the host, and where the pod sees it: the pod's `shared-dir`
    /// volume, else `sharedDir/<container-id prefix>` (made here).
    fn socket_dir(
        &self,
        config: &UserspaceConfig,
        invocation: &Invocation,
        pod: Option<&Pod>,
    ) -> (PathBuf, String, bool) {
        if let Some(pod) = pod
            && let Some(shared) = &pod.shared_dir
        {
            let host = match &shared.host_path {
                Some(path) => PathBuf::from(path),
                None => self
                    .kubelet_dir
                    .join("pods")
                    .join(&pod.uid)
                    .join("volumes/kubernetes.io~empty-dir/shared-dir"),
            };
            let mapped = shared.mount_path.clone().unwrap_or_else(|| host.display().to_string());
            return (host, mapped, false);
        }
        let prefix: String = invocation.container_id.chars().take(12).collect();
        let dir = config.shared_dir.join(prefix);
        let mapped = dir.display().to_string();
        (dir, mapped, true)
    }

    /// ADD.
    pub fn add(
        &self,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
        cluster: Option<&dyn Cluster>,
    ) -> Result<Value, CniError> {
        let config = UserspaceConfig::parse(raw)?;
        let version = CniVersion::of_config(raw)?;
        let pod = pod_of(invocation, cluster)?;
        let records = Records { dir: data_dir(raw) };
        let port = port_name(&invocation.container_id, ifname);
        let (dir, mapped, make_dir) = self.socket_dir(&config, invocation, pod.as_ref());
        let socket_file = config.socket_file.clone().unwrap_or_else(|| port.clone());
        let mut record = Record {
            container_id: invocation.container_id.clone(),
            ifname: ifname.to_owned(),
            ovsdb_socket: self.ovsdb_socket(&config),
            port: port.clone(),
            bridge: config.bridge.clone(),
            bridge_created: false,
            socket: dir.join(&socket_file),
            ovs_socket: None,
            mounts: Vec::new(),
            made_dir: None,
        };
        // Saved before anything is made, and after each step: DEL undoes what it lists.
        records.save(&record)?;
        let made = self.add_steps(&config, &mut record, &records, &dir, make_dir, invocation, ifname, raw);
        let ip_result = match made {
            Ok(result) => result,
            Err(err) => {
                self.undo(&record, &records, Some(raw), invocation, ifname);
                return Err(err);
            }
        };
        let container_socket = format!("{}/{socket_file}", mapped.trim_end_matches('/'));
        let pod_mode = config.mode.peer();
        // What the pod is told, in the userspace plugin's shape.
        if let (Some(cluster), Some(pod)) = (cluster, &pod) {
            let mut container = config.container.clone();
            let vhost = container.entry("vhost").or_insert_with(|| json!({}));
            vhost["mode"] = json!(pod_mode.as_str());
            vhost["socketfile"] = json!(socket_file);
            let entry = json!({"containerId": invocation.container_id, "ifName": ifname, "name": config.name,
                               "config": container, "ipResult": ip_result.to_value(version)});
            let mut data: Vec<Value> = pod
                .annotations
                .get(CONFIGURATION_DATA_ANNOTATION)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default();
            data.retain(|e| !(e["containerId"] == invocation.container_id.as_str() && e["ifName"] == ifname));
            data.push(entry);
            let annotations = BTreeMap::from([
                (CONFIGURATION_DATA_ANNOTATION.to_owned(), Value::Array(data).to_string()),
                (MAPPED_DIR_ANNOTATION.to_owned(), mapped.clone()),
            ]);
            if let Err(err) = cluster.set_annotations(pod, &annotations) {
                self.undo(&record, &records, Some(raw), invocation, ifname);
                return Err(err.context("userspace: annotating the pod"));
            }
        }
        let info = json!({"type": "vhost-user", "version": "1.1.0",
                          "vhost-user": {"mode": pod_mode.as_str(), "path": container_socket}});
        let written = write_cni_device_info(
            &self.devinfo_dir,
            &invocation.container_id,
            ifname,
            info.to_string().as_bytes(),
        );
        if let Err(e) = written {
            tracing::warn!("userspace: device-info for {port}: {e}");
        }
        let mut result = ip_result;
        result.interfaces = vec![Interface {
            name: ifname.to_owned(),
            sandbox: invocation.netns.clone(),
            socket_path: Some(container_socket),
            ..Default::default()
        }];
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
        Ok(result.to_value(version))
    }

    #[allow(clippy::too_many_arguments)]
    fn add_steps(
        &self,
        config: &UserspaceConfig,
        record: &mut Record,
        records: &Records,
        dir: &Path,
        make_dir: bool,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
    ) -> Result<CniResult, CniError> {
        if make_dir && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
            record.made_dir = Some(dir.to_owned());
            records.save(record)?;
        }
        if !dir.is_dir() {
            return Err(CniError::new(
                ErrorCode::Io,
                format!("userspace: the pod's shared directory {} does not exist", dir.display()),
            ));
        }
        if let Some(group) = &config.group {
            chown_to_group(dir, group)?;
        }
        // A socket path too long for sun_path is reached through a short one: the directory
        // bind-mounted under the run directory.
        let file_name = record.socket.file_name().map(PathBuf::from).unwrap_or_default();
        let ovs_side_dir = if record.socket.as_os_str().len() > SOCKET_PATH_MAX {
            let short = self.run_dir.join("vhost").join(&record.port);
            std::fs::create_dir_all(&short).map_err(io(short.display()))?;
            record.mounts.push(short.clone());
            records.save(record)?;
            bind_mount(dir, &short)?;
            short
        } else {
            dir.to_owned()
        };
        let socket = self.ovsdb_socket(config);
        let mut db = self.connect(&socket).map_err(ovs_error)?;
        records.sweep(&mut db, &socket, self.timeout);
        let spec = ovs::PortSpec {
            bridge: config.bridge.clone(),
            port: record.port.clone(),
            mode: config.mode,
            server_path: Some(ovs_side_dir.join(&file_name).display().to_string()),
            vlan: config.vlan,
            container_id: invocation.container_id.clone(),
        };
        let added = ovs::add_port(&mut db, &spec, self.timeout).map_err(ovs_error)?;
        record.bridge_created = added.bridge_created;
        records.save(record)?;
        if config.mode == VhostMode::Server {
            self.show_server_socket(config, record, records)?;
        }
        let ip = match ipam::Request::new(raw, invocation, ifname)? {
            Some(request) => ipam::add(&request)?,
            None => CniResult::default(),
        };
        Ok(ip)
    }

    /// Server mode: OVS makes its socket in its run directory; the pod's directory gets it by
    /// a bind mount over an empty file of the socket's name.
    fn show_server_socket(
        &self,
        config: &UserspaceConfig,
        record: &mut Record,
        records: &Records,
    ) -> Result<(), CniError> {
        let run_dir = config.ovs_run_dir.clone().unwrap_or_else(|| self.ovs_run_dir.clone());
        let ovs_socket = run_dir.join(&record.port);
        let deadline = std::time::Instant::now() + self.timeout;
        while !ovs_socket.exists() {
            if std::time::Instant::now() >= deadline {
                return Err(CniError::new(
                    ErrorCode::Plugin,
                    format!("userspace: ovs-vswitchd made no socket {} (ovsRunDir?)", ovs_socket.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(group) = &config.group {
            chown_to_group(&ovs_socket, group)?;
        }
        std::fs::File::create(&record.socket).map_err(io(record.socket.display()))?;
        record.ovs_socket = Some(ovs_socket.clone());
        record.mounts.push(record.socket.clone());
        records.save(record)?;
        bind_mount(&ovs_socket, &record.socket)
    }

    /// Undoes what `record` lists: the OVS port (deferred when OVS is unreachable), mounts,
    /// sockets, the directory made, IPAM (with `raw`), the record.
    fn undo(
        &self,
        record: &Record,
        records: &Records,
        raw: Option<&Value>,
        invocation: &Invocation,
        ifname: &str,
    ) -> Vec<CniError> {
        let mut errors = Vec::new();
        match self.connect(&record.ovsdb_socket) {
            Ok(mut db) => {
                records.sweep(&mut db, &record.ovsdb_socket, self.timeout);
                if let Err(e) = ovs::del_port(&mut db, &record.port, self.timeout) {
                    errors.push(ovs_error(e));
                }
            }
            Err(e) => {
                tracing::warn!(
                    "{e}: port {} is removed from OVS by the next call that reaches it",
                    record.port
                );
                if let Err(e) = records.defer(record) {
                    errors.push(e);
                }
            }
        }
        for mount in record.mounts.iter().rev() {
            unmount(mount);
            remove_path(mount);
        }
        remove_path(&record.socket);
        if let Some(dir) = &record.made_dir {
            remove_path(dir);
        }
        if let Some(raw) = raw {
            match ipam::Request::new(raw, invocation, ifname) {
                Ok(Some(request)) => {
                    if let Err(e) = ipam::del(&request) {
                        errors.push(e);
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        remove_path(&cni_device_info_path(&self.devinfo_dir, &invocation.container_id, ifname));
        if let Err(e) = records.remove(&record.container_id, &record.ifname) {
            errors.push(e);
        }
        errors
    }

    /// DEL: what the record lists, else the port the config and IDs name.
    pub fn del(&self, invocation: &Invocation, ifname: &str, raw: &Value) -> Result<(), CniError> {
        let records = Records { dir: data_dir(raw) };
        let record = match records.load(&invocation.container_id, ifname)? {
            Some(record) => record,
            None => {
                // No record: nothing was made, or the record was lost. The port name is known.
                let config = UserspaceConfig::parse(raw).ok();
                let socket =
                    config.as_ref().map_or_else(|| self.ovsdb_socket.clone(), |c| self.ovsdb_socket(c));
                Record {
                    container_id: invocation.container_id.clone(),
                    ifname: ifname.to_owned(),
                    ovsdb_socket: socket,
                    port: port_name(&invocation.container_id, ifname),
                    bridge: config.map(|c| c.bridge).unwrap_or_default(),
                    bridge_created: false,
                    socket: PathBuf::new(),
                    ovs_socket: None,
                    mounts: Vec::new(),
                    made_dir: None,
                }
            }
        };
        let mut errors = self.undo(&record, &records, Some(raw), invocation, ifname);
        match errors.len() {
            0 => Ok(()),
            _ => Err(errors.remove(0)),
        }
    }

    /// CHECK: the port is in OVS as ADD made it, and its socket is where the pod looks.
    pub fn check(&self, invocation: &Invocation, ifname: &str, raw: &Value) -> Result<(), CniError> {
        let records = Records { dir: data_dir(raw) };
        let record = records.load(&invocation.container_id, ifname)?.ok_or_else(|| {
            CniError::new(
                ErrorCode::Plugin,
                format!("userspace: no record of {ifname} of {}", invocation.container_id),
            )
        })?;
        let mut db = self.connect(&record.ovsdb_socket).map_err(ovs_error)?;
        let found = ovs::interface(&mut db, &record.port, &["name", "type"]).map_err(ovs_error)?;
        if found.is_none() {
            return Err(CniError::new(
                ErrorCode::Plugin,
                format!("userspace: OVS has no port {}", record.port),
            ));
        }
        if record.ovs_socket.is_some() && !record.socket.exists() {
            return Err(CniError::new(
                ErrorCode::Plugin,
                format!("userspace: socket {} is gone", record.socket.display()),
            ));
        }
        Ok(())
    }
}

/// Gives `path` to group `group` (a name or a number), read-write for it.
fn chown_to_group(path: &Path, group: &str) -> Result<(), CniError> {
    let gid = match group.parse::<u32>() {
        Ok(id) => nix::unistd::Gid::from_raw(id),
        Err(_) => nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid).ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("userspace config: host.vhost.group: no group {group:?}"),
            )
        })?,
    };
    nix::unistd::chown(path, None, Some(gid)).map_err(|e| {
        CniError::new(ErrorCode::Io, format!("userspace: giving {} to group {group}", path.display()))
            .with_details(e.to_string())
    })?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(io(path.display()))?.permissions().mode() | 0o060;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path.display()))
}

impl InProcessPlugin for Userspace {
    fn call(
        &self,
        command: Command,
        invocation: &Invocation,
        ifname: &str,
        config: &Value,
        cluster: Option<&dyn Cluster>,
    ) -> Result<Option<Value>, CniError> {
        match command {
            Command::Add => {
                crate::phases::timed("userspace add", || self.add(invocation, ifname, config, cluster))
                    .map(Some)
            }
            Command::Del => {
                crate::phases::timed("userspace del", || self.del(invocation, ifname, config)).map(|()| None)
            }
            Command::Check => self.check(invocation, ifname, config).map(|()| None),
            Command::Status | Command::Gc | Command::Version => Ok(None),
        }
    }
}
