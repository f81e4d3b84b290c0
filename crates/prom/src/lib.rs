//! Prometheus' text exposition format (version 0.0.4), written from counters a server already
//! keeps: every role's `/metrics` answer is built with [`Text`].
//!
//! What it does: the `# HELP` and `# TYPE` lines of each family, samples with escaped label
//! values, counters, gauges and cumulative histograms (`_bucket{le=...}`, `_sum`, `_count`),
//! and values as Prometheus reads them (`+Inf`, `-Inf`, `NaN`, integers exactly).
//!
//! [`process`] adds the process families every Prometheus client library writes
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), from `/proc/self`.
//!
//! [`samples`] reads an exposition's sample lines back (the datacollector's view of the
//! controller's `/metrics`), skipping what it cannot read.
//!
//! What it does not do: keep or register metrics (each server owns its counters and renders a
//! fresh text per scrape), serve HTTP, or check names at run time. Family and label names are
//! constants in our code: [`valid_name`] is asserted in debug builds, and each role's test runs
//! the scraped text through `promtool check metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of a [`Text`] answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples mean to a scraper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (until the process restarts). Its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into cumulative buckets; see [`Family::histogram`].
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Written exactly (an `f64` would round counts above 2^53).
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u64)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(u64::from(v))
    }
}

/// One exposition: families in the order they are started.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the family `name`: its `# HELP` and `# TYPE` lines. Write its samples through
    /// the returned [`Family`] before starting the next one (a family's samples must be
    /// together).
    pub fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        debug_assert!(valid_name(name), "metric name {name:?}");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} does not end in _total"
        );
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape_help(help),
            kind.as_str()
        );
        Family { text: self, name }
    }

    /// The exposition, ready to send with [`CONTENT_TYPE`].
    pub fn into_string(self) -> String {
        self.out
    }
}

/// The samples of one family; see [`Text::family`].
#[derive(Debug)]
pub struct Family<'a> {
    text: &'a mut Text,
    name: &'a str,
}

impl Family<'_> {
    /// One sample with these labels (none: `&[]`).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let name = self.name;
        self.line(name, "", labels, None, value.into());
        self
    }

    /// A histogram's samples: `buckets` as (upper bound, observations at or below it), in
    /// increasing bounds and cumulative counts, then the `+Inf` bucket (= `count`), `_sum` and
    /// `_count`.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Self {
        debug_assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "buckets of {} not increasing and cumulative",
            self.name
        );
        let name = self.name;
        for (le, n) in buckets {
            self.line(name, "_bucket", labels, Some(*le), Value::Int(*n));
        }
        self.line(
            name,
            "_bucket",
            labels,
            Some(f64::INFINITY),
            Value::Int(count),
        );
        self.line(name, "_sum", labels, None, Value::Float(sum));
        self.line(name, "_count", labels, None, Value::Int(count));
        self
    }

    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<f64>,
        value: Value,
    ) {
        let out = &mut self.text.out;
        out.push_str(name);
        out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            out.push('{');
            let mut first = true;
            for (k, v) in labels {
                debug_assert!(valid_label(k), "label name {k:?} of {name}");
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(k);
                out.push_str("=\"");
                escape_label_into(out, v);
                out.push('"');
            }
            if let Some(le) = le {
                if !first {
                    out.push(',');
                }
                out.push_str("le=\"");
                write_float(out, le);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        match value {
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Float(v) => write_float(out, v),
        }
        out.push('\n');
    }
}

/// Durations counted into fixed buckets, as a server keeps them between scrapes: lock-free
/// (one relaxed `fetch_add` per bucket hit, sum and count), written with [`Family::histogram`].
#[derive(Debug)]
pub struct DurationHistogram {
    /// Upper bounds in seconds, increasing.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is over every bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// etcd's bounds for its disk and commit durations: 1 ms doubling to 8.192 s.
pub const ETCD_DISK_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

impl DurationHistogram {
    /// An empty histogram with these upper bounds (seconds, increasing).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Writes this histogram's samples with `labels` into `family` (a [`Kind::Histogram`]).
    pub fn write(&self, family: &mut Family<'_>, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        let buckets: Vec<(f64, u64)> = (self.bounds.iter())
            .zip(self.counts.iter())
            .map(|(b, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (*b, cumulative)
            })
            .collect();
        let over = self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        family.histogram(labels, &buckets, sum, cumulative + over);
    }
}

/// Writes the standard process families of the calling process, with the names and meaning of
/// Prometheus' client libraries: CPU seconds, resident and virtual memory, open and maximum
/// file descriptors, start time (Unix seconds). A family whose `/proc` file cannot be read is
/// left out.
pub fn process(text: &mut Text) {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| torc_procfs::parse_pid_stat(&t));
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    if let Some(stat) = &stat {
        text.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
        )
        .sample(&[], (stat.utime + stat.stime) as f64 / ticks);
        text.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        )
        .sample(&[], stat.rss_pages * page);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        });
        if let Some(boot) = boot {
            text.family(
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
            )
            .sample(&[], boot as f64 + stat.start_time as f64 / ticks);
        }
    }
    if let Some(pages) = statm
        .split_ascii_whitespace()
        .next()
        .and_then(|v| v.parse::<u64>().ok())
    {
        text.family(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
        )
        .sample(&[], pages * page);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        text.family(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
        )
        .sample(&[], fds.count());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only `limit`, a valid and initialized rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        text.family(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
        )
        .sample(&[], limit.rlim_cur);
    }
}

