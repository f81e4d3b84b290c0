//! Fuzz targets on the stable toolchain: `dns-wire` (a datagram through the UDP answer path and
//! the TCP engine path) and `dns-zone` (zone-file text through the parser, then served). The
//! checks are in `torc_dns::fuzzing`; this file is the driver.
//!
//! How an input is made: the driver mutates raw bytes (bit flips, byte changes, inserted and
//! deleted runs, splices of two inputs, dictionary tokens), and `arbitrary::Unstructured` turns
//! them into a structured input (a DNS packet with a header, a question and OPT records; zone-file
//! lines of directives, owners, TTLs, types and data), so most inputs get past the first checks
//! while any byte string stays reachable. Feedback without coverage instrumentation (which needs
//! nightly): an input that does something new (a new signature from the target: outcome, rcode,
//! sections; an error of a new kind) joins the corpus and is mutated further.
//!
//! Two ways to run:
//! - in the test suite (these `#[test]`s): every input kept in `fuzz/corpus/<target>/` (the
//!   regression cases), then a few thousand inputs from a fixed seed, bounded to ~2 s each;
//! - for as long as asked: `scripts/fuzz dns-wire 300` (runs `long_run` below with
//!   `TORC_FUZZ_TARGET`, `TORC_FUZZ_SECONDS` and `TORC_FUZZ_SAVE=1`): a random seed, and new
//!   interesting inputs are written to the corpus. A crash (a panic, a broken check, or an input
//!   taking over a second) is written to `fuzz/crashes/<target>-<hash>` and fails the run; add it
//!   to the corpus once fixed, and it is a regression case from then on.

use std::{
    collections::HashSet,
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
    time::{Duration, Instant},
};

use arbitrary::Unstructured;
use torc_dns::fuzzing;

/// One fuzz target.
struct Target {
    name: &'static str,
    /// Bytes -> structured input -> the check; `Ok(signature)` or `Err(violation)`.
    run: fn(&[u8]) -> Result<String, String>,
    /// Tokens worth inserting whole.
    dictionary: &'static [&'static [u8]],
    /// Inputs per test-suite run, after the corpus.
    ci_inputs: usize,
}

const TARGETS: &[Target] = &[
    Target {
        name: "dns-wire",
        run: run_wire,
        dictionary: &[
            b"\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00",
            b"\x00\x00\x29\xff\xff\x01\x00\x00\x00\x00\x04",
            b"\xc0\x0c",
            b"\x3f",
            b"\x40",
            b"\x00\xff\x00\x01",
            b"\x00\xfc\x00\x01",
            b"\x06compat\x04test\x00",
            b"\x05homer\x03ave\x00",
            b"\x07service\x04torc\x00",
        ],
        ci_inputs: 15_000,
    },
    Target {
        name: "dns-zone",
        run: run_zone,
        dictionary: &[
            b"$ORIGIN ",
            b"$TTL ",
            b"$INCLUDE ",
            b" IN ",
            b" SOA ns.a. h.a. 1 2 3 4 5\n",
            b" CNAME ",
            b" TXT \"",
            b"\\",
            b"\\065",
            b"(",
            b")",
            b";",
            b"\n",
            b"\n\t",
            b"@",
            b".",
            b"..",
            b"4294967296",
            b"1w2d3h4m5s",
        ],
        ci_inputs: 5_000,
    },
];

/// A record type for a generated question or record.
const QTYPES: &[u16] = &[
    1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 252, 251, 255, 0, 13, 65535,
];
/// Question names: ours (both zones, apex, nested, CNAMEs), mixed case, and outside.
const NAMES: &[&str] = &[
    "compat.test",
    "pool.compat.test",
    "www.compat.test",
    "dangling.compat.test",
    "external.compat.test",
    "nope.compat.test",
    "a.b.deep.compat.test",
    "_sip._udp.compat.test",
    "MaIl.CoMpAt.TeSt",
    "bladerunner1.homer.ave",
    "homer.ave",
    "1.0.250.10.in-addr.arpa",
    "21.3.250.10.in-addr.arpa",
    "web.service.torc",
    "_web._tcp.service.torc",
    "big.service.torc",
    "example.com",
    "",
];

