//! Whether this controller may act, and what it must do next: the role state machine of the
//! highly available controller (docs/design/ha-controller.md §5, §6.3, §9). Pure: time and
//! every outcome of the store are inputs, so its cases (`tests/leadership/*.cases`) replay
//! any history, including a process frozen past its lease (a jump of the clock).
//!
//! What it is not: the election or the keepalives (`torc-kv-client` runs them), nor the
//! controller's reaction (`controller` maps each [`Action`] to building or dropping its rack,
//! starting or aborting the reconciler, answering or ending long polls).
//!
//! The rule it keeps: **it acts only while `now < acting_until`**, where `acting_until` is the
//! send time of the last keepalive etcd answered with a live lease, plus the lease's TTL, minus
//! a margin. etcd counts the TTL from when it *received* that keepalive, which is no earlier
//! than its send time, so this deadline passes at least `margin` before etcd can expire the
//! lease and let a rival win. `now` is read on the boot clock, which keeps counting while the
//! process is stopped (SIGSTOP) or the host sleeps: a frozen leader wakes up already past its
//! deadline.
//!
//! Invariants (each checked by the cases):
//! - [`State::acting`] is `Some` only in [`Role::Leader`] and only before `acting_until`.
//! - A leader that loses its lease, fails a fenced commit or steps down gets [`Action::Stop`]
//!   before anything else, and acts again only after [`Event::Won`] with a new, higher epoch.
//! - After a commit of unknown outcome it acts again only after a resync ([`Action::Resync`],
//!   then [`Event::Resynced`]), and then from a fresh rack ([`Action::Act`] with `fresh`).
//! - Epochs it acts under never go down.

use std::fmt;
use std::time::Duration;

use crate::store::Epoch;

/// The lease's timing, as the controller runs it. The TTL itself comes with each renewal
/// (etcd's answer), so a lease granted with another TTL is counted right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long before etcd could expire the lease the leader stops acting (250 ms).
    pub margin: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            margin: Duration::from_millis(250),
        }
    }
}

/// Who leads, as a campaigner's key says: its name, URL and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub name: String,
    pub url: String,
    pub epoch: Epoch,
}

/// What a campaigner puts in its election key: who it is and where it answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Campaigner {
    pub name: String,
    pub url: String,
}

impl LeaderInfo {
    /// The campaigner of epoch `epoch` from its election key's value; a value that is not a
    /// campaigner's (another tool's) is shown as its text, with no URL.
    pub fn from_campaign(value: &[u8], epoch: Epoch) -> LeaderInfo {
        match serde_json::from_slice::<Campaigner>(value) {
            Ok(c) => LeaderInfo {
                name: c.name,
                url: c.url,
                epoch,
            },
            Err(_) => LeaderInfo {
                name: String::from_utf8_lossy(value).into_owned(),
                url: String::new(),
                epoch,
            },
        }
    }
}

impl fmt::Display for LeaderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {} (epoch {})", self.name, self.url, self.epoch)
    }
}

/// What happened: the keepalives, the campaign, the store's answers, the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// etcd renewed the lease: it lives at least `ttl` from `sent` (when the keepalive was
    /// sent, on the boot clock).
    Renewed { sent: Duration, ttl: Duration },
    /// A keepalive failed (no answer in time, no member reachable, no quorum).
    RenewFailed { why: String },
    /// etcd says the lease is gone: so is the campaign key, and any leadership with it.
    LeaseGone,
    /// The campaign won: this controller's key is the oldest live one.
    Won { epoch: Epoch },
    /// The mirror has caught up with the store as of the win (§6.3): the rack can be built.
    CaughtUp { epoch: Epoch },
    /// Another leads (or nobody), as the election's observer sees it.
    LeaderSeen { leader: Option<LeaderInfo> },
    /// A fenced commit under `epoch` failed its check: another leads now, or nobody.
    FenceFailed {
        epoch: Epoch,
        leader: Option<LeaderInfo>,
    },
    /// A commit under `epoch` has an unknown outcome (its deadline passed, or the connection
    /// broke after sending): it may or may not have landed.
    CommitUnknown { epoch: Epoch, why: String },
    /// A linearizable read after a commit of unknown outcome: whether this controller's key
    /// still holds its epoch.
    Resynced { still_leader: bool },
    /// The operator asked the leader to hand over (`torc controller step-down`).
    StepDown,
    /// The campaign key is deleted after a step-down.
    Resigned,
}

