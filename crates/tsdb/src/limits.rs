//! Bounds on the work of one query: InfluxDB's `max-select-point`, `max-select-series`,
//! `max-select-buckets` and `query-timeout` ([`crate::Options`], `torc tsdb` flags of the same
//! names), with influxd's error texts, which name the setting that raises each limit.
//!
//! What is counted, per statement (the time limit is per request):
//! * points: every stored value a `SELECT` reads (subqueries included), as influxd counts
//!   them, and also every `GROUP BY time` bucket it builds (each group allocates its
//!   buckets, filled or not): a `fill()` over a long empty range reads nothing yet makes rows,
//!   so without this nothing would bound its memory. Values are counted as each series is read.
//! * series: the series a `SELECT` reads after its tag conditions (subqueries included).
//! * buckets: the `GROUP BY time` buckets of a group, from the lower time bound (influxd's
//!   check, made before any data is read) or, without one, from the group's first point (which
//!   influxd does not check) up to the upper bound or now.
//! * time: from the start of the request. Execution checks the deadline cooperatively (before
//!   each statement, per series read, every few thousand rows filtered, projected or bucketed),
//!   so a query past its time stops working, not just the client waiting; the statement fails
//!   with `query-timeout limit exceeded` and the rest of the request is not run (a read that
//!   ends past the deadline is answered the same way). Statements that change data are not
//!   interrupted once started (their deadline check is before).
//!
//! Defaults differ from influxd's (which are all 0, no limit) because a rack's services must
//! not grow without bound: see [`Options::default`](crate::Options). 0 turns a limit off.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Limits a query runs under; 0 (or a zero timeout) means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    pub max_select_point: usize,
    pub max_select_series: usize,
    pub max_select_buckets: usize,
    pub query_timeout: Duration,
}

/// How often the row loops look at the clock (a power of two).
const CHECK_EVERY: u32 = 4096;

/// What one request has used of its [`QueryLimits`] (atomics only so that it is `Sync`:
/// one request's execution is sequential).
#[derive(Debug)]
pub struct Budget {
    limits: QueryLimits,
    deadline: Option<Instant>,
    points: AtomicUsize,
    series: AtomicUsize,
    ticks: AtomicU32,
}

/// A limit reached, with the count and the limit (influxd's texts; `exceeed` is influxd 1.6's
/// spelling, kept so that clients matching on it keep working).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("query-timeout limit exceeded")]
    Timeout,
    #[error("max-select-point limit exceeed: ({count}/{limit})")]
    Points { count: usize, limit: usize },
    #[error("max-select-series limit exceeded: ({count}/{limit})")]
    Series { count: usize, limit: usize },
    #[error("max-select-buckets limit exceeded: ({count}/{limit})")]
    Buckets { count: usize, limit: usize },
}

impl Budget {
    /// A budget whose time starts now.
    pub fn new(limits: QueryLimits) -> Budget {
        let deadline = (!limits.query_timeout.is_zero())
            .then(|| Instant::now().checked_add(limits.query_timeout))
            .flatten();
        Budget {
            limits,
            deadline,
            points: AtomicUsize::new(0),
            series: AtomicUsize::new(0),
            ticks: AtomicU32::new(0),
        }
    }

    /// No limits at all (for internal reads).
    pub fn unlimited() -> Budget {
        Budget::new(QueryLimits {
            max_select_point: 0,
            max_select_series: 0,
            max_select_buckets: 0,
            query_timeout: Duration::ZERO,
        })
    }

    /// Starts a statement: its point and series counts begin at zero; the deadline stays.
    pub fn start_statement(&self) -> Result<(), LimitError> {
        self.points.store(0, Ordering::Relaxed);
        self.series.store(0, Ordering::Relaxed);
        self.check_time()
    }

