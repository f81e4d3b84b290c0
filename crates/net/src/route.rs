//! Routes over netlink: owned `/32` routes (add, replace, delete, and applying a
//! [`Plan`](crate::routes::Plan)), a namespace's default route, the host's guard (a blackhole
//! route), and IPv4 forwarding.
//!
//! Every owned-route request carries the owner's protocol, and refuses the protocols the
//! kernel and ip(8) write ([`RouteProtocol::owner`]); a delete also names the gateway and
//! metric, so the kernel matches only the route the plan saw.

use std::net::Ipv4Addr;

use futures_util::StreamExt as _;
use nix::errno::Errno;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteScope, RouteType};

use crate::netns::{self, Netns};
use crate::routes::{Op, RouteProtocol};
use crate::{Netlink, Result};

/// How many route requests [`apply`] keeps in flight.
const IN_FLIGHT: usize = 64;

fn owned_message(dst: Ipv4Addr, via: Option<Ipv4Addr>, protocol: RouteProtocol) -> RouteMessage {
    let builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .protocol(protocol.0.into());
    match via {
        Some(via) => builder.gateway(via).build(),
        None => builder.build(),
    }
}

/// Creates `dst/32 via via proto PROTOCOL`; fails with `EEXIST` rather than overwrite any route
/// to `dst/32` with metric 0, owned or not.
pub async fn add(
    nl: &Netlink,
    dst: Ipv4Addr,
    via: Ipv4Addr,
    protocol: RouteProtocol,
) -> Result<()> {
    write(nl, dst, via, protocol, false).await
}

/// Replaces the route to `dst/32` with metric 0 by `dst/32 via via proto PROTOCOL` (creating
/// it when there is none). The kernel overwrites whichever route to `dst/32` with metric 0 it
/// finds first, owned or not: call it only where [`crate::routes::plan`] says so.
pub async fn replace(
    nl: &Netlink,
    dst: Ipv4Addr,
    via: Ipv4Addr,
    protocol: RouteProtocol,
) -> Result<()> {
    write(nl, dst, via, protocol, true).await
}

async fn write(
    nl: &Netlink,
    dst: Ipv4Addr,
    via: Ipv4Addr,
    protocol: RouteProtocol,
    replace: bool,
) -> Result<()> {
    RouteProtocol::owner(protocol.0)?;
    let request = nl
        .handle()
        .route()
        .add(owned_message(dst, Some(via), protocol));
    let (request, verb) = if replace {
        (request.replace(), "replace")
    } else {
        (request, "add")
    };
    request.execute().await.map_err(|e| {
        nl.fail(
            format!("{verb} route {dst}/32 via {via} proto {protocol}"),
            e,
        )
    })
}

/// Deletes the route `dst/32 [via via] metric priority proto PROTOCOL` of the main table.
/// The kernel matches protocol, type, gateway and metric, so no other route can go. Answers
/// `false` when there was no such route (`ESRCH`: it is already gone).
pub async fn delete(
    nl: &Netlink,
    dst: Ipv4Addr,
    via: Option<Ipv4Addr>,
    priority: u32,
    protocol: RouteProtocol,
) -> Result<bool> {
    RouteProtocol::owner(protocol.0)?;
    let mut message = owned_message(dst, via, protocol);
    // Any scope, as `ip route del` asks: an owned route without a gateway has scope link.
    message.header.scope = RouteScope::NoWhere;
    if priority != 0 {
        message.attributes.push(RouteAttribute::Priority(priority));
    }
    let what = match via {
        Some(via) => format!("delete route {dst}/32 via {via} metric {priority} proto {protocol}"),
        None => format!("delete route {dst}/32 metric {priority} proto {protocol}"),
    };
    let outcome = nl.handle().route().del(message).execute().await;
    done_unless(nl, outcome, what, Errno::ESRCH)
}

