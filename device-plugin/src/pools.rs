//! Which devices each pool gets, from discovery and the pool config.
//!
//! As in the SR-IOV device plugin: the candidates are the VFs, and the SR-IOV PFs that have no
//! VFs enabled; a device whose netdev carries the IPv4 default route is never offered; pools
//! take devices in config order and a device taken by one pool is not offered by a later one.

use std::collections::BTreeSet;

use plexus_hw::discover::{Discovery, PciFunction, PhysicalFunction};
use plexus_hw::{IommuGroup, NumaNode, OperState, PciAddress, VfIndex};

use crate::config::{PoolConfig, PoolSpec, Selector};

/// A device in a pool, with what the allocator and `Allocate` need to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDevice {
    /// Its PCI address, which is also its device ID towards the kubelet.
    pub address: PciAddress,
    /// Its PF, for a VF.
    pub pf: Option<PciAddress>,
    /// Its index under the PF, for a VF.
    pub vf_index: Option<VfIndex>,
    /// Its NUMA node.
    pub numa_node: Option<NumaNode>,
    /// Its driver.
    pub driver: Option<String>,
    /// Its netdev, when it has one.
    pub netdev: Option<String>,
    /// Its IOMMU group (for vfio-pci device nodes).
    pub iommu_group: Option<IommuGroup>,
    /// Its RDMA devices.
    pub rdma_devices: Vec<String>,
    /// The character devices of its RDMA devices, when its selector has `isRdma`: the
    /// container gets them.
    pub rdma_char_devices: Vec<String>,
    /// Whether the selector that chose it asked for vhost-net.
    pub need_vhost_net: bool,
    /// False while its PF's link is down or the device cannot be read.
    pub healthy: bool,
}

impl PoolDevice {
    /// The device ID towards the kubelet.
    pub fn id(&self) -> String {
        self.address.to_string()
    }

    /// The PF the device belongs to (itself for a PF): what must not fail for the device to work.
    pub fn switch(&self) -> PciAddress {
        self.pf.unwrap_or(self.address)
    }
}

/// A candidate device that no pool took, and why each pool did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// The device.
    pub address: PciAddress,
    /// One reason per pool, or the one reason it is never offered.
    pub reasons: Vec<String>,
}

/// The devices of every pool (in config order, each sorted by address) and the devices left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// `pools[i]` are the devices of `config.pools[i]`.
    pub pools: Vec<Vec<PoolDevice>>,
    /// Candidates no pool took.
    pub excluded: Vec<Excluded>,
}

/// A candidate: a VF (with its PF), or a PF with no VFs enabled.
struct Candidate<'a> {
    function: &'a PciFunction,
    pf: &'a PhysicalFunction,
    vf_index: Option<VfIndex>,
}

impl Candidate<'_> {
    fn is_vf(&self) -> bool {
        self.vf_index.is_some()
    }

    /// The PF's netdev name, lower-case (pfNames compare case-insensitively).
    fn pf_name(&self) -> Option<String> {
        self.pf.function.netdev_name().map(str::to_lowercase)
    }

    fn link_type(&self) -> Option<String> {
        let own = self.function.netdev.as_ref().and_then(|n| n.link_type);
        // A VF bound to vfio-pci has no netdev: its link is its PF's.
        own.or_else(|| self.pf.function.netdev.as_ref().and_then(|n| n.link_type)).map(|t| t.to_string())
    }
}

