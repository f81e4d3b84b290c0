//! DNS over TCP: one tokio task per connection, length-prefixed queries answered in order.
//!
//! TCP answers are never rate-limited (a TCP client has proved its address, see `rrl.rs`), so
//! what must be bounded here is the connections themselves, lest idle or slow clients hold every
//! slot (slowloris):
//! - a global cap, [`DnsConfig::max_tcp_connections`](crate::DnsConfig), and a cap per source
//!   address (an IPv6 source counts per /64, what one host can pick from),
//!   [`DnsConfig::max_tcp_connections_per_source`](crate::DnsConfig). A client over its own cap
//!   is closed at once. At the global cap, a new client takes the slot of the connection that has
//!   waited longest on its client (reading a query or sending an answer); only when every
//!   connection is waiting on an upstream is the new one closed at once.
//! - deadlines, as bind9's `tcp-initial-timeout` and `tcp-idle-timeout` (both 30 s by default):
//!   the first query must arrive whole within `tcp_initial_timeout` of the accept, each later one
//!   within `tcp_idle_timeout` of the previous answer, and an answer must be taken by the client
//!   within `tcp_idle_timeout`. A deadline covers the whole message, so trickling bytes does not
//!   extend it.
//!
//! Invariants:
//! - every accepted connection holds exactly one slot, released when its task ends or when it is
//!   evicted (whichever comes first; the slot is released once);
//! - the per-source counts equal the slots held per source.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::JoinSet,
    time::timeout_at,
};
use tracing::{debug, warn};

use crate::{
    engine::{Outcome, Transport},
    shared::Shared,
    stats,
    wire::{self, KEY_LEN, KEY_PREFIX, Read, rcode},
};

/// Accepts connections until the listener fails for good (never, in practice): the caller stops
/// it by dropping this future. Connection tasks go into `connections` and end when `stop` turns
/// true.
pub(crate) async fn accept_loop(
    tcp: &TcpListener,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    connections: &mut JoinSet<()>,
) {
    let slots = Arc::new(Slots::new(
        shared.config.max_tcp_connections,
        shared.config.max_tcp_connections_per_source,
    ));
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: log, back off a little, go on.
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                debug!(%peer, ?refusal, "TCP connection closed on accept");
                continue;
            }
        };
        let shared = shared.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let conn = slot.conn.clone();
            tokio::select! {
                result = serve_connection(stream, peer, &shared, &conn) => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "TCP connection ended");
                    }
                }
                () = conn.evicted.notified() => {
                    debug!(%peer, "TCP connection evicted for a new client");
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
            drop(slot);
        });
    }
}

/// Why a connection was closed on accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its source already holds `max_tcp_connections_per_source`.
    SourceFull,
    /// All `max_tcp_connections` are taken, each by a connection waiting on an upstream.
    Full,
}

/// The TCP slots: who holds them, per source, and which to evict.
pub(crate) struct Slots {
    max: usize,
    per_source: usize,
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Arc<Conn>>,
    per_source: HashMap<IpAddr, usize>,
}

/// One connection's shared state.
pub(crate) struct Conn {
    id: u64,
    source: IpAddr,
    /// `Slots::epoch`, the zero of `progress_ms`.
    epoch: Instant,
    /// Milliseconds since `epoch` at the accept or the last query read whole. Of two
    /// connections with the same, the older (smaller `id`) has waited longer.
    progress_ms: AtomicU64,
    /// True while waiting on an upstream: not the client's fault, so not evicted.
    forwarding: AtomicBool,
    /// Told to close, its slot already given to another client.
    evicted: Notify,
}

/// A held slot, released when dropped.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.lock();
        release(&mut table, self.conn.id);
    }
}

