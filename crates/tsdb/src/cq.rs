//! Continuous queries run as influxd 1.6's `continuous_querier` service runs them.
//!
//! Every `run-interval` (influxd's `[continuous_queries] run-interval`, default 1 s;
//! [`crate::Options::cq_run_interval`]) each stored query is checked: it is due at the first
//! check, then once `RESAMPLE EVERY` (default: its `GROUP BY time` interval) has passed since
//! its last run, recorded as the check's time truncated to that period. A run covers the
//! intervals that ended since, back `RESAMPLE FOR` (default: one interval): at the boundary
//! `t` of a `GROUP BY time(1m)` query, `[t-1m, t)`. So a query first runs at the boundary
//! after its creation, never over older data. [`Schedule::step`] is that rule, pure (time is
//! an argument); [`Runner`] applies it to the store's queries and runs the due ones as their
//! `SELECT ... INTO` with the time range set (the query's own time conditions dropped, as
//! influxd does) and the query's database as the default one. The written points carry each
//! bucket's start as their time and the `GROUP BY` tags as their tags (see `exec::into`).
//!
//! What it does not do: parse or store queries (see [`crate::influxql`],
//! [`crate::storage`]). Like influxd, the last runs are kept in memory only: after a restart
//! each query runs again from the next boundary, and intervals that ended while the server was
//! down are not computed (`RESAMPLE FOR` reaches back over them on the first run after).
//! Known difference: influxd truncates times to a multiple of the interval counted from year
//! 1 (Go's `Time.Truncate`), torc from the Unix epoch, as `GROUP BY time` does; the two agree
//! for every interval that divides a day.
//!
//! Invariants: a query that fails is logged and retried at its next period, never in a tight
//! loop; the runner's memory holds only queries that exist (a dropped query's last run goes).

use std::collections::HashMap;
use std::sync::Arc;

use crate::influxql::{self, BinOp, ContinuousQuery, Expr, Select, Statement};
use crate::storage::Tsdb;

/// When one continuous query runs: its `GROUP BY time(interval, offset)` and its
/// `RESAMPLE EVERY`/`FOR` (0: not given). Times in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub interval: i64,
    pub offset: i64,
    pub every: i64,
    pub for_: i64,
}

/// What a check of one query decides: the last run to record, and the time range `[start,
/// end)` to compute (none when no whole interval ended since the last run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub last_run: i64,
    pub range: Option<(i64, i64)>,
}

impl Schedule {
    /// The schedule of `cq`; `None` for a query that never runs: one without a `GROUP BY
    /// time` interval, or a raw one (influxd: "continuous queries must be aggregate queries").
    pub fn of(cq: &ContinuousQuery) -> Option<Schedule> {
        let (interval, offset) = cq.select.group_by_time()?;
        (cq.select.is_aggregate() && interval > 0).then_some(Schedule {
            interval,
            offset,
            every: cq.resample_every,
            for_: cq.resample_for,
        })
    }

    /// influxd 1.6's `ExecuteContinuousQuery`, given the last run (`None`: never ran since
    /// start) and the time now: `None` when the query is not due.
    pub fn step(&self, last_run: Option<i64>, now: i64) -> Option<Step> {
        let interval = self.interval;
        let mut every = if self.every > 0 { self.every } else { interval };
        let next_run = match last_run {
            Some(last) => {
                let next = last.saturating_add(every);
                if next > now {
                    return None;
                }
                next
            }
            None => now,
        };
        let last_run = truncate(now.saturating_sub(self.offset), every).saturating_add(self.offset);
        let span = if self.for_ > 0 {
            self.for_
        } else {
            interval.max(every)
        };
        every = every.min(interval);
        let start = next_run
            .saturating_add(interval)
            .saturating_sub(span)
            .saturating_sub(self.offset)
            .saturating_sub(1);
        let start = truncate(start, interval).saturating_add(self.offset);
        let end = now
            .saturating_add(interval)
            .saturating_sub(every)
            .saturating_sub(self.offset);
        let end = truncate(end, interval).saturating_add(self.offset);
        Some(Step {
            last_run,
            range: (end > start).then_some((start, end)),
        })
    }
}

/// `t` rounded down to a multiple of `d` (> 0) counted from the epoch.
fn truncate(t: i64, d: i64) -> i64 {
    t - t.rem_euclid(d)
}

/// `select` restricted to `[start, end)`: its time conditions (comparisons of `time` joined
/// by `AND`) dropped and the range added, as influxd's `SetTimeRange` does.
pub fn with_time_range(select: &Select, start: i64, end: i64) -> Select {
    let time = |op, t| Expr::Binary {
        op,
        lhs: Box::new(Expr::VarRef("time".into())),
        rhs: Box::new(Expr::Integer(t)),
    };
    let range = Expr::Binary {
        op: BinOp::And,
        lhs: Box::new(time(BinOp::Gte, start)),
        rhs: Box::new(time(BinOp::Lt, end)),
    };
    let condition = match select.condition.as_ref().and_then(without_time) {
        Some(c) => Expr::Binary {
            op: BinOp::And,
            lhs: Box::new(Expr::Paren(Box::new(c))),
            rhs: Box::new(range),
        },
        None => range,
    };
    Select {
        condition: Some(condition),
        ..select.clone()
    }
}

/// `e` without its comparisons of `time` at the top level of `AND`s (`None`: nothing left).
fn without_time(e: &Expr) -> Option<Expr> {
    match e {
        Expr::Paren(inner) => without_time(inner),
        Expr::Binary {
            op: BinOp::And,
            lhs,
            rhs,
        } => match (without_time(lhs), without_time(rhs)) {
            (Some(l), Some(r)) => Some(Expr::Binary {
                op: BinOp::And,
                lhs: Box::new(l),
                rhs: Box::new(r),
            }),
            (one, None) | (None, one) => one,
        },
        Expr::Binary { lhs, rhs, .. } if is_time(lhs) || is_time(rhs) => None,
        e => Some(e.clone()),
    }
}

