//! Node hardware for Plexus.
//!
//! - [`discover`]: SR-IOV physical and virtual functions and the NUMA topology, read from sysfs
//!   through a [`SysfsRoot`] so that tests and the simulator can point it at a fake tree.
//! - [`netns`] and [`netlink`]: network namespaces and route-netlink sockets bound to them.
//! - [`sim`]: a simulated node (a fake sysfs tree, optionally with veth links standing in for
//!   VF netdevs) for tests, benches and the demo.

pub mod bond;
pub mod discover;
pub mod error;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod numa;
pub mod pci;
pub mod sim;
pub mod sysfs;
pub mod types;
pub mod vf;

pub use discover::{Discovery, PciFunction, PhysicalFunction, Problem, VirtualFunction, discover};
pub use error::SysfsError;
pub use numa::{CpuList, NumaNode, NumaNodeInfo, NumaTopology};
pub use pci::{PciAddress, PciClass, PciId};
pub use sysfs::SysfsRoot;
pub use types::{IfName, IommuGroup, LinkType, MacAddr, OperState, VfIndex};
