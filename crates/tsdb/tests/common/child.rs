//! A torc tsdb server in a child process, for the tests that kill it with SIGKILL: the test
//! binary runs itself again as the server (its test `child_entry` calls [`child_main`] when
//! `TSDB_CHILD_DIR` is set), prints its port, and serves until killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How the child server is configured (through its environment).
#[derive(Debug, Clone, Default)]
pub struct ChildOptions {
    /// Flush the heads into segments once they hold this many values (default: 20M).
    pub flush_values: Option<usize>,
    /// Authentication enabled.
    pub auth: bool,
    /// `Options::retention_check_interval` (default: influxd's 30 min).
    pub retention_check: Option<Duration>,
    /// `Options::cq_run_interval` (default: 1 s).
    pub cq_run: Option<Duration>,
}

/// When run as the child: serve on a free port, print it, serve until killed.
pub fn child_main(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ms = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    };
    rt.block_on(async {
        let mut opts = torc_tsdb::Options::default();
        if let Some(n) = std::env::var("TSDB_CHILD_FLUSH_VALUES")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            opts.flush_values = n;
        }
        opts.auth_enabled = std::env::var_os("TSDB_CHILD_AUTH").is_some();
        if let Some(d) = ms("TSDB_CHILD_RETENTION_CHECK_MS") {
            opts.retention_check_interval = d;
        }
        if let Some(d) = ms("TSDB_CHILD_CQ_RUN_MS") {
            opts.cq_run_interval = d;
        }
        let db = std::sync::Arc::new(torc_tsdb::Tsdb::open(dir, opts).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", l.local_addr().unwrap().port());
        torc_tsdb::serve(l, db, std::future::pending())
            .await
            .unwrap();
    });
}

/// Starts the child on `dir`; returns it and its base URL once it listens.
pub fn spawn(dir: &std::path::Path, o: &ChildOptions) -> (std::process::Child, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    if o.auth {
        cmd.env("TSDB_CHILD_AUTH", "1");
    }
    if let Some(d) = o.retention_check {
        cmd.env("TSDB_CHILD_RETENTION_CHECK_MS", d.as_millis().to_string());
    }
    if let Some(d) = o.cq_run {
        cmd.env("TSDB_CHILD_CQ_RUN_MS", d.as_millis().to_string());
    }
    let mut child = cmd
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("TSDB_CHILD_DIR", dir)
        .env(
            "TSDB_CHILD_FLUSH_VALUES",
            o.flush_values.unwrap_or(20_000_000).to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let port = loop {
        let l = lines.next().expect("child exited").unwrap();
        // libtest prints `test child_entry ... ` before our line.
        if let Some(i) = l.find("PORT ") {
            break l[i + 5..].trim().to_string();
        }
    };
    (child, format!("http://127.0.0.1:{port}"))
}

/// A child server that is killed with SIGKILL when dropped, so a failing assertion does not
/// leave it running.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        kill_9(&mut self.0);
    }
}

pub fn kill_9(child: &mut std::process::Child) {
    let pid = child.id() as i32;
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let _ = child.wait();
}
