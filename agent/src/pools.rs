//! `plexus-agent pools`: which devices each pool gets, and why the others were left out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plexus_device_plugin::config::PoolConfig;
use plexus_device_plugin::pools::{self, Assignment, PoolDevice};
use plexus_hw::{SysfsRoot, discover};
use serde::Serialize;

use crate::table::{Output, Table, or_dash};

/// What the pool commands share.
#[derive(Debug, clap::Args)]
pub struct PoolsArgs {
    /// The pool config: the SR-IOV network device plugin's config.json format (its
    /// --config-file).
    #[arg(long, alias = "config-file")]
    pub pools: PathBuf,
    /// Where sysfs is mounted (a simulated node's root for tests).
    #[arg(long, default_value = plexus_hw::SysfsRoot::DEFAULT)]
    pub sysfs_root: PathBuf,
    /// The resource prefix of pools that set none.
    #[arg(long, default_value = plexus_device_plugin::config::DEFAULT_PREFIX)]
    pub resource_prefix: String,
    /// The IPv4 routing table: a device carrying the default route is never offered.
    #[arg(long, default_value = "/proc/net/route")]
    pub route_file: PathBuf,
}

impl PoolsArgs {
    /// Reads the pool config.
    pub fn load(&self) -> anyhow::Result<plexus_device_plugin::config::PoolConfig> {
        Ok(plexus_device_plugin::config::PoolConfig::load(&self.pools, &self.resource_prefix)?)
    }
}

/// Reads the config and discovers under `sysfs_root`; prints the assignment.
pub fn run(config: &PoolConfig, sysfs_root: &Path, route_file: &Path, output: Output) -> anyhow::Result<()> {
    let found = discover(&SysfsRoot::new(sysfs_root)).context("discovery failed")?;
    for problem in &found.problems {
        tracing::warn!("{problem}");
    }
    let routes = std::fs::read_to_string(route_file)
        .map(|text| pools::default_route_netdevs(&text))
        .unwrap_or_else(|_| BTreeSet::new());
    let assignment = pools::assign(config, &found, &routes);
    let text = match output {
        Output::Table => table(config, &assignment),
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&PoolsJson::new(config, &assignment))?),
    };
    print!("{text}");
    Ok(())
}

#[derive(Debug, Serialize)]
struct PoolsJson {
    pools: Vec<PoolJson>,
    excluded: Vec<ExcludedJson>,
}

#[derive(Debug, Serialize)]
struct PoolJson {
    resource_name: String,
    devices: Vec<DeviceJson>,
}

#[derive(Debug, Serialize)]
struct DeviceJson {
    pci_address: String,
    pf: Option<String>,
    vf_index: Option<u32>,
    numa_node: Option<u32>,
    driver: Option<String>,
    netdev: Option<String>,
    healthy: bool,
}

#[derive(Debug, Serialize)]
struct ExcludedJson {
    pci_address: String,
    reasons: Vec<String>,
}

impl PoolsJson {
    fn new(config: &PoolConfig, assignment: &Assignment) -> Self {
        Self {
            pools: config
                .pools
                .iter()
                .zip(&assignment.pools)
                .map(|(spec, devices)| PoolJson {
                    resource_name: spec.resource_name(),
                    devices: devices
                        .iter()
                        .map(|d| DeviceJson {
                            pci_address: d.id(),
                            pf: d.pf.map(|p| p.to_string()),
                            vf_index: d.vf_index.map(|i| i.0),
                            numa_node: d.numa_node.map(|n| n.0),
                            driver: d.driver.clone(),
                            netdev: d.netdev.clone(),
                            healthy: d.healthy,
                        })
                        .collect(),
                })
                .collect(),
            excluded: assignment
                .excluded
                .iter()
                .map(|e| ExcludedJson { pci_address: e.address.to_string(), reasons: e.reasons.clone() })
                .collect(),
        }
    }
}

fn device_row(d: &PoolDevice) -> Vec<String> {
    vec![
        d.id(),
        or_dash(d.pf),
        or_dash(d.vf_index),
        or_dash(d.driver.as_deref()),
        or_dash(d.netdev.as_deref()),
        or_dash(d.numa_node),
        if d.healthy { "Healthy" } else { "Unhealthy" }.to_owned(),
    ]
}

fn table(config: &PoolConfig, assignment: &Assignment) -> String {
    let mut out = String::new();
    for (spec, devices) in config.pools.iter().zip(&assignment.pools) {
        out.push_str(&format!("{} ({} devices)\n", spec.resource_name(), devices.len()));
        if devices.is_empty() {
            continue;
        }
        let mut table = Table::new(4, ["DEVICE", "PF", "VF", "DRIVER", "NETDEV", "NUMA", "HEALTH"]);
        for device in devices {
            table.row(device_row(device));
        }
        out.push_str(&table.render());
    }
    if !assignment.excluded.is_empty() {
        out.push_str(&format!("not in any pool ({} devices)\n", assignment.excluded.len()));
        for excluded in &assignment.excluded {
            out.push_str(&format!("    {}\n", excluded.address));
            for reason in &excluded.reasons {
                out.push_str(&format!("        {reason}\n"));
            }
        }
    }
    out
}
