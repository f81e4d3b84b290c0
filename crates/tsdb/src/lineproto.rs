//! InfluxDB line protocol parser (the 1.x `/write` body).
//!
//! Written here rather than taken from the `influxdb-line-protocol` crate: that crate (2.0.0, from
//! the IOx project) needs the whole body as `&str`, reports errors in its own taxonomy (we must
//! answer exactly as InfluxDB 1.6 does: `unable to parse '<line>': <reason>`), and pulls in
//! `nom` 7 and `snafu` 0.7, two superseded majors, for a grammar this small.
//!
//! Invariants: never panics on any input bytes; a bad line yields an error for that line only,
//! the good lines of the same body are still returned (InfluxDB's partial-write behaviour);
//! tags of a returned point are sorted by key and unique; every point has at least one field;
//! keys are within influxd's limits (`crate::names`).

use crate::model::{FieldValue, Point};
use crate::names::KeyTooLong;

/// Timestamp precision of a write (`precision=` / 0.8 `time_precision=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanos,
    Micros,
    Millis,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Parses the InfluxDB spelling; unknown or empty spellings mean nanoseconds, as in 1.6.
    pub fn parse(s: &str) -> Precision {
        match s {
            "u" | "us" | "µ" => Precision::Micros,
            "ms" => Precision::Millis,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => Precision::Nanos,
        }
    }

    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Nanos => 1,
            Precision::Micros => 1_000,
            Precision::Millis => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

/// Smallest and largest timestamps InfluxDB accepts.
pub const MIN_TIME: i64 = i64::MIN + 2;
pub const MAX_TIME: i64 = i64::MAX - 1;

/// Result of parsing a body: the good points and one error per bad line.
#[derive(Debug, Default)]
pub struct Parsed {
    pub points: Vec<Point>,
    pub errors: Vec<BadLine>,
}

impl Parsed {
    /// The error text InfluxDB joins the per-line failures into.
    pub fn error_text(&self) -> Option<String> {
        if self.errors.is_empty() {
            None
        } else {
            let lines: Vec<String> = self.errors.iter().map(BadLine::to_string).collect();
            Some(lines.join("\n"))
        }
    }
}

/// A line that was not written: the line (as text, invalid UTF-8 replaced) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unable to parse '{line}': {reason}")]
pub struct BadLine {
    pub line: String,
    pub reason: LineError,
}

/// Why a line is not a point: InfluxDB 1.6's reasons, in its words.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("missing measurement")]
    MissingMeasurement,
    #[error("missing tag key")]
    MissingTagKey,
    #[error("missing tag value")]
    MissingTagValue,
    #[error("invalid tag format")]
    InvalidTagFormat,
    #[error("duplicate tags")]
    DuplicateTags,
    #[error("missing fields")]
    MissingFields,
    #[error("missing field key")]
    MissingFieldKey,
    #[error("missing field value")]
    MissingFieldValue,
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
    #[error("invalid UTF-8 in string field")]
    StringFieldUtf8,
    /// A measurement, tag or field key that is not UTF-8 once unescaped.
    #[error("invalid UTF-8")]
    Utf8,
    #[error("invalid field format")]
    InvalidFieldFormat,
    #[error("invalid boolean")]
    InvalidBoolean,
    #[error("invalid number")]
    InvalidNumber,
    /// An integer field (`12i`) out of range; `text` is the digits.
    #[error("unable to parse integer {text}: invalid number")]
    BadInteger { text: String },
    #[error("invalid field name: input field \"time\" on measurement \"{measurement}\" is invalid")]
    TimeField { measurement: String },
    #[error("bad timestamp")]
    BadTimestamp,
    /// The timestamp times the precision overflows.
    #[error("time outside range")]
    TimeOverflow,
    /// The timestamp (in nanoseconds) is outside [`MIN_TIME`]..=[`MAX_TIME`].
    #[error("time outside range {time}")]
    TimeOutsideRange { time: i64 },
    #[error(transparent)]
    KeyTooLong(#[from] KeyTooLong),
}

