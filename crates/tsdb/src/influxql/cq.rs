//! Parsing of the continuous-query statements, with influxd 1.6's grammar and error texts
//! (its `parseCreateContinuousQueryStatement`, `parseResample`, `parseTarget`):
//! `CREATE CONTINUOUS QUERY name ON db [RESAMPLE [EVERY d] [FOR d]] BEGIN SELECT ... INTO ...
//! GROUP BY time(...) END`, `DROP CONTINUOUS QUERY name ON db`, and the `INTO` target of a
//! `SELECT` (`[[db.]rp.]measurement` or `[[db.]rp.]:MEASUREMENT`).
//! It checks syntax only (and, like influxd's parser, that an aggregating query has a `GROUP BY
//! time` and that `FOR` covers the interval); whether the database and policies exist is the
//! executor's, and running one is the crate's `cq` module's.

use super::ast::{ContinuousQuery, Dimension, Expr, Select, Statement, Target};
use super::error::{PResult, ParseError};
use super::lexer::{Tok, format_duration};
use super::parser::Parser;

impl Parser<'_> {
    /// `CREATE CONTINUOUS QUERY ...` after `CREATE CONTINUOUS`.
    pub(super) fn create_continuous_query(&mut self) -> PResult<Statement> {
        self.expect_kw("QUERY")?;
        let name = self.ident()?;
        self.expect_kw("ON")?;
        let database = self.ident()?;
        let (mut resample_every, mut resample_for) = (0, 0);
        if self.peek_kw("RESAMPLE") {
            self.bump();
            (resample_every, resample_for) = self.resample()?;
        }
        self.expect_kw("BEGIN")?;
        self.expect_kw("SELECT")?;
        let select = self.select_into(true)?;
        let interval = select.group_by_interval();
        if select.is_aggregate() && interval == 0 {
            // influxd reports the query's last token.
            let (t, pos) = self.last_token();
            return Err(self.err_at(&t, pos, &["GROUP BY time(...)"]));
        }
        let (t, pos) = self.next();
        if t != Tok::Keyword("END") {
            let mut e = self.err_at(&t, pos, &["END"]);
            // influxd puts the end of input one character nearer here than elsewhere.
            if let (Tok::Eof, ParseError::Unexpected { char, .. }) = (&t, &mut e) {
                *char -= 1;
            }
            return Err(e);
        }
        if resample_for != 0 {
            let least = interval.max(resample_every);
            if least > resample_for {
                return Err(ParseError::ResampleFor {
                    least: format_duration(least),
                    got: format_duration(resample_for),
                });
            }
        }
        Ok(Statement::CreateContinuousQuery(Box::new(
            ContinuousQuery {
                name,
                database,
                resample_every,
                resample_for,
                select,
            },
        )))
    }

    /// `[EVERY d] [FOR d]` after `RESAMPLE` (at least one of them).
    fn resample(&mut self) -> PResult<(i64, i64)> {
        let mut every = 0;
        let mut for_ = 0;
        if self.peek_kw("EVERY") {
            self.bump();
            every = self.duration()?;
        }
        if self.peek_kw("FOR") {
            self.bump();
            for_ = self.duration()?;
        }
        if every == 0 && for_ == 0 {
            let (t, pos) = self.next();
            return Err(self.err_at(&t, pos, &["EVERY", "FOR"]));
        }
        Ok((every, for_))
    }

    /// `DROP CONTINUOUS QUERY name ON db` after `DROP CONTINUOUS`.
    pub(super) fn drop_continuous_query(&mut self) -> PResult<Statement> {
        self.expect_kw("QUERY")?;
        let name = self.ident()?;
        self.expect_kw("ON")?;
        let database = self.ident()?;
        Ok(Statement::DropContinuousQuery { name, database })
    }

    /// The target after `INTO`: up to three dot-separated names, the last of which may be
    /// `:MEASUREMENT` (the name of the measurement each row comes from).
    pub(super) fn target(&mut self) -> PResult<Target> {
        let mut segs: Vec<String> = Vec::new();
        let backref = loop {
            let (t, pos) = self.next();
            match t {
                // `:MEASUREMENT` only after a dot, as influxd reads it.
                Tok::Illegal(c) if c == ":" && !segs.is_empty() => {
                    self.expect_kw("MEASUREMENT")?;
                    break true;
                }
                Tok::Ident(s) => segs.push(s),
                other => return Err(self.err_at(&other, pos, &["identifier"])),
            }
            if segs.len() < 3 && self.peek().0 == Tok::Dot {
                self.bump();
                continue;
            }
            break false;
        };
        let measurement = if backref { None } else { segs.pop() };
        let (database, retention_policy) = match segs.as_slice() {
            [] => (None, None),
            [rp] => (None, Some(rp.clone())),
            [db, rp, ..] => (Some(db.clone()), Some(rp.clone())),
        };
        Ok(Target {
            database,
            retention_policy,
            measurement,
        })
    }
}

impl Select {
    /// Whether a field calls a function anywhere in it (influxd's "not a raw query").
    pub fn is_aggregate(&self) -> bool {
        let mut found = false;
        for f in &self.fields {
            f.expr.walk(&mut |e| {
                found |= matches!(e, Expr::Call { .. } | Expr::Distinct(_));
            });
        }
        found
    }

    /// The `GROUP BY time(...)` interval (0: none).
    pub fn group_by_interval(&self) -> i64 {
        self.group_by_time().map_or(0, |(i, _)| i)
    }

    /// The `GROUP BY time(interval, offset)` of this query, if it has one.
    pub fn group_by_time(&self) -> Option<(i64, i64)> {
        self.dimensions.iter().find_map(|d| match d {
            Dimension::Time { interval, offset } => Some((*interval, *offset)),
            _ => None,
        })
    }
}
