//! Shared test helpers: in-process torc-tsdb server, a real `influxd` in a temp dir, HTTP,
//! answers compared as influxd's; `child`: a torc tsdb server in a child process.
#![allow(dead_code)]

pub mod child;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const INSTALL_HINT: &str =
    "InfluxDB 1.6 is required: install it with `apt-get install influxdb influxdb-client`";

/// A torc-tsdb server running on this runtime.
pub struct TorcServer {
    pub addr: std::net::SocketAddr,
    pub db: Arc<torc_tsdb::Tsdb>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TorcServer {
    pub async fn start() -> TorcServer {
        TorcServer::start_in(tempfile::tempdir().expect("tempdir")).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn require(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` not found. {INSTALL_HINT}");
}

/// A real influxd 1.6 in a temp dir on free ports.
pub struct Influxd {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Influxd {
    pub async fn start() -> Influxd {
        Influxd::start_with("").await
    }

    /// With `[http] auth-enabled = true`.
    pub async fn start_with_auth() -> Influxd {
        Influxd::start_with("  auth-enabled = true\n").await
    }

    /// `http` is appended to the `[http]` section of the config (the last one, so `http` may
    /// open further sections, e.g. `[coordinator]` for the query limits).
    pub async fn start_with(http: &str) -> Influxd {
        let bin = require("influxd");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rpc = free_port();
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n{http}"
        );
        let conf_path = dir.path().join("influxdb.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let child = Command::new(bin)
            .arg("-config")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn influxd");
        let me = Influxd {
            port,
            child,
            _dir: dir,
        };
        wait_ping(&me.url()).await;
        me
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Waits (polling, with a deadline) until `/ping` answers 204.
pub async fn wait_ping(url: &str) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = c.get(format!("{url}/ping")).send().await
            && r.status().as_u16() == 204
        {
            return;
        }
        assert!(Instant::now() < deadline, "server at {url} did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a request; its status and body.
async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.text().await.expect("body"))
}

pub async fn query(url: &str, db: &str, q: &str) -> (u16, String) {
    send(
        client()
            .post(format!("{url}/query"))
            .query(&[("db", db), ("q", q)]),
    )
    .await
}

/// As [`query`], with the parameters in a form body (for queries too long for a URL).
pub async fn query_form(url: &str, db: &str, q: &str) -> (u16, String) {
    let body = format!("db={}&q={}", form_encode(db), form_encode(q));
    send(
        client()
            .post(format!("{url}/query"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub async fn write(url: &str, db: &str, precision: &str, body: &str) -> (u16, String) {
    send(
        client()
            .post(format!("{url}/write"))
            .query(&[("db", db), ("precision", precision)])
            .body(body.to_string()),
    )
    .await
}

/// Reads `name` under tests/data.
pub fn data_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

impl TorcServer {
    /// Stops the server (a clean shutdown: final flush) and opens the same directory again.
    pub async fn restart(mut self) -> TorcServer {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let TorcServer { db, dir, .. } = self;
        let opts = db.options().clone();
        // The last handle: dropping it closes the WAL before the directory is opened again.
        drop(db);
        TorcServer::start_in_with(dir, opts).await
    }

    /// Starts a server on an existing directory.
    pub async fn start_in(dir: tempfile::TempDir) -> TorcServer {
        TorcServer::start_in_with(dir, torc_tsdb::Options::default()).await
    }

    /// A server with authentication enabled.
    pub async fn start_with_auth() -> TorcServer {
        let opts = torc_tsdb::Options {
            auth_enabled: true,
            ..Default::default()
        };
        TorcServer::start_in_with(tempfile::tempdir().expect("tempdir"), opts).await
    }

    /// Starts a server on an existing directory with these options.
    pub async fn start_in_with(dir: tempfile::TempDir, opts: torc_tsdb::Options) -> TorcServer {
        let db = Arc::new(torc_tsdb::Tsdb::open(dir.path(), opts).expect("open"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d2 = db.clone();
        let task = tokio::spawn(async move {
            torc_tsdb::serve(listener, d2, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TorcServer {
            addr,
            db,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

/// The one runner of data-driven cases: every `tests/data/<dir>/*.txt` holds cases separated
/// by a line `====`; a case is its input (as written, blank lines included), a line `----`,
/// then the expected output, which is `render(input)` (compared without leading or trailing
/// blank space). `TSDB_BLESS=1` rewrites
/// the expectations with what `render` gives. Panics naming every failing case, or when fewer
/// than `min_cases` are found.
pub fn run_cases(dir: &str, min_cases: usize, render: impl Fn(&str) -> String) {
    use std::fmt::Write;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir);
    let bless = std::env::var_os("TSDB_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut failures = String::new();
    let mut n = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut blessed = Vec::new();
        for case in text.split("\n====\n") {
            let (input, expected) = case.split_once("\n----\n").unwrap_or((case, ""));
            let got = render(input);
            n += 1;
            if bless {
                blessed.push(format!("{input}\n----\n{}", got.trim_end()));
            } else if got.trim() != expected.trim() {
                let _ = writeln!(
                    failures,
                    "{}: {input}\n  expected:\n{}\n  got:\n{}",
                    f.display(),
                    expected.trim(),
                    got.trim()
                );
            }
        }
        if bless {
            std::fs::write(f, blessed.join("\n====\n") + "\n").unwrap();
        }
    }
    assert!(
        n >= min_cases,
        "{n} cases found, expected at least {min_cases}"
    );
    assert!(failures.is_empty(), "{failures}");
}

/// Two JSON answers are the same: floats with a relative tolerance of 1e-9 (summation order
/// may differ in the last bit), everything else exactly.
pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
                return i == j;
            }
            let (p, q) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            p == q || (p - q).abs() <= 1e-9 * p.abs().max(q.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// An answer's body as JSON (a body that is not JSON as a string).
pub fn parse_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::String(body.to_string()))
}
