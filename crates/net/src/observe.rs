//! What a namespace's kernel has, read over netlink: its ports ([`PortView`], with the
//! `IFLA_STATS64` counters), its IPv4 routes of the main table ([`RouteView`], classified
//! for an owner's protocol) and its IPv4 addresses; and its link and route changes as the
//! kernel announces them ([`Announcements`]).
//!
//! Netlink, not sysfs: after `setns`, `/sys/class/net` still lists the mounter's (the host's)
//! devices (`docs/design/rack-network.md` §1), while a netlink socket answers for the
//! namespace it was created in. Speed is not in netlink (and is unknown for veths anyway).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd as _;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol as NlProtocol, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};

use crate::netns::{self, Netns};
use crate::routes::{MAIN_TABLE, Owner, RouteKind, RouteProtocol, RouteView};
use crate::{Error, IfName, Netlink, Result, link};

/// A link's operational state (`IFLA_OPERSTATE`, RFC 2863), as `ip link` prints it (in lower
/// case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
    Other(u8),
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperState::Unknown => f.write_str("unknown"),
            OperState::NotPresent => f.write_str("notpresent"),
            OperState::Down => f.write_str("down"),
            OperState::LowerLayerDown => f.write_str("lowerlayerdown"),
            OperState::Testing => f.write_str("testing"),
            OperState::Dormant => f.write_str("dormant"),
            OperState::Up => f.write_str("up"),
            OperState::Other(n) => write!(f, "state {n}"),
        }
    }
}

impl From<State> for OperState {
    fn from(state: State) -> OperState {
        match state {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            State::Other(n) => OperState::Other(n),
            // A state added to the crate after this was written.
            #[allow(unreachable_patterns)]
            _ => OperState::Unknown,
        }
    }
}

/// One link (a switch port, `lo`, a task veth) and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    pub name: String,
    pub ifindex: u32,
    pub oper_state: OperState,
    /// Set up by an administrator (`IFF_UP`); `oper_state` says whether it carries traffic.
    pub admin_up: bool,
    pub mtu: Option<u32>,
    /// The hardware address, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
}

impl PortView {
    fn from_message(message: &LinkMessage) -> PortView {
        let mut port = PortView {
            name: String::new(),
            ifindex: message.header.index,
            oper_state: OperState::Unknown,
            admin_up: message.header.flags.contains(LinkFlags::Up),
            mtu: None,
            mac: None,
            rx_bytes: 0,
            rx_packets: 0,
            rx_errors: 0,
            tx_bytes: 0,
            tx_packets: 0,
            tx_errors: 0,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => port.name = name.clone(),
                LinkAttribute::OperState(state) => port.oper_state = (*state).into(),
                LinkAttribute::Mtu(mtu) => port.mtu = Some(*mtu),
                LinkAttribute::Address(bytes) => port.mac = Some(hex_address(bytes)),
                LinkAttribute::Stats64(stats) => {
                    port.rx_bytes = stats.rx_bytes;
                    port.rx_packets = stats.rx_packets;
                    port.rx_errors = stats.rx_errors;
                    port.tx_bytes = stats.tx_bytes;
                    port.tx_packets = stats.tx_packets;
                    port.tx_errors = stats.tx_errors;
                }
                _ => {}
            }
        }
        port
    }
}

fn hex_address(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The link `name` of the namespace, or [`crate::Error::NoSuchLink`].
pub async fn port(nl: &Netlink, name: &IfName) -> Result<PortView> {
    Ok(PortView::from_message(&link::message(nl, name).await?))
}

/// Every link of the namespace, by interface index.
pub async fn ports(nl: &Netlink) -> Result<Vec<PortView>> {
    let messages: Vec<LinkMessage> = nl
        .handle()
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl.fail("dump links", e))?;
    let mut ports: Vec<PortView> = messages.iter().map(PortView::from_message).collect();
    ports.sort_by_key(|p| p.ifindex);
    Ok(ports)
}

/// Interface index → name, for naming the links of routes and addresses.
fn names_of(ports: &[PortView]) -> BTreeMap<u32, String> {
    ports.iter().map(|p| (p.ifindex, p.name.clone())).collect()
}

/// The IPv4 routes of the main table, all protocols, in the kernel's order, each classified
/// for the owner's protocol `ours` ([`RouteView::classify`]).
pub async fn routes(nl: &Netlink, ours: RouteProtocol) -> Result<Vec<RouteView>> {
    Ok(switch(nl, ours).await?.0)
}

