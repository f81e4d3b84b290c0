//! The fault-injection suite (issue 19): real processes of a real rack, broken the way the world
//! breaks them, and the invariants torc's docs state checked afterwards, counted, not sampled:
//! every acknowledged write or launch is still there, no task runs twice, names are not stale
//! for longer than the docs say, and the role recovers by itself.
//!
//! Each fault has its own module:
//! - `partition`: an agent cut off from the controller in network namespaces (netfilter drop),
//!   shorter and longer than `stateclean.timeout_in_seconds`, then healed;
//! - `freeze`: a role stopped (SIGSTOP) past its timeouts, then resumed;
//! - `kill`: `kill -9` under load (controller during concurrent launches, kv during concurrent
//!   puts, tsdb during ingest, an agent during launches);
//! - `disk`: data dirs on a small tmpfs that fills up, then frees;
//! - `clock`: the controller's clock jumped forward and back (libfaketime);
//! - `torn`: log and table files truncated at every record boundary and at random offsets;
//! - `restart`: `torc up` killed with SIGKILL and started again on the same `--data-dir`.
//!
//! Every fault prints one row of figures ([`report::Figures`]); `scripts/faults` runs the long
//! variants (`TORC_FAULTS_LONG=1`) and prints the table the README carries. The short variants
//! run in CI, one at a time (nextest group `faults`, `.config/nextest.toml`): they kill, freeze
//! and load processes, and their recovery times mean little when they starve each other.

#[path = "faults/clock.rs"]
mod clock;
#[path = "faults/disk.rs"]
mod disk;
#[path = "faults/freeze.rs"]
mod freeze;
#[path = "faults/kill.rs"]
mod kill;
#[path = "faults/partition.rs"]
mod partition;
#[path = "faults/report.rs"]
mod report;
#[path = "faults/restart.rs"]
mod restart;
#[path = "faults/torn.rs"]
mod torn;

/// The `torc` binary under test.
pub const TORC: &str = env!("CARGO_BIN_EXE_torc");
