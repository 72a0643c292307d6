//! `plexus-standalone`: the CNI meta-plugin and the built-in delegates doing a call in this
//! process, on a node without the agent (thin mode) or for a DEL while the agent is down. The
//! runtime calls the `plexus` binary (plexus-shim), which forwards to the agent when there is
//! one and otherwise becomes this program, with the same stdin and environment. Named after a
//! built-in delegate (`sriov`, `userspace`, `bond`: argv[0], as `plexus` passes it on, or a
//! link), it is that delegate alone, for plain Multus.
//!
//! The node it works on is chosen here, once: the real one at `/sys`, or, when
//! `PLEXUS_SYSFS_ROOT` is set, the simulated node there (only in a build with the
//! `simulated-node` feature, which the agent's demo and tests use).

use std::process::ExitCode;

use plexus_cni::entry::{self, Context, Outcome};
use plexus_cni::error::Error;
use plexus_cni::forward::MAX_MESSAGE;
use plexus_cni::multus::cluster::{Cluster, ClusterError};
use plexus_cni::multus::config::MetaConfig;
use plexus_cni::multus::kube::KubeCluster;
use plexus_cni::spec::EnvError;
use plexus_hw::{Node, SysfsRoot};

/// The variable that points the binary at a simulated node.
const SYSFS_ROOT_ENV: &str = "PLEXUS_SYSFS_ROOT";

/// The node: the simulated one `PLEXUS_SYSFS_ROOT` names, else the real one.
fn node() -> Result<Node, Error> {
    match std::env::var_os(SYSFS_ROOT_ENV).filter(|root| !root.is_empty()) {
        None => Ok(Node::real(SysfsRoot::default())),
        Some(root) => simulated(std::path::PathBuf::from(root)),
    }
}

#[cfg(feature = "simulated-node")]
fn simulated(root: std::path::PathBuf) -> Result<Node, Error> {
    plexus_sim::load_node(root)
        .map_err(|e| EnvError::Invalid { name: SYSFS_ROOT_ENV, reason: e.to_string() }.into())
}

#[cfg(not(feature = "simulated-node"))]
fn simulated(root: std::path::PathBuf) -> Result<Node, Error> {
    let reason = format!("{}: this plexus is built without the simulated node", root.display());
    Err(EnvError::Invalid { name: SYSFS_ROOT_ENV, reason }.into())
}

/// Thin mode: the kubeconfig of the config, else in-cluster, else static networks only.
fn kube(config: &MetaConfig) -> Result<Option<Box<dyn Cluster>>, ClusterError> {
    Ok(KubeCluster::from_config(config)?.map(|c| Box::new(c) as Box<dyn Cluster>))
}

/// The call done here, by this process.
fn locally(stdin: &[u8]) -> Outcome {
    entry::init_logging(stdin);
    let node = match node() {
        Ok(node) => node,
        Err(e) => return entry::outcome(Err(e), stdin),
    };
    let checkpoint = plexus_cni::multus::devices::Checkpoint::default();
    let context = Context {
        registry: entry::builtin_registry(&node, plexus_cni::userspace::Userspace::default()),
        node: &node,
        cluster: &kube,
        devices: Some(&checkpoint),
    };
    entry::run(|name| std::env::var(name).ok(), stdin, &context)
}

/// A built-in delegate by itself (the binary called as `sriov`, `userspace` or `bond`).
fn alone(name: &str, stdin: &[u8]) -> Option<Outcome> {
    // Before the node is loaded, which only a delegate needs.
    if !plexus_cni::forward::BUILTIN_DELEGATES.contains(&name) {
        return None;
    }
    let node = match node() {
        Ok(node) => node,
        Err(e) => return Some(entry::outcome(Err(e), stdin)),
    };
    let plugin = entry::builtin_named(name, &node)?;
    Some(entry::run_plugin(|name| std::env::var(name).ok(), stdin, &*plugin, name, &node))
}

fn main() -> ExitCode {
    let (stdin, called_as) = plexus_shim::started();
    let outcome = if stdin.len() as u64 > MAX_MESSAGE {
        Outcome::too_large("the network configuration on stdin", &[])
    } else {
        alone(&called_as, &stdin).unwrap_or_else(|| locally(&stdin))
    };
    outcome.finish()
}
