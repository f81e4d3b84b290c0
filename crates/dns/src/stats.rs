//! Query counters: what the server received and how it answered, read with
//! [`DnsHandle::stats`](crate::DnsHandle::stats).
//!
//! Each UDP thread owns one [`Counters`] and is its only writer, so a count is a relaxed load
//! and store on a cache line no other thread writes: no locked instruction and no cache-line
//! traffic on the hot path (a `fetch_add` would be a `lock xadd` per query). TCP connections
//! share one more set and use `fetch_add`, which is cheap next to a TCP round trip. A reader sums
//! every set; the sets of stopped threads stay registered, so the totals never go down.
//!
//! Invariant: every message received is counted in `queries` and in exactly one outcome, so
//! `queries == answered + nxdomain + refused + formerr + forwarded + other + dropped +
//! rate_limited + slipped` whenever the server is idle (a reader racing a serving thread may see
//! a query whose outcome is not counted yet).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::rcode;

/// Counts of queries since the server was created, summed over UDP and TCP. Read with
/// [`DnsHandle::stats`](crate::DnsHandle::stats); the fields only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsStats {
    /// Every message received: UDP datagrams and TCP-framed messages, well-formed or not.
    pub queries: u64,
    /// Answered with NOERROR from our own zones, with records or without (NODATA).
    pub answered: u64,
    /// Answered NXDOMAIN: the name is in one of our zones but does not exist.
    pub nxdomain: u64,
    /// Answered REFUSED: outside our zones and not forwarded for this client, or a zone
    /// transfer, or a class other than IN.
    pub refused: u64,
    /// Answered FORMERR: the query could not be read.
    pub formerr: u64,
    /// Handed to an upstream resolver; its answer (or our SERVFAIL when none answers) is not
    /// counted again in the fields above.
    pub forwarded: u64,
    /// Answered with any other code: NOTIMP (an opcode other than QUERY), SERVFAIL, BADVERS.
    pub other: u64,
    /// Received and never answered: not a query (too short for a header, or QR set), or a
    /// query to forward while `max_forwards_in_flight` were already out.
    pub dropped: u64,
    /// UDP answers not sent because their client's account was over its rate limit
    /// ([`RateLimit`](crate::RateLimit)).
    pub rate_limited: u64,
    /// UDP answers over the rate limit sent *slipped* instead: truncated (TC, no records) so
    /// the client retries over TCP, or, for errors, as they were. Not counted in the fields
    /// above.
    pub slipped: u64,
    /// Of `queries`, those received over TCP.
    pub tcp_queries: u64,
    /// Of the UDP answers, those copied from the thread's answer cache (`cache.rs`) rather
    /// than looked up and encoded.
    pub cache_hits: u64,
}

/// The fate of one received message. (Public only for the fuzz checks' [`crate::fuzzing::Violation`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    NxDomain,
    Refused,
    FormErr,
    Forwarded,
    Other,
    Dropped,
    RateLimited,
    Slipped,
}

impl Outcome {
    /// The outcome of sending `answer`, an answer we wrote ourselves (not an upstream's).
    /// `immediate` is true for answers the engine made for one query only: among those a NOERROR
    /// header means BADVERS, whose code is in the OPT record.
    pub(crate) fn of_answer(answer: &[u8], immediate: bool) -> Self {
        let Some(&flags_lo) = answer.get(3) else {
            return Self::Other;
        };
        match flags_lo & 0x0f {
            rcode::NOERROR if immediate => Self::Other,
            rcode::NOERROR => Self::Answered,
            rcode::NXDOMAIN => Self::NxDomain,
            rcode::REFUSED => Self::Refused,
            rcode::FORMERR => Self::FormErr,
            _ => Self::Other,
        }
    }
}

