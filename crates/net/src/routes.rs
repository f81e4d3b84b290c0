//! The route planner of the network agent, pure (no I/O): the routes the rack wants on the
//! switch, the routes the switch has, and its own addresses in; the operations that make the
//! owned part of the table match out. Cases are text files in `crates/net/tests/routes/`.
//!
//! Ownership: a route is owned ([`Owner::Torc`]) when its protocol is the owner's
//! ([`RouteProtocol::TORC`] by default), it is unicast, its destination is a `/32` and it is in
//! the main table. Everything else belongs to someone else (the kernel's connected routes, an
//! admin's static routes, a routing daemon's).
//!
//! Invariants of [`plan`]:
//! - it deletes only owned routes, each named by destination, gateway and metric, so the delete
//!   request cannot match another route;
//! - it never adds or replaces a destination that a route it does not own covers with the same
//!   `/32` in the main table (the kernel's replace would overwrite that route): the desired route
//!   is reported as [`Skipped`] instead, and programmed once the other route is gone;
//! - a desired route whose next hop is one of the switch's own addresses is skipped (the switch
//!   reaches it over the connected route of the link), and an owned route to it is deleted;
//! - applying the plan and planning again gives no operation (the cases check this).
//!
//! An added route uses create-exclusive (it fails rather than overwrite a route that appeared
//! since the dump); a replaced one overwrites the owned route with metric 0 that the kernel
//! finds first for that destination, which is the first one the dump listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::Error;

/// The main routing table (`RT_TABLE_MAIN`), the only one the planner looks at.
pub const MAIN_TABLE: u32 = 254;

/// A route's protocol number (`rtm_protocol`): who put it there. `ip route` prints it as
/// `proto NAME` for the numbers in iproute2's `rt_protos`, else as the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteProtocol(pub u8);

/// iproute2's `/etc/iproute2/rt_protos` names.
const PROTOCOL_NAMES: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
];

impl RouteProtocol {
    /// The routes the kernel makes for addresses (connected routes).
    pub const KERNEL: RouteProtocol = RouteProtocol(2);
    /// What `ip route add` writes without `proto`.
    pub const BOOT: RouteProtocol = RouteProtocol(3);
    /// An administrator's static routes.
    pub const STATIC: RouteProtocol = RouteProtocol(4);
    /// torc's routes: 116 (ASCII `t`), assigned to no one in `linux/rtnetlink.h`, iproute2,
    /// FRR, BIRD or Calico (`docs/design/rack-network.md` §5 lists who uses what).
    pub const TORC: RouteProtocol = RouteProtocol(116);

    /// `n` as the protocol of the routes a network agent owns. The numbers the kernel and
    /// ip(8) write themselves (0 to 4: unspec, redirect, kernel, boot, static) and 255
    /// (reserved) are refused: owning them would mean deleting other people's routes.
    pub fn owner(n: u8) -> Result<RouteProtocol, Error> {
        if n <= 4 || n == 255 {
            return Err(Error::invalid(
                "route protocol",
                &n.to_string(),
                "0 to 4 are the kernel's and ip(8)'s own and 255 is reserved; owning them \
                 would mean deleting other people's routes",
            ));
        }
        Ok(RouteProtocol(n))
    }

    /// iproute2's name for this number, if it has one.
    pub fn name(self) -> Option<&'static str> {
        PROTOCOL_NAMES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, name)| *name)
    }
}

impl fmt::Display for RouteProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl FromStr for RouteProtocol {
    type Err = Error;

    /// A number (`116`) or an iproute2 name (`static`).
    fn from_str(s: &str) -> Result<RouteProtocol, Error> {
        if let Ok(n) = s.parse::<u8>() {
            return Ok(RouteProtocol(n));
        }
        PROTOCOL_NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(n, _)| RouteProtocol(*n))
            .ok_or_else(|| {
                Error::invalid("route protocol", s, "not a number or a name of rt_protos")
            })
    }
}

/// A route's type (`rtm_type`), as `ip route` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Nat,
    Other(u8),
}