/// What the controller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Wait for the mirror to reach the store's revision as of the win, then send `CaughtUp`.
    CatchUp { epoch: Epoch },
    /// Act under `epoch`: with `fresh`, first (re)build the rack from the store, as a start
    /// does; otherwise go on with the rack it holds (nobody else could write meanwhile: its
    /// key lived).
    Act { epoch: Epoch, fresh: bool },
    /// Stop acting at once: refuse changes, end held long polls, pause the reconciler and
    /// health checks. The rack is kept (for stale reads) but must not be acted on.
    Stop { why: String },
    /// Read the store linearizably and send `Resynced`.
    Resync { epoch: Epoch },
    /// Delete the campaign key (hand leadership over), then send `Resigned`.
    Resign { epoch: Epoch },
    /// Campaign again, with a new lease (the old one is gone or given up).
    Campaign,
}

/// Where this controller stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not leading: campaigning behind `leader` (if one is known).
    Standby { leader: Option<LeaderInfo> },
    /// Won; the mirror is catching up before it acts.
    Elected { epoch: Epoch },
    /// Acting, until `acting_until` unless a keepalive is answered first.
    Leader {
        epoch: Epoch,
        acting_until: Duration,
    },
    /// Leads on paper but acts on nothing: the deadline passed (no keepalive answered in
    /// time), or a commit's outcome is unknown (`resync`).
    Lapsed {
        epoch: Epoch,
        why: String,
        resync: bool,
    },
    /// Handing over: stopped, deleting its key.
    SteppingDown { epoch: Epoch },
}

/// The state machine. Feed it every [`Event`] with the boot clock's `now`, and call
/// [`State::tick`] often enough to notice a lapse (the controller does before every act too).
#[derive(Debug, Clone)]
pub struct State {
    timing: Timing,
    role: Role,
    /// The last answered renewal's deadline (`sent + ttl - margin`), of the current lease.
    deadline: Option<Duration>,
    /// The rack must be built from the store before acting (after a win or a resync).
    fresh: bool,
    /// The last keepalive failure, for the status (cleared by a renewal).
    trouble: Option<String>,
    /// The highest epoch acted under: a win at or below it is stale and ignored.
    highest: Option<Epoch>,
}

