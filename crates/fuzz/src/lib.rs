//! The fuzz driver of torc's crates, on the stable toolchain: feedback from the targets' own
//! signatures instead of coverage instrumentation (which needs nightly).
//!
//! A crate's `tests/fuzz.rs` lists its [`Target`]s (a name, a function from bytes to a
//! signature or a violation, a dictionary) and calls [`ci_run`] from a `#[test]` per target and
//! [`long_run`] from an ignored `long_run` test, which `scripts/fuzz` starts. How an input is
//! made: the driver mutates raw bytes (bit flips, byte changes, inserted and deleted runs,
//! splices of two inputs, dictionary tokens, repeated runs), and the target turns them into a
//! structured input (usually with `arbitrary::Unstructured`), so most inputs get past the first
//! checks while any byte string stays reachable. An input that does something new (a new
//! signature) joins the corpus and is mutated further.
//!
//! Two ways to run a target:
//! - in the test suite ([`ci_run`]): every input kept in `fuzz/corpus/<target>/` of its crate
//!   (the regression cases), then a fixed number of inputs from a fixed seed, bounded to ~2 s;
//! - for as long as asked (`scripts/fuzz <target> [SECONDS]`, [`long_run`]): a random seed, and
//!   new interesting inputs are written to the corpus. A crash (a panic, a broken check, or an
//!   input taking over a second) is written to `fuzz/crashes/<target>-<hash>` and fails the run;
//!   once fixed, move it to the corpus: it is a regression case from then on.
//!
//! What it is not: a coverage-guided fuzzer. `cargo fuzz` (libFuzzer) finds more per hour on a
//! nightly toolchain; these targets are plain functions that such a harness could call too.

use std::collections::HashSet;
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What one input did, in a few words (`"NoError rcode 0 ..."`, `"err unknown field"`): inputs
/// with the same signature count as one outcome, and an input with a new one joins the corpus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature(pub String);

impl From<String> for Signature {
    fn from(text: String) -> Self {
        Signature(text)
    }
}

impl From<&str> for Signature {
    fn from(text: &str) -> Self {
        Signature(text.to_owned())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A check the code under test broke on an input: a bug, with what was seen. A crate's own
/// violation type (an error enum) converts with `?`; a test's ad hoc one is [`Violation::new`].
#[derive(Debug)]
pub struct Violation(Box<dyn Error + Send + Sync>);

impl Violation {
    /// A violation described by `what`: a message, or any error.
    pub fn new(what: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Violation(what.into())
    }
}

impl<E: Error + Send + Sync + 'static> From<E> for Violation {
    fn from(e: E) -> Self {
        Violation(Box::new(e))
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a target returns for one input.
pub type Outcome = Result<Signature, Violation>;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Bytes -> structured input -> the check; `Ok(signature)` or `Err(violation)`.
    pub run: fn(&[u8]) -> Outcome,
    /// Tokens worth inserting whole.
    pub dictionary: &'static [&'static [u8]],
    /// Inputs per test-suite run, after the corpus.
    pub ci_inputs: usize,
    /// The crate's directory (`env!("CARGO_MANIFEST_DIR")`): its `fuzz/` holds the corpus.
    pub crate_dir: &'static str,
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

fn fuzz_dir(target: &Target) -> PathBuf {
    PathBuf::from(target.crate_dir).join("fuzz")
}

pub fn corpus_dir(target: &Target) -> PathBuf {
    fuzz_dir(target).join("corpus").join(target.name)
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
pub struct Report {
    #[allow(missing_docs)]
    pub executed: usize,
    pub signatures: usize,
    pub corpus: usize,
    pub saved: usize,
}

/// Why an input failed.
#[derive(Debug)]
enum Problem {
    /// It took longer than the limit (a second in release builds).
    Slow(Duration),
    Violation(Violation),
    /// The target panicked, with this message.
    Panic(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Slow(took) => write!(f, "took {took:?}"),
            Problem::Violation(violation) => violation.fmt(f),
            Problem::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// An input that failed a target, and where it was saved for replay.
#[derive(Debug)]
struct Crash {
    target: &'static str,
    problem: Problem,
    input: Vec<u8>,
    saved: Result<PathBuf, std::io::Error>,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = &self.input;
        write!(
            f,
            "{}: {}\n  input ({} bytes): {input:02x?}\n  saved as ",
            self.target,
            self.problem,
            input.len()
        )?;
        match &self.saved {
            Ok(path) => write!(f, "{}", path.display()),
            Err(e) => write!(f, "(not saved: {e})"),
        }
    }
}

/// Runs one input; a panic, a violation or a slow input is a crash: written to
/// `fuzz/crashes/` and returned as the failure.
fn execute(target: &Target, input: &[u8], slow: Duration) -> Result<Signature, Crash> {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let took = started.elapsed();
    let problem = match result {
        Ok(Ok(signature)) if took <= slow => return Ok(signature),
        Ok(Ok(_)) => Problem::Slow(took),
        Ok(Err(violation)) => Problem::Violation(violation),
        Err(panic) => Problem::Panic(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default(),
        ),
    };
    let dir = fuzz_dir(target).join("crashes");
    let path = dir.join(format!("{}-{}", target.name, file_name(input)));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, input))
        .map(|()| path);
    Err(Crash {
        target: target.name,
        problem,
        input: input.to_vec(),
        saved,
    })
}

/// Runs `target`: its corpus, then inputs mutated from it until `budget` inputs or `time` pass.
pub fn fuzz(target: &Target, seed: u64, budget: usize, time: Duration, save: bool) -> Report {
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

fn find<'a>(targets: &'a [Target], name: &str) -> &'a Target {
    targets
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name:?}"))
}

/// The test-suite run of a target: its corpus, then its `ci_inputs` from `seed`, at most 2 s;
/// the inputs must reach at least `outcomes` signatures (else the generator is broken).
pub fn ci_run(targets: &[Target], name: &str, seed: u64, outcomes: usize) {
    let t = find(targets, name);
    let report = fuzz(t, seed, t.ci_inputs, Duration::from_secs(2), false);
    eprintln!("{name}: {report:?}");
    assert!(report.executed >= 50, "{report:?}");
    assert!(
        report.signatures >= outcomes,
        "the inputs reach few outcomes: {report:?}"
    );
}

/// The long run `scripts/fuzz` starts: `TORC_FUZZ_TARGET`, `TORC_FUZZ_SECONDS` (60),
/// `TORC_FUZZ_SEED` (from the clock), `TORC_FUZZ_SAVE` (1: add new inputs to the corpus).
pub fn long_run(targets: &[Target]) {
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
    let t = find(targets, &name);
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
