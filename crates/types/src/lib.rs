//! Domain types shared by every torc crate: typed names, task specs, resources, states.
//!
//! This crate is vocabulary only: no I/O, no async, no policy. Every name that crosses a
//! process boundary is a newtype that validates on construction and on deserialisation, so a
//! `NodeName` or `TaskId` held anywhere in torc is known to be well formed.

mod names;
mod resources;
mod task;

pub use names::{FrameworkName, NameError, NodeName, ServiceName, TaskId};
pub use resources::{PortRange, PortRangeError, Resources};
pub use task::{Constraints, TaskSpec, TaskSpecError, TaskState, expand_placeholders};

/// Milliseconds since the Unix epoch: the one clock unit on the wire and on disk.
pub type UnixMillis = u64;

/// The framework that owns tasks launched ad hoc and system services: the built-in scheduler.
pub const BUILTIN_FRAMEWORK: &str = "torc";

/// Wall-clock now, in `UnixMillis`. Callers that need determinism take time as an input instead.
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 64 random bits: OS-seeded hasher keys over a process-wide counter, the time and the pid.
/// Enough for ids, epochs and tokens that must not repeat or be guessed by a neighbour; no
/// dependency on a random-number crate. Every call gives a new value.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = KEYS
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod random_tests {
    #[test]
    fn values_differ() {
        let v: std::collections::BTreeSet<u64> = (0..1000).map(|_| super::random_u64()).collect();
        assert_eq!(v.len(), 1000);
    }
}
