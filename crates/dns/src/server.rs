//! The serving loops and the handle that swaps in new snapshots.
//!
//! UDP: one blocking OS thread per socket (one socket per core, SO_REUSEPORT), each with its own
//! receive buffer, answer buffer, answer cache and rate limiter (`rrl.rs`), so the hot path takes
//! no lock and allocates nothing: read the header and question, look the key up, copy, patch,
//! charge the client's account, send.
//! TCP (`tcp.rs`): a tokio task per connection, length-prefixed messages answered in order,
//! connection caps and deadlines.
//! Forwarding runs as tokio tasks, so a slow upstream never stalls a UDP thread.
//!
//! Invariants:
//! - The catalog is swapped whole under a lock and an epoch counter is bumped after the swap; a
//!   UDP thread compares the epoch on every packet and empties its cache when it moved, so a new
//!   snapshot is answered from the very next packet on, and never mixed with the old one.
//! - `DnsHandle::apply` is serialized: of two concurrent snapshots the newer generation wins.
//! - Shutdown stops every thread and task `serve` started before `serve` returns.

use std::{
    future::Future,
    io,
    net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, oneshot, watch},
};
use tracing::debug;

use crate::{
    catalog::Catalog,
    cidr::Cidr,
    engine::Engine,
    forward::Forwarder,
    rrl::RateLimit,
    snapshot::{DnsSnapshot, SnapshotError},
    stats::{self, Counters, DnsStats},
    tcp,
    udp::{Step, WorkerState},
    wire::{self, KEY_LEN, Parsed, Query, rcode},
    zonefile::StaticZone,
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

/// Sockets bound for a server: UDP sockets sharing one port, and a TCP listener on it.
#[derive(Debug)]
pub struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: StdTcpListener,
}

