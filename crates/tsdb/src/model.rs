//! The data model shared by the write path, storage and the query engine.
//!
//! A series is a measurement plus a sorted tag set; a point of a series carries one or more typed
//! fields at one nanosecond timestamp. A field's type is fixed per measurement per shard (the
//! first write decides it, as in InfluxDB 1.x).
//!
//! [`positions`] finds names in lists in linear time; every per-field lookup of the write and
//! read paths goes through it, so a point with many fields costs time linear in its fields.

use std::fmt;

/// A typed field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl FieldValue {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Int(_) => FieldType::Integer,
            FieldValue::Bool(_) => FieldType::Boolean,
            FieldValue::Str(_) => FieldType::String,
        }
    }
}

/// The type of a field, named as InfluxDB's `SHOW FIELD KEYS` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    Float,
    Integer,
    Boolean,
    String,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            FieldType::Float => 0,
            FieldType::Integer => 1,
            FieldType::Boolean => 2,
            FieldType::String => 3,
        }
    }

    pub fn from_code(c: u8) -> Option<FieldType> {
        Some(match c {
            0 => FieldType::Float,
            1 => FieldType::Integer,
            2 => FieldType::Boolean,
            3 => FieldType::String,
            _ => return None,
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One parsed point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    /// Sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
    /// Non-empty, keys unique.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
}

/// A column of values of one type, parallel to a time column.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Values {
    pub fn new(t: FieldType) -> Values {
        match t {
            FieldType::Float => Values::Float(Vec::new()),
            FieldType::Integer => Values::Int(Vec::new()),
            FieldType::Boolean => Values::Bool(Vec::new()),
            FieldType::String => Values::Str(Vec::new()),
        }
    }

    pub fn field_type(&self) -> FieldType {
        match self {
            Values::Float(_) => FieldType::Float,
            Values::Int(_) => FieldType::Integer,
            Values::Bool(_) => FieldType::Boolean,
            Values::Str(_) => FieldType::String,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a value; returns false (and appends nothing) if its type differs.
    pub fn push(&mut self, v: &FieldValue) -> bool {
        match (self, v) {
            (Values::Float(c), FieldValue::Float(x)) => c.push(*x),
            (Values::Int(c), FieldValue::Int(x)) => c.push(*x),
            (Values::Bool(c), FieldValue::Bool(x)) => c.push(*x),
            (Values::Str(c), FieldValue::Str(x)) => c.push(x.clone()),
            _ => return false,
        }
        true
    }

    pub fn get(&self, i: usize) -> FieldValue {
        match self {
            Values::Float(v) => FieldValue::Float(v[i]),
            Values::Int(v) => FieldValue::Int(v[i]),
            Values::Bool(v) => FieldValue::Bool(v[i]),
            Values::Str(v) => FieldValue::Str(v[i].clone()),
        }
    }

    /// Reorders by `perm` (a permutation of indices).
    pub fn permute(&self, perm: &[usize]) -> Values {
        match self {
            Values::Float(v) => Values::Float(perm.iter().map(|&i| v[i]).collect()),
            Values::Int(v) => Values::Int(perm.iter().map(|&i| v[i]).collect()),
            Values::Bool(v) => Values::Bool(perm.iter().map(|&i| v[i]).collect()),
            Values::Str(v) => Values::Str(perm.iter().map(|&i| v[i].clone()).collect()),
        }
    }
}

/// A time-ordered column: strictly increasing `times`, `values` of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub times: Vec<i64>,
    pub values: Values,
}

impl Column {
    pub fn new(t: FieldType) -> Column {
        Column {
            times: Vec::new(),
            values: Values::new(t),
        }
    }

    /// Sorts by time and keeps the last-appended value for duplicate times.
    pub fn normalize(&mut self) {
        let n = self.times.len();
        if self.times.windows(2).all(|w| w[0] < w[1]) {
            return;
        }
        let mut perm: Vec<usize> = (0..n).collect();
        // Stable sort keeps append order among equal times; the last one wins below.
        perm.sort_by_key(|&i| self.times[i]);
        let mut keep: Vec<usize> = Vec::with_capacity(n);
        for (j, &i) in perm.iter().enumerate() {
            if j + 1 < n && self.times[perm[j + 1]] == self.times[i] {
                continue;
            }
            keep.push(i);
        }
        self.times = keep.iter().map(|&i| self.times[i]).collect();
        self.values = self.values.permute(&keep);
    }

    /// Merges `newer` into `self` (both normalized); on equal times `newer` wins.
    pub fn merge(self, newer: Column) -> Column {
        if newer.times.is_empty() {
            return self;
        }
        if self.times.is_empty() {
            return newer;
        }
        if self.values.field_type() != newer.values.field_type() {
            return newer;
        }
        if self.times.last() < newer.times.first() {
            let mut out = self;
            out.times.extend_from_slice(&newer.times);
            match (&mut out.values, newer.values) {
                (Values::Float(a), Values::Float(b)) => a.extend(b),
                (Values::Int(a), Values::Int(b)) => a.extend(b),
                (Values::Bool(a), Values::Bool(b)) => a.extend(b),
                (Values::Str(a), Values::Str(b)) => a.extend(b),
                _ => {}
            }
            return out;
        }
        let mut times = self.times;
        let mut values = self.values;
        let n_old = times.len();
        times.extend_from_slice(&newer.times);
        match (&mut values, newer.values) {
            (Values::Float(a), Values::Float(b)) => a.extend(b),
            (Values::Int(a), Values::Int(b)) => a.extend(b),
            (Values::Bool(a), Values::Bool(b)) => a.extend(b),
            (Values::Str(a), Values::Str(b)) => a.extend(b),
            _ => {}
        }
        let _ = n_old;
        let mut c = Column { times, values };
        c.normalize();
        c
    }

    /// Keeps only points with `min <= t <= max`.
    pub fn slice_time(&self, min: i64, max: i64) -> (usize, usize) {
        let lo = self.times.partition_point(|&t| t < min);
        let hi = self.times.partition_point(|&t| t <= max);
        (lo, hi.max(lo))
    }
}

/// Where each of `wanted` first occurs in `names` (`None` if it does not), in time linear in
/// both: a nested scan while the two are small, a hash map beyond. Points may have tens of
/// thousands of fields, and a scan per field made writing and reading them quadratic.
pub fn positions(names: &[&str], wanted: &[&str]) -> Vec<Option<usize>> {
    if names.len().saturating_mul(wanted.len()) <= 256 {
        return wanted
            .iter()
            .map(|w| names.iter().position(|n| n == w))
            .collect();
    }
    let mut index: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        index.entry(n).or_insert(i);
    }
    wanted.iter().map(|w| index.get(w).copied()).collect()
}

#[cfg(test)]
mod position_tests {
    use super::positions;

    #[test]
    fn small_and_large_agree() {
        let names: Vec<String> = (0..100).map(|i| format!("f{}", i % 60)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let wanted = ["f3", "nope", "f59", "f0"];
        let want = vec![Some(3), None, Some(59), Some(0)];
        assert_eq!(positions(&names, &wanted), want);
        assert_eq!(positions(&names[..4], &wanted[..1]), vec![Some(3)]);
    }
}