impl State {
    pub fn new(timing: Timing) -> State {
        State {
            timing,
            role: Role::Standby { leader: None },
            deadline: None,
            fresh: true,
            trouble: None,
            highest: None,
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The last keepalive failure since the last renewal, if any.
    pub fn trouble(&self) -> Option<&str> {
        self.trouble.as_deref()
    }

    /// The epoch to act under now, or `None`: the check before every act.
    pub fn acting(&self, now: Duration) -> Option<Epoch> {
        match self.role {
            Role::Leader {
                epoch,
                acting_until,
            } if now < acting_until => Some(epoch),
            _ => None,
        }
    }

    /// Notices a deadline that passed: a leader lapses (and stops).
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        let Role::Leader {
            epoch,
            acting_until,
        } = self.role
        else {
            return Vec::new();
        };
        if now < acting_until {
            return Vec::new();
        }
        let why = match &self.trouble {
            Some(t) => format!("no keepalive answered in time ({t})"),
            None => "no keepalive answered in time".to_string(),
        };
        self.role = Role::Lapsed {
            epoch,
            why: why.clone(),
            resync: false,
        };
        vec![Action::Stop { why }]
    }

    /// Takes `event` at `now`, and says what to do.
    pub fn on(&mut self, now: Duration, event: Event) -> Vec<Action> {
        // The event first: a renewal answered late but still ahead of `now` keeps the leader
        // acting rather than stopping and resuming it. Then a deadline that passed.
        let mut actions = self.apply(now, event);
        actions.extend(self.tick(now));
        actions
    }

    fn apply(&mut self, now: Duration, event: Event) -> Vec<Action> {
        match event {
            Event::Renewed { sent, ttl } => {
                self.trouble = None;
                let deadline = (sent + ttl).saturating_sub(self.timing.margin);
                // Renewals may be answered out of order: the latest deadline stands.
                self.deadline = Some(self.deadline.map_or(deadline, |d| d.max(deadline)));
                self.resume(now)
            }
            Event::RenewFailed { why } => {
                self.trouble = Some(why);
                Vec::new()
            }
            Event::LeaseGone => {
                let why = "its lease is gone (expired or revoked): another controller may lead";
                self.lose(why.to_string(), None)
            }
            Event::Won { epoch } => match &self.role {
                // Only a campaigner wins; a win of an epoch not above one already held is
                // stale (an old campaign's answer) and changes nothing.
                Role::Standby { .. } if self.highest.is_none_or(|h| epoch > h) => {
                    self.role = Role::Elected { epoch };
                    self.fresh = true;
                    vec![Action::CatchUp { epoch }]
                }
                _ => Vec::new(),
            },
            Event::CaughtUp { epoch } => match self.role {
                Role::Elected { epoch: e } if e == epoch => {
                    self.role = Role::Lapsed {
                        epoch,
                        why: "waiting for a keepalive to be answered".into(),
                        resync: false,
                    };
                    self.resume(now)
                }
                _ => Vec::new(),
            },
            Event::LeaderSeen { leader } => match &mut self.role {
                Role::Standby { leader: seen } => {
                    *seen = leader;
                    Vec::new()
                }
                _ => Vec::new(),
            },
            // A commit's answer of an epoch this controller no longer holds (it lost it, and
            // may lead again under a newer one) says nothing of the present.
            Event::FenceFailed { epoch, .. } | Event::CommitUnknown { epoch, .. }
                if self.epoch() != Some(epoch) =>
            {
                Vec::new()
            }
            Event::FenceFailed { leader, .. } => {
                let why = match &leader {
                    Some(l) => format!("a fenced write failed: {l} leads now"),
                    None => "a fenced write failed: this controller no longer leads".into(),
                };
                self.lose(why, leader)
            }
            Event::CommitUnknown { why, .. } => match self.role {
                Role::Leader { epoch, .. }
                | Role::Lapsed {
                    epoch,
                    resync: false,
                    ..
                } => {
                    let was_acting = matches!(self.role, Role::Leader { .. });
                    let why = format!("a commit's outcome is unknown ({why}): resyncing");
                    self.role = Role::Lapsed {
                        epoch,
                        why: why.clone(),
                        resync: true,
                    };
                    let mut actions = Vec::new();
                    if was_acting {
                        actions.push(Action::Stop { why });
                    }
                    actions.push(Action::Resync { epoch });
                    actions
                }
                _ => Vec::new(),
            },
            Event::Resynced { still_leader } => match self.role {
                Role::Lapsed {
                    epoch,
                    resync: true,
                    ..
                } => {
                    if still_leader {
                        self.fresh = true;
                        self.role = Role::Lapsed {
                            epoch,
                            why: "resynced; waiting for a keepalive to be answered".into(),
                            resync: false,
                        };
                        self.resume(now)
                    } else {
                        self.lose(
                            "after a commit of unknown outcome, its key no longer leads".into(),
                            None,
                        )
                    }
                }
                _ => Vec::new(),
            },
            Event::StepDown => match self.role {
                Role::Leader { epoch, .. } | Role::Lapsed { epoch, .. } => {
                    let was_acting = matches!(self.role, Role::Leader { .. });
                    self.role = Role::SteppingDown { epoch };
                    let mut actions = Vec::new();
                    if was_acting {
                        actions.push(Action::Stop {
                            why: "stepping down on request".into(),
                        });
                    }
                    actions.push(Action::Resign { epoch });
                    actions
                }
                Role::Elected { epoch } => {
                    self.role = Role::SteppingDown { epoch };
                    vec![Action::Resign { epoch }]
                }
                _ => Vec::new(),
            },
            Event::Resigned => match self.role {
                Role::SteppingDown { .. } => {
                    // Its key is deleted and the lease given up: a new campaign queues behind
                    // the others.
                    self.lose("stepped down".into(), None)
                }
                _ => Vec::new(),
            },
        }
    }

    /// The epoch of the key it holds, when it holds one that won.
    fn epoch(&self) -> Option<Epoch> {
        match self.role {
            Role::Standby { .. } => None,
            Role::Elected { epoch }
            | Role::Leader { epoch, .. }
            | Role::Lapsed { epoch, .. }
            | Role::SteppingDown { epoch } => Some(epoch),
        }
    }

    /// A lapsed leader whose deadline is ahead acts again.
    fn resume(&mut self, now: Duration) -> Vec<Action> {
        let Role::Lapsed {
            epoch,
            resync: false,
            ..
        } = self.role
        else {
            if let Role::Leader { epoch, .. } = self.role {
                // A renewal while acting moves the deadline on.
                self.role = Role::Leader {
                    epoch,
                    acting_until: self.deadline.unwrap_or(now),
                };
            }
            return Vec::new();
        };
        match self.deadline {
            Some(deadline) if now < deadline => {
                self.role = Role::Leader {
                    epoch,
                    acting_until: deadline,
                };
                let fresh = std::mem::take(&mut self.fresh);
                self.highest = Some(epoch);
                vec![Action::Act { epoch, fresh }]
            }
            _ => Vec::new(),
        }
    }

    /// The campaign key is gone (or no longer leads): stop if acting, and campaign again with
    /// a new lease. Renewals of the old lease no longer count.
    fn lose(&mut self, why: String, leader: Option<LeaderInfo>) -> Vec<Action> {
        let mut actions = Vec::new();
        if matches!(self.role, Role::Leader { .. }) {
            actions.push(Action::Stop { why });
        }
        self.role = Role::Standby { leader };
        self.deadline = None;
        self.fresh = true;
        actions.push(Action::Campaign);
        actions
    }
}

#[cfg(test)]
mod cases;
