//! Checking a `/metrics` answer the way a monitoring system reads it: the real parser and
//! linter of Prometheus (`promtool check metrics`, Debian's `prometheus` package, installed by
//! `scripts/test`), and a sample's value by its exact series.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::which;

/// Fails unless `promtool check metrics` accepts `text` without a single problem (it parses
/// the text format and lints names, units and help).
pub fn promtool_check(text: &str) -> anyhow::Result<()> {
    let problems = promtool_problems(text)?;
    if !problems.is_empty() {
        bail!("promtool check metrics: {problems:?}\n--- the text:\n{text}");
    }
    Ok(())
}

/// The lint problems `promtool check metrics` finds in `text` (one per line, e.g. `x_total
/// non-counter metrics should not have "_total" suffix`); an error when it cannot parse it.
/// For a server that must keep another's names (torc kv, etcd's): its problems should be ones
/// the other's own text has too.
pub fn promtool_problems(text: &str) -> anyhow::Result<Vec<String>> {
    let promtool = which("promtool").context(
        "promtool is not installed: run ./scripts/test (it installs it) or `apt-get install prometheus`",
    )?;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run promtool")?;
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 0: clean; 3: lint problems only; anything else (1): the text does not parse.
    match out.status.code() {
        Some(0 | 3) => Ok(said.lines().map(str::to_string).collect()),
        _ => bail!(
            "promtool check metrics: {}\n{said}\n--- the text:\n{text}",
            out.status
        ),
    }
}

/// The value of the sample written exactly as `series` (`name` or `name{a="b",c="d"}`, labels
/// in the order the server writes them), or `None` when the text has no such line.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
