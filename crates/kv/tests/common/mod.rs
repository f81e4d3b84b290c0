//! Test harness: torc kv in-process on a free port, a real etcd in a temp
//! dir, either of them over TLS with certificates from a test CA, the real
//! `etcdctl`, and the runner for data-driven case files (which blesses them
//! with a real etcd's output under `UPDATE_EXPECT=1`, see [`run_case`]).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use torc_kv::{KvOptions, KvServer, ServerTls};

/// How long a real etcd may take to become healthy.
const ETCD_START: Duration = Duration::from_secs(60);

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame header: a `len`-byte payload of `kind` with `flags` on `stream`.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, len: usize) -> Vec<u8> {
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f
}

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
    /// `127.0.0.1:PORT`, or `https://127.0.0.1:PORT` over TLS.
    pub endpoint: String,
    pub dir: PathBuf,
    /// How etcdctl reaches it (TLS flags included).
    pub target: Target,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TorcKv {
    pub fn start() -> TorcKv {
        TorcKv::start_temp(KvOptions::default(), None)
    }

    /// With `options`, in a temporary directory.
    pub fn start_with_options(options: KvOptions) -> TorcKv {
        TorcKv::start_temp(options, None)
    }

    /// Over TLS with `certs`' server certificate, asking clients for
    /// certificates as `clients` says.
    pub fn start_tls(certs: &Certs, clients: ClientCerts) -> TorcKv {
        TorcKv::start_tls_with(certs, clients, KvOptions::default())
    }

    pub fn start_tls_with(certs: &Certs, clients: ClientCerts, options: KvOptions) -> TorcKv {
        TorcKv::start_temp(options, Some((certs, clients)))
    }

    fn start_temp(options: KvOptions, tls: Option<(&Certs, ClientCerts)>) -> TorcKv {
        require("etcdctl");
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mut kv = TorcKv::start_with(&dir, options, tls);
        kv._tmp = Some(tmp);
        kv
    }

    pub fn start_in(dir: &Path, options: KvOptions) -> TorcKv {
        TorcKv::start_with(dir, options, None)
    }

    fn start_with(dir: &Path, options: KvOptions, tls: Option<(&Certs, ClientCerts)>) -> TorcKv {
        let server_tls = tls.map(|(certs, clients)| {
            ServerTls::from_files(
                &certs.path("server.crt"),
                &certs.path("server.key"),
                (clients != ClientCerts::None)
                    .then(|| certs.path("ca.pem"))
                    .as_deref(),
                clients == ClientCerts::NameUsers,
            )
            .expect("server TLS")
        });
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
                let stop = async {
                    let _ = stop_rx.await;
                };
                match server_tls {
                    Some(tls) => {
                        server
                            .serve_tls(listener, tls, format!("https://{addr}"), stop)
                            .await
                    }
                    None => server.serve(listener, format!("http://{addr}"), stop).await,
                }
                .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        let endpoint = match tls {
            Some(_) => format!("https://{addr}"),
            None => addr.to_string(),
        };
        TorcKv {
            target: Target::new(&endpoint, tls.map(|(certs, _)| certs)),
            endpoint,
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
    /// `127.0.0.1:PORT`, or `https://127.0.0.1:PORT` over TLS.
    pub endpoint: String,
    /// How etcdctl reaches it (TLS flags included).
    pub target: Target,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_with(None, &[])
    }

    /// With these extra flags (`--quota-backend-bytes=N`, ...).
    pub fn start_with_flags(flags: &[String]) -> Etcd {
        Etcd::start_with(None, flags)
    }

    /// Over TLS (`https://` client URLs) with `certs`' server certificate,
    /// asking clients for certificates as `clients` says, with etcd's own
    /// flags.
    pub fn start_tls(certs: &Certs, clients: ClientCerts) -> Etcd {
        Etcd::start_with(Some((certs, clients)), &[])
    }

    fn start_with(tls: Option<(&Certs, ClientCerts)>, flags: &[String]) -> Etcd {
        require("etcd");
        require("etcdctl");
        let tmp = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        // A member name and advertised peer URL given in `flags` replace
        // ours (the peer URL is only advertised: etcd still listens on a
        // free port, and a one-member cluster never dials its own).
        let mut name = "compat".to_string();
        let mut advertised = peer_url.clone();
        let mut rest = Vec::new();
        for flag in flags {
            match flag.split_once('=') {
                Some(("--name", v)) => name = v.to_string(),
                Some(("--initial-advertise-peer-urls", v)) => advertised = v.to_string(),
                _ => rest.push(flag.clone()),
            }
        }
        let log = std::fs::File::create(tmp.path().join("etcd.log")).expect("log file");
        let mut command = Command::new("etcd");
        command
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &advertised])
            .args(["--initial-cluster", &format!("{name}={advertised}")])
            .args(&rest);
        if let Some((certs, clients)) = tls {
            command
                .arg("--cert-file")
                .arg(certs.path("server.crt"))
                .arg("--key-file")
                .arg(certs.path("server.key"));
            if clients != ClientCerts::None {
                command.arg("--trusted-ca-file").arg(certs.path("ca.pem"));
            }
            if clients == ClientCerts::NameUsers {
                command.arg("--client-cert-auth");
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd: {e}; {INSTALL_HINT}"));
        let endpoint = match tls {
            Some(_) => client_url,
            None => format!("127.0.0.1:{client}"),
        };
        let etcd = Etcd {
            target: Target::new(&endpoint, tls.map(|(certs, _)| certs)),
            endpoint,
            child,
            _tmp: tmp,
        };
        // Any certificate of the test CA opens the connection.
        let health = match tls {
            Some(_) => etcd.target.with_cert("root"),
            None => etcd.target.clone(),
        };
        // Generous: a passing run waits a second; a full suite beside builds once took over 20 s.
        wait_until(ETCD_START, "etcd to become healthy", || {
            etcdctl(&health, &["endpoint", "health"], None).contains("is healthy")
        });
        etcd
    }
}

impl Etcd {
    /// A real etcd serving what `etcdctl snapshot restore` makes of `snapshot`.
    pub fn start_from_snapshot(snapshot: &Path) -> Etcd {
        require("etcd");
        require("etcdctl");
        let tmp = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let data = tmp.path().join("data");
        let cluster = format!("restored={peer_url}");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", "restored", "--initial-cluster", &cluster])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .output()
            .expect("etcdctl snapshot restore");
        assert!(
            out.status.success(),
            "etcdctl snapshot restore {}: {}",
            snapshot.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(tmp.path().join("etcd.log")).expect("log file");
        let child = Command::new("etcd")
            .args(["--name", "restored"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd: {e}; {INSTALL_HINT}"));
        let endpoint = format!("127.0.0.1:{client}");
        let etcd = Etcd {
            target: Target::new(&endpoint, None),
            endpoint,
            child,
            _tmp: tmp,
        };
        wait_until(ETCD_START, "restored etcd to become healthy", || {
            etcdctl(&etcd.target, &["endpoint", "health"], None).contains("is healthy")
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

/// What a server asks of clients' certificates (etcd's flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCerts {
    /// None asked for: TLS only protects the connection.
    None,
    /// `--trusted-ca-file`: clients must present one from the test CA.
    Required,
    /// `--trusted-ca-file --client-cert-auth`: also, a request without a
    /// token is made by the user the certificate's common name names.
    NameUsers,
}

/// Certificates for TLS tests, in one directory: the test CA (`ca.pem`),
/// the server's (`server.crt`, `server.key`, for 127.0.0.1 and localhost),
/// clients' named by their common name (`root`, `alice`, `bob`, `nobody`:
/// `NAME.crt`, `NAME.key`; `nocn.crt` has an empty common name), and
/// `stranger.crt`/`.key`, common name `root`, from another CA.
pub struct Certs {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        use torc_tls::pki::{Ca, CertRequest};
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("certs");
        let ca = Ca::create(&tmp.path().join("ca"), "test").expect("test CA");
        let stranger = Ca::create(&tmp.path().join("stranger-ca"), "stranger").expect("CA");
        std::fs::create_dir_all(&dir).expect("certs dir");
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
        let request = |cn: &str, dns: &str, ip: bool| CertRequest {
            common_name: cn.to_string(),
            dns_names: vec![dns.to_string()],
            ips: if ip {
                vec!["127.0.0.1".parse().expect("ip")]
            } else {
                Vec::new()
            },
            validity: Duration::from_secs(24 * 3600),
        };
        let write = |file: &str, issued: torc_tls::pki::Issued| {
            std::fs::write(dir.join(format!("{file}.crt")), issued.cert_pem).expect("crt");
            let key = issued.key_pem.expect("key");
            torc_tls::files::write_secret(&dir.join(format!("{file}.key")), &key).expect("key");
        };
        let issue = |ca: &Ca, req| ca.issue(&req).expect("issue");
        write(
            "server",
            issue(&ca, request("localhost", "localhost", true)),
        );
        for user in ["root", "alice", "bob", "nobody"] {
            write(
                user,
                issue(&ca, request(user, &format!("{user}.client"), false)),
            );
        }
        write("nocn", issue(&ca, request("", "nocn.client", false)));
        write(
            "stranger",
            issue(&stranger, request("root", "root.client", false)),
        );
        Certs { dir, _tmp: tmp }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// How etcdctl reaches a server: its endpoint, global flags (TLS ones), and
/// the directory it runs in (the certificates', so that case files can say
/// `--cert=alice.crt`).
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoint: String,
    pub flags: Vec<String>,
    pub dir: Option<PathBuf>,
}

impl Target {
    /// `endpoint`, trusting `certs`' CA when given.
    pub fn new(endpoint: &str, certs: Option<&Certs>) -> Target {
        Target {
            endpoint: endpoint.to_string(),
            flags: certs
                .map(|c| vec![format!("--cacert={}", c.path("ca.pem").display())])
                .unwrap_or_default(),
            dir: certs.map(|c| c.dir.clone()),
        }
    }

    /// The same, presenting the client certificate `NAME.crt`.
    pub fn with_cert(&self, name: &str) -> Target {
        let mut t = self.clone();
        t.flags.push(format!("--cert={name}.crt"));
        t.flags.push(format!("--key={name}.key"));
        t
    }

    /// etcdctl (v3 API) aimed at this target.
    pub fn command(&self) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(&self.flags);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }
}

impl From<&str> for Target {
    fn from(endpoint: &str) -> Target {
        Target::new(endpoint, None)
    }
}

impl From<&String> for Target {
    fn from(endpoint: &String) -> Target {
        Target::new(endpoint, None)
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Target {
        target.clone()
    }
}

/// Runs etcdctl (v3 API) and returns stdout, then stderr without the
/// client's JSON retry logs, then `(exit N)` on failure.
pub fn etcdctl(target: impl Into<Target>, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = target
        .into()
        .command()
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
    /// The file's lines (0-based, end exclusive) that hold `expected`, and
    /// those that hold `etcd_expected`: what blessing replaces.
    pub expected_lines: std::ops::Range<usize>,
    pub etcd_lines: Option<std::ops::Range<usize>>,
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
///   `<* N` adds N bytes of `x` (no newline), for values too large to
///   write out;
/// - the lines after that, up to the next `$`, are its expected output
///   (trailing blank lines ignored); `# ...` lines are comments;
/// - a line `@etcd NOTE` inside the expected output ends it: the lines after
///   it, up to the next `$`, are what the real etcd 3.4 (Debian's, 3.4.23)
///   prints instead, and NOTE says why. Only for differences made on
///   purpose, each explained in the file's header too.
///
/// In expected output `{name}` captures a word-like token (and later uses
/// must match it; commands may use it too) and `{*}` matches anything;
/// `{endpoint}` is set before the first step to the server's endpoint.
/// A `# server: FLAGS` line gives both servers etcd flags (see
/// [`case_server_flags`]).
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
                expected_lines: i + 1..i + 1,
                etcd_lines: None,
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
        let output_ends_here = !line.trim().is_empty();
        if let Some(etcd) = &mut step.etcd_expected {
            etcd.push(line.to_string());
            if let Some(lines) = step.etcd_lines.as_mut().filter(|_| output_ends_here) {
                lines.end = i + 1;
            }
        } else if line == "@etcd" || line.starts_with("@etcd ") {
            step.etcd_expected = Some(Vec::new());
            step.etcd_lines = Some(i + 1..i + 1);
        } else if let Some(n) = line
            .strip_prefix("<* ")
            .filter(|_| step.expected.is_empty())
        {
            let n: usize = n
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("line {}: `<* N` wants a byte count", i + 1));
            step.stdin
                .get_or_insert_with(String::new)
                .push_str(&"x".repeat(n));
            step.expected_lines = i + 1..i + 1;
        } else if step.expected.is_empty() && (line == "<" || line.starts_with("< ")) {
            let input = step.stdin.get_or_insert_with(String::new);
            input.push_str(line.get(2..).unwrap_or(""));
            input.push('\n');
            step.expected_lines = i + 1..i + 1;
        } else {
            step.expected.push(line.to_string());
            if output_ends_here {
                step.expected_lines.end = i + 1;
            }
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
        let Some((open, close)) = placeholder(pattern) else {
            return rest == pattern;
        };
        let (lit, name) = (&pattern[..open], &pattern[open + 1..close]);
        let Some(r) = rest.strip_prefix(lit) else {
            return false;
        };
        rest = r;
        pattern = &pattern[close + 1..];
        // The capture runs to the next literal text (or the end of line).
        let next_lit = &pattern[..placeholder(pattern).map_or(pattern.len(), |(o, _)| o)];
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

/// Where the first placeholder in `pattern` opens and closes: `{*}` or
/// `{NAME}` with NAME of letters, digits and `_`. Other braces (JSON's) are
/// literal text.
fn placeholder(pattern: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(open) = pattern[from..].find('{').map(|o| o + from) {
        let inner_end = pattern[open + 1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '*'))
            .map_or(pattern.len(), |e| e + open + 1);
        let inner = &pattern[open + 1..inner_end];
        let named = inner == "*" || (!inner.is_empty() && !inner.contains('*'));
        if named && pattern[inner_end..].starts_with('}') {
            return Some((open, inner_end));
        }
        from = open + 1;
    }
    None
}

fn substitute(cmd: &str, vars: &HashMap<String, String>) -> String {
    let mut out = cmd.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Runs a case file against `target`, which is `server`; returns a
/// description of every mismatch (empty when all steps matched).
///
/// With `UPDATE_EXPECT=1` in the environment, a run against a real etcd
/// blesses: each mismatched step's expected output (its `@etcd` part if it
/// has one) is replaced in the case file by what etcd printed, with the
/// endpoint and the cluster and member ids written as placeholders
/// (`{endpoint}`, `{cluster}`, `{member}`, `{hexid}`). Steps that match are
/// left as written. Read the diff before committing it.
pub fn run_case(name: &str, text: &str, target: impl Into<Target>, server: Server) -> Vec<String> {
    let target = target.into();
    let bless = server == Server::Etcd && std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let ids = if bless { server_ids(&target) } else { None };
    let mut blessed = Vec::new();
    // `{endpoint}` is the server's, as etcdctl is given it.
    let mut vars = HashMap::from([("endpoint".to_string(), target.endpoint.clone())]);
    let mut failures = Vec::new();
    for step in parse_case(text) {
        let expected = match (server, &step.etcd_expected) {
            (Server::Etcd, Some(etcd)) => etcd,
            _ => &step.expected,
        };
        let cmd = substitute(&step.command, &vars);
        let args = split_args(&cmd);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = etcdctl(&target, &argv, step.stdin.as_deref());
        let mut actual: Vec<&str> = output.lines().collect();
        while actual.last().is_some_and(|l| l.trim().is_empty()) {
            actual.pop();
        }
        let matched = actual.len() == expected.len()
            && expected
                .iter()
                .zip(&actual)
                .all(|(e, a)| match_line(e, a, &mut vars));
        if !matched && bless {
            let lines = step
                .etcd_lines
                .clone()
                .unwrap_or(step.expected_lines.clone());
            let text = actual.iter().map(|l| placeholders(l, &target, ids));
            blessed.push((lines, text.collect::<Vec<_>>()));
        } else if !matched {
            failures.push(format!(
                "{name}:{} `$ {cmd}` ({server:?})\n--- expected\n{}\n--- actual\n{}",
                step.line,
                expected.join("\n"),
                actual.join("\n")
            ));
        }
    }
    if !blessed.is_empty() {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for (range, new) in blessed.into_iter().rev() {
            lines.splice(range, new);
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        std::fs::write(&path, lines.join("\n") + "\n").expect("write the blessed case");
        failures.push(format!("{name}: blessed with etcd's output; rerun"));
    }
    failures
}

/// The server's cluster and member ids, from `member list` (None if it
/// cannot be asked, e.g. over TLS without a client certificate).
fn server_ids(target: &Target) -> Option<(u64, u64)> {
    let json = etcdctl(target, &["member", "list", "-w", "json"], None);
    let number = |field: &str| -> Option<u64> {
        let at = json.find(field)? + field.len();
        let digits: String = json[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some((number("\"cluster_id\":")?, number("\"member_id\":")?))
}

/// An output line with the server's endpoint and ids as placeholders.
fn placeholders(line: &str, target: &Target, ids: Option<(u64, u64)>) -> String {
    let mut line = line.replace(&target.endpoint, "{endpoint}");
    if let Some((cluster, member)) = ids {
        line = line
            .replace(&cluster.to_string(), "{cluster}")
            .replace(&member.to_string(), "{member}")
            .replace(&format!("{member:x}"), "{hexid}");
    }
    line
}

/// The server flags a case file asks for on a `# server: FLAGS` line
/// (etcd's own flags; both servers get them).
pub fn case_server_flags(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# server: "))
        .flat_map(|flags| flags.split_whitespace().map(str::to_string))
        .collect()
}

/// torc kv's options for etcd's server `flags` (those torc kv has).
pub fn options_for_flags(flags: &[String]) -> KvOptions {
    let mut options = KvOptions::default();
    for flag in flags {
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        match name {
            "--quota-backend-bytes" => {
                options.quota_backend_bytes = value.parse().expect("--quota-backend-bytes=N");
            }
            "--max-request-bytes" => {
                options.max_request_bytes = value.parse().expect("--max-request-bytes=N");
            }
            "--name" => options.name = value.to_string(),
            "--initial-advertise-peer-urls" => {
                options.peer_urls = value.split(',').map(str::to_string).collect();
            }
            other => panic!("no torc kv option for etcd's {other}"),
        }
    }
    options
}

/// Every case file in `tests/cases/`, sorted by name.
pub fn case_files() -> Vec<(String, String)> {
    case_files_in("tests/cases")
}

/// Every case file in `relative` (a directory of the crate), sorted by name.
/// Each is named by its path relative to the crate.
pub fn case_files_in(relative: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("tests/cases")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "case"))
        .map(|p| {
            let name = format!(
                "{relative}/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
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
pub fn watch_session(target: impl Into<Target>) -> Vec<String> {
    let target = target.into();
    let endpoint = &target;
    let start = current_revision(endpoint) + 1;
    let mut child = target
        .command()
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
pub fn current_revision(endpoint: impl Into<Target>) -> i64 {
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
pub fn auth_watch_session(target: impl Into<Target>) -> Vec<String> {
    let target = target.into();
    let endpoint = &target;
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
    let mut child = target
        .command()
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
