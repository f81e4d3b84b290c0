//! The InfluxQL lexer: tokens (`Tok`), keywords, and durations read and written as InfluxQL
//! spells them (`parse_duration`, `format_duration`).
//!
//! It reads one token at a time on demand of the parser (a `/` starts a regex only where the
//! parser asks for one); it builds no tree and reports no error itself: a bad token is
//! `Tok::Illegal`, which the parser reports at its position.

use super::ast::BinOp;
use super::error::{ParseError, Unterminated};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    /// Unquoted word that is a keyword (upper-cased).
    Keyword(&'static str),
    Str(String),
    Int(i64),
    Num(f64),
    Dur(i64),
    Regex(String),
    Op(BinOp),
    LParen,
    RParen,
    Comma,
    Semi,
    Dot,
    Star,
    Eof,
    Illegal(String),
}

pub(super) const KEYWORDS: &[&str] = &[
    "ALL",
    "ALTER",
    "ANALYZE",
    "ANY",
    "AS",
    "ASC",
    "BEGIN",
    "BY",
    "CARDINALITY",
    "CREATE",
    "CONTINUOUS",
    "DATABASE",
    "DATABASES",
    "DEFAULT",
    "DELETE",
    "DESC",
    "DESTINATIONS",
    "DIAGNOSTICS",
    "DISTINCT",
    "DROP",
    "DURATION",
    "END",
    "EVERY",
    "EXACT",
    "EXPLAIN",
    "FIELD",
    "FOR",
    "FROM",
    "GRANT",
    "GRANTS",
    "GROUP",
    "GROUPS",
    "IN",
    "INF",
    "INSERT",
    "INTO",
    "KEY",
    "KEYS",
    "KILL",
    "LIMIT",
    "MEASUREMENT",
    "MEASUREMENTS",
    "NAME",
    "OFFSET",
    "ON",
    "ORDER",
    "PASSWORD",
    "POLICY",
    "POLICIES",
    "PRIVILEGES",
    "QUERIES",
    "QUERY",
    "READ",
    "REPLICATION",
    "RESAMPLE",
    "RETENTION",
    "REVOKE",
    "SELECT",
    "SERIES",
    "SET",
    "SHARD",
    "SHARDS",
    "SHOW",
    "SLIMIT",
    "SOFFSET",
    "STATS",
    "SUBSCRIPTION",
    "SUBSCRIPTIONS",
    "TAG",
    "TO",
    "USER",
    "USERS",
    "VALUES",
    "WHERE",
    "WITH",
    "WRITE",
    "AND",
    "OR",
    "TRUE",
    "FALSE",
];

pub(super) fn keyword(word: &str) -> Option<&'static str> {
    let up = word.to_ascii_uppercase();
    KEYWORDS.iter().copied().find(|k| *k == up)
}

