//! Why a snapshot of the rack's names is refused when the server applies it. The snapshot itself
//! (`DnsSnapshot` and its entries, re-exported at the crate root) is a wire type of `torc-api`
//! (`torc_api::dns`), so that the controller, which builds it, depends on no server crate.
//!
//! A snapshot replaces everything the previous one said (CONVENTIONS habit 6): a node or service
//! absent from it is gone, so its names answer NXDOMAIN from then on. Receivers ignore a
//! snapshot of the epoch they serve whose generation is not newer than theirs, take one of a
//! higher epoch (a new leader's, a restarted controller's) whatever its generation, and refuse
//! one of a lower epoch (a deposed leader's) until the epoch served has been silent for a
//! grace (`torc_api::order::Follower`; CONVENTIONS habit 15), so retries, restarts and
//! failovers are harmless. Reading a snapshot checks its shape (unknown fields and record types are refused);
//! applying it (`catalog`) checks its names and records against the zone-file rules and the
//! server's zones, and a snapshot refused for any reason changes nothing.

use torc_api::dns::RecordKind;

use crate::zonefile::{BadName, LineProblem, cut};

/// Why a snapshot was rejected. Nothing changes when a snapshot is rejected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// A domain, node or service name that is not a name (the message cuts it if long).
    #[error(transparent)]
    Name(#[from] BadName),
    #[error("record {} {rtype}: {problem}", cut(name))]
    Record {
        name: String,
        rtype: RecordKind,
        /// Boxed: the largest part, and errors travel in every `Result`.
        problem: Box<LineProblem>,
    },
    #[error("{} is in none of the server's zones", cut(name))]
    OutOfZone { name: String },
    #[error("{} has a CNAME and other data", cut(name))]
    CnameAndOtherData { name: String },
}
