//! An in-memory kernel: two namespaces (host and pod) of links, their addresses and routes,
//! and the VF settings of PFs, behind the same [`Kernel`] trait as a call's netlink session.
//! The delegates' logic (sriov, bond, the default route) is tested against it without root,
//! next to the root tests that run it on the real kernel.
//!
//! It answers as the kernel does where the logic depends on it: names (and altnames) are
//! unique in a namespace, and a link's own altname blocks a rename to that name (`EEXIST`); a
//! link must be down to be renamed (`EBUSY`); a move with a name taken in the target fails
//! before moving (`EEXIST`); a moved link arrives down, without addresses or controller; a
//! route's gateway must be on a subnet of the link (`ENETUNREACH`); a bond takes no port that
//! is up (`EPERM`); deleting a veth takes its peer; when the pod's namespace dies, its veths
//! and bonds die and physical netdevs (VFs) go back to the host, under their name or `dev<N>`
//! when the host has that name. Any operation can be made to fail once
//! ([`FakeKernel::fail_next`]), to test what the logic does then.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use plexus_hw::bond::BondOptions;
use plexus_hw::discover::VfLocation;
use plexus_hw::kernel::{Kernel, KernelError, LinkInfo, LinkSettings, RouteTo, Side, Veth};
use plexus_hw::netlink::IpFamily;
use plexus_hw::vf::{VfChange, VfControl, VfError, VfState};
use plexus_hw::{IfName, MacAddr, PciAddress, VfIndex};

use crate::node::SimNode;

/// What a fake link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A physical netdev (a PF's or a VF's), of the PCI device at the address.
    Device(PciAddress),
    /// One end of a veth pair.
    Veth,
    /// A bond, with its options.
    Bond(BondOptions),
    /// A bridge.
    Bridge,
}

/// A link in a fake namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its alternative names.
    pub alt_names: Vec<String>,
    /// What it is.
    pub kind: LinkKind,
    /// Its MAC.
    pub mac: Option<MacAddr>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// The bond or bridge it is a port of.
    pub controller: Option<u32>,
    /// A veth's peer: its index and whether it is in the other namespace.
    pub peer: Option<(u32, bool)>,
    /// Its addresses.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Routes through it: destination, prefix length, gateway.
    pub routes: Vec<(IpAddr, u8, Option<IpAddr>)>,
}

impl FakeLink {
    /// What the kernel says of it; `parents`: whether the kernel names parent devices (5.14
    /// and later).
    fn info(&self, parents: bool) -> LinkInfo {
        LinkInfo {
            index: self.index,
            name: self.name.clone(),
            mac: self.mac,
            mtu: Some(self.mtu),
            up: self.up,
            alt_names: self.alt_names.clone(),
            peer: self.peer.map(|(index, _)| index),
            peer_netnsid: self.peer.and_then(|(_, elsewhere)| elsewhere.then_some(0)),
            controller: self.controller,
            parent_device: match self.kind {
                LinkKind::Device(address) if parents => Some(address.to_string()),
                _ => None,
            },
        }
    }

    fn is_named(&self, name: &str) -> bool {
        self.name == name || self.alt_names.iter().any(|a| a == name)
    }
}

#[derive(Debug, Default)]
struct World {
    next_index: u32,
    host: BTreeMap<u32, FakeLink>,
    /// `None` once the pod's namespace is gone (or when the call has none).
    pod: Option<BTreeMap<u32, FakeLink>>,
    /// VF settings by PF name; the list's length is the PF's VF count.
    vfs: BTreeMap<String, Vec<VfState>>,
    /// Every operation that changed something, in order (`move #7 host->pod as net1`).
    log: Vec<String>,
    /// Operations to fail: the next one whose description starts with the prefix fails with
    /// the errno, once.
    fail: Vec<(String, Errno)>,
    /// Whether links' parent devices are hidden, as on a kernel before 5.14.
    no_parent_devices: bool,
    /// Links to make appear just before the next operation whose description starts with the
    /// prefix: side and name (another process's link, made meanwhile).
    appear: Vec<(String, Side, String)>,
}

/// The in-memory kernel; clones share one world.
#[derive(Debug, Clone, Default)]
pub struct FakeKernel {
    world: Arc<Mutex<World>>,
}

