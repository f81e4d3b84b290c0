//! Response-rate limiting (RRL) of UDP answers, after bind9's `rate-limit` (the ARM's "Response
//! Rate Limiting"): it keeps the server from being used to reflect and amplify a flood at a
//! forged source address.
//!
//! Semantics (bind9's, with its defaults where they make sense):
//! - An *account* is a (client prefix, response kind, name) triple. The prefix is the source
//!   address cut to [`RateLimit::ipv4_prefix_len`] (24) or [`RateLimit::ipv6_prefix_len`] (56)
//!   bits. The kinds and their names: a positive answer, per question name, type and class; NODATA
//!   and NXDOMAIN, per zone (so random names under one zone share one account, as in bind9); any
//!   other rcode (REFUSED, FORMERR, SERVFAIL, NOTIMP, BADVERS), one account per prefix.
//! - Each account earns `responses_per_second` credits a second (accrued to the millisecond
//!   here, per second in bind9), holds at most that many, and owes at most `window` seconds'
//!   worth. An answer costs one credit; while the balance is negative the answer is not sent.
//!   An account untouched for `window` seconds starts afresh.
//! - Of the answers not sent, the first and then every `slip`-th is sent *slipped*: cut to its
//!   question with TC=1 and no records (NOERROR and NXDOMAIN; an error answer, already that small,
//!   is sent as is), so a real client whose address is being forged retries over TCP and gets its
//!   answer; the others are dropped. `slip` 0 drops all, 1 slips all.
//! - Only UDP is limited: a TCP client has proved its address. Forwarded answers are not limited
//!   either: they go only to clients allowed recursion. The counters are in `DnsStats`
//!   (`rate_limited`, `slipped`).
//!
//! Not supported: bind9's `qps-scale`, `all-per-second`, `exempt-clients`, `log-only`, separate
//! per-kind rates (each kind uses `responses_per_second`, bind9's default for them), and DNS
//! cookies (bind9 exempts clients with a valid server cookie).
//!
//! The default is on, at 200 answers a second per account: bind9 ships it off (0) and NSD on at
//! 200. 200 a second is what one /24 would have to ask for *one name and type* before it is
//! limited: far above what a rack's clients send (a caching resolver asks once per TTL; the
//! original's loads send at most ~100 a second for their hottest name), and the next second
//! brings 200 more. When a client does exceed it, half its excess is slipped and so still
//! answered over TCP. What the bookkeeping costs is measured by `bench/dns.sh` (RRL on vs off):
//! about 15 ns an answer (3–4% of the server's CPU per answer on loopback, where the kernel's
//! share dominates), no change in QPS.
//!
//! Shape: one [`Limiter`] per UDP thread, never shared, so the hot path takes no lock and
//! allocates nothing. Its table is a fixed array of [`SETS`] sets of [`WAYS`] accounts, one
//! 64-byte cache line per set; an account's seeded hash picks its set, and a new account takes
//! the set's empty slot or the one untouched longest. Memory is bounded (256 KiB per thread)
//! whatever the traffic; a flood of distinct accounts can evict an account early, which only
//! forgives its debt.
//!
//! Invariants:
//! - `check` never allocates and touches one set;
//! - a slot whose tag is 0 is empty; a used slot's tag has its low bit set;
//! - balances stay within `[-window * rate, rate]`.
//!
//! TODO-security: the kernel spreads a client's datagrams over the SO_REUSEPORT sockets by its
//! source port, and each thread keeps its own accounts, so a client using many ports can get up
//! to `threads × rate` answers a second for one account. Steering by source prefix (a reuseport
//! BPF program) would make the limit exact.

use std::{net::IpAddr, time::Instant};

use crate::cache::{hash_bytes, random_seed};

/// Sets in a thread's table.
pub(crate) const SETS: usize = 4096;
/// Accounts per set: 4 × 16 bytes = one cache line.
pub(crate) const WAYS: usize = 4;

