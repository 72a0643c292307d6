//! What Plexus runs against when there is no node: the simulated SR-IOV node, the stand-ins
//! for the kubelet and the API server, an OVS-DPDK lab, an in-memory kernel, and the scratch
//! directories and fixtures the tests, the benches and the demo share. Nothing here is in the
//! production crates (`plexus-hw`, `plexus-device-plugin`, `plexus-cni`); a process uses the
//! simulated node only when told to where it starts (`plexus-agent run --simulated-node`,
//! `PLEXUS_SYSFS_ROOT` for the `plexus` binary).
//!
//! - [`node`]: the simulated node's sysfs tree and its links; [`store`]: its VF settings;
//!   [`vfs`]: its VF control, and the node as the delegates reach it.
//! - [`kubelet`]: the kubelet's device plugin registration and PodResources API.
//! - [`apiserver`]: the Kubernetes API server over HTTP.
//! - [`ovs`]: an OVS-DPDK of its own.
//! - [`kernel`]: an in-memory kernel for the logic's tests.
//! - [`netdevsim`]: netdevsim PFs, in the kernel lab.
//! - [`scratch`](scratch()), [`fixture`], [`ip`]: what tests start from and check with.

pub mod apiserver;
pub mod fixture;
pub mod ip;
pub mod kernel;
pub mod kubelet;
pub mod netdevsim;
pub mod node;
pub mod ovs;
mod scratch;
pub mod store;
pub mod vfs;

pub use fixture::ScratchNode;
pub use node::{EVENTS_SOCKET, STATE_FILE, SimError, SimNode, SimPf, SimSpec, SimVf};
pub use scratch::{files_in, scratch};
pub use store::VfStore;
pub use tempfile::TempDir;
pub use vfs::SimVfControl;

/// The node at `root`, when `root` holds a simulated node: what `PLEXUS_SYSFS_ROOT` and
/// `plexus-agent run --simulated-node` select.
pub fn load_node(root: impl Into<std::path::PathBuf>) -> Result<plexus_hw::Node, SimError> {
    Ok(SimNode::load(root)?.hw_node())
}
