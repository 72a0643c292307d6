//! SR-IOV discovery: physical functions, their virtual functions and the NUMA topology, read
//! from `bus/pci/devices/*` under a [`SysfsRoot`].
//!
//! Discovery never stops at one broken device: the device is left out and a [`Problem`] says
//! why, naming the file.

use std::collections::BTreeMap;
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
    /// From `operstate` (a PF's; not read for a VF).
    pub operstate: Option<OperState>,
    /// From `speed`, in Mb/s, when the link reports one (a PF's; not read for a VF).
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
    /// RDMA devices in `infiniband/` (`mlx5_0`), empty when the function has none.
    pub rdma_devices: Vec<String>,
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
            && self.function.driver.as_deref().is_some_and(|d| DPDK_DRIVERS.contains(&d))
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
    /// The character devices of each RDMA device of the functions found (`mlx5_2` ->
    /// `/dev/infiniband/uverbs2`, `umad2`, `issm2`, `rdma_cm`): what a container needs to use
    /// it. Empty when no function has an RDMA device.
    pub rdma_char_devices: BTreeMap<String, Vec<String>>,
}

impl Discovery {
    /// The VF at `address`, with its PF.
    pub fn vf(&self, address: PciAddress) -> Option<(&PhysicalFunction, &VirtualFunction)> {
        self.pfs
            .iter()
            .find_map(|pf| pf.vfs.iter().find(|vf| vf.function.address == address).map(|vf| (pf, vf)))
    }

    /// Every VF of every PF, in PF then index order.
    pub fn vfs(&self) -> impl Iterator<Item = (&PhysicalFunction, &VirtualFunction)> {
        self.pfs.iter().flat_map(|pf| pf.vfs.iter().map(move |vf| (pf, vf)))
    }
}

/// Discovers SR-IOV PFs, VFs and NUMA nodes under `root`.
///
/// Fails only when the root or its `bus/pci/devices` cannot be listed; a broken device is
/// skipped and reported in [`Discovery::problems`].
pub fn discover(root: &SysfsRoot) -> Result<Discovery, SysfsError> {
    root.check()?;
    let devices_path = root.path().join(PCI_DEVICES);
    let devices = root.dir(PCI_DEVICES)?.ok_or_else(|| SysfsError::Root {
        path: devices_path,
        error: io::Error::from(io::ErrorKind::NotFound),
    })?;
    let names = devices.list(".")?;

    let (numa, numa_errors) = NumaTopology::read(root);
    let mut found = Discovery {
        numa,
        pfs: Vec::new(),
        problems: numa_errors.into_iter().map(|error| Problem { device: None, error }).collect(),
        rdma_char_devices: BTreeMap::new(),
    };

    // Two phases. The scan finds the PFs and their VFs' addresses, which costs a few syscalls
    // per device; reading every function's attributes costs thirty, all independent of each
    // other, so that part is spread over the CPUs.
    let scanned = scan(&devices, names, &mut found.problems);
    let work: Vec<(usize, Option<usize>)> = scanned
        .iter()
        .enumerate()
        .flat_map(|(p, pf)| std::iter::once((p, None)).chain((0..pf.vfs.len()).map(move |v| (p, Some(v)))))
        .collect();
    let mut results = read_in_parallel(&work, |&(p, v)| {
        let pf = &scanned[p];
        match v {
            None => read_pf_function(pf).map(Read::Pf).map_err(|e| (pf.address, e)),
            Some(v) => read_vf(pf, &pf.vfs[v]).map(Read::Vf),
        }
    })
    .into_iter();

    // Results come back in work order: each PF, then its VFs.
    for pf in &scanned {
        let pf_result = results.next().flatten();
        let mut vfs = Vec::with_capacity(pf.vfs.len());
        for _ in &pf.vfs {
            match results.next().flatten() {
                Some(Ok(Read::Vf(vf))) => vfs.push(vf),
                Some(Err((device, error))) => found.problems.push(Problem { device: Some(device), error }),
                _ => {}
            }
        }
        match pf_result {
            Some(Ok(Read::Pf((function, num_vfs)))) => {
                found.pfs.push(PhysicalFunction { function, total_vfs: pf.total_vfs, num_vfs, vfs })
            }
            Some(Err((device, error))) => found.problems.push(Problem { device: Some(device), error }),
            _ => {}
        }
    }
    found.pfs.sort_by_key(|pf| pf.function.address);
    // Only a node with RDMA devices pays for reading the classes.
    let has_rdma = found.pfs.iter().any(|pf| {
        !pf.function.rdma_devices.is_empty() || pf.vfs.iter().any(|vf| !vf.function.rdma_devices.is_empty())
    });
    if has_rdma {
        match rdma_char_devices(root) {
            Ok(devices) => found.rdma_char_devices = devices,
            Err(error) => found.problems.push(Problem { device: None, error }),
        }
    }
    Ok(found)
}

