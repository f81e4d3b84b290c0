//! The server's configuration, and the state every serving loop of one server shares (the
//! UDP threads of `udp_worker.rs`, the TCP tasks of `tcp.rs`, the handle of `server.rs`).
//!
//! Invariant: the catalog is only ever replaced whole (`DnsHandle::apply`), and `epoch` is
//! bumped after each swap.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError, RwLock, atomic::AtomicU64},
    time::Duration,
};

use tokio::sync::Semaphore;

use crate::{
    catalog::Catalog, cidr::Cidr, engine::Engine, forward::Forwarder, rrl::RateLimit,
    stats::Counters, zonefile::StaticZone,
};

/// How the server behaves. `Default` gives a server with no static zones, no upstreams and
/// recursion for loopback clients only.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Zones loaded from zone files; they stay the same across snapshots.
    pub static_zones: Vec<StaticZone>,
    /// Resolvers asked for names outside our zones, in order. None: such names are REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer.
    pub upstream_timeout: Duration,
    /// Clients whose queries for outside names are forwarded; others get REFUSED.
    pub allow_recursion: Vec<Cidr>,
    /// The largest UDP answer sent, whatever the client offers (DNS flag day 2020: 1232).
    pub max_udp_payload: u16,
    /// A TCP connection whose first query has not arrived whole this long after the accept is
    /// closed (bind9's `tcp-initial-timeout`).
    pub tcp_initial_timeout: Duration,
    /// A TCP connection whose next query has not arrived whole this long after the previous
    /// answer, or that does not take an answer for this long, is closed (bind9's
    /// `tcp-idle-timeout`).
    pub tcp_idle_timeout: Duration,
    /// TCP connections at once. At the cap, a new client takes the slot of the connection that
    /// has waited longest on its client (`tcp.rs`).
    pub max_tcp_connections: usize,
    /// TCP connections at once from one source address (an IPv6 /64); more are closed at once.
    pub max_tcp_connections_per_source: usize,
    /// Answers cached per UDP thread, at least: the cache is sized from the catalog, four
    /// slots per name (so every name's common questions stay cached), up to 262,144 slots.
    /// When full, a new answer replaces one that was not read recently (see `cache.rs`).
    pub cache_entries: usize,
    /// Forwarded queries in flight at once; more are dropped (clients retry).
    pub max_forwards_in_flight: usize,
    /// Response-rate limiting of UDP answers (`rrl.rs`); on by default.
    pub rate_limit: RateLimit,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            static_zones: Vec::new(),
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            allow_recursion: Cidr::loopback(),
            max_udp_payload: 1232,
            tcp_initial_timeout: Duration::from_secs(30),
            tcp_idle_timeout: Duration::from_secs(30),
            max_tcp_connections: 512,
            max_tcp_connections_per_source: 32,
            cache_entries: 10_000,
            max_forwards_in_flight: 1024,
            rate_limit: RateLimit::default(),
        }
    }
}

/// What every serving thread and task of one server shares: the catalog (swapped whole),
/// the engine, the forwarder, the configuration and the counters.
pub(crate) struct Shared {
    /// The zone files, kept to rebuild the catalog with each snapshot.
    pub(crate) static_zones: Vec<StaticZone>,
    pub(crate) catalog: RwLock<Arc<Catalog>>,
    /// Bumped after every swap of `catalog`.
    pub(crate) epoch: AtomicU64,
    /// Serializes `DnsHandle::apply`, and holds where the server stands in the snapshots.
    pub(crate) follower: Mutex<torc_api::order::Follower>,
    pub(crate) engine: Engine,
    pub(crate) forwarder: Forwarder,
    pub(crate) forwards: Arc<Semaphore>,
    /// The configuration, its `static_zones` moved out to the field above.
    pub(crate) config: DnsConfig,
    /// One counter set per UDP thread ever started (each its only writer), kept after the
    /// thread ends so totals never go down.
    pub(crate) udp_counters: Mutex<Vec<Arc<Counters>>>,
    /// Shared by all TCP connections.
    pub(crate) tcp_counters: Counters,
}

impl Shared {
    /// Slots for a UDP thread's answer cache while `catalog` is served (see `cache_entries`).
    pub(crate) fn cache_slots(&self, catalog: &Catalog) -> usize {
        self.config
            .cache_entries
            .max(catalog.name_count().saturating_mul(4))
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
