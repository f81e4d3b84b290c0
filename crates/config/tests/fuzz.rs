//! Fuzz target `config-yaml`: rack-config text through `RackConfig::parse`, on the stable
//! toolchain (the driver is `torc-fuzz`; `scripts/fuzz config-yaml 300` runs it for as long as
//! asked). Inputs are made from the bytes as YAML built of the schema's own keys, services,
//! nodes, scalars of every kind, flow and block styles, anchors and aliases, deep nesting and
//! `$` variables, or plain bytes. The checks: parsing never panics nor takes over a second
//! (alias bombs included); an error names its origin and, when it has a position, a line inside
//! the text; a config that parses also parses again from its own serialisation... to the same
//! config.

use arbitrary::Unstructured;
use torc_config::{ConfigError, RackConfig};
use torc_fuzz::{Outcome, Target, Violation};

const TARGETS: &[Target] = &[Target {
    name: "config-yaml",
    run: run_yaml,
    dictionary: &[
        b"nodes:\n",
        b"  - name: ",
        b"healthcheck:\n  system_services:\n",
        b"    - name: s\n      command: torc\n",
        b"      args: [",
        b"      credentials: {api_access: viewer, tls: true, secrets: [a]}\n",
        b"    - name: c\n      image_name: busybox\n      parameters: --ipc=host -v /a:/b:ro\n",
        b"      volumes: [{host_path: $DATA_DIR, container_path: /data}]\n",
        b"containers:\n  registries: [{host: 127.0.0.1:5000, user: u, password_secret: p}]\n",
        b"&a ",
        b"*a",
        b"<<: *a\n",
        b"{",
        b"}",
        b"[",
        b"]",
        b": ",
        b"- ",
        b"$IP",
        b"$$",
        b"$NOPE",
        b"!!binary ",
        b"\"\\u0000\"",
        b"'",
        b"|\n",
        b">\n",
        b"\t",
        b"~",
        b"0x10",
        b"1e999",
        b"-1",
        b"18446744073709551616",
    ],
    ci_inputs: 3_000,
    crate_dir: env!("CARGO_MANIFEST_DIR"),
}];

const KEYS: &[&str] = &[
    "name",
    "domain",
    "service_domain",
    "open_join",
    "nodes",
    "ip",
    "type",
    "function",
    "resources",
    "cpus",
    "mem_mb",
    "port_range",
    "healthcheck",
    "system_services",
    "command",
    "args",
    "env",
    "memory",
    "cpu",
    "sla",
    "health",
    "tcp",
    "credentials",
    "secrets",
    "api",
    "service-groups",
    "services",
    "stateclean",
    "timeout_in_seconds",
    "dns-addons",
    "access",
    "etcd",
    "user",
    "password_secret",
    "framework_secrets",
    "image_name",
    "parameters",
    "volumes",
    "host_path",
    "container_path",
    "network_type",
    "containers",
    "registries",
    "host",
    "memroy",
];

const SCALARS: &[&str] = &[
    "wedge",
    "bladerunner1",
    "127.0.3.20",
    "::1",
    "999.1.1.1",
    "master",
    "slave",
    "controller",
    "31000-31999",
    "2-1",
    "0",
    "-5",
    "1.5",
    "NaN",
    ".inf",
    "true",
    "null",
    "\"\"",
    "''",
    "singleton_each_node",
    "viewer",
    "$IP:53",
    "$PORT0",
    "$$x",
    "$UNSET",
    "Bad Name",
    "busybox",
    "Busybox:1",
    "localhost:5000/x@sha256:0",
    "--ipc=host",
    "-p 80:80",
    "--cap-add=ALL -e A=1",
    "$DATA_DIR",
    "/data",
    "none",
    "torc",
    "a-very-long-name-that-is-well-over-sixty-three-characters-long-for-a-label",
];

fn rest<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<&'a [u8]> {
    let n = u.len();
    u.bytes(n)
}

