//! Kernel events that change what discovery finds: a network link appearing, changing (up,
//! down, renamed) or going away (rtnetlink's link group), and a PCI device added, removed,
//! bound to or unbound from a driver (kobject uevents; a change of `sriov_numvfs` adds or
//! removes VFs, each with its uevent). The device plugin discovers again on each, and polls
//! slowly only as a safety net.
//!
//! The listener's input is the seam: on a node, two netlink sockets; on a simulated node, a
//! unix datagram socket in its root where the simulator writes the very messages the kernel
//! would, each behind a one-byte tag ([`TAG_UEVENT`], [`TAG_RTNETLINK`]). What comes in is
//! parsed here, the same way for both.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, State};
use rtnetlink::sys::protocols::{NETLINK_KOBJECT_UEVENT, NETLINK_ROUTE};
use rtnetlink::sys::{Socket, SocketAddr};

use crate::PciAddress;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A network link appeared, changed or went away.
    Link {
        /// Its index.
        index: u32,
        /// Its name, when the message carries one.
        name: Option<String>,
        /// Whether the message removes it (RTM_DELLINK).
        removed: bool,
    },
    /// A PCI device was added, removed, bound, unbound or changed.
    Pci {
        /// The uevent's action: `add`, `remove`, `bind`, `unbind`, `change`.
        action: String,
        /// The device.
        address: PciAddress,
    },
    /// The kernel dropped events (the socket's buffer overflowed): anything may have changed.
    Lost,
}

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSource {
    /// The kernel: rtnetlink's link group and kobject uevents, in the network namespace of the
    /// thread that starts the listener.
    Kernel,
    /// A unix datagram socket bound at this path, where a simulated node writes the kernel's
    /// messages, each behind a tag.
    Socket(PathBuf),
}

/// The tag of a kobject uevent on an [`EventSource::Socket`].
pub const TAG_UEVENT: u8 = b'u';
/// The tag of an rtnetlink message on an [`EventSource::Socket`].
pub const TAG_RTNETLINK: u8 = b'r';

/// rtnetlink's link group (`RTMGRP_LINK`).
const RTMGRP_LINK: u32 = 1;
/// The group of the kernel's own uevents (udevd re-sends them on group 2, reworded).
const UEVENT_KERNEL_GROUP: u32 = 1;
/// How long a listening thread waits before it looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// The largest message read: uevents are at most a page, rtnetlink datagrams a few.
const MAX_DATAGRAM: usize = 64 << 10;

/// The event of a kobject uevent (`<action>@<devpath>\0KEY=VALUE\0...`), if it is a PCI
/// device's.
pub fn parse_uevent(message: &[u8]) -> Option<Event> {
    let mut fields = message.split(|b| *b == 0).filter_map(|field| std::str::from_utf8(field).ok());
    // The kernel's header; udevd's messages (which start with "libudev") are not listened to.
    fields.next().filter(|header| header.contains('@'))?;
    let (mut action, mut subsystem, mut slot) = (None, None, None);
    for field in fields {
        match field.split_once('=') {
            Some(("ACTION", value)) => action = Some(value),
            Some(("SUBSYSTEM", value)) => subsystem = Some(value),
            Some(("PCI_SLOT_NAME", value)) => slot = Some(value),
            _ => {}
        }
    }
    if subsystem != Some("pci") {
        return None;
    }
    Some(Event::Pci { action: action?.to_owned(), address: slot?.parse().ok()? })
}

/// The link events of an rtnetlink datagram (which may hold several messages).
pub fn parse_rtnetlink(datagram: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 16 {
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < 16 || length > rest.len() {
            break;
        }
        let link =
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..length]).map(|m| m.payload) {
                Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))) => Some((link, false)),
                Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))) => Some((link, true)),
                _ => None,
            };
        if let Some((link, removed)) = link {
            let name = link.attributes.iter().find_map(|attribute| match attribute {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
            events.push(Event::Link { index: link.header.index, name, removed });
        }
        rest = &rest[aligned(length).min(rest.len())..];
    }
    events
}

/// A netlink message's length rounded up to 4 bytes (`NLMSG_ALIGN`).
fn aligned(length: usize) -> usize {
    (length + 3) & !3
}

/// The RTM_NEWLINK the kernel sends when link `name` (index `index`) changes to `up` or down,
/// with the minimum a listener reads: what a simulated node sends.
pub fn link_message(index: u32, name: &str, up: bool) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    link.attributes.push(LinkAttribute::OperState(if up { State::Up } else { State::Down }));
    let mut message = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)),
    );
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// The kobject uevent the kernel sends when PCI device `address` under `devpath` (its
/// directory below `/sys`, such as `/devices/pci0000:20/0000:20:02.0`) is `action`ed.
pub fn pci_uevent(action: &str, devpath: &str, address: PciAddress) -> Vec<u8> {
    let fields = [
        format!("{action}@{devpath}"),
        format!("ACTION={action}"),
        format!("DEVPATH={devpath}"),
        "SUBSYSTEM=pci".to_owned(),
        format!("PCI_SLOT_NAME={address}"),
        "SEQNUM=0".to_owned(),
    ];
    fields.join("\0").into_bytes()
}

/// Listens until dropped, calling `on_event` for each event, on threads of its own (their
/// handles are kept only to count them).
pub struct Listener {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("threads", &self.threads.len()).finish()
    }
}

