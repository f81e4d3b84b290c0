//! How followers order the documents the controller numbers `(epoch, generation)`: an agent's
//! desired state, the DNS server's names, the network agent's routes (CONVENTIONS habit 15;
//! `docs/design/ha-controller.md` §7.2).
//!
//! The epoch is the acting leader's: durable, and strictly higher at each controller start and
//! for each new leader, so a document of a higher epoch is always a newer leader's. The
//! generation grows within an epoch. A document of a lower epoch than the one a follower holds
//! is a deposed leader's late answer, which must not undo the new leader's work, or, when it
//! keeps coming long after the higher epoch fell silent, the first of a new store (a wiped rack,
//! whose epochs start again at 1).
//!
//! Two rules, both pure (time is an argument), each with its own follower state:
//! - [`Floor`], an agent's desired state. The agent's registration, a write on the acting
//!   leader, answers that leader's epoch: the floor. A document of an epoch below the one the
//!   agent follows (the floor, or a higher one applied since) is refused, however long it keeps
//!   coming: a new store does not know the node, so the agent registers there again, and that
//!   registration moves the floor down. A document of a higher epoch is applied at once.
//! - [`Follower`], the DNS server's names and the network agent's routes, which register
//!   nowhere: a higher epoch replaces at once; a lower one is refused for
//!   [`LOWER_EPOCH_GRACE`] after the last document of the held epoch, then taken (the caller
//!   warns: a new store). A follower that holds nothing (it just started) takes anything.
//!
//! Neither rule stops anything by itself: a refused document changes nothing the follower
//! holds, so a deposed leader's late answer cannot stop a task the new leader launched nor
//! withdraw a name or a route.

use std::fmt;
use std::time::{Duration, Instant};

/// A document's number. Ordered by epoch, then generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub epoch: u64,
    pub generation: u64,
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {} generation {}", self.epoch, self.generation)
    }
}

/// How long a [`Follower`] refuses documents of a lower epoch after the last document of the
/// epoch it holds. A deposed leader stops answering within its lease (2 s by default), so a
/// lower epoch still arriving after this is a new store's.
pub const LOWER_EPOCH_GRACE: Duration = Duration::from_secs(10);

/// What an agent does with a desired-state document ([`Floor::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Newer than what was applied, in the epoch followed or a higher one: apply it. It is
    /// recorded as applied.
    Apply,
    /// What was applied, or older within the same epoch: nothing to do.
    NotNewer,
    /// Of an epoch below `following`: a deposed leader's late answer, ignored. `first`: the
    /// first refusal of this epoch since the agent registered (say it once).
    Stale { following: u64, first: bool },
}

/// An agent's position in its desired states: the floor its registration set, and the
/// document applied above it.
///
/// Invariant: `applied.epoch` is never below the floor, and only goes up until the next
/// registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floor {
    /// `(floor, 0)` at registration, then the last document applied.
    applied: Stamp,
    /// The last epoch refused, so that each is said once.
    refused: Option<u64>,
}

impl Floor {
    /// After a registration answered by a leader of `epoch`: from now on documents of a lower
    /// epoch are refused, and the next document of `epoch` (or a higher one) is applied,
    /// whatever was applied before. The registration is where the agent and the leader meet:
    /// a whole document applied twice changes nothing, and a new store numbers from 1 again.
    pub fn registered(epoch: u64) -> Floor {
        Floor {
            applied: Stamp {
                epoch,
                generation: 0,
            },
            refused: None,
        }
    }

    /// Where the agent stands, for its long poll (`epoch`, `after`).
    pub fn position(&self) -> Stamp {
        self.applied
    }

    /// Judges `doc`; an [`Admit::Apply`] is recorded as applied.
    pub fn offer(&mut self, doc: Stamp) -> Admit {
        if doc.epoch < self.applied.epoch {
            let first = self.refused != Some(doc.epoch);
            self.refused = Some(doc.epoch);
            return Admit::Stale {
                following: self.applied.epoch,
                first,
            };
        }
        if doc <= self.applied {
            return Admit::NotNewer;
        }
        self.applied = doc;
        Admit::Apply
    }
}

/// What the DNS server or the network agent does with a document ([`Follower::receive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer in the held epoch, of a higher epoch, or the first document at all: take it.
    Take,
    /// The held document again, or an older one of the held epoch: nothing to do.
    NotNewer,
    /// Of an epoch below `held`, within the grace: refused (a deposed leader's late answer).
    /// Taken after `retry_in` if the held epoch stays silent. `first`: the first refusal of
    /// this epoch since the last document taken (say it once).
    Refused {
        held: u64,
        retry_in: Duration,
        first: bool,
    },
    /// Of an epoch below `held`, which has been silent for `silent` (at least the grace): a
    /// new store's (a wiped rack). Take it, with a warning.
    NewStore { held: u64, silent: Duration },
}

