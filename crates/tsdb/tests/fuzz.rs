//! Fuzz targets on the stable toolchain: `tsdb-lineproto` (a `/write` body through the
//! line-protocol parser), `tsdb-influxql` (query text through the InfluxQL parser and the
//! executor) and `tsdb-v08` (a 0.8 query through the shim, a 0.8 write body through its
//! parser). The checks are in `torc_tsdb::fuzzing`; the driver (mutation, corpus, the test-suite and
//! long runs, crash files) is `torc-fuzz`; this file makes structured inputs from its bytes.
//!
//! How an input is made: the driver mutates raw bytes (bit flips, byte changes, inserted and
//! deleted runs, splices of two inputs, dictionary tokens, repeated runs), and
//! `arbitrary::Unstructured` turns them into a structured input (lines of measurements, tags,
//! fields and timestamps; statements from InfluxQL's clauses; 0.8 queries and JSON bodies), so
//! most inputs get past the first checks while any byte string stays reachable. Feedback
//! without coverage instrumentation (which needs nightly): an input that does something new (a
//! new signature from the target: what parsed, what ran, an error of a new kind) joins the
//! corpus and is mutated further.
//!
//! Two ways to run:
//! - in the test suite (these `#[test]`s): every input kept in `fuzz/corpus/<target>/` (the
//!   regression cases), then a few thousand inputs from a fixed seed, bounded to ~2 s each;
//! - for as long as asked: `scripts/fuzz tsdb-influxql 300` (runs `long_run` below with
//!   `TORC_FUZZ_TARGET`, `TORC_FUZZ_SECONDS` and `TORC_FUZZ_SAVE=1`): a random seed, and new
//!   interesting inputs are written to the corpus. A crash (a panic, a broken check, or an input
//!   taking over a second) is written to `fuzz/crashes/<target>-<hash>` and fails the run; add it
//!   to the corpus once fixed, and it is a regression case from then on.

use std::{path::PathBuf, sync::OnceLock};

use arbitrary::Unstructured;
use torc_fuzz::{Outcome, Target};
use torc_tsdb::fuzzing::{self, Fixture};

const TARGETS: &[Target] = &[
    Target {
        name: "tsdb-lineproto",
        run: run_lineproto,
        dictionary: &[
            b"\\",
            b"\\ ",
            b"\\,",
            b"\\=",
            b"\"",
            b"\\\"",
            b",",
            b"=",
            b" ",
            b"\n",
            b"\r\n",
            b"#",
            b"i",
            b"u",
            b"e+",
            b"true",
            b"F",
            b"-",
            b"9223372036854775808",
            b"-9223372036854775808i",
            b"1e309",
            b"time",
            b"\xc3",
            b"\xe2\x82\xac",
        ],
        ci_inputs: 20_000,
        crate_dir: env!("CARGO_MANIFEST_DIR"),
    },
    Target {
        name: "tsdb-influxql",
        run: run_influxql,
        dictionary: &[
            b"SELECT ",
            b" FROM ",
            b" WHERE ",
            b" GROUP BY ",
            b"time(",
            b"fill(",
            b" AND ",
            b" OR ",
            b"(",
            b")",
            b"\"",
            b"'",
            b"/",
            b"=~",
            b"!~",
            b"*",
            b",",
            b";",
            b"::",
            b"--",
            b"now()",
            b"1h",
            b"-10m",
            b"9223372036854775807",
            b"1e308",
            b" LIMIT ",
            b" SLIMIT ",
            b" ORDER BY time DESC",
            b"(SELECT ",
            b"cpu",
            b"usage",
            b"host",
            b"\\",
            b"\n",
        ],
        ci_inputs: 4_000,
        crate_dir: env!("CARGO_MANIFEST_DIR"),
    },
    Target {
        name: "tsdb-v08",
        run: run_v08,
        dictionary: &[
            b"select ",
            b" from ",
            b" where ",
            b"list series",
            b" order asc",
            b" limit ",
            b"/",
            b"\"",
            b"'",
            b"[",
            b"]",
            b"{",
            b"}",
            b"\"columns\"",
            b"\"points\"",
            b"\"name\"",
            b"\"time\"",
            b"null",
            b"1e400",
            b"-0",
        ],
        ci_inputs: 4_000,
        crate_dir: env!("CARGO_MANIFEST_DIR"),
    },
];

/// All the bytes not used yet.
fn rest<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<&'a [u8]> {
    let n = u.len();
    u.bytes(n)
}

