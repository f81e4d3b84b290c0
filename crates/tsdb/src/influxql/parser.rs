//! The parser's state and its small steps shared by every statement: look-ahead, errors at
//! influxd's positions, keywords, identifiers, `ON`, `FROM`, `WHERE`, `LIMIT`/`OFFSET`, durations.
//!
//! The statements themselves are parsed by the sibling modules (`statement`, `show`, `select`,
//! `expr`, `users`); this module decides no grammar of its own.

use super::ast::{BinOp, Expr, Source, Statement};
use super::error::{PResult, ParseError};
use super::lexer::{Lexer, Tok, keyword, tok_text};

pub(super) struct Parser<'a> {
    pub(super) lx: Lexer<'a>,
    /// One token of look-ahead (token, start offset).
    pub(super) peeked: Option<(Tok, usize)>,
    /// Current nesting of expressions and subqueries, bounded by `MAX_NESTING` so that no
    /// query can exhaust the stack.
    pub(super) depth: usize,
    /// Unquoted keywords are names in a `FROM` clause (the 0.8 API's consumers query
    /// `from stats`); InfluxQL 1.6 refuses them.
    pub(super) keyword_sources: bool,
    /// Where the last token taken starts, and whether it was lexed as a regex (influxd
    /// reports some errors at the token before the one that does not fit).
    last: (usize, bool),
}

/// Parses a (possibly `;`-separated) query.
pub fn parse_query(src: &str) -> PResult<Vec<Statement>> {
    parse_with(src, false)
}

/// Parses one statement as the 0.8 API reads it: as [`parse_statement`], but unquoted
/// keywords are accepted as names in a `FROM` clause (`select * from stats`).
pub fn parse_v08_statement(src: &str) -> PResult<Statement> {
    one_statement(parse_with(src, true)?)
}

fn parse_with(src: &str, keyword_sources: bool) -> PResult<Vec<Statement>> {
    let mut p = Parser {
        lx: Lexer { src, pos: 0 },
        peeked: None,
        depth: 0,
        keyword_sources,
        last: (0, false),
    };
    let mut out = Vec::new();
    loop {
        let (t, _) = p.peek();
        match t {
            Tok::Eof => break,
            Tok::Semi => {
                p.bump();
                continue;
            }
            _ => {}
        }
        out.push(p.statement()?);
        let (t, pos) = p.next();
        match t {
            Tok::Semi => continue,
            Tok::Eof => break,
            other => return Err(p.err_at(&other, pos, &[";"])),
        }
    }
    Ok(out)
}

/// Parses exactly one statement.
pub fn parse_statement(src: &str) -> PResult<Statement> {
    one_statement(parse_query(src)?)
}

fn one_statement(mut stmts: Vec<Statement>) -> PResult<Statement> {
    if stmts.len() == 1 {
        Ok(stmts.remove(0))
    } else if stmts.is_empty() {
        Err(ParseError::Empty)
    } else {
        Err(ParseError::NotOneStatement)
    }
}

impl<'a> Parser<'a> {
    pub(super) fn peek(&mut self) -> (Tok, usize) {
        if self.peeked.is_none() {
            self.peeked = Some(self.lx.next(false));
        }
        self.peeked.clone().unwrap_or((Tok::Eof, 0))
    }

    pub(super) fn next(&mut self) -> (Tok, usize) {
        let t = match self.peeked.take() {
            Some(t) => t,
            None => self.lx.next(false),
        };
        self.last = (t.1, false);
        t
    }

    /// The last token taken, lexed again (with its start).
    pub(super) fn last_token(&self) -> (Tok, usize) {
        let (pos, regex) = self.last;
        let mut lx = Lexer {
            src: self.lx.src,
            pos,
        };
        lx.next(regex)
    }

    pub(super) fn bump(&mut self) {
        let _ = self.next();
    }

    /// Next token lexed in regex mode (a `/` starts a regex); must not have peeked.
    pub(super) fn next_regex(&mut self) -> (Tok, usize) {
        let t = match self.peeked.take() {
            Some((Tok::Op(BinOp::Div), pos)) => {
                self.lx.pos = pos;
                self.lx.next(true)
            }
            Some(t) => t,
            None => self.lx.next(true),
        };
        self.last = (t.1, matches!(t.0, Tok::Regex(_)));
        t
    }

