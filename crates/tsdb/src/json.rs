//! JSON output that matches Go's `encoding/json` byte for byte where clients can tell:
//! floats print like Go (`12`, not `12.0`; exponent form below 1e-6 and from 1e21), strings
//! escape `<`, `>`, `&`, U+2028 and U+2029 as Go does. InfluxDB's responses are produced by Go,
//! so the differential test can compare bodies after parsing and clients see the same numbers.

use std::fmt::Write;

use crate::exec::{ResultSeries, StatementResult, Val};
use crate::timefmt::write_rfc3339;

/// How `time` values are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epoch {
    Rfc3339,
    /// Integer in units of this many nanoseconds.
    Div(i64),
}

impl Epoch {
    pub fn parse(s: Option<&str>) -> Epoch {
        match s {
            None | Some("") => Epoch::Rfc3339,
            Some("ns" | "n") => Epoch::Div(1),
            Some("u" | "µ" | "us") => Epoch::Div(1_000),
            Some("ms") => Epoch::Div(1_000_000),
            Some("s") => Epoch::Div(1_000_000_000),
            Some("m") => Epoch::Div(60_000_000_000),
            Some("h") => Epoch::Div(3_600_000_000_000),
            Some(_) => Epoch::Div(1),
        }
    }
}

/// Appends an integer without going through `fmt`.
pub fn write_i64(out: &mut String, i: i64) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let mut n = i.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push('-');
    }
    // ASCII digits are always valid UTF-8.
    out.push_str(std::str::from_utf8(&buf[pos..]).unwrap_or_default());
}

/// The common case of metrics: a float that is exactly the nearest double to a decimal with
/// at most three fraction digits and a magnitude in `[1e-3, 1e9)`. Returns false (writing
/// nothing) otherwise.
///
/// Why this prints what Go prints: Go prints the shortest decimal that parses back to `f`.
/// `k / 10^d` (computed with one correctly rounded division) equals `f`, so the `d`-digit
/// decimal `k·10^-d` parses back to `f`; below 1e9 the spacing of doubles is under 10^-6, so
/// no decimal with fewer fraction digits lands on `f` too, and the smallest such `d` is the
/// shortest form.
fn write_short_decimal(out: &mut String, f: f64) -> bool {
    let a = f.abs();
    if !(1e-3..1e9).contains(&a) {
        return false;
    }
    for (d, scale) in [(0u32, 1.0f64), (1, 10.0), (2, 100.0), (3, 1000.0)] {
        // Rounding half away from zero by hand (no libm call); the check below makes any
        // rounding choice safe: a miss only falls through to the general path.
        let scaled = f * scale;
        let k = (scaled + 0.5f64.copysign(scaled)) as i64;
        if k as f64 / scale != f {
            continue;
        }
        let unit = 10i64.pow(d);
        if k < 0 {
            out.push('-');
        }
        let k = k.abs();
        write_i64(out, k / unit);
        if d > 0 {
            out.push('.');
            let frac = k % unit;
            let mut p = unit / 10;
            while p > 0 {
                out.push(char::from(b'0' + ((frac / p) % 10) as u8));
                p /= 10;
            }
        }
        return true;
    }
    false
}

pub fn write_f64(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    if write_short_decimal(out, f) {
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        // Rust prints `1e21` / `1e-7`; Go prints `1e+21` / `1e-07` then trims to `1e-7`.
        if let Some((m, e)) = s.split_once('e') {
            if e.starts_with('-') {
                let _ = write!(out, "{m}e{e}");
            } else {
                let _ = write!(out, "{m}e+{e}");
            }
            return;
        }
        out.push_str(&s);
        return;
    }
    let _ = write!(out, "{f}");
}

/// True for the bytes that [`write_str`] copies as they are.
fn plain_json_byte(b: u8) -> bool {
    (0x20..0x80).contains(&b) && !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&')
}

pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Most strings (tag values, field names) need no escaping: copy them at once.
    if s.bytes().all(plain_json_byte) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn write_val(out: &mut String, v: &Val, epoch: Epoch) {
    match v {
        Val::Null => out.push_str("null"),
        Val::Float(f) => write_f64(out, *f),
        Val::Int(i) => write_i64(out, *i),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Str(s) => write_str(out, s),
        Val::Time(t) => match epoch {
            Epoch::Rfc3339 => {
                // RFC3339 text needs no escaping.
                out.push('"');
                write_rfc3339(out, *t);
                out.push('"');
            }
            Epoch::Div(d) => write_i64(out, t / d),
        },
    }
}