/// Where the kernel puts RDMA character devices in a container's view.
const RDMA_DEV_DIR: &str = "/dev/infiniband";

/// Each RDMA device's character devices, as the kernel lists them: `class/infiniband_verbs/
/// uverbsN` and `class/infiniband_mad/{umadN,issmN}` name their RDMA device in `ibdev`;
/// `rdma_cm` (`class/misc/rdma_cm`, present when rdma_ucm is loaded) serves them all.
fn rdma_char_devices(root: &SysfsRoot) -> Result<BTreeMap<String, Vec<String>>, SysfsError> {
    let mut devices: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for class in ["class/infiniband_verbs", "class/infiniband_mad"] {
        let Some(dir) = root.dir(class)? else { continue };
        for name in dir.list(".")? {
            let Some(entry) = dir.child(&name)? else { continue };
            if let Some(ibdev) = entry.read_opt("ibdev")? {
                devices.entry(ibdev).or_default().push(format!("{RDMA_DEV_DIR}/{name}"));
            }
        }
    }
    if root.dir("class/misc/rdma_cm")?.is_some() {
        for list in devices.values_mut() {
            list.push(format!("{RDMA_DEV_DIR}/rdma_cm"));
        }
    }
    Ok(devices)
}

/// Where one VF sits, read with a handful of syscalls instead of a discovery: what an
/// attachment needs on its hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfLocation {
    /// The VF.
    pub address: PciAddress,
    /// Its PF.
    pub pf: PciAddress,
    /// The PF's netdev, through which its VFs are configured.
    pub pf_netdev: Option<IfName>,
    /// The VF's index under the PF.
    pub index: VfIndex,
    /// The VF's driver.
    pub driver: Option<String>,
    /// The VF's netdev as sysfs shows it: in the namespace sysfs was mounted from.
    pub netdev: Option<IfName>,
}

impl VfLocation {
    /// True when the VF is bound to a userspace driver and has no netdev (DPDK mode).
    pub fn is_dpdk(&self) -> bool {
        self.netdev.is_none() && self.driver.as_deref().is_some_and(|d| DPDK_DRIVERS.contains(&d))
    }
}

/// Finds VF `address` under `root`: `None` when there is no such PCI device; an error naming
/// the file when the device is not a VF or its PF does not list it.
pub fn locate_vf(root: &SysfsRoot, address: PciAddress) -> Result<Option<VfLocation>, SysfsError> {
    let Some(devices) = root.dir(PCI_DEVICES)? else {
        return Err(SysfsError::Missing { path: root.path().join(PCI_DEVICES) });
    };
    let Some(dir) = devices.child(&address.to_string())? else {
        return Ok(None);
    };
    let physfn_path = dir.path().join("physfn");
    let physfn =
        dir.link_target_name("physfn")?.ok_or_else(|| SysfsError::Missing { path: physfn_path.clone() })?;
    let pf = physfn.parse::<PciAddress>().map_err(|e| SysfsError::Malformed {
        path: physfn_path,
        value: e.value,
        expected: "a link to the PF",
    })?;
    let pf_dir =
        devices.child(&physfn)?.ok_or_else(|| SysfsError::Missing { path: devices.path().join(&physfn) })?;
    let wanted = address.to_string();
    let mut index = None;
    for entry in pf_dir.list(".")? {
        let Some(n) = entry.strip_prefix("virtfn").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pf_dir.link_target_name(&entry)?.as_deref() == Some(wanted.as_str()) {
            index = Some(VfIndex(n));
            break;
        }
    }
    let index = index.ok_or_else(|| SysfsError::Malformed {
        path: pf_dir.path().to_owned(),
        value: wanted,
        expected: "a virtfn link to the VF",
    })?;
    let first_netdev = |dir: &SysfsDir| -> Result<Option<IfName>, SysfsError> {
        Ok(dir.list("net")?.into_iter().next().and_then(|name| name.parse().ok()))
    };
    Ok(Some(VfLocation {
        address,
        pf,
        pf_netdev: first_netdev(&pf_dir)?,
        index,
        driver: dir.link_target_name("driver")?,
        netdev: first_netdev(&dir)?,
    }))
}