/// A few bytes of the input as text.
fn junk(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<String> {
    let n = u.int_in_range(0..=max)?;
    Ok(String::from_utf8_lossy(u.bytes(n.min(u.len()))?).into_owned())
}

const NAMES: &[&str] = &[
    "cpu", "m", "a b", "a,b", "x=y", "time", "é", "\\", "#c", "_", "0", "\"q\"", "",
];
const VALUES: &[&str] = &[
    "1",
    "-1.5",
    "1e10",
    "1E-3",
    ".5",
    "5.",
    "1i",
    "-9223372036854775808i",
    "9223372036854775808i",
    "1u",
    "t",
    "TRUE",
    "false",
    "f",
    "\"s\"",
    "\"a\\\"b\"",
    "\"\\\\\"",
    "\"open",
    "nan",
    "inf",
    "1e309",
    "+1",
    "--1",
    "0x10",
    "",
];
const TIMES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "1600000000000000000",
    "9223372036854775806",
    "9223372036854775807",
    "-9223372036854775806",
    "-9223372036854775808",
    "1.5",
    "1e9",
    "x",
];

/// One line of line protocol, built from pieces (or raw bytes).
fn lp_line(u: &mut Unstructured<'_>, out: &mut Vec<u8>) -> arbitrary::Result<()> {
    if u.ratio(1, 10)? {
        out.extend_from_slice(junk(u, 40)?.as_bytes());
        return Ok(());
    }
    if u.ratio(1, 20)? {
        out.extend_from_slice(b"  \t");
    }
    out.extend_from_slice(u.choose(NAMES)?.as_bytes());
    for _ in 0..u.int_in_range(0..=4u8)? {
        out.push(b',');
        out.extend_from_slice(u.choose(NAMES)?.as_bytes());
        if u.ratio(9, 10)? {
            out.push(b'=');
        }
        out.extend_from_slice(u.choose(NAMES)?.as_bytes());
    }
    out.extend_from_slice(if u.ratio(9, 10)? { b" " } else { b"  " });
    let fields = if u.ratio(1, 50)? {
        u.int_in_range(100..=3000u16)?
    } else {
        u.int_in_range(0..=5u16)?
    };
    for i in 0..fields {
        if i > 0 {
            out.push(b',');
        }
        if fields > 50 {
            out.extend_from_slice(format!("f{}", i % 97).as_bytes());
        } else {
            out.extend_from_slice(u.choose(NAMES)?.as_bytes());
        }
        out.push(b'=');
        out.extend_from_slice(u.choose(VALUES)?.as_bytes());
    }
    let t = u.choose(TIMES)?;
    if !t.is_empty() {
        out.push(b' ');
        out.extend_from_slice(t.as_bytes());
    }
    Ok(())
}

/// A `/write` body and its precision.
fn lineproto_input(data: &[u8]) -> arbitrary::Result<(Vec<u8>, u8)> {
    let mut u = Unstructured::new(data);
    let precision = u.arbitrary()?;
    if u.ratio(1, 8)? {
        return Ok((rest(&mut u)?.to_vec(), precision));
    }
    let mut body = Vec::new();
    for i in 0..u.int_in_range(1..=6u8)? {
        if i > 0 {
            body.extend_from_slice(if u.ratio(9, 10)? { b"\n" } else { b"\r\n" });
        }
        lp_line(&mut u, &mut body)?;
    }
    Ok((body, precision))
}

fn run_lineproto(data: &[u8]) -> Outcome {
    match lineproto_input(data) {
        Ok((body, precision)) => Ok(fuzzing::lineproto(&body, precision)?.into()),
        Err(_) => Ok("no input".into()),
    }
}

fn show_lineproto(data: &[u8]) -> String {
    format!(
        "{:?}",
        lineproto_input(data).map(|(b, p)| (String::from_utf8_lossy(&b).into_owned(), p))
    )
}

/// The fixture of the query targets (a database with data, made once per test process).
///
/// In memory where there is a tmpfs: a statement that changes state makes a fresh database
/// (files and fsyncs), and a loaded disk's fsync latency is not the kind of slowness the
/// targets look for. A static is never dropped, so the directory is removed at exit
/// (`atexit`), and, in case a process was killed, the directories of processes that are gone
/// are removed before a new one is made.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_dir() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    FIXTURE.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        const PREFIX: &str = "torc-tsdb-fuzz-";
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX)
                && pid.parse::<u32>().is_ok()
                && !std::path::Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the fixture's directory");
        let fixture = Fixture::new(&dir);
        if DIR.set(dir).is_ok() {
            // nix has no atexit.
            // SAFETY: registers a plain function, which only removes a directory.
            unsafe { libc::atexit(remove_dir) };
        }
        fixture
    })
}

