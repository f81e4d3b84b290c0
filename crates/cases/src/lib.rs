//! Data-driven test cases: text files of steps, each a command line, optional input lines, a
//! `----` line and the output expected, ended by a blank line. Lines starting with `#` and
//! blank lines between steps are comments. The steps of a file run in order against one state
//! (a story), and each step's actual output is compared with the expected one.
//!
//! `TORC_BLESS=1` rewrites every file with the actual outputs instead of failing (read the diff
//! before committing it: a blessed case is only as right as its reader).
//!
//! Used by the controller's rack rules (`crates/controller/tests/rules/`) and torc-net's route
//! planner (`crates/net/tests/routes/`). What it is not: an interpreter. What a command means
//! is the caller's; this crate only reads, compares and rewrites files.
//!
//! Invariant: blessing a file whose outputs all match rewrites nothing, so text between steps
//! (comments, spacing) is kept byte for byte.

use std::path::{Path, PathBuf};

/// One step: a command line, its input lines, and the output expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The command's line number in its file, from 1.
    pub line: usize,
    pub command: String,
    /// The input lines, each ended by `\n`.
    pub input: String,
    /// The expected output, each line ended by `\n`.
    pub expected: String,
}

/// A file: steps, and the text between them (comments, blank lines), kept for blessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Text(String),
    Case(Case),
}

/// A case file that is not one: a command with no `----` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub line: usize,
    pub command: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: `{}` has no `----` line",
            self.line, self.command
        )
    }
}

/// Reads a case file into its chunks.
pub fn parse(text: &str) -> Result<Vec<Chunk>, Malformed> {
    let lines: Vec<&str> = text.lines().collect();
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            chunks.push(Chunk::Text(line.to_string()));
            i += 1;
            continue;
        }
        let start = i + 1;
        let command = line.to_string();
        i += 1;
        let mut input = String::new();
        while i < lines.len() && lines[i] != "----" {
            input.push_str(lines[i]);
            input.push('\n');
            i += 1;
        }
        if i == lines.len() {
            return Err(Malformed {
                line: start,
                command,
            });
        }
        i += 1;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        chunks.push(Chunk::Case(Case {
            line: start,
            command,
            input,
            expected,
        }));
    }
    Ok(chunks)
}