const KIND_NAMES: &[(RouteKind, &str)] = &[
    (RouteKind::Unicast, "unicast"),
    (RouteKind::Local, "local"),
    (RouteKind::Broadcast, "broadcast"),
    (RouteKind::Anycast, "anycast"),
    (RouteKind::Multicast, "multicast"),
    (RouteKind::Blackhole, "blackhole"),
    (RouteKind::Unreachable, "unreachable"),
    (RouteKind::Prohibit, "prohibit"),
    (RouteKind::Throw, "throw"),
    (RouteKind::Nat, "nat"),
];

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match KIND_NAMES.iter().find(|(k, _)| k == self) {
            Some((_, name)) => f.write_str(name),
            None => match self {
                RouteKind::Other(n) => write!(f, "type {n}"),
                _ => write!(f, "{self:?}"),
            },
        }
    }
}

impl FromStr for RouteKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<RouteKind, Error> {
        KIND_NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| Error::invalid("route type", s, "not a type ip(8) names"))
    }
}

/// Whose a route is, for the owner's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The owner's protocol, unicast, `/32`, main table: the planner may delete or replace it.
    Torc,
    /// Anything else: never touched.
    Other,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Owner::Torc => "torc",
            Owner::Other => "other",
        })
    }
}

/// One IPv4 route of a table as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The output device's name, when the route has one.
    pub device: Option<String>,
    pub protocol: RouteProtocol,
    pub kind: RouteKind,
    pub table: u32,
    /// The metric (`RTA_PRIORITY`); 0 when absent.
    pub priority: u32,
    pub owner: Owner,
}

impl RouteView {
    /// Sets `owner` for the owner's protocol `ours` (see [`Owner`]). Every view is classified
    /// here, by [`crate::observe`] and by the cases alike.
    pub fn classify(mut self, ours: RouteProtocol) -> RouteView {
        let owned = self.protocol == ours
            && self.kind == RouteKind::Unicast
            && self.dst_len == 32
            && self.table == MAIN_TABLE;
        self.owner = if owned { Owner::Torc } else { Owner::Other };
        self
    }

    /// Who the route is for people reading the table (the network agent's report, statesync):
    /// `torc` for an owned route, else its protocol's name or number (`kernel`, `static`,
    /// `186`), noting a route with the owner's protocol `ours` that it leaves alone because it
    /// is not a unicast `/32` of the main table.
    pub fn protocol_label(&self, ours: RouteProtocol) -> String {
        match self.owner {
            Owner::Torc => "torc".into(),
            Owner::Other if self.protocol == ours => {
                format!("{} (not a /32 unicast: left alone)", self.protocol)
            }
            Owner::Other => self.protocol.to_string(),
        }
    }

    /// Owned, and of the shape the planner may touch (checked again, whoever set `owner`).
    fn is_owned(&self) -> bool {
        self.owner == Owner::Torc
            && self.kind == RouteKind::Unicast
            && self.dst_len == 32
            && self.table == MAIN_TABLE
    }
}

impl fmt::Display for RouteView {
    /// As `ip route` prints it: `198.19.1.2/32 via 198.18.0.21 dev swp1 proto 116`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteKind::Unicast {
            write!(f, "{} ", self.kind)?;
        }
        write!(f, "{}/{}", self.dst, self.dst_len)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(device) = &self.device {
            write!(f, " dev {device}")?;
        }
        write!(f, " proto {}", self.protocol)?;
        if self.priority != 0 {
            write!(f, " metric {}", self.priority)?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// One change to the switch's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// No owned route for `dst` has metric 0: create `dst/32 via via` (create-exclusive).
    Add { dst: Ipv4Addr, via: Ipv4Addr },
    /// The owned route for `dst` with metric 0 goes through `was`: overwrite it in place.
    Replace {
        dst: Ipv4Addr,
        via: Ipv4Addr,
        was: Option<Ipv4Addr>,
    },
    /// Remove the owned route `dst/32 via via metric priority`.
    Delete {
        dst: Ipv4Addr,
        via: Option<Ipv4Addr>,
        priority: u32,
    },
}

impl Op {
    pub fn dst(&self) -> Ipv4Addr {
        match self {
            Op::Add { dst, .. } | Op::Replace { dst, .. } | Op::Delete { dst, .. } => *dst,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Add { dst, via } => write!(f, "add {dst}/32 via {via}"),
            Op::Replace { dst, via, was } => {
                write!(f, "replace {dst}/32 via {via}")?;
                match was {
                    Some(was) => write!(f, " (was via {was})"),
                    None => write!(f, " (had no gateway)"),
                }
            }
            Op::Delete { dst, via, priority } => {
                write!(f, "delete {dst}/32")?;
                if let Some(via) = via {
                    write!(f, " via {via}")?;
                }
                if *priority != 0 {
                    write!(f, " metric {priority}")?;
                }
                Ok(())
            }
        }
    }
}

