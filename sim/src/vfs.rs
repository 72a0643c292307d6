//! The simulated node's [`VfControl`]: VF settings in the node's [`VfStore`], VF netdevs
//! found through their representors in the node's namespace; and the node as the delegates
//! reach it ([`SimNode::hw_node`]).

use std::collections::BTreeMap;

use plexus_hw::discover::VfLocation;
use plexus_hw::kernel::{Kernel, LinkInfo, LinkSettings, Side, Veth};
use plexus_hw::vf::{VfChange, VfControl, VfError, VfState};
use plexus_hw::{IfName, MacAddr, PciAddress, SysfsRoot, VfIndex};

use crate::node::{SimNode, name, representor_name};
use crate::store::{VfStore, failed};

impl SimNode {
    /// The node as Plexus's delegates reach it: this tree as sysfs, the node's namespace as the
    /// host (when it has links), VF settings in the simulator's store.
    pub fn hw_node(&self) -> plexus_hw::Node {
        plexus_hw::Node::new(
            SysfsRoot::new(self.root()),
            self.netns_path(),
            std::sync::Arc::new(SimVfControl::for_node(self)),
        )
    }
}

/// The simulated node's [`VfControl`]: settings in the [`VfStore`], VF netdevs found through
/// their representors in the node's namespace (the session's host side).
#[derive(Debug, Clone)]
pub struct SimVfControl {
    store: VfStore,
    /// Whether the node has real links; without them its VF netdevs are only names in the tree.
    links: bool,
    /// Each VF's MAC, for a netdev made anew.
    macs: BTreeMap<PciAddress, MacAddr>,
}

impl SimVfControl {
    /// VF control for `node`.
    pub fn for_node(node: &SimNode) -> Self {
        Self {
            store: VfStore::new(node.root()),
            links: node.netns_name().is_some(),
            macs: node.pfs().iter().flat_map(|pf| &pf.vfs).map(|vf| (vf.address, vf.mac)).collect(),
        }
    }

    /// The store behind it.
    pub fn store(&self) -> &VfStore {
        &self.store
    }

    fn kernel(what: &str) -> impl FnOnce(plexus_hw::kernel::KernelError) -> VfError + '_ {
        move |e| failed(what, e)
    }
}

impl VfControl for SimVfControl {
    fn vfs(&self, _kernel: &dyn Kernel, pf: &IfName) -> Result<Vec<VfState>, VfError> {
        self.store.vfs(pf)
    }

    fn set(&self, _kernel: &dyn Kernel, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), VfError> {
        self.store.set(pf, vf, change)
    }

    /// A veth has no parent device: the VF's veth is the representor's peer, when that peer is
    /// the pod-side link whose own peer is the representor.
    fn pod_netdev(
        &self,
        kernel: &dyn Kernel,
        vf: &VfLocation,
        _host_index: Option<u32>,
    ) -> Result<Option<LinkInfo>, VfError> {
        let what = format!("finding the netdev of VF {} in the pod", vf.address);
        let Some(pf) = &vf.pf_netdev else { return Ok(None) };
        if !self.links || !kernel.has_pod() {
            return Ok(None);
        }
        let representor =
            name(representor_name(pf.as_str(), vf.index)).map_err(|e| failed(what.clone(), e))?;
        let Some(rep) = kernel.link(Side::Host, &representor).map_err(Self::kernel(&what))? else {
            return Ok(None);
        };
        let (Some(peer), Some(_)) = (rep.peer, rep.peer_netnsid) else { return Ok(None) };
        let link = kernel.link_by_index(Side::Pod, peer).map_err(Self::kernel(&what))?;
        Ok(link.filter(|l| l.peer == Some(rep.index) && l.peer_netnsid.is_some()))
    }

    /// Finds the VF's veth through its representor, which never leaves the node's namespace:
    /// the representor's peer is the VF netdev, here when the peer is in the same namespace. A
    /// missing representor means the veth pair died with a pod namespace, where the kernel
    /// would have handed a real VF netdev back to the host: the pair is made anew, the netdev
    /// under the name the kernel falls back to (`dev<N>`; the kernel keeps the pod-side name
    /// when the host has no link of that name, which the simulator cannot know).
    fn host_netdev(&self, kernel: &dyn Kernel, vf: &VfLocation) -> Result<Option<IfName>, VfError> {
        let what = format!("finding the netdev of VF {}", vf.address);
        let bad_name = |e| failed(what.clone(), e);
        // VFs bound to vfio-pci have no veth; a PF without a netdev has no representors.
        let (Some(pf), Some(_)) = (&vf.pf_netdev, &vf.netdev) else {
            return Ok(None);
        };
        if !self.links {
            return Ok(vf.netdev.clone());
        }
        let representor = name(representor_name(pf.as_str(), vf.index)).map_err(bad_name)?;
        if let Some(rep) = kernel.link(Side::Host, &representor).map_err(Self::kernel(&what))? {
            if rep.peer_netnsid.is_some() {
                return Ok(None);
            }
            let Some(peer) = rep.peer else { return Ok(None) };
            let link = kernel.link_by_index(Side::Host, peer).map_err(Self::kernel(&what))?;
            return link.map(|l| name(l.name)).transpose().map_err(bad_name);
        }
        let names: Vec<String> =
            kernel.links(Side::Host).map_err(Self::kernel(&what))?.into_iter().map(|l| l.name).collect();
        let free = (0u32..).map(|n| format!("dev{n}")).find(|n| !names.contains(n)).unwrap_or_default();
        let returned = name(free).map_err(bad_name)?;
        let mac = self.macs.get(&vf.address).copied();
        let make = || -> Result<(), plexus_hw::kernel::KernelError> {
            kernel.add_veth(Side::Host, Veth { name: &returned, peer: &representor, mac })?;
            let port = kernel.link_index(Side::Host, &representor)?;
            // The representor is a port of the PF's bridge, the simulated switch. A PF with a
            // parent device is a real driver's (netdevsim, in the kernel lab): no bridge to join.
            if let Some(bridge) = kernel.link(Side::Host, pf)?.filter(|l| l.parent_device.is_none()) {
                kernel.set_controller(Side::Host, port, Some(bridge.index))?;
            }
            kernel.configure(Side::Host, port, LinkSettings::UP)
        };
        make().map_err(Self::kernel(&what))?;
        Ok(Some(returned))
    }
}
