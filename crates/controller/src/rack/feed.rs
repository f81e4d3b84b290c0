//! The rack's event feed for people (the web UI's "events"): node, task, service, framework and
//! credential events, newest last, in memory only and bounded. Not to be confused with a
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

    /// Events after `after` (a `seq`), oldest first.
    pub fn after(&self, after: u64) -> Vec<RackEvent> {
        self.events
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }
}
