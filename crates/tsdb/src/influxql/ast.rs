//! The InfluxQL syntax tree: statements, `SELECT`s and their parts, expressions, privileges.
//!
//! Plain data with a few helpers for the executor (`Expr::walk`, `Expr::unparen`); it does not
//! parse (`parser` and its siblings build it), print (`render`) or check access (`access`).

use std::fmt;

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
    /// `SHOW CONTINUOUS QUERIES`: every database's, as stored.
    ShowContinuousQueries,
    /// `CREATE CONTINUOUS QUERY name ON db [RESAMPLE ...] BEGIN SELECT ... INTO ... END`.
    CreateContinuousQuery(Box<ContinuousQuery>),
    /// `DROP CONTINUOUS QUERY name ON db`.
    DropContinuousQuery {
        name: String,
        database: String,
    },
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

    pub(super) fn from_bits(b: u8) -> Privilege {
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
    /// `INTO`: where the answer is written instead of returned.
    pub into: Option<Target>,
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

/// A continuous query: a `SELECT ... INTO ... GROUP BY time(...)` run by the server at each
/// interval (see the crate's `cq` module).
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuousQuery {
    pub name: String,
    pub database: String,
    /// `RESAMPLE EVERY` (ns; 0: the `GROUP BY time` interval).
    pub resample_every: i64,
    /// `RESAMPLE FOR` (ns; 0: the `GROUP BY time` interval).
    pub resample_for: i64,
    pub select: Select,
}

/// Where `SELECT ... INTO` writes: `[[db.]rp.]measurement`, or `:MEASUREMENT` (`measurement`
/// `None`): each row into the measurement it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub database: Option<String>,
    pub retention_policy: Option<String>,
    pub measurement: Option<String>,
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
    pub(super) fn precedence(self) -> u8 {
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
    pub(super) fn bin(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }
}

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