    /// The deadline, checked now.
    pub fn check_time(&self) -> Result<(), LimitError> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(LimitError::Timeout),
            _ => Ok(()),
        }
    }

    /// The deadline, checked every 4096 calls (for per-row loops).
    pub fn tick(&self) -> Result<(), LimitError> {
        let t = self.ticks.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if t.is_multiple_of(CHECK_EVERY) {
            self.check_time()
        } else {
            Ok(())
        }
    }

    /// Counts `n` more points (and checks the deadline).
    pub fn points(&self, n: usize) -> Result<(), LimitError> {
        let total = self.points.load(Ordering::Relaxed).saturating_add(n);
        self.points.store(total, Ordering::Relaxed);
        let limit = self.limits.max_select_point;
        if limit > 0 && total > limit {
            return Err(LimitError::Points {
                count: total,
                limit,
            });
        }
        self.check_time()
    }

    /// Counts `n` more series.
    pub fn series(&self, n: usize) -> Result<(), LimitError> {
        let total = self.series.load(Ordering::Relaxed).saturating_add(n);
        self.series.store(total, Ordering::Relaxed);
        let limit = self.limits.max_select_series;
        if limit > 0 && total > limit {
            return Err(LimitError::Series {
                count: total,
                limit,
            });
        }
        Ok(())
    }

    /// Checks the bucket count of one group (or of the statement's time range).
    pub fn buckets(&self, n: usize) -> Result<(), LimitError> {
        let limit = self.limits.max_select_buckets;
        if limit > 0 && n > limit {
            return Err(LimitError::Buckets { count: n, limit });
        }
        Ok(())
    }
}

/// Number of `GROUP BY time(interval, offset)` buckets from the one holding `lo` to the one
/// holding `hi` (0 if `hi < lo`), without overflow.
pub fn bucket_count(lo: i64, hi: i64, interval: i64, offset: i64) -> usize {
    if interval <= 0 {
        return 1;
    }
    let first = lo.saturating_sub(lo.saturating_sub(offset).rem_euclid(interval));
    if hi < first {
        return 0;
    }
    let span = (i128::from(hi) - i128::from(first)) / i128::from(interval) + 1;
    usize::try_from(span).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(points: usize, series: usize, buckets: usize, ms: u64) -> QueryLimits {
        QueryLimits {
            max_select_point: points,
            max_select_series: series,
            max_select_buckets: buckets,
            query_timeout: Duration::from_millis(ms),
        }
    }

    #[test]
    fn limits_use_influxd_texts() {
        let b = Budget::new(limits(10, 3, 3, 0));
        assert!(b.points(10).is_ok());
        assert_eq!(
            b.points(1).unwrap_err().to_string(),
            "max-select-point limit exceeed: (11/10)"
        );
        assert!(b.series(3).is_ok());
        assert_eq!(
            b.series(1).unwrap_err(),
            LimitError::Series { count: 4, limit: 3 }
        );
        assert_eq!(
            b.series(0).unwrap_err().to_string(),
            "max-select-series limit exceeded: (4/3)"
        );
        assert_eq!(
            b.buckets(4).unwrap_err().to_string(),
            "max-select-buckets limit exceeded: (4/3)"
        );
        b.start_statement().unwrap();
        assert!(b.points(10).is_ok() && b.series(3).is_ok());
    }

    #[test]
    fn zero_is_no_limit() {
        let b = Budget::new(limits(0, 0, 0, 0));
        assert!(b.points(usize::MAX).is_ok());
        assert!(b.series(usize::MAX).is_ok());
        assert!(b.buckets(usize::MAX).is_ok());
        assert!(b.check_time().is_ok());
    }

    #[test]
    fn the_deadline_passes() {
        let b = Budget::new(limits(0, 0, 0, 1));
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        assert_eq!(
            b.check_time().unwrap_err().to_string(),
            "query-timeout limit exceeded"
        );
        let ticks: Vec<_> = (0..CHECK_EVERY).map(|_| b.tick()).collect();
        assert_eq!(ticks.iter().filter(|t| t.is_err()).count(), 1);
    }

    #[test]
    fn buckets_are_counted_like_influxd() {
        const S: i64 = 1_000_000_000;
        // influxd's own test: time >= 5s AND time < 35s GROUP BY time(10s) is 4 buckets.
        assert_eq!(bucket_count(5 * S, 35 * S - 1, 10 * S, 0), 4);
        assert_eq!(bucket_count(0, 0, 10 * S, 0), 1);
        assert_eq!(bucket_count(10, 5, 1, 0), 0);
        assert_eq!(bucket_count(i64::MIN, i64::MAX, 1, 0), usize::MAX);
    }
}