fn refused(what: impl Into<String>, errno: Errno) -> KernelError {
    KernelError::Refused { what: what.into(), errno }
}

impl World {
    fn ns(&self, side: Side) -> Result<&BTreeMap<u32, FakeLink>, KernelError> {
        match side {
            Side::Host => Ok(&self.host),
            Side::Pod => self.pod.as_ref().ok_or(KernelError::NoPod),
        }
    }

    fn ns_mut(&mut self, side: Side) -> Result<&mut BTreeMap<u32, FakeLink>, KernelError> {
        match side {
            Side::Host => Ok(&mut self.host),
            Side::Pod => self.pod.as_mut().ok_or(KernelError::NoPod),
        }
    }

    fn link_mut(&mut self, side: Side, index: u32, what: &str) -> Result<&mut FakeLink, KernelError> {
        self.ns_mut(side)?.get_mut(&index).ok_or_else(|| refused(what, Errno::ENODEV))
    }

    fn name_taken(&self, side: Side, name: &str, except: Option<u32>) -> Result<bool, KernelError> {
        Ok(self.ns(side)?.values().any(|l| Some(l.index) != except && l.is_named(name)))
    }

    fn new_index(&mut self) -> u32 {
        self.next_index += 1;
        self.next_index + 1
    }

    /// Records a change, or fails it when a test asked for that.
    fn change(&mut self, what: String) -> Result<(), KernelError> {
        if let Some(i) = self.fail.iter().position(|(prefix, _)| what.starts_with(prefix.as_str())) {
            let (_, errno) = self.fail.remove(i);
            return Err(refused(what, errno));
        }
        self.log.push(what);
        Ok(())
    }

    /// Makes the links appear that a test asked for before an operation like `what`.
    fn appear(&mut self, what: &str) {
        while let Some(i) = self.appear.iter().position(|(prefix, _, _)| what.starts_with(prefix.as_str())) {
            let (_, side, name) = self.appear.remove(i);
            let index = self.new_index();
            let link = FakeLink {
                index,
                name,
                alt_names: Vec::new(),
                kind: LinkKind::Bridge,
                mac: None,
                mtu: 1500,
                up: true,
                controller: None,
                peer: None,
                addresses: Vec::new(),
                routes: Vec::new(),
            };
            let _ = self.add(side, link);
        }
    }

    fn add(&mut self, side: Side, link: FakeLink) -> Result<(), KernelError> {
        self.ns_mut(side)?.insert(link.index, link);
        Ok(())
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Host => "host",
        Side::Pod => "pod",
    }
}

impl FakeKernel {
    /// An empty host namespace and an empty pod namespace.
    pub fn new() -> Self {
        let kernel = Self::default();
        kernel.world().pod = Some(BTreeMap::new());
        kernel
    }

