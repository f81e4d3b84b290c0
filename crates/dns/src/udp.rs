//! A UDP thread's answer path, without the I/O: read the query, look its key up in the thread's
//! answer cache (or have the engine answer it and cache that), patch in the per-query details,
//! charge the client's rate-limit account, cut to the client's size. `udp_worker.rs` feeds it
//! datagrams; the fuzz target (`fuzzing.rs`) feeds it bytes.
//!
//! Invariants: the state is the thread's own (no lock, no allocation once warm); an answer is
//! cut to the client's UDP limit before it is sent; a query that needs an upstream is handed back
//! to the caller, unanswered.

use std::{net::SocketAddr, sync::Arc};

use crate::{
    cache::AnswerCache,
    catalog::Catalog,
    engine::{Engine, Outcome, Transport},
    rrl::{Kind, Limiter, RateLimit, Verdict},
    stats,
    wire::{self, KEY_LEN, KEY_PREFIX, Query, Read},
};

/// What became of a datagram.
pub(crate) enum Step<'p> {
    /// Counted as this; `out` holds an answer to send unless it is `Dropped` or `RateLimited`.
    Done(stats::Outcome),
    /// Not ours and the client may recurse: forward it.
    Forward(Query<'p>),
}

/// A UDP thread's own state: buffers, the answer cache and the rate limiter, never shared.
pub(crate) struct WorkerState {
    key: [u8; KEY_LEN],
    pub(crate) cache: AnswerCache,
    /// The server's epoch `catalog` and `cache` belong to; `u64::MAX` until the first packet.
    pub(crate) epoch: u64,
    pub(crate) catalog: Arc<Catalog>,
    /// `None` when rate limiting is off.
    limiter: Option<Limiter>,
    /// The limiter's clock, read once per batch of datagrams ([`WorkerState::tick`]).
    now_ms: u32,
    /// Whether the last [`WorkerState::answer`] came from the answer cache.
    pub(crate) from_cache: bool,
}

impl WorkerState {
    pub(crate) fn new(catalog: Arc<Catalog>, cache_slots: usize, rate_limit: &RateLimit) -> Self {
        Self {
            key: [0u8; KEY_LEN],
            cache: AnswerCache::new(cache_slots),
            epoch: u64::MAX,
            catalog,
            limiter: Limiter::new(rate_limit),
            now_ms: 0,
            from_cache: false,
        }
    }

    /// Reads the clock for the datagrams just received (nothing to do when limiting is off).
    pub(crate) fn tick(&mut self) {
        if let Some(limiter) = &mut self.limiter {
            self.now_ms = limiter.now();
        }
    }

    /// Answers one datagram from `peer` into `out`.
    pub(crate) fn answer<'p>(
        &mut self,
        engine: &Engine,
        packet: &'p [u8],
        peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Step<'p> {
        self.from_cache = false;
        let max = engine.max_udp_payload;
        let (query, key_len) = match wire::read_query(packet, &mut self.key, out) {
            Read::Drop => return Step::Done(stats::Outcome::Dropped),
            Read::Error => return Step::Done(self.rate_limit(peer, out, None, 0, true, max)),
            Read::Query { query, key_len } => (query, key_len),
        };
        let key = &self.key[..key_len];
        let ra = engine.recursion_available(peer.ip());
        let mut immediate = false;
        let mut zone_at = 0;
        let hash = self.cache.hash(key);
        if let Some((answer, cached_zone_at)) = self.cache.get(hash, key) {
            out.clear();
            out.extend_from_slice(answer);
            zone_at = cached_zone_at;
            self.from_cache = true;
        } else {
            let name = &key[KEY_PREFIX..];
            match engine.answer(&self.catalog, &query, name, Transport::Udp, ra, out) {
                Outcome::Cacheable { zone_at: at } => {
                    self.cache.insert(hash, key, out, at);
                    zone_at = at;
                }
                Outcome::Immediate => immediate = true,
                Outcome::Forward => return Step::Forward(query),
            }
        }
        wire::patch_answer(out, &query, ra);
        let outcome = self.rate_limit(peer, out, Some((&query, key_len)), zone_at, immediate, max);
        if out.len() > query.udp_limit(max) {
            wire::truncate(out, &query, max);
        }
        Step::Done(outcome)
    }

    /// Charges the answer in `out` to its client's account (see `rrl.rs`) and returns the
    /// outcome to count: the answer's own, `Slipped` after cutting it to a truncated answer, or
    /// `RateLimited` when it must not be sent. `query` is `None` for a header-only error answer;
    /// `immediate` as for [`stats::Outcome::of_answer`].
    fn rate_limit(
        &mut self,
        peer: SocketAddr,
        out: &mut Vec<u8>,
        query: Option<(&Query<'_>, usize)>,
        zone_at: u8,
        immediate: bool,
        max: u16,
    ) -> stats::Outcome {
        let outcome = stats::Outcome::of_answer(out, immediate);
        let Some(limiter) = &mut self.limiter else {
            return outcome;
        };
        let (kind, name) = match (outcome, query) {
            (stats::Outcome::Answered, Some((_, key_len))) => {
                let ancount = out
                    .get(6..8)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                if ancount > 0 {
                    // Type, class and name.
                    (Kind::Answer, self.key.get(1..key_len).unwrap_or_default())
                } else {
                    (Kind::NoData, zone(&self.key, zone_at, key_len))
                }
            }
            (stats::Outcome::NxDomain, Some((_, key_len))) => {
                (Kind::NxDomain, zone(&self.key, zone_at, key_len))
            }
            _ => (Kind::Error, &[][..]),
        };
        match limiter.check(self.now_ms, peer.ip(), kind, name) {
            Verdict::Send => outcome,
            Verdict::Drop => stats::Outcome::RateLimited,
            Verdict::Slip => {
                if let (Some((query, _)), Kind::Answer | Kind::NoData | Kind::NxDomain) =
                    (query, kind)
                {
                    wire::truncate(out, query, max);
                }
                stats::Outcome::Slipped
            }
        }
    }
}

/// The zone's name in a cache key: from `zone_at` in the name to the end.
fn zone(key: &[u8; KEY_LEN], zone_at: u8, key_len: usize) -> &[u8] {
    key.get(KEY_PREFIX + usize::from(zone_at)..key_len)
        .unwrap_or_default()
}