/// Assigns the discovered devices to the configured pools. `default_route_netdevs` are the
/// netdevs that carry the IPv4 default route.
pub fn assign(
    config: &PoolConfig,
    found: &Discovery,
    default_route_netdevs: &BTreeSet<String>,
) -> Assignment {
    let mut candidates = Vec::new();
    for pf in &found.pfs {
        if pf.vfs.is_empty() && pf.num_vfs == 0 {
            candidates.push(Candidate { function: &pf.function, pf, vf_index: None });
        }
        for vf in &pf.vfs {
            candidates.push(Candidate { function: &vf.function, pf, vf_index: Some(vf.index) });
        }
    }
    let problem_devices: BTreeSet<PciAddress> = found.problems.iter().filter_map(|p| p.device).collect();

    let mut assignment = Assignment { pools: vec![Vec::new(); config.pools.len()], excluded: Vec::new() };
    for candidate in &candidates {
        if let Some(netdev) = candidate.function.netdev_name().filter(|n| default_route_netdevs.contains(*n))
        {
            assignment.excluded.push(Excluded {
                address: candidate.function.address,
                reasons: vec![format!("its netdev {netdev} carries the IPv4 default route")],
            });
            continue;
        }
        let mut reasons = Vec::new();
        let mut taken = false;
        for (p, pool) in config.pools.iter().enumerate() {
            match select(pool, candidate) {
                Ok(selector) => {
                    let device = pool_device(candidate, selector, &problem_devices, found);
                    assignment.pools[p].push(device);
                    taken = true;
                    break;
                }
                Err(reason) => reasons.push(format!("{}: {reason}", pool.resource_name())),
            }
        }
        if !taken {
            assignment.excluded.push(Excluded { address: candidate.function.address, reasons });
        }
    }
    for devices in &mut assignment.pools {
        devices.sort_by_key(|d| d.address);
    }
    assignment.excluded.sort_by_key(|e| e.address);
    assignment
}

/// The first selector of `pool` that takes the candidate, or why none does (the reason of the
/// first selector when there is one, else of each, joined).
fn select<'p>(pool: &'p PoolSpec, candidate: &Candidate<'_>) -> Result<&'p Selector, String> {
    let mut reasons = Vec::new();
    for (i, selector) in pool.selectors.iter().enumerate() {
        match matches(selector, candidate) {
            Ok(()) => return Ok(selector),
            Err(reason) if pool.selectors.len() == 1 => reasons.push(reason),
            Err(reason) => reasons.push(format!("selectors[{i}] {reason}")),
        }
    }
    Err(reasons.join("; "))
}

fn list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// Checks every filter of `selector` in the SR-IOV device plugin's order; the first that fails
/// is the reason.
fn matches(selector: &Selector, c: &Candidate<'_>) -> Result<(), String> {
    let f = c.function;
    if !selector.vendors.is_empty() && !selector.vendors.contains(&f.vendor) {
        return Err(format!("vendors: {} not in {}", f.vendor, list(&selector.vendors)));
    }
    if !selector.devices.is_empty() && !selector.devices.contains(&f.device) {
        return Err(format!("devices: {} not in {}", f.device, list(&selector.devices)));
    }
    if !selector.drivers.is_empty() {
        match &f.driver {
            Some(driver) if selector.drivers.contains(driver) => {}
            Some(driver) => return Err(format!("drivers: {driver} not in {}", list(&selector.drivers))),
            None => return Err(format!("drivers: no driver bound, want one of {}", list(&selector.drivers))),
        }
    }
    if !selector.pci_addresses.is_empty() && !selector.pci_addresses.contains(&f.address) {
        return Err(format!("pciAddresses: {} not in {}", f.address, list(&selector.pci_addresses)));
    }
    let index = c.vf_index.map(|i| i.0);
    // A PF offered itself matches a PF reference without VF ranges only.
    let in_ranges = |includes: &dyn Fn(u32) -> bool, has_ranges: bool| match index {
        Some(i) => includes(i),
        None => !has_ranges,
    };
    if !selector.pf_names.is_empty() {
        let name = c.pf_name();
        let hit = selector
            .pf_names
            .iter()
            .any(|r| Some(&r.pf) == name.as_ref() && in_ranges(&|i| r.includes(i), r.vfs.is_some()));
        if !hit {
            let what = match (&name, index) {
                (Some(n), Some(i)) => format!("{n} VF {i}"),
                (Some(n), None) => n.clone(),
                (None, _) => "no PF netdev".to_owned(),
            };
            let refs: Vec<String> = selector.pf_names.iter().map(|r| describe_ref(&r.pf, &r.vfs)).collect();
            return Err(format!("pfNames: {what} not in {}", list(&refs)));
        }
    }
    if !selector.root_devices.is_empty() {
        let root = c.pf.function.address;
        let hit = selector
            .root_devices
            .iter()
            .any(|r| r.pf == root && in_ranges(&|i| r.includes(i), r.vfs.is_some()));
        if !hit {
            let what = index.map_or_else(|| root.to_string(), |i| format!("{root} VF {i}"));
            let refs: Vec<String> =
                selector.root_devices.iter().map(|r| describe_ref(&r.pf, &r.vfs)).collect();
            return Err(format!("rootDevices: {what} not in {}", list(&refs)));
        }
    }
    if !selector.link_types.is_empty() {
        match c.link_type() {
            Some(t) if selector.link_types.contains(&t) => {}
            Some(t) => return Err(format!("linkTypes: {t} not in {}", list(&selector.link_types))),
            None => {
                return Err(format!(
                    "linkTypes: no link type known, want one of {}",
                    list(&selector.link_types)
                ));
            }
        }
    }
    if selector.is_rdma && f.rdma_devices.is_empty() {
        return Err("isRdma: device has no RDMA device".to_owned());
    }
    Ok(())
}

