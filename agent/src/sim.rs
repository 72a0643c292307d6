//! `plexus-agent sim up|down`: a simulated SR-IOV node on this machine.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plexus_sim::{SimNode, SimSpec};

/// What to simulate, and where.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory for the fake sysfs tree (created; use it as --sysfs-root).
    #[arg(long)]
    root: PathBuf,
    /// Physical functions (two per simulated card).
    #[arg(long, default_value_t = SimSpec::default().pfs)]
    pfs: u32,
    /// NUMA nodes the cards are spread over.
    #[arg(long, default_value_t = SimSpec::default().numa_nodes)]
    numa_nodes: u32,
    /// VFs per PF.
    #[arg(long, default_value_t = SimSpec::default().vfs_per_pf)]
    vfs: u32,
    /// VFs per PF (the last ones) bound to vfio-pci, with no netdev.
    #[arg(long, default_value_t = SimSpec::default().vfio_vfs_per_pf)]
    vfio: u32,
    /// CPUs per NUMA node.
    #[arg(long, default_value_t = SimSpec::default().cpus_per_node)]
    cpus_per_node: u32,
    /// Also make real links (a bridge per PF, a veth per VF netdev) in a new network namespace
    /// of this name (root needed).
    #[arg(long)]
    netns: Option<String>,
}

/// Builds the node; on failure, removes whatever was made.
pub fn up(args: &UpArgs) -> anyhow::Result<()> {
    let spec = SimSpec {
        pfs: args.pfs,
        numa_nodes: args.numa_nodes,
        vfs_per_pf: args.vfs,
        vfio_vfs_per_pf: args.vfio,
        cpus_per_node: args.cpus_per_node,
    };
    // Until kept, the node removes itself when dropped: a failure below leaves nothing behind.
    let mut node = SimNode::build(&args.root, &spec).context("building the simulated node")?;
    if let Some(netns) = &args.netns {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime
            .block_on(node.create_netdevs(netns))
            .with_context(|| format!("making the simulated links in namespace {netns}"))?;
    }
    let vfs: usize = node.pfs().iter().map(|pf| pf.vfs.len()).sum();
    let links = node.netns_name().map_or_else(String::new, |ns| format!(", links in network namespace {ns}"));
    let root = node.keep();
    println!(
        "simulated node at {}: {} PFs on {} NUMA nodes, {vfs} VFs{links}",
        root.display(),
        spec.pfs,
        spec.numa_nodes
    );
    Ok(())
}

/// Removes the node recorded under `root`.
pub fn down(root: &Path) -> anyhow::Result<()> {
    let node = SimNode::load(root)?;
    node.destroy().context("removing the simulated node")?;
    println!("removed simulated node at {}", root.display());
    Ok(())
}
