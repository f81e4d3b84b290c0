//! What the namespace tests share: the privilege check, a guard that removes every namespace
//! of a test's random rack prefix (at start and on drop, panics included), the checks made
//! before any packet is sent, and waiting on a condition.
//!
//! Addresses come from 198.18.0.0/15 only, and only inside namespaces the test made; every
//! socket that sends is made inside a namespace (a `NetnsDialer`).

#![allow(dead_code)]

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use torc_net::rack::RackLock;
use torc_net::{Netlink, Netns, NetnsName, NetnsPrefix, RouteKind, RouteProtocol, netns, observe};

/// Whether this process may build namespaces (CAP_SYS_ADMIN to make them, CAP_NET_ADMIN to
/// configure them). If not, says so on one line, and the test passes without doing anything.
pub fn privileged() -> bool {
    let capable = netns::capable().unwrap_or(false);
    if !capable {
        println!("skipped: needs CAP_NET_ADMIN");
    }
    capable
}

/// A test rack: a random prefix whose lock it holds while it lives (so that a sweep by `torc
/// up` or another test rack leaves it alone), and whose namespaces are all removed when it is
/// made (leftovers of an earlier run with the same prefix) and when it is dropped.
pub struct TestRack {
    pub prefix: NetnsPrefix,
    lock: Option<RackLock>,
}

impl TestRack {
    pub fn new() -> TestRack {
        let prefix = NetnsPrefix::random();
        let lock = RackLock::acquire(&prefix).expect("the test prefix's lock");
        netns::sweep(&prefix).expect("sweep the test prefix");
        TestRack {
            prefix,
            lock: Some(lock),
        }
    }

    pub fn name(&self, suffix: &str) -> NetnsName {
        self.prefix.name(suffix).expect("a namespace name")
    }

    /// Creates the named namespace `suffix` of this rack.
    pub fn create(&self, suffix: &str) -> Netns {
        netns::create_named(&self.name(suffix)).expect("create a namespace")
    }

    /// Before sending anything: each namespace named is this rack's, exists under /run/netns,
    /// and is not the host's, and the host has no rack address.
    pub async fn assert_namespaces(&self, suffixes: &[&str]) {
        let listed = netns::list(Some(&self.prefix)).expect("list namespaces");
        let host = Netns::current().expect("the host namespace").id().unwrap();
        for suffix in suffixes {
            let name = self.name(suffix);
            assert!(
                listed.contains(&name),
                "{name} is not in /run/netns: {listed:?}"
            );
            let ns = Netns::open_named(&name).expect("open a namespace");
            assert_ne!(ns.id().unwrap(), host, "{name} is the host's namespace");
        }
        assert_host_clean().await;
    }
}

impl Drop for TestRack {
    fn drop(&mut self) {
        match netns::sweep(&self.prefix) {
            Ok(_) => {
                if let Some(lock) = self.lock.take() {
                    lock.release();
                }
            }
            Err(e) => eprintln!("cannot remove the namespaces of {}: {e}", self.prefix),
        }
    }
}

/// 198.18.0.0/15, the only addresses the tests use.
pub fn is_test_address(a: Ipv4Addr) -> bool {
    u32::from(a) >> 17 == u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17
}

/// The host's namespace has no address and no unicast route in 198.18.0.0/15 (a blackhole
/// there, the guard route of `torc up`, sends nothing anywhere).
pub async fn assert_host_clean() {
    let host = Netlink::current().expect("netlink in the host namespace");
    for a in observe::addresses(&host).await.expect("host addresses") {
        assert!(
            !is_test_address(a.local),
            "the host has the rack address {a:?}"
        );
    }
    for r in observe::routes(&host, RouteProtocol::TORC)
        .await
        .expect("host routes")
    {
        let into_rack = r.kind == RouteKind::Unicast && is_test_address(r.dst);
        assert!(!into_rack, "the host has a route into the rack: {r}");
    }
}

/// Waits until `check` answers `Some`, polling every 10 ms, failing after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within {timeout:?}");
}
