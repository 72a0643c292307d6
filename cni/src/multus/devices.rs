//! The devices the kubelet allocated to a pod, for NADs that name a device plugin resource
//! (`k8s.v1.cni.cncf.io/resourceName`): each attachment of a resource takes the pod's next
//! device of it, in sorted order, as `deviceID`. The agent asks the kubelet's PodResources API;
//! the kubelet's checkpoint file (`kubelet_internal_checkpoint`) is the fallback, and what the
//! binary reads alone, as Multus does.
//!
//! Device-info files (the device-info spec): the device plugin writes
//! `<devinfo>/dp/<resource with / as ->-<id>-device.json` at Allocate; ADD copies it to
//! `<devinfo>/cni/<containerID>-<ifname>-device.json` for the CNI side and shows it in
//! network-status; DEL removes the container's copies.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cluster::Pod;
use crate::paths;
use crate::spec::ErrorCode;

/// The pod's allocated devices could not be found out.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// The kubelet checkpoint could not be read.
    #[error("reading the kubelet checkpoint {path}: {error}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// The kubelet checkpoint is not what the kubelet writes.
    #[error("the kubelet checkpoint {path} is corrupt: {error}")]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// The kubelet's PodResources API answered with an error.
    #[error("the kubelet's PodResources API: {0}")]
    Kubelet(String),
}

impl crate::error::Failure for DevicesError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::Checkpoint { .. } => ErrorCode::Io,
            Self::Corrupt { .. } => ErrorCode::Decode,
            Self::Kubelet(_) => ErrorCode::TryAgainLater,
        };
        code.into()
    }
}

/// The pod's allocated devices.
pub trait Devices: Send + Sync {
    /// The IDs of the devices of `resource` allocated to `pod`'s containers, sorted.
    fn allocated(&self, pod: &Pod, resource: &str) -> Result<Vec<String>, DevicesError>;

    /// The device-info directory.
    fn devinfo_dir(&self) -> &Path;
}

/// Where the CNI side's device-info of container `container_id`'s interface `ifname` is.
pub fn cni_device_info_path(devinfo_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    devinfo_dir.join("cni").join(format!("{container_id}-{ifname}-device.json"))
}

/// Writes the CNI side's device-info of container `container_id`'s interface `ifname`.
pub fn write_cni_device_info(
    devinfo_dir: &Path,
    container_id: &str,
    ifname: &str,
    info: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(devinfo_dir.join("cni"))?;
    crate::files::write_atomic(&cni_device_info_path(devinfo_dir, container_id, ifname), info, false)
}

/// The device-info of device `id` of `resource`, copied for container `container_id`'s
/// interface `ifname`; `None` when the device plugin wrote none.
pub fn device_info_for_cni(
    devinfo_dir: &Path,
    resource: &str,
    id: &str,
    container_id: &str,
    ifname: &str,
) -> Option<Value> {
    // A device ID is the kubelet's word for what the device plugin gave: one that is no plain
    // name (a PCI address, a socket name) is not looked up as a path.
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        tracing::warn!("device ID {id:?} of {resource} cannot name a device-info file");
        return None;
    }
    let dp = devinfo_dir.join("dp").join(format!("{}-{id}-device.json", resource.replace('/', "-")));
    let text = std::fs::read(&dp).ok()?;
    let value: Value = serde_json::from_slice(&text).ok()?;
    if let Err(e) = write_cni_device_info(devinfo_dir, container_id, ifname, &text) {
        tracing::warn!("copying device-info {} for the CNI side: {e}", dp.display());
    }
    Some(value)
}

/// The device-info a built-in delegate wrote for the CNI side itself (`userspace`: the
/// vhost-user socket), when there is one.
pub fn written_device_info(devinfo_dir: &Path, container_id: &str, ifname: &str) -> Option<Value> {
    let text = std::fs::read(cni_device_info_path(devinfo_dir, container_id, ifname)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Removes the CNI-side device-info copies of a container's interfaces `ifnames`, and what
/// killed writers left. Named exactly: a container ID may be another's with `-...` after it.
pub fn forget_device_info<'a>(
    devinfo_dir: &Path,
    container_id: &str,
    ifnames: impl Iterator<Item = &'a str>,
) {
    for ifname in ifnames {
        let _ = std::fs::remove_file(cni_device_info_path(devinfo_dir, container_id, ifname));
    }
    crate::files::sweep(&devinfo_dir.join("cni"));
}

/// The kubelet's checkpoint file: `Data.PodDeviceEntries[]` with `PodUID`, `ContainerName`,
/// `ResourceName` and `DeviceIDs` (a map NUMA node -> IDs since Kubernetes 1.20, a plain list
/// before).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The checkpoint file.
    pub path: PathBuf,
    /// The device-info directory.
    pub devinfo_dir: PathBuf,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self { path: paths::KUBELET_CHECKPOINT.into(), devinfo_dir: paths::DEVINFO_DIR.into() }
    }
}

