//! Compatibility with a real bind9 `named`: the zones `data/zones/compat.test.zone` (SOA, NS, MX,
//! a CNAME chain, a name with 17 A records, TXT, SRV, AAAA, empty non-terminals, wildcards below
//! the apex and wildcard CNAMEs, `$GENERATE` lines each server expands itself) and `data/zones/wild.test.zone` (a wildcard among the apex's
//! children) are served by torc-dns in-process and by Debian's `named`, started by the test on a
//! free loopback address and port; the same `dig` queries (the `dig:` lines of
//! `data/named/*.case`) go to both and the answers are compared record by record.
//!
//! Compared, per query: the status (rcode), the header flags (`qr aa rd ra tc`), the EDNS UDP
//! size (or its absence), and the question, answer, authority and additional sections as dig
//! prints them, each sorted (the order of records in an RRset is not meaningful, and bind9 rotates
//! it). Not compared: the ID, timing and server lines, and the EDNS COOKIE option (torc-dns does
//! not implement cookies; dig sends one and bind9 answers it).
//!
//! Everything is compared as dig prints it, case included: both echo the question as sent and
//! spell the records' names as the zone file does (lowercase, since torc-dns stores names
//! lowercased).
//!
//! Deliberate differences, documented rather than hidden:
//! - Zone transfers (AXFR/IXFR): bind9 allows them by default, torc-dns refuses them
//!   (`engine.rs`), so they are not in the set.
//!
//! - The authority section of positive answers: bind9's default (`minimal-responses
//!   no-auth-recursive`) adds the zone's NS records (and their addresses) when the query has no
//!   RD flag; torc-dns never does, as with `minimal-responses no-auth`, which is what the test's
//!   named is configured with. Negative answers carry the SOA in both; the additional section
//!   holds the addresses of MX, SRV and NS targets in both.
//!
//! - ANY: bind9's default (`minimal-any no`) answers every RRset over UDP too; torc-dns answers
//!   over UDP with one RRset (`engine.rs`), as bind9 does with `minimal-any yes`, which is what
//!   the test's named is configured with. Over TCP both answer every RRset.
//!
//! - CNAMEs from one zone into another: bind9 does not chase them (without recursion it answers
//!   the CNAME alone), torc-dns chases them into any zone it serves, so the cases only chase
//!   within a zone. CNAME loops: bind9 answers SERVFAIL, torc-dns the CNAMEs up to its chain
//!   limit; not in the set either.
//!
//! `named` runs with `recursion no` (torc-dns has no upstream here, so it refuses names outside
//! its zones, as named does).

mod common;

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{TestServer, zone};
use torc_dns::DnsConfig;

/// The zones both servers serve: (origin, file under `data/zones`).
const ZONES: [(&str, &str); 2] = [
    ("compat.test", "compat.test.zone"),
    ("wild.test", "wild.test.zone"),
];

/// The queries, as dig arguments (`@server -p port +time=2 +tries=1` are added), from the
/// `dig:` lines of `data/named/*.case`, with the file each came from.
fn queries() -> Vec<(String, String)> {
    let dir = common::data("named");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    let mut queries = Vec::new();
    for path in paths {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("case file");
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let query = line
                .strip_prefix("dig:")
                .unwrap_or_else(|| panic!("{file}:{}: expected `dig: ARGS` or `# ...`", n + 1));
            queries.push((file.clone(), query.trim().to_owned()));
        }
    }
    queries
}

/// A query's answer in comparable form.
#[derive(Debug, Default, PartialEq, Eq)]
struct Answer {
    status: String,
    flags: String,
    /// The OPT record's UDP size, or "none".
    edns: String,
    question: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
}

