//! Preferred allocation: which of the available devices a container should get.
//!
//! 1. The devices the kubelet says must be included, first.
//! 2. Then devices from as few NUMA nodes as possible: the node of the must-include devices
//!    first, else the node that has enough devices (the one with the most, for room to spread);
//!    when one node is not enough, the nodes with the most devices next, the nearest first on a
//!    tie; devices of unknown NUMA node last.
//! 3. Within a node, spread over PFs: a VF from every PF before a second from any, so the
//!    container's VFs survive the failure of one PF (the bond use case).
//!
//! The same input always gives the same answer, and only available, healthy devices are given.

use std::collections::BTreeMap;

use plexus_hw::{NumaNode, NumaTopology, PciAddress};

use crate::pools::PoolDevice;

/// A request the allocator cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocatorError {
    /// The kubelet named a device this pool does not have.
    #[error("unknown device ID {0:?} (not in this pool)")]
    UnknownDevice(String),
}

/// The preferred `size` devices among `available`, `must_include` first. When fewer healthy
/// devices are available than asked for, all of them: the kubelet fills in the rest itself.
pub fn preferred(
    devices: &[PoolDevice],
    topology: &NumaTopology,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Result<Vec<String>, AllocatorError> {
    // A sorted index searched by address: parsing the request's IDs costs less than formatting
    // every device's, and a binary search over a few hundred devices less than hashing.
    let mut index: Vec<&PoolDevice> = devices.iter().collect();
    index.sort_unstable_by_key(|d| d.address);
    let lookup = |id: &String| {
        id.parse::<PciAddress>()
            .ok()
            .and_then(|address| index.binary_search_by_key(&address, |d| d.address).ok())
            .ok_or_else(|| AllocatorError::UnknownDevice(id.clone()))
    };

    let mut taken = vec![false; index.len()];
    let mut chosen: Vec<&PoolDevice> = Vec::new();
    for id in must_include {
        let i = lookup(id)?;
        if !std::mem::replace(&mut taken[i], true) {
            chosen.push(index[i]);
        }
    }
    let mut candidates: Vec<&PoolDevice> = Vec::new();
    for id in available {
        let i = lookup(id)?;
        if index[i].healthy && !std::mem::replace(&mut taken[i], true) {
            candidates.push(index[i]);
        }
    }
    let mut needed = size.saturating_sub(chosen.len());

    // Candidates per NUMA node; `None` (unknown) sorts first in a BTreeMap, so it is kept apart.
    let mut per_node: BTreeMap<NumaNode, Vec<&PoolDevice>> = BTreeMap::new();
    let mut unknown: Vec<&PoolDevice> = Vec::new();
    for device in candidates {
        match device.numa_node {
            Some(node) => per_node.entry(node).or_default().push(device),
            None => unknown.push(device),
        }
    }
    let anchors: Vec<NumaNode> = {
        let mut nodes: Vec<NumaNode> = chosen.iter().filter_map(|d| d.numa_node).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    };
    let order = node_order(&per_node, &anchors, topology, needed);

    let mut used = PfUse::default();
    for device in &chosen {
        used.add(device.switch());
    }
    let groups = order.iter().filter_map(|node| per_node.remove(node)).chain(std::iter::once(unknown));
    for mut group in groups {
        if needed == 0 {
            break;
        }
        while needed > 0 && !group.is_empty() {
            // The VF whose PF is least used so far; ties by PF address, then VF index.
            let best = (0..group.len())
                .min_by_key(|&i| {
                    let d = group[i];
                    (used.count(d.switch()), d.switch(), d.vf_index, d.address)
                })
                .unwrap_or(0);
            let device = group.swap_remove(best);
            used.add(device.switch());
            chosen.push(device);
            needed -= 1;
        }
    }
    Ok(chosen.iter().map(|d| d.id()).collect())
}

/// VFs taken per PF. A node has a handful of PFs, so a list beats a map.
#[derive(Default)]
struct PfUse(Vec<(PciAddress, usize)>);

impl PfUse {
    fn add(&mut self, pf: PciAddress) {
        match self.0.iter_mut().find(|(p, _)| *p == pf) {
            Some((_, n)) => *n += 1,
            None => self.0.push((pf, 1)),
        }
    }

    fn count(&self, pf: PciAddress) -> usize {
        self.0.iter().find(|(p, _)| *p == pf).map_or(0, |(_, n)| *n)
    }
}

/// The order in which NUMA nodes give devices.
fn node_order(
    per_node: &BTreeMap<NumaNode, Vec<&PoolDevice>>,
    anchors: &[NumaNode],
    topology: &NumaTopology,
    needed: usize,
) -> Vec<NumaNode> {
    let count = |node: &NumaNode| per_node.get(node).map_or(0, Vec::len);
    let mut order: Vec<NumaNode> = anchors.iter().copied().filter(|n| per_node.contains_key(n)).collect();
    if order.is_empty() {
        // No anchor: a node that can give everything alone, the fullest of those; else the
        // fullest node.
        let first = per_node
            .keys()
            .copied()
            .filter(|n| count(n) >= needed)
            .max_by_key(|n| (count(n), std::cmp::Reverse(*n)))
            .or_else(|| per_node.keys().copied().max_by_key(|n| (count(n), std::cmp::Reverse(*n))));
        order.extend(first);
    }
    let start = anchors.first().copied().or_else(|| order.first().copied());
    let mut rest: Vec<NumaNode> = per_node.keys().copied().filter(|n| !order.contains(n)).collect();
    // Fewest nodes: the fullest next; on a tie, the nearest to where the allocation started.
    rest.sort_by_key(|n| {
        let distance = start.and_then(|s| topology.distance(s, *n)).unwrap_or(u32::MAX);
        (std::cmp::Reverse(count(n)), distance, *n)
    });
    order.extend(rest);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_hw::{CpuList, NumaNodeInfo, VfIndex};

    /// `pfs` PFs, each with `vfs` VFs; PF i on NUMA node `numa[i]`.
    fn pool(numa: &[Option<u32>], vfs: u8) -> Vec<PoolDevice> {
        let mut devices = Vec::new();
        for (p, node) in numa.iter().enumerate() {
            let pf = PciAddress::new(0, 0x20 + p as u8, 0, 0).unwrap();
            for v in 0..vfs {
                devices.push(PoolDevice {
                    address: PciAddress::new(0, 0x20 + p as u8, 2 + v / 8, v % 8).unwrap(),
                    pf: Some(pf),
                    vf_index: Some(VfIndex(u32::from(v))),
                    numa_node: node.map(NumaNode),
                    driver: Some("iavf".into()),
                    netdev: None,
                    iommu_group: None,
                    rdma_devices: Vec::new(),
                    rdma_char_devices: Vec::new(),
                    need_vhost_net: false,
                    healthy: true,
                });
            }
        }
        devices
    }

    fn topology(nodes: u32) -> NumaTopology {
        NumaTopology {
            nodes: (0..nodes)
                .map(|n| NumaNodeInfo {
                    id: NumaNode(n),
                    cpus: CpuList::parse("0").unwrap(),
                    distances: (0..nodes).map(|o| if o == n { 10 } else { 20 + n.abs_diff(o) }).collect(),
                })
                .collect(),
        }
    }

    fn all(devices: &[PoolDevice]) -> Vec<String> {
        devices.iter().map(PoolDevice::id).collect()
    }

    fn ask(devices: &[PoolDevice], available: &[String], must: &[&str], size: usize) -> Vec<String> {
        let must: Vec<String> = must.iter().map(|s| (*s).to_owned()).collect();
        preferred(devices, &topology(4), available, &must, size).unwrap()
    }

    #[test]
    fn spreads_over_the_pfs_of_one_numa_node() {
        // PFs 0,1 on node 0; PFs 2,3 on node 1.
        let devices = pool(&[Some(0), Some(0), Some(1), Some(1)], 4);
        let got = ask(&devices, &all(&devices), &[], 3);
        assert_eq!(got, ["0000:20:02.0", "0000:21:02.0", "0000:20:02.1"], "one VF per PF, then a second");
        let got = ask(&devices, &all(&devices), &[], 2);
        assert_eq!(got, ["0000:20:02.0", "0000:21:02.0"], "two VFs on two PFs: a bond survives a PF failure");
    }

    #[test]
    fn must_include_comes_first_and_anchors_the_numa_node() {
        let devices = pool(&[Some(0), Some(0), Some(1), Some(1)], 4);
        let got = ask(&devices, &all(&devices), &["0000:22:02.3"], 3);
        assert_eq!(got, ["0000:22:02.3", "0000:23:02.0", "0000:22:02.0"], "node 1, the other PF first");
    }

    #[test]
    fn prefers_a_node_that_can_give_everything() {
        // Node 0 has 2 free, node 1 has 4: a request for 3 goes to node 1 alone.
        let devices = pool(&[Some(0), Some(1)], 4);
        let available: Vec<String> = all(&devices)
            .into_iter()
            .filter(|id| !id.ends_with(".0") && !id.ends_with(".1") || id.starts_with("0000:21"))
            .collect();
        let got = ask(&devices, &available, &[], 3);
        assert!(got.iter().all(|id| id.starts_with("0000:21:")), "{got:?}");
    }

    #[test]
    fn falls_back_across_numa_nodes_the_fullest_and_nearest_first() {
        // 2 VFs on node 0, 3 on node 1, 3 on node 3, 1 on unknown; ask 7.
        let mut devices = pool(&[Some(0), Some(1), Some(3)], 3);
        devices.retain(|d| !(d.numa_node == Some(NumaNode(0)) && d.vf_index == Some(VfIndex(2))));
        devices.extend(pool(&[None, None, None, None, None], 1).into_iter().skip(4));
        let got = ask(&devices, &all(&devices), &[], 7);
        let nodes: Vec<Option<u32>> = got
            .iter()
            .map(|id| devices.iter().find(|d| &d.id() == id).unwrap().numa_node.map(|n| n.0))
            .collect();
        // Node 1 (3, lowest id among the fullest), then node 3 (3), then node 0 (2, not needed fully).
        assert_eq!(nodes, [Some(1), Some(1), Some(1), Some(3), Some(3), Some(3), Some(0)]);
        let got = ask(&devices, &all(&devices), &[], 9);
        assert_eq!(got.len(), 9, "the unknown-NUMA VF comes last");
    }

    #[test]
    fn never_gives_an_unavailable_or_unhealthy_device_and_gives_what_it_can() {
        let mut devices = pool(&[Some(0), Some(0)], 2);
        devices[1].healthy = false;
        let available = vec![devices[0].id(), devices[1].id(), devices[2].id()];
        let got = ask(&devices, &available, &[], 3);
        assert_eq!(got, [devices[0].id(), devices[2].id()], "not enough: what there is");
        assert!(!got.contains(&devices[3].id()));
    }

    #[test]
    fn deterministic_whatever_the_input_order() {
        let devices = pool(&[Some(0), Some(0), Some(1)], 8);
        let mut available = all(&devices);
        let first = ask(&devices, &available, &[], 5);
        available.reverse();
        assert_eq!(ask(&devices, &available, &[], 5), first);
    }

    #[test]
    fn unknown_ids_are_refused_by_name() {
        let devices = pool(&[Some(0)], 2);
        let err = preferred(&devices, &topology(1), &["0000:99:00.0".to_owned()], &[], 1).unwrap_err();
        assert_eq!(err.to_string(), "unknown device ID \"0000:99:00.0\" (not in this pool)");
        let err = preferred(&devices, &topology(1), &all(&devices), &["bogus".to_owned()], 1).unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }
}
