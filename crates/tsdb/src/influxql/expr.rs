//! Parsing of expressions: operators by precedence (folded in a loop), terms, calls, and the
//! bounds that keep any input from exhausting the stack (`MAX_NESTING`,
//! [`MAX_EXPR_DEPTH`](super::MAX_EXPR_DEPTH)). It knows no function: a call is a name and its
//! arguments, resolved by the planner.

use super::ast::{BinOp, Expr};
use super::error::{MAX_EXPR_DEPTH, MAX_NESTING, PResult, ParseError};
use super::lexer::Tok;
use super::parser::Parser;

impl Parser<'_> {
    /// Runs `f` one nesting level deeper, refusing past [`MAX_NESTING`].
    pub(super) fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_NESTING {
            return Err(ParseError::TooNested);
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    pub(super) fn expr(&mut self, min_prec: u8) -> PResult<Expr> {
        self.expr_depth(min_prec).map(|(e, _)| e)
    }

    /// An expression and the depth of its tree, bounded by [`MAX_EXPR_DEPTH`].
    pub(super) fn expr_depth(&mut self, min_prec: u8) -> PResult<(Expr, usize)> {
        self.nested(|p| p.expr_at(min_prec))
    }

    /// Binary operators are folded in a loop (left-associative), so a long chain takes no
    /// parser stack; the depth of the tree it builds is counted and bounded instead.
    pub(super) fn expr_at(&mut self, min_prec: u8) -> PResult<(Expr, usize)> {
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
    pub(super) fn deeper(&self, depth: usize, pos: usize) -> PResult<usize> {
        if depth < MAX_EXPR_DEPTH {
            return Ok(depth + 1);
        }
        let (line, ch) = self.line_char(pos, false);
        Err(ParseError::TooDeep { line, char: ch })
    }

    /// A term and the depth of its tree (1 for a leaf).
    pub(super) fn unary(&mut self) -> PResult<(Expr, usize)> {
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
    pub(super) fn call(&mut self, name: String, pos: usize) -> PResult<(Expr, usize)> {
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
