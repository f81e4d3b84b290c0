//! JSON output that matches Go's `encoding/json` byte for byte where clients can tell:
//! floats print like Go (`12`, not `12.0`; exponent form below 1e-6 and from 1e21), strings
//! escape `<`, `>`, `&`, U+2028 and U+2029 as Go does. InfluxDB's responses are produced by Go,
//! so the differential test can compare bodies after parsing and clients see the same numbers.

use std::fmt::Write;

use crate::exec::{ResultSeries, StatementResult, Val};
use crate::timefmt::format_rfc3339;

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

pub fn write_f64(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
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

pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
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
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Str(s) => write_str(out, s),
        Val::Time(t) => match epoch {
            Epoch::Rfc3339 => write_str(out, &format_rfc3339(*t)),
            Epoch::Div(d) => {
                let _ = write!(out, "{}", t / d);
            }
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
    let mut out = String::with_capacity(256);
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
            write_str(&mut out, e);
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
    }
}
