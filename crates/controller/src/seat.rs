//! Whether this controller may act now, asked before every act (a change, a long poll's answer,
//! a reconciler step, a health check): a sole controller on a local store always may; a
//! controller of a highly available pair may only while its leadership says so
//! (`leadership`), on the boot clock.
//!
//! What it is not: the election, the keepalives or the takeover (`roles` drives them and feeds
//! the outcomes here); this module only keeps the answer and passes on what must be done.
//!
//! Invariants:
//! - `acting` answers from the leadership state as of the call, read on `CLOCK_BOOTTIME`
//!   (which counts while the process is stopped), never from a cached flag: a leader frozen
//!   past its deadline refuses its first act after waking.
//! - Every [`Action`] the state machine asks for is sent to the driver in the order asked, and
//!   the state changes before the lock is released, so no act slips between a lapse and its
//!   `Stop`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::leadership::{Action, Event, LeaderInfo, Role, State, Timing};
use crate::store::Epoch;

/// Why this controller may not act now: who leads instead, if anyone is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotActing {
    pub leader: Option<LeaderInfo>,
    pub why: String,
}

/// The time on the boot clock, which keeps counting while the process is stopped or the host
/// sleeps (`Instant` does not count a host's sleep).
pub(crate) fn boot_now() -> Duration {
    // CLOCK_BOOTTIME exists on every Linux torc runs on (since 2.6.39).
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is readable");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// `instant` (a keepalive's send time, taken with `Instant`) on the boot clock.
pub(crate) fn on_boot_clock(instant: Instant) -> Duration {
    boot_now().saturating_sub(instant.elapsed())
}

/// A controller's seat.
pub(crate) enum Seat {
    /// The only controller, on a local store: it acts under its store's epoch, always.
    Sole(Epoch),
    /// One of several, elected through the store.
    Elected(Elected),
}

/// The leadership of a controller of several: its state, and the driver it asks to act.
pub(crate) struct Elected {
    state: Mutex<State>,
    actions: mpsc::UnboundedSender<Action>,
}

impl Elected {
    /// A standby that has not campaigned yet; the driver receives `actions`.
    pub(crate) fn new(timing: Timing) -> (Elected, mpsc::UnboundedReceiver<Action>) {
        let (actions, rx) = mpsc::unbounded_channel();
        let elected = Elected {
            state: Mutex::new(State::new(timing)),
            actions,
        };
        (elected, rx)
    }
}

impl Seat {
    /// The epoch to act under now, or why not.
    pub(crate) fn acting(&self) -> Result<Epoch, NotActing> {
        match self {
            Seat::Sole(epoch) => Ok(*epoch),
            Seat::Elected(e) => {
                let now = boot_now();
                let mut state = e.state.lock().unwrap_or_else(|p| p.into_inner());
                // A lapse noticed here is passed on before the answer.
                let actions = state.tick(now);
                send(&e.actions, actions);
                state.acting(now).ok_or_else(|| not_acting(&state))
            }
        }
    }

    /// Takes `event` (a renewal, the campaign's or a commit's outcome) and passes on what the
    /// state machine asks. A sole controller has no leadership to change.
    pub(crate) fn on(&self, event: Event) {
        if let Seat::Elected(e) = self {
            let mut state = e.state.lock().unwrap_or_else(|p| p.into_inner());
            let actions = state.on(boot_now(), event);
            send(&e.actions, actions);
        }
    }

    /// The role now, for the status (a sole controller leads, always).
    pub(crate) fn role(&self) -> Option<(Role, Option<String>)> {
        match self {
            Seat::Sole(_) => None,
            Seat::Elected(e) => {
                let mut state = e.state.lock().unwrap_or_else(|p| p.into_inner());
                let actions = state.tick(boot_now());
                send(&e.actions, actions);
                Some((state.role().clone(), state.trouble().map(str::to_string)))
            }
        }
    }
}

fn send(to: &mpsc::UnboundedSender<Action>, actions: Vec<Action>) {
    for a in actions {
        // The driver lives as long as the controller; once it is gone (shutdown), nothing is
        // left to do.
        let _ = to.send(a);
    }
}

fn not_acting(state: &State) -> NotActing {
    let (leader, why) = match state.role() {
        Role::Standby { leader } => (
            leader.clone(),
            match leader {
                Some(l) => format!("this controller is a standby; {l} leads"),
                None => "this controller is a standby and no leader is known".to_string(),
            },
        ),
        Role::Elected { epoch } => (
            None,
            format!("this controller won the election (epoch {epoch}) and is catching up"),
        ),
        Role::Leader { epoch, .. } | Role::Lapsed { epoch, .. } => (
            None,
            match (state.role(), state.trouble()) {
                (Role::Lapsed { why, .. }, _) => {
                    format!("this controller leads (epoch {epoch}) but may not act: {why}")
                }
                (_, Some(t)) => {
                    format!("this controller's lease is not renewed (epoch {epoch}): {t}")
                }
                _ => format!("this controller's lease is not renewed (epoch {epoch})"),
            },
        ),
        Role::SteppingDown { epoch } => (
            None,
            format!("this controller is stepping down (epoch {epoch})"),
        ),
    };
    NotActing { leader, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_goes_on() {
        let a = boot_now();
        let b = boot_now();
        assert!(b >= a);
        let sent = Instant::now();
        let on_boot = on_boot_clock(sent);
        assert!(on_boot <= boot_now() && on_boot + Duration::from_secs(1) > boot_now());
    }

    /// The seat answers from the state as of the call: a leader whose deadline passes refuses
    /// at once, and its `Stop` reaches the driver before anything else.
    #[test]
    fn an_elected_seat_acts_only_before_its_deadline() {
        let (elected, mut actions) = Elected::new(Timing {
            margin: Duration::from_millis(250),
        });
        let seat = Seat::Elected(elected);
        assert!(seat.acting().unwrap_err().why.contains("standby"));
        // A renewal sent 1.5 s ago with a TTL of 2 s: 250 ms of acting left.
        let sent = boot_now().saturating_sub(Duration::from_millis(1500));
        seat.on(Event::Renewed {
            sent,
            ttl: Duration::from_secs(2),
        });
        seat.on(Event::Won { epoch: Epoch(9) });
        seat.on(Event::CaughtUp { epoch: Epoch(9) });
        assert_eq!(
            actions.try_recv().unwrap(),
            Action::CatchUp { epoch: Epoch(9) }
        );
        assert_eq!(
            actions.try_recv().unwrap(),
            Action::Act {
                epoch: Epoch(9),
                fresh: true
            }
        );
        assert_eq!(seat.acting(), Ok(Epoch(9)));
        // Wait out the deadline on the real clock (bounded: 250 ms plus slack).
        let until = Instant::now() + Duration::from_secs(5);
        while seat.acting().is_ok() {
            assert!(Instant::now() < until, "the deadline never passed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let refused = seat.acting().unwrap_err();
        assert!(refused.why.contains("may not act"), "{refused:?}");
        assert!(matches!(actions.try_recv().unwrap(), Action::Stop { .. }));
        assert!(actions.try_recv().is_err(), "one Stop");
    }

    #[test]
    fn a_sole_seat_always_acts() {
        let seat = Seat::Sole(Epoch(4));
        assert_eq!(seat.acting(), Ok(Epoch(4)));
        seat.on(Event::LeaseGone);
        assert_eq!(seat.acting(), Ok(Epoch(4)));
        assert!(seat.role().is_none());
    }
}
