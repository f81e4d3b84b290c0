//! How long the rack's metrics are kept: the statements the collector runs where it creates
//! its database (issue 21). Plain InfluxQL 1.x, so a real influxd in place of `torc tsdb` gets
//! the same setup.
//!
//! * The database's default policy (`autogen`, where the collector writes) keeps
//!   [`Retention::duration`] (default 7 days; 0 keeps forever), its shard groups sized by
//!   influxd 1.6's rule for that duration; the server drops older shards on its own schedule.
//! * With [`Retention::downsample`], a policy `long` keeps that long (default 52 weeks) the
//!   mean per 5 minutes of every numeric field of `machine`, `network` and `stats`, per series,
//!   written by the continuous query [`DOWNSAMPLE_CQ`] into `long` under the same names
//!   (`mean_<field>`); switched off, the query is dropped (the policy and its data stay).
//!
//! What it does not do: enforce anything (the server does), or fail a write when a statement
//! is refused (a user who may not change policies still writes; the refusal is logged).

use std::fmt::Write as _;

/// The continuous query that downsamples the collector's measurements.
pub const DOWNSAMPLE_CQ: &str = "torc_downsample_5m";

/// The retention policy that holds the downsampled series.
pub const LONG_POLICY: &str = "long";

const DAY_NS: i64 = 86_400_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;

/// How long the collector's database keeps what (durations in ns; see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The default policy's duration; 0 keeps forever.
    pub duration: i64,
    /// How long the 5-minute means are kept; `None`: no downsampling.
    pub downsample: Option<i64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            duration: 7 * DAY_NS,
            downsample: Some(52 * 7 * DAY_NS),
        }
    }
}

/// A duration as InfluxQL writes one: whole hours (`168h`), or `INF` for 0.
fn duration(ns: i64) -> String {
    if ns == 0 {
        "INF".into()
    } else if ns % HOUR_NS == 0 {
        format!("{}h", ns / HOUR_NS)
    } else {
        format!("{}s", (ns / 1_000_000_000).max(1))
    }
}

/// influxd 1.6's shard group duration for a policy's duration (0: forever).
fn shard_duration(ns: i64) -> i64 {
    match ns {
        0 => 7 * DAY_NS,
        d if d < 2 * DAY_NS => HOUR_NS,
        d if d <= 180 * DAY_NS => DAY_NS,
        _ => 7 * DAY_NS,
    }
}

/// One step of the setup: a statement, and what to run instead when the server answers that
/// what it creates exists already (with other options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub statement: String,
    pub if_exists: Option<String>,
}

/// `name` as an InfluxQL identifier in double quotes (`"` and `\\` escaped).
pub(crate) fn quote(name: &str) -> String {
    let mut out = String::from("\"");
    for c in name.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Retention {
    /// The statements that set `database` up, in order.
    pub fn steps(&self, database: &str) -> Vec<Step> {
        let db = quote(database);
        let mut out = vec![Step {
            statement: format!(
                "ALTER RETENTION POLICY \"autogen\" ON {db} DURATION {} SHARD DURATION {}",
                duration(self.duration),
                duration(shard_duration(self.duration))
            ),
            if_exists: None,
        }];
        let Some(long) = self.downsample else {
            out.push(Step {
                statement: format!("DROP CONTINUOUS QUERY {} ON {db}", quote(DOWNSAMPLE_CQ)),
                if_exists: None,
            });
            return out;
        };
        let options = format!(
            "DURATION {} REPLICATION 1 SHARD DURATION {}",
            duration(long),
            duration(shard_duration(long))
        );
        let alter = format!(
            "ALTER RETENTION POLICY {} ON {db} DURATION {} SHARD DURATION {}",
            quote(LONG_POLICY),
            duration(long),
            duration(shard_duration(long))
        );
        out.push(Step {
            statement: format!(
                "CREATE RETENTION POLICY {} ON {db} {options}",
                quote(LONG_POLICY)
            ),
            if_exists: Some(alter),
        });
        let mut cq = String::new();
        let _ = write!(
            cq,
            "CREATE CONTINUOUS QUERY {name} ON {db} BEGIN SELECT mean(*) INTO {db}.{long}.:MEASUREMENT \
             FROM {db}.\"autogen\"./^(machine|network|stats)$/ GROUP BY time(5m), * END",
            name = quote(DOWNSAMPLE_CQ),
            long = quote(LONG_POLICY),
        );
        out.push(Step {
            if_exists: Some(format!(
                "DROP CONTINUOUS QUERY {} ON {db}; {cq}",
                quote(DOWNSAMPLE_CQ)
            )),
            statement: cq,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_shard_groups_follow_influxd() {
        assert_eq!(duration(0), "INF");
        assert_eq!(duration(7 * DAY_NS), "168h");
        assert_eq!(shard_duration(HOUR_NS), HOUR_NS);
        assert_eq!(shard_duration(7 * DAY_NS), DAY_NS);
        assert_eq!(shard_duration(52 * 7 * DAY_NS), 7 * DAY_NS);
    }

    #[test]
    fn downsampling_off_drops_the_query() {
        let r = Retention {
            duration: 0,
            downsample: None,
        };
        let steps = r.steps("torc");
        assert_eq!(
            steps[0].statement,
            "ALTER RETENTION POLICY \"autogen\" ON \"torc\" DURATION INF SHARD DURATION 168h"
        );
        assert_eq!(
            steps[1].statement,
            "DROP CONTINUOUS QUERY \"torc_downsample_5m\" ON \"torc\""
        );
    }
}
