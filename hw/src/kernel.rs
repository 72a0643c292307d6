//! The kernel operations of one CNI call, in the node's host namespace and in the pod's, behind
//! one trait: what the `sriov`, `bond` and `userspace` delegates, the pod's default route and
//! the VF control ask of the kernel.
//!
//! [`NetlinkKernel`] is a call's session: one tokio runtime and at most two route-netlink
//! sockets (host and pod), opened on first use and kept for the whole call, as netavark opens
//! its socket pair once per command and hands it down. Every step of the call runs on the same
//! sockets; none opens its own. An in-memory kernel (in `plexus-sim`) implements the same trait
//! for the logic's tests, which need no root.

use std::cell::OnceCell;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::bond::BondOptions;
use crate::netlink::{IpFamily, Netlink, NetlinkError};
use crate::netns::{Netns, NetnsError};
use crate::types::{IfName, MacAddr, VfIndex};
use crate::vf::{VfChange, VfState};

pub use crate::netlink::{LinkId, LinkInfo};

/// Which of a call's two namespaces an operation acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The node's host namespace: PFs, and VF netdevs not given to a pod.
    Host,
    /// The pod's namespace (`CNI_NETNS`).
    Pod,
}

impl Side {
    /// The other side: where a move from this side goes.
    pub fn other(self) -> Self {
        match self {
            Self::Host => Self::Pod,
            Self::Pod => Self::Host,
        }
    }
}

/// What a call sets on a link in one request: its MAC and MTU when given, and up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkSettings {
    /// The MAC to set.
    pub mac: Option<MacAddr>,
    /// The MTU to set.
    pub mtu: Option<u32>,
    /// Up, or down.
    pub up: bool,
}

impl LinkSettings {
    /// Up, nothing else changed.
    pub const UP: Self = Self { mac: None, mtu: None, up: true };
    /// Down, nothing else changed.
    pub const DOWN: Self = Self { mac: None, mtu: None, up: false };
}

/// A route out of a link: to `destination/prefix_len`, via `gateway` when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTo {
    /// The destination network.
    pub destination: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The next hop.
    pub gateway: Option<IpAddr>,
}

/// A veth pair to make: `name` (with `mac` when given) and its `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Veth<'a> {
    /// The first end.
    pub name: &'a IfName,
    /// The other end.
    pub peer: &'a IfName,
    /// The first end's MAC.
    pub mac: Option<MacAddr>,
}

/// A failed kernel operation.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The call has no pod namespace: none was given (a DEL after the sandbox went), or it no
    /// longer exists.
    #[error("the pod's network namespace is gone")]
    NoPod,
    /// A namespace could not be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink request failed (the kernel's answer is in it).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The runtime driving the call's sockets could not be started.
    #[error("starting the netlink runtime: {0}")]
    Runtime(io::Error),
    /// The kernel refused a request with `errno` (how the in-memory kernel answers).
    #[error("{what}: {errno}")]
    Refused {
        /// The operation and its subject.
        what: String,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
}

impl KernelError {
    /// Whether the error names the request that failed and its subject (a refused netlink
    /// request, a refusal of the in-memory kernel).
    pub fn names_request(&self) -> bool {
        matches!(self, Self::Netlink(NetlinkError::Request { .. }) | Self::Refused { .. })
    }

    /// The errno the kernel answered with, when it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink(e) => e.errno(),
            Self::Refused { errno, .. } => Some(*errno as i32),
            _ => None,
        }
    }

    /// The link the error says does not exist.
    pub fn missing_link(&self) -> Option<&LinkId> {
        match self {
            Self::Netlink(NetlinkError::NoSuchLink(link)) => Some(link),
            _ => None,
        }
    }
}

/// The kernel operations of one call. Links are named by index once found (an index is what
/// the kernel says a link is; a name may belong to another link by the next request).
pub trait Kernel {
    /// Whether the call has a live pod namespace.
    fn has_pod(&self) -> bool;