impl Answer {
    fn sections(&self) -> [(&'static str, &Vec<String>); 4] {
        [
            ("QUESTION", &self.question),
            ("ANSWER", &self.answer),
            ("AUTHORITY", &self.authority),
            ("ADDITIONAL", &self.additional),
        ]
    }
}

/// A line of dig's output with its blank space collapsed.
fn normalise(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_dig(output: &str) -> Answer {
    let mut a = Answer {
        edns: "none".to_owned(),
        ..Answer::default()
    };
    let mut section: Option<&mut Vec<String>> = None;
    for line in output.lines() {
        if let Some((_, rest)) = line.split_once("status: ") {
            a.status = rest.split(',').next().unwrap_or("").to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            a.flags = rest.split(';').next().unwrap_or("").trim().to_owned();
        } else if let Some((_, udp)) = line.split_once("; udp: ") {
            a.edns = udp.trim().to_owned();
        }
        if line.trim().is_empty() {
            section = None;
            continue;
        }
        if line.starts_with(";; QUESTION SECTION:") {
            section = Some(&mut a.question);
        } else if line.starts_with(";; ANSWER SECTION:") {
            section = Some(&mut a.answer);
        } else if line.starts_with(";; AUTHORITY SECTION:") {
            section = Some(&mut a.authority);
        } else if line.starts_with(";; ADDITIONAL SECTION:") {
            section = Some(&mut a.additional);
        } else if let Some(lines) = section.as_deref_mut() {
            // dig prints the question commented out: `;name. IN A`.
            lines.push(normalise(line.strip_prefix(';').unwrap_or(line)));
        }
    }
    for lines in [
        &mut a.question,
        &mut a.answer,
        &mut a.authority,
        &mut a.additional,
    ] {
        lines.sort();
    }
    a
}

/// [`common::dig`] with the arguments as one whitespace-separated string (how the cases are
/// written).
async fn dig(server: SocketAddr, args: &str) -> String {
    common::dig(server, &args.split_whitespace().collect::<Vec<_>>()).await
}

/// Where `named` is: on PATH, or in the sbin directories Debian installs it to (not on a
/// non-root user's PATH).
fn find_named() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("named"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "bind9's `named` is not installed (not on PATH, /usr/sbin or /sbin): \
                 install it with `apt-get install bind9`"
            )
        })
}