const IDENTS: &[&str] = &[
    "cpu",
    "m",
    "usage",
    "idle",
    "up",
    "note",
    "host",
    "region",
    "v",
    "w",
    "k",
    "\"tag x\"",
    "\"weird,name\"",
    "\"quoted\"",
    "time",
    "nope",
    "\"\"",
    "fuzz.autogen.cpu",
    "other..cpu",
    "fuzz.short.cpu",
    "/c.*/",
    "/^m$/",
    "/(/",
    "*",
];
const LITERALS: &[&str] = &[
    "1",
    "-1.5",
    "0",
    "1e308",
    "9223372036854775807",
    "'h1'",
    "'east'",
    "'a b'",
    "''",
    "'it''s'",
    "true",
    "now()",
    "now() - 1h",
    "1600000000s",
    "'2020-09-13T12:26:40Z'",
    "'bad time'",
    "1h30m",
    "/h[0-9]/",
    "/(/",
    "-9223372036854775808",
];
const FUNCTIONS: &[&str] = &[
    "count",
    "mean",
    "sum",
    "min",
    "max",
    "first",
    "last",
    "median",
    "mode",
    "spread",
    "stddev",
    "percentile",
    "distinct",
    "top",
    "bottom",
    "derivative",
    "non_negative_derivative",
    "difference",
    "cumulative_sum",
    "moving_average",
    "abs",
    "round",
    "log",
    "pow",
    "sample",
    "holt_winters",
    "nope",
];
const OPS: &[&str] = &[
    " + ", " - ", " * ", " / ", " % ", " & ", " | ", " ^ ", " = ", " != ", " <> ", " < ", " <= ",
    " > ", " >= ", " =~ ", " !~ ", " AND ", " OR ",
];
const STATEMENTS: &[&str] = &[
    "SHOW DATABASES",
    "SHOW MEASUREMENTS",
    "SHOW SERIES",
    "SHOW TAG KEYS",
    "SHOW FIELD KEYS",
    "SHOW RETENTION POLICIES ON fuzz",
    "SHOW USERS",
    "SHOW SERIES CARDINALITY",
    "SHOW MEASUREMENT CARDINALITY",
    "SHOW CONTINUOUS QUERIES",
    "SHOW GRANTS FOR u",
    "CREATE DATABASE x",
    "DROP DATABASE fuzz",
    "DROP SERIES FROM cpu",
    "DROP MEASUREMENT cpu",
    "CREATE RETENTION POLICY r ON fuzz DURATION 1h REPLICATION 1 DEFAULT",
    "ALTER RETENTION POLICY autogen ON fuzz DURATION 2h",
    "DROP RETENTION POLICY autogen ON fuzz",
    "CREATE USER u WITH PASSWORD 'p' WITH ALL PRIVILEGES",
    "GRANT READ ON fuzz TO u",
    "REVOKE ALL PRIVILEGES FROM u",
    "SET PASSWORD FOR u = 'q'",
    "DROP USER u",
];

/// An expression of up to `depth` levels.
fn expr(u: &mut Unstructured<'_>, depth: u8, out: &mut String) -> arbitrary::Result<()> {
    match u.int_in_range(0..=9u8)? {
        0..=2 => out.push_str(u.choose(IDENTS)?),
        3..=4 => out.push_str(u.choose(LITERALS)?),
        5..=6 if depth > 0 => {
            out.push_str(u.choose(FUNCTIONS)?);
            out.push('(');
            for i in 0..u.int_in_range(0..=3u8)? {
                if i > 0 {
                    out.push_str(", ");
                }
                expr(u, depth - 1, out)?;
            }
            out.push(')');
        }
        7 if depth > 0 => {
            out.push('(');
            expr(u, depth - 1, out)?;
            out.push(')');
        }
        8 if depth > 0 => {
            // A long chain.
            let n = if u.ratio(1, 20)? {
                600
            } else {
                u.int_in_range(2..=30)?
            };
            let op = *u.choose(OPS)?;
            for i in 0..n {
                if i > 0 {
                    out.push_str(op);
                }
                out.push_str(u.choose(IDENTS)?);
            }
        }
        _ if depth > 0 => {
            expr(u, depth - 1, out)?;
            out.push_str(u.choose(OPS)?);
            expr(u, depth - 1, out)?;
        }
        _ => out.push_str(u.choose(LITERALS)?),
    }
    Ok(())
}

