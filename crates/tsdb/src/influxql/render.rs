//! Statements printed back as InfluxQL, the way InfluxDB 1.6 prints its AST (`String()`).
//!
//! InfluxDB puts a statement's text into its authorization errors (`statement 'SELECT ...',
//! requires READ on db`), so torc prints it the same way: identifiers quoted only when they
//! must be, floats with three decimals, durations in their largest whole unit, passwords as
//! `[REDACTED]`, and 1.6's quirks kept (`SHOW MEASUREMENTS ON db` does not quote `db`).
//!
//! Known differences, where torc's AST keeps less than InfluxDB's: a `GROUP BY time(d, 0s)`
//! prints as `time(d)`, and a statement torc cannot parse is never printed.

use std::fmt::{self, Display, Formatter, Write};

use super::ast::{
    ContinuousQuery, Dimension, Expr, Field, Fill, Select, Source, Statement, TagKeyMatch, Target,
};
use super::lexer::{format_duration, keyword};

/// An identifier as InfluxQL writes it: bare when it can be, else double-quoted with `\`, `"`
/// and newlines escaped. Keywords (and the empty name) are quoted.
pub fn quote_ident(s: &str) -> String {
    let bare = !s.is_empty()
        && keyword(s).is_none()
        && s.chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    if bare {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A duration literal as InfluxDB prints one: the largest unit that divides it, down to `u`.
fn duration(ns: i64) -> String {
    if ns % 1_000 == 0 {
        format_duration(ns)
    } else {
        format!("{}u", ns / 1_000)
    }
}

/// A float as Go's `%v` prints it (shortest digits; an exponent below 1e-4 and from 1e6 on).
fn go_float(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

struct List<'a, T>(&'a [T]);

impl<T: Display> Display for List<'_, T> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, x) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::VarRef(name) => f.write_str(&quote_ident(name)),
            Expr::Call { name, args } => write!(f, "{name}({})", List(args)),
            Expr::Integer(i) => write!(f, "{i}"),
            Expr::Number(n) => write!(f, "{n:.3}"),
            Expr::String(s) => f.write_str(&quote_string(s)),
            Expr::Regex(r) => write!(f, "/{}/", r.replace('/', "\\/")),
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Duration(d) => f.write_str(&duration(*d)),
            Expr::Wildcard => f.write_str("*"),
            Expr::Distinct(n) => write!(f, "DISTINCT {}", quote_ident(n)),
            Expr::Binary { op, lhs, rhs } => write!(f, "{lhs} {} {rhs}", op.symbol()),
            Expr::Paren(e) => write!(f, "({e})"),
        }
    }
}

impl Display for Field {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)?;
        if let Some(a) = &self.alias {
            write!(f, " AS {}", quote_ident(a))?;
        }
        Ok(())
    }
}

/// `db.rp.` before a measurement: each part quoted, an empty part left empty.
fn qualifier(f: &mut Formatter<'_>, db: &Option<String>, rp: &Option<String>) -> fmt::Result {
    if let Some(d) = db.as_deref().filter(|d| !d.is_empty()) {
        write!(f, "{}.", quote_ident(d))?;
    }
    if let Some(r) = rp.as_deref().filter(|r| !r.is_empty()) {
        f.write_str(&quote_ident(r))?;
    }
    if db.as_deref().is_some_and(|d| !d.is_empty()) || rp.as_deref().is_some_and(|r| !r.is_empty())
    {
        f.write_char('.')?;
    }
    Ok(())
}

impl Display for Source {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Source::Measurement {
                database,
                retention_policy,
                name,
            } => {
                qualifier(f, database, retention_policy)?;
                f.write_str(&quote_ident(name))
            }
            Source::Regex {
                database,
                retention_policy,
                regex,
            } => {
                qualifier(f, database, retention_policy)?;
                write!(f, "{}", Expr::Regex(regex.clone()))
            }
            Source::Subquery(s) => write!(f, "({s})"),
        }
    }
}

/// influxd's `Target.String()`: `db.rp.m`, with `:MEASUREMENT` for the source's name.
impl Display for Target {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        qualifier(f, &self.database, &self.retention_policy)?;
        match &self.measurement {
            Some(m) => f.write_str(&quote_ident(m)),
            None => f.write_str(":MEASUREMENT"),
        }
    }
}