/// A YAML value, nested at most `depth` more levels.
fn value(
    u: &mut Unstructured<'_>,
    out: &mut String,
    indent: usize,
    depth: u32,
) -> arbitrary::Result<()> {
    match u.int_in_range(0..=9u8)? {
        0..=4 => {
            out.push(' ');
            out.push_str(u.choose(SCALARS)?);
            out.push('\n');
        }
        5 if depth > 0 => {
            out.push_str(" [");
            for i in 0..u.int_in_range(0..=4u8)? {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(u.choose(SCALARS)?);
            }
            out.push_str("]\n");
        }
        6 if depth > 0 => {
            out.push('\n');
            for _ in 0..u.int_in_range(1..=3u8)? {
                out.push_str(&" ".repeat(indent + 2));
                out.push('-');
                mapping_inline(u, out, indent + 4, depth - 1)?;
            }
        }
        7 if depth > 0 => {
            out.push('\n');
            mapping(u, out, indent + 2, depth - 1)?;
        }
        8 => {
            // Deep flow nesting.
            let n = u.int_in_range(1..=200usize)?;
            out.push(' ');
            out.push_str(&"[".repeat(n));
            out.push_str(&"]".repeat(n));
            out.push('\n');
        }
        _ => {
            out.push_str(" *a\n");
        }
    }
    Ok(())
}

fn mapping_inline(
    u: &mut Unstructured<'_>,
    out: &mut String,
    indent: usize,
    depth: u32,
) -> arbitrary::Result<()> {
    out.push(' ');
    out.push_str(u.choose(KEYS)?);
    out.push(':');
    value(u, out, indent, depth)?;
    for _ in 0..u.int_in_range(0..=3u8)? {
        out.push_str(&" ".repeat(indent));
        out.push_str(u.choose(KEYS)?);
        out.push(':');
        value(u, out, indent, depth)?;
    }
    Ok(())
}

fn mapping(
    u: &mut Unstructured<'_>,
    out: &mut String,
    indent: usize,
    depth: u32,
) -> arbitrary::Result<()> {
    for _ in 0..u.int_in_range(1..=5u8)? {
        out.push_str(&" ".repeat(indent));
        if u.ratio(1, 10)? {
            out.push_str("&a ");
        }
        out.push_str(u.choose(KEYS)?);
        out.push(':');
        value(u, out, indent, depth)?;
    }
    Ok(())
}

fn yaml(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1, 8)? {
        return Ok(String::from_utf8_lossy(rest(u)?).into_owned());
    }
    let mut out = String::new();
    if u.ratio(3, 4)? {
        out.push_str("nodes:\n  - name: wedge\n    ip: 127.0.3.20\n    type: master\n");
    }
    if u.ratio(1, 20)? {
        // An alias bomb: each level doubles the one before.
        out.push_str("bomb0: &b0 [x, x]\n");
        let levels = u.int_in_range(1..=30u32)?;
        for i in 1..levels {
            out.push_str(&format!("bomb{i}: &b{i} [*b{0}, *b{0}]\n", i - 1));
        }
    }
    mapping(u, &mut out, 0, 4)?;
    Ok(out)
}

fn run_yaml(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let Ok(text) = yaml(&mut u) else {
        return Ok("no input".into());
    };
    match RackConfig::parse(&text, "fuzz.yaml") {
        Ok(config) => {
            // What parsed, written back, parses to the same config.
            let again = serde_json::to_value(&config)
                .map_err(|e| Violation::new(format!("serialise: {e}")))?;
            let back: RackConfig = serde_json::from_value(again.clone()).map_err(|e| {
                Violation::new(format!("a parsed config does not read back: {e}\n{text}"))
            })?;
            if back != config {
                return Err(Violation::new(format!(
                    "a parsed config changed on the way back:\n{text}"
                )));
            }
            Ok("ok".into())
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            let message = e.to_string();
            if !message.contains("fuzz.yaml") {
                return Err(Violation::new(format!(
                    "an error that does not name its file: {message}"
                )));
            }
            let line = match &e {
                ConfigError::Invalid { line, .. } => *line,
                ConfigError::UnknownVariable { line, .. } => Some(*line),
                _ => None,
            };
            if let Some(l) = line
                && (l == 0 || l > lines + 1)
            {
                return Err(Violation::new(format!(
                    "error at line {l} of a {lines}-line text: {message}"
                )));
            }
            // The kind of error, without the input's own words: `fuzz.yaml:L:C: [key: ]what`.
            let what = message.splitn(4, ':').nth(3).unwrap_or(&message);
            let what = what.rsplit_once(": ").map_or(what, |(_, w)| w);
            let kind: String = what
                .chars()
                .take_while(|c| c.is_ascii_alphabetic() || *c == ' ')
                .take(40)
                .collect();
            Ok(format!("err {}", kind.trim()).into())
        }
    }
}

#[test]
fn config_yaml() {
    torc_fuzz::ci_run(TARGETS, "config-yaml", 0x5eed_0101, 5);
}

/// The long run `scripts/fuzz` starts (see `torc_fuzz::long_run`).
#[test]
#[ignore = "run by scripts/fuzz"]
fn long_run() {
    torc_fuzz::long_run(TARGETS);
}
