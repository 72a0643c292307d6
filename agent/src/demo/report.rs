//! What the demo shows and checks: each pod's network-status and NUMA placement, the agent's
//! phase latencies, and that nothing is left behind.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};
use plexus_hw::netlink::Netlink;
use plexus_hw::netns::Netns;
use plexus_hw::vf::VfState;
use plexus_sim::{SimNode, VfStore};
use serde_json::Value;

use crate::table::Table;

/// Link names in namespace `netns` (`None`: this process's).
fn link_names(netns: Option<&Path>) -> anyhow::Result<BTreeSet<String>> {
    let netns = netns.map(Netns::open).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let names = runtime.block_on(async {
        let nl = Netlink::connect(netns.as_ref()).await?;
        nl.link_names().await
    })?;
    Ok(names.into_iter().collect())
}

/// What of the demo's kind exists before it, to tell what it left: the namespaces it names
/// (with its pid) and the links of this namespace named as the simulator names its links.
/// Nothing else on the machine is the demo's to judge.
#[derive(Debug)]
pub struct Snapshot {
    namespaces: BTreeSet<String>,
    links: BTreeSet<String>,
}

/// Whether namespace `name` is one this demo process makes (`plexus-demo-<pid>`,
/// `plexus-demo-pod-<pod>-<pid>`).
fn ours(name: &str) -> bool {
    let pid = std::process::id();
    name == format!("plexus-demo-{pid}")
        || (name.starts_with("plexus-demo-pod-") && name.ends_with(&format!("-{pid}")))
}

fn namespaces() -> anyhow::Result<BTreeSet<String>> {
    match std::fs::read_dir(plexus_hw::netns::NETNS_RUN_DIR) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| ours(name))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).context(plexus_hw::netns::NETNS_RUN_DIR),
    }
}

impl Snapshot {
    pub fn take() -> anyhow::Result<Self> {
        let links = link_names(None)?.into_iter().filter(|n| plexus_sim::node::names_a_link(n)).collect();
        Ok(Self { namespaces: namespaces()?, links })
    }
}

/// A pod's network-status, then where its VFs sit.
pub fn print_pod(sysfs: &Path, status: &Value, vfs: &[String]) -> anyhow::Result<()> {
    let found = plexus_hw::discover::discover(&plexus_hw::SysfsRoot::new(sysfs))?;
    println!("   k8s.v1.cni.cncf.io/network-status:");
    for line in serde_json::to_string_pretty(status)?.lines() {
        println!("     {line}");
    }
    let mut nodes = BTreeSet::new();
    let mut placed = Vec::new();
    for id in vfs {
        let address = id.parse().map_err(|e| anyhow::anyhow!("VF {id}: {e}"))?;
        let (pf, vf) = found.vf(address).with_context(|| format!("VF {id} is not on the node"))?;
        let numa = vf.function.numa_node.map_or_else(|| "?".to_owned(), |n| n.to_string());
        nodes.insert(numa.clone());
        placed.push(format!(
            "{id} ({} VF {}, NUMA {numa})",
            pf.function.netdev_name().unwrap_or("-"),
            vf.index
        ));
    }
    let cpus = |node: &str| {
        found.numa.nodes.iter().find(|n| n.id.to_string() == node).map_or("?", |n| n.cpus.as_str()).to_owned()
    };
    let summary = match nodes.len() {
        1 => {
            let node = nodes.first().map_or("?", String::as_str);
            format!("all on NUMA node {node} (CPUs {})", cpus(node))
        }
        _ => format!("spread over NUMA nodes {}", nodes.into_iter().collect::<Vec<_>>().join(", ")),
    };
    println!("   VFs: {}", placed.join(", "));
    println!("   NUMA placement: {summary}");
    Ok(())
}

