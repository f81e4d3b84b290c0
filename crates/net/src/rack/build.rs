//! Carrying out a [`RackPlan`]: the namespaces, veths, addresses, default routes and
//! forwarding it names, plus the host's guard route; checking them before use; tearing them
//! down. Each step runs over netlink (never ip(8)) on a thread of its own, so callers may be
//! synchronous or async.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::netns::{self, Netns};
use crate::routes::RouteProtocol;
use crate::{Error, IfName, Netlink, Result, addr, link, observe, route};

use super::blocking;
use super::guard;
use super::lock::{self, RackLock};
use super::plan::{NODE_LINK, RackPlan, rack_range};
use super::sweep;

/// A rack's network as made by [`create`]: a handle on each namespace, and the rack's lock.
/// [`RackNet::teardown`] (or dropping it) removes every namespace (their veths, addresses and
/// routes go with them), the intent record, the lock, and the guard route when no other rack
/// runs.
#[derive(Debug)]
pub struct RackNet {
    plan: RackPlan,
    /// Node name → its namespace (the switch's included).
    namespaces: BTreeMap<String, Netns>,
    /// `None` once torn down.
    lock: Option<RackLock>,
}

/// Builds the rack `plan` holds, under its lock (`lock` must be the plan's prefix's). First the
/// intent record (`/run/torc/<slug>.json`, saying `purpose`) and the guard route, then the
/// namespaces and what is in them. On failure everything made is removed again and the lock
/// let go.
pub fn create(plan: RackPlan, lock: RackLock, purpose: &str) -> Result<RackNet> {
    if *lock.prefix() != plan.prefix {
        return Err(Error::invalid(
            "rack lock",
            lock.prefix().as_str(),
            format!("is not the lock of the rack planned ({})", plan.prefix),
        ));
    }
    match build(&plan, purpose) {
        Ok(namespaces) => Ok(RackNet {
            plan,
            namespaces,
            lock: Some(lock),
        }),
        Err(e) => {
            undo(&plan, lock);
            Err(e)
        }
    }
}

fn build(plan: &RackPlan, purpose: &str) -> Result<BTreeMap<String, Netns>> {
    let record = serde_json::json!({
        "slug": plan.prefix.slug(),
        "purpose": purpose,
        "pid": std::process::id(),
        "namespaces": plan.namespaces().iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        "steps": plan.to_string().lines().collect::<Vec<_>>(),
        "guard_route": guard::describe(),
    });
    lock::write_record(&plan.prefix, &record)?;
    guard::ensure()?;
    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        plan.switch.clone(),
        netns::create_named(&plan.switch_netns)?,
    );
    for l in &plan.links {
        namespaces.insert(l.node.clone(), netns::create_named(&l.netns)?);
    }
    blocking::run(configure(plan, &namespaces))?;
    Ok(namespaces)
}

async fn configure(plan: &RackPlan, namespaces: &BTreeMap<String, Netns>) -> Result<()> {
    let (lo, eth0) = (IfName::new("lo")?, IfName::new(NODE_LINK)?);
    let switch = &namespaces[&plan.switch];
    let host = Netlink::current()?;
    for l in &plan.links {
        link::add_veth(&host, &l.port, switch, &eth0, &namespaces[&l.node]).await?;
    }
    let sw = netns::connect_in(switch)?;
    link::set_up(&sw, &lo).await?;
    addr::add_host(&sw, &lo, plan.switch_address).await?;
    for l in &plan.links {
        addr::add_peer(&sw, &l.port, plan.switch_address, l.address).await?;
        link::set_up(&sw, &l.port).await?;
    }
    route::set_forwarding(switch, true)?;
    for l in &plan.links {
        let ns = &namespaces[&l.node];
        let node = netns::connect_in(ns)?;
        link::set_up(&node, &lo).await?;
        addr::add_peer(&node, &eth0, l.address, plan.switch_address).await?;
        link::set_up(&node, &eth0).await?;
        route::add_default(&node, plan.switch_address, RouteProtocol::BOOT).await?;
        route::set_forwarding(ns, true)?;
    }
    Ok(())
}

