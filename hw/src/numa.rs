//! NUMA topology from `devices/system/node/node*/{cpulist,distance}`.

use std::fmt;

use crate::error::SysfsError;
use crate::sysfs::SysfsRoot;

/// A NUMA node number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct NumaNode(pub u32);

/// The kernel's limit on NUMA nodes: `MAX_NUMNODES` is `1 << NODES_SHIFT`, and `NODES_SHIFT`
/// is at most 10 on every architecture.
pub const MAX_NUMA_NODES: u32 = 1 << 10;

/// The kernel's limit on CPUs: `NR_CPUS` is at most 8192 (x86's `MAXSMP`, the largest any
/// architecture allows).
pub const MAX_CPUS: u32 = 8192;

impl NumaNode {
    /// Parses a device's `numa_node` file: `-1` means the firmware did not say, which is
    /// `Ok(None)`; anything else must be a node number the kernel can have.
    pub fn parse_device_attr(text: &str) -> Option<Option<Self>> {
        if text == "-1" {
            return Some(None);
        }
        Self::parse(text).map(Some)
    }

    /// A node number below [`MAX_NUMA_NODES`].
    pub fn parse(text: &str) -> Option<Self> {
        text.parse::<u32>().ok().filter(|n| *n < MAX_NUMA_NODES).map(Self)
    }
}

impl fmt::Display for NumaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A kernel CPU list (`0-3,8-11`), kept as written and expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList {
    text: String,
    cpus: Vec<u32>,
}

impl CpuList {
    /// Parses the kernel's list format; an empty string is an empty list (a memory-only node).
    /// A CPU number the kernel cannot have ([`MAX_CPUS`] and above) makes it malformed, which
    /// also bounds the list.
    pub fn parse(text: &str) -> Option<Self> {
        let cpu = |text: &str| text.parse::<u32>().ok().filter(|c| *c < MAX_CPUS);
        let mut cpus = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (cpu(lo)?, cpu(hi)?);
                    if lo > hi {
                        return None;
                    }
                    cpus.extend(lo..=hi);
                }
                None => cpus.push(cpu(part)?),
            }
            if cpus.len() > MAX_CPUS as usize {
                return None;
            }
        }
        Some(Self { text: text.to_owned(), cpus })
    }

    /// The list as the kernel wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The CPUs, in the order written.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus
    }
}

/// One NUMA node: its CPUs and its distance to every node (index = node number, as in the
/// kernel's `distance` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNodeInfo {
    /// The node.
    pub id: NumaNode,
    /// Its CPUs.
    pub cpus: CpuList,
    /// SLIT distances to node 0, 1, ...
    pub distances: Vec<u32>,
}

/// The nodes of the machine, sorted by number. Empty on a kernel without NUMA support.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumaTopology {
    /// The nodes.
    pub nodes: Vec<NumaNodeInfo>,
}

impl NumaTopology {
    /// The distance from `a` to `b`, when both are known.
    pub fn distance(&self, a: NumaNode, b: NumaNode) -> Option<u32> {
        let from = self.nodes.iter().find(|n| n.id == a)?;
        from.distances.get(b.0 as usize).copied()
    }

    /// Reads the topology. A node whose files are broken is left out and its error returned
    /// beside the others; a missing `devices/system/node` is a machine without NUMA.
    pub fn read(root: &SysfsRoot) -> (Self, Vec<SysfsError>) {
        let dir = match root.dir("devices/system/node") {
            Ok(Some(dir)) => dir,
            Ok(None) => return (Self::default(), Vec::new()),
            Err(e) => return (Self::default(), vec![e]),
        };
        let names = match dir.list(".") {
            Ok(names) => names,
            Err(e) => return (Self::default(), vec![e]),
        };
        let mut nodes = Vec::new();
        let mut errors = Vec::new();
        for name in names {
            let Some(id) = name.strip_prefix("node").and_then(NumaNode::parse) else {
                continue;
            };
            let read = || -> Result<NumaNodeInfo, SysfsError> {
                let node_dir =
                    dir.child(&name)?.ok_or_else(|| SysfsError::Missing { path: dir.path().join(&name) })?;
                let cpus = node_dir.parse("cpulist", "a CPU list such as 0-3,8", CpuList::parse)?;
                let distances = node_dir.parse("distance", "space-separated distances", |v| {
                    v.split_whitespace().map(|d| d.parse::<u32>().ok()).collect::<Option<Vec<_>>>()
                })?;
                Ok(NumaNodeInfo { id, cpus, distances })
            };
            match read() {
                Ok(node) => nodes.push(node),
                Err(e) => errors.push(e),
            }
        }
        nodes.sort_by_key(|n| n.id);
        (Self { nodes }, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn cpu_lists() {
        assert_eq!(CpuList::parse("0-3,8,10-11").unwrap().cpus(), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(CpuList::parse("").unwrap().cpus(), [] as [u32; 0]);
        assert!(CpuList::parse("3-1").is_none());
        assert!(CpuList::parse("a").is_none());
    }

    #[test]
    fn device_numa_attr() {
        assert_eq!(NumaNode::parse_device_attr("-1"), Some(None));
        assert_eq!(NumaNode::parse_device_attr("1"), Some(Some(NumaNode(1))));
        assert_eq!(NumaNode::parse_device_attr("x"), None);
        assert_eq!(NumaNode::parse_device_attr("1024"), None, "beyond MAX_NUMNODES");
    }

    #[test]
    fn cpu_numbers_are_bounded_by_the_kernels_limit() {
        // Expanded, this list would take 16 GiB.
        assert_eq!(CpuList::parse("0-4294967295"), None);
        assert_eq!(CpuList::parse("8192"), None);
        assert_eq!(CpuList::parse("0-8191").unwrap().cpus().len(), 8192);
        assert_eq!(CpuList::parse("0-8191,0-8191"), None, "more CPUs than the kernel can have");
    }

    #[test]
    fn reads_nodes_and_skips_a_broken_one() {
        let scratch = plexus_sim::scratch("numa").unwrap();
        let base = scratch.path().join("devices/system/node");
        for (n, cpus, dist) in [(0, "0-3", "10 21"), (1, "4-7", "21 10"), (2, "x", "10")] {
            let dir = base.join(format!("node{n}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cpulist"), format!("{cpus}\n")).unwrap();
            fs::write(dir.join("distance"), format!("{dist}\n")).unwrap();
        }
        fs::write(base.join("online"), "0-2\n").unwrap();
        let (topo, errors) = NumaTopology::read(&SysfsRoot::new(scratch.path()));
        assert_eq!(topo.nodes.len(), 2);
        assert_eq!(topo.nodes[1].cpus.as_str(), "4-7");
        assert_eq!(topo.distance(NumaNode(0), NumaNode(1)), Some(21));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].path().ends_with("node2/cpulist"), "{}", errors[0]);
    }

    #[test]
    fn no_node_directory_means_no_numa() {
        let scratch = plexus_sim::scratch("numa-none").unwrap();
        let (topo, errors) = NumaTopology::read(&SysfsRoot::new(scratch.path()));
        assert!(topo.nodes.is_empty());
        assert!(errors.is_empty());
    }
}
