//! The controller's clock: the `now` the rack's rules measure silences, timeouts and expiries
//! with, and the time it stamps on what it records.
//!
//! It is the wall clock as read when the process first asks, advanced by the boot clock
//! (`CLOCK_BOOTTIME`: never stepped, and counting while the host sleeps). A step of the
//! system's wall clock (NTP correcting a clock that was off, an operator's `date -s`, a virtual
//! machine resumed) moves neither: a step forward does not make every node look silent for the
//! size of the step, which expired them all at once and lost their tasks; a step back does not
//! keep a node that stops reporting from expiring until the wall clock has caught up; a token
//! or a session lasts the time it was given. Between steps the two clocks run at one rate
//! (NTP slews the boot clock with the wall clock).
//!
//! What it costs: after a step, the times the controller records (events, task transitions,
//! expiry dates) differ from the system clock by the step until the controller restarts.
//! TODO-correctness: stamp records with the wall clock and measure silences on the boot clock
//! alone (the rules take one `now` today). Two controllers of a pair each read the wall clock
//! at their own start: a takeover starts every node's silence afresh (`rack::nodes`), so a
//! step between their starts expires no node.

use std::sync::OnceLock;
use std::time::Duration;

use torc_types::UnixMillis;

/// Milliseconds since the Unix epoch on the controller's clock (see the module's doc).
pub(crate) fn now_millis() -> UnixMillis {
    static START: OnceLock<(UnixMillis, Duration)> = OnceLock::new();
    let (wall, boot) = *START.get_or_init(|| (torc_types::now_millis(), crate::seat::boot_now()));
    wall + crate::seat::boot_now().saturating_sub(boot).as_millis() as UnixMillis
}