/// A desired route the plan does not program, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub dst: Ipv4Addr,
    pub via: Ipv4Addr,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The next hop is one of the switch's own addresses: the destination is reached over the
    /// connected route of its link (a task on the switch node itself).
    LocalNextHop,
    /// A route the owner does not own covers the destination with the same `/32`.
    HeldBy(Box<RouteView>),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/32 via {}: ", self.dst, self.via)?;
        match &self.reason {
            SkipReason::LocalNextHop => write!(f, "the next hop is this switch's own address"),
            SkipReason::HeldBy(route) => write!(f, "held by a route torc does not own: {route}"),
        }
    }
}

/// What to do, and what was left undone on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ordered by destination, deletions first; they may be applied in any order or at once.
    pub ops: Vec<Op>,
    pub skipped: Vec<Skipped>,
}

/// The operations that make the owned `/32` routes of `observed` (one dump of the main table,
/// all protocols) equal to `desired` (destination → next hop), given the switch's own
/// addresses `local`. See the module's invariants.
pub fn plan(
    desired: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    observed: &[RouteView],
    local: &BTreeSet<Ipv4Addr>,
) -> Plan {
    // Owned routes per destination, in the kernel's order; the first foreign /32 per destination.
    let mut owned: BTreeMap<Ipv4Addr, Vec<&RouteView>> = BTreeMap::new();
    let mut foreign: BTreeMap<Ipv4Addr, &RouteView> = BTreeMap::new();
    for route in observed {
        if route.is_owned() {
            owned.entry(route.dst).or_default().push(route);
        } else if route.dst_len == 32 && route.table == MAIN_TABLE {
            foreign.entry(route.dst).or_insert(route);
        }
    }

    let mut plan = Plan::default();
    let delete = |ops: &mut Vec<Op>, routes: &[&RouteView], keep: Option<usize>| {
        for (i, route) in routes.iter().enumerate() {
            if Some(i) != keep {
                ops.push(Op::Delete {
                    dst: route.dst,
                    via: route.gateway,
                    priority: route.priority,
                });
            }
        }
    };
    for (&dst, &via) in desired {
        let mine = owned.remove(&dst).unwrap_or_default();
        if local.contains(&via) {
            plan.skipped.push(Skipped {
                dst,
                via,
                reason: SkipReason::LocalNextHop,
            });
            delete(&mut plan.ops, &mine, None);
            continue;
        }
        if let Some(keeper) = mine
            .iter()
            .position(|r| r.gateway == Some(via) && r.priority == 0)
        {
            delete(&mut plan.ops, &mine, Some(keeper));
            continue;
        }
        if let Some(held) = foreign.get(&dst) {
            plan.skipped.push(Skipped {
                dst,
                via,
                reason: SkipReason::HeldBy(Box::new((*held).clone())),
            });
            delete(&mut plan.ops, &mine, None);
            continue;
        }
        // The owned metric-0 route the kernel's replace would overwrite, if there is one.
        let target = mine.iter().position(|r| r.priority == 0);
        delete(&mut plan.ops, &mine, target);
        plan.ops.push(match target {
            Some(t) => Op::Replace {
                dst,
                via,
                was: mine[t].gateway,
            },
            None => Op::Add { dst, via },
        });
    }
    for routes in owned.values() {
        delete(&mut plan.ops, routes, None);
    }
    plan.ops
        .sort_by_key(|op| (op.dst(), !matches!(op, Op::Delete { .. })));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_and_print_as_ip_does() {
        assert_eq!(
            "static".parse::<RouteProtocol>().unwrap(),
            RouteProtocol::STATIC
        );
        assert_eq!("116".parse::<RouteProtocol>().unwrap(), RouteProtocol::TORC);
        assert_eq!(RouteProtocol::TORC.to_string(), "116");
        assert_eq!(RouteProtocol::KERNEL.to_string(), "kernel");
        assert!("torc".parse::<RouteProtocol>().is_err());
        assert!(RouteProtocol::owner(116).is_ok());
        for n in [0, 2, 3, 4, 255] {
            let e = RouteProtocol::owner(n).unwrap_err().to_string();
            assert!(e.contains("other people's routes"), "{e}");
        }
    }
}