    /// The host namespace of simulated node `node` (its PF netdevs, and its VF netdevs with
    /// their PCI addresses and MACs, down), its PFs' VFs pristine, and an empty pod.
    pub fn for_node(node: &SimNode) -> Self {
        let kernel = Self::new();
        for pf in node.pfs() {
            kernel.add_device(Side::Host, pf.netdev.as_str(), pf.address, Some(pf.mac), true);
            kernel
                .world()
                .vfs
                .insert(pf.netdev.to_string(), pf.vfs.iter().map(|vf| VfState::pristine(vf.index)).collect());
            for vf in &pf.vfs {
                if let Some(netdev) = &vf.netdev {
                    kernel.add_device(Side::Host, netdev.as_str(), vf.address, Some(vf.mac), false);
                }
            }
        }
        kernel
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a physical netdev of PCI device `device` on `side`; returns its index.
    pub fn add_device(
        &self,
        side: Side,
        name: &str,
        device: PciAddress,
        mac: Option<MacAddr>,
        up: bool,
    ) -> u32 {
        let mut world = self.world();
        let index = world.new_index();
        let link = FakeLink {
            index,
            name: name.to_owned(),
            alt_names: Vec::new(),
            kind: LinkKind::Device(device),
            mac,
            mtu: 1500,
            up,
            controller: None,
            peer: None,
            addresses: Vec::new(),
            routes: Vec::new(),
        };
        let _ = world.add(side, link);
        index
    }

    /// Gives link `name` on `side` the alternative name `alt` (as udev does).
    pub fn add_alt_name(&self, side: Side, name: &str, alt: &str) {
        let mut world = self.world();
        if let Ok(ns) = world.ns_mut(side)
            && let Some(link) = ns.values_mut().find(|l| l.name == name)
        {
            link.alt_names.push(alt.to_owned());
        }
    }

    /// The link named `name` on `side`, as the world holds it.
    pub fn find(&self, side: Side, name: &str) -> Option<FakeLink> {
        self.world().ns(side).ok()?.values().find(|l| l.name == name).cloned()
    }

    /// Every link on `side`, by index.
    pub fn all(&self, side: Side) -> Vec<FakeLink> {
        self.world().ns(side).map(|ns| ns.values().cloned().collect()).unwrap_or_default()
    }

    /// The changes made so far, in order.
    pub fn log(&self) -> Vec<String> {
        self.world().log.clone()
    }

    /// Makes the next operation whose description starts with `prefix` (`move`, `rename`,
    /// `configure`, `set_vf`, `route`, ...) fail with `errno`, once; called again, the one
    /// after too.
    pub fn fail_next(&self, prefix: &str, errno: Errno) {
        self.world().fail.push((prefix.to_owned(), errno));
    }

    /// Makes a link named `name` appear on `side` just before the next operation whose
    /// description starts with `prefix`: what another process does between two of the call's
    /// requests.
    pub fn appear_before(&self, prefix: &str, side: Side, name: &str) {
        self.world().appear.push((prefix.to_owned(), side, name.to_owned()));
    }

    /// The pod's namespace dies: its veths and bonds with it; physical netdevs go back to the
    /// host, down, under their name, or `dev<N>` when the host has a link of that name.
    pub fn kill_pod(&self) {
        let mut world = self.world();
        let Some(pod) = world.pod.take() else { return };
        for (_, mut link) in pod {
            if !matches!(link.kind, LinkKind::Device(_)) {
                continue;
            }
            if world.host.values().any(|l| l.is_named(&link.name)) {
                let taken: Vec<String> = world.host.values().map(|l| l.name.clone()).collect();
                link.name =
                    (0u32..).map(|n| format!("dev{n}")).find(|n| !taken.contains(n)).unwrap_or_default();
            }
            link.up = false;
            link.addresses.clear();
            link.routes.clear();
            link.controller = None;
            world.host.insert(link.index, link);
        }
    }

    /// A VF control over this world's VF settings, finding a VF's netdev in the host namespace
    /// by its PCI address (what the kernel says it is), not by name.
    pub fn vf_control(&self) -> FakeVfControl {
        FakeVfControl { kernel: self.clone() }
    }

    fn unchanged<T>(
        &self,
        side: Side,
        f: impl FnOnce(&BTreeMap<u32, FakeLink>) -> T,
    ) -> Result<T, KernelError> {
        Ok(f(self.world().ns(side)?))
    }

    /// What the kernel says of the links `pick` chooses on `side`.
    fn said(
        &self,
        side: Side,
        pick: impl for<'a> FnOnce(&'a BTreeMap<u32, FakeLink>) -> Vec<&'a FakeLink>,
    ) -> Result<Vec<LinkInfo>, KernelError> {
        let world = self.world();
        let parents = !world.no_parent_devices;
        Ok(pick(world.ns(side)?).into_iter().map(|link| link.info(parents)).collect())
    }

    /// Answers as a kernel before 5.14 does: no link's parent device (`IFLA_PARENT_DEV_NAME`).
    pub fn without_parent_devices(&self) {
        self.world().no_parent_devices = true;
    }
}

impl Kernel for FakeKernel {
    fn has_pod(&self) -> bool {
        self.world().pod.is_some()
    }

    fn link(&self, side: Side, name: &IfName) -> Result<Option<LinkInfo>, KernelError> {
        Ok(self.said(side, |ns| ns.values().filter(|l| l.is_named(name.as_str())).take(1).collect())?.pop())
    }

    fn link_by_index(&self, side: Side, index: u32) -> Result<Option<LinkInfo>, KernelError> {
        Ok(self.said(side, |ns| ns.get(&index).into_iter().collect())?.pop())
    }