/// Rate-limit settings; `responses_per_second` 0 turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Answers a second per account (bind9's `responses-per-second`); 0: no limit.
    pub responses_per_second: u32,
    /// Seconds of debt an account may run up, and after which an idle account starts afresh
    /// (bind9's `window`, 1 to 3600; values outside are clamped).
    pub window_secs: u32,
    /// Every `slip`-th answer not sent is sent truncated instead (bind9's `slip`, 0 to 10;
    /// larger values are clamped).
    pub slip: u32,
    /// Leading bits of an IPv4 source that make one client (bind9's `ipv4-prefix-length`).
    pub ipv4_prefix_len: u8,
    /// Leading bits of an IPv6 source that make one client (bind9's `ipv6-prefix-length`).
    pub ipv6_prefix_len: u8,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            responses_per_second: 200,
            window_secs: 15,
            slip: 2,
            ipv4_prefix_len: 24,
            ipv6_prefix_len: 56,
        }
    }
}

impl RateLimit {
    /// No limiting.
    pub const OFF: Self = Self {
        responses_per_second: 0,
        window_secs: 15,
        slip: 2,
        ipv4_prefix_len: 24,
        ipv6_prefix_len: 56,
    };
}

/// What kind of answer an account counts (bind9's response types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// NOERROR with records: per name, type and class.
    Answer = 1,
    /// NOERROR without records: per zone.
    NoData = 2,
    /// NXDOMAIN: per zone.
    NxDomain = 3,
    /// Any other rcode: per client.
    Error = 4,
}

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    /// Send it truncated (or as is, if it is an error).
    Slip,
    Drop,
}

/// One account, 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Account {
    /// 0: empty; else the upper half of the account's hash, low bit set.
    tag: u32,
    /// Credits; negative while limited.
    balance: i32,
    /// The limiter's clock (ms) up to which credits were counted.
    at: u32,
    /// Limited answers since the last slip (bind9's `slip_cnt`).
    slips: u32,
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Set([Account; WAYS]);

/// A UDP thread's rate limiter.
pub(crate) struct Limiter {
    sets: Box<[Set]>,
    rate: i64,
    window_ms: u32,
    /// The lowest balance: `-window * rate`.
    floor: i64,
    slip: u32,
    v4_mask: u32,
    v6_mask: u128,
    seed: u64,
    /// The clock: milliseconds since `start`, as u32 from `base` on (see [`Limiter::now`]).
    start: Instant,
    base: u64,
}

/// The clock restarts (and the table is emptied) before its u32 milliseconds would wrap.
const CLOCK_SPAN_MS: u64 = 1 << 31;

impl Limiter {
    /// A limiter for `config`; `None` when limiting is off.
    pub(crate) fn new(config: &RateLimit) -> Option<Self> {
        if config.responses_per_second == 0 {
            return None;
        }
        let rate = i64::from(config.responses_per_second.min(1_000_000));
        let window = config.window_secs.clamp(1, 3600);
        let v4 = u32::from(config.ipv4_prefix_len.min(32));
        let v6 = u32::from(config.ipv6_prefix_len.min(128));
        Some(Self {
            sets: vec![Set::default(); SETS].into_boxed_slice(),
            rate,
            window_ms: window * 1000,
            floor: (-i64::from(window) * rate).max(-i64::from(i32::MAX)),
            slip: config.slip.min(10),
            v4_mask: u32::MAX.checked_shl(32 - v4).unwrap_or(0),
            v6_mask: u128::MAX.checked_shl(128 - v6).unwrap_or(0),
            seed: random_seed(),
            start: Instant::now(),
            base: 0,
        })
    }

