//! InfluxDB 0.8 compatibility shim: `/db/<db>/series` reads and writes, `/db` create/list.
//!
//! 0.8 had no tag/field split. Writes map **string columns to tags** and **numeric or boolean
//! columns to fields**; JSON numbers are stored as floats (0.8 decided types per point, and the
//! datacollector writes whole floats as `12`, so integer/float per point would conflict in a
//! 1.x schema). A `sequence_number` column in a write is ignored; `time` is in
//! `time_precision` units (default ms); a point without `time` gets the server's clock.
//!
//! Reads accept the 0.8 subset the legacy consumers use:
//! `list series [/re/]` and `select <cols|*> from <name|/re/> [where ...] [order asc|desc]
//! [limit N]`. Results are **newest first** unless `order asc`; every row starts with `time`
//! (ms unless `time_precision`) and `sequence_number`. There is one object per measurement
//! (all its series merged). `sequence_number` is synthesised: unique within a response and
//! increasing with time (1 for the oldest returned point); 0.8 stored it, torc does not.
//! `select *` lists the measurement's tag and field keys in alphabetical order.
//!
//! Authentication (with [`crate::Options::auth_enabled`]), as 0.8 answered it, against the
//! 1.x users: credentials are `u`/`p` in the URL or an `Authorization` header parsed as 0.8
//! did (`<scheme> <base64 of user:password>`; a malformed one is a 400 `Bad auth header`,
//! `Bad encoding` or `Bad auth value`). Every 0.8 request then needs them, even before an admin
//! exists (0.8 had no such bootstrap; admins are made through `/query`). Failures are plain
//! text with `WWW-Authenticate: Basic realm="influxdb"`: 401 `Invalid database/username/password`
//! without credentials, 401 `Invalid username/password` for bad ones. 0.8's cluster admins
//! are 1.x admins (`/db` needs one; a non-admin gets 401 `Invalid username/password`, as 0.8's
//! admin check answered), and 0.8's database users are the users with a privilege on that
//! database (others get the same 401). A database user without READ gets 403 `User doesn't
//! have read access to <name>` and one without WRITE 403 `User <user> doesn't have write
//! permissions for <series>`. 0.8 named the series in the read error; torc names the first
//! measurement of the query, or the database for `list series` and regex sources.

use std::fmt::Write;
use std::sync::Arc;

use crate::auth::{self, Caller};
use crate::exec::{self, ResultSeries, StatementResult, Val};
use crate::influxql::{self, Dimension, Expr, Statement};
use crate::json::{Epoch, write_str, write_val};
use crate::lineproto::Precision;
use crate::model::{FieldValue, Point};
use crate::storage::Tsdb;

