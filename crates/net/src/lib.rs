//! `torc-net`: the rack network on one Linux machine or on a switch. Network namespaces (named
//! ones for nodes, anonymous ones for tasks), veth pairs, `/32 peer /32` addresses and routes
//! over netlink, the pure route planner of the network agent, and the forwarder that lets the
//! host reach services inside the rack. The design is `docs/design/rack-network.md`.
//!
//! What it is not: a policy. Which namespaces, links, addresses and routes a rack has is decided
//! by its callers (`torc up`, the agent, the network agent); this crate does each step and says
//! which one failed, naming the namespace, link or address. [`rack`] is the one place that
//! puts the steps together: a whole rack on this machine's namespaces, for `torc up` and the
//! test racks alike.
//!
//! Invariants:
//! - **It never touches a route it does not own.** A route is owned when its protocol number is
//!   the owner's (116, [`RouteProtocol::TORC`], by default; the protocols the kernel and ip(8)
//!   use cannot be chosen), it is a unicast `/32` and it lies in the main table. The planner
//!   ([`routes::plan`]) deletes only owned routes, and never adds or replaces a destination that
//!   a route it does not own covers with the same `/32`; the delete request names the protocol,
//!   gateway and metric, so the kernel itself refuses to remove any other route. The one other
//!   route it makes is the host's guard while a rack runs ([`rack`]): `blackhole
//!   198.18.0.0/15` with the same protocol, deleted by type, prefix and protocol.
//! - **Every namespace it names carries a rack prefix** (`torc-<slug>-`, [`NetnsPrefix`]), and
//!   is removed by its rack ([`netns::delete_named`]) or by the next [`netns::sweep`] of that
//!   prefix; [`rack::sweep`] sweeps only racks whose lock (`/run/torc/<slug>.lock`) no one
//!   holds. Anonymous namespaces ([`netns::create_anonymous`]) live exactly as long as their
//!   file descriptor and the processes inside them, and take their veths and routes along.
//! - **No socket of the host namespace is ever connected to a rack address.** Sockets that
//!   reach into a rack are created on a thread that entered the rack's namespace first
//!   ([`forward::NetnsDialer`], [`netns::connect_in`]); a socket keeps the namespace it was
//!   created in, whichever thread uses it later. The dialer refuses the caller's own namespace.
//!
//! Namespaces are entered on short-lived threads (`setns` changes only the calling thread), so
//! nothing here forks inside a multi-threaded program, and a tokio worker never changes its own
//! namespace. Reading `/sys/class/net` after `setns` shows the mounter's view, not the
//! namespace's, so everything is read over netlink (see [`observe`]).

pub mod addr;
mod error;
pub mod forward;
pub mod link;
mod names;
pub mod netlink;
pub mod netns;
pub mod observe;
pub mod rack;
pub mod route;
pub mod routes;
pub mod watch;

pub use error::Error;
pub use names::{IfName, NetnsName, NetnsPrefix};
pub use netlink::Netlink;
pub use netns::Netns;
pub use routes::{Op, Owner, RouteKind, RouteProtocol, RouteView};
pub use watch::{Changes, Switch, watch};

/// The netlink crate this one wraps, for what the wrappers do not cover (multicast groups,
/// message types in tests).
pub use rtnetlink;

/// The result of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
