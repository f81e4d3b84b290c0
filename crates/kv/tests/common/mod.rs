//! Test harness: torc kv in-process on a free port, a real etcd in a temp
//! dir, the real `etcdctl`, and the runner for data-driven case files.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use torc_kv::{KvOptions, KvServer};

pub const INSTALL_HINT: &str = "apt-get install etcd-client etcd-server";

/// Fails (never skips) when a real etcd binary is missing.
pub fn require(bin: &str) {
    let version_arg = if bin == "etcdctl" {
        "version"
    } else {
        "--version"
    };
    let ok = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{bin}` is required by this test and was not found: {INSTALL_HINT}"
    );
}

/// torc kv serving in a thread of this process.
pub struct TorcKv {
    pub endpoint: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TorcKv {
    pub fn start() -> TorcKv {
        require("etcdctl");
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mut kv = TorcKv::start_in(&dir, KvOptions::default());
        kv._tmp = Some(tmp);
        kv
    }

    pub fn start_in(dir: &Path, options: KvOptions) -> TorcKv {
        let server = KvServer::open(dir, options).expect("open kv");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                addr_tx.send(addr).expect("send addr");
                server
                    .serve(listener, format!("http://{addr}"), async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        TorcKv {
            endpoint: addr.to_string(),
            dir: dir.to_owned(),
            _tmp: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops the server and waits until its database is closed.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

impl Drop for TorcKv {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A real etcd 3.4, one member, on free loopback ports.
pub struct Etcd {
    pub endpoint: String,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        require("etcd");
        require("etcdctl");
        let tmp = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(tmp.path().join("etcd.log")).expect("log file");
        let child = Command::new("etcd")
            .args(["--name", "compat"])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("compat={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd: {e}; {INSTALL_HINT}"));
        let etcd = Etcd {
            endpoint: format!("127.0.0.1:{client}"),
            child,
            _tmp: tmp,
        };
        wait_until(Duration::from_secs(20), "etcd to become healthy", || {
            etcdctl(&etcd.endpoint, &["endpoint", "health"], None).contains("is healthy")
        });
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds, failing after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs etcdctl (v3 API) and returns stdout, then stderr without the
/// client's JSON retry logs, then `(exit N)` on failure.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running etcdctl: {e}; {INSTALL_HINT}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("etcdctl output");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if !line.starts_with("{\"level\"") {
            text.push_str(line);
            text.push('\n');
        }
    }
    if !out.status.success() {
        text.push_str(&format!("(exit {})\n", out.status.code().unwrap_or(-1)));
    }
    text
}

/// Splits a command line on whitespace, honouring double quotes.
fn split_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    args.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        args.push(cur);
    }
    args
}

/// One step of a case file.
#[derive(Debug)]
pub struct Step {
    pub line: usize,
    pub command: String,
    pub stdin: Option<String>,
    pub expected: Vec<String>,
    /// What a real etcd 3.4 prints instead, where it differs on purpose.
    pub etcd_expected: Option<Vec<String>>,
}

/// Which server a case runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Torc,
    Etcd,
}

/// Parses a case file:
/// - `$ ARGS` runs `etcdctl ARGS`. Global flags go on the line too, so
///   `$ --user=alice:pw get k` runs as alice (etcdctl authenticates with
///   them for that one command);
/// - following `< TEXT` lines (`<` alone: an empty line) are its stdin;
/// - the lines after that, up to the next `$`, are its expected output
///   (trailing blank lines ignored); `# ...` lines are comments;
/// - a line `@etcd NOTE` inside the expected output ends it: the lines after
///   it, up to the next `$`, are what the real etcd 3.4 (Debian's, 3.4.23)
///   prints instead, and NOTE says why. Only for differences made on
///   purpose, each explained in the file's header too.
///
/// In expected output `{name}` captures a word-like token (and later uses
/// must match it; commands may use it too) and `{*}` matches anything.
pub fn parse_case(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: i + 1,
                command: cmd.to_string(),
                stdin: None,
                expected: Vec::new(),
                etcd_expected: None,
            });
            continue;
        }
        let Some(step) = steps.last_mut() else {
            assert!(
                line.trim().is_empty(),
                "line {}: output before any command",
                i + 1
            );
            continue;
        };
        if let Some(etcd) = &mut step.etcd_expected {
            etcd.push(line.to_string());
        } else if line == "@etcd" || line.starts_with("@etcd ") {
            step.etcd_expected = Some(Vec::new());
        } else if step.expected.is_empty() && (line == "<" || line.starts_with("< ")) {
            let input = step.stdin.get_or_insert_with(String::new);
            input.push_str(line.get(2..).unwrap_or(""));
            input.push('\n');
        } else {
            step.expected.push(line.to_string());
        }
    }
    for step in &mut steps {
        for lines in std::iter::once(&mut step.expected).chain(step.etcd_expected.as_mut()) {
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
        }
    }
    steps
}