/// Runs every `*.{ext}` file of `dir`, in name order. `story` starts a fresh state per file;
/// `step` runs one case on it and answers the actual output, or why the case itself is wrong
/// (reported as a failure; the file keeps the expected output when blessed). Panics naming
/// every difference, unless `TORC_BLESS=1`, which rewrites the files instead.
pub fn run_dir<S>(
    dir: &Path,
    ext: &str,
    mut story: impl FnMut() -> S,
    mut step: impl FnMut(&mut S, &Case) -> Result<String, String>,
) {
    let bless = std::env::var_os("TORC_BLESS").is_some_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut count = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("a case file");
        let shown = path.file_name().unwrap_or_default().to_string_lossy();
        let chunks = parse(&text).unwrap_or_else(|e| panic!("{shown}: {e}"));
        let mut state = story();
        let mut blessed = String::new();
        for chunk in &chunks {
            match chunk {
                Chunk::Text(t) => {
                    blessed.push_str(t);
                    blessed.push('\n');
                }
                Chunk::Case(case) => {
                    count += 1;
                    let actual = match step(&mut state, case) {
                        Ok(actual) => actual,
                        Err(why) => {
                            failures.push(format!("{shown}:{}: {why}", case.line));
                            case.expected.clone()
                        }
                    };
                    if actual != case.expected {
                        failures.push(format!(
                            "{shown}:{}: {}\n--- expected\n{}--- actual\n{}",
                            case.line, case.command, case.expected, actual
                        ));
                    }
                    blessed.push_str(&case.command);
                    blessed.push('\n');
                    blessed.push_str(&case.input);
                    blessed.push_str("----\n");
                    blessed.push_str(&actual);
                }
            }
        }
        if bless && blessed != text {
            std::fs::write(path, blessed).expect("rewrite a case file");
        }
    }
    assert!(
        count > 0,
        "no case in the *.{ext} files of {}",
        dir.display()
    );
    if !bless {
        assert!(
            failures.is_empty(),
            "{} of {count} cases differ (TORC_BLESS=1 rewrites them):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_keeps_the_text_between() {
        let text = "# a story\n\nset x\n1\n2\n----\nx = 1\n\nget x\n----\n";
        let chunks = parse(text).unwrap();
        // A comment, a blank line, a step, the blank line ending it, a step.
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[0], Chunk::Text("# a story".into()));
        assert_eq!(
            chunks[2],
            Chunk::Case(Case {
                line: 3,
                command: "set x".into(),
                input: "1\n2\n".into(),
                expected: "x = 1\n".into(),
            })
        );
        assert_eq!(chunks[3], Chunk::Text(String::new()));
        let Chunk::Case(last) = &chunks[4] else {
            panic!("a case")
        };
        assert_eq!((last.line, last.expected.as_str()), (9, ""));
    }

    #[test]
    fn a_step_without_its_separator_is_named() {
        let err = parse("ok\n----\n\nbroken\ninput\n").unwrap_err();
        assert_eq!(err.to_string(), "line 4: `broken` has no `----` line");
    }

    #[test]
    fn runs_a_directory_as_stories() {
        let dir = std::env::temp_dir().join(format!("torc-cases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.case"), "add 2\n----\n2\n\nadd 3\n----\n5\n").unwrap();
        std::fs::write(dir.join("b.case"), "add 1\n----\n1\n").unwrap();
        std::fs::write(dir.join("ignored.txt"), "not a case").unwrap();
        let mut files = 0;
        run_dir(
            &dir,
            "case",
            || {
                files += 1;
                0u64
            },
            |sum, case| {
                let n: u64 = (case.command.strip_prefix("add "))
                    .and_then(|n| n.parse().ok())
                    .ok_or("not `add N`")?;
                *sum += n;
                Ok(format!("{sum}\n"))
            },
        );
        assert_eq!(files, 2, "one story per case file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A step's command line split: the command, positional words, and `key=value` pairs (a value
/// with spaces is quoted: `why="two words"`). Errors name the argument.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub words: Vec<String>,
    pub keys: std::collections::BTreeMap<String, String>,
}

impl Args {
    /// Splits `line` into its command and arguments.
    pub fn parse(line: &str) -> Result<(String, Args), String> {
        let mut tokens = Vec::new();
        let mut current = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    if !current.is_empty() {
                        tokens.push(std::mem::take(&mut current));
                    }
                }
                c => current.push(c),
            }
        }
        if quoted {
            return Err("an unclosed quote".into());
        }
        if !current.is_empty() {
            tokens.push(current);
        }
        let mut tokens = tokens.into_iter();
        let command = tokens.next().ok_or("an empty command")?;
        let mut args = Args::default();
        for t in tokens {
            match t.split_once('=') {
                Some((k, v)) => {
                    args.keys.insert(k.to_string(), v.to_string());
                }
                None => args.words.push(t),
            }
        }
        Ok((command, args))
    }

    /// The `i`th positional word, `what` naming it when missing.
    pub fn word(&self, i: usize, what: &str) -> Result<&str, String> {
        self.words
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing {what}"))
    }

    /// `key`'s value as a whole number, if given.
    pub fn num(&self, key: &str) -> Result<Option<u64>, String> {
        self.keys
            .get(key)
            .map(|v| v.parse().map_err(|_| format!("{key}={v}: not a number")))
            .transpose()
    }

    /// `key`'s value as a number, or `default`.
    pub fn float(&self, key: &str, default: f64) -> Result<f64, String> {
        self.keys.get(key).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("{key}={v}: not a number"))
        })
    }
}

#[cfg(test)]
mod args_tests {
    use super::Args;

    #[test]
    fn words_keys_and_quotes() {
        let (command, args) = Args::parse(r#"report b1 at=3000 why="two words""#).unwrap();
        assert_eq!(command, "report");
        assert_eq!(args.word(0, "a node").unwrap(), "b1");
        assert_eq!(args.num("at").unwrap(), Some(3000));
        assert_eq!(args.keys["why"], "two words");
        assert_eq!(args.word(1, "a task").unwrap_err(), "missing a task");
        assert_eq!(
            Args::parse("x at=y").unwrap().1.num("at").unwrap_err(),
            "at=y: not a number"
        );
        assert_eq!(Args::parse(r#"x "open"#).unwrap_err(), "an unclosed quote");
        assert_eq!(Args::parse("  ").unwrap_err(), "an empty command");
    }
}
