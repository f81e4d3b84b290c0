//! Parsing of the `SHOW` statements (`MEASUREMENTS`, `SERIES`, `TAG KEYS`/`VALUES`,
//! `FIELD KEYS`, `RETENTION POLICIES`, cardinalities, users and grants) with influxd 1.6's
//! grammar and error texts. It checks syntax only; answering them is `exec::show`'s.

use super::ast::{BinOp, Source, Statement, TagKeyMatch};
use super::error::PResult;
use super::lexer::Tok;
use super::parser::Parser;

/// What influxd 1.6 expects after `SHOW`.
const SHOW_WHAT: &[&str] = &[
    "CONTINUOUS",
    "DATABASES",
    "DIAGNOSTICS",
    "FIELD",
    "GRANTS",
    "MEASUREMENT",
    "MEASUREMENTS",
    "QUERIES",
    "RETENTION",
    "SERIES",
    "SHARD",
    "SHARDS",
    "STATS",
    "SUBSCRIPTIONS",
    "TAG",
    "USERS",
];

impl Parser<'_> {
    pub(super) fn show(&mut self) -> PResult<Statement> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("DATABASES") => Ok(Statement::ShowDatabases),
            Tok::Keyword("MEASUREMENTS") => self.show_measurements(),
            Tok::Keyword("SERIES") if self.peek_kw("CARDINALITY") => {
                self.bump();
                let on = self.on_clause()?;
                Ok(Statement::ShowSeriesCardinality { on })
            }
            Tok::Keyword("MEASUREMENT") => {
                self.expect_kw("CARDINALITY")?;
                let on = self.on_clause()?;
                Ok(Statement::ShowMeasurementCardinality { on })
            }
            Tok::Keyword("USERS") => Ok(Statement::ShowUsers),
            Tok::Keyword("GRANTS") => {
                self.expect_kw("FOR")?;
                Ok(Statement::ShowGrants {
                    user: self.ident()?,
                })
            }
            Tok::Keyword("CONTINUOUS") => {
                self.expect_kw("QUERIES")?;
                Ok(Statement::ShowContinuousQueries)
            }
            Tok::Keyword("SERIES") => {
                let on = self.on_clause()?;
                let sources = self.opt_from()?;
                let condition = self.opt_where()?;
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowSeries {
                    on,
                    sources,
                    condition,
                    limit,
                    offset,
                })
            }
            Tok::Keyword("TAG") => self.show_tag(),
            Tok::Keyword("FIELD") => {
                self.expect_kw("KEYS")?;
                let on = self.on_clause()?;
                let sources = self.opt_from()?;
                Ok(Statement::ShowFieldKeys { on, sources })
            }
            Tok::Keyword("RETENTION") => {
                self.expect_kw("POLICIES")?;
                let on = self.on_clause()?;
                Ok(Statement::ShowRetentionPolicies { on })
            }
            other => Err(self.err_at(&other, pos, SHOW_WHAT)),
        }
    }

    /// `SHOW MEASUREMENTS [ON db] [WITH MEASUREMENT =|=~ ...] [WHERE ...] [LIMIT] [OFFSET]`.
    fn show_measurements(&mut self) -> PResult<Statement> {
        let on = self.on_clause()?;
        let mut sources = Vec::new();
        if self.peek_kw("WITH") {
            self.bump();
            self.expect_kw("MEASUREMENT")?;
            let (t, pos) = self.next();
            match t {
                Tok::Op(BinOp::Eq) => sources.push(self.source()?),
                Tok::Op(BinOp::EqRegex) => {
                    let (r, rpos) = self.next_regex();
                    match r {
                        Tok::Regex(regex) => sources.push(Source::Regex {
                            database: None,
                            retention_policy: None,
                            regex,
                        }),
                        other => return Err(self.err_at(&other, rpos, &["regex"])),
                    }
                }
                other => return Err(self.err_at(&other, pos, &["=", "=~"])),
            }
        }
        let condition = self.opt_where()?;
        let (limit, offset) = self.limit_offset()?;
        Ok(Statement::ShowMeasurements {
            on,
            sources,
            condition,
            limit,
            offset,
        })
    }

    /// `SHOW TAG KEYS ...` or `SHOW TAG VALUES ... WITH KEY ...` after `SHOW TAG`.
    fn show_tag(&mut self) -> PResult<Statement> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("KEYS") => {
                let on = self.on_clause()?;
                let sources = self.opt_from()?;
                let condition = self.opt_where()?;
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowTagKeys {
                    on,
                    sources,
                    condition,
                    limit,
                    offset,
                })
            }
            Tok::Keyword("VALUES") => {
                let on = self.on_clause()?;
                let sources = self.opt_from()?;
                self.expect_kw("WITH")?;
                self.expect_kw("KEY")?;
                let keys = self.tag_key_match()?;
                let condition = self.opt_where()?;
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowTagValues {
                    on,
                    sources,
                    keys,
                    condition,
                    limit,
                    offset,
                })
            }
            other => Err(self.err_at(&other, pos, &["KEYS", "VALUES"])),
        }
    }

    pub(super) fn tag_key_match(&mut self) -> PResult<TagKeyMatch> {
        let (t, pos) = self.next();
        match t {
            Tok::Op(BinOp::Eq) => Ok(TagKeyMatch::Eq(self.ident()?)),
            Tok::Op(BinOp::Neq) => Ok(TagKeyMatch::Neq(self.ident()?)),
            Tok::Op(BinOp::EqRegex) | Tok::Op(BinOp::NeqRegex) => {
                let neg = t == Tok::Op(BinOp::NeqRegex);
                let (r, rpos) = self.next_regex();
                match r {
                    Tok::Regex(re) if neg => Ok(TagKeyMatch::NotRegex(re)),
                    Tok::Regex(re) => Ok(TagKeyMatch::Regex(re)),
                    other => Err(self.err_at(&other, rpos, &["regex"])),
                }
            }
            Tok::Keyword("IN") => {
                let (t, pos) = self.next();
                if t != Tok::LParen {
                    return Err(self.err_at(&t, pos, &["("]));
                }
                let mut keys = vec![self.ident()?];
                loop {
                    let (t, pos) = self.next();
                    match t {
                        Tok::Comma => keys.push(self.ident()?),
                        Tok::RParen => break,
                        other => return Err(self.err_at(&other, pos, &[",", ")"])),
                    }
                }
                Ok(TagKeyMatch::In(keys))
            }
            other => Err(self.err_at(&other, pos, &["=", "!=", "=~", "!~", "IN"])),
        }
    }
}
