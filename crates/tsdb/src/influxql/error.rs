//! Why a query does not parse ([`ParseError`], influxd 1.6's texts) and the bounds on a
//! query's nesting that keep the parser and the executor off the end of their stacks.
//! What it does not do: decide what is an error (the parser's modules do).

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
    /// `RESAMPLE FOR` shorter than the interval (or `EVERY`): both durations as InfluxQL
    /// writes them.
    #[error(
        "FOR duration must be >= GROUP BY time duration: must be a minimum of {least}, got {got}"
    )]
    ResampleFor { least: String, got: String },
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
pub(super) struct Unterminated(pub(super) String);

/// Deepest nesting of parentheses, calls and subqueries a query may have.
pub(super) const MAX_NESTING: usize = 100;

/// Deepest expression tree a query may hold: operators, parentheses and calls, counted from
/// the leaves. A chain `a + b + c ...` is as deep as it is long, and the executor walks trees
/// recursively, so without this bound a long chain (well under the body limit) overflowed a
/// server thread's stack (issue 14). InfluxDB 1.6 has no such limit (Go's stacks grow); 500
/// levels run with room to spare on a 2 MiB thread in a debug build, even inside the deepest
/// subquery nesting (`tests/deep_expressions.rs`). Long lists of alternatives read better as a
/// regex anyway (`host =~ /^(a|b|c)$/`).
pub const MAX_EXPR_DEPTH: usize = 500;

pub(super) type PResult<T> = Result<T, ParseError>;