pub(super) struct Lexer<'a> {
    pub(super) src: &'a str,
    pub(super) pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    pub(super) fn skip_ws(&mut self) {
        loop {
            let rest = &self.src[self.pos..];
            if let Some(c) = rest.chars().next()
                && c.is_whitespace()
            {
                self.pos += c.len_utf8();
                continue;
            }
            if rest.starts_with("--") {
                match rest.find('\n') {
                    Some(n) => self.pos += n,
                    None => self.pos = self.src.len(),
                }
                continue;
            }
            return;
        }
    }

    /// Next token and its start offset. `regex` makes a leading `/` start a regex literal.
    pub(super) fn next(&mut self, regex: bool) -> (Tok, usize) {
        self.skip_ws();
        let start = self.pos;
        let Some(c) = self.peek_char() else {
            return (Tok::Eof, start);
        };
        let rest = &self.src[self.pos..];
        if regex && c == '/' {
            return (self.scan_regex(), start);
        }
        let two = rest.get(..2).unwrap_or("");
        let op2 = match two {
            "!=" | "<>" => Some(BinOp::Neq),
            "<=" => Some(BinOp::Lte),
            ">=" => Some(BinOp::Gte),
            "=~" => Some(BinOp::EqRegex),
            "!~" => Some(BinOp::NeqRegex),
            _ => None,
        };
        if let Some(op) = op2 {
            self.pos += 2;
            return (Tok::Op(op), start);
        }
        let single = |t: Tok, lx: &mut Lexer<'_>| {
            lx.pos += 1;
            (t, start)
        };
        match c {
            '(' => single(Tok::LParen, self),
            ')' => single(Tok::RParen, self),
            ',' => single(Tok::Comma, self),
            ';' => single(Tok::Semi, self),
            '*' => single(Tok::Star, self),
            '=' => single(Tok::Op(BinOp::Eq), self),
            '<' => single(Tok::Op(BinOp::Lt), self),
            '>' => single(Tok::Op(BinOp::Gt), self),
            '+' => single(Tok::Op(BinOp::Add), self),
            '-' => single(Tok::Op(BinOp::Sub), self),
            '/' => single(Tok::Op(BinOp::Div), self),
            '%' => single(Tok::Op(BinOp::Mod), self),
            '&' => single(Tok::Op(BinOp::BitAnd), self),
            '|' => single(Tok::Op(BinOp::BitOr), self),
            '^' => single(Tok::Op(BinOp::BitXor), self),
            '.' if !rest[1..].starts_with(|c: char| c.is_ascii_digit()) => single(Tok::Dot, self),
            '\'' => (
                self.scan_string('\'')
                    .map_or_else(|rest| Tok::Illegal(rest.0), Tok::Str),
                start,
            ),
            '"' => (
                self.scan_string('"')
                    .map_or_else(|rest| Tok::Illegal(rest.0), Tok::Ident),
                start,
            ),
            c if c.is_ascii_digit() || c == '.' => (self.scan_number(), start),
            c if c.is_alphabetic() || c == '_' => {
                let end = rest
                    .char_indices()
                    .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
                    .map_or(rest.len(), |(i, _)| i);
                let word = &rest[..end];
                self.pos += end;
                match keyword(word) {
                    Some(k) => (Tok::Keyword(k), start),
                    None => (Tok::Ident(word.to_string()), start),
                }
            }
            c => {
                self.pos += c.len_utf8();
                (Tok::Illegal(c.to_string()), start)
            }
        }
    }

    /// A quoted string's contents, or, when it is never closed, the rest of the input (which
    /// becomes an illegal token).
    pub(super) fn scan_string(&mut self, quote: char) -> Result<String, Unterminated> {
        let mut out = String::new();
        let mut chars = self.src[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += 1 + i + 1;
                return Ok(out);
            }
            if c == '\n' {
                break;
            }
            if c == '\\' {
                match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, c2)) if c2 == quote => out.push(c2),
                    Some((_, c2)) => {
                        out.push('\\');
                        out.push(c2);
                    }
                    None => break,
                }
                continue;
            }
            out.push(c);
        }
        let bad = self.src[self.pos..].to_string();
        self.pos = self.src.len();
        Err(Unterminated(bad))
    }

    pub(super) fn scan_regex(&mut self) -> Tok {
        let mut out = String::new();
        let mut chars = self.src[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '/' {
                self.pos += 1 + i + 1;
                return Tok::Regex(out);
            }
            if c == '\\' {
                match chars.next() {
                    Some((_, '/')) => out.push('/'),
                    Some((_, c2)) => {
                        out.push('\\');
                        out.push(c2);
                    }
                    None => break,
                }
                continue;
            }
            out.push(c);
        }
        let bad = self.src[self.pos..].to_string();
        self.pos = self.src.len();
        Tok::Illegal(bad)
    }

    pub(super) fn scan_number(&mut self) -> Tok {
        let rest = &self.src[self.pos..];
        let mut end = 0;
        let b = rest.as_bytes();
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let mut is_float = false;
        if end < b.len() && b[end] == b'.' {
            is_float = true;
            end += 1;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
        }
        if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
            let mut e = end + 1;
            if e < b.len() && (b[e] == b'+' || b[e] == b'-') {
                e += 1;
            }
            if e < b.len() && b[e].is_ascii_digit() {
                while e < b.len() && b[e].is_ascii_digit() {
                    e += 1;
                }
                is_float = true;
                end = e;
            }
        }
        let num = &rest[..end];
        if !is_float {
            // Duration: digits followed by unit(s), e.g. 1h30m, 10ms, 1u.
            let mut total: i64 = 0;
            let mut p = 0;
            let mut any = false;
            loop {
                let ds = p;
                while p < b.len() && b[p].is_ascii_digit() {
                    p += 1;
                }
                if p == ds {
                    break;
                }
                let unit_len = ["ns", "ms", "µs", "us", "u", "µ", "s", "m", "h", "d", "w"]
                    .iter()
                    .find(|u| rest[p..].starts_with(**u))
                    .map(|u| u.len());
                let Some(ul) = unit_len else {
                    p = ds;
                    break;
                };
                let unit = &rest[p..p + ul];
                // A unit must not run into more identifier characters (e.g. `10mb`).
                let after = rest[p + ul..].chars().next();
                if after.is_some_and(|c| c.is_alphabetic() || c == '_') {
                    p = ds;
                    break;
                }
                let n: i64 = rest[ds..p].parse().unwrap_or(i64::MAX);
                let mult = match unit {
                    "ns" => 1,
                    "u" | "us" | "µ" | "µs" => 1_000,
                    "ms" => 1_000_000,
                    "s" => 1_000_000_000,
                    "m" => 60_000_000_000,
                    "h" => 3_600_000_000_000,
                    "d" => 86_400_000_000_000,
                    _ => 604_800_000_000_000,
                };
                total = total.saturating_add(n.saturating_mul(mult));
                p += ul;
                any = true;
            }
            if any && p > end {
                self.pos += p;
                return Tok::Dur(total);
            }
            self.pos += end;
            return match num.parse::<i64>() {
                Ok(i) => Tok::Int(i),
                Err(_) => match num.parse::<f64>() {
                    Ok(f) => Tok::Num(f),
                    Err(_) => Tok::Illegal(num.to_string()),
                },
            };
        }
        self.pos += end;
        match num.parse::<f64>() {
            Ok(f) => Tok::Num(f),
            Err(_) => Tok::Illegal(num.to_string()),
        }
    }
}