/// Parses a whole line-protocol body. `now` (ns) is used for points without a timestamp.
pub fn parse(body: &[u8], precision: Precision, now: i64) -> Parsed {
    let mut out = Parsed::default();
    let default_time = now - now.rem_euclid(precision.nanos());
    for raw in body.split(|&b| b == b'\n') {
        let line = trim_start(raw);
        let line = trim_end_cr(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        match parse_line(line, precision, default_time) {
            Ok(p) => out.points.push(p),
            Err(reason) => out.errors.push(BadLine {
                line: String::from_utf8_lossy(line).into_owned(),
                reason,
            }),
        }
    }
    out
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    s
}

fn trim_end_cr(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r'] = s {
        s = rest;
    }
    s
}

/// Parses one non-empty line: measurement, tags, fields, timestamp, each a step below that
/// moves the cursor `i` past what it read.
pub fn parse_line(
    line: &[u8],
    precision: Precision,
    default_time: i64,
) -> Result<Point, LineError> {
    let (measurement, mut i) = measurement(line)?;
    let mut tags = tags(line, &mut i)?;
    // The series key as written, limited as influxd limits it (see `names`).
    let key_len = i.min(line.len());
    if let Some(e) = crate::names::series_key_error(key_len) {
        return Err(e.into());
    }
    // Separator before the fields.
    if i >= line.len() {
        return Err(LineError::MissingFields);
    }
    while i < line.len() && line[i] == b' ' {
        i += 1;
    }
    if i >= line.len() {
        return Err(LineError::MissingFields);
    }
    let mut fields = fields(line, &mut i, key_len, &measurement)?;
    let time = timestamp(line, i, precision, default_time)?;
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    for w in tags.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(LineError::DuplicateTags);
        }
    }
    if fields.len() > 1 {
        fields = dedup_fields(fields);
    }
    Ok(Point {
        measurement,
        tags,
        fields,
        time,
    })
}

/// The measurement: up to an unescaped `,` or ` `; and where it ends.
#[inline]
fn measurement(line: &[u8]) -> Result<(String, usize), LineError> {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'\\' => i += 2,
            b',' | b' ' => break,
            _ => i += 1,
        }
    }
    let end = i.min(line.len());
    if end == 0 {
        return Err(LineError::MissingMeasurement);
    }
    Ok((unescape(&line[..end], b", ")?, end))
}

/// Moves `i` past a tag or field key (up to an unescaped `=`, `,` or ` `); where it ends.
#[inline]
fn key_end(line: &[u8], i: &mut usize) -> usize {
    while *i < line.len() {
        match line[*i] {
            b'\\' => *i += 2,
            b'=' | b',' | b' ' => break,
            _ => *i += 1,
        }
    }
    (*i).min(line.len())
}

/// The tags after the measurement (`,k=v` pairs, unsorted), if any.
#[inline]
fn tags(line: &[u8], i: &mut usize) -> Result<Vec<(String, String)>, LineError> {
    let mut tags: Vec<(String, String)> = Vec::new();
    if *i >= line.len() || line[*i] != b',' {
        return Ok(tags);
    }
    *i += 1;
    loop {
        let ks = *i;
        let ke = key_end(line, i);
        if ke == ks {
            return Err(LineError::MissingTagKey);
        }
        if ke >= line.len() || line[ke] != b'=' {
            return Err(LineError::MissingTagValue);
        }
        *i = ke + 1;
        let vs = *i;
        while *i < line.len() {
            match line[*i] {
                b'\\' => *i += 2,
                b'=' => return Err(LineError::InvalidTagFormat),
                b',' | b' ' => break,
                _ => *i += 1,
            }
        }
        let ve = (*i).min(line.len());
        if ve == vs {
            return Err(LineError::MissingTagValue);
        }
        tags.push((
            unescape(&line[ks..ke], b",= ")?,
            unescape(&line[vs..ve], b",= ")?,
        ));
        *i = ve;
        if *i < line.len() && line[*i] == b',' {
            *i += 1;
            continue;
        }
        return Ok(tags);
    }
}

