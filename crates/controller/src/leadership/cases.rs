//! The runner of the leadership cases: `tests/leadership/*.cases`, events in, actions and the
//! role out (format: `tests/leadership/README.md`). Besides comparing the output, every step
//! checks the module's invariants: acting only as a leader before its deadline, a `Stop`
//! before a lost leader's other actions, and epochs acted under never going down.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use torc_cases::{Args, Case};

use super::{Action, Event, LeaderInfo, Role, State, Timing};
use crate::store::Epoch;

/// A file's state: the machine, the clock, and what the invariants need to remember.
struct Story {
    state: State,
    now: Duration,
    /// The highest epoch acted under so far.
    acted: Option<Epoch>,
}

impl Default for Story {
    fn default() -> Story {
        Story {
            state: State::new(Timing::default()),
            now: Duration::ZERO,
            acted: None,
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn show(d: Duration) -> u128 {
    d.as_millis()
}

fn leader(args: &Args) -> Result<Option<LeaderInfo>, String> {
    let Some(name) = args.keys.get("leader") else {
        return Ok(None);
    };
    Ok(Some(LeaderInfo {
        name: name.clone(),
        url: format!("https://{name}:2443"),
        epoch: Epoch(
            args.num("leader-epoch")?
                .ok_or("leader= needs leader-epoch=")?,
        ),
    }))
}

fn epoch(args: &Args) -> Result<Epoch, String> {
    Ok(Epoch(args.num("epoch")?.ok_or("missing epoch=")?))
}

fn event(command: &str, args: &Args, now: Duration) -> Result<Option<Event>, String> {
    Ok(Some(match command {
        "tick" => return Ok(None),
        "renewed" => Event::Renewed {
            sent: args.num("sent")?.map_or(now, ms),
            ttl: ms(args.num("ttl")?.unwrap_or(2000)),
        },
        "renew-failed" => Event::RenewFailed {
            why: args
                .keys
                .get("why")
                .cloned()
                .unwrap_or_else(|| "timeout".into()),
        },
        "lease-gone" => Event::LeaseGone,
        "won" => Event::Won {
            epoch: epoch(args)?,
        },
        "caught-up" => Event::CaughtUp {
            epoch: epoch(args)?,
        },
        "leader-seen" => Event::LeaderSeen {
            leader: leader(args)?,
        },
        "fence-failed" => Event::FenceFailed {
            epoch: epoch(args)?,
            leader: leader(args)?,
        },
        "commit-unknown" => Event::CommitUnknown {
            epoch: epoch(args)?,
            why: args
                .keys
                .get("why")
                .cloned()
                .unwrap_or_else(|| "deadline".into()),
        },
        "resynced" => Event::Resynced {
            still_leader: match args.keys.get("still-leader").map(String::as_str) {
                Some("yes") => true,
                Some("no") => false,
                other => return Err(format!("still-leader={other:?}: yes or no")),
            },
        },
        "step-down" => Event::StepDown,
        "resigned" => Event::Resigned,
        other => return Err(format!("unknown command `{other}`")),
    }))
}

fn action(a: &Action) -> String {
    match a {
        Action::CatchUp { epoch } => format!("catch up (epoch {epoch})"),
        Action::Act { epoch, fresh } => format!(
            "act (epoch {epoch}){}",
            if *fresh { ", from a fresh rack" } else { "" }
        ),
        Action::Stop { why } => format!("stop: {why}"),
        Action::Resync { epoch } => format!("resync (epoch {epoch})"),
        Action::Resign { epoch } => format!("resign (epoch {epoch})"),
        Action::Campaign => "campaign with a new lease".into(),
    }
}

fn role(r: &Role) -> String {
    match r {
        Role::Standby { leader: None } => "standby, no leader known".into(),
        Role::Standby { leader: Some(l) } => format!("standby behind {l}"),
        Role::Elected { epoch } => format!("elected (epoch {epoch}), catching up"),
        Role::Leader {
            epoch,
            acting_until,
        } => format!(
            "leader (epoch {epoch}), acting until {}",
            show(*acting_until)
        ),
        Role::Lapsed { epoch, why, resync } => format!(
            "lapsed (epoch {epoch}{}): {why}",
            if *resync { ", resync" } else { "" }
        ),
        Role::SteppingDown { epoch } => format!("stepping down (epoch {epoch})"),
    }
}

impl Story {
    fn run(&mut self, case: &Case) -> Result<String, String> {
        let (command, args) = Args::parse(&case.command)?;
        if let Some(at) = args.num("at")? {
            let at = ms(at);
            if at < self.now {
                return Err(format!("at={} goes back in time", show(at)));
            }
            self.now = at;
        }
        if command == "timing" {
            self.state = State::new(Timing {
                margin: ms(args.num("margin")?.ok_or("missing margin=")?),
            });
            return Ok("ok\n".into());
        }
        let was_leader = matches!(self.state.role(), Role::Leader { .. });
        let actions = match event(&command, &args, self.now)? {
            Some(e) => self.state.on(self.now, e),
            None => self.state.tick(self.now),
        };
        self.check(was_leader, &actions)?;
        let mut out = String::new();
        for a in &actions {
            writeln!(out, "{}", action(a)).unwrap();
        }
        writeln!(out, "role {}", role(self.state.role())).unwrap();
        if let Some(t) = self.state.trouble() {
            writeln!(out, "trouble: {t}").unwrap();
        }
        Ok(out)
    }

    /// The module's invariants, after each step.
    fn check(&mut self, was_leader: bool, actions: &[Action]) -> Result<(), String> {
        let acting = self.state.acting(self.now);
        match (self.state.role(), acting) {
            (
                Role::Leader {
                    epoch,
                    acting_until,
                },
                Some(e),
            ) if *epoch == e && self.now < *acting_until => {}
            (_, None) => {}
            (r, Some(e)) => return Err(format!("acting under epoch {e} as {r:?}")),
        }
        let is_leader = matches!(self.state.role(), Role::Leader { .. });
        if was_leader && !is_leader && !matches!(actions.first(), Some(Action::Stop { .. })) {
            return Err(format!(
                "a leader stopped leading without a Stop first: {actions:?}"
            ));
        }
        for a in actions {
            if let Action::Act { epoch, .. } = a {
                if self.acted.is_some_and(|h| *epoch < h) {
                    return Err(format!("acts under epoch {epoch} after {:?}", self.acted));
                }
                self.acted = Some(*epoch);
            }
        }
        Ok(())
    }
}

#[test]
fn leadership_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/leadership");
    torc_cases::run_dir(&dir, "cases", Story::default, |story, case| story.run(case));
}
