//! The built-in `sriov` delegate: a hardware VF into the pod, configured, and restored exactly.
//!
//! - [`config`]: the SR-IOV CNI plugin's config keys.
//! - [`record`]: what an attachment changed, on disk, per VF.
//! - [`add`]: ADD; [`restore`]: DEL and the undo of a failed ADD, from the record;
//!   [`check`]: CHECK.
//!
//! Every kernel request goes through the call's kernel session ([`plexus_hw::kernel`]): the
//! host side holds the PFs and the VF netdevs not given to a pod, the pod side is the call's
//! namespace. The PF side of the VF goes through the node's [`VfControl`](plexus_hw::vf), real
//! or simulated. The record is written before anything changes, so a failed ADD, a DEL and a
//! crash all restore from the same facts, with the same code.

pub mod add;
pub mod check;
pub mod config;
pub mod record;
pub mod restore;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexus_hw::discover::{VfLocation, locate_vf};
use plexus_hw::kernel::KernelError;
use plexus_hw::vf::VfError;
use plexus_hw::{IfName, Node, PciAddress, SysfsError};
use serde_json::Value;

use crate::delegate::{InProcessPlugin, Request};
use crate::error::Error;
use crate::spec::ErrorCode;

/// A failure of the `sriov` delegate.
#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    /// No PCI device at the address.
    #[error("sriov: no PCI device {vf} under {sysfs}")]
    NoDevice {
        /// The VF asked for.
        vf: PciAddress,
        /// The sysfs root looked in.
        sysfs: PathBuf,
    },
    /// The device is not a VF sysfs can place (no `physfn`, not in its PF's `virtfn` links).
    #[error("sriov: VF {vf}: {error}")]
    Sysfs {
        /// The VF.
        vf: PciAddress,
        /// What sysfs said.
        error: SysfsError,
    },
    /// The VF's PF has no netdev to configure it through.
    #[error("sriov: VF {vf}: its PF {pf} has no netdev to configure VFs through")]
    NoPfNetdev {
        /// The VF.
        vf: PciAddress,
        /// Its PF.
        pf: PciAddress,
    },
    /// ADD of a VF this container already has.
    #[error("sriov: VF {vf} is already attached to this container as {ifname}")]
    AlreadyAttached {
        /// The VF.
        vf: PciAddress,
        /// Its interface in the pod.
        ifname: IfName,
    },
    /// ADD of a VF another live pod has.
    #[error("sriov: VF {vf} is in use by container {container} (netns {netns}, interface {ifname})")]
    InUse {
        /// The VF.
        vf: PciAddress,
        /// The container that has it.
        container: String,
        /// Its namespace.
        netns: String,
        /// Its interface there.
        ifname: IfName,
    },
    /// The VF's netdev is not in the host namespace.
    #[error(
        "sriov: VF {vf} has no netdev in the host namespace (driver {driver}): attached elsewhere, or not a netdev driver"
    )]
    NoHostNetdev {
        /// The VF.
        vf: PciAddress,
        /// Its driver.
        driver: String,
    },
    /// The VF's netdev went away between two lookups.
    #[error("sriov: VF {vf}: its netdev {netdev} vanished")]
    Vanished {
        /// The VF.
        vf: PciAddress,
        /// The netdev.
        netdev: IfName,
    },
    /// The pod already has a link of the interface name asked for (`lo`, its own `eth0`).
    #[error("sriov: the pod already has an interface named {ifname} (netns {netns})")]
    NameTaken {
        /// The name.
        ifname: IfName,
        /// The pod's namespace.
        netns: String,
    },
    /// The move into the pod left the VF's netdev elsewhere than asked.
    #[error("sriov: VF {vf}: its netdev is not in the pod as {ifname} after the move")]
    NotMoved {
        /// The VF.
        vf: PciAddress,
        /// The name asked for.
        ifname: IfName,
    },
    /// DEL found the VF's netdev neither in the pod nor back in the host.
    #[error("sriov: VF {vf}: its netdev is neither in the pod ({netns} {ifname}) nor in the host namespace")]
    Lost {
        /// The VF.
        vf: PciAddress,
        /// The pod's namespace.
        netns: String,
        /// The interface there.
        ifname: IfName,
    },
    /// CHECK of a VF this container does not have.
    #[error("sriov: VF {vf} is not attached to this container as {ifname}")]
    NotAttached {
        /// The VF.
        vf: PciAddress,
        /// The interface asked about.
        ifname: IfName,
    },
    /// CHECK found something other than what ADD made.
    #[error("sriov: {0}")]
    Changed(String),
    /// A kernel request of the attachment.
    #[error("sriov: {0}")]
    Kernel(#[from] KernelError),
    /// The PF side of the VF.
    #[error("sriov: {0}")]
    Vf(#[from] VfError),
    /// A record could not be read, written or removed.
    #[error("sriov: {what} {path}: {error}")]
    Record {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// A record is not what Plexus writes.
    #[error("sriov record {path} is corrupt: {error}")]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        error: serde_json::Error,
    },
}

impl crate::error::Failure for SriovError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::Record { .. } => ErrorCode::Io,
            Self::CorruptRecord { .. } => ErrorCode::Decode,
            _ => ErrorCode::Plugin,
        };
        code.into()
    }
}

/// The time each phase of one call took, in order.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    last: Option<Instant>,
    /// Phase name and duration.
    pub spans: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        Self { last: Some(Instant::now()), spans: Vec::new() }
    }

    /// Ends phase `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        if let Some(last) = self.last {
            self.spans.push((name, now - last));
        }
        self.last = Some(now);
    }

    /// The time of phase `name`, zero when it did not run.
    pub fn get(&self, name: &str) -> Duration {
        self.spans.iter().filter(|(n, _)| *n == name).map(|(_, d)| *d).sum()
    }

    /// Reports the phases to the call's collector (the agent's metrics).
    fn report(self) {
        for (name, took) in self.spans {
            crate::phases::record(format!("sriov {name}"), took);
        }
    }
}

/// The built-in `sriov` delegate, on a node.
#[derive(Debug, Clone)]
pub struct Sriov {
    node: Node,
}

/// Where a config keeps its records (`dataDir`).
fn data_dir(raw: &Value) -> PathBuf {
    crate::files::data_dir(raw, crate::paths::SRIOV_DATA_DIR)
}

impl Sriov {
    /// The delegate for `node`: its sysfs, its host namespace, its VF control.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn locate(&self, vf: PciAddress) -> Result<Option<VfLocation>, SriovError> {
        locate_vf(self.node.sysfs(), vf).map_err(|error| SriovError::Sysfs { vf, error })
    }
}

impl InProcessPlugin for Sriov {
    fn add(&self, request: &Request<'_>) -> Result<Value, Error> {
        let (result, phases) = self.add_timed(request);
        phases.report();
        result
    }

    fn del(&self, request: &Request<'_>) -> Result<(), Error> {
        let (result, phases) = self.del_timed(request);
        phases.report();
        result
    }

    fn check(&self, request: &Request<'_>) -> Result<(), Error> {
        self.check_attachment(request)
    }
}

#[cfg(test)]
mod tests;
