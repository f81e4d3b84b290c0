//! The agent's standing with the controller, counted as a lease on the agent's own clock.
//!
//! The controller declares a node inactive once it has heard nothing from it for the node
//! timeout (`stateclean.timeout_in_seconds`), and then loses the node's tasks and replaces them
//! elsewhere. An agent cut off by a partition, or frozen, cannot hear that. What it can count:
//! the controller received its last acknowledged report (or registration) after the agent sent
//! it, so it cannot have declared the node inactive before the node timeout has passed since
//! that send. Until then (less a margin, [`Lease::held`]) a desired set the agent reads is one
//! its node still holds; past it, an answer may have waited in a socket through the partition
//! or the freeze and name tasks the rack has lost and started elsewhere since, so the agent
//! starts nothing from it until a report is acknowledged again (the controller then either
//! hears the node in time, or answers that it must register again: with its full task list,
//! after which its surplus is stopped).
//!
//! Pure: the time is an argument.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub(crate) struct Lease {
    /// The node timeout, from the registration's answer.
    timeout: Duration,
    /// When the last report (or registration) the controller acknowledged was sent.
    sent: Option<Instant>,
}

impl Lease {
    /// A registration sent at `sent` was accepted, under a node timeout of `timeout`.
    pub(crate) fn registered(&mut self, sent: Instant, timeout: Duration) {
        self.timeout = timeout;
        self.sent = Some(sent);
    }

    /// A report sent at `sent` was acknowledged.
    pub(crate) fn acknowledged(&mut self, sent: Instant) {
        self.sent = Some(self.sent.map_or(sent, |s| s.max(sent)));
    }

    /// Whether the controller still counts the node active for certain at `now`: the last
    /// acknowledged send is younger than the node timeout less a quarter of it (one heartbeat
    /// interval: a report in flight, a controller's step between two checks).
    pub(crate) fn held(&self, now: Instant) -> bool {
        let Some(sent) = self.sent else {
            return false;
        };
        now.saturating_duration_since(sent) < self.timeout - self.timeout / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_for_three_quarters_of_the_node_timeout_after_the_last_acknowledged_send() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut lease = Lease::default();
        assert!(!lease.held(t0), "not before the first registration");
        lease.registered(t0, s(4));
        assert!(lease.held(t0 + s(2)));
        assert!(!lease.held(t0 + s(3)), "past 3/4 of the timeout");
        lease.acknowledged(t0 + s(2));
        assert!(lease.held(t0 + s(4)));
        // A late answer to an older report does not shorten it.
        lease.acknowledged(t0 + s(1));
        assert!(lease.held(t0 + s(4)));
        assert!(!lease.held(t0 + s(5)));
        // A new registration starts over (its timeout may have changed).
        lease.registered(t0 + s(10), s(8));
        assert!(lease.held(t0 + s(15)));
        assert!(!lease.held(t0 + s(16)));
    }
}