/// All the bytes not used yet.
fn rest<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<&'a [u8]> {
    let n = u.len();
    u.bytes(n)
}

fn push_name(p: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
}

/// A DNS packet from the bytes, and the peer it comes from.
fn packet(u: &mut Unstructured<'_>) -> arbitrary::Result<(Vec<u8>, u8)> {
    let peer = u.arbitrary::<u8>()?;
    if u.ratio(1, 8)? {
        return Ok((rest(u)?.to_vec(), peer));
    }
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&u.arbitrary::<u16>()?.to_be_bytes());
    // Mostly a plain query (QR clear, opcode QUERY), sometimes anything.
    let flags_hi = if u.ratio(7, 8)? {
        u.arbitrary::<u8>()? & 0x07
    } else {
        u.arbitrary()?
    };
    p.push(flags_hi);
    p.push(u.arbitrary()?);
    let qdcount: u16 = if u.ratio(9, 10)? { 1 } else { u.arbitrary()? };
    let (ancount, nscount): (u16, u16) = if u.ratio(9, 10)? {
        (0, 0)
    } else {
        (u.arbitrary()?, u.arbitrary()?)
    };
    let opts = u.int_in_range(0..=3u8)?;
    for count in [qdcount, ancount, nscount, u16::from(opts)] {
        p.extend_from_slice(&count.to_be_bytes());
    }
    // The question.
    if u.ratio(3, 4)? {
        push_name(&mut p, u.choose(NAMES)?);
    } else {
        for _ in 0..u.int_in_range(0..=6u8)? {
            let len = *u.choose(&[0u8, 1, 3, 63, 64, 0xc0, 0xff])?;
            let len = if len == 3 {
                u.int_in_range(1..=62)?
            } else {
                len
            };
            p.push(len);
            let body = u.bytes(usize::from(len.min(63)))?;
            p.extend_from_slice(body);
        }
        p.push(0);
    }
    let qtype = if u.ratio(7, 8)? {
        *u.choose(QTYPES)?
    } else {
        u.arbitrary()?
    };
    p.extend_from_slice(&qtype.to_be_bytes());
    let qclass: u16 = *u.choose(&[1u16, 1, 1, 255, 3, 254, 0])?;
    p.extend_from_slice(&qclass.to_be_bytes());
    // The additional section: OPT records (payload, version, DO, options), or other junk.
    for _ in 0..opts {
        if u.ratio(4, 5)? {
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            let payload = *u.choose(&[512u16, 1232, 4096, 0, 65535, 1])?;
            p.extend_from_slice(&payload.to_be_bytes());
            p.push(u.arbitrary()?);
            p.push(if u.ratio(7, 8)? { 0 } else { u.arbitrary()? });
            p.push(if u.ratio(1, 2)? { 0x80 } else { 0 });
            p.push(0);
            let n = u.int_in_range(0..=8)?;
            let rdata = u.bytes(n)?;
            let rdlen = if u.ratio(9, 10)? {
                rdata.len() as u16
            } else {
                u.arbitrary()?
            };
            p.extend_from_slice(&rdlen.to_be_bytes());
            p.extend_from_slice(rdata);
        } else {
            let n = u.int_in_range(0..=16)?;
            let junk = u.bytes(n)?;
            p.extend_from_slice(junk);
        }
    }
    if u.ratio(1, 8)? {
        p.extend_from_slice(rest(u)?);
    }
    Ok((p, peer))
}

fn run_wire(data: &[u8]) -> Result<String, String> {
    let mut u = Unstructured::new(data);
    let Ok((packet, peer)) = packet(&mut u) else {
        return Ok("no input".to_owned());
    };
    fuzzing::wire(&packet, peer)
}

