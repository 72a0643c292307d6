//! Route netlink over a socket bound to one network namespace.
//!
//! [`Netlink::connect`] opens the socket inside the target namespace on a short-lived thread
//! (see [`crate::netns`]) and drives it from the caller's tokio runtime; no runtime thread ever
//! switches namespace. The operations here are domain operations (find a link, add a bridge or
//! a veth, enslave, delete) rather than raw request builders.

use std::fmt;
use std::io;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{Netns, NetnsError};
use crate::types::{IfName, MacAddr};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() { Self::V4 } else { Self::V6 }
    }
}

/// How a link is named in a request, printed in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkId {
    /// By interface name.
    Name(IfName),
    /// By interface index.
    Index(u32),
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => write!(f, "link {name}"),
            Self::Index(index) => write!(f, "link #{index}"),
        }
    }
}

/// A failed netlink operation, naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Socket(io::Error),
    /// The namespace could not be entered to open the socket.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The link does not exist.
    #[error("{0}: no such link")]
    NoSuchLink(LinkId),
    /// A request could not be built from what was asked.
    #[error("{0}")]
    Invalid(String),
    /// The kernel refused or failed a request.
    #[error("{what}: {error}")]
    Request {
        /// The operation and its subject (`adding veth ens1f0v0`).
        what: String,
        /// The kernel's answer.
        error: rtnetlink::Error,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, when it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request { error: rtnetlink::Error::NetlinkError(msg), .. } => msg.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

fn request(what: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { what: what(), error: source }
}

/// A route-netlink connection bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Connects inside `netns`, or in the calling thread's namespace when `None`. Must be
    /// called within a tokio runtime, which drives the connection until every clone is dropped.
    pub async fn connect(netns: Option<&Netns>) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::current();
        let open = || {
            // The socket registers with the runtime's reactor from whatever thread opens it.
            let _guard = runtime.enter();
            rtnetlink::new_connection()
        };
        let (connection, handle, _) = match netns {
            Some(netns) => netns.run(open)?,
            None => open(),
        }
        .map_err(NetlinkError::Socket)?;
        runtime.spawn(connection);
        Ok(Self { handle })
    }

    /// The index of the link named `name`, `None` when there is none.
    pub async fn try_link_index(&self, name: &IfName) -> Result<Option<u32>, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(msg)) if msg.code.map(|c| -c.get()) == Some(libc_enodev()) => {
                Ok(None)
            }
            Err(source) => {
                Err(NetlinkError::Request { what: format!("looking up link {name}"), error: source })
            }
        }
    }

    /// The index of the link named `name`.
    pub async fn link_index(&self, name: &IfName) -> Result<u32, NetlinkError> {
        self.try_link_index(name).await?.ok_or_else(|| NetlinkError::NoSuchLink(LinkId::Name(name.clone())))
    }

    /// The names of every link in the namespace.
    pub async fn link_names(&self) -> Result<Vec<String>, NetlinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request(|| "listing links".to_owned()))?;
        Ok(links
            .iter()
            .filter_map(|link| {
                link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds a bridge, up, with `mac` when given; returns its index.
    pub async fn add_bridge(&self, name: &IfName, mac: Option<MacAddr>) -> Result<u32, NetlinkError> {
        let builder = LinkBridge::new(name.as_str());
        let builder = match mac {
            Some(mac) => builder.address(mac.0.to_vec()),
            None => builder,
        };
        self.add_link(builder.build(), || format!("adding bridge {name}")).await?;
        self.link_index(name).await
    }

    /// Adds a veth pair `name` / `peer`, both down, `name` with `mac` when given.
    pub async fn add_veth(
        &self,
        name: &IfName,
        peer: &IfName,
        mac: Option<MacAddr>,
    ) -> Result<(), NetlinkError> {
        let builder = LinkVeth::new(name.as_str(), peer.as_str());
        let builder = match mac {
            Some(mac) => builder.address(mac.0.to_vec()),
            None => builder,
        };
        self.add_link(builder.build(), || format!("adding veth {name} (peer {peer})")).await
    }

    /// Makes link `index` a port of `controller` (a bridge) and brings it up, in one message.
    pub async fn set_controller_up(&self, index: u32, controller: u32) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).controller(controller).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(request(|| format!("attaching link #{index} to #{controller}")))
    }

    /// The default routes (IPv4 and IPv6, main table) that leave through link `index`.
    pub async fn default_routes(&self, index: u32) -> Result<Vec<RouteMessage>, NetlinkError> {
        let mut found = Vec::new();
        for query in
            [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()]
        {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(request(|| format!("listing routes of link #{index}")))?;
            found.extend(routes.into_iter().filter(|r| {
                r.header.destination_prefix_length == 0
                    && r.header.table == RouteHeader::RT_TABLE_MAIN
                    && r.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(oif) if *oif == index))
            }));
        }
        Ok(found)
    }

    /// Deletes the default routes of `family` (both when `None`) that leave through link
    /// `index`; returns how many.
    pub async fn del_default_routes(
        &self,
        index: u32,
        family: Option<IpFamily>,
    ) -> Result<usize, NetlinkError> {
        let routes: Vec<RouteMessage> = self
            .default_routes(index)
            .await?
            .into_iter()
            .filter(|r| match family {
                None => true,
                Some(IpFamily::V4) => r.header.address_family == AddressFamily::Inet,
                Some(IpFamily::V6) => r.header.address_family == AddressFamily::Inet6,
            })
            .collect();
        let count = routes.len();
        for route in routes {
            self.handle
                .route()
                .del(route)
                .execute()
                .await
                .map_err(request(|| format!("deleting a default route of link #{index}")))?;
        }
        Ok(count)
    }

    /// Adds a default route via `gateway` out of link `index`.
    pub async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<(), NetlinkError> {
        let any = match gateway {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let what = || format!("adding a default route via {gateway} on link #{index}");
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(any, 0)
            .and_then(|b| b.gateway(gateway))
            .map_err(|e| NetlinkError::Invalid(format!("{}: {e}", what())))?
            .output_interface(index)
            .build();
        self.handle.route().add(message).execute().await.map_err(request(what))
    }

    /// The VFs PF link `pf` reports in its `IFLA_VFINFO_LIST`.
    pub async fn vf_states(&self, pf: &IfName) -> Result<Vec<crate::vf::VfState>, NetlinkError> {
        let index = self.link_index(pf).await?;
        let mut get = self.handle.link().get().match_index(index);
        *get.message_mut() = crate::vf::get_message(index);
        let links: Vec<LinkMessage> =
            get.execute().try_collect().await.map_err(request(|| format!("reading the VFs of {pf}")))?;
        Ok(links.iter().flat_map(crate::vf::parse_states).collect())
    }

    /// Applies `change` to VF `vf` of PF link `pf`.
    pub async fn set_vf(
        &self,
        pf: &IfName,
        vf: crate::types::VfIndex,
        change: &crate::vf::VfChange,
    ) -> Result<(), NetlinkError> {
        let index = self.link_index(pf).await?;
        let message = crate::vf::set_message(index, vf, change);
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(request(|| format!("setting VF {vf} of {pf}")))
    }

    async fn add_link(
        &self,
        message: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        self.handle.link().add(message).execute().await.map_err(request(what))
    }

    /// Deletes link `index` (a veth takes its peer with it).
    pub async fn del_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle.link().del(index).execute().await.map_err(request(|| format!("deleting link #{index}")))
    }
}

