//! Fuzz target `api-json`: the JSON bodies the controller and the agents accept (task specs,
//! registrations, status reports, framework registrations, token, login, review and power
//! requests, the original's announcements, desired-state documents), on the stable toolchain
//! (the driver is `torc-fuzz`; `scripts/fuzz api-json 300` runs it for as long as asked).
//!
//! Inputs are JSON built from the bytes with the types' own field names, values of every kind,
//! deep nesting and long strings, or plain bytes. The checks: decoding never panics nor takes
//! over a second; an error names a line and column; what decodes encodes to JSON that decodes
//! to the same value; a decoded task spec can be validated without a panic.

use arbitrary::Unstructured;
use serde::Serialize;
use serde::de::DeserializeOwned;
use torc_fuzz::{Outcome, Target, Violation};

const TARGETS: &[Target] = &[Target {
    name: "api-json",
    run: run_json,
    dictionary: &[
        b"{\"name\":\"x\",\"command\":\"true\"}",
        b"\"credentials\":{\"api_access\":\"viewer\",\"tls\":true,\"secrets\":[\"a\"]}",
        b"\"resources\":{\"cpus\":1e308,\"mem_mb\":-1,\"disk_mb\":0}",
        b"\"ports\":65535",
        b"\"env\":{\"A\":\"b\",\"1\":\"x\"}",
        b"\"constraints\":{\"node_name\":\"Bad Name\"}",
        b"\"port_range\":\"31000-30000\"",
        b"\"state\":\"running\"",
        b"\\u0000",
        b"\\ud800",
        b"[[[[[[[[[[",
        b"]]]]]]]]]]",
        b"1e999",
        b"-0",
        b"null",
    ],
    ci_inputs: 20_000,
    crate_dir: env!("CARGO_MANIFEST_DIR"),
}];

const KEYS: &[&str] = &[
    "name",
    "command",
    "args",
    "env",
    "resources",
    "cpus",
    "mem_mb",
    "disk_mb",
    "ports",
    "constraints",
    "node_name",
    "node_type",
    "node_function",
    "kill_grace_ms",
    "metered",
    "credentials",
    "api_access",
    "tls",
    "secrets",
    "node",
    "ip",
    "agent_url",
    "port_range",
    "attributes",
    "runtime",
    "kind",
    "limits_enforced",
    "tasks",
    "id",
    "state",
    "exit_code",
    "message",
    "at",
    "full",
    "public_key",
    "failover_timeout_ms",
    "api_url",
    "role",
    "framework",
    "ttl_seconds",
    "token",
    "action",
    "generation",
    "spec",
    "launch",
    "files",
    "controller",
    "image",
    "volumes",
    "is_metered",
    "last_update",
];

const SCALARS: &[&str] = &[
    "\"x\"",
    "\"wedge\"",
    "\"sleep\"",
    "\"127.0.0.1\"",
    "\"31000-31999\"",
    "\"viewer\"",
    "\"admin\"",
    "\"framework\"",
    "\"running\"",
    "\"on\"",
    "\"a.b_c-d.1\"",
    "\"..\"",
    "\"\"",
    "0",
    "1",
    "-1",
    "1.5",
    "18446744073709551616",
    "1e308",
    "true",
    "false",
    "null",
];

fn value(u: &mut Unstructured<'_>, out: &mut String, depth: u32) -> arbitrary::Result<()> {
    match u.int_in_range(0..=9u8)? {
        0..=3 => out.push_str(u.choose(SCALARS)?),
        4 if depth > 0 => {
            out.push('[');
            for i in 0..u.int_in_range(0..=4u8)? {
                if i > 0 {
                    out.push(',');
                }
                value(u, out, depth - 1)?;
            }
            out.push(']');
        }
        5..=7 if depth > 0 => object(u, out, depth - 1)?,
        8 => {
            // A long string, or deep nesting.
            if u.ratio(1, 2)? {
                out.push('"');
                out.push_str(&"x".repeat(u.int_in_range(0..=70_000usize)?));
                out.push('"');
            } else {
                let n = u.int_in_range(1..=5_000usize)?;
                out.push_str(&"[".repeat(n));
                out.push_str(&"]".repeat(n));
            }
        }
        _ => {
            let n = u.int_in_range(0..=12usize)?;
            let bytes = u.bytes(n)?;
            out.push_str(&String::from_utf8_lossy(bytes));
        }
    }
    Ok(())
}

fn object(u: &mut Unstructured<'_>, out: &mut String, depth: u32) -> arbitrary::Result<()> {
    out.push('{');
    for i in 0..u.int_in_range(0..=8u8)? {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(u.choose(KEYS)?);
        out.push_str("\":");
        value(u, out, depth)?;
    }
    out.push('}');
    Ok(())
}

/// Decodes `text` as `T`; if it decodes, the value must survive a round trip.
fn check<T: DeserializeOwned + Serialize>(text: &str, what: &str) -> Outcome {
    let broken = |message: String| Violation::new(format!("{what}: {message}"));
    match serde_json::from_str::<T>(text) {
        Ok(v) => {
            let once = serde_json::to_value(&v).map_err(|e| broken(format!("encode: {e}")))?;
            let back: T = serde_json::from_value(once.clone())
                .map_err(|e| broken(format!("what decoded does not decode again: {e}\n{text}")))?;
            let twice = serde_json::to_value(&back).map_err(|e| broken(e.to_string()))?;
            if once != twice {
                return Err(broken(format!("changed on a round trip:\n{text}")));
            }
            Ok(format!("{what} ok").into())
        }
        Err(e) => {
            if e.line() == 0 {
                return Err(broken(format!("an error without a position: {e}")));
            }
            Ok(format!("{what} {:?}", e.classify()).into())
        }
    }
}

fn run_json(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let Ok(which) = u.int_in_range(0..=9u8) else {
        return Ok("no input".into());
    };
    let mut text = String::new();
    if u.ratio(1, 8).unwrap_or(false) {
        let n = u.len();
        text = String::from_utf8_lossy(u.bytes(n).unwrap_or_default()).into_owned();
    } else if object(&mut u, &mut text, 4).is_err() {
        return Ok("no input".into());
    }
    match which {
        0 => {
            let sig = check::<torc_types::TaskSpec>(&text, "task spec")?;
            if let Ok(spec) = serde_json::from_str::<torc_types::TaskSpec>(&text) {
                let valid = spec.validate().is_ok();
                return Ok(format!("{sig} valid={valid}").into());
            }
            Ok(sig)
        }
        1 => check::<torc_api::RegisterRequest>(&text, "register"),
        2 => check::<torc_api::StatusReport>(&text, "status report"),
        3 => check::<torc_api::FrameworkRegistration>(&text, "framework registration"),
        4 => check::<torc_api::TokenRequest>(&text, "token request"),
        5 => check::<torc_api::LoginRequest>(&text, "login"),
        6 => check::<torc_api::PowerRequest>(&text, "power"),
        7 => check::<torc_api::original::OriginalTask>(&text, "announce"),
        8 => check::<torc_api::DesiredState>(&text, "desired state"),
        _ => check::<torc_api::ReviewRequest>(&text, "review"),
    }
}

#[test]
fn api_json() {
    torc_fuzz::ci_run(TARGETS, "api-json", 0x5eed_0201, 10);
}

/// The long run `scripts/fuzz` starts (see `torc_fuzz::long_run`).
#[test]
#[ignore = "run by scripts/fuzz"]
fn long_run() {
    torc_fuzz::long_run(TARGETS);
}
