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
    if !out.status.success() || !said.trim().is_empty() {
        bail!(
            "promtool check metrics: {}\n{said}\n--- the text:\n{text}",
            out.status
        );
    }
    Ok(())
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