fn describe_ref<T: std::fmt::Display>(pf: &T, vfs: &Option<Vec<std::ops::RangeInclusive<u32>>>) -> String {
    match vfs {
        None => pf.to_string(),
        Some(ranges) => {
            let parts: Vec<String> = ranges
                .iter()
                .map(|r| {
                    if r.start() == r.end() {
                        r.start().to_string()
                    } else {
                        format!("{}-{}", r.start(), r.end())
                    }
                })
                .collect();
            format!("{pf}#{}", parts.join(","))
        }
    }
}

fn pool_device(
    c: &Candidate<'_>,
    selector: &Selector,
    problems: &BTreeSet<PciAddress>,
    found: &Discovery,
) -> PoolDevice {
    let f = c.function;
    // A PF whose link is down takes its VFs with it. "unknown" is what many drivers (and
    // veth) report while working: only a definite down state counts.
    let pf_down = matches!(
        c.pf.function.netdev.as_ref().and_then(|n| n.operstate),
        Some(OperState::Down | OperState::LowerLayerDown | OperState::NotPresent)
    );
    PoolDevice {
        address: f.address,
        pf: c.is_vf().then_some(c.pf.function.address),
        vf_index: c.vf_index,
        numa_node: f.numa_node,
        driver: f.driver.clone(),
        netdev: f.netdev_name().map(str::to_owned),
        iommu_group: f.iommu_group,
        rdma_devices: f.rdma_devices.clone(),
        rdma_char_devices: if selector.is_rdma {
            f.rdma_devices.iter().filter_map(|d| found.rdma_char_devices.get(d)).flatten().cloned().collect()
        } else {
            Vec::new()
        },
        need_vhost_net: selector.need_vhost_net,
        healthy: !pf_down && !problems.contains(&f.address),
    }
}