/// Zone-file text from the bytes, and the origin it is given.
fn zone_text(u: &mut Unstructured<'_>) -> arbitrary::Result<(String, Option<&'static str>)> {
    let origin = *u.choose(&[
        Some("a"),
        Some("compat.test"),
        None,
        Some("x..y"),
        Some("@"),
    ])?;
    if u.ratio(1, 8)? {
        return Ok((String::from_utf8_lossy(rest(u)?).into_owned(), origin));
    }
    const OWNERS: &[&str] = &["@", "www", "a.b", "x.a.", "*", "", "\\.", "outside.", "ns"];
    const TYPES: &[&str] = &[
        "A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "PTR", "SOA", "HINFO", "a", "IN",
    ];
    const DATA: &[&str] = &[
        "1.2.3.4",
        "::1",
        "ns",
        "ns.a.",
        "10",
        "\"t x\"",
        "\"open",
        "\"\\\"q\\\" \\255\"",
        "( 1 2",
        ")",
        "; c",
        "1 2 3 4 5",
        "ns.a. h.a. 1 2 3 4 5",
        "ns h ( 1 2 3 4 5 )",
        "999999999999",
        "1h",
        "@",
        "256.1.1.1",
        "1 1 80 t",
    ];
    let mut text = String::new();
    if u.ratio(3, 4)? {
        text.push_str("@ 60 IN SOA ns.a. h.a. 1 2 3 4 5\n");
    }
    for _ in 0..u.int_in_range(0..=12u8)? {
        match u.int_in_range(0..=9u8)? {
            0 => text.push_str(&format!("$ORIGIN {}\n", u.choose(OWNERS)?)),
            1 => text.push_str(&format!("$TTL {}\n", u.choose(DATA)?)),
            2 => {
                // A random line.
                let len = u.int_in_range(0..=40)?;
                text.push_str(&String::from_utf8_lossy(u.bytes(len)?));
                text.push('\n');
            }
            3 => {
                // A long label or name.
                let label = "l".repeat(u.int_in_range(60..=70)?);
                let n = u.int_in_range(1..=5)?;
                text.push_str(&vec![label; n].join("."));
                text.push_str(" 60 A 1.2.3.4\n");
            }
            _ => {
                if u.ratio(1, 4)? {
                    text.push('\t');
                } else {
                    text.push_str(u.choose(OWNERS)?);
                    text.push(' ');
                }
                if u.ratio(1, 2)? {
                    text.push_str(&format!("{} ", u.int_in_range(0..=86_400u32)?));
                }
                if u.ratio(1, 2)? {
                    text.push_str("IN ");
                }
                text.push_str(u.choose(TYPES)?);
                for _ in 0..u.int_in_range(0..=3u8)? {
                    text.push(' ');
                    text.push_str(u.choose(DATA)?);
                }
                text.push('\n');
            }
        }
    }
    Ok((text, origin))
}

fn run_zone(data: &[u8]) -> Result<String, String> {
    let mut u = Unstructured::new(data);
    let Ok((text, origin)) = zone_text(&mut u) else {
        return Ok("no input".to_owned());
    };
    fuzzing::zone(&text, origin)
}

/// xorshift64*: the driver's only randomness, seeded, so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutated copy of `input`: one to four changes.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !corpus.is_empty() => {
                // Splice: our head, another input's tail.
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            5 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len())];
                out.splice(at..at, token.iter().copied());
            }
            6 if !out.is_empty() => {
                // Repeat a run: deep nesting and long inputs.
                let end = (at + 1 + rng.below(8)).min(out.len());
                let run = out[at.min(end)..end].to_vec();
                for _ in 0..rng.below(16) {
                    out.splice(at..at, run.iter().copied());
                }
            }
            _ => {
                let n = 1 + rng.below(4);
                out.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
    out.truncate(4096);
    out
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn corpus_dir(target: &Target) -> PathBuf {
    fuzz_dir().join("corpus").join(target.name)
}

/// A short stable name for an input's file.
fn file_name(input: &[u8]) -> String {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in input {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Inputs kept in memory to mutate, at most; past it a new one replaces a random one.
const MAX_CORPUS: usize = 20_000;
/// New inputs written to the corpus directory per run, at most: a signature that turns out to
/// be too fine (it took in text of the input) must not flood the repository.
const MAX_SAVED: usize = 500;

/// What a run found.
#[derive(Debug, Default)]
struct Report {
    executed: usize,
    signatures: usize,
    corpus: usize,
    saved: usize,
}

/// Runs one input; a panic, a violation or a slow input is a crash: written to
/// `fuzz/crashes/` and returned as the failure.
fn execute(target: &Target, input: &[u8], slow: Duration) -> Result<String, String> {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let took = started.elapsed();
    let problem = match result {
        Ok(Ok(signature)) if took <= slow => return Ok(signature),
        Ok(Ok(_)) => format!("took {took:?}"),
        Ok(Err(violation)) => violation,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            format!("panicked: {message}")
        }
    };
    let dir = fuzz_dir().join("crashes");
    let path = dir.join(format!("{}-{}", target.name, file_name(input)));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, input))
        .map_or_else(
            |e| format!("(not saved: {e})"),
            |()| path.display().to_string(),
        );
    Err(format!(
        "{}: {problem}\n  input ({} bytes): {input:02x?}\n  saved as {saved}",
        target.name,
        input.len()
    ))
}