/// The routes ([`routes`]) and the ports ([`ports`]) together, from one dump of the links (which
/// names the routes' devices too): what a reader of the whole switch wants.
pub async fn switch(nl: &Netlink, ours: RouteProtocol) -> Result<(Vec<RouteView>, Vec<PortView>)> {
    let ports = ports(nl).await?;
    let routes = routes_named(nl, ours, &names_of(&ports)).await?;
    Ok((routes, ports))
}

async fn routes_named(
    nl: &Netlink,
    ours: RouteProtocol,
    names: &BTreeMap<u32, String>,
) -> Result<Vec<RouteView>> {
    // A strict dump filters on the header: main table, any protocol, any type.
    let request = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(MAIN_TABLE)
        .protocol(NlProtocol::Unspec)
        .kind(RouteType::Unspec)
        .build();
    let messages: Vec<RouteMessage> = nl
        .handle()
        .route()
        .get(request)
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl.fail("dump the IPv4 routes of the main table", e))?;
    Ok(messages
        .iter()
        .filter_map(|m| route_view(m, names))
        // Kernels without strict dumps answer every table.
        .filter(|r| r.table == MAIN_TABLE)
        .map(|r| r.classify(ours))
        .collect())
}

fn route_view(message: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<RouteView> {
    if message.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut route = RouteView {
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len: message.header.destination_prefix_length,
        gateway: None,
        device: None,
        protocol: RouteProtocol(u8::from(message.header.protocol)),
        kind: route_kind(message.header.kind),
        table: u32::from(message.header.table),
        priority: 0,
        owner: Owner::Other,
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(dst)) => route.dst = *dst,
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)) => route.gateway = Some(*gateway),
            RouteAttribute::Oif(index) => {
                route.device = Some(names.get(index).cloned().unwrap_or(format!("if{index}")))
            }
            RouteAttribute::Priority(priority) => route.priority = *priority,
            RouteAttribute::Table(table) => route.table = *table,
            _ => {}
        }
    }
    Some(route)
}

fn route_kind(kind: RouteType) -> RouteKind {
    match kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::Anycast => RouteKind::Anycast,
        RouteType::Multicast => RouteKind::Multicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Throw => RouteKind::Throw,
        RouteType::Nat => RouteKind::Nat,
        other => RouteKind::Other(u8::from(other)),
    }
}

/// One IPv4 address of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressView {
    pub ifindex: u32,
    pub device: Option<String>,
    /// Our end (`IFA_LOCAL`).
    pub local: Ipv4Addr,
    /// The other end of a point-to-point address (`peer`), when it differs from `local`.
    pub peer: Option<Ipv4Addr>,
    pub prefix_len: u8,
}

/// Every IPv4 address of the namespace, by interface index then address.
pub async fn addresses(nl: &Netlink) -> Result<Vec<AddressView>> {
    let names = names_of(&ports(nl).await?);
    addresses_named(nl, &names).await
}

async fn addresses_named(nl: &Netlink, names: &BTreeMap<u32, String>) -> Result<Vec<AddressView>> {
    let mut request = nl.handle().address().get();
    request.message_mut().header.family = AddressFamily::Inet;
    let messages: Vec<_> = request
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl.fail("dump the IPv4 addresses", e))?;
    let mut views = Vec::new();
    for message in &messages {
        let (mut local, mut address) = (None, None);
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
                _ => {}
            }
        }
        // Without IFA_LOCAL (not point-to-point), IFA_ADDRESS is the local address.
        let Some(own) = local.or(address) else {
            continue;
        };
        views.push(AddressView {
            ifindex: message.header.index,
            device: names.get(&message.header.index).cloned(),
            local: own,
            peer: address.filter(|a| *a != own),
            prefix_len: message.header.prefix_len,
        });
    }
    views.sort_by_key(|a| (a.ifindex, a.local));
    Ok(views)
}

/// The namespace's own IPv4 addresses (for [`crate::routes::plan`]'s `local`): one dump of
/// the addresses (their links' names are not needed).
pub async fn local_addrs(nl: &Netlink) -> Result<BTreeSet<Ipv4Addr>> {
    let unnamed = BTreeMap::new();
    let addresses = addresses_named(nl, &unnamed).await?;
    Ok(addresses.into_iter().map(|a| a.local).collect())
}

