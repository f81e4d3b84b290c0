//! Data-driven tests with the real `dig` (Debian's bind9-dnsutils).
//!
//! Each `data/cases/*.case` file sets up one server (zone files, a snapshot, maybe an upstream
//! server), runs one `dig` command against it, and states the expected status, flags, EDNS
//! payload and sections. Sections are compared line by line after collapsing blank space and
//! sorting (record order inside an RRset is not meaningful). An omitted section must be empty.
//! Add a case by adding a file; the format is described in `data/cases/README.md`.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, dig, snapshot, zone};
use torc_dns::{Cidr, DnsConfig, LOWER_EPOCH_GRACE, Verdict};

/// What a case expects, or what dig printed, in comparable form.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    status: String,
    flags: String,
    /// The OPT record's UDP payload size, or "none".
    edns: String,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
}

fn normalise(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn summarise(dig_output: &str) -> Summary {
    let mut s = Summary {
        edns: "none".to_owned(),
        ..Summary::default()
    };
    let mut section: Option<&mut Vec<String>> = None;
    for line in dig_output.lines() {
        if let Some(rest) = line.split_once("status: ").map(|(_, r)| r) {
            s.status = rest.split(',').next().unwrap_or("").to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            s.flags = rest.split(';').next().unwrap_or("").trim().to_owned();
        } else if let Some((_, udp)) = line.split_once("; udp: ") {
            s.edns = udp.trim().to_owned();
        }
        if line.is_empty() {
            section = None;
            continue;
        }
        if line.starts_with(";; ANSWER SECTION:") {
            section = Some(&mut s.answer);
        } else if line.starts_with(";; AUTHORITY SECTION:") {
            section = Some(&mut s.authority);
        } else if line.starts_with(";; ADDITIONAL SECTION:") {
            section = Some(&mut s.additional);
        } else if let Some(lines) = section.as_deref_mut() {
            lines.push(normalise(line));
        }
    }
    for lines in [&mut s.answer, &mut s.authority, &mut s.additional] {
        lines.sort();
    }
    s
}

/// One case file, parsed.
struct Case {
    zones: Vec<String>,
    snapshot: Option<String>,
    upstream: Option<String>,
    allow_recursion: Option<String>,
    dig: String,
    expected: Summary,
}

fn parse_case(text: &str) -> Result<Case, String> {
    let mut case = Case {
        zones: Vec::new(),
        snapshot: None,
        upstream: None,
        allow_recursion: None,
        dig: String::new(),
        expected: Summary {
            edns: "none".to_owned(),
            ..Summary::default()
        },
    };
    let mut section: Option<&mut Vec<String>> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line {
            "answer:" => section = Some(&mut case.expected.answer),
            "authority:" => section = Some(&mut case.expected.authority),
            "additional:" => section = Some(&mut case.expected.additional),
            _ => {
                if let Some(lines) = section.as_deref_mut() {
                    lines.push(normalise(line));
                    continue;
                }
                let (key, value) = line
                    .split_once(':')
                    .ok_or_else(|| format!("line {}: expected `key: value`", n + 1))?;
                let value = value.trim().to_owned();
                match key {
                    "zone" => case.zones.push(value),
                    "snapshot" => case.snapshot = Some(value),
                    "upstream" => case.upstream = Some(value),
                    "allow-recursion" => case.allow_recursion = Some(value),
                    "dig" => case.dig = value,
                    "status" => case.expected.status = value,
                    "flags" => case.expected.flags = value,
                    "edns" => case.expected.edns = value,
                    other => return Err(format!("line {}: unknown key {other:?}", n + 1)),
                }
            }
        }
    }
    for lines in [
        &mut case.expected.answer,
        &mut case.expected.authority,
        &mut case.expected.additional,
    ] {
        lines.sort();
    }
    if case.dig.is_empty() {
        return Err("no `dig:` line".to_owned());
    }
    Ok(case)
}

