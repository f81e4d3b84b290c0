//! The smart-scaling rule, pure: observations in, a decision out.
//!
//! Each observation is the measured queries per second of every running server. A decision to
//! scale up needs the load per server above `high` in at least `k` of the last `n` observations;
//! scaling down needs it below `low` in `k` of `n`, and the load the remaining servers would
//! carry to stay at most midway between `low` and `high`. After a change the window starts over and nothing happens for
//! `cooldown`: the new server must show in the numbers before they are trusted again. So it
//! never flaps. Unlike the original it scales between any `min` and `max`, reads every server,
//! and keeps its state (see `State`) on disk.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    pub min: u32,
    pub max: u32,
    /// Queries per second per server above which a server is added.
    pub high: f64,
    /// Queries per second per server below which a server is removed.
    pub low: f64,
    pub k: usize,
    pub n: usize,
    pub cooldown_ms: u64,
}

/// One measurement: total queries per second over the running servers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    pub at: u64,
    pub servers: u32,
    pub total_qps: f64,
}

impl Observation {
    pub fn per_server(&self) -> f64 {
        self.total_qps / f64::from(self.servers.max(1))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub at: u64,
    pub from: u32,
    pub to: u32,
    /// The numbers behind it.
    pub reason: String,
}

/// The scaler's state; persisted so a restarted scheduler keeps its decisions and window.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub desired: u32,
    pub window: VecDeque<Observation>,
    pub last_change: u64,
    pub decisions: Vec<Decision>,
}

impl State {
    pub fn new(policy: &Policy) -> State {
        State {
            desired: policy.min.max(1),
            ..Default::default()
        }
    }

    /// Adds an observation and decides. Returns the decision when the desired count changed.
    pub fn observe(&mut self, policy: &Policy, obs: Observation) -> Option<Decision> {
        let now = obs.at;
        self.window.push_back(obs);
        while self.window.len() > policy.n {
            self.window.pop_front();
        }
        if now.saturating_sub(self.last_change) < policy.cooldown_ms || self.window.len() < policy.n
        {
            return None;
        }
        let above = self
            .window
            .iter()
            .filter(|o| o.per_server() > policy.high)
            .count();
        let below = self
            .window
            .iter()
            .filter(|o| o.per_server() < policy.low)
            .count();
        let latest = self.window.back().expect("just pushed");
        let from = self.desired;
        let (to, why) = if above >= policy.k && from < policy.max {
            (
                from + 1,
                format!(
                    "{above} of the last {} observations above {} qps per server (latest {:.0} qps over {})",
                    self.window.len(),
                    policy.high,
                    latest.total_qps,
                    servers(latest.servers)
                ),
            )
        } else if below >= policy.k
            && from > policy.min
            // Hysteresis: the servers that remain must carry the load well below `high` (at
            // most midway between `low` and `high`), or the next observations would add the
            // server back.
            && latest.total_qps / f64::from(from - 1) <= (policy.low + policy.high) / 2.0
        {
            (
                from - 1,
                format!(
                    "{below} of the last {} observations below {} qps per server (latest {:.0} qps over {})",
                    self.window.len(),
                    policy.low,
                    latest.total_qps,
                    servers(latest.servers)
                ),
            )
        } else {
            return None;
        };
        self.desired = to;
        self.last_change = now;
        self.window.clear();
        let d = Decision {
            at: now,
            from,
            to,
            reason: why,
        };
        self.decisions.push(d.clone());
        if self.decisions.len() > 200 {
            self.decisions.remove(0);
        }
        Some(d)
    }
}

/// "1 server", "2 servers".
fn servers(n: u32) -> String {
    if n == 1 {
        "1 server".into()
    } else {
        format!("{n} servers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 3,
            high: 300.0,
            low: 150.0,
            k: 3,
            n: 5,
            cooldown_ms: 10_000,
        }
    }

    fn obs(at: u64, servers: u32, total: f64) -> Observation {
        Observation {
            at,
            servers,
            total_qps: total,
        }
    }

    /// Runs a load trace (one observation per second) and returns the desired count each second.
    fn run(trace: &[f64]) -> (Vec<u32>, Vec<Decision>) {
        let p = policy();
        let mut s = State::new(&p);
        let mut out = Vec::new();
        for (i, total) in trace.iter().enumerate() {
            let servers = s.desired;
            s.observe(&p, obs(20_000 + i as u64 * 1000, servers, *total));
            out.push(s.desired);
        }
        (out, s.decisions)
    }

    #[test]
    fn scales_up_on_sustained_load_and_down_when_it_falls() {
        let mut trace = vec![200.0; 10];
        trace.extend(vec![400.0; 20]);
        trace.extend(vec![200.0; 20]);
        let (desired, decisions) = run(&trace);
        assert_eq!(desired[9], 1, "200 qps on one server is fine");
        assert_eq!(*desired.iter().max().unwrap(), 2);
        assert_eq!(
            *desired.last().unwrap(),
            1,
            "back to one once the load fell"
        );
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        assert!(decisions[0].reason.contains("above 300"));
    }

    #[test]
    fn never_flaps_on_a_noisy_load_around_the_threshold() {
        let trace: Vec<f64> = (0..60)
            .map(|i| if i % 2 == 0 { 320.0 } else { 280.0 })
            .collect();
        let (_, decisions) = run(&trace);
        // 3 of 5 above 300 can hold: at most one scale-up, and no way back down at ~150/server.
        assert!(decisions.len() <= 1, "{decisions:?}");
    }

    #[test]
    fn a_single_spike_does_nothing_and_limits_hold() {
        let mut trace = vec![100.0; 10];
        trace[5] = 10_000.0;
        let (desired, _) = run(&trace);
        assert!(desired.iter().all(|d| *d == 1));
        let (desired, _) = run(&vec![100_000.0; 200]);
        assert_eq!(*desired.last().unwrap(), 3, "max holds");
    }
}
