//! Long polls (an agent's desired set, the DNS snapshot, the switch's routes, a framework's
//! updates, a state-store watch) wait at most this long, whatever the caller asks.

use std::time::Duration;

/// Longest a long poll waits.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(30);