/// A SELECT statement built from InfluxQL's clauses.
fn select(u: &mut Unstructured<'_>, nesting: u8, out: &mut String) -> arbitrary::Result<()> {
    out.push_str("SELECT ");
    for i in 0..u.int_in_range(1..=3u8)? {
        if i > 0 {
            out.push_str(", ");
        }
        expr(u, 3, out)?;
        if u.ratio(1, 5)? {
            out.push_str(" AS ");
            out.push_str(u.choose(IDENTS)?);
        }
    }
    out.push_str(" FROM ");
    if nesting > 0 && u.ratio(1, 5)? {
        out.push('(');
        select(u, nesting - 1, out)?;
        out.push(')');
    } else {
        out.push_str(u.choose(IDENTS)?);
    }
    if u.ratio(2, 3)? {
        out.push_str(" WHERE ");
        expr(u, 4, out)?;
        if u.ratio(1, 2)? {
            out.push_str(" AND time >= ");
            out.push_str(u.choose(LITERALS)?);
        }
        if u.ratio(1, 3)? {
            out.push_str(" AND time < ");
            out.push_str(u.choose(LITERALS)?);
        }
    }
    if u.ratio(1, 2)? {
        out.push_str(" GROUP BY ");
        match u.int_in_range(0..=4u8)? {
            0 => out.push('*'),
            1 => out.push_str(u.choose(IDENTS)?),
            2 => out.push_str(&format!(
                "time({}{})",
                u.choose(&["1s", "7s", "1m", "1h", "1u", "0s", "-1s", "1000w"])?,
                u.choose(&["", ", 3s", ", -1m"])?
            )),
            _ => out.push_str(&format!("time(10s), {}", u.choose(IDENTS)?)),
        }
        if u.ratio(1, 2)? {
            out.push_str(&format!(
                " fill({})",
                u.choose(&["null", "none", "previous", "linear", "0", "-1.5", "x"])?
            ));
        }
    }
    if u.ratio(1, 4)? {
        out.push_str(u.choose(&[" ORDER BY time DESC", " ORDER BY time ASC", " ORDER BY v"])?);
    }
    for clause in [" LIMIT ", " OFFSET ", " SLIMIT ", " SOFFSET "] {
        if u.ratio(1, 6)? {
            out.push_str(clause);
            out.push_str(u.choose(&["0", "1", "3", "-1", "99999999999999999999"])?);
        }
    }
    Ok(())
}

/// Query text: statements from InfluxQL's clauses, or raw bytes.
fn influxql_input(data: &[u8]) -> arbitrary::Result<String> {
    let mut u = Unstructured::new(data);
    if u.ratio(1, 8)? {
        return Ok(String::from_utf8_lossy(rest(&mut u)?).into_owned());
    }
    let mut q = String::new();
    for i in 0..u.int_in_range(1..=3u8)? {
        if i > 0 {
            q.push_str("; ");
        }
        match u.int_in_range(0..=9u8)? {
            0..=6 => select(&mut u, 3, &mut q)?,
            7 => q.push_str(&junk(&mut u, 30)?),
            _ => {
                q.push_str(u.choose(STATEMENTS)?);
                if u.ratio(1, 3)? {
                    q.push_str(" WHERE ");
                    expr(&mut u, 2, &mut q)?;
                }
            }
        }
    }
    Ok(q)
}

fn run_influxql(data: &[u8]) -> Outcome {
    match influxql_input(data) {
        Ok(q) => Ok(fuzzing::influxql(fixture(), &q)?.into()),
        Err(_) => Ok("no input".into()),
    }
}

fn show_influxql(data: &[u8]) -> String {
    format!("{:?}", influxql_input(data))
}

