//! `torc node`: node maintenance. `cordon` and `uncordon` (no new task on a node, or again),
//! `drain` (cordon, then move the node's service instances elsewhere one at a time; waits and
//! prints progress until done, or `--timeout`), and `power on|off|status` through the rack
//! config's `power_command`.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use torc_api::{DrainView, NodeView, PowerAction};
use torc_types::NodeName;

use crate::cli::{Target, print_json, runtime};

#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: NodeAction,
}

#[derive(Subcommand)]
enum NodeAction {
    /// No new task is placed on the node; what runs there keeps running.
    Cordon { name: NodeName },
    /// Tasks may be placed on the node again (a drain going on stops).
    Uncordon { name: NodeName },
    /// Cordon the node, then move its service instances elsewhere, one at a time (each
    /// replacement runs before the old task is killed). Pinned instances
    /// (`singleton_each_node`), jobs and frameworks' tasks stay. Waits, printing progress.
    Drain {
        name: NodeName,
        /// Give up waiting after this many seconds (the drain goes on in the controller).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Start the drain and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Power the node on or off, or ask its power state, with the rack config's
    /// `power_command` (e.g. ipmitool against its `management_ip`).
    Power { action: PowerAction, name: NodeName },
}

pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let json = args.target.json();
    let rt = runtime()?;
    match args.action {
        NodeAction::Cordon { name } => {
            let node = rt.block_on(client.cordon(&name))?;
            if json {
                return print_json(&node);
            }
            println!(
                "node {name} cordoned: no new task is placed on it ({} task(s) keep running)",
                node.tasks
            );
        }
        NodeAction::Uncordon { name } => {
            let node = rt.block_on(client.uncordon(&name))?;
            if json {
                return print_json(&node);
            }
            println!("node {name} uncordoned: tasks may be placed on it again");
        }
        NodeAction::Drain {
            name,
            timeout,
            no_wait,
        } => {
            let node = rt.block_on(client.drain(&name))?;
            if no_wait {
                if json {
                    return print_json(&node);
                }
                println!("drain of {name} started: {}", progress(&node));
                return Ok(());
            }
            let deadline = Instant::now() + Duration::from_secs(timeout);
            let mut last = String::new();
            let node = rt.block_on(async {
                let mut node = node;
                loop {
                    let line = progress(&node);
                    if line != last && !json {
                        println!("{line}");
                        last = line;
                    }
                    if node.drain.as_ref().is_some_and(|d| d.done_at.is_some()) {
                        return Ok(node);
                    }
                    if Instant::now() >= deadline {
                        anyhow::bail!(
                            "the drain of {name} is not done after {timeout} s ({}); it goes on in the controller (`torc nodes` shows it, `torc node uncordon {name}` stops it)",
                            progress(&node)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    node = client.node(&name).await?;
                }
            })?;
            if json {
                print_json(&node)?;
            }
            if let Some(why) = node.drain.and_then(|d| d.stopped) {
                anyhow::bail!("the drain of {name} stopped before it was done: {why}");
            }
        }
        NodeAction::Power { action, name } => {
            let result = rt.block_on(client.power(&name, action))?;
            if json {
                return print_json(&result);
            }
            let state = result
                .state
                .map(|s| format!(": power is {s}"))
                .unwrap_or_default();
            println!(
                "power {action} of {name} ran{state} (`{}`, exit {})",
                result.command.join(" "),
                result.exit_code.map_or("-".into(), |c| c.to_string())
            );
            if !result.output.is_empty() {
                println!("{}", result.output);
            }
        }
    }
    Ok(())
}

/// One line on a node's drain: `3 moved, 2 to move; moving web-1: ... ; waits: ...`, or
/// `done: ...`.
fn progress(node: &NodeView) -> String {
    let Some(d) = &node.drain else {
        return "no drain".into();
    };
    let DrainView {
        moved,
        to_move,
        moving,
        waiting,
        left,
        done_at,
        stopped,
        ..
    } = d;
    let mut line = match (done_at, stopped) {
        (Some(_), Some(why)) => format!("stopped ({why}): {moved} moved, {to_move} not moved"),
        (Some(_), None) => format!("done: {moved} moved"),
        (None, _) => format!("{moved} moved, {to_move} to move"),
    };
    if let Some(m) = moving {
        line.push_str(&format!("; moving {m}"));
    }
    if let Some(w) = waiting {
        line.push_str(&format!("; waits: {w}"));
    }
    if done_at.is_some() && !left.is_empty() {
        line.push_str(&format!("; left in place: {}", left.join("; ")));
    }
    line
}
