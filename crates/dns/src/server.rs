//! The server: starts the serving loops (a `udp_worker` thread per UDP socket, the TCP accept
//! loop of `tcp.rs`) and stops them, and the handle that swaps in new snapshots.
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
//! - `DnsHandle::apply` is serialized and orders snapshots by `(epoch, generation)` as
//!   `torc_api::order::Follower` says: of two snapshots of one epoch the newer generation wins;
//!   a higher epoch (a new leader, a restarted controller) replaces any; a lower one (a deposed
//!   leader's late answer) is refused for `LOWER_EPOCH_GRACE` after the last snapshot of the
//!   epoch served, then taken (a new store). A server that has applied nothing takes anything.
//! - Shutdown stops every thread and task `serve` started before `serve` returns: the UDP
//!   threads, the TCP connections, and the forwarded UDP queries still waiting on an upstream
//!   (aborted, unanswered). `serve` failing to start stops what it had started.

use std::{
    cell::RefCell,
    future::Future,
    io,
    net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, oneshot, watch},
    task::JoinSet,
};
use torc_api::dns::DnsSnapshot;
use torc_api::order::{Follower, Verdict};

use crate::{
    catalog::Catalog,
    engine::Engine,
    forward::Forwarder,
    shared::{DnsConfig, Shared},
    snapshot::SnapshotError,
    stats::{Counters, DnsStats},
    tcp,
    udp_worker::UdpWorker,
};

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
            follower: Mutex::new(Follower::default()),
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
    /// Must be called inside a tokio runtime (TCP and forwarding run on it). An `Err` (a socket
    /// that cannot be set up, a thread that cannot be started) comes before serving, with
    /// whatever it had started already stopped.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let runtime = tokio::runtime::Handle::current();
        let mut sockets = Vec::new();
        for socket in listeners.udp {
            socket.set_nonblocking(false)?;
            // A backstop only: shutdown wakes the threads at once (see `UdpThreads::stop`).
            socket.set_read_timeout(Some(Duration::from_millis(500)))?;
            sockets.push(Arc::new(socket));
        }
        listeners.tcp.set_nonblocking(true)?;
        let tcp = TcpListener::from_std(listeners.tcp)?;

        let mut threads = UdpThreads {
            stop: Arc::new(AtomicBool::new(false)),
            sockets: Vec::new(),
            done: Vec::new(),
        };
        for (i, socket) in sockets.into_iter().enumerate() {
            if let Err(e) = self.start_udp_thread(i, socket, &runtime, &mut threads) {
                threads.stop().await;
                return Err(e);
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();

        let accept = tcp::accept_loop(&tcp, &self.shared, &stop_rx, &mut connections);
        tokio::select! {
            () = shutdown => {}
            () = accept => {}
        }

        let _ = stop_tx.send(true);
        while connections.join_next().await.is_some() {}
        threads.stop().await;
        Ok(())
    }

    /// Starts the serving thread of one UDP socket.
    fn start_udp_thread(
        &self,
        i: usize,
        socket: Arc<UdpSocket>,
        runtime: &tokio::runtime::Handle,
        threads: &mut UdpThreads,
    ) -> io::Result<()> {
        let (tx, rx) = oneshot::channel::<JoinSet<()>>();
        let counters = Arc::new(Counters::default());
        let worker = UdpWorker {
            socket: socket.clone(),
            counters: counters.clone(),
            shared: self.shared.clone(),
            runtime: runtime.clone(),
            stop: threads.stop.clone(),
            forwarded: RefCell::new(JoinSet::new()),
        };
        std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || {
                let mut state = worker.new_state();
                #[cfg(target_os = "linux")]
                crate::batch::serve(&worker, &mut state);
                #[cfg(not(target_os = "linux"))]
                worker.serve_simple(&mut state);
                let _ = tx.send(worker.into_forwarded());
            })?;
        self.shared
            .udp_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(counters);
        threads.sockets.push(socket);
        threads.done.push(rx);
        Ok(())
    }
}

/// The UDP threads `serve` started, to stop them.
struct UdpThreads {
    /// Read by every thread after each wake-up.
    stop: Arc<AtomicBool>,
    sockets: Vec<Arc<UdpSocket>>,
    /// One per thread: its forwarded queries still in flight, sent when it ends.
    done: Vec<oneshot::Receiver<JoinSet<()>>>,
}