/// A PF found by the scan, with its VFs' indexes and addresses from the `virtfn` links.
struct ScannedPf {
    address: PciAddress,
    dir: SysfsDir,
    total_vfs: u32,
    vfs: Vec<ScannedVf>,
}

struct ScannedVf {
    index: VfIndex,
    link: String,
    address: PciAddress,
}

/// What one unit of parallel work read.
enum Read {
    Pf((PciFunction, u32)),
    Vf(VirtualFunction),
}

/// Finds the SR-IOV PFs among `names` and their VFs' addresses.
fn scan(devices: &SysfsDir, names: Vec<String>, problems: &mut Vec<Problem>) -> Vec<ScannedPf> {
    // VFs are listed in bus/pci/devices too, but they are reached through their PF; a VF
    // already seen there is not probed again (the listing is sorted, and a PF sorts before
    // its VFs on every NIC we know; when not, the VF is probed and found not to be a PF).
    let mut seen_vfs = std::collections::HashSet::new();
    let mut pfs = Vec::new();
    for name in names {
        let address = match name.parse::<PciAddress>() {
            Ok(address) => address,
            Err(e) => {
                let error = SysfsError::Malformed {
                    path: devices.path().join(&name),
                    value: e.value,
                    expected: "a PCI address name",
                };
                problems.push(Problem { device: None, error });
                continue;
            }
        };
        if seen_vfs.contains(&address) {
            continue;
        }
        match scan_device(devices, &name, address, problems) {
            Ok(Some(pf)) => {
                seen_vfs.extend(pf.vfs.iter().map(|vf| vf.address));
                pfs.push(pf);
            }
            Ok(None) => {}
            Err(error) => problems.push(Problem { device: Some(address), error }),
        }
    }
    pfs
}

/// The device as a PF, `None` when it is not SR-IOV capable (or vanished meanwhile).
fn scan_device(
    devices: &SysfsDir,
    name: &str,
    address: PciAddress,
    problems: &mut Vec<Problem>,
) -> Result<Option<ScannedPf>, SysfsError> {
    let Some(dir) = devices.child(name)? else {
        // Gone with its link (unplugged meanwhile), or a link left pointing at nothing, which
        // hides a device: that is reported.
        return match dangling_target(devices, name) {
            Some(target) => Err(SysfsError::Malformed {
                path: devices.path().join(name),
                value: format!("a link to {target}, which does not exist"),
                expected: "a link to the device's directory",
            }),
            None => Ok(None),
        };
    };
    // Only SR-IOV capable functions have sriov_totalvfs.
    let Some(total_vfs) = dir.parse_opt("sriov_totalvfs", "a VF count", |v| v.parse::<u32>().ok())? else {
        return Ok(None);
    };
    let mut links: Vec<(u32, String)> = dir
        .list(".")?
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
        let link_path = dir.path().join(&link);
        let target = match dir.link_target_name(&link) {
            Ok(Some(target)) => target,
            Ok(None) => continue, // the VF went away while we looked
            Err(error) => {
                problems.push(Problem { device: Some(address), error });
                continue;
            }
        };
        match target.parse::<PciAddress>() {
            Ok(vf) => vfs.push(ScannedVf { index: VfIndex(index), link, address: vf }),
            Err(e) => {
                let error = SysfsError::Malformed {
                    path: link_path,
                    value: e.value,
                    expected: "a link to a PCI device",
                };
                problems.push(Problem { device: Some(address), error });
            }
        }
    }
    Ok(Some(ScannedPf { address, dir, total_vfs, vfs }))
}

/// Where link `name` in `dir` points, when it is a link.
fn dangling_target(dir: &SysfsDir, name: &str) -> Option<String> {
    std::fs::read_link(dir.path().join(name)).ok().map(|target| target.display().to_string())
}

/// Runs `read` on every item, on up to one thread per CPU, and returns the results in the
/// items' order; `None` only for items of a thread that panicked (a bug, kept from shifting
/// the other results). Small inputs stay on the calling thread: a thread costs more than a
/// few dozen reads.
fn read_in_parallel<T: Sync, R: Send>(items: &[T], read: impl Fn(&T) -> R + Sync) -> Vec<Option<R>> {
    const ITEMS_PER_THREAD: usize = 64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(items.len().div_ceil(ITEMS_PER_THREAD));
    if threads <= 1 {
        return items.iter().map(|item| Some(read(item))).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else { break done };
            done.push((i, read(item)));
        }
    };
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mut done = worker();
        for helper in helpers {
            if let Ok(more) = helper.join() {
                done.extend(more);
            }
        }
        for (i, result) in done {
            results[i] = Some(result);
        }
    });
    results
}

