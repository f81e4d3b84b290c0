//! The runner of the route planner's cases: `tests/routes/*.case`, text in and text out, in
//! the format of `tests/routes/README.md`. Besides comparing the output, every case checks the
//! planner's invariants: deletions name owned routes only, nothing is added or replaced over a
//! route torc does not own, and planning again after applying the plan (to a model of the
//! kernel's table) gives no operation.
//!
//! `TORC_BLESS=1 cargo test -p torc-net --test routes` rewrites the expected outputs with what
//! the planner does now; read the diff before committing it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use torc_net::routes::{MAIN_TABLE, Op, Owner, RouteKind, RouteProtocol, RouteView, plan};

/// One case: a command line, its input lines, and the output expected.
struct Case {
    line: usize,
    command: String,
    input: Vec<String>,
    expected: String,
}

/// A case file: cases, and the text between them (comments, blank lines), kept for blessing.
enum Chunk {
    Text(String),
    Case(Case),
}

fn parse_file(text: &str) -> Result<Vec<Chunk>, String> {
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
        let mut input = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            input.push(lines[i].to_string());
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("line {start}: `{command}` has no `----` line"));
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

#[test]
fn route_plans() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/routes");
    let bless = std::env::var_os("TORC_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/routes")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).expect("a case file");
        let chunks = parse_file(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut blessed = String::new();
        for chunk in chunks {
            match chunk {
                Chunk::Text(line) => {
                    blessed.push_str(&line);
                    blessed.push('\n');
                }
                Chunk::Case(case) => {
                    cases += 1;
                    let actual = match run(&case) {
                        Ok(actual) => actual,
                        Err(e) => {
                            failures.push(format!("{name}:{}: {e}", case.line));
                            case.expected.clone()
                        }
                    };
                    if actual != case.expected {
                        failures.push(format!(
                            "{name}:{}: `{}`\n--- expected\n{}--- actual\n{}",
                            case.line, case.command, case.expected, actual
                        ));
                    }
                    blessed.push_str(&case.command);
                    blessed.push('\n');
                    for line in &case.input {
                        blessed.push_str(line);
                        blessed.push('\n');
                    }
                    blessed.push_str("----\n");
                    blessed.push_str(&actual);
                }
            }
        }
        if bless && blessed != text {
            std::fs::write(path, blessed).expect("rewrite a case file");
        }
    }
    assert!(cases > 0, "no case in {}", dir.display());
    if !failures.is_empty() && !bless {
        panic!(
            "{} of {cases} route cases failed (TORC_BLESS=1 accepts the actual outputs):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

/// The inputs of one `plan` case.
struct Inputs {
    ours: RouteProtocol,
    desired: BTreeMap<Ipv4Addr, Ipv4Addr>,
    observed: Vec<RouteView>,
    local: BTreeSet<Ipv4Addr>,
}

fn run(case: &Case) -> Result<String, String> {
    let inputs = parse_inputs(case)?;
    let planned = plan(&inputs.desired, &inputs.observed, &inputs.local);
    check_invariants(&inputs, &planned.ops)?;
    let mut out = String::new();
    for op in &planned.ops {
        writeln!(out, "{op}").unwrap();
    }
    for skipped in &planned.skipped {
        writeln!(out, "skip {skipped}").unwrap();
    }
    if out.is_empty() {
        out.push_str("no change\n");
    }
    Ok(out)
}

fn parse_inputs(case: &Case) -> Result<Inputs, String> {
    let mut words = case.command.split_whitespace();
    if words.next() != Some("plan") {
        return Err(format!("unknown command `{}`", case.command));
    }
    let mut ours = RouteProtocol::TORC;
    for word in words {
        match word.strip_prefix("ours=") {
            Some(n) => ours = n.parse().map_err(|e| format!("{e}"))?,
            None => return Err(format!("unknown argument `{word}`")),
        }
    }
    let mut inputs = Inputs {
        ours,
        desired: BTreeMap::new(),
        observed: Vec::new(),
        local: BTreeSet::new(),
    };
    for (n, line) in case.input.iter().enumerate() {
        let at = case.line + 1 + n;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["desired", dst, "via", via] => {
                let (dst, via) = (addr(dst, at)?, addr(via, at)?);
                if inputs.desired.insert(dst, via).is_some() {
                    return Err(format!("line {at}: {dst} is desired twice"));
                }
            }
            ["local", a] => {
                inputs.local.insert(addr(a, at)?);
            }
            ["route", rest @ ..] => inputs.observed.push(parse_route(rest, ours, at)?),
            _ => return Err(format!("line {at}: cannot read `{line}`")),
        }
    }
    Ok(inputs)
}

fn addr(word: &str, at: usize) -> Result<Ipv4Addr, String> {
    word.parse()
        .map_err(|_| format!("line {at}: `{word}` is not an IPv4 address"))
}

/// `[TYPE] DST/LEN [via GW] [dev DEV] [proto P] [metric N] [table T]`, as `ip route` prints a
/// route; `proto` defaults to `boot`, as `ip route add` writes.
fn parse_route(words: &[&str], ours: RouteProtocol, at: usize) -> Result<RouteView, String> {
    let mut words = words.iter().copied().peekable();
    let mut kind = RouteKind::Unicast;
    if let Some(first) = words.peek()
        && !first.contains('/')
    {
        kind = first.parse().map_err(|e| format!("line {at}: {e}"))?;
        words.next();
    }
    let prefix = words
        .next()
        .ok_or_else(|| format!("line {at}: a route needs DST/LEN"))?;
    let (dst, len) = prefix
        .split_once('/')
        .ok_or_else(|| format!("line {at}: `{prefix}` is not DST/LEN"))?;
    let mut route = RouteView {
        dst: addr(dst, at)?,
        dst_len: len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("line {at}: bad prefix length `{len}`"))?,
        gateway: None,
        device: None,
        protocol: RouteProtocol::BOOT,
        kind,
        table: MAIN_TABLE,
        priority: 0,
        owner: Owner::Other,
    };
    while let Some(key) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("line {at}: `{key}` needs a value"))?;
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("line {at}: `{key} {value}` needs a number"))
        };
        match key {
            "via" => route.gateway = Some(addr(value, at)?),
            "dev" => route.device = Some(value.to_string()),
            "proto" => route.protocol = value.parse().map_err(|e| format!("line {at}: {e}"))?,
            "metric" => route.priority = number()?,
            "table" => route.table = number()?,
            _ => return Err(format!("line {at}: unknown route field `{key}`")),
        }
    }
    Ok(route.classify(ours))
}

