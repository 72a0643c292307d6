//! The `userspace` delegate for OVS-DPDK: a vhost-user port on an OVS bridge whose socket sits
//! in a directory the pod shares, as the userspace CNI plugin makes it, with its NAD keys and
//! the pod annotations DPDK images read (`userspace/configuration-data`,
//! `userspace/mapped-dir`). OVS is reached over OVSDB, not `ovs-vsctl`.
//!
//! - [`config`]: the userspace plugin's keys.
//! - [`ovsdb`]: a small RFC 7047 client; [`ovs`]: the transactions a port needs.
//! - [`records`]: what each attachment made, and the ports left for later.
//! - [`mounts`]: bind mounts and socket files.
//! - [`verbs`]: ADD, DEL, CHECK.
//!
//! Every attachment keeps a record of what it made, written before OVS is touched, so DEL
//! undoes exactly that, twice or after a crash. A DEL that cannot reach ovsdb-server does the
//! local part and leaves the port in a pending list that the next call reaching OVS removes.

pub mod config;
pub mod mounts;
pub mod ovs;
pub mod ovsdb;
pub mod records;
pub mod verbs;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use self::ovsdb::OvsdbError;
use crate::delegate::{InProcessPlugin, Request};
use crate::error::Error;
use crate::paths;
use crate::spec::ErrorCode;

/// The pod annotation with what each userspace attachment gave the pod.
pub const CONFIGURATION_DATA_ANNOTATION: &str = "userspace/configuration-data";
/// The pod annotation with where the shared directory is inside the pod.
pub const MAPPED_DIR_ANNOTATION: &str = "userspace/mapped-dir";
/// The longest unix socket path (`sun_path` is 108 bytes with the terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// A failure of the `userspace` delegate.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    /// A file, directory or mount could not be made, read or removed.
    #[error("userspace: {what}: {error}")]
    Io {
        /// The operation and its path.
        what: String,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// ovsdb-server failed or could not be reached.
    #[error("userspace: {0}")]
    Ovs(OvsdbError),
    /// The pod's shared directory is not there.
    #[error("userspace: the pod's shared directory {} does not exist", .0.display())]
    NoSharedDir(PathBuf),
    /// ovs-vswitchd made no server-mode socket.
    #[error("userspace: ovs-vswitchd made no socket {} (ovsRunDir?)", .0.display())]
    NoServerSocket(PathBuf),
    /// CHECK of an attachment with no record.
    #[error("userspace: no record of {ifname} of {container}")]
    NoRecord {
        /// The interface.
        ifname: String,
        /// The container.
        container: String,
    },
    /// CHECK: OVS has no such port.
    #[error("userspace: OVS has no port {0}")]
    NoPort(String),
    /// CHECK: the pod's socket is gone.
    #[error("userspace: socket {} is gone", .0.display())]
    SocketGone(PathBuf),
    /// A record is not what Plexus writes.
    #[error("userspace: record {path} is corrupt: {error}")]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        error: serde_json::Error,
    },
}

impl crate::error::Failure for UserspaceError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::Io { .. } | Self::NoSharedDir(_) | Self::CorruptRecord { .. } => ErrorCode::Io,
            Self::Ovs(e) if e.is_unreachable() => ErrorCode::TryAgainLater,
            _ => ErrorCode::Plugin,
        };
        code.into()
    }
}

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
                .map_or_else(|| paths::OVSDB_SOCKET.into(), PathBuf::from),
            ovs_run_dir: paths::OVS_RUN_DIR.into(),
            kubelet_dir: paths::KUBELET_DIR.into(),
            run_dir: paths::SOCKET_DIR.into(),
            devinfo_dir: paths::DEVINFO_DIR.into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where a config keeps its records (`dataDir`).
fn data_dir(raw: &Value) -> PathBuf {
    crate::files::data_dir(raw, paths::USERSPACE_DATA_DIR)
}

/// The port's name, as the userspace plugin names it: the container ID's first 12
/// characters and the interface.
pub fn port_name(container_id: &str, ifname: &str) -> String {
    let prefix: String = container_id.chars().take(12).collect();
    format!("{prefix}-{ifname}")
}

impl InProcessPlugin for Userspace {
    fn add(&self, request: &Request<'_>) -> Result<Value, Error> {
        crate::phases::timed("userspace add", || self.add_port(request))
    }

    fn del(&self, request: &Request<'_>) -> Result<(), Error> {
        crate::phases::timed("userspace del", || self.del_port(request))
    }

    fn check(&self, request: &Request<'_>) -> Result<(), Error> {
        self.check_port(request)
    }
}