fn is_time(e: &Expr) -> bool {
    matches!(e.unparen(), Expr::VarRef(n) if n.eq_ignore_ascii_case("time"))
}

/// The continuous-query service's memory, by (database, name): when each query last ran, and
/// each stored text parsed once (`None`: it does not parse, warned about once).
#[derive(Debug, Default)]
pub struct Runner {
    last_runs: HashMap<(String, String), i64>,
    parsed: HashMap<(String, String), Parsed>,
}

/// A stored query's text and what it parsed to (`None`: nothing, warned about once).
#[derive(Debug)]
struct Parsed {
    text: String,
    cq: Option<Arc<ContinuousQuery>>,
}

impl Runner {
    /// Checks every stored query at `now` and runs the due ones; returns how many ran.
    /// A query that fails is logged (influxd logs it too) and waits for its next period.
    pub async fn run_due(&mut self, db: &Tsdb, now: i64) -> usize {
        let stored = db.continuous_queries();
        let live = |(d, n): &(String, String)| stored.iter().any(|(sd, q)| sd == d && q.name == *n);
        self.last_runs.retain(|k, _| live(k));
        self.parsed.retain(|k, _| live(k));
        let mut ran = 0;
        for (database, meta) in stored {
            let key = (database.clone(), meta.name.clone());
            let cached = self.parsed.get(&key).filter(|p| p.text == meta.query);
            let cq = match cached {
                Some(p) => p.cq.clone(),
                None => {
                    let cq = match influxql::parse_statement(&meta.query) {
                        Ok(Statement::CreateContinuousQuery(cq)) => Some(Arc::from(cq)),
                        Ok(_) | Err(_) => {
                            tracing::warn!(%database, name = %meta.name, "stored continuous query does not parse; it will not run");
                            None
                        }
                    };
                    let text = meta.query.clone();
                    (self.parsed).insert(
                        key.clone(),
                        Parsed {
                            text,
                            cq: cq.clone(),
                        },
                    );
                    cq
                }
            };
            let Some(cq) = cq else {
                continue;
            };
            let Some(schedule) = Schedule::of(&cq) else {
                continue;
            };
            let Some(step) = schedule.step(self.last_runs.get(&key).copied(), now) else {
                continue;
            };
            self.last_runs.insert(key, step.last_run);
            let Some((start, end)) = step.range else {
                continue;
            };
            let select = with_time_range(&cq.select, start, end);
            let stmt = Statement::Select(Box::new(select));
            let results = crate::exec::execute(db, &[stmt], Some(&database)).await;
            match results.into_iter().find_map(|r| r.error) {
                Some(e) => {
                    tracing::warn!(%database, name = %meta.name, start, end, error = %e, "continuous query failed")
                }
                None => ran += 1,
            }
        }
        ran
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000_000_000;

    fn sched(interval: i64, every: i64, for_: i64) -> Schedule {
        Schedule {
            interval,
            offset: 0,
            every,
            for_,
        }
    }

    #[test]
    fn first_check_records_the_boundary_and_computes_nothing_between_boundaries() {
        let s = sched(M, 0, 0);
        let now = 100 * M + 7;
        let step = s.step(None, now).unwrap();
        assert_eq!(step.last_run, 100 * M);
        assert_eq!(step.range, None);
        // Not due before the next boundary, due at it, over the interval that just ended.
        assert_eq!(s.step(Some(100 * M), 101 * M - 1), None);
        let step = s.step(Some(100 * M), 101 * M + 3).unwrap();
        assert_eq!(step.last_run, 101 * M);
        assert_eq!(step.range, Some((100 * M, 101 * M)));
    }

    #[test]
    fn resample_for_reaches_back_and_every_sets_the_period() {
        // EVERY 1m FOR 5m over time(1m): five intervals, every minute.
        let s = sched(M, M, 5 * M);
        let step = s.step(Some(100 * M), 101 * M).unwrap();
        assert_eq!(step.range, Some((96 * M, 101 * M)));
        // EVERY 30m over time(10m): every 30 minutes, over the 30 minutes that ended.
        let s = sched(10 * M, 30 * M, 0);
        assert_eq!(s.step(Some(90 * M), 119 * M), None);
        let step = s.step(Some(90 * M), 120 * M).unwrap();
        assert_eq!(step.last_run, 120 * M);
        assert_eq!(step.range, Some((90 * M, 120 * M)));
    }

    #[test]
    fn a_late_check_computes_only_the_span_back_from_its_due_time() {
        // Checked 3.5 intervals late: influxd computes from the due run's interval to now's.
        let s = sched(M, 0, 0);
        let step = s.step(Some(100 * M), 104 * M + M / 2).unwrap();
        assert_eq!(step.last_run, 104 * M);
        assert_eq!(step.range, Some((100 * M, 104 * M)));
    }

    #[test]
    fn time_conditions_are_replaced() {
        let Statement::Select(sel) = influxql::parse_statement(
            "SELECT mean(v) INTO x FROM m WHERE time > now() - 1h AND host = 'a' GROUP BY time(1m)",
        )
        .unwrap() else {
            panic!()
        };
        let got = with_time_range(&sel, 60, 120);
        assert_eq!(
            got.condition.unwrap().to_string(),
            "(host = 'a') AND time >= 60 AND time < 120"
        );
    }
}
