//! A whole rack on this machine's network namespaces, as `torc up` and the test racks
//! (`torc-test-utils`' `LocalRack`) build it, with one code path for both
//! (`docs/design/rack-network.md` §2, §3):
//!
//! - [`RackPlan`] (pure): the switch's namespace and one namespace per node, a veth `swp<N>` ↔
//!   `eth0` per node, `/32 peer /32` addresses in 198.18.0.0/15, default routes through the
//!   switch, forwarding on;
//! - [`RackLock`]: `/run/torc/<slug>.lock`, held while the rack runs; [`sweep`] removes what
//!   racks whose lock is free left behind (namespaces, processes still inside them, records);
//! - [`create`] carries a plan out under its lock and gives a [`RackNet`], which
//!   [`RackNet::check`]s it before use and tears it down ([`RackNet::teardown`], or on drop);
//! - [`Forwarders`]: the host's loopback endpoints into the rack.
//!
//! Invariants:
//! - Every rack address lies in 198.18.0.0/15 and is configured only inside namespaces of the
//!   rack; while a rack runs, the host's table holds `blackhole 198.18.0.0/15 proto 116` (the
//!   guard route), removed when no rack's lock is held.
//! - A rack is removed only by its lock's holder, or by a sweep that took its (free) lock: a
//!   running rack is never swept. Every rack writes its intent record before it makes anything,
//!   and its lock file is created before that, so a kill at any point leaves something the
//!   next sweep finds.
//! - Every function here is synchronous; netlink requests run on a thread with its own runtime.

mod blocking;
mod build;
mod forwarders;
mod guard;
mod lock;
mod plan;
mod sweep;

pub use build::{RackNet, create};
pub use forwarders::{Forward, Forwarders, Proto};
pub use guard::describe as guard_route;
pub use lock::{RackLock, STATE_DIR, record_path, running};
pub use plan::{
    MAX_COMPUTE_NODES, NODE_LINK, NodeLink, PlanNode, RackPlan, rack_range, standard_address,
    standard_task_block,
};
pub use sweep::{Swept, sweep};