/// One set of counters, alone on its cache lines (128 bytes: adjacent-line prefetch pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    queries: AtomicU64,
    answered: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    formerr: AtomicU64,
    forwarded: AtomicU64,
    other: AtomicU64,
    dropped: AtomicU64,
    rate_limited: AtomicU64,
    slipped: AtomicU64,
    tcp_queries: AtomicU64,
    cache_hits: AtomicU64,
}

impl Counters {
    fn field(&self, outcome: Outcome) -> &AtomicU64 {
        match outcome {
            Outcome::Answered => &self.answered,
            Outcome::NxDomain => &self.nxdomain,
            Outcome::Refused => &self.refused,
            Outcome::FormErr => &self.formerr,
            Outcome::Forwarded => &self.forwarded,
            Outcome::Other => &self.other,
            Outcome::Dropped => &self.dropped,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::Slipped => &self.slipped,
        }
    }

    /// Counts one message and its outcome. Only for a set with a single writer (a UDP thread's
    /// own): a relaxed load and store, which would lose counts if two threads wrote.
    pub(crate) fn count_single_writer(&self, outcome: Outcome) {
        fn bump(c: &AtomicU64) {
            c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        bump(&self.queries);
        bump(self.field(outcome));
    }

    /// Counts one answer taken from the answer cache. Single writer, as
    /// [`Counters::count_single_writer`].
    pub(crate) fn count_cache_hit_single_writer(&self) {
        let c = &self.cache_hits;
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Counts one TCP message and its outcome; any number of writers.
    pub(crate) fn count_tcp(&self, outcome: Outcome) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.tcp_queries.fetch_add(1, Ordering::Relaxed);
        self.field(outcome).fetch_add(1, Ordering::Relaxed);
    }

    /// Adds this set to `total`.
    pub(crate) fn add_to(&self, total: &mut DnsStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        total.queries += get(&self.queries);
        total.answered += get(&self.answered);
        total.nxdomain += get(&self.nxdomain);
        total.refused += get(&self.refused);
        total.formerr += get(&self.formerr);
        total.forwarded += get(&self.forwarded);
        total.other += get(&self.other);
        total.dropped += get(&self.dropped);
        total.rate_limited += get(&self.rate_limited);
        total.slipped += get(&self.slipped);
        total.tcp_queries += get(&self.tcp_queries);
        total.cache_hits += get(&self.cache_hits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_from_rcode() {
        let answer = |rcode: u8| [0, 0, 0x84, rcode];
        assert_eq!(Outcome::of_answer(&answer(0), false), Outcome::Answered);
        assert_eq!(Outcome::of_answer(&answer(0), true), Outcome::Other);
        assert_eq!(Outcome::of_answer(&answer(3), false), Outcome::NxDomain);
        assert_eq!(Outcome::of_answer(&answer(0x85), true), Outcome::Refused);
        assert_eq!(Outcome::of_answer(&answer(1), true), Outcome::FormErr);
        assert_eq!(Outcome::of_answer(&answer(4), true), Outcome::Other);
        assert_eq!(Outcome::of_answer(&answer(2), true), Outcome::Other);
        assert_eq!(Outcome::of_answer(&[0, 0], false), Outcome::Other);
    }

    #[test]
    fn counts_add_up() {
        let udp = Counters::default();
        let tcp = Counters::default();
        udp.count_single_writer(Outcome::Answered);
        udp.count_single_writer(Outcome::Answered);
        udp.count_single_writer(Outcome::Dropped);
        udp.count_single_writer(Outcome::RateLimited);
        udp.count_single_writer(Outcome::Slipped);
        tcp.count_tcp(Outcome::NxDomain);
        udp.count_cache_hit_single_writer();
        let mut total = DnsStats::default();
        udp.add_to(&mut total);
        tcp.add_to(&mut total);
        assert_eq!(
            total,
            DnsStats {
                queries: 6,
                answered: 2,
                nxdomain: 1,
                dropped: 1,
                rate_limited: 1,
                slipped: 1,
                tcp_queries: 1,
                cache_hits: 1,
                ..DnsStats::default()
            }
        );
    }
}