impl Listeners {
    /// Binds `udp_sockets` UDP sockets (SO_REUSEPORT, so the kernel spreads clients over them)
    /// and a TCP listener, all on `addr`. With port 0 a free port is picked for both, and only
    /// one UDP socket is bound: the kernel could give one free port to two SO_REUSEPORT groups
    /// of the same user, and tests run in parallel.
    pub fn bind(addr: SocketAddr, udp_sockets: usize) -> io::Result<Self> {
        if addr.port() != 0 {
            let udp = (0..udp_sockets.max(1))
                .map(|_| bind_udp(addr, udp_sockets > 1))
                .collect::<io::Result<_>>()?;
            return Ok(Self {
                udp,
                tcp: bind_tcp(addr)?,
            });
        }
        // The free UDP port may be taken for TCP: try a few.
        let mut last_error = None;
        for _ in 0..32 {
            let udp = bind_udp(addr, false)?;
            let addr = udp.local_addr()?;
            match bind_tcp(addr) {
                Ok(tcp) => {
                    return Ok(Self {
                        udp: vec![udp],
                        tcp,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
    }

    /// The address served (the port is the same for UDP and TCP).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Bursts arrive faster than one thread drains them; a deep queue avoids drops.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<StdTcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

pub(crate) struct Shared {
    /// The zone files, kept to rebuild the catalog with each snapshot.
    static_zones: Vec<StaticZone>,
    catalog: RwLock<Arc<Catalog>>,
    /// Bumped after every swap of `catalog`.
    epoch: AtomicU64,
    apply_lock: Mutex<()>,
    pub(crate) engine: Engine,
    pub(crate) forwarder: Forwarder,
    forwards: Arc<Semaphore>,
    /// The configuration, its `static_zones` moved out to the field above.
    pub(crate) config: DnsConfig,
    /// One counter set per UDP thread ever started (each its only writer), kept after the
    /// thread ends so totals never go down.
    udp_counters: Mutex<Vec<Arc<Counters>>>,
    /// Shared by all TCP connections.
    pub(crate) tcp_counters: Counters,
}

impl Shared {
    /// Slots for a UDP thread's answer cache while `catalog` is served (see `cache_entries`).
    fn cache_slots(&self, catalog: &Catalog) -> usize {
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

/// The DNS server; consumed by [`DnsServer::serve`].
pub struct DnsServer {
    shared: Arc<Shared>,
}

/// Feeds snapshots to a running (or not yet running) server. Cheap to clone.
#[derive(Clone)]
pub struct DnsHandle {
    shared: Arc<Shared>,
}

impl DnsServer {
    /// A server answering the static zones until the first snapshot arrives.
    pub fn new(mut config: DnsConfig) -> (Self, DnsHandle) {
        let static_zones = std::mem::take(&mut config.static_zones);
        let engine = Engine {
            max_udp_payload: config.max_udp_payload.max(512),
            allow_recursion: config.allow_recursion.clone(),
            can_forward: !config.upstreams.is_empty(),
        };
        let shared = Arc::new(Shared {
            catalog: RwLock::new(Arc::new(Catalog::from_static(&static_zones))),
            static_zones,
            epoch: AtomicU64::new(0),
            apply_lock: Mutex::new(()),
            engine,
            forwarder: Forwarder::new(config.upstreams.clone(), config.upstream_timeout),
            forwards: Arc::new(Semaphore::new(config.max_forwards_in_flight)),
            config,
            udp_counters: Mutex::new(Vec::new()),
            tcp_counters: Counters::default(),
        });
        let handle = DnsHandle {
            shared: shared.clone(),
        };
        (Self { shared }, handle)
    }

    /// Serves until `shutdown` completes, then stops every thread and task it started.
    /// Must be called inside a tokio runtime (TCP and forwarding run on it).
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let runtime = tokio::runtime::Handle::current();
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = Vec::new();
        let mut done = Vec::new();
        for (i, socket) in listeners.udp.into_iter().enumerate() {
            socket.set_nonblocking(false)?;
            // A backstop only: shutdown wakes the threads at once (see below).
            socket.set_read_timeout(Some(Duration::from_millis(500)))?;
            let socket = Arc::new(socket);
            sockets.push(socket.clone());
            let (tx, rx) = oneshot::channel::<()>();
            let counters = Arc::new(Counters::default());
            self.shared
                .udp_counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(counters.clone());
            let worker = UdpWorker {
                socket,
                counters,
                shared: self.shared.clone(),
                runtime: runtime.clone(),
                stop: stop.clone(),
            };
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || {
                    worker.run();
                    drop(tx);
                })?;
            done.push(rx);
        }
        listeners.tcp.set_nonblocking(true)?;
        let tcp = TcpListener::from_std(listeners.tcp)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();

        let accept = tcp::accept_loop(&tcp, &self.shared, &stop_rx, &mut connections);
        tokio::select! {
            () = shutdown => {}
            () = accept => {}
        }

        stop.store(true, Ordering::SeqCst);
        for socket in &sockets {
            // On Linux, shutting down a UDP socket wakes a thread blocked in recv on it (the
            // call itself reports ENOTCONN, which is expected).
            let _ = SockRef::from(socket.as_ref()).shutdown(std::net::Shutdown::Read);
        }
        let _ = stop_tx.send(true);
        while connections.join_next().await.is_some() {}
        for rx in done {
            let _ = rx.await;
        }
        Ok(())
    }
}

impl DnsHandle {
    /// Applies a snapshot. `Ok(true)`: it is served from now on. `Ok(false)`: ignored, its
    /// generation is not newer than the current one. `Err`: rejected, nothing changed.
    pub fn apply(&self, snapshot: &DnsSnapshot) -> Result<bool, SnapshotError> {
        let shared = &self.shared;
        let _serial = shared
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if snapshot.generation <= shared.catalog().generation() {
            return Ok(false);
        }
        let catalog = Arc::new(Catalog::build(&shared.static_zones, snapshot)?);
        *shared
            .catalog
            .write()
            .unwrap_or_else(PoisonError::into_inner) = catalog;
        shared.epoch.fetch_add(1, Ordering::Release);
        Ok(true)
    }

    /// The generation served: that of the last applied snapshot, 0 before any.
    pub fn generation(&self) -> u64 {
        self.shared.catalog().generation()
    }

    /// Query counts since the server was created, over UDP and TCP. Cheap enough to poll (it
    /// sums one small set of counters per UDP thread, taking no lock the serving threads take);
    /// see [`DnsStats`] for what each field counts.
    pub fn stats(&self) -> DnsStats {
        let mut total = DnsStats::default();
        for counters in self
            .shared
            .udp_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            counters.add_to(&mut total);
        }
        self.shared.tcp_counters.add_to(&mut total);
        total
    }
}

/// One UDP socket's serving loop, on its own OS thread.
pub(crate) struct UdpWorker {
    socket: Arc<UdpSocket>,
    /// This thread's own counters: it is their only writer.
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
}

impl UdpWorker {
    fn run(self) {
        let catalog = self.shared.catalog();
        let slots = self.shared.cache_slots(&catalog);
        let mut state = WorkerState::new(catalog, slots, &self.shared.config.rate_limit);
        #[cfg(target_os = "linux")]
        {
            crate::batch::serve(&self, &mut state);
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.serve_simple(&mut state);
        }
    }

    /// One datagram per system call; the portable loop.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    fn serve_simple(&self, state: &mut WorkerState) {
        let mut packet = vec![0u8; 65_535];
        let mut out = Vec::with_capacity(65_535);
        loop {
            let received = self.socket.recv_from(&mut packet);
            if self.stopping() {
                return;
            }
            match received {
                Ok((len, peer)) => {
                    state.tick();
                    if self.handle(&packet[..len], peer, state, &mut out)
                        && let Err(e) = self.socket.send_to(&out, peer)
                    {
                        debug!(%peer, error = %e, "UDP send failed");
                    }
                }
                Err(e) => self.receive_error(&e),
            }
        }
    }

    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn receive_error(&self, e: &io::Error) {
        // Timeouts are the shutdown backstop; ECONNREFUSED comes from an ICMP error for an
        // earlier answer. Neither is fatal.
        if !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
        ) {
            debug!(error = %e, "UDP receive failed");
        }
    }

    /// Counts a datagram received and dropped before `handle` (too long, unknown sender).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn count_dropped(&self) {
        self.counters.count_single_writer(stats::Outcome::Dropped);
    }

    /// Answers one datagram into `out`; false when nothing is to be sent now.
    pub(crate) fn handle(
        &self,
        packet: &[u8],
        peer: SocketAddr,
        state: &mut WorkerState,
        out: &mut Vec<u8>,
    ) -> bool {
        let outcome = self.answer(packet, peer, state, out);
        self.counters.count_single_writer(outcome);
        !matches!(
            outcome,
            stats::Outcome::Forwarded | stats::Outcome::Dropped | stats::Outcome::RateLimited
        )
    }

    /// Answers one datagram into `out`, unless the outcome is `Forwarded`, `Dropped` or
    /// `RateLimited`.
    fn answer(
        &self,
        packet: &[u8],
        peer: SocketAddr,
        state: &mut WorkerState,
        out: &mut Vec<u8>,
    ) -> stats::Outcome {
        let shared = &*self.shared;
        let now = shared.epoch.load(Ordering::Acquire);
        if now != state.epoch {
            state.epoch = now;
            state.catalog = shared.catalog();
            state.cache.reset(shared.cache_slots(&state.catalog));
        }
        match state.answer(&shared.engine, packet, peer, out) {
            Step::Done(outcome) => outcome,
            Step::Forward(query) => self.forward(packet, &query, peer),
        }
    }

    /// Hands a query to an upstream; `Dropped` if too many are out already.
    fn forward(&self, packet: &[u8], query: &Query<'_>, peer: SocketAddr) -> stats::Outcome {
        let Ok(permit) = self.shared.forwards.clone().try_acquire_owned() else {
            // TODO-scalability: dropped, not queued; the client retries.
            debug!(%peer, "too many forwarded queries in flight; dropped");
            return stats::Outcome::Dropped;
        };
        let packet = packet.to_vec();
        let question_len = query.question_end() - wire::HEADER_LEN;
        let shared = self.shared.clone();
        let socket = self.socket.clone();
        self.runtime.spawn(async move {
            let _permit = permit;
            let max = shared.engine.max_udp_payload;
            let mut key = [0u8; KEY_LEN];
            let Parsed::Query { query, .. } = wire::parse_query(&packet, &mut key) else {
                return;
            };
            let mut out = Vec::new();
            match shared.forwarder.query(&packet, question_len, false).await {
                Some(answer) => out = answer,
                None => wire::bare_answer(&mut out, &query, rcode::SERVFAIL, false, true, max),
            }
            if out.len() > query.udp_limit(max) {
                wire::truncate(&mut out, &query, max);
            }
            let _ = socket.send_to(&out, peer);
        });
        stats::Outcome::Forwarded
    }
}
