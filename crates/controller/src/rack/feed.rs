//! The rack's event feed for people (the web UI's "events"): node, task, service, framework,
//! credential, rack-network and route events, newest last, in memory only and bounded. Not to be confused with a
//! framework's task updates, which `frameworks` keeps per controller epoch.

use std::collections::VecDeque;

use torc_api::{EventKind, EventLevel, RackEvent};
use torc_types::{NodeName, TaskId, UnixMillis};

/// Events kept; older ones are dropped.
const KEPT: usize = 500;

/// The feed: events numbered from 1 in this controller life.
#[derive(Debug, Default)]
pub struct Feed {
    events: VecDeque<RackEvent>,
    seq: u64,
    /// Nodes whose data dir's free space is below the rack's threshold, as last reported
    /// (in memory: after a restart a node still low is told again).
    disk_low: std::collections::BTreeSet<NodeName>,
}

impl Feed {
    /// Adds an event.
    pub fn record(
        &mut self,
        kind: EventKind,
        level: EventLevel,
        message: String,
        task: Option<&TaskId>,
        node: Option<&NodeName>,
        now: UnixMillis,
    ) {
        self.seq += 1;
        self.events.push_back(RackEvent {
            seq: self.seq,
            at: now,
            kind,
            level,
            message,
            task: task.cloned(),
            node: node.cloned(),
        });
        while self.events.len() > KEPT {
            self.events.pop_front();
        }
    }

    /// Notes a node's data dir disk as its report tells it: a warning when its free space
    /// falls below the threshold, a note when it rises back above; nothing while it stays.
    pub fn disk(&mut self, node: &NodeName, usage: &torc_api::DiskUsage, now: UnixMillis) {
        let (free, total) = (usage.free_bytes, usage.total_bytes);
        let percent = (free.saturating_mul(100)).checked_div(total).unwrap_or(0);
        if usage.low && self.disk_low.insert(node.clone()) {
            self.record(
                EventKind::Node,
                EventLevel::Warning,
                format!(
                    "node {node}'s disk is nearly full: {free} of {total} bytes free ({percent}%, \
                     below the rack's {}%) in {}",
                    usage.warning_percent, usage.path
                ),
                None,
                Some(node),
                now,
            );
        } else if !usage.low && self.disk_low.remove(node) {
            self.record(
                EventKind::Node,
                EventLevel::Info,
                format!(
                    "node {node}'s disk has room again: {free} of {total} bytes free ({percent}%)"
                ),
                None,
                Some(node),
                now,
            );
        }
    }

    /// Events after `after` (a `seq`), oldest first.
    pub fn after(&self, after: u64) -> Vec<RackEvent> {
        self.events
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }
}
