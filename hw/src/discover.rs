//! SR-IOV discovery: physical functions, their virtual functions and the NUMA topology, read
//! from `bus/pci/devices/*` under a [`SysfsRoot`].
//!
//! Discovery never stops at one broken device: the device is left out and a [`Problem`] says
//! why, naming the file.

use std::fmt;
use std::io;

use crate::error::SysfsError;
use crate::names;
use crate::numa::{NumaNode, NumaTopology};
use crate::pci::{PciAddress, PciClass, PciId};
use crate::sysfs::{SysfsDir, SysfsRoot};
use crate::types::{IfName, IommuGroup, LinkType, OperState, VfIndex};

/// Where PCI devices are listed, relative to the sysfs root.
pub const PCI_DEVICES: &str = "bus/pci/devices";

/// Drivers that give a VF to userspace (DPDK) instead of making a netdev.
pub const DPDK_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/// A network interface of a PCI function, as sysfs shows it in `net/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netdev {
    /// The interface name.
    pub name: IfName,
    /// From `type`.
    pub link_type: Option<LinkType>,
    /// From `operstate`.
    pub operstate: Option<OperState>,
    /// From `speed`, in Mb/s, when the link reports one.
    pub speed_mbps: Option<u32>,
}

/// What PFs and VFs have in common: one PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Its address.
    pub address: PciAddress,
    /// `vendor`.
    pub vendor: PciId,
    /// `device`.
    pub device: PciId,
    /// `class`.
    pub class: PciClass,
    /// The bound driver, `None` when unbound.
    pub driver: Option<String>,
    /// `numa_node`; `None` when the firmware does not say (-1) or the kernel has no NUMA.
    pub numa_node: Option<NumaNode>,
    /// The IOMMU group, when the IOMMU is on.
    pub iommu_group: Option<IommuGroup>,
    /// The first netdev in `net/`, `None` when the driver makes none (vfio-pci, uio).
    pub netdev: Option<Netdev>,
}

impl PciFunction {
    /// The netdev's name, if it has one.
    pub fn netdev_name(&self) -> Option<&str> {
        self.netdev.as_ref().map(|n| n.name.as_str())
    }
}

/// An SR-IOV physical function and its VFs (sorted by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalFunction {
    /// The PF itself.
    pub function: PciFunction,
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
    /// The VFs found through `virtfn<N>` links.
    pub vfs: Vec<VirtualFunction>,
}

impl PhysicalFunction {
    /// The vendor's name from the PCI ID database.
    pub fn vendor_name(&self) -> Option<&'static str> {
        names::vendor_name(self.function.vendor)
    }

    /// The device's name from the PCI ID database.
    pub fn device_name(&self) -> Option<&'static str> {
        names::device_name(self.function.vendor, self.function.device)
    }
}

/// An SR-IOV virtual function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualFunction {
    /// The VF itself.
    pub function: PciFunction,
    /// Its index under the PF.
    pub index: VfIndex,
    /// Its PF, from the `physfn` link.
    pub pf: PciAddress,
}

impl VirtualFunction {
    /// True when the VF is bound to a userspace driver and has no netdev (DPDK mode).
    pub fn is_dpdk(&self) -> bool {
        self.function.netdev.is_none()
            && self
                .function
                .driver
                .as_deref()
                .is_some_and(|d| DPDK_DRIVERS.contains(&d))
    }
}

/// A device (or NUMA node) that discovery left out, and why.
#[derive(Debug)]
pub struct Problem {
    /// The PCI device, when the problem belongs to one.
    pub device: Option<PciAddress>,
    /// What went wrong, naming the file.
    pub error: SysfsError,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.device {
            Some(device) => write!(f, "device {device} skipped: {}", self.error),
            None => write!(f, "skipped: {}", self.error),
        }
    }
}

/// Everything discovery found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The NUMA nodes.
    pub numa: NumaTopology,
    /// SR-IOV physical functions, sorted by PCI address.
    pub pfs: Vec<PhysicalFunction>,
    /// Devices left out.
    pub problems: Vec<Problem>,
}