/// ENODEV: what the kernel answers a lookup of a link name that does not exist.
const fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn veth_and_bridge_inside_a_namespace() {
        let ns = Netns::create_unique("plexus-nl-test").unwrap();
        let nl = Netlink::connect(Some(&ns)).await.unwrap();
        let br: IfName = "pxbr0".parse().unwrap();
        let a: IfName = "pxa0".parse().unwrap();
        let b: IfName = "pxb0".parse().unwrap();
        let mac: MacAddr = "02:70:78:00:00:01".parse().unwrap();

        let br_index = nl.add_bridge(&br, None).await.unwrap();
        nl.add_veth(&a, &b, Some(mac)).await.unwrap();
        let b_index = nl.link_index(&b).await.unwrap();
        nl.set_controller_up(b_index, br_index).await.unwrap();

        let mut names = nl.link_names().await.unwrap();
        names.sort();
        assert_eq!(names, ["lo", "pxa0", "pxb0", "pxbr0"]);
        // The links exist in the namespace only, not where the test runs.
        let here = Netlink::connect(None).await.unwrap();
        assert_eq!(here.try_link_index(&a).await.unwrap(), None);
        let a_index = nl.link_index(&a).await.unwrap();
        nl.del_link(a_index).await.unwrap();
        assert_eq!(nl.try_link_index(&b).await.unwrap(), None, "deleting one veth end removes its peer");
        let err = nl.link_index(&a).await.unwrap_err();
        assert!(err.to_string().contains("pxa0"), "{err}");
        ns.delete().unwrap();
    }
}