async fn run_case(case: &Case) -> Summary {
    let upstream = case
        .upstream
        .as_ref()
        .map(|file| TestServer::start(DnsConfig::default(), Some(&snapshot(file))));
    let mut config = DnsConfig {
        static_zones: case.zones.iter().map(|z| zone(z)).collect(),
        upstreams: upstream.iter().map(|u| u.addr).collect(),
        ..DnsConfig::default()
    };
    if let Some(cidrs) = &case.allow_recursion {
        config.allow_recursion = cidrs
            .split_whitespace()
            .map(|c| c.parse::<Cidr>().expect("CIDR"))
            .collect();
    }
    let server = TestServer::start(config, case.snapshot.as_deref().map(snapshot).as_ref());
    let args: Vec<&str> = case.dig.split_whitespace().collect();
    let output = dig(server.addr, &args).await;
    server.stop().await;
    if let Some(upstream) = upstream {
        upstream.stop().await;
    }
    summarise(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_cases() {
    let dir = common::data("cases");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data/cases")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no cases in {}", dir.display());
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy();
        let text = std::fs::read_to_string(path).expect("case file");
        let case = match parse_case(&text) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let got = run_case(&case).await;
        if got != case.expected {
            failures.push(format!(
                "{name}: dig {}\n  expected: {:#?}\n  got:      {got:#?}",
                case.dig, case.expected
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}

/// The original never removed stale names; a name dropped from a snapshot must answer NXDOMAIN
/// within 100 ms. Polls with dig (no fixed sleeps): the first dig launched within 100 ms of the
/// apply that sees NXDOMAIN passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_name_is_nxdomain_within_100ms() {
    let first = snapshot("rack.json");
    let server = TestServer::start(DnsConfig::default(), Some(&first));
    let status = |out: String| summarise(&out).status;
    assert_eq!(
        status(dig(server.addr, &["web.service.torc"]).await),
        "NOERROR"
    );

    let mut second = first.clone();
    second.generation += 1;
    second.services.retain(|s| s.name != "web");
    assert!(server.handle.apply(&second).unwrap().takes());
    let applied = Instant::now();
    loop {
        let launched = applied.elapsed();
        let got = status(dig(server.addr, &["web.service.torc"]).await);
        if got == "NXDOMAIN" {
            assert!(
                launched <= Duration::from_millis(100),
                "seen after {launched:?}"
            );
            break;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(5),
            "still {got} after 5 s"
        );
    }
    // Still answered: what the new snapshot kept.
    assert_eq!(
        status(dig(server.addr, &["influxdb.service.torc"]).await),
        "NOERROR"
    );
    // An older generation is ignored, and does not bring the name back.
    assert_eq!(server.handle.apply(&first).unwrap(), Verdict::NotNewer);
    assert_eq!(server.handle.generation(), second.generation);
    assert_eq!(
        status(dig(server.addr, &["web.service.torc"]).await),
        "NXDOMAIN"
    );
    server.stop().await;
}

/// A deposed leader's late snapshot (a lower epoch) does not bring back a name the new
/// leader removed, nor remove one it added; once the epoch served has been silent for the
/// grace, a lower epoch is a new store's and is served. Time is injected: nothing sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_epoch_is_refused_for_the_grace_then_served() {
    let mut leader = snapshot("rack.json");
    leader.epoch = 9;
    leader.services.retain(|s| s.name != "web");
    let server = TestServer::start(DnsConfig::default(), Some(&leader));
    let t0 = Instant::now();
    let status = |out: String| summarise(&out).status;

    let mut deposed = snapshot("rack.json");
    deposed.epoch = 8;
    deposed.generation = leader.generation + 100;
    let refused = server
        .handle
        .apply_at(&deposed, t0 + Duration::from_secs(1))
        .unwrap();
    assert!(
        matches!(
            refused,
            Verdict::Refused {
                held: 9,
                first: true,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(server.handle.snapshot_epoch(), 9);
    assert_eq!(
        status(dig(server.addr, &["web.service.torc"]).await),
        "NXDOMAIN",
        "the deposed leader's name did not come back"
    );

    // The leader it serves stays silent past the grace: a new store's first snapshot.
    let taken = server
        .handle
        .apply_at(&deposed, t0 + LOWER_EPOCH_GRACE + Duration::from_secs(1))
        .unwrap();
    assert!(
        matches!(taken, Verdict::NewStore { held: 9, .. }),
        "{taken:?}"
    );
    assert_eq!(
        (server.handle.snapshot_epoch(), server.handle.generation()),
        (8, deposed.generation)
    );
    assert_eq!(
        status(dig(server.addr, &["web.service.torc"]).await),
        "NOERROR"
    );
    server.stop().await;
}