    fn links(&self, side: Side) -> Result<Vec<LinkInfo>, KernelError> {
        self.said(side, |ns| ns.values().collect())
    }

    fn add_veth(&self, side: Side, veth: Veth<'_>) -> Result<(), KernelError> {
        let Veth { name, peer, mac } = veth;
        let mut world = self.world();
        let what = format!("add veth {name} {peer} on {}", side_name(side));
        if world.name_taken(side, name.as_str(), None)? || world.name_taken(side, peer.as_str(), None)? {
            return Err(refused(what, Errno::EEXIST));
        }
        world.change(what)?;
        let (a, b) = (world.new_index(), world.new_index());
        for (index, name, other, mac) in [(a, name, b, mac), (b, peer, a, None)] {
            let link = FakeLink {
                index,
                name: name.to_string(),
                alt_names: Vec::new(),
                kind: LinkKind::Veth,
                mac,
                mtu: 1500,
                up: false,
                controller: None,
                peer: Some((other, false)),
                addresses: Vec::new(),
                routes: Vec::new(),
            };
            world.add(side, link)?;
        }
        Ok(())
    }

    fn add_bond(&self, side: Side, name: &IfName, options: &BondOptions) -> Result<u32, KernelError> {
        let mut world = self.world();
        let what = format!("add bond {name} on {}", side_name(side));
        if world.name_taken(side, name.as_str(), None)? {
            return Err(refused(what, Errno::EEXIST));
        }
        world.change(what)?;
        let index = world.new_index();
        let link = FakeLink {
            index,
            name: name.to_string(),
            alt_names: Vec::new(),
            kind: LinkKind::Bond(options.clone()),
            mac: Some(MacAddr([0x02, 0xb0, 0, 0, 0, u8::try_from(index % 256).unwrap_or(0)])),
            mtu: options.mtu.unwrap_or(1500),
            up: false,
            controller: None,
            peer: None,
            addresses: Vec::new(),
            routes: Vec::new(),
        };
        world.add(side, link)?;
        Ok(index)
    }