/// Removes what a failed [`create`] made, and lets go of the lock.
fn undo(plan: &RackPlan, lock: RackLock) {
    if let Err(e) = sweep::clear(&plan.prefix) {
        tracing::warn!(rack = %plan.prefix, "cannot remove a half-made rack: {e}");
        // Its lock file stays, so the next sweep tries again.
        return;
    }
    lock.release();
    if let Err(e) = guard::remove_if_unused() {
        tracing::warn!("cannot remove the host's guard route: {e}");
    }
}

impl RackNet {
    pub fn plan(&self) -> &RackPlan {
        &self.plan
    }

    /// The namespace of node `node` (the switch's for the switch node).
    pub fn netns(&self, node: &str) -> Option<&Netns> {
        self.namespaces.get(node)
    }

    /// The switch's namespace.
    pub fn switch(&self) -> &Netns {
        &self.namespaces[&self.plan.switch]
    }

    /// Checks, before anything is sent, that the rack is what its plan says: each namespace is
    /// a namespace mount under `/run/netns` (not a plain file, not the host's), the very one
    /// this rack made, holding its node's rack address; and the host's namespace holds no
    /// address of the rack's range. The first problem found is the error.
    pub fn check(&self) -> Result<()> {
        let host = Netns::current()?.id()?;
        let run_dir = fs::metadata(netns::RUN_DIR).map_err(|e| Error::Check {
            ns: netns::RUN_DIR.into(),
            problem: format!("cannot stat it: {e}"),
        })?;
        let mut expected = vec![(
            &self.plan.switch,
            &self.plan.switch_netns,
            self.plan.switch_address,
        )];
        expected.extend((self.plan.links.iter()).map(|l| (&l.node, &l.netns, l.address)));
        for (node, name, _) in &expected {
            let problem = |problem: String| Error::Check {
                ns: name.to_string(),
                problem,
            };
            let path = Path::new(netns::RUN_DIR).join(name.as_str());
            let meta = fs::metadata(&path)
                .map_err(|e| problem(format!("{} is not there: {e}", path.display())))?;
            if meta.dev() == run_dir.dev() {
                return Err(problem(format!(
                    "{} is a plain file, not a namespace mounted there",
                    path.display()
                )));
            }
            let opened = Netns::open_named(name)?.id()?;
            if opened == host {
                return Err(problem("is the host's own namespace".into()));
            }
            if opened != self.namespaces[*node].id()? {
                return Err(problem(
                    "is not the namespace this rack made (replaced since)".into(),
                ));
            }
        }
        blocking::run(async {
            for (node, name, address) in &expected {
                let nl = netns::connect_in(&self.namespaces[*node])?;
                let has = observe::addresses(&nl).await?;
                if !has.iter().any(|a| a.local == *address) {
                    return Err(Error::Check {
                        ns: name.to_string(),
                        problem: format!("does not hold its node's address {address}"),
                    });
                }
            }
            let host = Netlink::current()?;
            let range = rack_range();
            let leaked: Vec<Ipv4Addr> = (observe::addresses(&host).await?.iter())
                .map(|a| a.local)
                .filter(|a| range.contains(*a))
                .collect();
            if let Some(a) = leaked.first() {
                return Err(Error::Check {
                    ns: "the host's namespace".into(),
                    problem: format!("holds the rack address {a} (in {range})"),
                });
            }
            Ok(())
        })
    }

    /// Removes the rack: stops any process still inside its namespaces, deletes them (their
    /// veths, addresses and routes go with them), its intent record and its lock, then the
    /// guard route if no other rack runs. Stop the rack's own processes first: this is the
    /// last resort for stragglers.
    pub fn teardown(mut self) -> Result<()> {
        self.tear_down()
    }

    fn tear_down(&mut self) -> Result<()> {
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        sweep::clear(&self.plan.prefix)?;
        // The handles keep the namespaces (and their veths) alive: let go of them.
        self.namespaces.clear();
        lock.release();
        guard::remove_if_unused().map(drop)
    }
}

impl Drop for RackNet {
    fn drop(&mut self) {
        if let Err(e) = self.tear_down() {
            tracing::warn!(rack = %self.plan.prefix, "cannot tear the rack's network down: {e}");
        }
    }
}