/// The IDs of `resource` for pod `uid` in checkpoint text `text`, sorted.
pub fn checkpoint_devices(text: &[u8], uid: &str, resource: &str) -> Result<Vec<String>, serde_json::Error> {
    let value: Value = serde_json::from_slice(text)?;
    let entries = value["Data"]["PodDeviceEntries"].as_array().cloned().unwrap_or_default();
    let mut ids = Vec::new();
    for entry in entries.iter().filter(|e| e["PodUID"] == uid && e["ResourceName"] == resource) {
        match &entry["DeviceIDs"] {
            Value::Object(by_numa) => {
                ids.extend(by_numa.values().flat_map(|v| v.as_array().cloned().unwrap_or_default()))
            }
            Value::Array(list) => ids.extend(list.iter().cloned()),
            _ => {}
        }
    }
    let mut ids: Vec<String> = ids.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

impl Devices for Checkpoint {
    fn allocated(&self, pod: &Pod, resource: &str) -> Result<Vec<String>, DevicesError> {
        let text = std::fs::read(&self.path)
            .map_err(|error| DevicesError::Checkpoint { path: self.path.clone(), error })?;
        checkpoint_devices(&text, &pod.uid, resource)
            .map_err(|error| DevicesError::Corrupt { path: self.path.clone(), error })
    }

    fn devinfo_dir(&self) -> &Path {
        &self.devinfo_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_entries_of_both_formats() {
        let text = br#"{"Data": {"PodDeviceEntries": [
            {"PodUID": "u1", "ContainerName": "a", "ResourceName": "intel.com/sriov", "DeviceIDs": {"1": ["0000:30:02.1"], "0": ["0000:20:02.3", "0000:20:02.0"]}},
            {"PodUID": "u1", "ContainerName": "b", "ResourceName": "intel.com/sriov", "DeviceIDs": ["0000:20:02.5"]},
            {"PodUID": "u1", "ContainerName": "a", "ResourceName": "intel.com/other", "DeviceIDs": ["x"]},
            {"PodUID": "u2", "ContainerName": "a", "ResourceName": "intel.com/sriov", "DeviceIDs": ["y"]}],
            "RegisteredDevices": {}}, "Checksum": 1}"#;
        assert_eq!(
            checkpoint_devices(text, "u1", "intel.com/sriov").unwrap(),
            ["0000:20:02.0", "0000:20:02.3", "0000:20:02.5", "0000:30:02.1"]
        );
        assert!(checkpoint_devices(text, "u3", "intel.com/sriov").unwrap().is_empty());
        assert!(checkpoint_devices(b"{", "u1", "r").is_err());
    }

    #[test]
    fn device_info_is_copied_for_the_cni_side_and_forgotten() {
        let dir = plexus_sim::scratch("devinfo").unwrap();
        std::fs::create_dir_all(dir.path().join("dp")).unwrap();
        let info = r#"{"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:20:02.1"}}"#;
        std::fs::write(dir.path().join("dp/intel.com-sriov-0000:20:02.1-device.json"), info).unwrap();
        let value =
            device_info_for_cni(dir.path(), "intel.com/sriov", "0000:20:02.1", "cid", "net1").unwrap();
        assert_eq!(value["pci"]["pci-address"], "0000:20:02.1");
        let copy = dir.path().join("cni/cid-net1-device.json");
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), info);
        assert!(device_info_for_cni(dir.path(), "intel.com/sriov", "0000:20:02.2", "cid", "net2").is_none());
        // Another container whose ID begins with this one's.
        device_info_for_cni(dir.path(), "intel.com/sriov", "0000:20:02.1", "cid-2", "net1").unwrap();
        forget_device_info(dir.path(), "cid", ["net1"].into_iter());
        assert!(!copy.exists());
        assert!(dir.path().join("cni/cid-2-net1-device.json").exists());
    }
}