/// Removes connection `id` and its count, if it still holds a slot.
fn release(table: &mut Table, id: u64) -> Option<Arc<Conn>> {
    let conn = table.conns.remove(&id)?;
    if let Some(count) = table.per_source.get_mut(&conn.source) {
        *count -= 1;
        if *count == 0 {
            table.per_source.remove(&conn.source);
        }
    }
    Some(conn)
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The key a source's connections are counted under: the address, an IPv6 one cut to its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl Slots {
    pub(crate) fn new(max: usize, per_source: usize) -> Self {
        Self {
            max: max.max(1),
            per_source: per_source.max(1),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection from `ip`, evicting the connection that waited longest on
    /// its client if all are taken.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let source = source_key(ip);
        let mut table = self.lock();
        if table.per_source.get(&source).copied().unwrap_or(0) >= self.per_source {
            return Err(Refusal::SourceFull);
        }
        if table.conns.len() >= self.max {
            let victim = table
                .conns
                .values()
                .filter(|c| !c.forwarding.load(Ordering::Relaxed))
                .min_by_key(|c| (c.progress_ms.load(Ordering::Relaxed), c.id))
                .map(|c| c.id)
                .ok_or(Refusal::Full)?;
            if let Some(evicted) = release(&mut table, victim) {
                evicted.evicted.notify_one();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let conn = Arc::new(Conn {
            id,
            source,
            epoch: self.epoch,
            progress_ms: AtomicU64::new(millis_since(self.epoch)),
            forwarding: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        table.conns.insert(id, conn.clone());
        *table.per_source.entry(source).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            conn,
        })
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let table = self.lock();
        (table.conns.len(), table.per_source.values().sum())
    }
}

/// Answers the queries of one connection until the client closes it or misses a deadline.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    conn: &Conn,
) -> io::Result<()> {
    let config = &shared.config;
    let mut packet = vec![0u8; 65_535];
    let mut out = Vec::new();
    let mut frame = Vec::new();
    let mut key = [0u8; KEY_LEN];
    let ra = shared.engine.recursion_available(peer.ip());
    let mut wait = config.tcp_initial_timeout;
    loop {
        let deadline = tokio::time::Instant::now() + wait;
        let len = match timeout_at(deadline, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            // Closed by the client, or silent for too long.
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        let packet = &mut packet[..len];
        timeout_at(deadline, stream.read_exact(packet))
            .await
            .map_err(|_| io::ErrorKind::TimedOut)??;
        wait = config.tcp_idle_timeout;
        conn.progress_ms
            .store(millis_since(conn.epoch), Ordering::Relaxed);
        let outcome = answer(packet, &mut key, ra, shared, conn, &mut out).await;
        shared.tcp_counters.count_tcp(outcome);
        if outcome == stats::Outcome::Dropped {
            continue;
        }
        frame.clear();
        frame.extend_from_slice(&(out.len() as u16).to_be_bytes());
        frame.extend_from_slice(&out);
        tokio::time::timeout(config.tcp_idle_timeout, stream.write_all(&frame))
            .await
            .map_err(|_| io::ErrorKind::TimedOut)??;
    }
}

/// Answers one TCP query into `out`: ANY in full, forwarding awaited in place.
async fn answer(
    packet: &[u8],
    key: &mut [u8; KEY_LEN],
    ra: bool,
    shared: &Shared,
    conn: &Conn,
    out: &mut Vec<u8>,
) -> stats::Outcome {
    let max = shared.engine.max_udp_payload;
    let (query, key_len) = match wire::read_query(packet, key, out) {
        Read::Drop => return stats::Outcome::Dropped,
        Read::Error => return stats::Outcome::of_answer(out, true),
        Read::Query { query, key_len } => (query, key_len),
    };
    let catalog = shared.catalog();
    let name = &key[KEY_PREFIX..key_len];
    let outcome = match shared
        .engine
        .answer(&catalog, &query, name, Transport::Tcp, ra, out)
    {
        Outcome::Forward => {
            let question_len = query.question_end() - wire::HEADER_LEN;
            conn.forwarding.store(true, Ordering::Relaxed);
            let answer = shared.forwarder.query(packet, question_len, true).await;
            conn.forwarding.store(false, Ordering::Relaxed);
            match answer {
                Some(answer) => *out = answer,
                None => wire::bare_answer(out, &query, rcode::SERVFAIL, false, true, max),
            }
            stats::Outcome::Forwarded
        }
        engine_outcome @ (Outcome::Cacheable { .. } | Outcome::Immediate) => {
            wire::patch_answer(out, &query, ra);
            stats::Outcome::of_answer(out, engine_outcome == Outcome::Immediate)
        }
    };
    if out.len() > usize::from(u16::MAX) {
        wire::truncate(out, &query, max);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_cap_then_global_cap_evicts_the_longest_waiting() {
        let slots = Arc::new(Slots::new(3, 2));
        let a1 = slots.admit(ip("10.0.0.1")).unwrap();
        let a2 = slots.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.admit(ip("10.0.0.1")).err(), Some(Refusal::SourceFull));
        // a1 made progress after a2: a2 has waited longest.
        a1.conn.progress_ms.store(1_000, Ordering::Relaxed);
        let b1 = slots.admit(ip("10.0.0.2")).unwrap();
        b1.conn.progress_ms.store(2_000, Ordering::Relaxed);
        let c1 = slots.admit(ip("10.0.0.3")).unwrap();
        c1.conn.progress_ms.store(3_000, Ordering::Relaxed);
        assert_eq!(slots.held(), (3, 3));
        // a2 was evicted: its slot went to c1, and a1's source may open one more, which evicts
        // the next longest waiting: a1.
        let a3 = slots.admit(ip("10.0.0.1"));
        assert!(a3.is_ok());
        assert_eq!(slots.held(), (3, 3));
        // Dropping an evicted slot releases nothing twice.
        drop(a2);
        drop(a1);
        assert_eq!(slots.held(), (3, 3));
        drop((b1, c1, a3));
        assert_eq!(slots.held(), (0, 0));
    }

    #[test]
    fn connections_waiting_on_upstreams_are_not_evicted() {
        let slots = Arc::new(Slots::new(1, 1));
        let a = slots.admit(ip("10.0.0.1")).unwrap();
        a.conn.forwarding.store(true, Ordering::Relaxed);
        assert_eq!(slots.admit(ip("10.0.0.2")).err(), Some(Refusal::Full));
        a.conn.forwarding.store(false, Ordering::Relaxed);
        assert!(slots.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let slots = Arc::new(Slots::new(10, 1));
        let _a = slots.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(
            slots.admit(ip("2001:db8::ffff")).err(),
            Some(Refusal::SourceFull)
        );
        assert!(slots.admit(ip("2001:db8:0:1::1")).is_ok());
        // An IPv4-mapped address is its IPv4 source.
        let _b = slots.admit(ip("10.0.0.9")).unwrap();
        assert_eq!(
            slots.admit(ip("::ffff:10.0.0.9")).err(),
            Some(Refusal::SourceFull)
        );
    }
}