impl Verdict {
    /// Whether the document is to be taken.
    pub fn takes(&self) -> bool {
        matches!(self, Verdict::Take | Verdict::NewStore { .. })
    }

    /// What a follower warns about a document of `epoch` judged so, to follow the name of what
    /// it holds ("names of …", "routes of …"): the first refusal of a lower epoch, and a lower
    /// epoch taken. `None`: nothing to say.
    pub fn warning(&self, epoch: u64) -> Option<String> {
        match *self {
            Verdict::Refused {
                held,
                retry_in,
                first: true,
            } => Some(format!(
                "epoch {epoch} refused: epoch {held} is held (this is a deposed controller's late \
                 answer); taken only if epoch {held} stays silent for {:.1} s more",
                retry_in.as_secs_f64()
            )),
            Verdict::NewStore { held, silent } => Some(format!(
                "epoch {epoch} taken although epoch {held} was held: nothing of epoch {held} for \
                 {:.1} s, so this is a new controller store (a wiped rack)",
                silent.as_secs_f64()
            )),
            _ => None,
        }
    }
}

/// The DNS server's or network agent's position: the document held, and when a document of its
/// epoch last arrived. `Default`: holding nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Follower {
    /// The document taken last, and when a document of its epoch last arrived (taken or not).
    held: Option<(Stamp, Instant)>,
    /// The last lower epoch refused, so that each is said once.
    refused: Option<u64>,
}

impl Follower {
    /// The document held, if any.
    pub fn held(&self) -> Option<Stamp> {
        self.held.map(|(stamp, _)| stamp)
    }

    /// Judges `doc`, arrived at `now`. A document of the held epoch, taken or not, shows that
    /// epoch's leader alive: the grace of lower epochs runs from the last one. Nothing else
    /// changes until [`Follower::took`].
    pub fn receive(&mut self, doc: Stamp, now: Instant) -> Verdict {
        let Some((held, heard)) = &mut self.held else {
            return Verdict::Take;
        };
        if doc.epoch == held.epoch {
            *heard = now;
            return if doc.generation > held.generation {
                Verdict::Take
            } else {
                Verdict::NotNewer
            };
        }
        if doc.epoch > held.epoch {
            return Verdict::Take;
        }
        let silent = now.saturating_duration_since(*heard);
        if silent >= LOWER_EPOCH_GRACE {
            return Verdict::NewStore {
                held: held.epoch,
                silent,
            };
        }
        let first = self.refused != Some(doc.epoch);
        let held = held.epoch;
        self.refused = Some(doc.epoch);
        Verdict::Refused {
            held,
            retry_in: LOWER_EPOCH_GRACE - silent,
            first,
        }
    }