    /// As `do_setlink` does a move with a name: `__dev_change_net_namespace` uses the name
    /// given only when the link's own name is taken in the target (EEXIST when that one is
    /// too, nothing moved); else the link moves under its own name, and the rename that
    /// follows, in the target, can fail (EEXIST) with the link already moved.
    fn move_link(&self, from: Side, index: u32, name: Option<&IfName>) -> Result<(), KernelError> {
        let mut world = self.world();
        let to = from.other();
        let what = format!(
            "move #{index} {}->{}{}",
            side_name(from),
            side_name(to),
            name.map(|n| format!(" as {n}")).unwrap_or_default()
        );
        world.ns(to)?;
        world.appear(&what);
        let link =
            world.ns(from)?.get(&index).cloned().ok_or_else(|| refused(what.clone(), Errno::ENODEV))?;
        let own_taken = world.name_taken(to, &link.name, None)?;
        let moved_as = match name {
            _ if !own_taken => link.name.clone(),
            Some(name) if !world.name_taken(to, name.as_str(), None)? => name.to_string(),
            _ => return Err(refused(what, Errno::EEXIST)),
        };
        if link.alt_names.iter().any(|a| world.ns(to).is_ok_and(|ns| ns.values().any(|l| l.is_named(a)))) {
            return Err(refused(what, Errno::EEXIST));
        }
        world.change(what.clone())?;
        let mut link = world.ns_mut(from)?.remove(&index).ok_or(KernelError::NoPod)?;
        link.name = moved_as;
        link.up = false;
        link.controller = None;
        link.addresses.clear();
        link.routes.clear();
        if let Some((peer, _)) = link.peer {
            link.peer = Some((peer, true));
            if let Some(other) = world.ns_mut(from)?.get_mut(&peer) {
                other.peer = Some((index, true));
            }
        }
        let index = if world.ns(to)?.contains_key(&index) { world.new_index() } else { index };
        link.index = index;
        let current = link.name.clone();
        world.add(to, link)?;
        match name {
            Some(name) if name.as_str() != current => {
                if world.name_taken(to, name.as_str(), Some(index))? {
                    return Err(refused(format!("{what} (moved as {current}, not renamed)"), Errno::EEXIST));
                }
                world.link_mut(to, index, &what)?.name = name.to_string();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn rename(&self, side: Side, index: u32, name: &IfName) -> Result<(), KernelError> {
        let mut world = self.world();
        let what = format!("rename #{index} to {name} on {}", side_name(side));
        let link =
            world.ns(side)?.get(&index).cloned().ok_or_else(|| refused(what.clone(), Errno::ENODEV))?;
        if link.up {
            return Err(refused(what, Errno::EBUSY));
        }
        // Its own altname blocks the name too: the kernel looks names up through altnames.
        if link.alt_names.iter().any(|a| a == name.as_str())
            || world.name_taken(side, name.as_str(), Some(index))?
        {
            return Err(refused(what, Errno::EEXIST));
        }
        world.change(what.clone())?;
        world.link_mut(side, index, &what)?.name = name.to_string();
        Ok(())
    }

    fn configure(&self, side: Side, index: u32, settings: LinkSettings) -> Result<(), KernelError> {
        let mut world = self.world();
        let what = format!("configure #{index} on {}", side_name(side));
        world.link_mut(side, index, &what)?;
        world.change(what.clone())?;
        let link = world.link_mut(side, index, &what)?;
        if let Some(mac) = settings.mac {
            link.mac = Some(mac);
        }
        if let Some(mtu) = settings.mtu {
            link.mtu = mtu;
        }
        link.up = settings.up;
        Ok(())
    }

    fn set_controller(&self, side: Side, index: u32, controller: Option<u32>) -> Result<(), KernelError> {
        let mut world = self.world();
        let what = format!("controller #{index} {controller:?} on {}", side_name(side));
        if let Some(c) = controller {
            let ns = world.ns(side)?;
            let Some(target) = ns.get(&c) else { return Err(refused(what, Errno::ENODEV)) };
            // The bonding driver refuses a port that is up ("can not be enslaved while up").
            if matches!(target.kind, LinkKind::Bond(_)) && ns.get(&index).is_some_and(|l| l.up) {
                return Err(refused(what, Errno::EPERM));
            }
        }
        world.link_mut(side, index, &what)?;
        world.change(what.clone())?;
        world.link_mut(side, index, &what)?.controller = controller;
        Ok(())
    }

    fn del_alt_name(&self, side: Side, index: u32, name: &str) -> Result<(), KernelError> {
        let mut world = self.world();
        let what = format!("del altname {name} of #{index} on {}", side_name(side));
        if !world.link_mut(side, index, &what)?.alt_names.iter().any(|a| a == name) {
            return Err(refused(what, Errno::ENOENT));
        }
        world.change(what.clone())?;
        world.link_mut(side, index, &what)?.alt_names.retain(|a| a != name);
        Ok(())
    }

    fn del_link(&self, side: Side, index: u32) -> Result<(), KernelError> {
        let mut world = self.world();
        let what = format!("delete #{index} on {}", side_name(side));
        let link =
            world.ns(side)?.get(&index).cloned().ok_or_else(|| refused(what.clone(), Errno::ENODEV))?;
        world.change(what)?;
        let ns = world.ns_mut(side)?;
        ns.remove(&index);
        for port in ns.values_mut().filter(|l| l.controller == Some(index)) {
            port.controller = None;
        }
        if let Some((peer, elsewhere)) = link.peer {
            let peer_side = if elsewhere { side.other() } else { side };
            if let Ok(ns) = world.ns_mut(peer_side) {
                ns.remove(&peer);
            }
        }
        Ok(())
    }

    fn addresses(&self, side: Side, index: u32) -> Result<Vec<(IpAddr, u8)>, KernelError> {
        self.unchanged(side, |ns| ns.get(&index).map(|l| l.addresses.clone()).unwrap_or_default())
    }

    fn add_address(&self, side: Side, index: u32, address: (IpAddr, u8)) -> Result<(), KernelError> {
        let (address, prefix_len) = address;
        let mut world = self.world();
        let what = format!("address {address}/{prefix_len} on #{index} on {}", side_name(side));
        if world.link_mut(side, index, &what)?.addresses.iter().any(|(a, _)| *a == address) {
            return Err(refused(what, Errno::EEXIST));
        }
        world.change(what.clone())?;
        world.link_mut(side, index, &what)?.addresses.push((address, prefix_len));
        Ok(())
    }

    fn add_route(&self, side: Side, index: u32, route: RouteTo) -> Result<(), KernelError> {
        let RouteTo { destination, prefix_len, gateway } = route;
        let mut world = self.world();
        let what =
            format!("route {destination}/{prefix_len} via {gateway:?} on #{index} on {}", side_name(side));
        let link = world.link_mut(side, index, &what)?;
        if let Some(gateway) = gateway
            && !link.addresses.iter().any(|(addr, len)| same_subnet(*addr, gateway, *len))
        {
            return Err(refused(what, Errno::ENETUNREACH));
        }
        world.change(what.clone())?;
        world.link_mut(side, index, &what)?.routes.push((destination, prefix_len, gateway));
        Ok(())
    }

    fn del_default_routes(&self, side: Side, index: u32, family: IpFamily) -> Result<usize, KernelError> {
        let mut world = self.world();
        let what = format!("delete default routes of #{index} on {}", side_name(side));
        world.link_mut(side, index, &what)?;
        world.change(what.clone())?;
        let link = world.link_mut(side, index, &what)?;
        let before = link.routes.len();
        link.routes.retain(|(dst, len, _)| *len != 0 || IpFamily::of(*dst) != family);
        Ok(before - link.routes.len())
    }

    fn add_default_route(&self, side: Side, index: u32, gateway: IpAddr) -> Result<(), KernelError> {
        let any = match gateway {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        self.add_route(side, index, RouteTo { destination: any, prefix_len: 0, gateway: Some(gateway) })
    }

    fn vf_states(&self, pf: &IfName) -> Result<Vec<VfState>, KernelError> {
        let world = self.world();
        world
            .vfs
            .get(pf.as_str())
            .cloned()
            .ok_or_else(|| refused(format!("reading the VFs of {pf}"), Errno::ENODEV))
    }

    fn set_vf(&self, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), KernelError> {
        let mut world = self.world();
        let what = format!("set_vf {pf} {vf}");
        let count =
            world.vfs.get(pf.as_str()).map(Vec::len).ok_or_else(|| refused(what.clone(), Errno::ENODEV))?;
        if vf.0 as usize >= count {
            return Err(refused(what, Errno::EINVAL));
        }
        world.change(what)?;
        if let Some(state) = world.vfs.get_mut(pf.as_str()).and_then(|list| list.get_mut(vf.0 as usize)) {
            *state = state.with(change);
        }
        Ok(())
    }
}

/// Whether `a` and `b` share the first `len` bits.
fn same_subnet(a: IpAddr, b: IpAddr, len: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The VF control of a [`FakeKernel`]'s world.
/// As `NetlinkVfControl` words it: a refusal that names its request is shown as it is.
fn vf_error(what: String, error: KernelError) -> VfError {
    if error.names_request() {
        VfError::Kernel(Box::new(error))
    } else {
        VfError::Failed { what, source: Box::new(error) }
    }
}

#[derive(Debug, Clone)]
pub struct FakeVfControl {
    kernel: FakeKernel,
}

impl VfControl for FakeVfControl {
    fn vfs(&self, kernel: &dyn Kernel, pf: &IfName) -> Result<Vec<VfState>, VfError> {
        kernel.vf_states(pf).map_err(|e| vf_error(format!("reading the VFs of {pf}"), e))
    }

    fn set(&self, kernel: &dyn Kernel, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), VfError> {
        change.validate(pf.as_str(), vf)?;
        kernel.set_vf(pf, vf, change).map_err(|e| vf_error(format!("setting VF {vf} of {pf}"), e))
    }

    fn host_netdev(&self, _kernel: &dyn Kernel, vf: &VfLocation) -> Result<Option<IfName>, VfError> {
        let world = self.kernel.world();
        let found = world.host.values().find(|l| l.kind == LinkKind::Device(vf.address));
        found
            .map(|l| l.name.parse::<IfName>())
            .transpose()
            .map_err(|e| VfError::Failed { what: format!("VF {}", vf.address), source: Box::new(e) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn name(text: &str) -> IfName {
        text.parse().unwrap()
    }

    #[test]
    fn answers_as_the_kernel_does_where_the_logic_depends_on_it() {
        let kernel = FakeKernel::new();
        let vf = kernel.add_device(Side::Host, "ens1f0v1", "0000:20:02.1".parse().unwrap(), None, false);
        kernel.add_alt_name(Side::Host, "ens1f0v1", "net1");
        // Its own altname blocks a rename to that name.
        let err = kernel.rename(Side::Host, vf, &name("net1")).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EEXIST as i32), "{err}");
        kernel.del_alt_name(Side::Host, vf, "net1").unwrap();
        kernel.add_device(Side::Pod, "eth0", "0000:99:00.0".parse().unwrap(), None, true);
        // A name taken in the target fails the rename after the move: the link is in the pod
        // under its own name, and the pod's eth0 is untouched.
        let err = kernel.move_link(Side::Host, vf, Some(&name("eth0"))).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EEXIST as i32));
        assert!(kernel.find(Side::Host, "ens1f0v1").is_none());
        assert_eq!(kernel.link(Side::Pod, &name("ens1f0v1")).unwrap().unwrap().index, vf);
        assert_eq!(
            kernel.find(Side::Pod, "eth0").unwrap().kind,
            LinkKind::Device("0000:99:00.0".parse().unwrap())
        );
        // Its own name taken in the target, the name given is used; both taken, nothing moves.
        kernel.add_device(Side::Host, "ens1f0v1", "0000:98:00.0".parse().unwrap(), None, false);
        let err = kernel.move_link(Side::Pod, vf, None).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EEXIST as i32));
        kernel.move_link(Side::Pod, vf, Some(&name("vf1"))).unwrap();
        assert_eq!(
            kernel.link(Side::Host, &name("vf1")).unwrap().unwrap().parent_device.as_deref(),
            Some("0000:20:02.1")
        );
        kernel.move_link(Side::Host, vf, Some(&name("net1"))).unwrap();
        kernel.configure(Side::Pod, vf, LinkSettings { mtu: Some(9000), ..LinkSettings::UP }).unwrap();
        assert_eq!(
            kernel.rename(Side::Pod, vf, &name("net2")).unwrap_err().errno(),
            Some(Errno::EBUSY as i32)
        );
        kernel.add_address(Side::Pod, vf, ("10.1.0.2".parse().unwrap(), 24)).unwrap();
        let route = RouteTo {
            destination: "10.9.0.0".parse().unwrap(),
            prefix_len: 16,
            gateway: "192.0.2.1".parse().ok(),
        };
        let off_link = kernel.add_route(Side::Pod, vf, route);
        assert_eq!(off_link.unwrap_err().errno(), Some(Errno::ENETUNREACH as i32));
        kernel.add_default_route(Side::Pod, vf, "10.1.0.1".parse().unwrap()).unwrap();
        assert_eq!(kernel.del_default_routes(Side::Pod, vf, IpFamily::V4).unwrap(), 1);
        // The pod dies: the VF goes back, down, without its addresses.
        kernel.kill_pod();
        assert!(!kernel.has_pod());
        let back = kernel.find(Side::Host, "net1").unwrap();
        assert!(!back.up && back.addresses.is_empty());
        assert!(matches!(kernel.links(Side::Pod), Err(KernelError::NoPod)));
        assert!(kernel.find(Side::Host, "eth0").is_some(), "the pod's own device comes back too");
    }

    #[test]
    fn an_operation_can_be_made_to_fail_once() {
        let kernel = FakeKernel::new();
        kernel.fail_next("add veth", Errno::ENOMEM);
        let (a, b) = (name("a"), name("b"));
        let veth = Veth { name: &a, peer: &b, mac: None };
        let err = kernel.add_veth(Side::Pod, veth).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::ENOMEM as i32));
        kernel.add_veth(Side::Pod, veth).unwrap();
        let a = kernel.link_index(Side::Pod, &name("a")).unwrap();
        kernel.del_link(Side::Pod, a).unwrap();
        assert!(kernel.links(Side::Pod).unwrap().is_empty(), "a veth takes its peer");
        assert_eq!(kernel.log().len(), 2);
    }
}