/// influxd's `CreateContinuousQueryStatement.String()`.
impl Display for ContinuousQuery {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CREATE CONTINUOUS QUERY {} ON {} ",
            quote_ident(&self.name),
            quote_ident(&self.database)
        )?;
        if self.resample_every > 0 || self.resample_for > 0 {
            f.write_str("RESAMPLE ")?;
            if self.resample_every > 0 {
                write!(f, "EVERY {} ", duration(self.resample_every))?;
            }
            if self.resample_for > 0 {
                write!(f, "FOR {} ", duration(self.resample_for))?;
            }
        }
        write!(f, "BEGIN {} END", self.select)
    }
}

impl Display for Dimension {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Dimension::Time { interval, offset } if *offset != 0 => {
                write!(f, "time({}, {})", duration(*interval), duration(*offset))
            }
            Dimension::Time { interval, .. } => write!(f, "time({})", duration(*interval)),
            Dimension::Tag(t) => f.write_str(&quote_ident(t)),
            Dimension::Regex(r) => write!(f, "{}", Expr::Regex(r.clone())),
            Dimension::Wildcard => f.write_str("*"),
        }
    }
}

impl Display for Select {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "SELECT {}", List(&self.fields))?;
        if let Some(t) = &self.into {
            write!(f, " INTO {t}")?;
        }
        if !self.sources.is_empty() {
            write!(f, " FROM {}", List(&self.sources))?;
        }
        where_clause(f, &self.condition)?;
        if !self.dimensions.is_empty() {
            write!(f, " GROUP BY {}", List(&self.dimensions))?;
        }
        match &self.fill {
            Fill::Null => {}
            Fill::None => f.write_str(" fill(none)")?,
            Fill::Previous => f.write_str(" fill(previous)")?,
            Fill::Linear => f.write_str(" fill(linear)")?,
            Fill::Integer(i) => write!(f, " fill({i})")?,
            Fill::Number(n) => write!(f, " fill({})", go_float(*n))?,
        }
        if self.ordered {
            let dir = if self.descending { "DESC" } else { "ASC" };
            write!(f, " ORDER BY time {dir}")?;
        }
        for (kw, n) in [
            ("LIMIT", self.limit),
            ("OFFSET", self.offset),
            ("SLIMIT", self.slimit),
            ("SOFFSET", self.soffset),
        ] {
            if n > 0 {
                write!(f, " {kw} {n}")?;
            }
        }
        Ok(())
    }
}

fn where_clause(f: &mut Formatter<'_>, c: &Option<Expr>) -> fmt::Result {
    match c {
        Some(c) => write!(f, " WHERE {c}"),
        None => Ok(()),
    }
}

fn on(f: &mut Formatter<'_>, db: &Option<String>) -> fmt::Result {
    match db.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => write!(f, " ON {}", quote_ident(d)),
        None => Ok(()),
    }
}

fn from(f: &mut Formatter<'_>, sources: &[Source]) -> fmt::Result {
    if sources.is_empty() {
        Ok(())
    } else {
        write!(f, " FROM {}", List(sources))
    }
}

fn limit_offset(f: &mut Formatter<'_>, limit: usize, offset: usize) -> fmt::Result {
    if limit > 0 {
        write!(f, " LIMIT {limit}")?;
    }
    if offset > 0 {
        write!(f, " OFFSET {offset}")?;
    }
    Ok(())
}

/// `SHOW <what> [ON db] [FROM sources] [WITH KEY keys] [WHERE condition] [LIMIT n] [OFFSET n]`.
fn show(
    f: &mut Formatter<'_>,
    what: &str,
    db: &Option<String>,
    sources: &[Source],
    keys: Option<&TagKeyMatch>,
    condition: &Option<Expr>,
    (limit, offset): (usize, usize),
) -> fmt::Result {
    f.write_str(what)?;
    on(f, db)?;
    from(f, sources)?;
    if let Some(k) = keys {
        write!(f, " WITH KEY {k}")?;
    }
    where_clause(f, condition)?;
    limit_offset(f, limit, offset)
}