/// A 0.8 API error: its HTTP status is [`V08Error::status`], its plain-text body the message
/// (0.8's words where 0.8 had them).
#[derive(Debug, Clone, thiserror::Error)]
pub enum V08Error {
    #[error(transparent)]
    Credentials(#[from] auth::CredentialsError),
    /// No credentials given, with authentication on.
    #[error("Invalid database/username/password")]
    NoCredentials,
    /// Unknown user, wrong password, or a user without the privilege the route needs.
    #[error("Invalid username/password")]
    BadCredentials,
    /// Checking the password failed (bcrypt busy or broken).
    #[error(transparent)]
    Auth(#[from] crate::password::AuthError),
    #[error("User {user} doesn't have write permissions for {series}")]
    WriteDenied { user: String, series: String },
    #[error("User doesn't have read access to {name}")]
    ReadDenied { name: String },
    #[error("invalid JSON: {0}")]
    Json(#[source] Arc<serde_json::Error>),
    #[error("expected a JSON array of series")]
    NotSeriesArray,
    #[error("series without a name")]
    SeriesName,
    #[error("series {series}: missing columns")]
    NoColumns { series: String },
    #[error("column names must be strings")]
    ColumnName,
    #[error("series {series}: a column without a name")]
    EmptyColumn { series: String },
    #[error("series {series}: missing points")]
    NoPoints { series: String },
    #[error("a point must be an array")]
    PointNotArray,
    #[error("series {series}: point has {values} values for {columns} columns")]
    PointWidth {
        series: String,
        values: usize,
        columns: usize,
    },
    #[error("time must be a number")]
    TimeNotNumber,
    #[error("time out of range")]
    TimeOutOfRange,
    #[error("bad number")]
    BadNumber,
    #[error("column {column}: unsupported value {value}")]
    UnsupportedValue {
        column: String,
        value: serde_json::Value,
    },
    #[error("series {series}: a point needs at least one numeric or boolean column")]
    NoFields { series: String },
    #[error("Database {database} doesn't exist")]
    NoDatabase { database: String },
    #[error("missing required parameter q")]
    NoQuery,
    #[error("invalid regex: {0}")]
    Regex(#[source] regex::Error),
    #[error("error parsing query: {0}")]
    Parse(#[source] influxql::ParseError),
    #[error("only `select` and `list series` are supported on the 0.8 endpoint")]
    NotSelect,
    #[error("aggregates are not supported on the 0.8 endpoint; use /query")]
    Aggregate,
    #[error("group by is not supported on the 0.8 endpoint; use /query")]
    GroupBy,
    #[error("no result")]
    NoResult,
    /// The statement failed in the executor.
    #[error(transparent)]
    Query(exec::QueryError),
    #[error("body must be {{\"name\":\"<db>\"}}")]
    CreateBody,
    #[error("database {name} exists")]
    DatabaseExists { name: String },
    /// Creating a database or writing failed in the store.
    #[error(transparent)]
    Storage(#[from] crate::Error),
}

impl V08Error {
    /// The HTTP status 0.8 answered with.
    pub fn status(&self) -> u16 {
        match self {
            V08Error::NoCredentials | V08Error::BadCredentials => 401,
            V08Error::WriteDenied { .. } | V08Error::ReadDenied { .. } => 403,
            V08Error::DatabaseExists { .. } => 409,
            V08Error::Auth(_) => 503,
            V08Error::Storage(crate::Error::PartialWrite { .. } | crate::Error::Name(_)) => 400,
            V08Error::Storage(_) => 500,
            _ => 400,
        }
    }
}

/// Authenticates a 0.8 request (see the module doc); [`Caller::Open`] when authentication is
/// disabled.
pub async fn authenticate(
    db: &Tsdb,
    query: &str,
    authorization: Option<&[u8]>,
) -> Result<Caller, V08Error> {
    if !db.options().auth_enabled {
        return Ok(Caller::Open);
    }
    let (user, password) =
        auth::v08_credentials(query, authorization)?.ok_or(V08Error::NoCredentials)?;
    match db.authenticate(&user, &password).await {
        Ok(Some(u)) => Ok(Caller::User(u)),
        Ok(None) => Err(V08Error::BadCredentials),
        Err(e) => Err(e.into()),
    }
}

/// 0.8's cluster-admin check (`/db`).
pub fn require_admin(caller: &Caller) -> Result<(), V08Error> {
    match caller {
        Caller::User(u) if !u.admin => Err(V08Error::BadCredentials),
        _ => Ok(()),
    }
}

/// 0.8's database-user check: an admin, or a user with some privilege on `dbname`.
pub fn require_db_user(caller: &Caller, dbname: &str) -> Result<(), V08Error> {
    match caller {
        Caller::User(u)
            if !u.admin
                && u.privileges
                    .get(dbname)
                    .is_none_or(|p| *p == crate::influxql::Privilege::None) =>
        {
            Err(V08Error::BadCredentials)
        }
        _ => Ok(()),
    }
}

/// The 403 for a database user who may not write `points` into `dbname`.
pub fn require_write(caller: &Caller, dbname: &str, points: &[Point]) -> Result<(), V08Error> {
    match caller {
        Caller::User(u) if !u.may(crate::influxql::Privilege::Write, dbname) => {
            Err(V08Error::WriteDenied {
                user: u.name.clone(),
                series: points
                    .first()
                    .map_or(dbname, |p| p.measurement.as_str())
                    .to_string(),
            })
        }
        _ => Ok(()),
    }
}

fn read_denied(name: &str) -> V08Error {
    V08Error::ReadDenied {
        name: name.to_string(),
    }
}

fn precision(p: Option<&str>) -> Precision {
    match p {
        Some("s") => Precision::Seconds,
        Some("u") | Some("us") => Precision::Micros,
        Some("ns") | Some("n") => Precision::Nanos,
        _ => Precision::Millis,
    }
}

/// Converts a 0.8 write body into points.
pub fn parse_write(
    body: &[u8],
    time_precision: Option<&str>,
    now: i64,
) -> Result<Vec<Point>, V08Error> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| V08Error::Json(Arc::new(e)))?;
    let arr = v.as_array().ok_or(V08Error::NotSeriesArray)?;
    let unit = precision(time_precision).nanos();
    let mut out = Vec::new();
    for s in arr {
        let name = s
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .ok_or(V08Error::SeriesName)?;
        let series = || name.to_string();
        let cols: Vec<&str> = s
            .get("columns")
            .and_then(|c| c.as_array())
            .ok_or_else(|| V08Error::NoColumns { series: series() })?
            .iter()
            .map(|c| c.as_str().ok_or(V08Error::ColumnName))
            .collect::<Result<_, _>>()?;
        if cols.iter().any(|c| c.is_empty()) {
            return Err(V08Error::EmptyColumn { series: series() });
        }
        let points = s
            .get("points")
            .and_then(|p| p.as_array())
            .ok_or_else(|| V08Error::NoPoints { series: series() })?;
        for p in points {
            let row = p.as_array().ok_or(V08Error::PointNotArray)?;
            if row.len() != cols.len() {
                return Err(V08Error::PointWidth {
                    series: series(),
                    values: row.len(),
                    columns: cols.len(),
                });
            }
            let mut time = now - now.rem_euclid(unit);
            let mut tags = Vec::new();
            let mut fields = Vec::new();
            for (c, v) in cols.iter().zip(row) {
                match *c {
                    "time" => {
                        let t = v
                            .as_i64()
                            .or_else(|| v.as_f64().map(|f| f as i64))
                            .ok_or(V08Error::TimeNotNumber)?;
                        time = t.checked_mul(unit).ok_or(V08Error::TimeOutOfRange)?;
                    }
                    "sequence_number" => {}
                    _ => match v {
                        // An empty tag is no tag, as in InfluxDB 1.x.
                        serde_json::Value::String(s) if s.is_empty() => {}
                        serde_json::Value::String(s) => tags.push((c.to_string(), s.clone())),
                        serde_json::Value::Number(n) => {
                            let f = n.as_f64().ok_or(V08Error::BadNumber)?;
                            fields.push((c.to_string(), FieldValue::Float(f)));
                        }
                        serde_json::Value::Bool(b) => {
                            fields.push((c.to_string(), FieldValue::Bool(*b)))
                        }
                        serde_json::Value::Null => {}
                        _ => {
                            return Err(V08Error::UnsupportedValue {
                                column: c.to_string(),
                                value: v.clone(),
                            });
                        }
                    },
                }
            }
            if fields.is_empty() {
                return Err(V08Error::NoFields { series: series() });
            }
            tags.sort_by(|a: &(String, String), b| a.0.cmp(&b.0));
            tags.dedup_by(|a, b| a.0 == b.0);
            out.push(Point {
                measurement: name.to_string(),
                tags,
                // A column named twice: the later value wins, as in line protocol.
                fields: crate::lineproto::dedup_fields(fields),
                time,
            });
        }
    }
    Ok(out)
}

/// Runs a 0.8 query and renders the 0.8 JSON body.
/// `caller` has passed [`require_db_user`]; its read access is checked here.
pub async fn query(
    db: &Tsdb,
    caller: &Caller,
    dbname: &str,
    q: &str,
    time_precision: Option<&str>,
) -> Result<String, V08Error> {
    if db.database(dbname).is_none() {
        return Err(V08Error::NoDatabase {
            database: dbname.to_string(),
        });
    }
    let reader = match caller {
        Caller::User(u) if !u.admin => Some(u),
        _ => None,
    };
    let trimmed = q.trim().trim_end_matches(';').trim();
    let lower = trimmed.to_ascii_lowercase();
    let epoch = Epoch::Div(precision(time_precision).nanos());
    if let Some(rest) = lower.strip_prefix("list series") {
        let rest = trimmed[trimmed.len() - rest.len()..].trim();
        let denied = reader.is_some_and(|u| !u.may(crate::influxql::Privilege::Read, dbname));
        return list_series(db, denied, dbname, rest);
    }
    // 0.8's `order asc|desc` sits before `limit`; InfluxQL has `ORDER BY time`.
    let (text, ascending) = rewrite_order(trimmed);
    let stmt = influxql::parse_v08_statement(&text).map_err(V08Error::Parse)?;
    let Statement::Select(mut sel) = stmt else {
        return Err(V08Error::NotSelect);
    };
    // A 0.8 query only reads.
    if sel.into.is_some() {
        return Err(V08Error::NotSelect);
    }
    if sel
        .fields
        .iter()
        .any(|f| matches!(f.expr, Expr::Call { .. }))
    {
        return Err(V08Error::Aggregate);
    }
    if sel
        .dimensions
        .iter()
        .any(|d| !matches!(d, Dimension::Time { .. }))
        || !sel.dimensions.is_empty()
    {
        return Err(V08Error::GroupBy);
    }
    sel.descending = !ascending;
    let named = match sel.sources.first() {
        Some(crate::influxql::Source::Measurement { name, .. }) => name.clone(),
        _ => dbname.to_string(),
    };
    let stmts = [Statement::Select(sel)];
    if let Some(u) = reader
        && auth::authorize_query(&Caller::User(u.clone()), db.user_count(), &stmts, dbname).is_err()
    {
        return Err(read_denied(&named));
    }
    let results = exec::execute(db, &stmts, Some(dbname)).await;
    let r: &StatementResult = results.first().ok_or(V08Error::NoResult)?;
    if let Some(e) = &r.error {
        return Err(V08Error::Query(e.clone()));
    }
    Ok(render_series(&r.series, ascending, epoch))
}

/// `list series [/regex/]`: the measurements with series, as 0.8 answers them. `denied`: the
/// caller may not read the database (refused once the pattern has been checked).
fn list_series(db: &Tsdb, denied: bool, dbname: &str, rest: &str) -> Result<String, V08Error> {
    let filter = if rest.is_empty() {
        None
    } else {
        let r = rest.trim_matches('/');
        Some(regex::Regex::new(r).map_err(V08Error::Regex)?)
    };
    if denied {
        return Err(read_denied(dbname));
    }
    let mut names = std::collections::BTreeSet::new();
    for shard in db.shards_of(dbname) {
        let st = shard.read();
        for (m, mi) in &st.index.measurements {
            if !mi.series.is_empty() && filter.as_ref().is_none_or(|re| re.is_match(m)) {
                names.insert(m.clone());
            }
        }
    }
    let mut out = String::from(
        "[{\"name\":\"list_series_result\",\"columns\":[\"time\",\"name\"],\"points\":[",
    );
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("[0,");
        write_str(&mut out, n);
        out.push(']');
    }
    out.push_str("]}]");
    Ok(out)
}

/// A query's series (no GROUP BY, so one per measurement) as 0.8 objects, with 0.8's
/// `sequence_number` column.
fn render_series(series: &[ResultSeries], ascending: bool, epoch: Epoch) -> String {
    let mut out = String::from("[");
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        write_str(&mut out, s.name.as_deref().unwrap_or(""));
        out.push_str(",\"columns\":[\"time\",\"sequence_number\"");
        for c in s.columns.iter().skip(1) {
            out.push(',');
            write_str(&mut out, c);
        }
        out.push_str("],\"points\":[");
        let n = s.values.len();
        for (j, row) in s.values.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push('[');
            write_val(&mut out, row.first().unwrap_or(&Val::Null), epoch);
            let seq = if ascending { j + 1 } else { n - j };
            let _ = write!(out, ",{seq}");
            for v in row.iter().skip(1) {
                out.push(',');
                write_val(&mut out, v, epoch);
            }
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

/// Replaces a trailing-clause `order asc|desc` (0.8) with nothing; returns (text, ascending).
fn rewrite_order(q: &str) -> (String, bool) {
    let words: Vec<&str> = q.split_whitespace().collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut asc = false;
    let mut i = 0;
    while i < words.len() {
        if words[i].eq_ignore_ascii_case("order")
            && i + 1 < words.len()
            && (words[i + 1].eq_ignore_ascii_case("asc")
                || words[i + 1].eq_ignore_ascii_case("desc"))
        {
            asc = words[i + 1].eq_ignore_ascii_case("asc");
            i += 2;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    (out.join(" "), asc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_maps_strings_to_tags() {
        let body = br#"[{"name":"network","columns":["time","hostname","network_in_bytes","interface_name"],"points":[[1470000000,"bladerunner1",20511,"p2p2"]]}]"#;
        let p = parse_write(body, Some("s"), 0).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].time, 1_470_000_000_000_000_000);
        assert_eq!(p[0].tags.len(), 2);
        assert_eq!(
            p[0].fields,
            vec![("network_in_bytes".to_string(), FieldValue::Float(20511.0))]
        );
    }

    /// Found by the `tsdb-v08` fuzz target: a column named twice made a point with the same
    /// field twice, an empty column name an empty field key, and an empty string an empty tag.
    #[test]
    fn columns_keep_point_invariants() {
        let body = br#"[{"name":"m","columns":["v","host","v","x"],"points":[[1,"",2,"a"]]}]"#;
        let p = parse_write(body, None, 0).unwrap();
        assert_eq!(p[0].fields, vec![("v".to_string(), FieldValue::Float(2.0))]);
        assert_eq!(p[0].tags, vec![("x".to_string(), "a".to_string())]);
        let body = br#"[{"name":"m","columns":["v",""],"points":[[1,2]]}]"#;
        assert_eq!(
            parse_write(body, None, 0).unwrap_err().to_string(),
            "series m: a column without a name"
        );
    }

    #[test]
    fn order_rewrite() {
        assert_eq!(
            rewrite_order("select * from x order asc limit 5"),
            ("select * from x limit 5".to_string(), true)
        );
    }
}