/// One way in: a socket read on a thread.
trait Datagrams: Send + 'static {
    /// The next datagram into `buf` (cleared first); `Ok(false)` when the wait timed out.
    fn next(&self, buf: &mut Vec<u8>) -> io::Result<bool>;
}

impl Datagrams for Socket {
    fn next(&self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        match self.recv(buf, 0) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Datagrams for UnixDatagram {
    fn next(&self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.resize(MAX_DATAGRAM, 0);
        match self.recv(buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// What kind of messages a socket carries.
#[derive(Clone, Copy)]
enum Kind {
    Uevent,
    Rtnetlink,
    Tagged,
}

fn parse(kind: Kind, datagram: &[u8]) -> Vec<Event> {
    match kind {
        Kind::Uevent => parse_uevent(datagram).into_iter().collect(),
        Kind::Rtnetlink => parse_rtnetlink(datagram),
        Kind::Tagged => match datagram.split_first() {
            Some((&TAG_UEVENT, rest)) => parse(Kind::Uevent, rest),
            Some((&TAG_RTNETLINK, rest)) => parse(Kind::Rtnetlink, rest),
            _ => Vec::new(),
        },
    }
}

/// A netlink socket of `protocol` joined to `groups`, its reads bounded by [`STOP_CHECK`].
fn netlink(protocol: isize, groups: u32) -> io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind(&SocketAddr::new(0, groups))?;
    let timeout = nix::sys::time::TimeVal::new(0, STOP_CHECK.as_micros() as _);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
    Ok(socket)
}

impl Listener {
    /// Opens `source` (the kernel's sockets in this thread's network namespace) and listens.
    pub fn start(source: &EventSource, on_event: impl Fn(Event) + Send + Sync + 'static) -> io::Result<Self> {
        let on_event: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(on_event);
        let mut listener = Self { stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() };
        match source {
            EventSource::Kernel => {
                // Both opened here, before any thread: sockets belong to the namespace they
                // were made in, and a new thread's namespace could be another.
                let links = netlink(NETLINK_ROUTE, RTMGRP_LINK)?;
                let uevents = netlink(NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL_GROUP)?;
                listener.spawn(links, Kind::Rtnetlink, on_event.clone())?;
                listener.spawn(uevents, Kind::Uevent, on_event)?;
            }
            EventSource::Socket(path) => {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                let socket = UnixDatagram::bind(path)?;
                socket.set_read_timeout(Some(STOP_CHECK))?;
                listener.spawn(socket, Kind::Tagged, on_event)?;
            }
        }
        Ok(listener)
    }

    fn spawn(
        &mut self,
        socket: impl Datagrams,
        kind: Kind,
        on_event: Arc<dyn Fn(Event) + Send + Sync>,
    ) -> io::Result<()> {
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new().name("plexus-events".into()).spawn(move || {
            let mut buf = Vec::with_capacity(MAX_DATAGRAM);
            while !stop.load(Ordering::Acquire) {
                match socket.next(&mut buf) {
                    Ok(true) => parse(kind, &buf).into_iter().for_each(|event| on_event(event)),
                    Ok(false) => {}
                    // The kernel had more than the socket could hold: some are lost.
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => on_event(Event::Lost),
                    Err(e) => {
                        tracing::warn!("reading kernel events: {e}; the slow poll carries on");
                        return;
                    }
                }
            }
        })?;
        self.threads.push(thread);
        Ok(())
    }
}

impl Drop for Listener {
    /// Its threads see it within a fifth of a second and end, closing their sockets; nobody waits
    /// for them (a drop on an async runtime's worker must not block).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_pci_uevent_is_read_and_others_are_not() {
        let address: PciAddress = "0000:20:02.1".parse().unwrap();
        let message = pci_uevent("bind", "/devices/pci0000:20/0000:20:02.1", address);
        assert_eq!(parse_uevent(&message), Some(Event::Pci { action: "bind".into(), address }));
        // As the kernel words one for a netdev, and as udevd re-sends one.
        let net = b"add@/devices/virtual/net/veth0\0ACTION=add\0DEVPATH=/devices/virtual/net/veth0\0SUBSYSTEM=net\0INTERFACE=veth0";
        assert_eq!(parse_uevent(net), None);
        assert_eq!(parse_uevent(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(
            parse_uevent(b"remove@/devices/x\0ACTION=remove\0SUBSYSTEM=pci\0PCI_SLOT_NAME=junk"),
            None
        );
    }

    #[test]
    fn link_messages_round_trip_and_a_datagram_may_hold_several() {
        let mut datagram = link_message(7, "ens1f0", false);
        datagram.extend(link_message(8, "ens1f1", true));
        assert_eq!(
            parse_rtnetlink(&datagram),
            [
                Event::Link { index: 7, name: Some("ens1f0".into()), removed: false },
                Event::Link { index: 8, name: Some("ens1f1".into()), removed: false }
            ]
        );
        assert_eq!(parse_rtnetlink(&datagram[..20]), []);
        assert_eq!(
            parse(Kind::Tagged, &[&[TAG_RTNETLINK][..], &link_message(7, "x", true)].concat()).len(),
            1
        );
        assert_eq!(parse(Kind::Tagged, b"?junk"), []);
    }
}
