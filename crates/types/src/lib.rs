//! Domain types shared by the crates that speak of the rack (the stores kv and tsdb and the
//! leaves stand without them): typed names, task specs (processes and containers: image
//! references, volumes, the `docker run` options torc maps), resources, states.
//!
//! This crate is vocabulary only: no async, no policy, and no I/O but reading the wall clock
//! ([`now_millis`]) and the OS's random source ([`random_bytes`], [`random_u64`]). Every name
//! that crosses a process boundary is a newtype that validates on construction and on
//! deserialisation, so a `NodeName` or `TaskId` held anywhere in torc is known to be well
//! formed. A closed set of words (a `NodeType`) is an enum made by `words!`, refused with the
//! allowed words.

#[macro_use]
mod words;
mod container;
pub mod logs;
mod names;
mod net;
mod node_type;
mod resources;
mod task;

pub use node_type::NodeType;
pub use words::UnknownValue;

pub use container::{
    CAPABILITIES, Capability, ContainerOptions, ContainerSpec, ContainerSpecError, DATA_DIR_VAR,
    DEFAULT_REGISTRY, DEFAULT_TAG, Device, ExtraHost, ImageRef, ImageRefError, ImageRefProblem,
    NetworkMode, OptionError, ParameterError, Parameters, RefusedReason, RegistryHost,
    RegistryHostError, Signal, Tmpfs, Ulimit, UnknownNetwork, ValueProblem, Volume, VolumeError,
};
pub use logs::{ByteSize, LogCap, LogLimitError, LogLimits};
pub use names::{FrameworkName, NameError, NameProblem, NodeName, SecretName, ServiceName, TaskId};
pub use net::{Ipv4Block, Ipv4BlockError, TaskNetwork, UnknownTaskNetwork};
pub use resources::{PortRange, PortRangeError, Resources};
pub use task::{
    ApiAccess, Constraints, TaskCredentials, TaskSpec, TaskSpecError, TaskState, UnknownTaskState,
    expand_placeholders,
};

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

/// 64 random bits from the OS's CSPRNG (`getrandom`): for ids and epochs. Tokens and keys use
/// [`random_bytes`] for more.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    u64::from_le_bytes(b)
}

/// Fills `buf` from the OS's CSPRNG (`getrandom`). The kernel's generator does not fail once
/// seeded, and Linux seeds it before user space runs; a failure here means the process cannot
/// make a safe secret at all, so it panics rather than hand out a guessable one.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS's random number generator failed");
}

#[cfg(test)]
mod random_tests {
    #[test]
    fn values_differ() {
        let v: std::collections::BTreeSet<u64> = (0..1000).map(|_| super::random_u64()).collect();
        assert_eq!(v.len(), 1000);
    }
}
