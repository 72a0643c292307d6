//! What each attachment made (`<dataDir>/<container>-<ifname>.json`), written before OVS is
//! touched and after each step, so DEL and a failed ADD undo exactly that; and the ports a DEL
//! could not remove because ovsdb-server did not answer (`<dataDir>/pending/`), removed by the
//! next call that reaches it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::UserspaceError;
use super::ovs;
use super::ovsdb::Ovsdb;
use crate::files;

/// What one attachment made, for DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The container.
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
    /// ovsdb-server's socket the port was made through.
    pub ovsdb_socket: PathBuf,
    /// The OVS port.
    pub port: String,
    /// Its bridge.
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

pub(super) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> UserspaceError + 'a {
    move |error| UserspaceError::Io { what: format!("{what} {}", path.display()), error }
}

/// The records of one data directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The records under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join("pending")
    }

    /// Saves `record` durably.
    pub fn save(&self, record: &Record) -> Result<(), UserspaceError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let path = self.path(&record.container_id, &record.ifname);
        // A record is plain data: it always encodes.
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        files::write_atomic(&path, &bytes, true).map_err(io("writing", &path))
    }

    /// The record of a container's interface, `None` when there is none.
    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, UserspaceError> {
        let path = self.path(container_id, ifname);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| UserspaceError::CorruptRecord { path, error }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Removes a record; one already gone is fine.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), UserspaceError> {
        let path = self.path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Removes the temporary files of saves a killed process left.
    pub fn remove_leftovers(&self) {
        files::sweep(&self.dir);
        files::sweep(&self.pending_dir());
    }

    /// Keeps `record`'s port for removal once ovsdb-server answers again.
    pub fn defer(&self, record: &Record) -> Result<(), UserspaceError> {
        let dir = self.pending_dir();
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let path = dir.join(format!("{}.json", record.port));
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        files::write_atomic(&path, &bytes, true).map_err(io("writing", &path))
    }

    /// Removes the ports left by DELs that could not reach `socket`'s server.
    pub fn sweep(&self, db: &mut Ovsdb, socket: &Path, timeout: Duration) {
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
