//! Addresses: a `/32` on a device (`ip addr add A/32 dev lo`) and a point-to-point
//! `A/32 peer B/32` (the rack's links: one request gives the address and the connected route to
//! the peer, with no subnet and no bridge).

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_route::address::AddressAttribute;

use crate::{IfName, Netlink, Result, link};

/// Adds `local/32 peer peer/32` on `dev` (`ip addr add LOCAL/32 peer PEER/32 dev DEV`). The
/// kernel then routes `peer` through `dev` (`proto kernel scope link src LOCAL`). The same
/// local address may sit on several devices, each with its own peer.
pub async fn add_peer(nl: &Netlink, dev: &IfName, local: Ipv4Addr, peer: Ipv4Addr) -> Result<()> {
    let index = link::index(nl, dev).await?;
    let mut request = nl.handle().address().add(index, IpAddr::V4(local), 32);
    // IFA_LOCAL is our end; IFA_ADDRESS is the peer's on a point-to-point address.
    let attributes = &mut request.message_mut().attributes;
    attributes.retain(|a| !matches!(a, AddressAttribute::Address(_)));
    attributes.push(AddressAttribute::Address(IpAddr::V4(peer)));
    request
        .execute()
        .await
        .map_err(|e| nl.fail(format!("add address {local}/32 peer {peer}/32 on {dev}"), e))
}

/// Adds `addr/32` on `dev` (the switch's own address on `lo`).
pub async fn add_host(nl: &Netlink, dev: &IfName, addr: Ipv4Addr) -> Result<()> {
    let index = link::index(nl, dev).await?;
    nl.handle()
        .address()
        .add(index, IpAddr::V4(addr), 32)
        .execute()
        .await
        .map_err(|e| nl.fail(format!("add address {addr}/32 on {dev}"), e))
}