/// Matches one expected line (with placeholders) against an actual line.
fn match_line(expected: &str, actual: &str, vars: &mut HashMap<String, String>) -> bool {
    let mut rest = actual;
    let mut pattern = expected;
    loop {
        let Some(open) = pattern.find('{') else {
            return rest == pattern;
        };
        let Some(close) = pattern[open..].find('}').map(|c| c + open) else {
            return rest == pattern;
        };
        let (lit, name) = (&pattern[..open], &pattern[open + 1..close]);
        let Some(r) = rest.strip_prefix(lit) else {
            return false;
        };
        rest = r;
        pattern = &pattern[close + 1..];
        // The capture runs to the next literal text (or the end of line).
        let next_lit = pattern.split('{').next().unwrap_or("");
        let end = if next_lit.is_empty() {
            if pattern.is_empty() {
                rest.len()
            } else {
                rest.find(|c: char| !c.is_alphanumeric())
                    .unwrap_or(rest.len())
            }
        } else {
            match rest.find(next_lit) {
                Some(i) => i,
                None => return false,
            }
        };
        let value = &rest[..end];
        if name != "*" {
            match vars.get(name) {
                Some(v) if v != value => return false,
                Some(_) => {}
                None => {
                    vars.insert(name.to_string(), value.to_string());
                }
            }
        }
        rest = &rest[end..];
    }
}

fn substitute(cmd: &str, vars: &HashMap<String, String>) -> String {
    let mut out = cmd.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Runs a case file against `endpoint`, which is `server`; returns a
/// description of every mismatch (empty when all steps matched).
pub fn run_case(name: &str, text: &str, endpoint: &str, server: Server) -> Vec<String> {
    let mut vars = HashMap::new();
    let mut failures = Vec::new();
    for step in parse_case(text) {
        let expected = match (server, &step.etcd_expected) {
            (Server::Etcd, Some(etcd)) => etcd,
            _ => &step.expected,
        };
        let cmd = substitute(&step.command, &vars);
        let args = split_args(&cmd);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = etcdctl(endpoint, &argv, step.stdin.as_deref());
        let mut actual: Vec<&str> = output.lines().collect();
        while actual.last().is_some_and(|l| l.trim().is_empty()) {
            actual.pop();
        }
        let matched = actual.len() == expected.len()
            && expected
                .iter()
                .zip(&actual)
                .all(|(e, a)| match_line(e, a, &mut vars));
        if !matched {
            failures.push(format!(
                "{name}:{} `$ {cmd}` ({server:?})\n--- expected\n{}\n--- actual\n{}",
                step.line,
                expected.join("\n"),
                actual.join("\n")
            ));
        }
    }
    failures
}

/// Every case file, sorted by name.
pub fn case_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("tests/cases")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "case"))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&p).expect("read case"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", dir.display());
    files
}