/// The kernel's multicast groups of link changes (`RTNLGRP_LINK`) and of IPv4 route changes
/// (`RTNLGRP_IPV4_ROUTE`).
const LINK_GROUP: u32 = 1;
const IPV4_ROUTE_GROUP: u32 = 7;

/// One change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// A route added or changed (`RTM_NEWROUTE`), or deleted (`RTM_DELROUTE`).
    Route(RouteEvent),
    /// A link's new state (`RTM_NEWLINK`: up, down, its operational state), or its removal
    /// (`RTM_DELLINK`).
    Link { removed: bool, port: PortView },
}

/// A route announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    pub added: bool,
    /// The route, classified for the owner's protocol; its device is named `if<index>` (an
    /// announcement carries the index only).
    pub route: RouteView,
    /// The route's link has no carrier (`RTNH_F_LINKDOWN`, `ip route` prints `linkdown`):
    /// its other end is down.
    pub linkdown: bool,
}

/// The link and IPv4 route changes of one namespace as the kernel announces them, in its
/// order: a netlink socket made inside the namespace and joined to both groups, read without
/// blocking. For watching changes as they are made (a benchmark's clock, a test of the order
/// of steps); a reconciler still compares whole dumps, since announcements are lost when the
/// socket's buffer overflows.
pub struct Announcements {
    socket: Socket,
    ns: String,
    ours: RouteProtocol,
}

impl fmt::Debug for Announcements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announcements")
            .field("ns", &self.ns)
            .finish()
    }
}

impl Announcements {
    /// Starts listening inside `ns` (the socket is made there, on a short-lived thread), with
    /// `ours` as the owner's protocol for [`RouteView::classify`]. Announcements from this
    /// call on are kept, up to the socket's 4 MiB buffer.
    pub fn open(ns: &Netns, ours: RouteProtocol) -> Result<Announcements> {
        let socket = netns::run_blocking(ns, || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.add_membership(LINK_GROUP)?;
            socket.add_membership(IPV4_ROUTE_GROUP)?;
            socket.set_rx_buf_sz(4usize << 20)?;
            socket.set_non_blocking(true)?;
            Ok(socket)
        })?
        .map_err(|e| Error::Netlink {
            ns: ns.label().to_string(),
            step: "listen to link and route announcements".into(),
            source: e,
        })?;
        Ok(Announcements {
            socket,
            ns: ns.label().to_string(),
            ours,
        })
    }

    /// Every announcement queued since the last call, in the kernel's order, without waiting.
    /// An error `ENOBUFS` means some were lost (the buffer overflowed); the next call goes on
    /// with what came after.
    pub fn read(&self) -> Result<Vec<Announcement>> {
        let mut read = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(read),
                Err(e) => {
                    return Err(Error::Netlink {
                        ns: self.ns.clone(),
                        step: "read link and route announcements".into(),
                        source: e,
                    });
                }
            };
            read.extend(parse_announcements(&buf[..n], self.ours));
        }
    }

    /// Waits at most `timeout` for an announcement to be queued; answers whether one is.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::Netlink {
                ns: self.ns.clone(),
                step: "wait for link and route announcements".into(),
                source: e.into(),
            }),
        }
    }
}

/// The announcements in one datagram (it may hold several messages, each padded to 4 bytes);
/// other messages (addresses, a malformed one) are skipped.
fn parse_announcements(mut bytes: &[u8], ours: RouteProtocol) -> Vec<Announcement> {
    let mut read = Vec::new();
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            break;
        }
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]);
        bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
        let Ok(NetlinkPayload::InnerMessage(message)) = message.map(|m| m.payload) else {
            continue;
        };
        let (added, route) = match &message {
            RouteNetlinkMessage::NewRoute(r) => (true, r),
            RouteNetlinkMessage::DelRoute(r) => (false, r),
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
                let port = PortView::from_message(l);
                let removed = matches!(message, RouteNetlinkMessage::DelLink(_));
                read.push(Announcement::Link { removed, port });
                continue;
            }
            _ => continue,
        };
        if let Some(view) = route_view(route, &BTreeMap::new()) {
            read.push(Announcement::Route(RouteEvent {
                added,
                route: view.classify(ours),
                linkdown: route.header.flags.contains(RouteFlags::Linkdown),
            }));
        }
    }
    read
}
