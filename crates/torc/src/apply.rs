//! `torc apply -f rack.yaml [--dry-run]`: sends a new rack config to the controller, which
//! checks it (an error names the line and the key; nothing changes), compares it with the one
//! applied, and applies it: added services start, removed ones stop (their data kept until
//! `torc service purge`), changed ones roll out one instance at a time (`torc status` shows
//! the rollouts), and keys that need a controller restart are named. `--dry-run` prints the
//! comparison only.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use torc_api::ApplyReport;

use crate::cli::{Target, print_json, runtime};

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    target: Target,
    /// The rack config to apply (YAML).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let client = args.target.client()?;
    let report = runtime()?.block_on(client.apply_config(
        &text,
        &args.file.display().to_string(),
        args.dry_run,
    ))?;
    if args.target.json() {
        return print_json(&report);
    }
    print!("{}", render(&report));
    Ok(())
}

/// The report for people, one line per change.
fn render(r: &ApplyReport) -> String {
    let mut out = String::new();
    let verb = |now: &str, later: &str| if r.dry_run { later } else { now }.to_string();
    for s in &r.added {
        out.push_str(&format!(
            "+ {s}: added ({})\n",
            verb("started", "would start")
        ));
    }
    for s in &r.removed {
        out.push_str(&format!(
            "- {s}: removed ({}; its data is kept until `torc service purge`)\n",
            verb("stopped", "would stop")
        ));
    }
    for c in &r.changed {
        let how = match c.rollout {
            true => verb(
                "rolling out one instance at a time",
                "would roll out one instance at a time",
            ),
            false => verb("applied", "would apply at once"),
        };
        out.push_str(&format!(
            "~ {}: {} changed ({how})\n",
            c.service,
            c.fields.join(", ")
        ));
    }
    for k in &r.needs_restart {
        out.push_str(&format!(
            "! {k}: changed, needs a restart of the controller\n"
        ));
    }
    if out.is_empty() {
        out.push_str("no change\n");
    }
    match r.dry_run {
        true => out.push_str("dry run: nothing was changed\n"),
        false => out.push_str("applied; `torc status` shows the rollouts\n"),
    }
    out
}