/// The agent's phases for the recent calls of `command`: median and slowest per call, from
/// `plexus-agent trace`. A phase that runs once per attachment counts as their sum.
pub fn print_phases(socket_dir: &Path, command: &str) -> anyhow::Result<()> {
    let calls: Vec<_> =
        crate::cni_server::trace(socket_dir, 256)?.into_iter().filter(|c| c.command == command).collect();
    let mut order: Vec<String> = Vec::new();
    let mut per_call: Vec<std::collections::HashMap<String, f64>> = Vec::new();
    for call in &calls {
        let mut sums = std::collections::HashMap::new();
        for (phase, seconds) in &call.phases {
            if !order.contains(phase) {
                order.push(phase.clone());
            }
            *sums.entry(phase.clone()).or_insert(0.0) += seconds;
        }
        sums.insert("total".to_owned(), call.total);
        per_call.push(sums);
    }
    order.push("total".to_owned());
    println!();
    println!(
        "== setup latency, phase by phase, over the {} {command} calls (plexus-agent trace)",
        calls.len()
    );
    let mut table = Table::new(3, ["phase", "median", "slowest"]);
    let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
    for phase in order {
        let mut values: Vec<f64> = per_call.iter().filter_map(|c| c.get(&phase).copied()).collect();
        values.sort_by(f64::total_cmp);
        let (Some(median), Some(max)) = (values.get(values.len() / 2), values.last()) else { continue };
        table.row(vec![phase, ms(*median), ms(*max)]);
    }
    print!("{}", table.render());
    Ok(())
}

/// The VF states of every PF of `node` and the names of the links in its namespace.
pub fn node_state(node: &SimNode) -> anyhow::Result<(Vec<Vec<VfState>>, BTreeSet<String>)> {
    let store = VfStore::new(node.root());
    let states = node.pfs().iter().map(|pf| store.vfs(&pf.netdev)).collect::<Result<Vec<_>, _>>()?;
    let netns = node.netns_name().map(|n| Path::new(plexus_hw::netns::NETNS_RUN_DIR).join(n));
    Ok((states, link_names(netns.as_deref())?))
}

/// Every VF netdev is back in the node's namespace under its name, and every VF's PF-side
/// settings are what they were before the pods (`before`, from [`node_state`]).
pub fn check_vfs_restored(
    node: &SimNode,
    before: &(Vec<Vec<VfState>>, BTreeSet<String>),
) -> anyhow::Result<()> {
    let (states, links) = node_state(node)?;
    for pf in node.pfs() {
        for vf in &pf.vfs {
            if let Some(netdev) = &vf.netdev
                && !links.contains(&netdev.to_string())
            {
                bail!("VF netdev {netdev} is not back on the node (links there: {links:?})");
            }
        }
    }
    if links != before.1 {
        bail!("the node's links changed: {:?} before, {links:?} after", before.1);
    }
    if states != before.0 {
        bail!("VF settings differ from before the pods: {:?} before, {states:?} after", before.0);
    }
    Ok(())
}

/// Processes whose command line names `path`, other than this one.
fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit())
                && e.file_name() != me.as_str()
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{} ({})", e.file_name().to_string_lossy(), cmdline.trim()))
        })
        .collect()
}

/// Compares the machine with `before`: no namespace, link, file or process of the demo left.
pub fn nothing_left_behind(before: &Snapshot, work: &Path) -> anyhow::Result<()> {
    let after = Snapshot::take()?;
    let namespaces: Vec<_> = after.namespaces.difference(&before.namespaces).collect();
    let links: Vec<_> = after.links.difference(&before.links).collect();
    let files = plexus_sim::files_in(work)?;
    let processes = processes_naming(work);
    println!();
    println!("== nothing left behind");
    println!("   network namespaces made and not removed: {}", namespaces.len());
    println!("   links added to this namespace: {}", links.len());
    println!("   files left under {}: {}", work.display(), files.len() + usize::from(work.exists()));
    println!("   processes left running: {}", processes.len());
    if namespaces.is_empty() && links.is_empty() && !work.exists() && processes.is_empty() {
        println!("   nothing left behind");
        return Ok(());
    }
    bail!("left behind: namespaces {namespaces:?}, links {links:?}, files {files:?}, processes {processes:?}")
}