/// The fields (`k=v` pairs separated by `,`), starting at `i`.
#[inline]
fn fields(
    line: &[u8],
    i: &mut usize,
    key_len: usize,
    measurement: &str,
) -> Result<Vec<(String, FieldValue)>, LineError> {
    let mut fields: Vec<(String, FieldValue)> = Vec::new();
    loop {
        let ks = *i;
        let ke = key_end(line, i);
        if ke == ks {
            return Err(LineError::MissingFieldKey);
        }
        if ke >= line.len() || line[ke] != b'=' {
            return Err(LineError::MissingFieldValue);
        }
        if let Some(e) = crate::names::field_key_error(key_len, ke - ks) {
            return Err(e.into());
        }
        let key = unescape(&line[ks..ke], b",= ")?;
        *i = ke + 1;
        if *i >= line.len() || line[*i] == b' ' || line[*i] == b',' {
            return Err(LineError::MissingFieldValue);
        }
        let value = field_value(line, i)?;
        if key == "time" {
            // InfluxDB 1.6 drops a field named `time` with this message (no error for the line
            // if other fields remain would be nicer, but we keep 1.6's behaviour simple: reject).
            return Err(LineError::TimeField {
                measurement: measurement.to_string(),
            });
        }
        fields.push((key, value));
        if *i < line.len() && line[*i] == b',' {
            *i += 1;
            continue;
        }
        return Ok(fields);
    }
}

/// One field's value at `i` (a quoted string, or a number or boolean up to `,` or ` `).
#[inline]
fn field_value(line: &[u8], i: &mut usize) -> Result<FieldValue, LineError> {
    if line[*i] != b'"' {
        let vs = *i;
        while *i < line.len() && line[*i] != b',' && line[*i] != b' ' {
            *i += 1;
        }
        return parse_scalar(&line[vs..*i]);
    }
    *i += 1;
    let mut s = Vec::new();
    let mut closed = false;
    while *i < line.len() {
        match line[*i] {
            b'\\' if *i + 1 < line.len() && matches!(line[*i + 1], b'"' | b'\\') => {
                s.push(line[*i + 1]);
                *i += 2;
            }
            b'"' => {
                closed = true;
                *i += 1;
                break;
            }
            c => {
                s.push(c);
                *i += 1;
            }
        }
    }
    if !closed {
        return Err(LineError::UnbalancedQuotes);
    }
    Ok(FieldValue::Str(
        String::from_utf8(s).map_err(|_| LineError::StringFieldUtf8)?,
    ))
}

/// The timestamp after the fields (at `i`), or `default_time` when there is none.
#[inline]
fn timestamp(
    line: &[u8],
    mut i: usize,
    precision: Precision,
    default_time: i64,
) -> Result<i64, LineError> {
    while i < line.len() && line[i] == b' ' {
        i += 1;
    }
    if i >= line.len() {
        return Ok(default_time);
    }
    let ts = &line[i..];
    let ts = match ts.iter().position(|&b| b == b' ') {
        Some(p) => {
            if ts[p..].iter().any(|&b| b != b' ') {
                return Err(LineError::BadTimestamp);
            }
            &ts[..p]
        }
        None => ts,
    };
    let s = std::str::from_utf8(ts).map_err(|_| LineError::BadTimestamp)?;
    let v: i64 = s.parse().map_err(|_| LineError::BadTimestamp)?;
    let t = v
        .checked_mul(precision.nanos())
        .ok_or(LineError::TimeOverflow)?;
    if !(MIN_TIME..=MAX_TIME).contains(&t) {
        return Err(LineError::TimeOutsideRange { time: t });
    }
    Ok(t)
}

/// Later duplicates of a field key win, as in InfluxDB; a key keeps the place of its first
/// occurrence. Linear in the fields (a hash map past a few): a line may carry tens of thousands.
pub(crate) fn dedup_fields(fields: Vec<(String, FieldValue)>) -> Vec<(String, FieldValue)> {
    let n = fields.len();
    // first[i]: the index of the first field with field i's key.
    let first: Vec<usize> = if n <= 16 {
        (0..n)
            .map(|i| (0..i).find(|&j| fields[j].0 == fields[i].0).unwrap_or(i))
            .collect()
    } else {
        first_occurrences(&fields)
    };
    if first.iter().enumerate().all(|(i, &f)| f == i) {
        return fields;
    }
    let mut out: Vec<(String, FieldValue)> = Vec::with_capacity(n);
    let mut at = vec![0; n];
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if first[i] == i {
            at[i] = out.len();
            out.push((k, v));
        } else {
            out[at[first[i]]].1 = v;
        }
    }
    out
}

