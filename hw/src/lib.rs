//! Node hardware for Plexus.
//!
//! - [`discover`](mod@discover): SR-IOV physical and virtual functions and the NUMA topology, read from sysfs
//!   through a [`SysfsRoot`] so that tests and the simulator can point it at a fake tree.
//! - [`netns`] and [`netlink`]: network namespaces and route-netlink sockets bound to them.
//! - [`kernel`]: the kernel operations of one CNI call over a session of two sockets (host and
//!   pod), behind one trait.
//! - [`vf`]: the PF side of VFs, the one seam to SR-IOV hardware.
//! - [`node`]: a node's sysfs, host namespace and VF control, chosen where a process starts.
//! - [`bond`]: bond options in the kernel's terms.
//! - [`events`]: the kernel's link and PCI device events, which tell the device plugin to look again.
//!
//! The simulated node, the stand-ins and the labs are not here: they are in `plexus-sim`.

pub mod bond;
pub mod discover;
pub mod error;
pub mod events;
pub mod kernel;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod node;
pub mod numa;
pub mod pci;
pub mod sysfs;
pub mod types;
pub mod vf;

pub use discover::{Discovery, PciFunction, PhysicalFunction, Problem, VirtualFunction, discover};
pub use error::SysfsError;
pub use node::Node;
pub use numa::{CpuList, NumaNode, NumaNodeInfo, NumaTopology};
pub use pci::{PciAddress, PciClass, PciId};
pub use sysfs::SysfsRoot;
pub use types::{IfName, IommuGroup, LinkType, MacAddr, OperState, VfIndex};