/// Runs `target`: its corpus, then inputs mutated from it until `budget` inputs or `time` pass.
fn fuzz(target: &Target, seed: u64, budget: usize, time: Duration, save: bool) -> Report {
    let slow = if cfg!(debug_assertions) {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    };
    let mut report = Report::default();
    let mut seen = HashSet::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for path in files {
        let input = std::fs::read(&path).unwrap_or_default();
        let signature = execute(target, &input, slow).unwrap_or_else(|crash| {
            panic!(
                "corpus file {} (a regression case):\n{crash}",
                path.display()
            )
        });
        report.executed += 1;
        seen.insert(signature);
        corpus.push(input);
    }
    report.corpus = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    while report.executed < budget && started.elapsed() < time {
        let parent = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, parent, &corpus, target.dictionary);
        let signature = execute(target, &input, slow).unwrap_or_else(|crash| panic!("{crash}"));
        report.executed += 1;
        if seen.insert(signature) {
            if save && report.saved < MAX_SAVED {
                let path = dir.join(file_name(&input));
                std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&path, &input))
                    .unwrap_or_else(|e| panic!("cannot save {}: {e}", path.display()));
                report.saved += 1;
            }
            if corpus.len() < MAX_CORPUS {
                corpus.push(input);
            } else {
                let victim = rng.below(corpus.len());
                corpus[victim] = input;
            }
        }
    }
    report.signatures = seen.len();
    report
}

fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name:?}"))
}

/// The test-suite run of a target: its corpus, then its `ci_inputs` from `seed`, at most 2 s;
/// the inputs must reach at least `outcomes` signatures (else the generator is broken).
fn ci_run(name: &str, seed: u64, outcomes: usize) {
    let t = target(name);
    let report = fuzz(t, seed, t.ci_inputs, Duration::from_secs(2), false);
    eprintln!("{name}: {report:?}");
    assert!(report.executed >= 50, "{report:?}");
    assert!(
        report.signatures >= outcomes,
        "the inputs reach few outcomes: {report:?}"
    );
}

#[test]
fn dns_wire() {
    ci_run("dns-wire", 0x5eed_0001, 10);
}

#[test]
fn dns_zone() {
    ci_run("dns-zone", 0x5eed_0002, 5);
}

/// The long run `scripts/fuzz` starts: `TORC_FUZZ_TARGET`, `TORC_FUZZ_SECONDS` (60),
/// `TORC_FUZZ_SEED` (from the clock), `TORC_FUZZ_SAVE` (1: add new inputs to the corpus).
#[test]
#[ignore = "run by scripts/fuzz"]
fn long_run() {
    let var = |name: &str| std::env::var(name).ok();
    let name = var("TORC_FUZZ_TARGET").expect("TORC_FUZZ_TARGET: a target name");
    let seconds = var("TORC_FUZZ_SECONDS").map_or(60, |s| s.parse().expect("seconds"));
    let seed = var("TORC_FUZZ_SEED").map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        },
        |s| s.parse().expect("a seed"),
    );
    let save = var("TORC_FUZZ_SAVE").is_some_and(|s| s == "1");
    let t = target(&name);
    eprintln!("fuzzing {name} for {seconds} s, seed {seed}");
    let report = fuzz(t, seed, usize::MAX, Duration::from_secs(seconds), save);
    eprintln!(
        "{name}: {} inputs, {} signatures, {} corpus inputs replayed, {} new inputs saved to {}",
        report.executed,
        report.signatures,
        report.corpus,
        report.saved,
        corpus_dir(t).display()
    );
}