/// `Ok(true)` when a request was carried out, `Ok(false)` when the kernel answered `benign` (the
/// route was there already, or gone already), else the error, naming `what`.
fn done_unless(
    nl: &Netlink,
    outcome: std::result::Result<(), rtnetlink::Error>,
    what: String,
    benign: Errno,
) -> Result<bool> {
    match outcome {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = nl.fail(what, e);
            if e.raw_os_error() == Some(benign as i32) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Applies `ops` with up to 64 requests in flight (a plan's operations do not depend on each
/// other's order) and answers each operation's outcome, in completion order. A failed
/// operation does not stop the others; the caller logs it and the next plan retries it.
pub async fn apply(nl: &Netlink, ops: &[Op], protocol: RouteProtocol) -> Vec<(Op, Result<()>)> {
    futures_util::stream::iter(ops.iter().cloned())
        .map(|op| async move {
            let outcome = match &op {
                Op::Add { dst, via } => add(nl, *dst, *via, protocol).await,
                Op::Replace { dst, via, .. } => replace(nl, *dst, *via, protocol).await,
                Op::Delete { dst, via, priority } => {
                    delete(nl, *dst, *via, *priority, protocol).await.map(drop)
                }
            };
            (op, outcome)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// One pass of a network agent over the table `nl` acts on: reads the table and the
/// namespace's own addresses, plans the owned routes for `desired` (destination → next hop,
/// [`crate::routes::plan`]) and applies the plan. Answers the plan and each operation's outcome
/// (a failed one is retried by the next pass).
pub async fn reconcile(
    nl: &Netlink,
    desired: &std::collections::BTreeMap<Ipv4Addr, Ipv4Addr>,
    protocol: RouteProtocol,
) -> Result<(crate::routes::Plan, Vec<(Op, Result<()>)>)> {
    let observed = crate::observe::routes(nl, protocol).await?;
    let local = crate::observe::local_addrs(nl).await?;
    let plan = crate::routes::plan(desired, &observed, &local);
    let outcomes = apply(nl, &plan.ops, protocol).await;
    Ok((plan, outcomes))
}

/// Adds the default route `default via via proto PROTOCOL` (a node's, through the switch; a
/// task's, through its node).
pub async fn add_default(nl: &Netlink, via: Ipv4Addr, protocol: RouteProtocol) -> Result<()> {
    let message = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(via)
        .protocol(protocol.0.into())
        .build();
    nl.handle()
        .route()
        .add(message)
        .execute()
        .await
        .map_err(|e| nl.fail(format!("add default route via {via}"), e))
}

/// The blackhole route `blackhole dst/len proto PROTOCOL` (the guard a namespaced rack puts in
/// the host's table, so that a packet sent there by mistake to a rack address is dropped
/// instead of leaving the machine). Answers `false` when an identical route was already there
/// (`EEXIST`: another rack's guard).
pub async fn add_blackhole(
    nl: &Netlink,
    dst: Ipv4Addr,
    len: u8,
    protocol: RouteProtocol,
) -> Result<bool> {
    RouteProtocol::owner(protocol.0)?;
    let message = blackhole_message(dst, len, protocol);
    let outcome = nl.handle().route().add(message).execute().await;
    let what = format!("add route blackhole {dst}/{len} proto {protocol}");
    done_unless(nl, outcome, what, Errno::EEXIST)
}

/// Deletes `blackhole dst/len proto PROTOCOL`, and no other route (the kernel matches the type
/// and protocol). Answers `false` when it was not there.
pub async fn delete_blackhole(
    nl: &Netlink,
    dst: Ipv4Addr,
    len: u8,
    protocol: RouteProtocol,
) -> Result<bool> {
    RouteProtocol::owner(protocol.0)?;
    let mut message = blackhole_message(dst, len, protocol);
    message.header.scope = RouteScope::NoWhere;
    let outcome = nl.handle().route().del(message).execute().await;
    let what = format!("delete route blackhole {dst}/{len} proto {protocol}");
    done_unless(nl, outcome, what, Errno::ESRCH)
}

fn blackhole_message(dst: Ipv4Addr, len: u8, protocol: RouteProtocol) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, len)
        .kind(RouteType::BlackHole)
        .protocol(protocol.0.into())
        .build()
}

/// Turns IPv4 forwarding on or off inside `ns` (`net.ipv4.ip_forward`; per namespace).
pub fn set_forwarding(ns: &Netns, on: bool) -> Result<()> {
    netns::write_sysctl(ns, "net.ipv4.ip_forward", if on { "1" } else { "0" })
}
