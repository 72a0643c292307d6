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
    /// Gives the pod's default route of `gateway`'s family to interface `via`: deletes that
    /// family's default routes leaving through each of `interfaces`, then adds one via
    /// `gateway` through `via`, in `netns`.
    fn set_default_route(
        &self,
        netns: &str,
        interfaces: &[&str],
        via: &str,
        gateway: IpAddr,
    ) -> Result<(), CniError>;
}

/// Netlink, with a socket opened inside the pod's namespace for each change.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetlinkRoutes;

fn io(what: String, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Io, what).with_details(e.to_string())
}

impl PodRoutes for NetlinkRoutes {
    fn set_default_route(
        &self,
        netns: &str,
        interfaces: &[&str],
        via: &str,
        gateway: IpAddr,
    ) -> Result<(), CniError> {
        let ns = Netns::open(netns).map_err(|e| io(format!("opening {netns}"), e))?;
        // This code is synchronous (the `plexus` binary, or a blocking task of the agent): one
        // runtime and one socket inside the pod's namespace for the whole change.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| io("starting a runtime".into(), e))?;
        runtime.block_on(async {
            let nl = Netlink::connect(Some(&ns)).await.map_err(|e| io(format!("netlink in {netns}"), e))?;
            let index = async |ifname: &str| -> Result<u32, CniError> {
                let name: IfName = ifname.parse().map_err(|e| io(format!("interface {ifname:?}"), e))?;
                nl.link_index(&name).await.map_err(|e| io(format!("in {netns}"), e))
            };
            let family = IpFamily::of(gateway);
            for ifname in interfaces {
                nl.del_default_routes(index(ifname).await?, Some(family))
                    .await
                    .map_err(|e| io(format!("deleting the default route of {ifname}"), e))?;
            }
            nl.add_default_route(index(via).await?, gateway)
                .await
                .map_err(|e| io(format!("adding the default route via {gateway} on {via}"), e))
        })
    }
}
