//! The pod's default route, when a selection element asks for `default-route`: the default
//! routes other attachments made are deleted, and one via the requested gateway is added on the
//! chosen attachment's interface, inside the pod's namespace.

use std::net::IpAddr;

use plexus_hw::IfName;
use plexus_hw::netlink::{IpFamily, Netlink};
use plexus_hw::netns::Netns;

use crate::spec::{CniError, ErrorCode};

/// Route changes in a pod's namespace. The real one talks netlink; tests may record instead.
pub trait PodRoutes {
    /// Deletes the default routes of `family` leaving through `ifname` in `netns`.
    fn del_default_routes(&self, netns: &str, ifname: &str, family: IpFamily) -> Result<(), CniError>;
    /// Adds a default route via `gateway` through `ifname` in `netns`.
    fn add_default_route(&self, netns: &str, ifname: &str, gateway: IpAddr) -> Result<(), CniError>;
}

/// Netlink, with a socket opened inside the pod's namespace for each change.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetlinkRoutes;

fn io(what: String, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Io, what).with_details(e.to_string())
}

impl NetlinkRoutes {
    /// Runs `f` with a netlink connection inside `netns`, on a runtime of its own (this code
    /// is synchronous: the `plexus` binary, or a blocking task of the agent).
    fn with_link<T>(
        netns: &str,
        ifname: &str,
        f: impl AsyncFnOnce(&Netlink, u32) -> Result<T, CniError>,
    ) -> Result<T, CniError> {
        let name: IfName = ifname.parse().map_err(|e| io(format!("interface {ifname:?}"), e))?;
        let ns = Netns::open(netns).map_err(|e| io(format!("opening {netns}"), e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| io("starting a runtime".into(), e))?;
        runtime.block_on(async {
            let nl = Netlink::connect(Some(&ns)).await.map_err(|e| io(format!("netlink in {netns}"), e))?;
            let index = nl.link_index(&name).await.map_err(|e| io(format!("in {netns}"), e))?;
            f(&nl, index).await
        })
    }
}

impl PodRoutes for NetlinkRoutes {
    fn del_default_routes(&self, netns: &str, ifname: &str, family: IpFamily) -> Result<(), CniError> {
        Self::with_link(netns, ifname, async |nl, index| {
            nl.del_default_routes(index, Some(family))
                .await
                .map(|_| ())
                .map_err(|e| io(format!("deleting the default route of {ifname}"), e))
        })
    }

    fn add_default_route(&self, netns: &str, ifname: &str, gateway: IpAddr) -> Result<(), CniError> {
        Self::with_link(netns, ifname, async |nl, index| {
            nl.add_default_route(index, gateway)
                .await
                .map_err(|e| io(format!("adding the default route via {gateway} on {ifname}"), e))
        })
    }
}
