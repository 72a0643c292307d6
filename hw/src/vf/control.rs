//! The seam: [`VfControl`], and [`NetlinkVfControl`], its implementation for real PFs.

use std::fmt;

use crate::discover::VfLocation;
use crate::kernel::{Kernel, LinkInfo, Side};
use crate::types::{IfName, VfIndex};
use crate::vf::{VfChange, VfError, VfState};

/// The PF side of VFs. Every operation goes through the call's kernel session.
pub trait VfControl: Send + Sync + fmt::Debug {
    /// Every VF of PF `pf` as the PF reports it.
    fn vfs(&self, kernel: &dyn Kernel, pf: &IfName) -> Result<Vec<VfState>, VfError>;

    /// Changes VF `vf` of PF `pf`.
    fn set(&self, kernel: &dyn Kernel, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), VfError>;

    /// The current name of the netdev of the VF at `vf` (as just located in sysfs) in the
    /// session's host namespace, `None` when it is not there (it is in a pod's namespace, or
    /// the VF has no netdev).
    fn host_netdev(&self, kernel: &dyn Kernel, vf: &VfLocation) -> Result<Option<IfName>, VfError>;

    /// The netdev of the VF at `vf` in the session's pod namespace, found by what the kernel
    /// says it is, never by name, which a link of the pod's own may have: `None` when it is
    /// not there. `host_index` is the ifindex the netdev had on the node before it moved.
    ///
    /// The kernel names a netdev's parent device (`IFLA_PARENT_DEV_NAME`, the VF's PCI
    /// address) since 5.14. Before, no link says it; then the netdev is the pod's link with its
    /// node ifindex, which a move keeps unless the pod has a link of that index (then it is
    /// not found, and a DEL waits for the pod's end to get the VF back).
    fn pod_netdev(
        &self,
        kernel: &dyn Kernel,
        vf: &VfLocation,
        host_index: Option<u32>,
    ) -> Result<Option<LinkInfo>, VfError> {
        let address = vf.address.to_string();
        let failed = |e| VfError::Failed {
            what: format!("finding the netdev of VF {address} in the pod"),
            source: Box::new(e),
        };
        let links = kernel.links(Side::Pod).map_err(failed)?;
        if let Some(link) = links.iter().find(|link| link.parent_device.as_deref() == Some(address.as_str()))
        {
            return Ok(Some(link.clone()));
        }
        // Not there by its parent device: there is none, or this kernel names none, which the
        // PF's own netdev tells (asked only now: the common case needs no extra request).
        let named = match &vf.pf_netdev {
            Some(pf) => {
                kernel.link(Side::Host, pf).map_err(failed)?.is_some_and(|l| l.parent_device.is_some())
            }
            None => true,
        };
        Ok(if named { None } else { links.into_iter().find(|link| Some(link.index) == host_index) })
    }

    /// One VF's state.
    fn vf(&self, kernel: &dyn Kernel, pf: &IfName, vf: VfIndex) -> Result<VfState, VfError> {
        self.vfs(kernel, pf)?
            .into_iter()
            .find(|s| s.index == vf)
            .ok_or_else(|| VfError::NoSuchVf { pf: pf.to_string(), vf })
    }
}

/// VFs of real PFs: `RTM_GETLINK` / `RTM_SETLINK` on the PF over the session's host socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetlinkVfControl;

fn kernel_error(what: String, pf: &IfName, error: crate::kernel::KernelError) -> VfError {
    if error.missing_link().is_some() {
        return VfError::NoSuchPf(pf.to_string());
    }
    // A refused request's error says what it was for: not said twice.
    if error.names_request() {
        return VfError::Kernel(Box::new(error));
    }
    VfError::Failed { what, source: Box::new(error) }
}

impl VfControl for NetlinkVfControl {
    fn vfs(&self, kernel: &dyn Kernel, pf: &IfName) -> Result<Vec<VfState>, VfError> {
        kernel.vf_states(pf).map_err(|e| kernel_error(format!("reading the VFs of {pf}"), pf, e))
    }

    fn set(&self, kernel: &dyn Kernel, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), VfError> {
        // Bad values never reach the kernel.
        change.validate(pf.as_str(), vf)?;
        kernel.set_vf(pf, vf, change).map_err(|e| kernel_error(format!("setting VF {vf} of {pf}"), pf, e))
    }

    /// Sysfs shows a device's netdevs of the namespace it was mounted from (the host's), under
    /// their current names: a VF netdev the kernel handed back from a deleted pod namespace is
    /// found there, whatever it is called now. The location was just read from sysfs.
    fn host_netdev(&self, _kernel: &dyn Kernel, vf: &VfLocation) -> Result<Option<IfName>, VfError> {
        Ok(vf.netdev.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::kernel::NetlinkKernel;
    use crate::netns::Netns;
    use crate::vf::VlanProto;
    use crate::vf::settings::tests::every_setting;

    #[test]
    fn the_kernel_is_asked_for_real_and_a_veth_says_it_has_no_vfs() {
        // Root: a veth in a namespace of the test's own stands in for a PF without SR-IOV.
        let ns = Netns::create_unique("plexus-vf-test").unwrap();
        let kernel = NetlinkKernel::new(Some(ns.path().to_owned()), None);
        let (pf, peer): (IfName, IfName) = ("pxpf0".parse().unwrap(), "pxpf0p".parse().unwrap());
        kernel
            .add_veth(crate::kernel::Side::Host, crate::kernel::Veth { name: &pf, peer: &peer, mac: None })
            .unwrap();
        let control = NetlinkVfControl;
        assert_eq!(control.vfs(&kernel, &pf).unwrap(), []);
        let err = control.set(&kernel, &pf, VfIndex(0), &every_setting()).unwrap_err().to_string();
        assert!(err.starts_with("setting VF 0 of pxpf0: "), "{err}");
        let err = control.vfs(&kernel, &"nosuchpf".parse().unwrap()).unwrap_err();
        assert!(matches!(err, VfError::NoSuchPf(_)), "{err}");
        // Bad values never reach the kernel.
        let bad = VfChange { vlan: Some((5000, 0, VlanProto::Dot1Q)), ..Default::default() };
        assert!(matches!(control.set(&kernel, &pf, VfIndex(0), &bad), Err(VfError::Invalid { .. })));
        ns.delete().unwrap();
    }
}
