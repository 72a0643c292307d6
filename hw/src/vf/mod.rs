//! The PF side of a VF: its administrative MAC, VLAN, QoS and VLAN protocol, spoof checking,
//! trust, link state and rates.
//!
//! This is the narrow seam between Plexus and SR-IOV hardware. [`VfControl`] reads and
//! changes a PF's VFs and finds a VF's netdev in the host namespace, through the kernel
//! session of the call ([`crate::kernel::Kernel`]). [`NetlinkVfControl`] is the real one: the
//! session's `RTM_GETLINK` / `RTM_SETLINK` on the PF (the messages are in
//! [`crate::netlink::vf`]) and the VF's netdev as sysfs shows it. The simulated node has its
//! own (in `plexus-sim`), chosen where a process starts, never here. Everything above the seam
//! runs the same code on both.
//!
//! - [`settings`]: the data: a VF's state, a change, the seam's error.
//! - [`control`]: the trait and the real implementation.

pub mod control;
pub mod settings;

pub use control::{NetlinkVfControl, VfControl};
pub use settings::{VfChange, VfError, VfLinkMode, VfState, VlanProto};
