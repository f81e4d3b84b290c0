//! InfluxQL: lexer, AST and recursive-descent parser for the subset torc serves.
//!
//! Errors mirror InfluxDB 1.6's text: `found X, expected Y at line L, char C`, with `X` the
//! offending token as written (keywords upper-cased, end of input as `EOF`). Positions are
//! 1-based; like InfluxDB, the end of input is reported one character past the last one + 1.
//!
//! Invariants: the parser never panics on any input, and no input controls its recursion:
//! operator chains are folded in a loop, parentheses, calls and subqueries nest at most 100
//! deep, and an expression tree is at most [`MAX_EXPR_DEPTH`] deep (the executor walks trees
//! recursively); it does no I/O and knows nothing of storage (semantic checks that need the
//! schema happen in the executor).

use std::fmt;

mod access;
mod render;
mod users;

pub use access::Required;
pub use render::quote_ident;

/// Why a query does not parse (without the `error parsing query: ` prefix the HTTP layer
/// adds). The messages are influxd 1.6's where it has one; `line` and `char` are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A token that does not fit: `found` as influxd prints it (`EOF`, a keyword, the text).
    #[error("found {found}, expected {} at line {line}, char {char}", expected.join(", "))]
    Unexpected {
        found: String,
        expected: Vec<&'static str>,
        line: usize,
        char: usize,
    },
    #[error("empty query")]
    Empty,
    #[error("expected a single statement")]
    NotOneStatement,
    #[error(
        "invalid duration {text:?}: expected a number and a unit (ns, u, ms, s, m, h, d, w), e.g. \
         60s"
    )]
    Duration { text: String },
    #[error("expected number argument in fill()")]
    FillArgument,
    #[error("only ORDER BY time supported at this time")]
    OrderByNotTime,
    /// Subqueries or parentheses nested past `MAX_NESTING`.
    #[error("query nested too deeply (more than {MAX_NESTING} levels)")]
    TooNested,
    #[error(
        "expression too deep: more than {MAX_EXPR_DEPTH} nested operators, parentheses or calls \
         at line {line}, char {char}"
    )]
    TooDeep { line: usize, char: usize },
}

/// The rest of the input after a quote that is never closed.
struct Unterminated(String);

