//! `Allocate`: what a container gets for its devices.
//!
//! As the SR-IOV device plugin gives it, so existing images and CNI configs find their devices:
//! - `PCIDEVICE_<PREFIX>_<NAME>`: the PCI addresses, comma-separated;
//! - `PCIDEVICE_<PREFIX>_<NAME>_INFO`: per device, `generic.deviceID`, `vfio.mount` and
//!   `vfio.dev-mount` for VFs bound to vfio-pci, and `extra` from the pool's `additionalInfo`;
//! - device nodes: `/dev/vfio/vfio` and `/dev/vfio/<group>` for vfio-pci, `/dev/vhost-net` and
//!   `/dev/net/tun` for `needVhostNet`, the RDMA device's `/dev/infiniband/uverbsN`, `umadN`,
//!   `issmN` and `rdma_cm` for `isRdma` (and an `rdma` part in `_INFO` naming them);
//! - a device-info file per device (device-info spec 1.1.0) for the CNI side.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::config::PoolSpec;
use crate::pools::PoolDevice;
use crate::proto::deviceplugin::{ContainerAllocateResponse, DeviceSpec};

/// Where device-info files go by default (`<dir>/dp/...`), as the device plugins and Multus
/// agree.
pub const DEFAULT_DEVINFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";

const VFIO_CONTAINER: &str = "/dev/vfio/vfio";

/// An allocation that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// The kubelet named a device this pool does not have.
    #[error("unknown device ID {0:?} (not in pool {1})")]
    UnknownDevice(String, String),
    /// A VF bound to vfio-pci has no IOMMU group, so it cannot be handed to a container.
    #[error("device {0} is bound to vfio-pci but has no IOMMU group")]
    NoIommuGroup(String),
    /// The device-info file could not be written.
    #[error("writing device-info file {path}: {error}")]
    DeviceInfo {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
}

/// `PCIDEVICE_<PREFIX>_<NAME>`: upper case, with `.`, `/` and `-` made `_`.
pub fn env_name(pool: &PoolSpec) -> String {
    let raw = format!("PCIDEVICE_{}_{}", pool.prefix, pool.name);
    raw.chars().map(|c| if matches!(c, '.' | '/' | '-') { '_' } else { c.to_ascii_uppercase() }).collect()
}

/// The device-info file of `device` in `pool`: `<dir>/dp/<prefix>-<name>-<pci>-device.json`.
pub fn device_info_path(devinfo_dir: &Path, pool: &PoolSpec, id: &str) -> PathBuf {
    devinfo_dir.join("dp").join(format!("{}-{}-{id}-device.json", pool.prefix, pool.name))
}

/// The prefix of every device-info file of `pool`, to remove them on shutdown.
pub fn device_info_prefix(pool: &PoolSpec) -> String {
    format!("{}-{}-", pool.prefix, pool.name)
}

fn is_vfio(device: &PoolDevice) -> bool {
    device.driver.as_deref() == Some("vfio-pci")
}

