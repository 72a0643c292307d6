//! `plexus-agent discover`: the node's SR-IOV devices as a table or as JSON.
//!
//! The JSON shape is an interface other tools read: field names, nesting and `null`s stay as
//! they are.

use std::path::Path;

use anyhow::Context;
use plexus_hw::{Discovery, PciFunction, PhysicalFunction, SysfsRoot, VirtualFunction, discover};
use serde::Serialize;

use crate::table::Output;
use crate::table::{Table, or_dash};

/// Discovers under `sysfs_root` and prints in `output` format; problems go to the log.
pub fn run(sysfs_root: &Path, output: Output) -> anyhow::Result<()> {
    let found = discover(&SysfsRoot::new(sysfs_root)).context("discovery failed")?;
    for problem in &found.problems {
        tracing::warn!("{problem}");
    }
    let text = match output {
        Output::Table => table(&found),
        Output::Json => {
            let mut json = serde_json::to_string_pretty(&DiscoveryJson::from(&found))?;
            json.push('\n');
            json
        }
    };
    print!("{text}");
    Ok(())
}

#[derive(Debug, Serialize)]
struct DiscoveryJson<'a> {
    numa_nodes: Vec<NumaJson<'a>>,
    physical_functions: Vec<PfJson<'a>>,
}

#[derive(Debug, Serialize)]
struct NumaJson<'a> {
    id: u32,
    cpus: &'a str,
}

#[derive(Debug, Serialize)]
struct PfJson<'a> {
    pci_address: String,
    netdev: Option<&'a str>,
    vendor: String,
    device: String,
    vendor_name: Option<&'static str>,
    device_name: Option<&'static str>,
    driver: Option<&'a str>,
    numa_node: Option<u32>,
    total_vfs: u32,
    num_vfs: u32,
    link_type: Option<String>,
    vfs: Vec<VfJson<'a>>,
}

#[derive(Debug, Serialize)]
struct VfJson<'a> {
    pci_address: String,
    index: u32,
    vendor: String,
    device: String,
    driver: Option<&'a str>,
    netdev: Option<&'a str>,
    numa_node: Option<u32>,
    iommu_group: Option<String>,
}

impl<'a> From<&'a Discovery> for DiscoveryJson<'a> {
    fn from(found: &'a Discovery) -> Self {
        Self {
            numa_nodes: found
                .numa
                .nodes
                .iter()
                .map(|n| NumaJson { id: n.id.0, cpus: n.cpus.as_str() })
                .collect(),
            physical_functions: found.pfs.iter().map(PfJson::from).collect(),
        }
    }
}

impl<'a> From<&'a PhysicalFunction> for PfJson<'a> {
    fn from(pf: &'a PhysicalFunction) -> Self {
        let f = &pf.function;
        Self {
            pci_address: f.address.to_string(),
            netdev: f.netdev_name(),
            vendor: f.vendor.to_string(),
            device: f.device.to_string(),
            vendor_name: pf.vendor_name(),
            device_name: pf.device_name(),
            driver: f.driver.as_deref(),
            numa_node: f.numa_node.map(|n| n.0),
            total_vfs: pf.total_vfs,
            num_vfs: pf.num_vfs,
            link_type: f.netdev.as_ref().and_then(|n| n.link_type).map(|t| t.to_string()),
            vfs: pf.vfs.iter().map(VfJson::from).collect(),
        }
    }
}

impl<'a> From<&'a VirtualFunction> for VfJson<'a> {
    fn from(vf: &'a VirtualFunction) -> Self {
        let f: &'a PciFunction = &vf.function;
        Self {
            pci_address: f.address.to_string(),
            index: vf.index.0,
            vendor: f.vendor.to_string(),
            device: f.device.to_string(),
            driver: f.driver.as_deref(),
            netdev: f.netdev_name(),
            numa_node: f.numa_node.map(|n| n.0),
            iommu_group: f.iommu_group.map(|g| g.to_string()),
        }
    }
}

fn table(found: &Discovery) -> String {
    let mut out = String::new();
    let mut numa = Table::new(0, ["NUMA NODE", "CPUS", "DISTANCES"]);
    for node in &found.numa.nodes {
        let distances: Vec<String> = node.distances.iter().map(u32::to_string).collect();
        numa.row(vec![node.id.to_string(), node.cpus.as_str().to_owned(), distances.join(" ")]);
    }
    out.push_str(&numa.render());
    if found.pfs.is_empty() {
        out.push_str("\nno SR-IOV physical functions\n");
    }
    for pf in &found.pfs {
        let f = &pf.function;
        let mut head = Table::new(0, ["PF", "NETDEV", "DRIVER", "NUMA", "VFS", "LINK", "STATE", "DEVICE"]);
        let netdev = f.netdev.as_ref();
        let name = match (pf.vendor_name(), pf.device_name()) {
            (Some(vendor), Some(device)) => format!("{vendor} {device}"),
            (Some(vendor), None) => format!("{vendor} device {}", f.device),
            _ => format!("{}:{}", f.vendor, f.device),
        };
        head.row(vec![
            f.address.to_string(),
            or_dash(f.netdev_name()),
            or_dash(f.driver.as_deref()),
            or_dash(f.numa_node),
            format!("{}/{}", pf.num_vfs, pf.total_vfs),
            or_dash(netdev.and_then(|n| n.link_type)),
            or_dash(netdev.and_then(|n| n.operstate)),
            name,
        ]);
        out.push('\n');
        out.push_str(&head.render());
        if pf.vfs.is_empty() {
            continue;
        }
        let mut vfs = Table::new(4, ["VF", "PCI ADDRESS", "DRIVER", "NETDEV", "NUMA", "IOMMU GROUP"]);
        for vf in &pf.vfs {
            let f = &vf.function;
            vfs.row(vec![
                vf.index.to_string(),
                f.address.to_string(),
                or_dash(f.driver.as_deref()),
                or_dash(f.netdev_name()),
                or_dash(f.numa_node),
                or_dash(f.iommu_group),
            ]);
        }
        out.push_str(&vfs.render());
    }
    out
}
