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
