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
//!
//! Code map (no two modules import each other; the grammar modules use `parser`, `lexer`,
//! `ast` and `error`, never this facade): `error` ([`ParseError`] and the nesting bounds),
//! `lexer` (tokens, keywords, durations), `ast` (the tree), `parser` (the parser's state, its
//! small shared steps, the entry points), then the grammar by statement family: `statement`
//! (the first keyword, `CREATE`/`ALTER`/`DROP`, `DELETE`), `show`, `select`, `expr`, `users`,
//! `cq` (continuous queries and the `INTO` target);
//! `render` prints a statement back as influxd does, `access` says what it requires.

mod access;
mod ast;
mod cq;
mod error;
mod expr;
mod lexer;
mod parser;
mod render;
mod select;
mod show;
mod statement;
mod users;

pub use access::Required;
pub use ast::{
    BinOp, ContinuousQuery, Dimension, Expr, Field, Fill, Password, Privilege, Select, Source,
    Statement, TagKeyMatch, Target,
};
pub use error::{MAX_EXPR_DEPTH, ParseError};
pub use lexer::{format_duration, parse_duration};
pub use parser::{parse_query, parse_statement, parse_v08_statement};
pub use render::quote_ident;

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