/// A child process's stdout, line by line, readable with a timeout.
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(out: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// The next line, if one arrives within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next `n` lines, failing after `timeout` in all.
    pub fn take(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("timed out after {} of {n} lines: {got:?}", got.len()),
            }
        }
        got
    }

    /// Lines until `pred` matches one (inclusive), failing after `timeout`.
    pub fn until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let done = pred(&l);
                    got.push(l);
                    if done {
                        return got;
                    }
                }
                Err(_) => panic!("timed out; lines so far: {got:?}"),
            }
        }
    }
}

/// The watch session both servers must answer identically: events replayed
/// from a start revision, live events with prev_kv, and a compacted start.
pub fn watch_session(endpoint: &str) -> Vec<String> {
    let start = current_revision(endpoint) + 1;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["watch", "--prefix", "/w/", "--prev-kv"])
        .arg(format!("--rev={start}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running etcdctl: {e}; {INSTALL_HINT}"));
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    // Starting from a revision makes the events arrive even if the watch is
    // established after the writes.
    assert_eq!(etcdctl(endpoint, &["put", "/w/a", "1"], None), "OK\n");
    assert_eq!(etcdctl(endpoint, &["put", "/w/a", "2"], None), "OK\n");
    assert_eq!(etcdctl(endpoint, &["put", "/other", "x"], None), "OK\n");
    assert_eq!(etcdctl(endpoint, &["del", "/w/a"], None), "1\n");
    let mut out = lines.take(3 + 5 + 5, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();

    // A watch from a compacted revision is canceled by the server.
    let rev = current_revision(endpoint);
    etcdctl(endpoint, &["compaction", &rev.to_string()], None);
    out.push(etcdctl(endpoint, &["watch", "/w/a", "--rev=1"], None));
    out
}

/// The store's revision, from a `get -w json` header.
pub fn current_revision(endpoint: &str) -> i64 {
    let json = etcdctl(endpoint, &["get", "nothing-here", "-w", "json"], None);
    let at = json.find("\"revision\":").expect("revision in header") + 11;
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .expect("revision number")
}

pub const WATCH_EXPECTED: &[&str] = &[
    "PUT", "/w/a", "1", "PUT", "/w/a", "1", "/w/a", "2", "DELETE", "/w/a", "2", "/w/a", "",
];

/// A watch with auth enabled, as a user allowed to read its range: the
/// events from a start revision, live events with prev_kv, and what
/// happens after the user loses the permission (the watch, created while
/// allowed, goes on: etcd checks a watch once, when it is created).
pub fn auth_watch_session(endpoint: &str) -> Vec<String> {
    const ROOT: &str = "--user=root:rootpw";
    const ALICE: &str = "--user=alice:alicepw";
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/w/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(endpoint, args, None);
        assert!(!out.contains("(exit"), "{args:?}: {out}");
    }
    let json = etcdctl(endpoint, &[ROOT, "get", "nothing-here", "-w", "json"], None);
    let at = json.find("\"revision\":").expect("revision in header") + 11;
    let start: i64 = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .expect("revision number");
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args([ALICE, "watch", "--prefix", "/w/", "--prev-kv"])
        .arg(format!("--rev={}", start + 1))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running etcdctl: {e}; {INSTALL_HINT}"));
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    assert_eq!(
        etcdctl(endpoint, &[ALICE, "put", "/w/a", "1"], None),
        "OK\n"
    );
    assert_eq!(
        etcdctl(endpoint, &[ROOT, "put", "/other", "x"], None),
        "OK\n"
    );
    assert_eq!(etcdctl(endpoint, &[ALICE, "del", "/w/a"], None), "1\n");
    let mut out = lines.take(3 + 5, Duration::from_secs(20));
    let revoked = etcdctl(
        endpoint,
        &[ROOT, "user", "revoke-role", "alice", "app"],
        None,
    );
    assert_eq!(revoked, "Role app is revoked from user alice\n");
    out.push(etcdctl(endpoint, &[ALICE, "get", "/w/a"], None));
    assert_eq!(etcdctl(endpoint, &[ROOT, "put", "/w/b", "2"], None), "OK\n");
    out.extend(lines.take(3, Duration::from_secs(20)));
    let _ = child.kill();
    let _ = child.wait();
    out
}
