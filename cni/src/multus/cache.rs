//! The DEL cache: before the first delegate runs, ADD saves every attachment (its config text
//! byte for byte, its runtime arguments) under `<cniDir>/<containerID>`, and adds each result as
//! it comes. DEL and CHECK then need no API server, no NAD and no pod.

use std::path::{Path, PathBuf};

use plexus_hw::IfName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::ErrorCode;

/// A failure of the DEL cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The container ID cannot name a cache file.
    #[error("invalid CNI_CONTAINERID {0:?}")]
    InvalidContainerId(String),
    /// Reading, writing or removing the cache failed.
    #[error("{what} {path}: {error}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// The cache file is not what Plexus writes.
    #[error("cache {path} is corrupt: {error}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        error: serde_json::Error,
    },
}

impl crate::error::Failure for CacheError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::InvalidContainerId(_) => ErrorCode::InvalidEnvironment,
            Self::Io { .. } => ErrorCode::Io,
            Self::Corrupt { .. } => ErrorCode::Decode,
        };
        code.into()
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |error| CacheError::Io { what, path: path.to_owned(), error }
}

/// One attachment as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAttachment {
    /// The network's name in network-status (`ns/nad`).
    pub name: String,
    /// The interface in the pod.
    pub ifname: IfName,
    /// True for the cluster network.
    pub cluster_network: bool,
    /// The config text, exactly as found.
    pub config: String,
    /// What the delegate's plugins got as runtime arguments.
    #[serde(default)]
    pub runtime_config: Map<String, Value>,
    /// Keys set in every plugin of the config (`deviceID`, `args`).
    #[serde(default)]
    pub injected: Map<String, Value>,
    /// The ADD result, once the delegate succeeded.
    #[serde(default)]
    pub result: Option<Value>,
}

/// What ADD saved for a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS at ADD.
    pub netns: String,
    /// CNI_IFNAME at ADD.
    pub ifname: IfName,
    /// CNI_ARGS at ADD.
    pub cni_args: String,
    /// The attachments, in ADD order.
    pub attachments: Vec<CachedAttachment>,
}

/// The cache file of a container.
pub fn path(cni_dir: &Path, container_id: &str) -> PathBuf {
    cni_dir.join(container_id)
}

/// How hard a save tries to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written, fsynced, renamed: the save before any delegate runs. After a crash the entry
    /// is there whole or not at all, and DEL after a reboot still finds what to release
    /// (host-local's reservations are on disk too).
    Synced,
    /// Written and renamed, not synced: the updates that add results (to an entry a synced save
    /// made). Losing one costs DEL only the `prevResult` it passes, which delegates tolerate
    /// missing; an fsync costs more than the meta-plugin's whole own work (about 1.4 ms on this
    /// project's VM).
    Unsynced,
}

/// Saves atomically, so a reader sees the old entry or the new one, never half of either: a
/// new entry is linked at its name whole, an update renamed over the entry it replaces.
pub fn save(cni_dir: &Path, entry: &CacheEntry, durability: Durability) -> Result<(), CacheError> {
    if entry.container_id.contains('/') || entry.container_id.starts_with('.') {
        return Err(CacheError::InvalidContainerId(entry.container_id.clone()));
    }
    let target = path(cni_dir, &entry.container_id);
    // A cache entry is plain JSON values: it always encodes.
    let bytes = serde_json::to_vec(entry).unwrap_or_default();
    let write = || match durability {
        // The save before the delegates: the entry is new but for a repeated ADD.
        Durability::Synced => crate::files::write_atomic(&target, &bytes, true),
        Durability::Unsynced => crate::files::replace_atomic(&target, &bytes, false),
    };
    // The directory is made the first time only (the lock, taken first, usually made it).
    match write() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(cni_dir).map_err(io("creating", cni_dir))?;
            write()
        }
        written => written,
    }
    .map_err(io("writing", &target))
}

/// The entry of a container, `None` when there is none. An unreadable entry is an error: DEL
/// must not report success while delegates were never asked to clean up.
pub fn load(cni_dir: &Path, container_id: &str) -> Result<Option<CacheEntry>, CacheError> {
    let file = path(cni_dir, container_id);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| CacheError::Corrupt { path: file, error }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", &file)(e)),
    }
}

/// Removes a container's entry; one already gone is fine.
pub fn remove(cni_dir: &Path, container_id: &str) -> Result<(), CacheError> {
    let file = path(cni_dir, container_id);
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", &file)(e)),
    }
}
/// The directory of the per-container locks, in the cache directory (a dot-name, so never
/// taken for an entry).
const LOCKS: &str = ".locks";

fn lock_path(cni_dir: &Path, container_id: &str) -> PathBuf {
    cni_dir.join(LOCKS).join(container_id)
}

/// Takes container `container_id`'s lock, waiting for its holder: ADD, DEL and CHECK of one
/// container run one after another, in the agent and in `plexus` binaries alike (a DEL sent
/// while an ADD still runs waits for it, then undoes what it did). The kernel drops the lock
/// of a process that dies.
pub fn lock(cni_dir: &Path, container_id: &str) -> Result<crate::files::Locked, CacheError> {
    let path = lock_path(cni_dir, container_id);
    match crate::files::lock_entry(&path, true) {
        Ok(Some(held)) => Ok(held),
        Ok(None) => Err(io("locking", &path)(std::io::ErrorKind::WouldBlock.into())),
        Err(e) => Err(io("locking", &path)(e)),
    }
}

/// [`lock`] when nobody holds it, else `None` (GC passes over a container in use).
pub fn try_lock(cni_dir: &Path, container_id: &str) -> Result<Option<crate::files::Locked>, CacheError> {
    let path = lock_path(cni_dir, container_id);
    crate::files::lock_entry(&path, false).map_err(io("locking", &path))
}

/// Lets go of container `container_id`'s lock; its file goes too once the container has no
/// entry (nothing left for a later call to wait on).
pub fn unlock(cni_dir: &Path, container_id: &str, held: crate::files::Locked) {
    if !path(cni_dir, container_id).exists()
        && let Err(e) = held.remove()
    {
        tracing::warn!("removing the lock of container {container_id}: {e}");
    }
}

/// Removes the temporary files of saves a killed process left in the cache directory.
pub fn sweep(cni_dir: &Path) {
    crate::files::sweep(cni_dir);
}

/// The container IDs with an entry.
pub fn list(cni_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(cni_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    ids.sort();
    ids
}