/// A port free for both UDP and TCP on `ip` when this returns. Another process may take it
/// before named binds it; [`Named::start`] detects that and tries another.
fn free_port(ip: Ipv4Addr) -> u16 {
    for _ in 0..32 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind a UDP socket on loopback");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// A `named` child process, killed when dropped (also when the test panics).
struct Named {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Named {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// Starts `named` serving `zones` (origin, zone file) on 127.0.0.1 and a free port, and
    /// waits until it answers. (named listens only on addresses configured on an interface, so
    /// the test cannot give it a loopback address of its own.)
    async fn start(zones: &[(&str, PathBuf)]) -> Self {
        let named = find_named();
        for _ in 0..5 {
            match Self::try_start(&named, zones).await {
                Ok(named) => return named,
                // Lost the port to another process between picking and binding: try another.
                Err(log) => eprintln!("named could not bind its port; retrying:\n{log}"),
            }
        }
        panic!("named could not bind a free port in 5 attempts");
    }

    /// One attempt; `Err(log)` when named could not bind the port picked.
    async fn try_start(named: &Path, zones: &[(&str, PathBuf)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let ip = Ipv4Addr::LOCALHOST;
        let port = free_port(ip);
        // Proves we talk to this run's named, not another process that took the port.
        let version = format!("torc-compat-{}-{ip}-{port}", std::process::id());
        let mut zone_statements = String::new();
        for (origin, file) in zones {
            let copy = dir.path().join(format!("{origin}.db"));
            std::fs::copy(file, &copy).expect("copy the zone file");
            let _ = writeln!(
                zone_statements,
                r#"zone "{origin}" {{ type primary; file "{}"; }};"#,
                copy.display()
            );
        }
        let conf = format!(
            r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ {ip}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    minimal-responses no-auth;
    minimal-any yes;
    dnssec-validation no;
    notify no;
    version "{version}";
}};
controls {{ }};
{zone_statements}"#
        );
        std::fs::write(dir.path().join("named.conf"), conf).expect("write named.conf");
        let log = std::fs::File::create(dir.path().join("named.log")).expect("named.log");
        // -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker thread. named runs
        // as the user running the test (root included: it only changes user when given -u).
        let child = Command::new(named)
            .args(["-g", "-4", "-n", "1", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install it with `apt-get install bind9`",
                    named.display()
                )
            });
        let mut named = Self {
            child,
            addr: SocketAddr::new(IpAddr::V4(ip), port),
            dir,
        };
        let origins: Vec<&str> = zones.iter().map(|(origin, _)| *origin).collect();
        named.wait_ready(&origins, &version).await?;
        Ok(named)
    }

    /// Polls with dig until this named reports our version string and serves every zone.
    /// `Err(log)` if named reports that it could not bind the port.
    async fn wait_ready(&mut self, origins: &[&str], version: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("named exited ({status}) before answering:\n{}", self.log());
            }
            let log = self.log();
            if log.contains("address in use") || log.contains("could not listen") {
                return Err(log);
            }
            let ours = dig(self.addr, "+short version.bind CH TXT")
                .await
                .contains(version);
            if ours {
                let mut serving = 0;
                for origin in origins {
                    let soa = parse_dig(&dig(self.addr, &format!("{origin} SOA")).await);
                    serving += usize::from(soa.status == "NOERROR");
                }
                if serving == origins.len() {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "named on {} not ready after 30 s:\n{}",
                self.addr,
                self.log()
            );
            // A poll interval, not a wait for time to pass: dig to a closed port returns at once.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A readable account of how two answers differ, section by section, record by record.
fn diff(query: &str, named: &Answer, torc: &Answer) -> String {
    let mut out = format!("dig {query}\n");
    for (what, n, t) in [
        ("status", &named.status, &torc.status),
        ("flags", &named.flags, &torc.flags),
        ("EDNS udp", &named.edns, &torc.edns),
    ] {
        if n != t {
            let _ = writeln!(out, "  {what}: named {n:?}, torc {t:?}");
        }
    }
    for ((section, n), (_, t)) in named.sections().into_iter().zip(torc.sections()) {
        if n == t {
            continue;
        }
        let _ = writeln!(out, "  {section} SECTION (- named only, + torc only):");
        for line in n.iter().filter(|l| !t.contains(l)) {
            let _ = writeln!(out, "    - {line}");
        }
        for line in t.iter().filter(|l| !n.contains(l)) {
            let _ = writeln!(out, "    + {line}");
        }
        if n.len() != t.len() {
            let _ = writeln!(
                out,
                "    ({} records from named, {} from torc)",
                n.len(),
                t.len()
            );
        }
    }
    if out.lines().count() == 1 {
        let _ = writeln!(out, "  named: {named:?}\n  torc:  {torc:?}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_bind9_named() {
    let zone_paths: Vec<(&str, PathBuf)> = ZONES
        .iter()
        .map(|(origin, file)| (*origin, common::data(&format!("zones/{file}"))))
        .collect();
    let named = Named::start(&zone_paths).await;
    let torc = TestServer::start(
        DnsConfig {
            static_zones: ZONES
                .iter()
                .map(|(origin, file)| zone(&format!("{origin}={file}")))
                .collect(),
            ..DnsConfig::default()
        },
        None,
    );

    let queries = queries();
    assert!(queries.len() >= 80);
    let mut failures = Vec::new();
    for (file, query) in &queries {
        let query = query.as_str();
        let (from_named, from_torc) = tokio::join!(dig(named.addr, query), dig(torc.addr, query));
        let (a_named, a_torc) = (parse_dig(&from_named), parse_dig(&from_torc));
        // An empty status means dig got no answer: say so rather than compare two blanks.
        assert!(
            !a_named.status.is_empty(),
            "named gave no answer to `dig {query}`:\n{from_named}"
        );
        assert!(
            !a_torc.status.is_empty(),
            "torc gave no answer to `dig {query}`:\n{from_torc}"
        );
        if a_named != a_torc {
            failures.push(format!("{file}: {}", diff(query, &a_named, &a_torc)));
        }
    }
    torc.stop().await;
    drop(named);
    assert!(
        failures.is_empty(),
        "{} of {} queries answered differently by torc-dns and bind9 named:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}

/// The comparison itself can fail: a deliberately different answer is reported record by record.
#[test]
fn a_difference_is_reported_record_by_record() {
    let named = parse_dig(
        ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n\
         ;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1\n\
         \n\
         ;; ANSWER SECTION:\n\
         pool.compat.test.\t60\tIN\tA\t192.0.2.2\n\
         pool.compat.test.\t60\tIN\tA\t192.0.2.1\n",
    );
    let torc = parse_dig(
        ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 2\n\
         ;; flags: qr aa rd; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1\n\
         \n\
         ;; ANSWER SECTION:\n\
         pool.compat.test.  60 IN A 192.0.2.1\n",
    );
    assert_eq!(
        named.answer,
        [
            "pool.compat.test. 60 IN A 192.0.2.1",
            "pool.compat.test. 60 IN A 192.0.2.2"
        ]
    );
    let report = diff("pool.compat.test A", &named, &torc);
    assert!(
        report.contains("- pool.compat.test. 60 IN A 192.0.2.2"),
        "{report}"
    );
    assert!(report.contains("(2 records from named, 1 from torc)"));
}