fn write_series(out: &mut String, s: &ResultSeries, epoch: Epoch) {
    out.push('{');
    let mut first = true;
    if let Some(n) = &s.name {
        out.push_str("\"name\":");
        write_str(out, n);
        first = false;
    }
    if let Some(tags) = &s.tags {
        if !first {
            out.push(',');
        }
        out.push_str("\"tags\":{");
        for (i, (k, v)) in tags.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(out, k);
            out.push(':');
            write_str(out, v);
        }
        out.push('}');
        first = false;
    }
    if !first {
        out.push(',');
    }
    out.push_str("\"columns\":[");
    for (i, c) in s.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, c);
    }
    out.push(']');
    if !s.values.is_empty() {
        out.push_str(",\"values\":[");
        for (i, row) in s.values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('[');
            for (j, v) in row.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_val(out, v, epoch);
            }
            out.push(']');
        }
        out.push(']');
    }
    out.push('}');
}

/// The 1.x `/query` body.
pub fn results_json(results: &[StatementResult], epoch: Epoch) -> String {
    // About 12 bytes a cell: one allocation for the body instead of a dozen doublings.
    let cells: usize = results
        .iter()
        .flat_map(|r| &r.series)
        .map(|s| s.values.len() * (s.columns.len() + 1))
        .sum();
    let mut out = String::with_capacity(256 + cells.saturating_mul(12).min(1 << 26));
    out.push_str("{\"results\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"statement_id\":{i}");
        if !r.series.is_empty() {
            out.push_str(",\"series\":[");
            for (j, s) in r.series.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_series(&mut out, s, epoch);
            }
            out.push(']');
        }
        if let Some(e) = &r.error {
            out.push_str(",\"error\":");
            write_str(&mut out, &e.to_string());
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// `{"error":"..."}`.
pub fn error_json(msg: &str) -> String {
    let mut out = String::from("{\"error\":");
    write_str(&mut out, msg);
    out.push('}');
    out
}

/// Re-indents compact JSON the way Go's `json.MarshalIndent(v, "", "    ")` does.
pub fn pretty(compact: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(compact) {
        Ok(v) => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            if serde::Serialize::serialize(&v, &mut ser).is_ok() {
                String::from_utf8(buf).unwrap_or_else(|_| compact.to_string())
            } else {
                compact.to_string()
            }
        }
        Err(_) => compact.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go() {
        let f = |x: f64| {
            let mut s = String::new();
            write_f64(&mut s, x);
            s
        };
        assert_eq!(f(12.0), "12");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(-0.0), "-0");
        assert_eq!(f(0.03333333333333333), "0.03333333333333333");
        assert_eq!(f(-12.5), "-12.5");
        assert_eq!(f(0.05), "0.05");
        assert_eq!(f(100.0), "100");
    }

    #[test]
    fn strings_like_go() {
        let f = |x: &str| {
            let mut s = String::new();
            write_str(&mut s, x);
            s
        };
        assert_eq!(f("host7"), "\"host7\"");
        assert_eq!(f("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(f("<&>"), "\"\\u003c\\u0026\\u003e\"");
        assert_eq!(f("é\u{2028}\n\u{1}"), "\"é\\u2028\\n\\u0001\"");
    }

    /// The fast paths against the general formatter (Rust's `{}` prints the shortest
    /// round-trip decimal, as Go does, in the range where Go uses no exponent).
    #[test]
    fn fast_paths_match_the_general_formatter() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let r = next();
            let f = match r % 4 {
                0 => (r >> 8) as i64 as f64 / 10f64.powi((r % 5) as i32),
                1 => ((r >> 8) % 2_000_000_000) as f64 / 1000.0 - 1e6,
                2 => ((r >> 8) % 100_000) as f64 / 10.0,
                _ => f64::from_bits(r) % 1e10,
            };
            if !f.is_finite() || (f != 0.0 && !(1e-6..1e21).contains(&f.abs())) {
                continue;
            }
            let mut fast = String::new();
            write_f64(&mut fast, f);
            assert_eq!(fast, format!("{f}"), "{:?}", f.to_bits());
        }
        for i in [0i64, -1, 7, i64::MIN, i64::MAX, 1_600_000_000] {
            let mut s = String::new();
            write_i64(&mut s, i);
            assert_eq!(s, i.to_string());
        }
    }
}