impl Display for TagKeyMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            TagKeyMatch::Eq(k) => write!(f, "= {}", quote_ident(k)),
            TagKeyMatch::Neq(k) => write!(f, "!= {}", quote_ident(k)),
            TagKeyMatch::In(keys) => {
                let keys: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
                write!(f, "IN ({})", List(&keys))
            }
            TagKeyMatch::Regex(r) => write!(f, "=~ {}", Expr::Regex(r.clone())),
            TagKeyMatch::NotRegex(r) => write!(f, "!~ {}", Expr::Regex(r.clone())),
        }
    }
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Select(s) => write!(f, "{s}"),
            Statement::ShowDatabases
            | Statement::ShowMeasurements { .. }
            | Statement::ShowSeries { .. }
            | Statement::ShowTagKeys { .. }
            | Statement::ShowTagValues { .. }
            | Statement::ShowFieldKeys { .. }
            | Statement::ShowRetentionPolicies { .. }
            | Statement::ShowSeriesCardinality { .. }
            | Statement::ShowMeasurementCardinality { .. }
            | Statement::ShowUsers
            | Statement::ShowContinuousQueries
            | Statement::ShowGrants { .. } => self.fmt_show(f),
            Statement::CreateDatabase { .. }
            | Statement::DropDatabase { .. }
            | Statement::DropSeries { .. }
            | Statement::Delete { .. }
            | Statement::DropMeasurement { .. }
            | Statement::DropRetentionPolicy { .. }
            | Statement::AlterRetentionPolicy { .. }
            | Statement::CreateRetentionPolicy { .. } => self.fmt_schema(f),
            Statement::CreateContinuousQuery(cq) => write!(f, "{cq}"),
            Statement::DropContinuousQuery { name, database } => write!(
                f,
                "DROP CONTINUOUS QUERY {} ON {}",
                quote_ident(name),
                quote_ident(database)
            ),
            Statement::CreateUser { .. }
            | Statement::DropUser { .. }
            | Statement::SetPassword { .. }
            | Statement::Grant { .. }
            | Statement::GrantAdmin { .. }
            | Statement::Revoke { .. }
            | Statement::RevokeAdmin { .. } => self.fmt_user(f),
        }
    }
}

// Each of these prints the statements `fmt` hands it (and nothing for any other).
impl Statement {
    /// The `SHOW` statements.
    fn fmt_show(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let q = quote_ident;
        match self {
            Statement::ShowDatabases => f.write_str("SHOW DATABASES"),
            Statement::ShowMeasurements {
                on,
                sources,
                condition,
                limit,
                offset,
            } => {
                f.write_str("SHOW MEASUREMENTS")?;
                // InfluxDB 1.6 writes this database name unquoted.
                if let Some(d) = on.as_deref().filter(|d| !d.is_empty()) {
                    write!(f, " ON {d}")?;
                }
                if let Some(s) = sources.first() {
                    let op = if matches!(s, Source::Regex { .. }) {
                        "=~"
                    } else {
                        "="
                    };
                    write!(f, " WITH MEASUREMENT {op} {s}")?;
                }
                where_clause(f, condition)?;
                limit_offset(f, *limit, *offset)
            }
            Statement::ShowSeries {
                on,
                sources,
                condition,
                limit,
                offset,
            } => show(
                f,
                "SHOW SERIES",
                on,
                sources,
                None,
                condition,
                (*limit, *offset),
            ),
            Statement::ShowTagKeys {
                on,
                sources,
                condition,
                limit,
                offset,
            } => show(
                f,
                "SHOW TAG KEYS",
                on,
                sources,
                None,
                condition,
                (*limit, *offset),
            ),
            Statement::ShowTagValues {
                on,
                sources,
                keys,
                condition,
                limit,
                offset,
            } => show(
                f,
                "SHOW TAG VALUES",
                on,
                sources,
                Some(keys),
                condition,
                (*limit, *offset),
            ),
            Statement::ShowFieldKeys { on: db, sources } => {
                f.write_str("SHOW FIELD KEYS")?;
                on(f, db)?;
                from(f, sources)
            }
            Statement::ShowRetentionPolicies { on: db } => {
                f.write_str("SHOW RETENTION POLICIES")?;
                on(f, db)
            }
            Statement::ShowSeriesCardinality { on: db } => {
                f.write_str("SHOW SERIES CARDINALITY")?;
                on(f, db)
            }
            Statement::ShowMeasurementCardinality { on: db } => {
                f.write_str("SHOW MEASUREMENT CARDINALITY")?;
                on(f, db)
            }
            Statement::ShowUsers => f.write_str("SHOW USERS"),
            Statement::ShowContinuousQueries => f.write_str("SHOW CONTINUOUS QUERIES"),
            Statement::ShowGrants { user } => write!(f, "SHOW GRANTS FOR {}", q(user)),
            _ => Ok(()),
        }
    }