    /// `doc` is served from now on (it was judged to be taken, and applying it worked).
    pub fn took(&mut self, doc: Stamp, now: Instant) {
        self.held = Some((doc, now));
        self.refused = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(epoch: u64, generation: u64) -> Stamp {
        Stamp { epoch, generation }
    }

    /// The agent applies newer documents of the epoch it follows, not the same one twice.
    #[test]
    fn an_agent_applies_newer_generations_of_its_epoch() {
        let mut f = Floor::registered(7);
        assert_eq!(f.position(), stamp(7, 0));
        assert_eq!(f.offer(stamp(7, 3)), Admit::Apply);
        assert_eq!(f.position(), stamp(7, 3));
        assert_eq!(f.offer(stamp(7, 3)), Admit::NotNewer);
        assert_eq!(f.offer(stamp(7, 2)), Admit::NotNewer);
        assert_eq!(f.offer(stamp(7, 4)), Admit::Apply);
        assert_eq!(f.position(), stamp(7, 4));
    }

    /// Below the floor its registration set, a document is refused, once said, and never
    /// applied however long it keeps coming.
    #[test]
    fn an_agent_refuses_a_document_below_its_floor() {
        let mut f = Floor::registered(7);
        let stale = Admit::Stale {
            following: 7,
            first: true,
        };
        assert_eq!(f.offer(stamp(5, 900)), stale);
        assert_eq!(
            f.offer(stamp(5, 901)),
            Admit::Stale {
                following: 7,
                first: false
            },
            "said once per epoch"
        );
        assert_eq!(f.offer(stamp(6, 1)), stale, "another epoch is said again");
        assert_eq!(
            f.position(),
            stamp(7, 0),
            "nothing refused moves the position"
        );
        assert_eq!(f.offer(stamp(7, 1)), Admit::Apply);
    }

    /// A higher epoch (a new leader the agent moved to without registering) is applied at
    /// once, whatever its generation, and from then on the old leader's documents are stale.
    #[test]
    fn an_agent_applies_a_higher_epoch_at_once_and_then_refuses_the_old_one() {
        let mut f = Floor::registered(7);
        assert_eq!(f.offer(stamp(7, 40)), Admit::Apply);
        assert_eq!(f.offer(stamp(9, 1)), Admit::Apply, "a lower generation");
        assert_eq!(
            f.offer(stamp(7, 41)),
            Admit::Stale {
                following: 9,
                first: true
            },
            "the deposed leader's late answer"
        );
        assert_eq!(f.position(), stamp(9, 1));
    }

    /// A registration is where agent and leader meet: after it the leader's next document is
    /// applied, also when the agent had applied a higher number before (a new store counts
    /// from 1 again), or the same one.
    #[test]
    fn a_registration_sets_the_floor_again() {
        let mut f = Floor::registered(7);
        assert_eq!(f.offer(stamp(7, 40)), Admit::Apply);
        assert!(matches!(
            f.offer(stamp(2, 1)),
            Admit::Stale { first: true, .. }
        ));
        // The store was wiped: the node is unknown there, and registers again.
        let mut f = Floor::registered(2);
        assert_eq!(f.offer(stamp(2, 1)), Admit::Apply);
        // The same leader again (the agent's session ended): its document is applied again.
        let mut f = Floor::registered(7);
        assert_eq!(f.offer(stamp(7, 40)), Admit::Apply);
    }

    /// A follower that holds nothing takes anything; then newer generations of its epoch and
    /// any higher epoch at once.
    #[test]
    fn a_follower_takes_newer_documents_and_higher_epochs() {
        let t0 = Instant::now();
        let mut f = Follower::default();
        assert_eq!(f.held(), None);
        assert_eq!(f.receive(stamp(3, 50), t0), Verdict::Take);
        f.took(stamp(3, 50), t0);
        assert_eq!(f.receive(stamp(3, 50), t0), Verdict::NotNewer);
        assert_eq!(f.receive(stamp(3, 49), t0), Verdict::NotNewer);
        assert_eq!(f.receive(stamp(3, 51), t0), Verdict::Take);
        assert_eq!(f.receive(stamp(8, 1), t0), Verdict::Take);
        assert_eq!(f.held(), Some(stamp(3, 50)), "only `took` moves it");
        f.took(stamp(8, 1), t0);
        assert_eq!(f.held(), Some(stamp(8, 1)));
    }

    /// A lower epoch is refused for the grace after the last document of the held epoch (said
    /// once), then taken as a new store's.
    #[test]
    fn a_follower_refuses_a_lower_epoch_for_the_grace_then_takes_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = Follower::default();
        f.took(stamp(8, 5), t0);
        let refused = f.receive(stamp(3, 90), t0 + s(1));
        assert_eq!(
            refused,
            Verdict::Refused {
                held: 8,
                retry_in: s(9),
                first: true
            }
        );
        assert_eq!(
            refused.warning(3).as_deref(),
            Some(
                "epoch 3 refused: epoch 8 is held (this is a deposed controller's late answer); \
                 taken only if epoch 8 stays silent for 9.0 s more"
            )
        );
        assert_eq!(
            f.receive(stamp(3, 91), t0 + s(4)),
            Verdict::Refused {
                held: 8,
                retry_in: s(6),
                first: false
            }
        );
        // The held epoch's leader answers again (its poll's deadline): the grace starts over.
        assert_eq!(f.receive(stamp(8, 5), t0 + s(6)), Verdict::NotNewer);
        assert_eq!(
            f.receive(stamp(3, 91), t0 + s(15)),
            Verdict::Refused {
                held: 8,
                retry_in: s(1),
                first: false
            }
        );
        let late = f.receive(stamp(3, 91), t0 + s(16));
        assert_eq!(
            late,
            Verdict::NewStore {
                held: 8,
                silent: s(10)
            }
        );
        assert!(late.takes());
        assert_eq!(
            late.warning(3).as_deref(),
            Some(
                "epoch 3 taken although epoch 8 was held: nothing of epoch 8 for 10.0 s, so \
                 this is a new controller store (a wiped rack)"
            )
        );
        f.took(stamp(3, 91), t0 + s(16));
        assert_eq!(f.held(), Some(stamp(3, 91)));
        assert_eq!(
            f.receive(stamp(8, 6), t0 + s(16)),
            Verdict::Take,
            "higher again"
        );
    }

    /// An instant before the last document's counts as no silence at all.
    #[test]
    fn a_follower_counts_an_earlier_instant_as_no_silence() {
        let t0 = Instant::now() + Duration::from_secs(60);
        let mut f = Follower::default();
        f.took(stamp(8, 5), t0);
        assert_eq!(
            f.receive(stamp(3, 1), t0 - Duration::from_secs(30)),
            Verdict::Refused {
                held: 8,
                retry_in: LOWER_EPOCH_GRACE,
                first: true
            }
        );
    }
}