/// A 0.8 query, a 0.8 write body and a precision.
fn v08_input(data: &[u8]) -> arbitrary::Result<(String, Vec<u8>, u8)> {
    let mut u = Unstructured::new(data);
    {
        let precision = u.arbitrary()?;
        let query = if u.ratio(1, 6)? {
            junk(&mut u, 60)?
        } else if u.ratio(1, 4)? {
            format!(
                "list series {}",
                u.choose(&["", "/c/", "/(/", "/^m$/", "x"])?
            )
        } else {
            let mut q = format!(
                "select {} from {}",
                u.choose(&["*", "usage", "usage, idle", "note", "count(usage)", "host"])?,
                u.choose(&["cpu", "m", "/c.*/", "nope", "\"weird,name\""])?
            );
            if u.ratio(1, 2)? {
                q.push_str(" where ");
                expr(&mut u, 2, &mut q)?;
            }
            if u.ratio(1, 3)? {
                q.push_str(" group by time(1m)");
            }
            q.push_str(u.choose(&["", " order asc", " order desc", " order"])?);
            if u.ratio(1, 3)? {
                q.push_str(&format!(" limit {}", u.choose(&["1", "0", "-5", "x"])?));
            }
            q
        };
        let body = if u.ratio(1, 5)? {
            rest(&mut u)?.to_vec()
        } else {
            let mut series = Vec::new();
            for _ in 0..u.int_in_range(0..=2u8)? {
                let cols: Vec<&str> = (0..u.int_in_range(0..=4u8)?)
                    .map(|_| {
                        u.choose(&["time", "v", "host", "sequence_number", "v", ""])
                            .copied()
                    })
                    .collect::<arbitrary::Result<_>>()?;
                let mut points = Vec::new();
                for _ in 0..u.int_in_range(0..=3u8)? {
                    let row: Vec<&str> = (0..cols.len() + usize::from(u.ratio(1, 10)?))
                        .map(|_| {
                            u.choose(&["1", "1.5", "\"a\"", "true", "null", "[]", "-1e300", "{}"])
                                .copied()
                        })
                        .collect::<arbitrary::Result<_>>()?;
                    points.push(format!("[{}]", row.join(",")));
                }
                let quoted: Vec<String> = cols.iter().map(|c| format!("{c:?}")).collect();
                series.push(format!(
                    r#"{{"name":{},"columns":[{}],"points":[{}]}}"#,
                    u.choose(&["\"m\"", "\"\"", "1", "\"a b\""])?,
                    quoted.join(","),
                    points.join(",")
                ));
            }
            format!("[{}]", series.join(",")).into_bytes()
        };
        Ok((query, body, precision))
    }
}

fn run_v08(data: &[u8]) -> Outcome {
    match v08_input(data) {
        Ok((q, body, precision)) => Ok(fuzzing::v08(fixture(), &q, &body, precision)?.into()),
        Err(_) => Ok("no input".into()),
    }
}

fn show_v08(data: &[u8]) -> String {
    format!(
        "{:?}",
        v08_input(data).map(|(q, b, p)| (q, String::from_utf8_lossy(&b).into_owned(), p))
    )
}

/// The structured input a target's bytes become, for reading a crash (the `show` test).
fn show_of(name: &str) -> fn(&[u8]) -> String {
    match name {
        "tsdb-lineproto" => show_lineproto,
        "tsdb-influxql" => show_influxql,
        "tsdb-v08" => show_v08,
        _ => panic!("no fuzz target {name:?}"),
    }
}

#[test]
fn tsdb_lineproto() {
    torc_fuzz::ci_run(TARGETS, "tsdb-lineproto", 0x5eed_0101, 10);
}

#[test]
fn tsdb_influxql() {
    torc_fuzz::ci_run(TARGETS, "tsdb-influxql", 0x5eed_0102, 20);
}

#[test]
fn tsdb_v08() {
    torc_fuzz::ci_run(TARGETS, "tsdb-v08", 0x5eed_0103, 10);
}

/// The long run `scripts/fuzz` starts (see `torc_fuzz::long_run`).
#[test]
#[ignore = "run by scripts/fuzz"]
fn long_run() {
    torc_fuzz::long_run(TARGETS);
}

/// Prints what an input file becomes (the query, body, ... a crash was), for triage:
/// `TORC_FUZZ_TARGET=tsdb-influxql TORC_FUZZ_SHOW=$PWD/crates/tsdb/fuzz/crashes/... cargo test -p
/// torc-tsdb --test fuzz -- --ignored --exact show --nocapture`.
#[test]
#[ignore = "a triage tool"]
fn show() {
    let var = |name: &str| std::env::var(name).expect(name);
    let show = show_of(&var("TORC_FUZZ_TARGET"));
    let input = std::fs::read(var("TORC_FUZZ_SHOW")).expect("TORC_FUZZ_SHOW: an input file");
    println!("{}", show(&input));
}