/// The planner's promises, checked on every case whatever its expected output says.
fn check_invariants(inputs: &Inputs, ops: &[Op]) -> Result<(), String> {
    let foreign_32 = |dst: Ipv4Addr| {
        inputs.observed.iter().any(|r| {
            r.owner == Owner::Other && r.dst == dst && r.dst_len == 32 && r.table == MAIN_TABLE
        })
    };
    for op in ops {
        match op {
            Op::Delete { dst, via, priority } => {
                let owned = inputs.observed.iter().any(|r| {
                    r.owner == Owner::Torc
                        && r.dst == *dst
                        && r.gateway == *via
                        && r.priority == *priority
                });
                if !owned {
                    return Err(format!("`{op}` names no owned route"));
                }
            }
            Op::Add { dst, via } | Op::Replace { dst, via, .. } => {
                if inputs.desired.get(dst) != Some(via) {
                    return Err(format!("`{op}` is not desired"));
                }
                if inputs.local.contains(via) {
                    return Err(format!("`{op}` goes through a local address"));
                }
                if foreign_32(*dst) {
                    return Err(format!("`{op}` would overwrite a route torc does not own"));
                }
            }
        }
    }
    let mut table = inputs.observed.clone();
    for op in ops {
        apply_as_the_kernel_does(&mut table, op, inputs.ours)?;
    }
    let again = plan(&inputs.desired, &table, &inputs.local);
    if !again.ops.is_empty() {
        let ops: Vec<String> = again.ops.iter().map(|op| op.to_string()).collect();
        return Err(format!(
            "planning again after the plan still gives: {}",
            ops.join("; ")
        ));
    }
    Ok(())
}

/// A model of the kernel's main table for one operation: a delete removes the first route
/// matching protocol, type, gateway and metric; an add fails when a metric-0 route to the
/// same /32 exists; a replace overwrites the first metric-0 route to the same /32, whoever
/// owns it (which is why the planner must not ask for one over a route it does not own).
fn apply_as_the_kernel_does(
    table: &mut Vec<RouteView>,
    op: &Op,
    ours: RouteProtocol,
) -> Result<(), String> {
    let same_32 = |r: &RouteView, dst: Ipv4Addr| {
        r.dst == dst && r.dst_len == 32 && r.table == MAIN_TABLE && r.priority == 0
    };
    let new_route = |dst: Ipv4Addr, via: Ipv4Addr| {
        RouteView {
            dst,
            dst_len: 32,
            gateway: Some(via),
            device: None,
            protocol: ours,
            kind: RouteKind::Unicast,
            table: MAIN_TABLE,
            priority: 0,
            owner: Owner::Other,
        }
        .classify(ours)
    };
    match *op {
        Op::Delete { dst, via, priority } => {
            if let Some(i) = table.iter().position(|r| {
                r.dst == dst
                    && r.dst_len == 32
                    && r.table == MAIN_TABLE
                    && r.protocol == ours
                    && r.kind == RouteKind::Unicast
                    && r.gateway == via
                    && r.priority == priority
            }) {
                table.remove(i);
            }
        }
        Op::Add { dst, via } => {
            if table.iter().any(|r| same_32(r, dst)) {
                return Err(format!(
                    "`{op}` would fail: a metric-0 route to {dst}/32 exists"
                ));
            }
            table.push(new_route(dst, via));
        }
        Op::Replace { dst, via, .. } => match table.iter().position(|r| same_32(r, dst)) {
            Some(i) if table[i].owner != Owner::Torc => {
                return Err(format!("`{op}` would overwrite `{}`", table[i]));
            }
            Some(i) => table[i] = new_route(dst, via),
            None => table.push(new_route(dst, via)),
        },
    }
    Ok(())
}