/// The response for one container that was given `ids` of `pool`, whose devices are
/// `devices`; writes the device-info files into `devinfo_dir`.
pub fn container_response(
    pool: &PoolSpec,
    devices: &[PoolDevice],
    ids: &[String],
    devinfo_dir: &Path,
) -> Result<ContainerAllocateResponse, AllocateError> {
    let mut chosen = Vec::with_capacity(ids.len());
    for id in ids {
        let device = devices
            .iter()
            .find(|d| &d.id() == id)
            .ok_or_else(|| AllocateError::UnknownDevice(id.clone(), pool.resource_name()))?;
        chosen.push(device);
    }

    let mut info = Map::new();
    let mut specs: BTreeMap<String, DeviceSpec> = BTreeMap::new();
    let mut add_spec = |path: String| {
        specs.entry(path.clone()).or_insert(DeviceSpec {
            container_path: path.clone(),
            host_path: path,
            permissions: "rw".to_owned(),
        });
    };
    for device in &chosen {
        let id = device.id();
        let mut entry = Map::new();
        entry.insert("generic".into(), json!({ "deviceID": id }));
        if is_vfio(device) {
            let group = device.iommu_group.ok_or_else(|| AllocateError::NoIommuGroup(id.clone()))?;
            let dev_mount = format!("/dev/vfio/{group}");
            entry.insert("vfio".into(), json!({ "mount": VFIO_CONTAINER, "dev-mount": dev_mount }));
            add_spec(VFIO_CONTAINER.to_owned());
            add_spec(dev_mount);
        }
        if device.need_vhost_net {
            add_spec("/dev/vhost-net".to_owned());
            add_spec("/dev/net/tun".to_owned());
        }
        if !device.rdma_char_devices.is_empty() {
            entry.insert("rdma".into(), rdma_info(device));
            for path in &device.rdma_char_devices {
                add_spec(path.clone());
            }
        }
        let mut extra: BTreeMap<&String, &String> = BTreeMap::new();
        for key in ["*", id.as_str()] {
            if let Some(values) = pool.additional_info.get(key) {
                extra.extend(values.iter());
            }
        }
        if !extra.is_empty() {
            entry.insert("extra".into(), json!(extra));
        }
        info.insert(id.clone(), Value::Object(entry));
        write_device_info(&device_info_path(devinfo_dir, pool, &id), device)?;
    }

    let env = env_name(pool);
    let mut envs = std::collections::HashMap::new();
    envs.insert(env.clone(), ids.join(","));
    envs.insert(format!("{env}_INFO"), Value::Object(info).to_string());
    Ok(ContainerAllocateResponse {
        envs,
        mounts: Vec::new(),
        devices: specs.into_values().collect(),
        annotations: Default::default(),
        cdi_devices: Vec::new(),
    })
}

/// The `rdma` part of a device's `_INFO`, as the device plugin gives it: each kind of
/// character device by its path in the container, and the RDMA device's name.
fn rdma_info(device: &PoolDevice) -> Value {
    let mut info = Map::new();
    for path in &device.rdma_char_devices {
        let name = path.rsplit('/').next().unwrap_or_default();
        let kind = ["uverbs", "umad", "issm", "rdma_cm"].into_iter().find(|k| name.starts_with(k));
        if let Some(kind) = kind {
            info.insert(kind.into(), json!(path));
        }
    }
    if let Some(rdma) = device.rdma_devices.first() {
        info.insert("rdma_dev".into(), json!(rdma));
    }
    Value::Object(info)
}