    /// The link named `name`, `None` when there is none.
    fn link(&self, side: Side, name: &IfName) -> Result<Option<LinkInfo>, KernelError>;
    /// The link with index `index`, `None` when there is none.
    fn link_by_index(&self, side: Side, index: u32) -> Result<Option<LinkInfo>, KernelError>;
    /// Every link, in one dump.
    fn links(&self, side: Side) -> Result<Vec<LinkInfo>, KernelError>;
    /// Adds a veth pair, both ends down.
    fn add_veth(&self, side: Side, veth: Veth<'_>) -> Result<(), KernelError>;
    /// Adds bond `name` with `options`, down; returns its index.
    fn add_bond(&self, side: Side, name: &IfName, options: &BondOptions) -> Result<u32, KernelError>;
    /// Moves link `index` from `from` to the other side, down, renamed to `name` when given, in
    /// one request. The kernel moves first (under the link's own name, when that is free on
    /// the other side) and renames after: a rename refused there (EEXIST) leaves the link
    /// moved under its old name.
    fn move_link(&self, from: Side, index: u32, name: Option<&IfName>) -> Result<(), KernelError>;
    /// Renames link `index` (which must be down).
    fn rename(&self, side: Side, index: u32, name: &IfName) -> Result<(), KernelError>;
    /// Sets `settings` on link `index`, in one request.
    fn configure(&self, side: Side, index: u32, settings: LinkSettings) -> Result<(), KernelError>;
    /// Makes link `index` a port of `controller` (a bond or bridge), or of none.
    fn set_controller(&self, side: Side, index: u32, controller: Option<u32>) -> Result<(), KernelError>;
    /// Removes the alternative name `name` of link `index`.
    fn del_alt_name(&self, side: Side, index: u32, name: &str) -> Result<(), KernelError>;
    /// Deletes link `index` (a veth takes its peer with it).
    fn del_link(&self, side: Side, index: u32) -> Result<(), KernelError>;

    /// The addresses on link `index`, with their prefix lengths.
    fn addresses(&self, side: Side, index: u32) -> Result<Vec<(IpAddr, u8)>, KernelError>;
    /// Adds an address and its prefix length to link `index`.
    fn add_address(&self, side: Side, index: u32, address: (IpAddr, u8)) -> Result<(), KernelError>;
    /// Adds `route` out of link `index`.
    fn add_route(&self, side: Side, index: u32, route: RouteTo) -> Result<(), KernelError>;
    /// Deletes the default routes of `family` leaving through link `index`; returns how many.
    fn del_default_routes(&self, side: Side, index: u32, family: IpFamily) -> Result<usize, KernelError>;
    /// Adds a default route via `gateway` out of link `index`.
    fn add_default_route(&self, side: Side, index: u32, gateway: IpAddr) -> Result<(), KernelError>;

    /// The VFs PF `pf` (in the host namespace) reports.
    fn vf_states(&self, pf: &IfName) -> Result<Vec<VfState>, KernelError>;
    /// Applies `change` to VF `vf` of PF `pf`.
    fn set_vf(&self, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), KernelError>;

    /// The index of the link named `name`, an error naming it when there is none.
    fn link_index(&self, side: Side, name: &IfName) -> Result<u32, KernelError> {
        self.link(side, name)?
            .map(|link| link.index)
            .ok_or_else(|| NetlinkError::NoSuchLink(LinkId::Name(name.clone())).into())
    }
}

/// One side's namespace and the socket bound to it.
#[derive(Debug)]
struct Bound {
    netns: Netns,
    netlink: Netlink,
}

/// A call's kernel session over netlink. Nothing is opened until the first operation needs
/// it: a call that only runs plugin binaries opens no socket.
#[derive(Debug)]
pub struct NetlinkKernel {
    host_path: Option<PathBuf>,
    pod_path: Option<PathBuf>,
    runtime: OnceCell<tokio::runtime::Runtime>,
    host: OnceCell<Bound>,
    pod: OnceCell<Bound>,
}

/// `cell`'s value, made by `make` on first use (`OnceCell::get_or_try_init` is not stable).
fn get_or_try<T, E>(cell: &OnceCell<T>, make: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = make()?;
    Ok(cell.get_or_init(|| value))
}

impl NetlinkKernel {
    /// A session whose host side is the namespace at `host` (`None`: the calling thread's, so
    /// a session must be used on the thread that made it) and whose pod side is the namespace
    /// at `pod`.
    pub fn new(host: Option<PathBuf>, pod: Option<PathBuf>) -> Self {
        Self {
            host_path: host,
            pod_path: pod,
            runtime: OnceCell::new(),
            host: OnceCell::new(),
            pod: OnceCell::new(),
        }
    }