fn read_pf_function(pf: &ScannedPf) -> Result<(PciFunction, u32), SysfsError> {
    let function = read_function(&pf.dir, pf.address, Role::Pf)?;
    let num_vfs = pf.dir.parse("sriov_numvfs", "a VF count", |v| v.parse::<u32>().ok())?;
    Ok((function, num_vfs))
}

fn read_vf(pf: &ScannedPf, vf: &ScannedVf) -> Result<VirtualFunction, (PciAddress, SysfsError)> {
    let read = || -> Result<VirtualFunction, SysfsError> {
        // Through the virtfn link itself: it resolves to the VF's device directory.
        let dir =
            pf.dir.child(&vf.link)?.ok_or(SysfsError::Missing { path: pf.dir.path().join(&vf.link) })?;
        let function = read_function(&dir, vf.address, Role::Vf)?;
        let physfn_path = dir.path().join("physfn");
        let physfn = dir
            .link_target_name("physfn")?
            .ok_or_else(|| SysfsError::Missing { path: physfn_path.clone() })?;
        let physfn = physfn.parse::<PciAddress>().ok().filter(|p| *p == pf.address).ok_or_else(|| {
            SysfsError::Malformed {
                path: physfn_path,
                value: physfn.clone(),
                expected: "a link back to the PF",
            }
        })?;
        Ok(VirtualFunction { function, index: vf.index, pf: physfn })
    };
    read().map_err(|e| (vf.address, e))
}

/// A function's IDs, class and driver.
struct Identity {
    vendor: PciId,
    device: PciId,
    class: PciClass,
    driver: Option<String>,
}

impl Identity {
    /// From the device's `uevent`, one read where the separate files take four (`vendor`,
    /// `device`, `class` and the `driver` link; at 30 syscalls a VF, the cut is a quarter of
    /// discovery). The kernel writes it from the same fields as those files, with the bound
    /// driver's name (`DRIVER=`, absent when unbound). `None` when there is no `uevent` or it
    /// lacks the IDs (a tree written by hand): the files are read instead.
    fn from_uevent(dir: &SysfsDir) -> Result<Option<Self>, SysfsError> {
        let Some(text) = dir.read_opt("uevent")? else { return Ok(None) };
        let (mut ids, mut class, mut driver) = (None, None, None);
        for line in text.lines() {
            match line.split_once('=') {
                Some(("PCI_ID", value)) => ids = Some(value),
                Some(("PCI_CLASS", value)) => class = Some(value),
                Some(("DRIVER", value)) => driver = Some(value.to_owned()),
                _ => {}
            }
        }
        let (Some(ids), Some(class_text)) = (ids, class) else { return Ok(None) };
        let malformed = |value: &str, expected| SysfsError::Malformed {
            path: dir.path().join("uevent"),
            value: value.to_owned(),
            expected,
        };
        // PCI_ID=8086:154C; PCI_CLASS=20000 (hex, without 0x or leading zeros).
        let (vendor, device) = ids
            .split_once(':')
            .and_then(|(v, d)| Some((PciId::parse(v)?, PciId::parse(d)?)))
            .ok_or_else(|| malformed(&format!("PCI_ID={ids}"), "PCI_ID=<vendor>:<device> in hex"))?;
        let class = u32::from_str_radix(class_text, 16)
            .ok()
            .filter(|n| *n <= 0xff_ffff)
            .and_then(|n| PciClass::parse(&format!("0x{n:06x}")))
            .ok_or_else(|| malformed(&format!("PCI_CLASS={class_text}"), "PCI_CLASS=<class code> in hex"))?;
        Ok(Some(Self { vendor, device, class, driver }))
    }

    /// From the separate files.
    fn from_files(dir: &SysfsDir) -> Result<Self, SysfsError> {
        const HEX_ID: &str = "a hex ID such as 0x8086";
        Ok(Self {
            vendor: dir.parse("vendor", HEX_ID, PciId::parse)?,
            device: dir.parse("device", HEX_ID, PciId::parse)?,
            class: dir.parse("class", "a class code such as 0x020000", PciClass::parse)?,
            driver: dir.link_target_name("driver")?,
        })
    }
}