pub(super) fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => s.clone(),
        Tok::Keyword(k) => (*k).to_string(),
        Tok::Str(s) => s.clone(),
        Tok::Int(i) => i.to_string(),
        Tok::Num(f) => f.to_string(),
        Tok::Dur(d) => format_duration(*d),
        Tok::Regex(r) => r.clone(),
        Tok::Op(op) => op.symbol().to_string(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Comma => ",".into(),
        Tok::Semi => ";".into(),
        Tok::Dot => ".".into(),
        Tok::Star => "*".into(),
        Tok::Eof => "EOF".into(),
        Tok::Illegal(s) => s.clone(),
    }
}

/// Parses a duration as InfluxQL writes one (`90s`, `1h30m`, `500ms`, `2d`; `0` alone is zero)
/// into nanoseconds: the form of the `torc tsdb` flags that mirror influxd's duration
/// settings (`query-timeout`).
pub fn parse_duration(text: &str) -> Result<i64, ParseError> {
    let text = text.trim();
    let mut lx = Lexer { src: text, pos: 0 };
    let (tok, _) = lx.next(false);
    let ns = match tok {
        Tok::Dur(d) if d >= 0 => d,
        Tok::Int(0) => 0,
        _ => -1,
    };
    if ns < 0 || lx.pos != text.len() {
        return Err(ParseError::Duration {
            text: text.to_string(),
        });
    }
    Ok(ns)
}

/// Formats nanoseconds as InfluxQL writes a duration literal (`1h`, `90s`, `1500ms`).
pub fn format_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    for (unit, n) in [
        ("w", 604_800_000_000_000i64),
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("u", 1_000),
    ] {
        if d % n == 0 {
            return format!("{}{unit}", d / n);
        }
    }
    format!("{d}ns")
}