    /// The pod namespace the session was made for.
    pub fn pod_path(&self) -> Option<&Path> {
        self.pod_path.as_deref()
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, KernelError> {
        get_or_try(&self.runtime, || {
            tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(KernelError::Runtime)
        })
    }

    fn bound(&self, side: Side) -> Result<&Bound, KernelError> {
        let runtime = self.runtime()?;
        match side {
            Side::Host => get_or_try(&self.host, || {
                let (netns, inside) = match &self.host_path {
                    Some(path) => (Netns::open(path)?, true),
                    None => (Netns::current()?, false),
                };
                // The caller's own namespace needs no helper thread to open its socket.
                let netlink = runtime.block_on(Netlink::connect(inside.then_some(&netns)))?;
                Ok(Bound { netns, netlink })
            }),
            Side::Pod => get_or_try(&self.pod, || {
                let path =
                    self.pod_path.as_deref().filter(|p| Netns::is_alive(p)).ok_or(KernelError::NoPod)?;
                let netns = Netns::open(path)?;
                let netlink = runtime.block_on(Netlink::connect(Some(&netns)))?;
                Ok(Bound { netns, netlink })
            }),
        }
    }

    /// Runs `f` on `side`'s socket.
    fn run<T>(
        &self,
        side: Side,
        f: impl AsyncFnOnce(&Netlink) -> Result<T, NetlinkError>,
    ) -> Result<T, KernelError> {
        let bound = self.bound(side)?;
        Ok(self.runtime()?.block_on(f(&bound.netlink))?)
    }
}

impl Kernel for NetlinkKernel {
    /// A pod side already opened is reachable whatever became of its path: the session's
    /// handle keeps the namespace, and what was moved into it, alive (a runtime may remove the
    /// namespace's file while a call is still working in it).
    fn has_pod(&self) -> bool {
        self.pod.get().is_some() || self.pod_path.as_deref().is_some_and(Netns::is_alive)
    }

    fn link(&self, side: Side, name: &IfName) -> Result<Option<LinkInfo>, KernelError> {
        self.run(side, async |nl| nl.link(name).await)
    }

    fn link_by_index(&self, side: Side, index: u32) -> Result<Option<LinkInfo>, KernelError> {
        self.run(side, async |nl| nl.link_by_index(index).await)
    }

    fn links(&self, side: Side) -> Result<Vec<LinkInfo>, KernelError> {
        self.run(side, async |nl| nl.links().await)
    }

    fn add_veth(&self, side: Side, veth: Veth<'_>) -> Result<(), KernelError> {
        self.run(side, async |nl| nl.add_veth(veth.name, veth.peer, veth.mac).await)
    }

    fn add_bond(&self, side: Side, name: &IfName, options: &BondOptions) -> Result<u32, KernelError> {
        self.run(side, async |nl| nl.add_bond(name, options).await)
    }

    fn move_link(&self, from: Side, index: u32, name: Option<&IfName>) -> Result<(), KernelError> {
        let target = self.bound(from.other())?;
        self.run(from, async |nl| nl.move_to(index, &target.netns, name).await)
    }

    fn rename(&self, side: Side, index: u32, name: &IfName) -> Result<(), KernelError> {
        self.run(side, async |nl| nl.rename(index, name).await)
    }

    fn configure(&self, side: Side, index: u32, settings: LinkSettings) -> Result<(), KernelError> {
        self.run(side, async |nl| nl.configure(index, settings.mac, settings.mtu, settings.up).await)
    }

    fn set_controller(&self, side: Side, index: u32, controller: Option<u32>) -> Result<(), KernelError> {
        self.run(side, async |nl| nl.set_controller(index, controller).await)
    }

    fn del_alt_name(&self, side: Side, index: u32, name: &str) -> Result<(), KernelError> {
        self.run(side, async |nl| nl.del_alt_name(index, name).await)
    }

    fn del_link(&self, side: Side, index: u32) -> Result<(), KernelError> {
        self.run(side, async |nl| nl.del_link(index).await)
    }

    fn addresses(&self, side: Side, index: u32) -> Result<Vec<(IpAddr, u8)>, KernelError> {
        self.run(side, async |nl| nl.addresses(index).await)
    }

    fn add_address(&self, side: Side, index: u32, address: (IpAddr, u8)) -> Result<(), KernelError> {
        let (address, prefix_len) = address;
        self.run(side, async |nl| nl.add_address(index, address, prefix_len).await)
    }

