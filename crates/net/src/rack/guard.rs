//! The host's guard route: `blackhole 198.18.0.0/15 proto 116` in the host's namespace while a
//! namespaced rack runs on this machine. The host never sends to a rack address on purpose
//! (it reaches the rack through forwarders); the guard makes sure a mistake is dropped here
//! instead of following the host's default route off the machine.
//!
//! It is added (if absent) when a rack is created and removed when the last rack is gone: by a
//! rack's teardown or by a sweep, each only when no rack's lock is held. Both run under one
//! lock (`/run/torc/guard-route.lock`), so a rack that starts while another stops keeps its
//! guard.

use crate::netlink::Netlink;
use crate::routes::RouteProtocol;
use crate::{Result, route};

use super::blocking;
use super::lock;
use super::plan::rack_range;

/// The guard route's protocol: torc's.
const GUARD: RouteProtocol = RouteProtocol::TORC;

/// Adds the guard route to the host's table unless it is there.
pub(crate) fn ensure() -> Result<()> {
    let _ordered = lock::guard_lock()?;
    let range = rack_range();
    blocking::run(async move {
        let host = Netlink::current()?;
        route::add_blackhole(&host, range.network(), range.prefix_len(), GUARD)
            .await
            .map(drop)
    })
}

/// Removes the guard route when no rack's lock is held; answers whether it removed one.
pub(crate) fn remove_if_unused() -> Result<bool> {
    // No rack ever ran since boot (the guard goes with a reboot, as /run does).
    if !std::path::Path::new(lock::STATE_DIR).exists() {
        return Ok(false);
    }
    let _ordered = lock::guard_lock()?;
    if !lock::running()?.is_empty() {
        return Ok(false);
    }
    let range = rack_range();
    blocking::run(async move {
        let host = Netlink::current()?;
        route::delete_blackhole(&host, range.network(), range.prefix_len(), GUARD).await
    })
}

/// The guard route as `ip route` prints it.
pub fn describe() -> String {
    format!("blackhole {} proto {}", rack_range(), GUARD.0)
}