/// Writes the device-info file (spec 1.1.0) atomically: a reader sees the old file or the new.
fn write_device_info(path: &Path, device: &PoolDevice) -> Result<(), AllocateError> {
    let err = |error| AllocateError::DeviceInfo { path: path.to_owned(), error };
    let mut pci = Map::new();
    pci.insert("pci-address".into(), json!(device.id()));
    if let Some(pf) = device.pf {
        pci.insert("pf-pci-address".into(), json!(pf.to_string()));
    }
    if device.need_vhost_net {
        pci.insert("vhost-net".into(), json!("/dev/vhost-net"));
    }
    if let Some(rdma) = device.rdma_devices.first() {
        pci.insert("rdma-device".into(), json!(rdma));
    }
    let content = json!({ "type": "pci", "version": "1.1.0", "pci": pci }).to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(content.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Removes every device-info file of `pool`; returns how many.
pub fn remove_device_info(devinfo_dir: &Path, pool: &PoolSpec) -> std::io::Result<usize> {
    let dir = devinfo_dir.join("dp");
    let prefix = device_info_prefix(pool);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with("-device.json") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_PREFIX, PoolConfig};
    use plexus_hw::{IommuGroup, NumaNode, VfIndex};

    fn pool() -> PoolSpec {
        let text = r#"{"resourceList": [{"resourceName": "sriov-net_a", "resourcePrefix": "example.com", "selectors": {},
                       "additionalInfo": {"*": {"token": "t1"}, "0000:20:02.1": {"port": "p2"}}}]}"#;
        PoolConfig::parse(text, "p", DEFAULT_PREFIX).unwrap().pools.remove(0)
    }

    fn device(function: u8, driver: &str, group: Option<u32>, vhost: bool) -> PoolDevice {
        PoolDevice {
            address: plexus_hw::PciAddress::new(0, 0x20, 2, function).unwrap(),
            pf: plexus_hw::PciAddress::new(0, 0x20, 0, 0),
            vf_index: Some(VfIndex(u32::from(function))),
            numa_node: Some(NumaNode(0)),
            driver: Some(driver.to_owned()),
            netdev: None,
            iommu_group: group.map(IommuGroup),
            rdma_devices: Vec::new(),
            rdma_char_devices: Vec::new(),
            need_vhost_net: vhost,
            healthy: true,
        }
    }

    #[test]
    fn envs_device_nodes_and_device_info_files() {
        let scratch = plexus_sim::scratch("alloc").unwrap();
        let pool = pool();
        let devices = vec![
            device(0, "iavf", Some(41), false),
            device(1, "vfio-pci", Some(42), false),
            device(2, "vfio-pci", Some(43), true),
        ];
        let ids: Vec<String> = devices.iter().map(PoolDevice::id).collect();
        let resp = container_response(&pool, &devices, &ids, scratch.path()).unwrap();

        assert_eq!(env_name(&pool), "PCIDEVICE_EXAMPLE_COM_SRIOV_NET_A");
        assert_eq!(resp.envs["PCIDEVICE_EXAMPLE_COM_SRIOV_NET_A"], "0000:20:02.0,0000:20:02.1,0000:20:02.2");
        let info: Value = serde_json::from_str(&resp.envs["PCIDEVICE_EXAMPLE_COM_SRIOV_NET_A_INFO"]).unwrap();
        assert_eq!(
            info["0000:20:02.0"],
            json!({"generic": {"deviceID": "0000:20:02.0"}, "extra": {"token": "t1"}})
        );
        assert_eq!(
            info["0000:20:02.1"],
            json!({"generic": {"deviceID": "0000:20:02.1"}, "vfio": {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/42"},
                   "extra": {"token": "t1", "port": "p2"}})
        );
        let paths: Vec<&str> = resp.devices.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(
            paths,
            ["/dev/net/tun", "/dev/vfio/42", "/dev/vfio/43", "/dev/vfio/vfio", "/dev/vhost-net"]
        );
        assert!(resp.devices.iter().all(|d| d.container_path == d.host_path && d.permissions == "rw"));

        let file = scratch.path().join("dp/example.com-sriov-net_a-0000:20:02.2-device.json");
        let content: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(
            content,
            json!({"type": "pci", "version": "1.1.0",
                   "pci": {"pci-address": "0000:20:02.2", "pf-pci-address": "0000:20:00.0", "vhost-net": "/dev/vhost-net"}})
        );
        assert_eq!(remove_device_info(scratch.path(), &pool).unwrap(), 3);
        assert!(!file.exists());
    }

    #[test]
    fn unknown_ids_and_vfio_without_group_are_refused() {
        let scratch = plexus_sim::scratch("alloc-err").unwrap();
        let pool = pool();
        let devices = vec![device(1, "vfio-pci", None, false)];
        let err = container_response(&pool, &devices, &["0000:20:02.7".into()], scratch.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown device ID \"0000:20:02.7\" (not in pool example.com/sriov-net_a)"
        );
        let err = container_response(&pool, &devices, &[devices[0].id()], scratch.path()).unwrap_err();
        assert!(err.to_string().contains("no IOMMU group"));
    }
}