impl Discovery {
    /// The VF at `address`, with its PF.
    pub fn vf(&self, address: PciAddress) -> Option<(&PhysicalFunction, &VirtualFunction)> {
        self.pfs.iter().find_map(|pf| {
            pf.vfs
                .iter()
                .find(|vf| vf.function.address == address)
                .map(|vf| (pf, vf))
        })
    }

    /// Every VF of every PF, in PF then index order.
    pub fn vfs(&self) -> impl Iterator<Item = (&PhysicalFunction, &VirtualFunction)> {
        self.pfs
            .iter()
            .flat_map(|pf| pf.vfs.iter().map(move |vf| (pf, vf)))
    }
}

/// Discovers SR-IOV PFs, VFs and NUMA nodes under `root`.
///
/// Fails only when the root or its `bus/pci/devices` cannot be listed; a broken device is
/// skipped and reported in [`Discovery::problems`].
pub fn discover(root: &SysfsRoot) -> Result<Discovery, SysfsError> {
    root.check()?;
    let devices = root.dir(PCI_DEVICES);
    let names = match std::fs::read_dir(devices.path()) {
        Ok(_) => devices.list("")?,
        Err(source) => {
            return Err(SysfsError::Root {
                path: devices.path().to_owned(),
                source,
            });
        }
    };

    let (numa, numa_errors) = NumaTopology::read(root);
    let mut found = Discovery {
        numa,
        pfs: Vec::new(),
        problems: numa_errors
            .into_iter()
            .map(|error| Problem {
                device: None,
                error,
            })
            .collect(),
    };

    for name in names {
        let address = match name.parse::<PciAddress>() {
            Ok(address) => address,
            Err(e) => {
                let path = devices.path().join(&name);
                found.problems.push(Problem {
                    device: None,
                    error: SysfsError::Malformed {
                        path,
                        value: e.value,
                        expected: "a PCI address name",
                    },
                });
                continue;
            }
        };
        let dir = devices.child(&name);
        // Only SR-IOV capable functions have sriov_totalvfs; VFs are reached through their PF.
        let total_vfs =
            match dir.parse_opt("sriov_totalvfs", "a VF count", |v| v.parse::<u32>().ok()) {
                Ok(Some(total)) => total,
                Ok(None) => continue,
                Err(error) => {
                    found.problems.push(Problem {
                        device: Some(address),
                        error,
                    });
                    continue;
                }
            };
        match read_pf(&devices, &dir, address, total_vfs, &mut found.problems) {
            Ok(pf) => found.pfs.push(pf),
            Err(error) => found.problems.push(Problem {
                device: Some(address),
                error,
            }),
        }
    }
    found.pfs.sort_by_key(|pf| pf.function.address);
    Ok(found)
}

fn read_pf(
    devices: &SysfsDir,
    dir: &SysfsDir,
    address: PciAddress,
    total_vfs: u32,
    problems: &mut Vec<Problem>,
) -> Result<PhysicalFunction, SysfsError> {
    let function = read_function(dir, address)?;
    let num_vfs = dir.parse("sriov_numvfs", "a VF count", |v| v.parse::<u32>().ok())?;

    let mut links: Vec<(u32, String)> = dir
        .list("")?
        .into_iter()
        .filter_map(|entry| {
            let index = entry.strip_prefix("virtfn")?.parse::<u32>().ok()?;
            Some((index, entry))
        })
        .collect();
    // By number: virtfn10 comes after virtfn9, not after virtfn1.
    links.sort_unstable_by_key(|(index, _)| *index);

    let mut vfs = Vec::with_capacity(links.len());
    for (index, link) in links {
        match read_vf(devices, dir, &link, address, VfIndex(index)) {
            Ok(vf) => vfs.push(vf),
            Err((device, error)) => problems.push(Problem {
                device: Some(device),
                error,
            }),
        }
    }
    Ok(PhysicalFunction {
        function,
        total_vfs,
        num_vfs,
        vfs,
    })
}

