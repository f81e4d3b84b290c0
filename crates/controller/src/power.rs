//! Powering nodes on and off with the rack config's `power_command`, and asking their power
//! state: an argv template per action (`on`, `off`, `status`; `{node}` and `{management_ip}`
//! filled in), run as an external program (IPMI, a PDU's CLI, ...) with a deadline.
//!
//! Both the API (`POST /api/v1/nodes/{name}/power`) and the original API (`/node/startup`,
//! `/node/shutdown`) come here, through `http::nodes::power_node`, which keeps every run's
//! result on the node (`Rack::power_ran`: the event feed and `NodeView.power`).
//!
//! Invariants: the program runs with the argv of the template, never through a shell; it
//! gets no stdin and is killed when its deadline (60 s) passes. A run always ends in a
//! [`PowerResult`] (`ok: false` when it failed, timed out or could not start), so a failure is
//! recorded like a success; [`outcome`] turns a failed one into the caller's error.

use std::time::Duration;

use torc_api::{PowerAction, PowerResult, PowerState};
use torc_types::{NodeName, UnixMillis};

use crate::rack::{Rack, RackError};

/// How long a power command may run.
const DEADLINE: Duration = Duration::from_secs(60);

/// At most this much of a command's output is kept (on the node and in the feed).
const OUTPUT_KEPT: usize = 4096;

/// Why a node could not be powered on or off, or its state read.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error(transparent)]
    Rack(#[from] RackError),
    #[error(
        "no power_command.{action} is configured in {origin}; add it (e.g. {example}) to run power {action}"
    )]
    NotConfigured {
        origin: String,
        action: PowerAction,
        example: &'static str,
    },
    #[error("node {node} has no management_ip in {origin}, which the power command needs")]
    NoManagementIp { node: NodeName, origin: String },
    #[error("power_command.{action} is empty in {origin}")]
    Empty { action: PowerAction, origin: String },
    /// It could not start, or did not finish by its deadline; `output` says which.
    #[error("power {action} of {node}: {output}")]
    DidNotRun {
        action: PowerAction,
        node: NodeName,
        output: String,
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

/// The argv that powers `node` on or off, or asks its state, from the config's template.
pub fn command(
    rack: &Rack,
    node: &NodeName,
    action: PowerAction,
) -> Result<Vec<String>, PowerError> {
    let s = rack.settings();
    let (template, example) = match action {
        PowerAction::On => (
            &s.power_on,
            "on: [ipmitool, -H, \"{management_ip}\", power, on]",
        ),
        PowerAction::Off => (
            &s.power_off,
            "off: [ipmitool, -H, \"{management_ip}\", power, off]",
        ),
        PowerAction::Status => (
            &s.power_status,
            "status: [ipmitool, -H, \"{management_ip}\", chassis, power, status]",
        ),
    };
    let management_ip = rack.node_view(node)?.management_ip;
    let origin = s.config_origin.clone();
    let template = template.clone().ok_or_else(|| PowerError::NotConfigured {
        origin: origin.clone(),
        action,
        example,
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
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err(PowerError::Empty { action, origin });
    }
    Ok(argv)
}

/// The power state a `status` command's output says: its last word, `on` or `off`.
pub fn parse_state(output: &str) -> PowerState {
    let last = output.split_whitespace().last().unwrap_or_default();
    match last.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "on" => PowerState::On,
        "off" => PowerState::Off,
        _ => PowerState::Unknown,
    }
}

/// At most `OUTPUT_KEPT` bytes of `s`, cut at a character boundary.
fn capped(mut s: String) -> String {
    if s.len() > OUTPUT_KEPT {
        let mut end = OUTPUT_KEPT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" [cut]");
    }
    s
}

/// Runs a power command (from [`command`]) at `at`; success is exit status 0. Whatever
/// happens, the answer says it.
pub async fn run(
    node: &NodeName,
    action: PowerAction,
    argv: Vec<String>,
    at: UnixMillis,
) -> PowerResult {
    let mut result = PowerResult {
        node: node.clone(),
        action,
        command: argv.clone(),
        exit_code: None,
        output: String::new(),
        ok: false,
        at,
        state: None,
    };
    let Some((cmd, args)) = argv.split_first() else {
        result.output = "the power command is empty".into();
        return result;
    };
    let running = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(DEADLINE, running).await {
        Err(_) => {
            result.output = format!("{cmd} did not finish in {} s; killed", DEADLINE.as_secs())
        }
        Ok(Err(e)) => result.output = format!("cannot run {cmd}: {e}"),
        Ok(Ok(out)) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            result.output = capped(output.trim().to_string());
            result.exit_code = out.status.code();
            result.ok = out.status.success();
        }
    }
    if action == PowerAction::Status {
        result.state = Some(if result.ok {
            parse_state(&result.output)
        } else {
            PowerState::Unknown
        });
    }
    tracing::info!(%node, %action, exit_code = ?result.exit_code, ok = result.ok, "power command ran");
    result
}

