//! One UDP socket's serving thread: the I/O around the answer path of `udp.rs` (receive,
//! answer, send; hand forwarded queries to the runtime). `batch.rs` is its Linux loop
//! (`recvmmsg`/`sendmmsg`), `UdpWorker::serve_simple` the portable one; `server.rs` starts one
//! per socket.
//!
//! Invariant: every task a thread spawns for a forwarded query is in its `forwarded` set, which
//! `server.rs` takes back when the thread ends and shuts down (aborts and awaits) before `serve`
//! returns.

use std::{
    cell::RefCell,
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::task::JoinSet;
use tracing::debug;

use crate::{
    shared::Shared,
    stats::{self, Counters},
    udp::{Step, WorkerState},
    wire::{self, KEY_LEN, Parsed, Query, rcode},
};

/// One UDP socket's serving loop, on its own OS thread.
pub(crate) struct UdpWorker {
    pub(crate) socket: Arc<UdpSocket>,
    /// This thread's own counters: it is their only writer.
    pub(crate) counters: Arc<Counters>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) stop: Arc<AtomicBool>,
    /// The tasks of this thread's forwarded queries, not yet reaped. Only this thread touches
    /// it; `into_forwarded` hands it to `serve` when the thread ends.
    pub(crate) forwarded: RefCell<JoinSet<()>>,
}

impl UdpWorker {
    /// The thread's own state, for the catalog served now.
    pub(crate) fn new_state(&self) -> WorkerState {
        let catalog = self.shared.catalog();
        let slots = self.shared.cache_slots(&catalog);
        WorkerState::new(catalog, slots, &self.shared.config.rate_limit)
    }

    /// One datagram per system call; the portable loop (Linux uses `batch.rs`).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    pub(crate) fn serve_simple(&self, state: &mut WorkerState) {
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

    /// The forwarded queries still in flight, for `serve` to end when the thread has ended.
    pub(crate) fn into_forwarded(self) -> JoinSet<()> {
        self.forwarded.into_inner()
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
        if state.from_cache {
            self.counters.count_cache_hit_single_writer();
        }
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
        let mut forwarded = self.forwarded.borrow_mut();
        // Reap finished queries so the set holds at most those in flight.
        while forwarded.try_join_next().is_some() {}
        forwarded.spawn_on(
            async move {
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
            },
            &self.runtime,
        );
        stats::Outcome::Forwarded
    }
}