// ---------------------------------------------------------------------------------------------
// AST

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Select(Box<Select>),
    ShowDatabases,
    ShowMeasurements {
        on: Option<String>,
        /// `WITH MEASUREMENT = name` or `=~ /regex/` (empty: all).
        sources: Vec<Source>,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    ShowSeries {
        on: Option<String>,
        sources: Vec<Source>,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    ShowTagKeys {
        on: Option<String>,
        sources: Vec<Source>,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    ShowTagValues {
        on: Option<String>,
        sources: Vec<Source>,
        keys: TagKeyMatch,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    ShowFieldKeys {
        on: Option<String>,
        sources: Vec<Source>,
    },
    ShowRetentionPolicies {
        on: Option<String>,
    },
    ShowSeriesCardinality {
        on: Option<String>,
    },
    ShowMeasurementCardinality {
        on: Option<String>,
    },
    /// `SHOW USERS`: every user and whether it is an admin, in creation order.
    ShowUsers,
    /// `SHOW GRANTS FOR user`.
    ShowGrants {
        user: String,
    },
    /// `CREATE USER name WITH PASSWORD 'pw' [WITH ALL PRIVILEGES]`.
    CreateUser {
        name: String,
        password: Password,
        admin: bool,
    },
    DropUser {
        name: String,
    },
    /// `SET PASSWORD FOR name = 'pw'`.
    SetPassword {
        name: String,
        password: Password,
    },
    /// `GRANT READ|WRITE|ALL [PRIVILEGES] ON db TO user`.
    Grant {
        privilege: Privilege,
        database: String,
        user: String,
    },
    /// `GRANT ALL [PRIVILEGES] TO user`: makes the user an admin.
    GrantAdmin {
        user: String,
    },
    /// `REVOKE READ|WRITE|ALL [PRIVILEGES] ON db FROM user`.
    Revoke {
        privilege: Privilege,
        database: String,
        user: String,
    },
    /// `REVOKE ALL [PRIVILEGES] FROM user`: takes the admin flag away.
    RevokeAdmin {
        user: String,
    },
    /// torc has no continuous queries: an empty list per database.
    ShowContinuousQueries,
    CreateDatabase {
        name: String,
    },
    DropDatabase {
        name: String,
    },
    /// `DROP SERIES [FROM ...] [WHERE <tag conditions>]` (at least one of the two).
    DropSeries {
        sources: Vec<Source>,
        condition: Option<Expr>,
    },
    /// `DELETE [FROM ...] [WHERE <tag conditions and time bounds>]` (at least one of the two).
    Delete {
        sources: Vec<Source>,
        condition: Option<Expr>,
    },
    DropMeasurement {
        name: String,
    },
    DropRetentionPolicy {
        name: String,
        database: String,
    },
    /// `ALTER RETENTION POLICY`: only the options given change.
    AlterRetentionPolicy {
        name: String,
        database: String,
        duration: Option<i64>,
        replication: Option<i64>,
        shard_duration: Option<i64>,
        default: bool,
    },
    CreateRetentionPolicy {
        name: String,
        database: String,
        duration: i64,
        replication: i64,
        shard_duration: Option<i64>,
        default: bool,
    },
}

/// A privilege on a database, as InfluxQL names it. The discriminants are InfluxDB's, so that
/// `REVOKE` can clear bits (`ALL` minus `READ` is `WRITE`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Privilege {
    #[serde(rename = "NO PRIVILEGES")]
    None = 0,
    #[serde(rename = "READ")]
    Read = 1,
    #[serde(rename = "WRITE")]
    Write = 2,
    #[serde(rename = "ALL PRIVILEGES")]
    All = 3,
}

impl Privilege {
    /// The privilege left after revoking `other` (a bit clear, as InfluxDB does it).
    pub fn without(self, other: Privilege) -> Privilege {
        Privilege::from_bits(self as u8 & !(other as u8))
    }

    fn from_bits(b: u8) -> Privilege {
        match b & 3 {
            1 => Privilege::Read,
            2 => Privilege::Write,
            3 => Privilege::All,
            _ => Privilege::None,
        }
    }

    /// InfluxQL's name: `READ`, `WRITE`, `ALL PRIVILEGES`, `NO PRIVILEGES`.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::None => "NO PRIVILEGES",
            Privilege::Read => "READ",
            Privilege::Write => "WRITE",
            Privilege::All => "ALL PRIVILEGES",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A password in a statement. Its `Debug` does not show it, so that a statement can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TagKeyMatch {
    Eq(String),
    Neq(String),
    In(Vec<String>),
    Regex(String),
    NotRegex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub fields: Vec<Field>,
    pub sources: Vec<Source>,
    pub condition: Option<Expr>,
    pub dimensions: Vec<Dimension>,
    pub fill: Fill,
    /// An `ORDER BY time` clause was written (InfluxQL shows it when it prints the statement).
    pub ordered: bool,
    pub descending: bool,
    pub limit: usize,
    pub offset: usize,
    pub slimit: usize,
    pub soffset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub expr: Expr,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Measurement {
        database: Option<String>,
        retention_policy: Option<String>,
        name: String,
    },
    Regex {
        database: Option<String>,
        retention_policy: Option<String>,
        regex: String,
    },
    /// `FROM (SELECT ...)`: the inner query's rows, as a measurement per result name.
    Subquery(Box<Select>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    Time { interval: i64, offset: i64 },
    Tag(String),
    Regex(String),
    Wildcard,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    Null,
    None,
    Previous,
    Linear,
    Number(f64),
    Integer(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    BitAnd,
    BitOr,
    BitXor,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    EqRegex,
    NeqRegex,
    And,
    Or,
}

impl BinOp {
    fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq
            | BinOp::Neq
            | BinOp::Lt
            | BinOp::Lte
            | BinOp::Gt
            | BinOp::Gte
            | BinOp::EqRegex
            | BinOp::NeqRegex => 4,
            BinOp::Add | BinOp::Sub | BinOp::BitOr | BinOp::BitXor => 5,
            BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::BitAnd => 6,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
            BinOp::Eq => "=",
            BinOp::Neq => "!=",
            BinOp::Lt => "<",
            BinOp::Lte => "<=",
            BinOp::Gt => ">",
            BinOp::Gte => ">=",
            BinOp::EqRegex => "=~",
            BinOp::NeqRegex => "!~",
            BinOp::And => "AND",
            BinOp::Or => "OR",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    VarRef(String),
    Call {
        name: String,
        args: Vec<Expr>,
    },
    Integer(i64),
    Number(f64),
    String(String),
    Regex(String),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    Wildcard,
    /// `DISTINCT name`: `distinct(name)` written as a keyword (printed back as written).
    Distinct(String),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Paren(Box<Expr>),
}

impl Expr {
    fn bin(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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

const KEYWORDS: &[&str] = &[
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

fn keyword(word: &str) -> Option<&'static str> {
    let up = word.to_ascii_uppercase();
    KEYWORDS.iter().copied().find(|k| *k == up)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
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
    fn next(&mut self, regex: bool) -> (Tok, usize) {
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
    fn scan_string(&mut self, quote: char) -> Result<String, Unterminated> {
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

    fn scan_regex(&mut self) -> Tok {
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

    fn scan_number(&mut self) -> Tok {
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

fn tok_text(t: &Tok) -> String {
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

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    lx: Lexer<'a>,
    /// One token of look-ahead (token, start offset).
    peeked: Option<(Tok, usize)>,
    /// Current nesting of expressions and subqueries, bounded by [`MAX_NESTING`] so that no
    /// query can exhaust the stack.
    depth: usize,
    /// Unquoted keywords are names in a `FROM` clause (the 0.8 API's consumers query
    /// `from stats`); InfluxQL 1.6 refuses them.
    keyword_sources: bool,
}

/// Deepest nesting of parentheses, calls and subqueries a query may have.
const MAX_NESTING: usize = 100;

/// Deepest expression tree a query may hold: operators, parentheses and calls, counted from
/// the leaves. A chain `a + b + c ...` is as deep as it is long, and the executor walks trees
/// recursively, so without this bound a long chain (well under the body limit) overflowed a
/// server thread's stack (issue 14). InfluxDB 1.6 has no such limit (Go's stacks grow); 500
/// levels run with room to spare on a 2 MiB thread in a debug build, even inside the deepest
/// subquery nesting (`tests/deep_expressions.rs`). Long lists of alternatives read better as a
/// regex anyway (`host =~ /^(a|b|c)$/`).
pub const MAX_EXPR_DEPTH: usize = 500;

type PResult<T> = Result<T, ParseError>;

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
    fn peek(&mut self) -> (Tok, usize) {
        if self.peeked.is_none() {
            self.peeked = Some(self.lx.next(false));
        }
        self.peeked.clone().unwrap_or((Tok::Eof, 0))
    }

    fn next(&mut self) -> (Tok, usize) {
        match self.peeked.take() {
            Some(t) => t,
            None => self.lx.next(false),
        }
    }

    fn bump(&mut self) {
        let _ = self.next();
    }

    /// Next token lexed in regex mode (a `/` starts a regex); must not have peeked.
    fn next_regex(&mut self) -> (Tok, usize) {
        if let Some((t, pos)) = self.peeked.take() {
            if t == Tok::Op(BinOp::Div) {
                self.lx.pos = pos;
                return self.lx.next(true);
            }
            return (t, pos);
        }
        self.lx.next(true)
    }

    fn line_char(&self, pos: usize, eof: bool) -> (usize, usize) {
        let src = self.lx.src;
        let pos = pos.min(src.len());
        let before = &src[..pos];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
        (line, if eof { col + 2 } else { col + 1 })
    }

    fn err_at(&self, found: &Tok, pos: usize, expected: &[&'static str]) -> ParseError {
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

    fn expect_kw(&mut self, kw: &'static str) -> PResult<()> {
        let (t, pos) = self.next();
        if t == Tok::Keyword(keyword(kw).unwrap_or("")) {
            Ok(())
        } else {
            Err(self.err_at(&t, pos, &[kw]))
        }
    }

    fn peek_kw(&mut self, kw: &str) -> bool {
        matches!(self.peek().0, Tok::Keyword(k) if k == kw)
    }

    fn ident(&mut self) -> PResult<String> {
        let (t, pos) = self.next();
        match t {
            Tok::Ident(s) => Ok(s),
            other => Err(self.err_at(&other, pos, &["identifier"])),
        }
    }

    fn statement(&mut self) -> PResult<Statement> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("SELECT") => Ok(Statement::Select(Box::new(self.select()?))),
            Tok::Keyword("SHOW") => self.show(),
            Tok::Keyword("CREATE") => self.create(),
            Tok::Keyword("ALTER") => {
                self.expect_kw("RETENTION")?;
                let (name, database) = self.policy_on()?;
                let (mut duration, mut replication, mut shard_duration) = (None, None, None);
                let mut default = false;
                let mut any = false;
                loop {
                    let (t, pos) = self.peek();
                    match t {
                        Tok::Keyword("DURATION") => {
                            self.bump();
                            duration = Some(self.duration_or_inf()?);
                        }
                        Tok::Keyword("REPLICATION") => {
                            self.bump();
                            let (t, pos) = self.next();
                            replication = Some(match t {
                                Tok::Int(n) if n >= 1 => n,
                                other => return Err(self.err_at(&other, pos, &["integer"])),
                            });
                        }
                        Tok::Keyword("SHARD") => {
                            self.bump();
                            self.expect_kw("DURATION")?;
                            shard_duration = Some(self.duration_or_inf()?);
                        }
                        Tok::Keyword("DEFAULT") => {
                            self.bump();
                            default = true;
                        }
                        other if !any => {
                            self.bump();
                            return Err(self.err_at(
                                &other,
                                pos,
                                &["DURATION", "REPLICATION", "SHARD", "DEFAULT"],
                            ));
                        }
                        _ => break,
                    }
                    any = true;
                }
                Ok(Statement::AlterRetentionPolicy {
                    name,
                    database,
                    duration,
                    replication,
                    shard_duration,
                    default,
                })
            }
            Tok::Keyword("DELETE") => {
                let (sources, condition) = self.sources_or_condition()?;
                Ok(Statement::Delete { sources, condition })
            }
            Tok::Keyword("GRANT") => self.grant(),
            Tok::Keyword("REVOKE") => self.revoke(),
            Tok::Keyword("SET") => self.set_password(),
            Tok::Keyword("DROP") => {
                let (t, pos) = self.next();
                match t {
                    Tok::Keyword("DATABASE") => Ok(Statement::DropDatabase {
                        name: self.ident()?,
                    }),
                    Tok::Keyword("SERIES") => {
                        let (sources, condition) = self.sources_or_condition()?;
                        Ok(Statement::DropSeries { sources, condition })
                    }
                    Tok::Keyword("MEASUREMENT") => Ok(Statement::DropMeasurement {
                        name: self.ident()?,
                    }),
                    Tok::Keyword("RETENTION") => {
                        let (name, database) = self.policy_on()?;
                        Ok(Statement::DropRetentionPolicy { name, database })
                    }
                    Tok::Keyword("USER") => Ok(Statement::DropUser {
                        name: self.ident()?,
                    }),
                    other => Err(self.err_at(
                        &other,
                        pos,
                        &[
                            "CONTINUOUS",
                            "MEASUREMENT",
                            "RETENTION",
                            "SERIES",
                            "SHARD",
                            "SUBSCRIPTION",
                            "USER",
                        ],
                    )),
                }
            }
            other => Err(self.err_at(
                &other,
                pos,
                &[
                    "SELECT", "DELETE", "SHOW", "CREATE", "DROP", "EXPLAIN", "GRANT", "REVOKE",
                    "ALTER", "SET", "KILL",
                ],
            )),
        }
    }

    fn on_clause(&mut self) -> PResult<Option<String>> {
        if self.peek_kw("ON") {
            self.bump();
            Ok(Some(self.ident()?))
        } else {
            Ok(None)
        }
    }

    fn opt_from(&mut self) -> PResult<Vec<Source>> {
        if self.peek_kw("FROM") {
            self.bump();
            self.sources()
        } else {
            Ok(Vec::new())
        }
    }

    /// `FROM <sources> [WHERE <cond>]` or `WHERE <cond>` (`DELETE`, `DROP SERIES`).
    fn sources_or_condition(&mut self) -> PResult<(Vec<Source>, Option<Expr>)> {
        if self.peek_kw("FROM") || self.peek_kw("WHERE") {
            let sources = self.opt_from()?;
            let condition = self.opt_where()?;
            Ok((sources, condition))
        } else {
            let (t, pos) = self.next();
            Err(self.err_at(&t, pos, &["FROM", "WHERE"]))
        }
    }

    fn opt_where(&mut self) -> PResult<Option<Expr>> {
        if self.peek_kw("WHERE") {
            self.bump();
            Ok(Some(self.expr(0)?))
        } else {
            Ok(None)
        }
    }

    fn limit_offset(&mut self) -> PResult<(usize, usize)> {
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

    fn show(&mut self) -> PResult<Statement> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("DATABASES") => Ok(Statement::ShowDatabases),
            Tok::Keyword("MEASUREMENTS") => {
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
            Tok::Keyword("TAG") => {
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
            other => Err(self.err_at(
                &other,
                pos,
                &[
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
                ],
            )),
        }
    }

    fn tag_key_match(&mut self) -> PResult<TagKeyMatch> {
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

    /// `POLICY name ON database` (after `… RETENTION`): the policy's name and database.
    fn policy_on(&mut self) -> PResult<(String, String)> {
        self.expect_kw("POLICY")?;
        let name = self.ident()?;
        self.expect_kw("ON")?;
        Ok((name, self.ident()?))
    }

    fn create(&mut self) -> PResult<Statement> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("DATABASE") => Ok(Statement::CreateDatabase {
                name: self.ident()?,
            }),
            Tok::Keyword("USER") => self.create_user(),
            Tok::Keyword("RETENTION") => {
                let (name, database) = self.policy_on()?;
                self.expect_kw("DURATION")?;
                let duration = self.duration_or_inf()?;
                self.expect_kw("REPLICATION")?;
                let (t, pos) = self.next();
                let replication = match t {
                    Tok::Int(n) if n >= 1 => n,
                    other => return Err(self.err_at(&other, pos, &["integer"])),
                };
                let mut shard_duration = None;
                let mut default = false;
                loop {
                    if self.peek_kw("SHARD") {
                        self.bump();
                        self.expect_kw("DURATION")?;
                        shard_duration = Some(self.duration_or_inf()?);
                    } else if self.peek_kw("DEFAULT") {
                        self.bump();
                        default = true;
                    } else {
                        break;
                    }
                }
                Ok(Statement::CreateRetentionPolicy {
                    name,
                    database,
                    duration,
                    replication,
                    shard_duration,
                    default,
                })
            }
            other => Err(self.err_at(
                &other,
                pos,
                &[
                    "CONTINUOUS",
                    "DATABASE",
                    "USER",
                    "RETENTION",
                    "SUBSCRIPTION",
                ],
            )),
        }
    }

    fn duration_or_inf(&mut self) -> PResult<i64> {
        let (t, pos) = self.next();
        match t {
            Tok::Dur(d) => Ok(d),
            Tok::Keyword("INF") => Ok(0),
            other => Err(self.err_at(&other, pos, &["duration"])),
        }
    }

    fn uint(&mut self) -> PResult<usize> {
        let (t, pos) = self.next();
        match t {
            Tok::Int(n) if n >= 0 => Ok(n as usize),
            other => Err(self.err_at(&other, pos, &["integer"])),
        }
    }

    fn select(&mut self) -> PResult<Select> {
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
            break;
        }
        self.expect_kw("FROM")?;
        let sources = self.sources()?;
        let condition = self.opt_where()?;
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
        let mut fill = Fill::Null;
        if let Tok::Ident(w) = self.peek().0
            && w.eq_ignore_ascii_case("fill")
        {
            self.bump();
            let (t, pos) = self.next();
            if t != Tok::LParen {
                return Err(self.err_at(&t, pos, &["("]));
            }
            let (t, _) = self.next();
            fill = match t {
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
        }
        let mut descending = false;
        let ordered = self.peek_kw("ORDER");
        if ordered {
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
            if self.peek_kw("DESC") {
                self.bump();
                descending = true;
            } else if self.peek_kw("ASC") {
                self.bump();
            }
        }
        let (mut limit, mut offset, mut slimit, mut soffset) = (0, 0, 0, 0);
        if self.peek_kw("LIMIT") {
            self.bump();
            limit = self.uint()?;
        }
        if self.peek_kw("OFFSET") {
            self.bump();
            offset = self.uint()?;
        }
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

    fn dimension(&mut self) -> PResult<Dimension> {
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

    fn sources(&mut self) -> PResult<Vec<Source>> {
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

    fn source(&mut self) -> PResult<Source> {
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

    /// Runs `f` one nesting level deeper, refusing past [`MAX_NESTING`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_NESTING {
            return Err(ParseError::TooNested);
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn expr(&mut self, min_prec: u8) -> PResult<Expr> {
        self.expr_depth(min_prec).map(|(e, _)| e)
    }

    /// An expression and the depth of its tree, bounded by [`MAX_EXPR_DEPTH`].
    fn expr_depth(&mut self, min_prec: u8) -> PResult<(Expr, usize)> {
        self.nested(|p| p.expr_at(min_prec))
    }

    /// Binary operators are folded in a loop (left-associative), so a long chain takes no
    /// parser stack; the depth of the tree it builds is counted and bounded instead.
    fn expr_at(&mut self, min_prec: u8) -> PResult<(Expr, usize)> {
        let (mut lhs, mut depth) = self.unary()?;
        loop {
            let (t, pos) = self.peek();
            let op = match t {
                Tok::Op(op) => op,
                Tok::Star => BinOp::Mul,
                Tok::Keyword("AND") => BinOp::And,
                Tok::Keyword("OR") => BinOp::Or,
                _ => return Ok((lhs, depth)),
            };
            let prec = op.precedence();
            if prec <= min_prec {
                return Ok((lhs, depth));
            }
            self.bump();
            let (rhs, rhs_depth) = if matches!(op, BinOp::EqRegex | BinOp::NeqRegex) {
                match self.next_regex() {
                    (Tok::Regex(r), _) => (Expr::Regex(r), 1),
                    (other, pos) => return Err(self.err_at(&other, pos, &["regex"])),
                }
            } else {
                self.expr_depth(prec)?
            };
            depth = self.deeper(depth.max(rhs_depth), pos)?;
            lhs = Expr::bin(op, lhs, rhs);
        }
    }

    /// `depth + 1`, or InfluxDB's style of error at `pos` past [`MAX_EXPR_DEPTH`].
    fn deeper(&self, depth: usize, pos: usize) -> PResult<usize> {
        if depth < MAX_EXPR_DEPTH {
            return Ok(depth + 1);
        }
        let (line, ch) = self.line_char(pos, false);
        Err(ParseError::TooDeep { line, char: ch })
    }

    /// A term and the depth of its tree (1 for a leaf).
    fn unary(&mut self) -> PResult<(Expr, usize)> {
        let (t, pos) = self.next();
        match t {
            Tok::LParen => {
                let (e, depth) = self.expr_depth(0)?;
                let (t, rpos) = self.next();
                if t != Tok::RParen {
                    return Err(self.err_at(&t, rpos, &[")"]));
                }
                Ok((Expr::Paren(Box::new(e)), self.deeper(depth, pos)?))
            }
            Tok::Ident(name) => {
                if self.peek().0 == Tok::LParen {
                    return self.call(name, pos);
                }
                // `name::type` casts are accepted and ignored.
                Ok((Expr::VarRef(name), 1))
            }
            Tok::Str(s) => Ok((Expr::String(s), 1)),
            Tok::Int(i) => Ok((Expr::Integer(i), 1)),
            Tok::Num(f) => Ok((Expr::Number(f), 1)),
            Tok::Dur(d) => Ok((Expr::Duration(d), 1)),
            // `distinct(x)`, and `DISTINCT x` which means the same (InfluxQL 1.6).
            Tok::Keyword("DISTINCT") => {
                if self.peek().0 == Tok::LParen {
                    return self.call("distinct".into(), pos);
                }
                Ok((Expr::Distinct(self.ident()?), 1))
            }
            Tok::Keyword("TRUE") => Ok((Expr::Bool(true), 1)),
            Tok::Keyword("FALSE") => Ok((Expr::Bool(false), 1)),
            Tok::Op(BinOp::Sub) => {
                let (t2, pos2) = self.next();
                match t2 {
                    Tok::Int(i) => Ok((Expr::Integer(-i), 1)),
                    Tok::Num(f) => Ok((Expr::Number(-f), 1)),
                    Tok::Dur(d) => Ok((Expr::Duration(-d), 1)),
                    other => {
                        Err(self.err_at(&other, pos2, &["identifier", "string", "number", "bool"]))
                    }
                }
            }
            Tok::Op(BinOp::Div) => {
                // A regex where a value is expected (e.g. `WHERE /x/`).
                self.lx.pos = pos;
                match self.lx.next(true) {
                    (Tok::Regex(r), _) => Ok((Expr::Regex(r), 1)),
                    (other, p) => {
                        Err(self.err_at(&other, p, &["identifier", "string", "number", "bool"]))
                    }
                }
            }
            other => Err(self.err_at(&other, pos, &["identifier", "string", "number", "bool"])),
        }
    }

    /// A call's arguments after its name (`name` as written, at `pos`): `(` is next.
    fn call(&mut self, name: String, pos: usize) -> PResult<(Expr, usize)> {
        self.bump();
        let mut args = Vec::new();
        let mut depth = 1;
        if self.peek().0 == Tok::RParen {
            self.bump();
        } else {
            loop {
                if self.peek().0 == Tok::Star {
                    self.bump();
                    args.push(Expr::Wildcard);
                } else {
                    let (arg, d) = self.expr_depth(0)?;
                    depth = depth.max(d);
                    args.push(arg);
                }
                let (t, pos) = self.next();
                match t {
                    Tok::Comma => continue,
                    Tok::RParen => break,
                    other => return Err(self.err_at(&other, pos, &[",", ")"])),
                }
            }
        }
        let call = Expr::Call {
            name: name.to_ascii_lowercase(),
            args,
        };
        Ok((call, self.deeper(depth, pos)?))
    }
}

fn db_rp(segs: &[Option<String>]) -> (Option<String>, Option<String>) {
    match segs {
        [] => (None, None),
        [rp] => (None, rp.clone()),
        [db, rp, ..] => (db.clone(), rp.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers used by the executor.

impl Expr {
    /// Walks the expression tree.
    pub fn walk<'e>(&'e self, f: &mut impl FnMut(&'e Expr)) {
        f(self);
        match self {
            Expr::Call { args, .. } => args.iter().for_each(|a| a.walk(f)),
            Expr::Binary { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
            Expr::Paren(e) => e.walk(f),
            _ => {}
        }
    }

    /// Strips parentheses.
    pub fn unparen(&self) -> &Expr {
        match self {
            Expr::Paren(e) => e.unparen(),
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple() {
        let s = parse_statement(
            "SELECT mean(value) FROM cpu WHERE host = 'a' GROUP BY time(1m) fill(none)",
        )
        .unwrap();
        let Statement::Select(s) = s else { panic!() };
        assert_eq!(s.fill, Fill::None);
        assert_eq!(
            s.dimensions,
            vec![Dimension::Time {
                interval: 60_000_000_000,
                offset: 0
            }]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(60_000_000_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration(" 500ms "), Ok(500_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "60", "-1s", "1x", "1s junk", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_positions_match_influxdb() {
        let e = parse_query("SELECT FROM cpu").unwrap_err();
        assert_eq!(
            e.to_string(),
            "found FROM, expected identifier, string, number, bool at line 1, char 8"
        );
        let e = parse_query("SELECT * FROM").unwrap_err();
        assert_eq!(
            e,
            ParseError::Unexpected {
                found: "EOF".into(),
                expected: vec!["identifier"],
                line: 1,
                char: 15
            }
        );
        assert_eq!(
            e.to_string(),
            "found EOF, expected identifier at line 1, char 15"
        );
    }
}
