//! bind9's `$GENERATE RANGE LHS [TTL] [CLASS] TYPE RHS`: the range and the templates. The
//! parser (`zonefile.rs`) expands one record per value of the range, `LHS` its owner and `RHS`
//! its data; this module only reads ranges and fills templates, and never allocates more than
//! one expanded text at a time.
//!
//! As bind9 9.18 reads them (checked against `named-compilezone`):
//! - `RANGE` is `START-STOP` or `START-STOP/STEP`, with `START <= STOP` and `STEP >= 1`;
//! - in a template, `$` is the value, and `${OFFSET}`, `${OFFSET,WIDTH}` or
//!   `${OFFSET,WIDTH,BASE}` the value plus `OFFSET` (which may be negative), zero-padded to
//!   `WIDTH` characters, in `BASE`: `d` decimal (the default), `o` octal, `x`/`X` hexadecimal
//!   in lower/upper case, `n`/`N` nibbles (hexadecimal digits, least significant first, each
//!   its own label: `${0,4,n}` of 250 is `a.f.`; `WIDTH` counts the dots);
//! - `$$` is a literal `$`; a backslash and the character after it are kept as they are, for
//!   the name or data parser (so `\$` is a `$` there too, never the value).
//!
//! Not like bind9: at most [`MAX_GENERATED`] records per zone file (bind9 has no limit), so a
//! typing slip cannot make the server build billions of records; values above `i32::MAX` are
//! refused, as bind9 refuses them.

use super::error::LineProblem;

/// The most records the `$GENERATE` lines of one zone file may make together.
pub(crate) const MAX_GENERATED: u64 = 65_536;

/// A `$GENERATE` range: `start..=stop` by `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    start: u32,
    stop: u32,
    step: u32,
}

impl Range {
    /// Reads `START-STOP[/STEP]`.
    pub(crate) fn parse(text: &str) -> Result<Self, LineProblem> {
        let bad = || LineProblem::GenerateRange {
            text: text.to_owned(),
        };
        let number = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<u32>().ok())
                .flatten()
                .filter(|&n| i32::try_from(n).is_ok())
                .ok_or_else(bad)
        };
        let (span, step) = match text.split_once('/') {
            Some((span, step)) => (span, number(step)?),
            None => (text, 1),
        };
        let (start, stop) = span.split_once('-').ok_or_else(bad)?;
        let (start, stop) = (number(start)?, number(stop)?);
        if start > stop || step == 0 {
            return Err(bad());
        }
        Ok(Self { start, stop, step })
    }

    /// How many values the range has.
    pub(crate) fn count(self) -> u64 {
        u64::from((self.stop - self.start) / self.step) + 1
    }

    pub(crate) fn values(self) -> impl Iterator<Item = u32> {
        (self.start..=self.stop).step_by(self.step as usize)
    }
}

/// How one `$` is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Format {
    offset: i64,
    width: usize,
    base: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Format),
}

/// A template (`LHS` or `RHS`), read once and filled for every value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

/// Widths above this are refused: nothing in a name or record needs more (a label is at most 63
/// bytes), and an absurd width must not become an absurd allocation.
const MAX_WIDTH: usize = 255;

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Self, LineProblem> {
        let bad = |why: &'static str| LineProblem::GenerateModifier {
            text: text.to_owned(),
            why,
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    literal.push('\\');
                    literal.extend(chars.next());
                }
                '$' if chars.next_if_eq(&'$').is_some() => literal.push('$'),
                '$' => {
                    let format = if chars.next_if_eq(&'{').is_some() {
                        let mut inside = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(c) => inside.push(c),
                                None => return Err(bad("'${' without '}'")),
                            }
                        }
                        parse_format(&inside).map_err(bad)?
                    } else {
                        Format {
                            offset: 0,
                            width: 0,
                            base: b'd',
                        }
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Value(format));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self { pieces })
    }

    /// The template with `value` written in. Fails only when a non-decimal base meets a value
    /// its offset made negative.
    pub(crate) fn fill(&self, value: u32) -> Result<String, LineProblem> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(format) => write_value(&mut out, i64::from(value), *format)?,
            }
        }
        Ok(out)
    }
}

/// Reads what is between `${` and `}`: `OFFSET[,WIDTH[,BASE]]`.
fn parse_format(inside: &str) -> Result<Format, &'static str> {
    let mut parts = inside.split(',');
    let offset = parts
        .next()
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|o| o.unsigned_abs() <= u64::from(u32::MAX))
        .ok_or("the offset is not a number")?;
    let width = match parts.next() {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|&w| w <= MAX_WIDTH)
            .ok_or("the width is not a number from 0 to 255")?,
        None => 0,
    };
    let base = match parts.next() {
        Some(t @ ("d" | "o" | "x" | "X" | "n" | "N")) => t.as_bytes()[0],
        Some(_) => return Err("the base is not one of d, o, x, X, n, N"),
        None => b'd',
    };
    if parts.next().is_some() {
        return Err("more than offset, width and base");
    }
    Ok(Format {
        offset,
        width,
        base,
    })
}

