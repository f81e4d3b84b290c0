//! Powering nodes on and off with the rack config's `power_command`: an argv template per
//! action (`{node}` and `{management_ip}` filled in), run as an external program (IPMI, a PDU's
//! CLI, ...) with a deadline.
//!
//! Both the API (`POST /api/v1/nodes/{name}/power`) and the original API (`/node/startup`,
//! `/node/shutdown`) come here.
//!
//! Invariants: the program runs with the argv of the template, never through a shell; it
//! gets no stdin and is killed when its deadline (60 s) passes.

use std::time::Duration;

use torc_api::{PowerAction, PowerResult};
use torc_types::NodeName;

use crate::rack::{Rack, RackError};

/// How long a power command may run.
const DEADLINE: Duration = Duration::from_secs(60);

/// Why a node could not be powered on or off.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error(transparent)]
    Rack(#[from] RackError),
    #[error(
        "no power_command is configured in {origin}; add power_command.on and power_command.off to power nodes {action}"
    )]
    NotConfigured { origin: String, action: PowerAction },
    #[error("node {node} has no management_ip in {origin}, which the power command needs")]
    NoManagementIp { node: NodeName, origin: String },
    #[error("power_command.{action} is empty in {origin}")]
    Empty { action: PowerAction, origin: String },
    #[error("{cmd} did not finish in 60 s")]
    Timeout { cmd: String },
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("power {action} of {node}: {cmd} exited with {exit_code}: {output}")]
    Failed {
        action: PowerAction,
        node: NodeName,
        cmd: String,
        exit_code: i32,
        /// Its output, trimmed.
        output: String,
    },
}

/// The argv that powers `node` on or off, from the config's template.
pub fn command(
    rack: &Rack,
    node: &NodeName,
    action: PowerAction,
) -> Result<Vec<String>, PowerError> {
    let s = rack.settings();
    let template = match action {
        PowerAction::On => s.power_on.clone(),
        PowerAction::Off => s.power_off.clone(),
    };
    let management_ip = rack.node_view(node)?.management_ip;
    let origin = s.config_origin.clone();
    let template = template.ok_or_else(|| PowerError::NotConfigured {
        origin: origin.clone(),
        action,
    })?;
    let mut argv = Vec::new();
    for part in &template {
        if part.contains("{management_ip}") && management_ip.is_none() {
            return Err(PowerError::NoManagementIp {
                node: node.clone(),
                origin,
            });
        }
        argv.push(part.replace("{node}", node.as_str()).replace(
            "{management_ip}",
            &management_ip.map(|i| i.to_string()).unwrap_or_default(),
        ));
    }
    if argv.is_empty() {
        return Err(PowerError::Empty { action, origin });
    }
    Ok(argv)
}

/// Runs a power command (from [`command`]); success is exit status 0.
pub async fn run(
    node: &NodeName,
    action: PowerAction,
    argv: Vec<String>,
) -> Result<PowerResult, PowerError> {
    let Some((cmd, args)) = argv.split_first() else {
        return Err(PowerError::Empty {
            action,
            origin: "the power command".to_string(),
        });
    };
    let running = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, running)
        .await
        .map_err(|_| PowerError::Timeout { cmd: cmd.clone() })?
        .map_err(|source| PowerError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    let exit_code = out.status.code().unwrap_or(-1);
    tracing::info!(%node, %action, exit_code, "power command ran");
    if !out.status.success() {
        return Err(PowerError::Failed {
            action,
            node: node.clone(),
            cmd: cmd.clone(),
            exit_code,
            output: output.trim().to_string(),
        });
    }
    Ok(PowerResult {
        node: node.clone(),
        action,
        command: argv,
        exit_code,
        output,
    })
}
