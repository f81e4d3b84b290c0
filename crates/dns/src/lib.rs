//! The rack's DNS server: authoritative for the node domain (e.g. `homer.ave`), its reverse
//! zones and the service domain (`service.torc`), forwarding everything else for trusted
//! clients. It replaces the original's bind9 + Consul pair.
//!
//! What it is: a library with one server type. The rack's names arrive as whole
//! (epoch, generation)-numbered [`DnsSnapshot`]s, applied through a [`DnsHandle`] (the `torc dns`
//! role long-polls the controller's `/api/v1/dns` for them); operators add static zones in
//! RFC 1035 zone-file syntax ([`StaticZone`]). [`DnsServer::serve`] takes bound sockets
//! ([`Listeners`]) and a shutdown future. [`DnsHandle::stats`] reads the query counters
//! ([`DnsStats`]: queries received over UDP and TCP, and how many were answered, NXDOMAIN,
//! REFUSED, FORMERR, forwarded, rate-limited, ...); they cost each UDP thread a relaxed load
//! and store on counters of its own, so polling them (e.g. once a second from the scheduler) is
//! free for the serving path.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use torc_dns::{DnsConfig, DnsServer, Listeners};
//! let (server, handle) = DnsServer::new(DnsConfig::default());
//! let listeners = Listeners::bind("127.0.0.1:5353".parse().unwrap(), 1)?;
//! tokio::spawn(server.serve(listeners, std::future::pending()));
//! // ... later:
//! let stats = handle.stats();
//! println!("{} queries, {} answered, {} NXDOMAIN", stats.queries, stats.answered, stats.nxdomain);
//! # Ok(())
//! # }
//! ```
//!
//! Wildcards (RFC 4592, e.g. `*.dyn.homer.ave` in a zone file or a snapshot record) answer names
//! their zone does not hold as bind9 does: synthesized with the name asked for as owner, NODATA
//! for types the wildcard lacks, wildcard CNAMEs chased, blocked by any name that exists (empty
//! non-terminals included); searched for only on the NXDOMAIN path (`catalog.rs`).
//!
//! What it is not: a recursive resolver or cache (forwarded queries go to the configured
//! upstreams), a secondary or primary for zone transfers, a DNSSEC signer, or a dynamic-update
//! target.
//!
//! Hardened against abuse from the network: ANY is answered over UDP with one RRset (RFC 8482;
//! in full over TCP, see `engine.rs`); UDP answers are rate-limited per client prefix and
//! question like bind9's RRL, on by default ([`RateLimit`], `rrl.rs`); TCP connections are
//! capped per source and in all, with deadlines for the first and every later query (`tcp.rs`).
//!
//! Invariants the crate keeps:
//! - bytes from the network or a zone file never cause a panic, and no input is read by
//!   recursion (names, parentheses and CNAME chains are walked in bounded loops): a packet whose
//!   header cannot be read is dropped, any other malformed query gets FORMERR, an unknown opcode
//!   NOTIMP, a bad zone file an error naming its line (`tests/fuzz.rs` checks this on stable);
//! - a UDP answer is never larger than its client accepts, ANY over UDP returns one RRset, and
//!   UDP answers beyond a client's rate are dropped or slipped (TC), never sent whole; TCP,
//!   whose source cannot be forged, gets everything. The rate's exceptions: forwarded answers
//!   (only for clients allowed recursion) are not limited, a rate of 0 turns limiting off, and
//!   each UDP thread keeps its own accounts, so a client spread over the threads by its source
//!   ports gets up to threads × rate (`rrl.rs`);
//! - a name absent from the latest snapshot answers NXDOMAIN (the original never removed stale
//!   names), unless a wildcard of its zone covers it; a snapshot is visible from the next packet on, whole or not at all;
//! - snapshots are ordered by `(epoch, generation)` ([`Verdict`]): a deposed leader's late
//!   snapshot (a lower epoch) is refused for [`LOWER_EPOCH_GRACE`] after the last one of the
//!   epoch served, so it cannot bring back names the new leader removed;
//! - `hickory-proto` encodes every answer with records (`engine.rs`); the serving loops, the
//!   query reader, the answer cache and the bare answers (header and question: REFUSED,
//!   FORMERR, NOTIMP, SERVFAIL, BADVERS, truncated answers) are ours (see `wire.rs` and
//!   `server.rs`).
//!
//! Code map: `wire` reads queries and patches answers; `catalog` holds the zones and resolves
//! names (`key`: names as it keys them); `engine` decides an answer; `cache` keeps a UDP
//! thread's encoded answers; `rrl` is a UDP thread's rate limiter; `udp` is a UDP thread's
//! answer path (parse, cache, engine, patch, limit), `udp_worker` the thread's I/O around it
//! (`batch`: its Linux system calls) and `tcp` the TCP connections; `forward` asks upstreams;
//! `shared` is the configuration and the state all loops share; `server` starts the loops and
//! swaps snapshots in; `stats` counts what they did; `snapshot` and `zonefile` are the two
//! inputs; `cidr` is the recursion allow-list; `fuzzing` holds the fuzz targets' checks (not
//! API).

#[cfg(target_os = "linux")]
mod batch;
mod cache;
mod catalog;
mod cidr;
mod engine;
mod forward;
/// Not API: entry points for the fuzz targets of `tests/fuzz.rs`.
#[doc(hidden)]
pub mod fuzzing;
mod key;
mod rrl;
mod server;
mod shared;
mod snapshot;
mod stats;
mod tcp;
mod udp;
mod udp_worker;
mod wire;
mod zonefile;

pub use cidr::{Cidr, CidrError};
pub use rrl::RateLimit;
pub use server::{DnsHandle, DnsServer, Listeners};
pub use shared::DnsConfig;
pub use snapshot::SnapshotError;
pub use stats::DnsStats;
/// The snapshot the server applies: a wire type of `torc-api`, re-exported as this crate's input.
pub use torc_api::dns::{
    DnsSnapshot, InstanceEntry, NodeEntry, RecordEntry, RecordKind, ServiceEntry, UnknownRecordKind,
};
/// How [`DnsHandle::apply`] ordered a snapshot against the one served (`torc_api::order`).
pub use torc_api::order::{LOWER_EPOCH_GRACE, Verdict};
pub use zonefile::{BadName, LineProblem, NameFault, StaticZone, ZoneError, ZoneProblem};