    pub(super) fn line_char(&self, pos: usize, eof: bool) -> (usize, usize) {
        let src = self.lx.src;
        let pos = pos.min(src.len());
        let before = &src[..pos];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
        (line, if eof { col + 2 } else { col + 1 })
    }

    pub(super) fn err_at(&self, found: &Tok, pos: usize, expected: &[&'static str]) -> ParseError {
        let eof = *found == Tok::Eof;
        let pos = match found {
            Tok::Eof => self.lx.src.len(),
            // InfluxDB reports a string at the character before its opening quote.
            Tok::Str(_) => pos.saturating_sub(1),
            _ => pos,
        };
        let (line, ch) = self.line_char(pos, eof);
        ParseError::Unexpected {
            found: tok_text(found),
            expected: expected.to_vec(),
            line,
            char: ch,
        }
    }

    pub(super) fn expect_kw(&mut self, kw: &'static str) -> PResult<()> {
        let (t, pos) = self.next();
        if t == Tok::Keyword(keyword(kw).unwrap_or("")) {
            Ok(())
        } else {
            Err(self.err_at(&t, pos, &[kw]))
        }
    }

    pub(super) fn peek_kw(&mut self, kw: &str) -> bool {
        matches!(self.peek().0, Tok::Keyword(k) if k == kw)
    }

    pub(super) fn ident(&mut self) -> PResult<String> {
        let (t, pos) = self.next();
        match t {
            Tok::Ident(s) => Ok(s),
            other => Err(self.err_at(&other, pos, &["identifier"])),
        }
    }

    pub(super) fn on_clause(&mut self) -> PResult<Option<String>> {
        if self.peek_kw("ON") {
            self.bump();
            Ok(Some(self.ident()?))
        } else {
            Ok(None)
        }
    }

    pub(super) fn opt_from(&mut self) -> PResult<Vec<Source>> {
        if self.peek_kw("FROM") {
            self.bump();
            self.sources()
        } else {
            Ok(Vec::new())
        }
    }

    /// `FROM <sources> [WHERE <cond>]` or `WHERE <cond>` (`DELETE`, `DROP SERIES`).
    pub(super) fn sources_or_condition(&mut self) -> PResult<(Vec<Source>, Option<Expr>)> {
        if self.peek_kw("FROM") || self.peek_kw("WHERE") {
            let sources = self.opt_from()?;
            let condition = self.opt_where()?;
            Ok((sources, condition))
        } else {
            let (t, pos) = self.next();
            Err(self.err_at(&t, pos, &["FROM", "WHERE"]))
        }
    }

    pub(super) fn opt_where(&mut self) -> PResult<Option<Expr>> {
        if self.peek_kw("WHERE") {
            self.bump();
            Ok(Some(self.expr(0)?))
        } else {
            Ok(None)
        }
    }

    pub(super) fn limit_offset(&mut self) -> PResult<(usize, usize)> {
        let mut limit = 0;
        let mut offset = 0;
        if self.peek_kw("LIMIT") {
            self.bump();
            limit = self.uint()?;
        }
        if self.peek_kw("OFFSET") {
            self.bump();
            offset = self.uint()?;
        }
        Ok((limit, offset))
    }

    /// `POLICY name ON database` (after `… RETENTION`): the policy's name and database.
    pub(super) fn policy_on(&mut self) -> PResult<(String, String)> {
        self.expect_kw("POLICY")?;
        let name = self.ident()?;
        self.expect_kw("ON")?;
        Ok((name, self.ident()?))
    }

    /// A duration literal, or `INF` (0).
    pub(super) fn duration_or_inf(&mut self) -> PResult<i64> {
        self.duration_literal(true)
    }

    /// A duration literal.
    pub(super) fn duration(&mut self) -> PResult<i64> {
        self.duration_literal(false)
    }

    fn duration_literal(&mut self, inf: bool) -> PResult<i64> {
        let (t, pos) = self.next();
        match t {
            Tok::Dur(d) => Ok(d),
            Tok::Keyword("INF") if inf => Ok(0),
            other => Err(self.err_at(&other, pos, &["duration"])),
        }
    }

    pub(super) fn uint(&mut self) -> PResult<usize> {
        let (t, pos) = self.next();
        match t {
            Tok::Int(n) if n >= 0 => Ok(n as usize),
            other => Err(self.err_at(&other, pos, &["integer"])),
        }
    }
}