    /// The statements that change databases, policies, measurements and series.
    fn fmt_schema(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let q = quote_ident;
        match self {
            Statement::CreateDatabase { name } => write!(f, "CREATE DATABASE {}", q(name)),
            Statement::DropDatabase { name } => write!(f, "DROP DATABASE {}", q(name)),
            Statement::DropSeries { sources, condition } => {
                f.write_str("DROP SERIES")?;
                from(f, sources)?;
                where_clause(f, condition)
            }
            Statement::Delete { sources, condition } => {
                f.write_str("DELETE")?;
                from(f, sources)?;
                where_clause(f, condition)
            }
            Statement::DropMeasurement { name } => write!(f, "DROP MEASUREMENT {}", q(name)),
            Statement::DropRetentionPolicy { name, database } => {
                write!(f, "DROP RETENTION POLICY {} ON {}", q(name), q(database))
            }
            Statement::AlterRetentionPolicy {
                name,
                database,
                duration: d,
                replication,
                shard_duration,
                default,
            } => {
                write!(f, "ALTER RETENTION POLICY {} ON {}", q(name), q(database))?;
                if let Some(d) = d {
                    write!(f, " DURATION {}", duration(*d))?;
                }
                if let Some(r) = replication {
                    write!(f, " REPLICATION {r}")?;
                }
                if let Some(s) = shard_duration {
                    write!(f, " SHARD DURATION {}", duration(*s))?;
                }
                if *default {
                    f.write_str(" DEFAULT")?;
                }
                Ok(())
            }
            Statement::CreateRetentionPolicy {
                name,
                database,
                duration: d,
                replication,
                shard_duration,
                default,
            } => {
                write!(
                    f,
                    "CREATE RETENTION POLICY {} ON {} DURATION {} REPLICATION {replication}",
                    q(name),
                    q(database),
                    duration(*d)
                )?;
                if let Some(s) = shard_duration.filter(|s| *s > 0) {
                    write!(f, " SHARD DURATION {}", duration(s))?;
                }
                if *default {
                    f.write_str(" DEFAULT")?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The user statements (passwords redacted).
    fn fmt_user(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let q = quote_ident;
        match self {
            Statement::CreateUser { name, admin, .. } => {
                write!(f, "CREATE USER {} WITH PASSWORD [REDACTED]", q(name))?;
                if *admin {
                    f.write_str(" WITH ALL PRIVILEGES")?;
                }
                Ok(())
            }
            Statement::DropUser { name } => write!(f, "DROP USER {}", q(name)),
            Statement::SetPassword { name, .. } => {
                write!(f, "SET PASSWORD FOR {} = [REDACTED]", q(name))
            }
            Statement::Grant {
                privilege,
                database,
                user,
            } => write!(f, "GRANT {privilege} ON {} TO {}", q(database), q(user)),
            Statement::GrantAdmin { user } => write!(f, "GRANT ALL PRIVILEGES TO {}", q(user)),
            Statement::Revoke {
                privilege,
                database,
                user,
            } => write!(f, "REVOKE {privilege} ON {} FROM {}", q(database), q(user)),
            Statement::RevokeAdmin { user } => {
                write!(f, "REVOKE ALL PRIVILEGES FROM {}", q(user))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(quote_ident("cpu_1"), "cpu_1");
        assert_eq!(quote_ident("1cpu"), "\"1cpu\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident("and"), "\"and\"");
        assert_eq!(quote_ident("a b"), "\"a b\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(quote_ident("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote_ident("é"), "\"é\"");
    }

    #[test]
    fn numbers_print_as_go_does() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(-1.25), "-1.25");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(duration(90_000_000_000), "90s");
        assert_eq!(duration(1_500_000_000), "1500ms");
        assert_eq!(duration(1_500), "1u");
        assert_eq!(format!("{}", Expr::Number(2.0)), "2.000");
    }
}