/// Which kind of function is read: a VF's netdev is read for its type only (the pools'
/// `linkTypes`); its state and speed concern nobody (a VF's health is its PF's link), and
/// skipping them saves 6 of a VF's syscalls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Pf,
    Vf,
}

fn read_function(dir: &SysfsDir, address: PciAddress, role: Role) -> Result<PciFunction, SysfsError> {
    let Identity { vendor, device, class, driver } = match Identity::from_uevent(dir)? {
        Some(identity) => identity,
        None => Identity::from_files(dir)?,
    };
    Ok(PciFunction {
        address,
        vendor,
        device,
        class,
        driver,
        // Kernels built without NUMA have no numa_node file: same as -1.
        numa_node: dir.parse_opt("numa_node", "a node number or -1", NumaNode::parse_device_attr)?.flatten(),
        iommu_group: match dir.link_target_name("iommu_group")? {
            None => None,
            Some(group) => Some(group.parse::<u32>().map(IommuGroup).map_err(|_| SysfsError::Malformed {
                path: dir.path().join("iommu_group"),
                value: group,
                expected: "a link to a numbered IOMMU group",
            })?),
        },
        netdev: read_netdev(dir, role)?,
        rdma_devices: dir.list("infiniband")?,
    })
}

fn read_netdev(dir: &SysfsDir, role: Role) -> Result<Option<Netdev>, SysfsError> {
    let Some(name) = dir.list("net")?.into_iter().next() else {
        return Ok(None);
    };
    let name = name.parse::<IfName>().map_err(|e| SysfsError::Malformed {
        path: dir.path().join("net"),
        value: e.value,
        expected: "an interface name",
    })?;
    // Read relative to the device directory: opening net/<if> as a directory of its own
    // would cost two more syscalls per VF.
    let attr = |file: &str| format!("net/{name}/{file}");
    let link_type = dir
        .parse_opt(&attr("type"), "an ARPHRD number", |v| v.parse::<u16>().ok())?
        .map(LinkType::from_arphrd);
    if role == Role::Vf {
        return Ok(Some(Netdev { name, link_type, operstate: None, speed_mbps: None }));
    }
    let operstate = dir.parse_opt(&attr("operstate"), "an RFC 2863 state", OperState::parse)?;
    // Reading `speed` of a link without carrier fails with EINVAL on most drivers, and others
    // print -1 (SPEED_UNKNOWN): both mean "no speed", not a broken device.
    let speed_mbps = match dir.read_opt(&attr("speed")) {
        Err(SysfsError::Io { error, .. }) if error.kind() == io::ErrorKind::InvalidInput => None,
        other => match other? {
            None => None,
            Some(value) if value.starts_with('-') => None,
            Some(value) => match value.parse::<u32>() {
                Ok(u32::MAX) => None,
                Ok(speed) => Some(speed),
                Err(_) => {
                    return Err(SysfsError::Malformed {
                        path: dir.path().join(attr("speed")),
                        value,
                        expected: "a speed in Mb/s",
                    });
                }
            },
        },
    };
    Ok(Some(Netdev { name, link_type, operstate, speed_mbps }))
}

/// What discovery's result depends on that changes at run time, read cheaply: the PCI devices
/// present, and each PF's `sriov_numvfs` and link state. Comparing two fingerprints tells
/// whether a full discovery is worth running: a few syscalls per PF instead of thirty per VF.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    devices: Vec<String>,
    pfs: Vec<(PciAddress, Option<String>, Option<String>)>,
}

impl Fingerprint {
    /// Reads the fingerprint of the node under `root`, for the PFs `found` has. A file that
    /// cannot be read counts as absent (the next discovery reports it properly).
    pub fn read(root: &SysfsRoot, found: &Discovery) -> Self {
        let devices = match root.dir(PCI_DEVICES) {
            Ok(Some(dir)) => dir.list(".").unwrap_or_default(),
            _ => Vec::new(),
        };
        let pfs = found
            .pfs
            .iter()
            .map(|pf| {
                let dir = root.dir(format!("{PCI_DEVICES}/{}", pf.function.address)).ok().flatten();
                let read = |name: &str| dir.as_ref().and_then(|d| d.read_opt(name).ok().flatten());
                let numvfs = read("sriov_numvfs");
                let operstate = pf.function.netdev_name().and_then(|n| read(&format!("net/{n}/operstate")));
                (pf.function.address, numvfs, operstate)
            })
            .collect();
        Self { devices, pfs }
    }
}