/// One sample line of an exposition, as [`samples`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The series' name, with a histogram's `_bucket`, `_sum` or `_count`.
    pub name: &'a str,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

/// The samples of an exposition in the text format, in order (comments skipped). A line that
/// is not a well-formed sample is skipped too: a reader of another server's text takes what it
/// can read. Timestamps after the value are ignored.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(sample_line)
}

fn sample_line(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim();
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`
/// (reserved) and not `le` (a histogram's own).
pub fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
        && name != "le"
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Rust's shortest round-trip form ("0.25", "1e-7", "3"): Go's ParseFloat reads all.
        let _ = write!(out, "{v}");
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut t = Text::new();
        t.family(
            "torc_x_total",
            Kind::Counter,
            "Things seen.\nWith a \\ newline.",
        )
        .sample(&[("kind", "a\"b\\c\nd")], 3u64)
        .sample(&[], u64::MAX);
        t.family("torc_y", Kind::Gauge, "A level.")
            .sample(&[("a", "1"), ("b", "2")], 0.25)
            .sample(&[], f64::NAN)
            .sample(&[], f64::NEG_INFINITY);
        assert_eq!(
            t.into_string(),
            "# HELP torc_x_total Things seen.\\nWith a \\\\ newline.\n\
             # TYPE torc_x_total counter\n\
             torc_x_total{kind=\"a\\\"b\\\\c\\nd\"} 3\n\
             torc_x_total 18446744073709551615\n\
             # HELP torc_y A level.\n\
             # TYPE torc_y gauge\n\
             torc_y{a=\"1\",b=\"2\"} 0.25\n\
             torc_y NaN\n\
             torc_y -Inf\n"
        );
    }

    #[test]
    fn a_histogram_ends_with_inf_sum_and_count() {
        let mut t = Text::new();
        t.family("torc_seconds", Kind::Histogram, "Durations.")
            .histogram(&[("op", "put")], &[(0.001, 2), (0.01, 5)], 0.0305, 6);
        assert_eq!(
            t.into_string(),
            "# HELP torc_seconds Durations.\n\
             # TYPE torc_seconds histogram\n\
             torc_seconds_bucket{op=\"put\",le=\"0.001\"} 2\n\
             torc_seconds_bucket{op=\"put\",le=\"0.01\"} 5\n\
             torc_seconds_bucket{op=\"put\",le=\"+Inf\"} 6\n\
             torc_seconds_sum{op=\"put\"} 0.0305\n\
             torc_seconds_count{op=\"put\"} 6\n"
        );
    }

    #[test]
    fn this_process_has_its_families() {
        let mut t = Text::new();
        process(&mut t);
        let text = t.into_string();
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            let line = (text.lines())
                .find(|l| l.starts_with(&format!("{family} ")))
                .unwrap_or_else(|| panic!("{family} in\n{text}"));
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v >= 0.0, "{line}");
        }
    }

    #[test]
    fn a_duration_histogram_counts_into_its_buckets() {
        let h = DurationHistogram::new(&[0.001, 0.01]);
        for ms in [0.5, 1.0, 5.0, 20.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let mut t = Text::new();
        h.write(&mut t.family("torc_d_seconds", Kind::Histogram, "D."), &[]);
        let text = t.into_string();
        assert!(
            text.contains("torc_d_seconds_bucket{le=\"0.001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("torc_d_seconds_bucket{le=\"0.01\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("torc_d_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("torc_d_seconds_count 4\n"), "{text}");
        assert!(text.contains("torc_d_seconds_sum 0.0265\n"), "{text}");
    }

    #[test]
    fn samples_read_back_what_text_writes() {
        let mut t = Text::new();
        t.family("torc_x_total", Kind::Counter, "X.")
            .sample(&[("kind", "a\"b\\c\nd"), ("z", "")], 3u64)
            .sample(&[], 0.5);
        t.family("torc_s", Kind::Histogram, "S.")
            .histogram(&[], &[(0.1, 1)], 0.05, 2);
        let text = t.into_string();
        let got: Vec<Sample<'_>> = samples(&text).collect();
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(
            got[0],
            Sample {
                name: "torc_x_total",
                labels: vec![("kind", "a\"b\\c\nd".into()), ("z", String::new())],
                value: 3.0
            }
        );
        assert_eq!((got[1].name, got[1].value), ("torc_x_total", 0.5));
        assert_eq!(got[3].labels, vec![("le", "+Inf".to_string())]);
        assert_eq!((got[5].name, got[5].value), ("torc_s_count", 2.0));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text =
            "ok 1\n9bad 1\nx{a=\"unterminated 1\nx{a=1} 2\nnovalue\ny 1e3 1700000000\nz NaN\n";
        let got: Vec<(&str, f64)> = samples(text)
            .map(|s| (s.name, s.value))
            .filter(|(_, v)| !v.is_nan())
            .collect();
        assert_eq!(got, [("ok", 1.0), ("y", 1000.0)]);
        assert_eq!(samples(text).count(), 3, "z NaN is a sample too");
    }

    #[test]
    fn names() {
        assert!(valid_name("etcd_mvcc_put_total"));
        assert!(valid_name("a:b_c9"));
        assert!(!valid_name("9a"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
        assert!(valid_label("node"));
        assert!(!valid_label("le"));
        assert!(!valid_label("__name__"));
        assert!(!valid_label("a:b"));
    }
}