fn read_vf(
    devices: &SysfsDir,
    pf_dir: &SysfsDir,
    link: &str,
    pf: PciAddress,
    index: VfIndex,
) -> Result<VirtualFunction, (PciAddress, SysfsError)> {
    let link_path = pf_dir.path().join(link);
    let target = pf_dir
        .link_target_name(link)
        .and_then(|t| {
            t.ok_or(SysfsError::Missing {
                path: link_path.clone(),
            })
        })
        .map_err(|e| (pf, e))?;
    let address = target.parse::<PciAddress>().map_err(|e| {
        let error = SysfsError::Malformed {
            path: link_path,
            value: e.value,
            expected: "a link to a PCI device",
        };
        (pf, error)
    })?;
    let dir = devices.child(&target);
    let read = || -> Result<VirtualFunction, SysfsError> {
        let function = read_function(&dir, address)?;
        let physfn_path = dir.path().join("physfn");
        let physfn = dir
            .link_target_name("physfn")?
            .ok_or_else(|| SysfsError::Missing {
                path: physfn_path.clone(),
            })?;
        let physfn = physfn
            .parse::<PciAddress>()
            .ok()
            .filter(|p| *p == pf)
            .ok_or_else(|| SysfsError::Malformed {
                path: physfn_path,
                value: physfn.clone(),
                expected: "a link back to the PF",
            })?;
        Ok(VirtualFunction {
            function,
            index,
            pf: physfn,
        })
    };
    read().map_err(|e| (address, e))
}

fn read_function(dir: &SysfsDir, address: PciAddress) -> Result<PciFunction, SysfsError> {
    const HEX_ID: &str = "a hex ID such as 0x8086";
    Ok(PciFunction {
        address,
        vendor: dir.parse("vendor", HEX_ID, PciId::parse)?,
        device: dir.parse("device", HEX_ID, PciId::parse)?,
        class: dir.parse("class", "a class code such as 0x020000", PciClass::parse)?,
        driver: dir.link_target_name("driver")?,
        // Kernels built without NUMA have no numa_node file: same as -1.
        numa_node: dir
            .parse_opt(
                "numa_node",
                "a node number or -1",
                NumaNode::parse_device_attr,
            )?
            .flatten(),
        iommu_group: match dir.link_target_name("iommu_group")? {
            None => None,
            Some(group) => {
                Some(
                    group
                        .parse::<u32>()
                        .map(IommuGroup)
                        .map_err(|_| SysfsError::Malformed {
                            path: dir.path().join("iommu_group"),
                            value: group,
                            expected: "a link to a numbered IOMMU group",
                        })?,
                )
            }
        },
        netdev: read_netdev(dir)?,
    })
}

fn read_netdev(dir: &SysfsDir) -> Result<Option<Netdev>, SysfsError> {
    let Some(name) = dir.list("net")?.into_iter().next() else {
        return Ok(None);
    };
    let net = dir.child("net").child(&name);
    let name = name.parse::<IfName>().map_err(|e| SysfsError::Malformed {
        path: net.path().to_owned(),
        value: e.value,
        expected: "an interface name",
    })?;
    let link_type = net
        .parse_opt("type", "an ARPHRD number", |v| v.parse::<u16>().ok())?
        .map(LinkType::from_arphrd);
    let operstate = net.parse_opt("operstate", "an RFC 2863 state", OperState::parse)?;
    // Reading `speed` of a link without carrier fails with EINVAL on most drivers, and others
    // print -1 (SPEED_UNKNOWN): both mean "no speed", not a broken device.
    let speed_mbps = match net.read_opt("speed") {
        Err(SysfsError::Io { source, .. }) if source.kind() == io::ErrorKind::InvalidInput => None,
        other => match other? {
            None => None,
            Some(value) if value.starts_with('-') => None,
            Some(value) => match value.parse::<u32>() {
                Ok(u32::MAX) => None,
                Ok(speed) => Some(speed),
                Err(_) => {
                    return Err(SysfsError::Malformed {
                        path: net.path().join("speed"),
                        value,
                        expected: "a speed in Mb/s",
                    });
                }
            },
        },
    };
    Ok(Some(Netdev {
        name,
        link_type,
        operstate,
        speed_mbps,
    }))
}