impl UdpThreads {
    /// Stops every thread, then the forwarded queries each leaves in flight (their clients get
    /// no answer and retry elsewhere), and waits for all of them.
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for socket in &self.sockets {
            // On Linux, shutting down a UDP socket wakes a thread blocked in recv on it (the
            // call itself reports ENOTCONN, which is expected).
            let _ = SockRef::from(socket.as_ref()).shutdown(std::net::Shutdown::Read);
        }
        for rx in self.done {
            // A thread that panicked dropped its set, which aborted its tasks.
            if let Ok(mut forwarded) = rx.await {
                forwarded.shutdown().await;
            }
        }
    }
}

impl DnsHandle {
    /// Applies a snapshot arrived now: see [`DnsHandle::apply_at`].
    pub fn apply(&self, snapshot: &DnsSnapshot) -> Result<Verdict, SnapshotError> {
        self.apply_at(snapshot, Instant::now())
    }

    /// Applies a snapshot that arrived at `now`. `Ok(verdict)`: how it was ordered against the
    /// one served ([`Verdict`]); one that [`Verdict::takes`] is served from now on, any other
    /// changed nothing (a refused one is taken once the epoch served has been silent for the
    /// grace). `Err`: rejected, nothing changed.
    pub fn apply_at(&self, snapshot: &DnsSnapshot, now: Instant) -> Result<Verdict, SnapshotError> {
        let shared = &self.shared;
        let mut follower = shared
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let verdict = follower.receive(snapshot.stamp(), now);
        if !verdict.takes() {
            return Ok(verdict);
        }
        let catalog = Arc::new(Catalog::build(&shared.static_zones, snapshot)?);
        *shared
            .catalog
            .write()
            .unwrap_or_else(PoisonError::into_inner) = catalog;
        shared.epoch.fetch_add(1, Ordering::Release);
        follower.took(snapshot.stamp(), now);
        Ok(verdict)
    }

    /// The generation served: that of the last applied snapshot, 0 before any.
    pub fn generation(&self) -> u64 {
        self.shared.catalog().generation()
    }

    /// The epoch of the last applied snapshot (the controller life that numbered it), 0
    /// before any.
    pub fn snapshot_epoch(&self) -> u64 {
        self.shared.catalog().epoch()
    }

    /// This server's metrics in Prometheus' text format: [`DnsStats`] as counters
    /// (`torc_dns_queries_total{transport}`, `torc_dns_responses_total{rcode}`,
    /// `torc_dns_forwarded_total`, `torc_dns_dropped_total`,
    /// `torc_dns_rrl_limited_responses_total{action}`, `torc_dns_cache_hits_total`) and the
    /// names served (`torc_dns_snapshot_generation`, `torc_dns_snapshot_epoch`).
    pub fn prometheus(&self) -> String {
        use torc_prom::Kind::{Counter, Gauge};
        let s = self.stats();
        let mut text = torc_prom::Text::new();
        text.family(
            "torc_dns_queries_total",
            Counter,
            "DNS messages received, well-formed or not.",
        )
        .sample(
            &[("transport", "udp")],
            s.queries.saturating_sub(s.tcp_queries),
        )
        .sample(&[("transport", "tcp")], s.tcp_queries);
        text.family(
            "torc_dns_responses_total",
            Counter,
            "Answers sent from this server's own zones by response code (other: NOTIMP, SERVFAIL, BADVERS).",
        )
        .sample(&[("rcode", "NOERROR")], s.answered)
        .sample(&[("rcode", "NXDOMAIN")], s.nxdomain)
        .sample(&[("rcode", "REFUSED")], s.refused)
        .sample(&[("rcode", "FORMERR")], s.formerr)
        .sample(&[("rcode", "other")], s.other);
        text.family(
            "torc_dns_forwarded_total",
            Counter,
            "Queries handed to an upstream resolver.",
        )
        .sample(&[], s.forwarded);
        text.family(
            "torc_dns_dropped_total",
            Counter,
            "Messages never answered: not a query, or a forward over max_forwards_in_flight.",
        )
        .sample(&[], s.dropped);
        text.family(
            "torc_dns_rrl_limited_responses_total",
            Counter,
            "UDP answers over the response-rate limit: dropped, or slipped (sent truncated).",
        )
        .sample(&[("action", "dropped")], s.rate_limited)
        .sample(&[("action", "slipped")], s.slipped);
        text.family(
            "torc_dns_cache_hits_total",
            Counter,
            "UDP answers copied from the answer cache rather than looked up and encoded.",
        )
        .sample(&[], s.cache_hits);
        text.family(
            "torc_dns_snapshot_generation",
            Gauge,
            "Generation of the rack's names served (0 before the first snapshot).",
        )
        .sample(&[], self.generation());
        text.family(
            "torc_dns_snapshot_epoch",
            Gauge,
            "Controller epoch that numbered the names served (0 before the first snapshot).",
        )
        .sample(&[], self.snapshot_epoch());
        text.into_string()
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
