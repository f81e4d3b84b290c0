//! Links: veth pairs with each end in a given namespace, up and down, aliases (labels), lookup
//! and removal. Thin wrappers over rtnetlink that name the link and namespace when a step
//! fails.

use std::os::fd::{AsFd as _, AsRawFd as _};

use futures_util::TryStreamExt as _;
use nix::errno::Errno;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::{Error, IfName, Netlink, Netns, Result};

/// Creates the veth pair `name` (in `name_ns`) ↔ `peer` (in `peer_ns`) with one request: the
/// kernel creates each end directly in its namespace (as `ip link add swp1 netns A type veth
/// peer name eth0 netns B`), so neither name ever appears in the namespace `nl` acts on. Both
/// ends start down.
pub async fn add_veth(
    nl: &Netlink,
    name: &IfName,
    name_ns: &Netns,
    peer: &IfName,
    peer_ns: &Netns,
) -> Result<()> {
    let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.as_str())
        .setns_by_fd(peer_ns.as_fd().as_raw_fd())
        .build();
    let message = LinkVeth::new(name.as_str(), peer.as_str())
        .setns_by_fd(name_ns.as_fd().as_raw_fd())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
        .build();
    nl.handle()
        .link()
        .add(message)
        .execute()
        .await
        .map_err(|e| {
            nl.fail(
                format!(
                    "create veth {name} (in {}) with peer {peer} (in {})",
                    name_ns.label(),
                    peer_ns.label()
                ),
                e,
            )
        })
}

/// The interface index of `name`, or [`Error::NoSuchLink`].
pub async fn index(nl: &Netlink, name: &IfName) -> Result<u32> {
    Ok(message(nl, name).await?.header.index)
}

/// The kernel's description of link `name` (one `RTM_GETLINK`), or [`Error::NoSuchLink`].
pub(crate) async fn message(nl: &Netlink, name: &IfName) -> Result<LinkMessage> {
    let mut links = nl.handle().link().get().match_name(name.as_str()).execute();
    match links.try_next().await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(no_such_link(nl, name)),
        Err(e) => {
            let e = nl.fail(format!("look up link {name}"), e);
            if e.raw_os_error() == Some(Errno::ENODEV as i32) {
                Err(no_such_link(nl, name))
            } else {
                Err(e)
            }
        }
    }
}

fn no_such_link(nl: &Netlink, name: &IfName) -> Error {
    Error::NoSuchLink {
        ns: nl.namespace().to_string(),
        name: name.to_string(),
    }
}

/// Sets `name` up (`ip link set NAME up`); answers its index.
pub async fn set_up(nl: &Netlink, name: &IfName) -> Result<u32> {
    set_state(nl, name, true).await
}

/// Sets `name` down (`ip link set NAME down`); answers its index.
pub async fn set_down(nl: &Netlink, name: &IfName) -> Result<u32> {
    set_state(nl, name, false).await
}

async fn set_state(nl: &Netlink, name: &IfName, up: bool) -> Result<u32> {
    let index = index(nl, name).await?;
    let builder = LinkUnspec::new_with_index(index);
    let message = if up { builder.up() } else { builder.down() }.build();
    let state = if up { "up" } else { "down" };
    nl.handle()
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|e| nl.fail(format!("set link {name} {state}"), e))?;
    Ok(index)
}

/// Sets the alias of `name` (`ip link set NAME alias TEXT`: a label `ip link` shows, up to 255
/// bytes, e.g. who made the link and for what); answers its index.
pub async fn set_alias(nl: &Netlink, name: &IfName, alias: &str) -> Result<u32> {
    let index = index(nl, name).await?;
    let message = LinkUnspec::new_with_index(index).alias(alias).build();
    nl.handle()
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|e| nl.fail(format!("set the alias of link {name}"), e))?;
    Ok(index)
}

/// Every link of the namespace, by name, with its alias when it has one (one dump).
pub async fn aliases(nl: &Netlink) -> Result<Vec<(String, Option<String>)>> {
    let mut dump = nl.handle().link().get().execute();
    let mut links = Vec::new();
    while let Some(message) = dump
        .try_next()
        .await
        .map_err(|e| nl.fail("list links", e))?
    {
        let (mut name, mut alias) = (None, None);
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(n) => name = Some(n),
                LinkAttribute::IfAlias(a) => alias = Some(a),
                _ => {}
            }
        }
        if let Some(name) = name {
            links.push((name, alias));
        }
    }
    Ok(links)
}

/// Deletes the link `name` (for a veth, both ends); answers whether it was there.
pub async fn delete(nl: &Netlink, name: &IfName) -> Result<bool> {
    let index = match index(nl, name).await {
        Ok(index) => index,
        Err(Error::NoSuchLink { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    match nl.handle().link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = nl.fail(format!("delete link {name}"), e);
            if e.raw_os_error() == Some(Errno::ENODEV as i32) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}
