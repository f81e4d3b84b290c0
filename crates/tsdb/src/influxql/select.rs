//! Parsing of a `SELECT` (also as a subquery): fields, sources (`db.rp.m`, regexes,
//! subqueries), `GROUP BY` dimensions, `fill`, `ORDER BY`, `LIMIT`/`OFFSET`/`SLIMIT`/`SOFFSET`.
//! It checks syntax only; which fields and functions make sense is the planner's (`exec::plan`).

use super::ast::{BinOp, Dimension, Expr, Field, Fill, Select, Source};
use super::error::{PResult, ParseError};
use super::lexer::Tok;
use super::parser::Parser;

impl Parser<'_> {
    /// A `SELECT` after its keyword: fields, `INTO`, `FROM`, then the optional clauses in order.
    pub(super) fn select(&mut self) -> PResult<Select> {
        self.select_into(false)
    }

    /// As [`Self::select`]; `into_required` (a continuous query's) refuses one without `INTO`.
    pub(super) fn select_into(&mut self, into_required: bool) -> PResult<Select> {
        let fields = self.fields()?;
        let into = if self.peek_kw("INTO") {
            self.bump();
            Some(self.target()?)
        } else if into_required {
            let (t, pos) = self.next();
            return Err(self.err_at(&t, pos, &["INTO"]));
        } else {
            None
        };
        self.expect_kw("FROM")?;
        let sources = self.sources()?;
        let condition = self.opt_where()?;
        let dimensions = self.group_by()?;
        let fill = self.fill()?;
        let (ordered, descending) = self.order_by()?;
        let (limit, offset) = self.limit_offset()?;
        let (mut slimit, mut soffset) = (0, 0);
        if self.peek_kw("SLIMIT") {
            self.bump();
            slimit = self.uint()?;
        }
        if self.peek_kw("SOFFSET") {
            self.bump();
            soffset = self.uint()?;
        }
        Ok(Select {
            fields,
            into,
            sources,
            condition,
            dimensions,
            fill,
            ordered,
            descending,
            limit,
            offset,
            slimit,
            soffset,
        })
    }

    /// The fields: expressions or `*`, each perhaps `AS alias`, separated by commas.
    fn fields(&mut self) -> PResult<Vec<Field>> {
        let mut fields = Vec::new();
        loop {
            let expr = if self.peek().0 == Tok::Star {
                self.bump();
                Expr::Wildcard
            } else {
                self.expr(0)?
            };
            let alias = if self.peek_kw("AS") {
                self.bump();
                Some(self.ident()?)
            } else {
                None
            };
            fields.push(Field { expr, alias });
            if self.peek().0 == Tok::Comma {
                self.bump();
                continue;
            }
            return Ok(fields);
        }
    }

    /// `[GROUP BY dimension, ...]`.
    fn group_by(&mut self) -> PResult<Vec<Dimension>> {
        let mut dimensions = Vec::new();
        if self.peek_kw("GROUP") {
            self.bump();
            self.expect_kw("BY")?;
            loop {
                dimensions.push(self.dimension()?);
                if self.peek().0 == Tok::Comma {
                    self.bump();
                    continue;
                }
                break;
            }
        }
        Ok(dimensions)
    }

    /// `[fill(null|none|previous|linear|number)]` (`fill(null)` when absent).
    fn fill(&mut self) -> PResult<Fill> {
        let Tok::Ident(w) = self.peek().0 else {
            return Ok(Fill::Null);
        };
        if !w.eq_ignore_ascii_case("fill") {
            return Ok(Fill::Null);
        }
        self.bump();
        let (t, pos) = self.next();
        if t != Tok::LParen {
            return Err(self.err_at(&t, pos, &["("]));
        }
        let (t, _) = self.next();
        let fill = match t {
            Tok::Ident(w) if w.eq_ignore_ascii_case("null") => Fill::Null,
            Tok::Ident(w) if w.eq_ignore_ascii_case("none") => Fill::None,
            Tok::Ident(w) if w.eq_ignore_ascii_case("previous") => Fill::Previous,
            Tok::Ident(w) if w.eq_ignore_ascii_case("linear") => Fill::Linear,
            Tok::Int(i) => Fill::Integer(i),
            Tok::Num(f) => Fill::Number(f),
            Tok::Op(BinOp::Sub) => match self.next().0 {
                Tok::Int(i) => Fill::Integer(-i),
                Tok::Num(f) => Fill::Number(-f),
                _ => return Err(ParseError::FillArgument),
            },
            _ => return Err(ParseError::FillArgument),
        };
        let (t, pos) = self.next();
        if t != Tok::RParen {
            return Err(self.err_at(&t, pos, &[")"]));
        }
        Ok(fill)
    }

    /// `[ORDER BY time [ASC|DESC]]`: (whether given, descending).
    fn order_by(&mut self) -> PResult<(bool, bool)> {
        if !self.peek_kw("ORDER") {
            return Ok((false, false));
        }
        self.bump();
        self.expect_kw("BY")?;
        let (t, pos) = self.next();
        match t {
            Tok::Ident(w) if w.eq_ignore_ascii_case("time") => {}
            Tok::Ident(_) => {
                return Err(ParseError::OrderByNotTime);
            }
            other => return Err(self.err_at(&other, pos, &["identifier"])),
        }
        let mut descending = false;
        if self.peek_kw("DESC") {
            self.bump();
            descending = true;
        } else if self.peek_kw("ASC") {
            self.bump();
        }
        Ok((true, descending))
    }

    pub(super) fn dimension(&mut self) -> PResult<Dimension> {
        let (t, pos) = self.peek();
        match t {
            Tok::Star => {
                self.bump();
                Ok(Dimension::Wildcard)
            }
            Tok::Op(BinOp::Div) => match self.next_regex() {
                (Tok::Regex(r), _) => Ok(Dimension::Regex(r)),
                (other, p) => Err(self.err_at(&other, p, &["regex"])),
            },
            Tok::Ident(w) => {
                self.bump();
                if w.eq_ignore_ascii_case("time") && self.peek().0 == Tok::LParen {
                    self.bump();
                    let (t, pos) = self.next();
                    let interval = match t {
                        Tok::Dur(d) if d > 0 => d,
                        other => return Err(self.err_at(&other, pos, &["duration"])),
                    };
                    let mut offset = 0;
                    let (t, pos) = self.next();
                    match t {
                        Tok::RParen => {}
                        Tok::Comma => {
                            let (t, pos) = self.next();
                            offset = match t {
                                Tok::Dur(d) => d,
                                Tok::Op(BinOp::Sub) => match self.next() {
                                    (Tok::Dur(d), _) => -d,
                                    (other, p) => {
                                        return Err(self.err_at(&other, p, &["duration"]));
                                    }
                                },
                                other => return Err(self.err_at(&other, pos, &["duration"])),
                            };
                            let (t, pos) = self.next();
                            if t != Tok::RParen {
                                return Err(self.err_at(&t, pos, &[")"]));
                            }
                        }
                        other => return Err(self.err_at(&other, pos, &[")"])),
                    }
                    Ok(Dimension::Time { interval, offset })
                } else {
                    Ok(Dimension::Tag(w))
                }
            }
            other => {
                self.bump();
                Err(self.err_at(&other, pos, &["identifier", "string", "number", "bool"]))
            }
        }
    }

    pub(super) fn sources(&mut self) -> PResult<Vec<Source>> {
        let mut out = Vec::new();
        loop {
            out.push(self.source()?);
            if self.peek().0 == Tok::Comma {
                self.bump();
                continue;
            }
            return Ok(out);
        }
    }

    pub(super) fn source(&mut self) -> PResult<Source> {
        // Up to three dot-separated segments; the last may be a regex.
        let mut segs: Vec<Option<String>> = Vec::new();
        loop {
            let (t, pos) = self.next_regex();
            match t {
                Tok::LParen if segs.is_empty() => {
                    self.expect_kw("SELECT")?;
                    let inner = self.nested(|p| p.select())?;
                    let (t, pos) = self.next();
                    if t != Tok::RParen {
                        return Err(self.err_at(&t, pos, &[")"]));
                    }
                    return Ok(Source::Subquery(Box::new(inner)));
                }
                Tok::Regex(r) => {
                    let (database, retention_policy) = db_rp(&segs);
                    return Ok(Source::Regex {
                        database,
                        retention_policy,
                        regex: r,
                    });
                }
                Tok::Ident(s) => segs.push(Some(s)),
                Tok::Keyword(k) if self.keyword_sources => {
                    let end = (pos + k.len()).min(self.lx.src.len());
                    segs.push(Some(self.lx.src.get(pos..end).unwrap_or(k).to_string()));
                }
                Tok::Dot => {
                    // `db..m`: empty retention policy segment.
                    segs.push(None);
                    if segs.len() > 3 {
                        return Err(self.err_at(&Tok::Dot, pos, &["identifier"]));
                    }
                    continue;
                }
                other => return Err(self.err_at(&other, pos, &["identifier"])),
            }
            if self.peek().0 == Tok::Dot && segs.len() < 3 {
                self.bump();
                continue;
            }
            break;
        }
        let name = segs.pop().flatten().unwrap_or_default();
        let (database, retention_policy) = db_rp(&segs);
        Ok(Source::Measurement {
            database,
            retention_policy,
            name,
        })
    }
}

fn db_rp(segs: &[Option<String>]) -> (Option<String>, Option<String>) {
    match segs {
        [] => (None, None),
        [rp] => (None, rp.clone()),
        [db, rp, ..] => (db.clone(), rp.clone()),
    }
}
