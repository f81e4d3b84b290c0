//! The collector's writes into a real torc tsdb with authentication enabled: with the right
//! credentials points arrive, a user who may not create databases still writes, and a wrong
//! password or a missing privilege is a clear error (logged as such by the reporters), never a
//! silent loss.

mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use torc_collector::{Credentials, LineWriter, WriteError};

/// An in-process torc tsdb with authentication enabled: admin `root`/`rpw`, database `torc`,
/// `collector`/`c` with WRITE on it, `reader`/`r` with READ only.
async fn tsdb() -> (String, Arc<torc_tsdb::Tsdb>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = torc_tsdb::Options {
        auth_enabled: true,
        ..Default::default()
    };
    let db = Arc::new(torc_tsdb::Tsdb::open(dir.path(), opts).unwrap());
    assert!(db.ensure_admin("root", "rpw").await.unwrap());
    db.create_database("torc").unwrap();
    db.create_user("collector", "c", false).await.unwrap();
    db.create_user("reader", "r", false).await.unwrap();
    db.set_privilege("collector", "torc", torc_tsdb::influxql::Privilege::Write)
        .unwrap();
    db.set_privilege("reader", "torc", torc_tsdb::influxql::Privilege::Read)
        .unwrap();
    let url = common::serve(db.clone()).await;
    (url, db, dir)
}

fn creds(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        user: user.into(),
        password: password.into(),
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Rows of `q` in database `torc`, read directly from the store.
async fn rows(db: &torc_tsdb::Tsdb, q: &str) -> usize {
    let stmts = torc_tsdb::influxql::parse_query(q).unwrap();
    let r = torc_tsdb::exec::execute(db, &stmts, Some("torc")).await;
    r[0].series.iter().map(|s| s.values.len()).sum()
}

#[tokio::test]
async fn the_writer_authenticates_and_reports_refusals() {
    let (url, db, _dir) = tsdb().await;
    // The collector user may not create the database, but writes into it.
    let mut w = LineWriter::new(http(), "torc".into(), creds("collector", "c"));
    w.write(
        &url,
        "machine,hostname=a cpu_usage_user=1.5 1600000000000".into(),
    )
    .await
    .unwrap();
    assert_eq!(rows(&db, "SELECT * FROM machine").await, 1);
    // A wrong password, no credentials, a user without WRITE: clear errors.
    let mut bad = LineWriter::new(http(), "torc".into(), creds("collector", "wrong"));
    let e = bad.write(&url, "machine v=1 1".into()).await.unwrap_err();
    assert!(matches!(e, WriteError::Unauthenticated { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{url}/query refused the credentials (authorization failed); check the user and the password file"
        )
    );
    let mut none = LineWriter::new(http(), "torc".into(), None);
    let e = none.write(&url, "machine v=1 1".into()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("unable to parse authentication credentials"),
        "{e}"
    );
    let mut reader = LineWriter::new(http(), "torc".into(), creds("reader", "r"));
    let e = reader
        .write(&url, "machine v=1 1".into())
        .await
        .unwrap_err();
    assert!(matches!(e, WriteError::Forbidden { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("\"reader\" user is not authorized to write to database \"torc\""),
        "{e}"
    );
    assert_eq!(rows(&db, "SELECT * FROM machine").await, 1);
}

/// Log lines, collected.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Waits (polling, with a deadline) until `cond` holds.
async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Current-thread runtime: every task logs on this thread, into `logs`.
#[tokio::test(flavor = "current_thread")]
async fn query_rate_reports_authenticate_and_log_a_wrong_password() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (url, db, _dir) = tsdb().await;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let report = |who: Option<Credentials>, server: &str| {
        let counter = counter.clone();
        tokio::spawn(torc_collector::report_query_rate_as(
            url.clone(),
            who,
            server.to_string(),
            Duration::from_millis(50),
            move || {
                let n = counter.fetch_add(10, std::sync::atomic::Ordering::SeqCst);
                async move { Some(n) }
            },
        ))
    };
    let good = report(creds("collector", "c"), "good");
    let wrong = report(creds("collector", "wrong"), "wrong");
    wait_until("the good reports", async || {
        rows(&db, "SELECT qps FROM dns_server WHERE server = 'good'").await >= 2
    })
    .await;
    wait_until("an error log for the wrong password", async || {
        logs.text().lines().any(|l| {
            l.contains("ERROR")
                && l.contains("the database refused the query rate report")
                && l.contains("authorization failed")
        })
    })
    .await;
    assert_eq!(
        rows(&db, "SELECT qps FROM dns_server WHERE server = 'wrong'").await,
        0
    );
    good.abort();
    wrong.abort();
}

#[test]
fn password_files_lose_one_trailing_newline_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pw");
    for (text, want) in [
        ("secret\n", "secret"),
        ("secret\r\n", "secret"),
        ("se cret ", "se cret "),
    ] {
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert_eq!(torc_collector::read_password_file(&p).unwrap(), want);
    }
    std::fs::write(&p, "\n").unwrap();
    let e = torc_collector::read_password_file(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("the password file {} is empty", p.display())
    );
    let e = torc_collector::read_password_file(&dir.path().join("nope")).unwrap_err();
    assert!(
        e.to_string().starts_with("cannot read the password file"),
        "{e}"
    );
}