/// For each field, the index of the first field with its key: a hash table of `u32` indices
/// (open addressing, twice as many slots as fields), so that a line of 64k fields keeps its
/// table in a few hundred KB of cache rather than a `HashMap`'s megabytes. The hash is std's
/// keyed SipHash: keys are the client's, and a fixed hash would let them collide on purpose.
fn first_occurrences(fields: &[(String, FieldValue)]) -> Vec<usize> {
    use std::hash::BuildHasher;
    let hasher = std::collections::hash_map::RandomState::new();
    let slots = (fields.len() * 2).next_power_of_two();
    let mask = slots - 1;
    let mut table = vec![0u32; slots];
    let mut first = Vec::with_capacity(fields.len());
    for (i, (key, _)) in fields.iter().enumerate() {
        let mut at = (hasher.hash_one(key.as_bytes()) as usize) & mask;
        loop {
            match table[at] {
                0 => {
                    table[at] = i as u32 + 1;
                    first.push(i);
                    break;
                }
                j if fields[j as usize - 1].0 == *key => {
                    first.push(j as usize - 1);
                    break;
                }
                _ => at = (at + 1) & mask,
            }
        }
    }
    first
}

fn parse_scalar(v: &[u8]) -> Result<FieldValue, LineError> {
    let s = std::str::from_utf8(v).map_err(|_| LineError::InvalidFieldFormat)?;
    match s {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        if first.is_ascii_alphabetic() {
            return Err(LineError::InvalidBoolean);
        }
        return Err(LineError::InvalidNumber);
    }
    if let Some(int) = s.strip_suffix('i') {
        return int
            .parse::<i64>()
            .map(FieldValue::Int)
            .map_err(|_| LineError::BadInteger {
                text: int.to_string(),
            });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return Err(LineError::InvalidNumber);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(FieldValue::Float(f)),
        _ => Err(LineError::InvalidNumber),
    }
}

/// Removes backslash escapes of the given characters; other backslashes are kept literally.
fn unescape(s: &[u8], chars: &[u8]) -> Result<String, LineError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() && (chars.contains(&s[i + 1]) || s[i + 1] == b'\\') {
            out.push(s[i + 1]);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| LineError::Utf8)
}

/// Escapes a measurement name for a series key.
pub fn escape_measurement(s: &str, out: &mut String) {
    for c in s.chars() {
        if c == ',' || c == ' ' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escapes a tag key or value for a series key.
pub fn escape_tag(s: &str, out: &mut String) {
    for c in s.chars() {
        if c == ',' || c == ' ' || c == '=' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The canonical series key `measurement,k1=v1,k2=v2` (tags sorted), as SHOW SERIES prints it.
pub fn series_key(measurement: &str, tags: &[(String, String)]) -> String {
    let mut s = String::with_capacity(measurement.len() + tags.len() * 16);
    escape_measurement(measurement, &mut s);
    for (k, v) in tags {
        s.push(',');
        escape_tag(k, &mut s);
        s.push('=');
        escape_tag(v, &mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_says_why_as_data_and_as_influxdb_does() {
        let parsed = parse(
            b"m v=1i\nm v=99999999999999999999i\nm,a=1,a=2 v=1\n",
            Precision::Nanos,
            0,
        );
        assert_eq!(parsed.points.len(), 1);
        assert_eq!(
            parsed.errors.iter().map(|e| &e.reason).collect::<Vec<_>>(),
            [
                &LineError::BadInteger {
                    text: "99999999999999999999".into()
                },
                &LineError::DuplicateTags
            ]
        );
        assert_eq!(
            parsed.error_text().as_deref(),
            Some(
                "unable to parse 'm v=99999999999999999999i': unable to parse integer \
                 99999999999999999999: invalid number\nunable to parse 'm,a=1,a=2 v=1': duplicate tags"
            )
        );
    }
}