    /// The limiter's clock in milliseconds; read once per batch of datagrams. Before it would
    /// wrap (every ~24 days) it restarts from 0 and forgets every account (forgiving at most
    /// `window` seconds of debt), so ages are never misread.
    pub(crate) fn now(&mut self) -> u32 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.clock(elapsed)
    }

    /// [`Limiter::now`] for `elapsed` milliseconds since the limiter was made.
    fn clock(&mut self, elapsed: u64) -> u32 {
        if elapsed.saturating_sub(self.base) >= CLOCK_SPAN_MS {
            self.base = elapsed;
            self.sets.fill(Set::default());
        }
        elapsed.saturating_sub(self.base) as u32
    }

    /// Charges one answer of `kind` for `name` (the bytes that identify the account: question
    /// type, class and name for an answer, the zone's name for NXDOMAIN and NODATA, nothing for
    /// errors) to `client`'s account at time `now` (from [`Limiter::now`]).
    pub(crate) fn check(&mut self, now: u32, client: IpAddr, kind: Kind, name: &[u8]) -> Verdict {
        let prefix = match client {
            IpAddr::V4(ip) => u64::from(u32::from(ip) & self.v4_mask),
            IpAddr::V6(ip) => {
                let bits = u128::from(ip) & self.v6_mask;
                ((bits >> 64) as u64 ^ (bits as u64).rotate_left(17)) ^ (1 << 63)
            }
        };
        let seed = self.seed ^ prefix.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ kind as u64;
        let hash = hash_bytes(seed, name);
        let tag = (hash >> 32) as u32 | 1;
        let set = &mut self.sets[hash as usize & (SETS - 1)].0;

        let slot = match set.iter().position(|a| a.tag == tag) {
            Some(found) => found,
            None => {
                // An empty slot, else the one untouched longest.
                let victim = set
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, a)| {
                        if a.tag == 0 {
                            u64::MAX
                        } else {
                            u64::from(now.wrapping_sub(a.at))
                        }
                    })
                    .map_or(0, |(i, _)| i);
                set[victim] = Account {
                    tag,
                    balance: self.rate as i32,
                    at: now,
                    slips: 0,
                };
                victim
            }
        };
        let account = &mut set[slot];
        debit(
            account,
            now,
            self.rate,
            self.window_ms,
            self.floor,
            self.slip,
        )
    }
}