/// A run's answer for its caller: the result when it succeeded, else the error naming why.
pub fn outcome(result: PowerResult) -> Result<PowerResult, PowerError> {
    if result.ok {
        return Ok(result);
    }
    let (action, node) = (result.action, result.node);
    Err(match result.exit_code {
        Some(exit_code) => PowerError::Failed {
            action,
            node,
            cmd: result.command.first().cloned().unwrap_or_default(),
            exit_code,
            output: result.output,
        },
        None => PowerError::DidNotRun {
            action,
            node,
            output: result.output,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RackSettings;

    fn rack(power: &str) -> Rack {
        let yaml = format!(
            "{power}nodes:\n  - name: b1\n    ip: 10.0.0.21\n    type: slave\n  - name: b2\n    ip: 10.0.0.22\n    type: slave\n    management_ip: 10.250.0.22\n"
        );
        let config = torc_config::RackConfig::parse(&yaml, "rack.yaml").unwrap();
        Rack::fresh(RackSettings::from_config(&config, "rack.yaml"), 1_000)
    }

    #[test]
    fn the_argv_is_the_template_filled_in_or_says_what_is_missing() {
        let r = rack(
            "power_command:\n  on: [ipmitool, -H, \"{management_ip}\", power, on]\n  off: [pdu, \"outlet {node}\", off]\n",
        );
        let (b1, b2) = ("b1".parse().unwrap(), "b2".parse().unwrap());
        assert_eq!(
            command(&r, &b2, PowerAction::On).unwrap(),
            ["ipmitool", "-H", "10.250.0.22", "power", "on"]
        );
        assert_eq!(
            command(&r, &b1, PowerAction::Off).unwrap(),
            ["pdu", "outlet b1", "off"]
        );
        let e = command(&r, &b1, PowerAction::On).unwrap_err().to_string();
        assert_eq!(
            e,
            "node b1 has no management_ip in rack.yaml, which the power command needs"
        );
        let e = command(&r, &b1, PowerAction::Status)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no power_command.status is configured in rack.yaml; add it (e.g. status: [ipmitool,"),
            "{e}"
        );
        let e = command(&r, &"b9".parse().unwrap(), PowerAction::Status)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "no node named \"b9\"");
        let e = command(&rack(""), &b1, PowerAction::Off)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no power_command.off is configured in rack.yaml"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_run_says_how_it_went() {
        let node: NodeName = "b1".parse().unwrap();
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = run(
            &node,
            PowerAction::Status,
            argv(&["sh", "-c", "echo Chassis Power is off"]),
            7,
        )
        .await;
        assert!(ok.ok && ok.exit_code == Some(0) && ok.at == 7, "{ok:?}");
        assert_eq!(
            (ok.state, ok.output.as_str()),
            (Some(PowerState::Off), "Chassis Power is off")
        );
        let bad = run(
            &node,
            PowerAction::Off,
            argv(&["sh", "-c", "echo no BMC >&2; exit 4"]),
            8,
        )
        .await;
        assert_eq!((bad.ok, bad.exit_code, bad.state), (false, Some(4), None));
        let e = outcome(bad).unwrap_err().to_string();
        assert_eq!(e, "power off of b1: sh exited with 4: no BMC");
        let missing = run(&node, PowerAction::On, argv(&["/no/such/ipmitool"]), 9).await;
        assert_eq!((missing.ok, missing.exit_code), (false, None));
        let e = outcome(missing).unwrap_err().to_string();
        assert!(
            e.starts_with("power on of b1: cannot run /no/such/ipmitool: "),
            "{e}"
        );
    }

    #[test]
    fn the_state_is_the_last_word() {
        assert_eq!(parse_state("Chassis Power is on\n"), PowerState::On);
        assert_eq!(parse_state("Chassis Power is off"), PowerState::Off);
        assert_eq!(parse_state("power: OFF."), PowerState::Off);
        assert_eq!(parse_state(""), PowerState::Unknown);
        assert_eq!(
            parse_state("Error: Unable to establish IPMI"),
            PowerState::Unknown
        );
    }

    #[test]
    fn long_output_is_cut_at_a_character() {
        let s = capped("é".repeat(OUTPUT_KEPT));
        assert!(
            s.len() <= OUTPUT_KEPT + 6 && s.ends_with("[cut]"),
            "{}",
            s.len()
        );
    }
}