fn write_value(out: &mut String, value: i64, format: Format) -> Result<(), LineProblem> {
    let value = value + format.offset;
    let width = format.width;
    if format.base == b'd' {
        out.push_str(&format!("{value:0width$}"));
        return Ok(());
    }
    let value = u64::try_from(value).map_err(|_| LineProblem::GenerateNegative {
        value,
        base: format.base,
    })?;
    match format.base {
        b'o' => out.push_str(&format!("{value:0width$o}")),
        b'x' => out.push_str(&format!("{value:0width$x}")),
        b'X' => out.push_str(&format!("{value:0width$X}")),
        base => write_nibbles(out, value, width, base == b'N'),
    }
    Ok(())
}

/// Nibble mode: hexadecimal digits, least significant first, separated by dots; while the digits
/// and dots written are fewer than `width`, more zero digits (and dots) follow, so a width that
/// ends on a dot leaves a trailing dot.
fn write_nibbles(out: &mut String, mut value: u64, mut width: usize, upper: bool) {
    loop {
        let digit = char::from_digit((value & 0xf) as u32, 16).unwrap_or('0');
        out.push(if upper {
            digit.to_ascii_uppercase()
        } else {
            digit
        });
        value >>= 4;
        width = width.saturating_sub(1);
        if value == 0 && width == 0 {
            return;
        }
        out.push('.');
        width = width.saturating_sub(1);
        if value == 0 && width == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(template: &str, value: u32) -> String {
        Template::parse(template).unwrap().fill(value).unwrap()
    }

    #[test]
    fn ranges() {
        let values = |t: &str| Range::parse(t).unwrap().values().collect::<Vec<_>>();
        assert_eq!(values("1-3"), [1, 2, 3]);
        assert_eq!(values("8-12/2"), [8, 10, 12]);
        assert_eq!(values("8-13/2"), [8, 10, 12]);
        assert_eq!(values("5-5"), [5]);
        assert_eq!(Range::parse("0-300/7").unwrap().count(), 43);
        for bad in [
            "3-1",
            "5",
            "a-b",
            "1-2/0",
            "-1-2",
            "1-2/",
            "1-",
            "+1-2",
            "0-4294967295",
            "1-2/x",
        ] {
            let err = Range::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn templates_as_bind9_fills_them() {
        assert_eq!(fill("host$", 7), "host7");
        assert_eq!(fill("$.$", 7), "7.7");
        assert_eq!(fill("pad${0,3}", 8), "pad008");
        assert_eq!(fill("${-10,2,x}", 12), "02");
        assert_eq!(fill("${100}", 10), "110");
        assert_eq!(fill("x${-5}", 1), "x-4");
        assert_eq!(fill("${0,0,x}", 255), "ff");
        assert_eq!(fill("${0,4,X}", 255), "00FF");
        assert_eq!(fill("${8,3,o}", 0), "010");
        assert_eq!(fill("${0,4,n}", 250), "a.f.");
        assert_eq!(fill("${0,0,n}", 250), "a.f");
        assert_eq!(fill("${0,6,N}", 1), "1.0.0.");
        assert_eq!(fill("${0,3,n}", 1), "1.0");
        assert_eq!(fill("${0,1,n}", 0x123), "3.2.1");
        assert_eq!(fill("a$$b", 1), "a$b");
        assert_eq!(fill("a\\$b", 1), "a\\$b");
        assert_eq!(fill("v=$ \\$ $$", 1), "v=1 \\$ $");
        assert_eq!(fill("no dollar", 1), "no dollar");
    }

    #[test]
    fn bad_modifiers_are_named() {
        for (text, why) in [
            ("x${1", "without '}'"),
            ("x${1,2,q}", "the base is not one of"),
            ("x${a}", "the offset is not a number"),
            ("x${1,-2}", "the width is not a number"),
            ("x${1,300}", "the width is not a number"),
            ("x${0,0,d", "without '}'"),
            ("x${1,2,d,4}", "more than offset"),
        ] {
            let err = Template::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains(&format!("{text:?}")),
                "{text}: {err}"
            );
        }
        let err = Template::parse("${-5,0,x}").unwrap().fill(1).unwrap_err();
        assert!(err.to_string().contains("-4"), "{err}");
    }
}