/// Credits what `account` earned since it was last counted, then charges one answer.
fn debit(
    account: &mut Account,
    now: u32,
    rate: i64,
    window_ms: u32,
    floor: i64,
    slip: u32,
) -> Verdict {
    let age = now.wrapping_sub(account.at);
    let mut balance = i64::from(account.balance);
    if age >= window_ms {
        balance = rate;
        account.at = now;
        account.slips = 0;
    } else {
        // Whole credits only; the time they took is consumed and the rest carried over.
        let credit = rate * i64::from(age) / 1000;
        if credit > 0 {
            balance += credit;
            if balance >= rate {
                balance = rate;
                account.at = now;
                account.slips = 0;
            } else {
                account.at = account.at.wrapping_add((credit * 1000 / rate) as u32);
            }
        }
    }
    balance -= 1;
    if balance >= 0 {
        account.balance = balance as i32;
        return Verdict::Send;
    }
    account.balance = balance.max(floor) as i32;
    // bind9's rule: the first limited answer slips, then every `slip`-th.
    if slip == 0 {
        return Verdict::Drop;
    }
    let first = account.slips == 0;
    account.slips += 1;
    if account.slips >= slip {
        account.slips = 0;
    }
    if first { Verdict::Slip } else { Verdict::Drop }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, window: u32, slip: u32) -> Limiter {
        Limiter::new(&RateLimit {
            responses_per_second: rate,
            window_secs: window,
            slip,
            ..RateLimit::default()
        })
        .unwrap()
    }

    const A: &[u8] = b"\x00\x01\x00\x01\x03www\x05homer\x03ave\x00";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn off_is_none() {
        assert!(Limiter::new(&RateLimit::OFF).is_none());
        assert!(Limiter::new(&RateLimit::default()).is_some());
    }

    #[test]
    fn a_burst_of_rate_then_slip_and_drop_alternate() {
        let mut l = limiter(5, 15, 2);
        let c = ip("192.0.2.7");
        let verdicts: Vec<_> = (0..11).map(|_| l.check(0, c, Kind::Answer, A)).collect();
        use Verdict::*;
        assert_eq!(
            verdicts,
            [
                Send, Send, Send, Send, Send, Slip, Drop, Slip, Drop, Slip, Drop
            ]
        );
    }

    #[test]
    fn slip_settings() {
        let c = ip("192.0.2.7");
        let run = |slip| {
            let mut l = limiter(1, 15, slip);
            l.check(0, c, Kind::Answer, A);
            (0..6)
                .map(|_| l.check(0, c, Kind::Answer, A))
                .collect::<Vec<_>>()
        };
        use Verdict::*;
        assert_eq!(run(0), [Drop; 6]);
        assert_eq!(run(1), [Slip; 6]);
        assert_eq!(run(3), [Slip, Drop, Drop, Slip, Drop, Drop]);
        assert_eq!(run(99), run(10), "slip is clamped to 10");
    }

    #[test]
    fn credits_accrue_per_millisecond_and_cap_at_the_rate() {
        let mut l = limiter(10, 15, 0);
        let c = ip("192.0.2.7");
        for _ in 0..10 {
            assert_eq!(l.check(0, c, Kind::Answer, A), Verdict::Send);
        }
        assert_eq!(l.check(0, c, Kind::Answer, A), Verdict::Drop);
        // 100 ms earn one credit, which pays back the debt of the dropped answer: still limited.
        assert_eq!(l.check(100, c, Kind::Answer, A), Verdict::Drop);
        // 50 ms more: half a credit, nothing yet.
        assert_eq!(l.check(150, c, Kind::Answer, A), Verdict::Drop);
        // After a second more it has credit again, but never more than the rate.
        let sent = (0..20)
            .filter(|_| l.check(5_000, c, Kind::Answer, A) == Verdict::Send)
            .count();
        assert_eq!(sent, 10);
    }

    #[test]
    fn debt_is_bounded_by_the_window_and_forgotten_after_it() {
        let mut l = limiter(10, 2, 0);
        let c = ip("192.0.2.7");
        // A long flood at t=0: the debt stops at -window * rate = -20.
        for _ in 0..10_000 {
            l.check(0, c, Kind::Answer, A);
        }
        // 1.5 s earn 15 credits: -20 + 15 - 1 < 0, still limited.
        assert_eq!(l.check(1_500, c, Kind::Answer, A), Verdict::Drop);
        // A window after the last answer, the account starts afresh.
        assert_eq!(l.check(3_600, c, Kind::Answer, A), Verdict::Send);
    }

    #[test]
    fn accounts_are_per_prefix_kind_and_name() {
        let mut l = limiter(1, 15, 0);
        let send = |l: &mut Limiter, c: &str, kind, name: &[u8]| {
            l.check(0, ip(c), kind, name) == Verdict::Send
        };
        assert!(send(&mut l, "192.0.2.7", Kind::Answer, A));
        // Same /24: the same client.
        assert!(!send(&mut l, "192.0.2.200", Kind::Answer, A));
        // Another /24, another kind, another name: other accounts.
        assert!(send(&mut l, "192.0.3.7", Kind::Answer, A));
        assert!(send(&mut l, "192.0.2.7", Kind::NxDomain, A));
        assert!(send(
            &mut l,
            "192.0.2.7",
            Kind::Answer,
            b"\x00\x1c\x00\x01\x00"
        ));
        // IPv6: the first 56 bits.
        assert!(send(&mut l, "2001:db8:0:100::1", Kind::Answer, A));
        assert!(!send(&mut l, "2001:db8:0:1ff::2", Kind::Answer, A));
        assert!(send(&mut l, "2001:db8:0:200::1", Kind::Answer, A));
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_accounts() {
        let mut l = limiter(1, 15, 0);
        let hot = ip("198.51.100.1");
        assert_eq!(l.check(0, hot, Kind::Answer, A), Verdict::Send);
        assert_eq!(l.check(0, hot, Kind::Answer, A), Verdict::Drop);
        // A million other clients, each once.
        for i in 1..1_000_000u32 {
            let c = IpAddr::V4((i << 8).into());
            assert_eq!(l.check(1, c, Kind::Answer, A), Verdict::Send);
        }
        assert_eq!(l.sets.len(), SETS);
        // The hot account may have been evicted (its debt forgiven); either way one answer a
        // second keeps flowing to it.
        let sent = (0..5)
            .filter(|_| l.check(2_000, hot, Kind::Answer, A) == Verdict::Send)
            .count();
        assert_eq!(sent, 1);
    }

    #[test]
    fn the_clock_restarts_before_it_wraps() {
        let mut l = limiter(1, 15, 0);
        assert!(l.now() < 60_000);
        assert_eq!(l.clock(CLOCK_SPAN_MS - 1), (CLOCK_SPAN_MS - 1) as u32);
        l.check(0, ip("192.0.2.1"), Kind::Error, b"");
        // After almost 25 days the clock starts again from 0, with an empty table.
        assert_eq!(l.clock(CLOCK_SPAN_MS + 5), 0);
        assert!(l.sets.iter().all(|s| s.0.iter().all(|a| a.tag == 0)));
        assert_eq!(l.clock(CLOCK_SPAN_MS + 7), 2);
    }
}
