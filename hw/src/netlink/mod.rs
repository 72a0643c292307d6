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

pub mod vf;

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

/// What a link is, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its MAC, when it has one.
    pub mac: Option<MacAddr>,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Alternative names (`ip link property add ... altname`), which block their names for
    /// other links and renames as much as a link's name does.
    pub alt_names: Vec<String>,
    /// `IFLA_LINK`: for a veth, its peer's index (in the peer's namespace).
    pub peer: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the peer lives in another namespace.
    pub peer_netnsid: Option<i32>,
    /// `IFLA_MASTER`: the bond or bridge it is a port of.
    pub controller: Option<u32>,
    /// `IFLA_PARENT_DEV_NAME` (kernel 5.14 and later): the device it is the netdev of, for a
    /// PCI function its address. What the kernel says a link is, whatever it is called.
    pub parent_device: Option<String>,
}

impl LinkInfo {
    fn from_message(message: &LinkMessage) -> Self {
        use rtnetlink::packet_route::link::Prop;
        let mut info = Self {
            index: message.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: message.header.flags.contains(rtnetlink::packet_route::link::LinkFlags::Up),
            alt_names: Vec::new(),
            peer: None,
            peer_netnsid: None,
            controller: None,
            parent_device: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
                LinkAttribute::Address(bytes) => {
                    info.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
                }
                LinkAttribute::PropList(props) => {
                    info.alt_names.extend(props.iter().filter_map(|p| match p {
                        Prop::AltIfName(name) => Some(name.clone()),
                        _ => None,
                    }))
                }
                LinkAttribute::Link(peer) => info.peer = Some(*peer),
                LinkAttribute::LinkNetNsId(id) => info.peer_netnsid = Some(*id),
                LinkAttribute::Controller(index) => info.controller = Some(*index).filter(|i| *i != 0),
                LinkAttribute::ParentDevName(device) => info.parent_device = Some(device.clone()),
                _ => {}
            }
        }
        info
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

pub(crate) fn request(what: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { what: what(), error: source }
}

/// A route-netlink connection bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
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
        Ok(self.link(name).await?.map(|link| link.index))
    }

    /// The index of the link named `name`.
    pub async fn link_index(&self, name: &IfName) -> Result<u32, NetlinkError> {
        self.try_link_index(name).await?.ok_or_else(|| NetlinkError::NoSuchLink(LinkId::Name(name.clone())))
    }

    /// Every link in the namespace, in one dump.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request(|| "listing links".to_owned()))?;
        Ok(links.iter().map(LinkInfo::from_message).collect())
    }

    /// The names of every link in the namespace.
    pub async fn link_names(&self) -> Result<Vec<String>, NetlinkError> {
        Ok(self.links().await?.into_iter().map(|link| link.name).filter(|name| !name.is_empty()).collect())
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

    /// Adds bond `name` with `options`, down; returns its index.
    pub async fn add_bond(
        &self,
        name: &IfName,
        options: &crate::bond::BondOptions,
    ) -> Result<u32, NetlinkError> {
        self.add_link(crate::bond::bond_message(name, options), || format!("adding bond {name}")).await?;
        self.link_index(name).await
    }

    /// Makes link `index` a port of `controller` (a bond or bridge), or of none.
    pub async fn set_controller(&self, index: u32, controller: Option<u32>) -> Result<(), NetlinkError> {
        let builder = LinkUnspec::new_with_index(index);
        let builder = match controller {
            Some(controller) => builder.controller(controller),
            None => builder.nocontroller(),
        };
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(request(|| format!("setting the controller of link #{index} to {controller:?}")))
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

    /// The link named `name`, `None` when there is none.
    pub async fn link(&self, name: &IfName) -> Result<Option<LinkInfo>, NetlinkError> {
        let links = self.handle.link().get().match_name(name.to_string()).execute();
        self.first_link(links, || format!("looking up link {name}")).await
    }

    /// The link with index `index`, `None` when there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        let links = self.handle.link().get().match_index(index).execute();
        self.first_link(links, || format!("looking up link #{index}")).await
    }

    async fn first_link(
        &self,
        mut links: impl futures::Stream<Item = Result<LinkMessage, rtnetlink::Error>> + Unpin,
        what: impl FnOnce() -> String,
    ) -> Result<Option<LinkInfo>, NetlinkError> {
        match links.try_next().await {
            Ok(Some(message)) => Ok(Some(LinkInfo::from_message(&message))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(msg)) if msg.code.map(|c| -c.get()) == Some(libc_enodev()) => {
                Ok(None)
            }
            Err(error) => Err(NetlinkError::Request { what: what(), error }),
        }
    }

    /// Removes the alternative name `name` of link `index`.
    pub async fn del_alt_name(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .property_del(index)
            .alt_ifname(&[name])
            .execute()
            .await
            .map_err(request(|| format!("removing altname {name} of link #{index}")))
    }

    /// Gives link `index` the alternative name `name`.
    pub async fn add_alt_name(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .property_add(index)
            .alt_ifname(&[name])
            .execute()
            .await
            .map_err(request(|| format!("adding altname {name} to link #{index}")))
    }

    /// The addresses on link `index`, with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(request(|| format!("listing the addresses of link #{index}")))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(addr) => Some((*addr, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Moves link `index` into `netns`, down, renamed to `name` when given, in one request.
    pub async fn move_to(
        &self,
        index: u32,
        netns: &Netns,
        name: Option<&IfName>,
    ) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        let mut builder = LinkUnspec::new_with_index(index).down().setns_by_fd(netns.fd().as_raw_fd());
        if let Some(name) = name {
            builder = builder.name(name.to_string());
        }
        let what = || match name {
            Some(name) => format!("moving link #{index} to {} as {name}", netns.path().display()),
            None => format!("moving link #{index} to {}", netns.path().display()),
        };
        self.handle.link().set(builder.build()).execute().await.map_err(request(what))
    }

    /// Renames link `index` (which must be down).
    pub async fn rename(&self, index: u32, name: &IfName) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).name(name.to_string()).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(request(|| format!("renaming link #{index} to {name}")))
    }

    /// Sets the MAC and MTU of link `index` when given, and brings it up or down, in one message.
    pub async fn configure(
        &self,
        index: u32,
        mac: Option<MacAddr>,
        mtu: Option<u32>,
        up: bool,
    ) -> Result<(), NetlinkError> {
        let mut builder = LinkUnspec::new_with_index(index);
        builder = if up { builder.up() } else { builder.down() };
        if let Some(mac) = mac {
            builder = builder.address(mac.0.to_vec());
        }
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(request(|| format!("configuring link #{index}")))
    }

    /// Adds `address/prefix_len` to link `index`.
    pub async fn add_address(&self, index: u32, address: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, address, prefix_len)
            .execute()
            .await
            .map_err(request(|| format!("adding {address}/{prefix_len} to link #{index}")))
    }

    /// Adds a route to `destination/prefix_len` out of link `index`, via `gateway` when given.
    pub async fn add_route(
        &self,
        destination: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        index: u32,
    ) -> Result<(), NetlinkError> {
        let what = || format!("adding a route to {destination}/{prefix_len} on link #{index}");
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination, prefix_len)
            .map_err(|e| NetlinkError::Invalid(format!("{}: {e}", what())))?;
        if let Some(gateway) = gateway {
            builder =
                builder.gateway(gateway).map_err(|e| NetlinkError::Invalid(format!("{}: {e}", what())))?;
        }
        let message = builder.output_interface(index).build();
        self.handle.route().add(message).execute().await.map_err(request(what))
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

    #[tokio::test]
    async fn move_rename_configure_address_and_route_a_link_in_another_namespace() {
        let host = Netns::create_unique("plexus-nl-host").unwrap();
        let pod = Netns::create_unique("plexus-nl-pod").unwrap();
        let nl_host = Netlink::connect(Some(&host)).await.unwrap();
        let nl_pod = Netlink::connect(Some(&pod)).await.unwrap();
        let vf: IfName = "ens1f0v3".parse().unwrap();
        let peer: IfName = "ens1f0r3".parse().unwrap();
        let net1: IfName = "net1".parse().unwrap();
        nl_host.add_veth(&vf, &peer, None).await.unwrap();
        let before = nl_host.link(&vf).await.unwrap().unwrap();
        assert!(!before.up);
        let representor = nl_host.link(&peer).await.unwrap().unwrap();
        assert_eq!((representor.peer, representor.peer_netnsid), (Some(before.index), None));
        nl_host.add_alt_name(before.index, "enp32s0f0v3").await.unwrap();
        assert_eq!(nl_host.link(&vf).await.unwrap().unwrap().alt_names, ["enp32s0f0v3"]);
        nl_host.del_alt_name(before.index, "enp32s0f0v3").await.unwrap();
        assert!(nl_host.link_by_index(before.index).await.unwrap().unwrap().alt_names.is_empty());

        nl_host.move_to(before.index, &pod, Some(&net1)).await.unwrap();
        assert_eq!(nl_host.link(&vf).await.unwrap(), None, "gone from the host namespace");
        let moved = nl_pod.link(&net1).await.unwrap().expect("in the pod, under its new name");
        let representor = nl_host.link(&peer).await.unwrap().unwrap();
        assert!(representor.peer_netnsid.is_some(), "the peer is in another namespace now");
        let mac: MacAddr = "02:aa:bb:cc:dd:01".parse().unwrap();
        nl_pod.configure(moved.index, Some(mac), Some(1400), true).await.unwrap();
        let configured = nl_pod.link(&net1).await.unwrap().unwrap();
        assert_eq!((configured.mac, configured.mtu, configured.up), (Some(mac), Some(1400), true));

        nl_pod.add_address(moved.index, "10.5.0.2".parse().unwrap(), 24).await.unwrap();
        nl_pod
            .add_route("10.6.0.0".parse().unwrap(), 24, Some("10.5.0.1".parse().unwrap()), moved.index)
            .await
            .unwrap();
        let addrs = plexus_sim::ip::json(pod.name(), &["addr", "show", "net1"]);
        assert_eq!(addrs[0]["addr_info"][0]["local"], "10.5.0.2");
        let routes = plexus_sim::ip::json(pod.name(), &["route", "show", "10.6.0.0/24"]);
        assert_eq!(
            (routes[0]["gateway"].as_str(), routes[0]["dev"].as_str()),
            (Some("10.5.0.1"), Some("net1"))
        );

        // And back under its first name, as DEL does.
        nl_pod.move_to(moved.index, &host, Some(&vf)).await.unwrap();
        let back = nl_host.link(&vf).await.unwrap().expect("back in the host namespace");
        assert_eq!(back.mac, Some(mac));
        assert!(!back.up);
        let renamed: IfName = "ens1f0v9".parse().unwrap();
        nl_host.rename(back.index, &renamed).await.unwrap();
        assert!(nl_host.link(&renamed).await.unwrap().is_some());
        pod.delete().unwrap();
        host.delete().unwrap();
    }
}