    fn add_route(&self, side: Side, index: u32, route: RouteTo) -> Result<(), KernelError> {
        self.run(side, async |nl| {
            nl.add_route(route.destination, route.prefix_len, route.gateway, index).await
        })
    }

    fn del_default_routes(&self, side: Side, index: u32, family: IpFamily) -> Result<usize, KernelError> {
        self.run(side, async |nl| nl.del_default_routes(index, Some(family)).await)
    }

    fn add_default_route(&self, side: Side, index: u32, gateway: IpAddr) -> Result<(), KernelError> {
        self.run(side, async |nl| nl.add_default_route(index, gateway).await)
    }

    fn vf_states(&self, pf: &IfName) -> Result<Vec<VfState>, KernelError> {
        self.run(Side::Host, async |nl| nl.vf_states(pf).await)
    }

    fn set_vf(&self, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), KernelError> {
        self.run(Side::Host, async |nl| nl.set_vf(pf, vf, change).await)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Removes the namespaces at these paths when dropped, also when the test fails.
    struct Removed(Vec<PathBuf>);

    impl Drop for Removed {
        fn drop(&mut self) {
            for path in &self.0 {
                let _ = Netns::delete_path(path);
            }
        }
    }

    #[test]
    fn one_session_opens_each_side_once_and_moves_between_them() {
        // Root: two namespaces of the test's own play the host and the pod.
        let host = Netns::create_unique("plexus-kernel-host").unwrap();
        let pod = Netns::create_unique("plexus-kernel-pod").unwrap();
        let _removed = Removed(vec![host.path().to_owned(), pod.path().to_owned()]);
        let kernel = NetlinkKernel::new(Some(host.path().to_owned()), Some(pod.path().to_owned()));
        assert!(kernel.has_pod());
        assert!(kernel.host.get().is_none() && kernel.pod.get().is_none(), "nothing opened yet");
        let (a, b): (IfName, IfName) = ("pxk0".parse().unwrap(), "pxk1".parse().unwrap());
        kernel.add_veth(Side::Host, Veth { name: &a, peer: &b, mac: None }).unwrap();
        let index = kernel.link_index(Side::Host, &a).unwrap();
        let net1: IfName = "net1".parse().unwrap();
        kernel.move_link(Side::Host, index, Some(&net1)).unwrap();
        assert_eq!(kernel.link(Side::Host, &a).unwrap(), None);
        let moved = kernel.link(Side::Pod, &net1).unwrap().unwrap();
        kernel
            .configure(Side::Pod, moved.index, LinkSettings { mtu: Some(1400), ..LinkSettings::UP })
            .unwrap();
        let up = kernel.link_by_index(Side::Pod, moved.index).unwrap().unwrap();
        assert_eq!((up.mtu, up.up), (Some(1400), true));
        kernel.move_link(Side::Pod, moved.index, Some(&a)).unwrap();
        assert!(kernel.link(Side::Host, &a).unwrap().is_some());
        let err = kernel.link_index(Side::Host, &net1).unwrap_err();
        assert!(err.missing_link().is_some(), "{err}");
        let pod_path = pod.path().to_owned();
        pod.delete().unwrap();
        // The session opened the pod's namespace: its handle keeps it, and it still reaches it
        // (the runtime may remove the file while a call works in it). A new session does not.
        assert!(kernel.has_pod(), "still reachable through the session");
        assert!(kernel.links(Side::Pod).unwrap().iter().any(|l| l.name == "lo"));
        assert!(!NetlinkKernel::new(None, Some(pod_path)).has_pod(), "the pod's namespace is gone");
        host.delete().unwrap();
    }

    #[test]
    fn a_session_without_a_pod_says_so() {
        let kernel = NetlinkKernel::new(None, None);
        assert!(!kernel.has_pod());
        let err = kernel.links(Side::Pod).unwrap_err();
        assert!(matches!(err, KernelError::NoPod), "{err}");
        let gone = NetlinkKernel::new(None, Some("/run/netns/plexus-no-such-namespace".into()));
        assert!(matches!(gone.links(Side::Pod), Err(KernelError::NoPod)));
        // The host side is the calling thread's namespace.
        assert!(kernel.links(Side::Host).unwrap().iter().any(|l| l.name == "lo"));
    }
}
