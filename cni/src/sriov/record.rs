//! What an attachment did to its VF, kept on disk per VF (`<dataDir>/<pci>.json`, next to a
//! lock file `<pci>.lock` that every ADD, DEL and CHECK of that VF holds).
//!
//! ADD writes the record durably (write, fsync, rename) before it changes anything: after a
//! crash at any point, DEL, or the next ADD of the VF, finds what to put back. The record is
//! also the VF's allocation: an ADD finding a record whose namespace still exists refuses
//! the VF.

use std::path::{Path, PathBuf};

use plexus_hw::vf::VfState;
use plexus_hw::{IfName, MacAddr, PciAddress, VfIndex};
use serde::{Deserialize, Serialize};

use super::SriovError;
use crate::files;

/// The VF netdev as it was in the host before the attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetdevState {
    /// Its name.
    pub name: IfName,
    /// Its ifindex on the node: how the VF is found in the pod on a kernel that does not name
    /// a netdev's parent device (before 5.14). Absent in records of earlier versions.
    #[serde(default)]
    pub index: Option<u32>,
    /// Its MAC.
    pub mac: Option<MacAddr>,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
}

/// One VF's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The container it was attached for.
    pub container_id: String,
    /// The pod's namespace.
    pub netns: String,
    /// The interface name in the pod.
    pub ifname: IfName,
    /// The VF.
    pub vf: PciAddress,
    /// Its PF's netdev.
    pub pf: IfName,
    /// Its index under the PF.
    pub index: VfIndex,
    /// The PF-side settings before the attachment: all of them, whatever the config set.
    pub prior: VfState,
    /// The VF netdev before the attachment; `None` in DPDK mode.
    pub prior_netdev: Option<NetdevState>,
    /// The PF-side settings the attachment made (what CHECK expects).
    pub applied: VfState,
    /// The MAC the netdev gets in the pod, when the config sets one.
    pub pod_mac: Option<MacAddr>,
    /// The MTU the netdev gets in the pod, when the config sets one.
    pub pod_mtu: Option<u32>,
}

/// The records of one data directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SriovError + 'a {
    move |error| SriovError::Record { what, path: path.to_owned(), error }
}

impl Records {
    /// The records under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, vf: PciAddress) -> PathBuf {
        self.dir.join(format!("{vf}.json"))
    }

    /// Holds VF `vf`'s lock until the guard is dropped.
    pub fn lock(&self, vf: PciAddress) -> Result<files::Locked, SriovError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let path = self.dir.join(format!("{vf}.lock"));
        files::lock(&path).map_err(io("locking", &path))
    }

    /// VF `vf`'s record, `None` when it is not attached.
    pub fn load(&self, vf: PciAddress) -> Result<Option<Record>, SriovError> {
        let path = self.path(vf);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| SriovError::CorruptRecord { path, error }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Saves a record durably.
    pub fn save(&self, record: &Record) -> Result<(), SriovError> {
        let path = self.path(record.vf);
        // A record is plain data: it always encodes.
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        files::write_atomic(&path, &bytes, true).map_err(io("writing", &path))
    }

    /// Removes VF `vf`'s record; one already gone is fine.
    pub fn remove(&self, vf: PciAddress) -> Result<(), SriovError> {
        let path = self.path(vf);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing", &path)(e)),
        }
    }

    /// Removes the temporary files of saves a killed process left.
    pub fn sweep(&self) {
        files::sweep(&self.dir);
    }

    /// The VF attached for a container's interface, found by scanning the records: for a
    /// DEL whose config lost its `deviceID`.
    pub fn find(&self, container_id: &str, ifname: &IfName) -> Option<PciAddress> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        entries.flatten().find_map(|entry| {
            let name = entry.file_name();
            let vf = name.to_str()?.strip_suffix(".json")?.parse::<PciAddress>().ok()?;
            let record = self.load(vf).ok()??;
            (record.container_id == container_id && record.ifname == *ifname).then_some(vf)
        })
    }
}