/// The netdevs that carry the IPv4 default route, from a `/proc/net/route` file: lines whose
/// destination and mask are both 00000000.
pub fn default_route_netdevs(route_file: &str) -> BTreeSet<String> {
    route_file
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 8 && fields[1] == "00000000" && fields[7] == "00000000")
                .then(|| fields[0].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_PREFIX;
    use plexus_hw::{SysfsRoot, discover};
    use plexus_sim::{ScratchNode, SimSpec};

    fn node(spec: SimSpec) -> (ScratchNode, Discovery) {
        let node = ScratchNode::tree("pools", &spec).unwrap();
        let found = discover(&SysfsRoot::new(node.root())).unwrap();
        (node, found)
    }

    fn config(text: &str) -> PoolConfig {
        PoolConfig::parse(text, "pools.json", DEFAULT_PREFIX).unwrap()
    }

    fn ids(devices: &[PoolDevice]) -> Vec<String> {
        devices.iter().map(PoolDevice::id).collect()
    }

    #[test]
    fn pools_take_devices_in_order_and_report_why_others_were_left_out() {
        let (_node, found) =
            node(SimSpec { pfs: 2, numa_nodes: 2, vfs_per_pf: 4, vfio_vfs_per_pf: 1, cpus_per_node: 2 });
        let config = config(
            r#"{"resourceList": [
                {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"]}},
                {"resourceName": "net_f0", "selectors": {"pfNames": ["ENS1F0#0-1"]}},
                {"resourceName": "net_any", "selectors": [{"rootDevices": ["0000:20:00.1#1-2"]}, {"vendors": ["15b3"]}]}
            ]}"#,
        );
        let a = assign(&config, &found, &BTreeSet::new());
        assert_eq!(ids(&a.pools[0]), ["0000:20:02.3", "0000:20:03.3"], "vfio VFs of both PFs");
        assert_eq!(ids(&a.pools[1]), ["0000:20:02.0", "0000:20:02.1"]);
        assert_eq!(ids(&a.pools[2]), ["0000:20:03.1", "0000:20:03.2"]);
        let excluded: Vec<String> = a.excluded.iter().map(|e| e.address.to_string()).collect();
        assert_eq!(excluded, ["0000:20:02.2", "0000:20:03.0"]);
        let reasons = &a.excluded[0].reasons;
        assert_eq!(reasons.len(), 3);
        assert_eq!(reasons[0], "intel.com/dpdk: drivers: iavf not in [vfio-pci]");
        assert_eq!(reasons[1], "intel.com/net_f0: pfNames: ens1f0 VF 2 not in [ens1f0#0-1]");
        assert!(reasons[2].starts_with("intel.com/net_any: selectors[0] rootDevices: 0000:20:00.0 VF 2 not in [0000:20:00.1#1-2]; selectors[1] vendors: 8086 not in [15b3]"), "{}", reasons[2]);
        let dev = &a.pools[1][0];
        assert_eq!(
            (dev.pf, dev.vf_index, dev.numa_node),
            (Some("0000:20:00.0".parse().unwrap()), Some(VfIndex(0)), Some(NumaNode(0)))
        );
        assert!(dev.healthy);
    }

    #[test]
    fn pfs_without_vfs_are_candidates_unless_they_carry_the_default_route() {
        let (_node, found) =
            node(SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 0, vfio_vfs_per_pf: 0, cpus_per_node: 2 });
        let config =
            config(r#"{"resourceList": [{"resourceName": "pfs", "selectors": {"drivers": ["i40e"]}}]}"#);
        let routes = default_route_netdevs(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             ens1f0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             ens1f1\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        assert_eq!(routes, BTreeSet::from(["ens1f0".to_owned()]));
        let a = assign(&config, &found, &routes);
        assert_eq!(ids(&a.pools[0]), ["0000:20:00.1"]);
        assert!(a.excluded[0].reasons[0].contains("ens1f0 carries the IPv4 default route"));
    }

    #[test]
    fn link_type_rdma_and_health() {
        let (node, _) =
            node(SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 2, vfio_vfs_per_pf: 1, cpus_per_node: 2 });
        let pf0 = node.device_dir(node.pfs()[0].address);
        std::fs::write(pf0.join("net/ens1f0/operstate"), "down\n").unwrap();
        node.add_rdma(node.pfs()[1].vfs[0].address, "mlx5_3", 3).unwrap();
        let found = discover(&SysfsRoot::new(node.root())).unwrap();
        let config = config(
            r#"{"resourceList": [{"resourceName": "rdma", "selectors": {"isRdma": true}},
                                 {"resourceName": "eth", "selectors": {"linkTypes": ["ether"]}}]}"#,
        );
        let a = assign(&config, &found, &BTreeSet::new());
        assert_eq!(ids(&a.pools[0]), ["0000:20:03.0"]);
        assert_eq!(a.pools[0][0].rdma_devices, ["mlx5_3"]);
        assert_eq!(
            a.pools[0][0].rdma_char_devices,
            [
                "/dev/infiniband/uverbs3",
                "/dev/infiniband/issm3",
                "/dev/infiniband/umad3",
                "/dev/infiniband/rdma_cm"
            ]
        );
        // isRdma false is no filter, as in the device plugin: the RDMA VF is in the pool, and
        // its container gets no RDMA device.
        let no_filter = self::tests::config(
            r#"{"resourceList": [{"resourceName": "all", "selectors": {"isRdma": false}}]}"#,
        );
        let all = assign(&no_filter, &found, &BTreeSet::new());
        assert_eq!(all.pools[0].len(), 4);
        assert!(all.pools[0].iter().all(|d| d.rdma_char_devices.is_empty()));
        // The vfio VF has no netdev: its PF's link type counts.
        assert_eq!(ids(&a.pools[1]), ["0000:20:02.0", "0000:20:02.1", "0000:20:03.1"]);
        let health: Vec<bool> = a.pools[1].iter().map(|d| d.healthy).collect();
        assert_eq!(health, [false, false, true], "PF ens1f0 is down");
    }
}
