//! Names are length-checked before they reach the disk (issue 14: a database with a 200-byte
//! name was accepted, its directory name was too long for the filesystem, writes to it failed
//! and every restart failed while it existed).
//!
//! The limits are influxd 1.6's, checked against the real one: database and retention policy
//! names up to 255 bytes (longer: `name too long`), series keys up to 65535 bytes, and a series
//! key + 4 + a field key up to 65535 (`max key length exceeded: N > 65535`). A name an older
//! torc accepted and this one refuses does not stop the database from opening: it is reported
//! at start and still served, so its data can be read and the name dropped.

mod common;

use serde_json::Value;

fn name(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_work_and_survive_a_restart() {
    let torc = common::TorcServer::start().await;
    let (db200, rp200, db255) = (name('d', 200), name('r', 200), name('e', 255));
    for q in [
        format!("CREATE DATABASE {db200}"),
        format!("CREATE RETENTION POLICY {rp200} ON {db200} DURATION INF REPLICATION 1 DEFAULT"),
        format!("CREATE DATABASE {db255}"),
    ] {
        let (s, b) = common::query(&torc.url(), "", &q).await;
        assert_eq!(s, 200, "{b}");
        assert!(!b.contains("error"), "{b}");
    }
    for db in [&db200, &db255] {
        let (s, b) = common::write(&torc.url(), db, "s", "m v=1 1").await;
        assert_eq!(s, 204, "{b}");
    }
    let torc = torc.restart().await;
    for db in [&db200, &db255] {
        let (s, b) = common::query(&torc.url(), db, "SELECT v FROM m").await;
        assert_eq!(s, 200, "{b}");
        assert!(b.contains(r#"["1970-01-01T00:00:01Z",1]"#), "{b}");
    }
    // The long names' directories moved the data directory to format 2 (an older torc,
    // which would not know them, refuses to open it rather than delete them).
    let format = std::fs::read_to_string(torc.dir.path().join("FORMAT")).unwrap();
    assert_eq!(format.trim(), "torc-tsdb 2");
    torc.stop().await;
}

/// The same requests to influxd 1.6 and torc: statuses and bodies must match (the `name too
/// long` error carries more detail in torc and is compared by its start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_match_influxdb() {
    let influx = common::Influxd::start().await;
    let torc = common::TorcServer::start().await;
    let mut answers: Vec<Vec<(u16, String)>> = Vec::new();
    for url in [influx.url(), torc.url()] {
        let mut a = Vec::new();
        for q in [
            format!("CREATE DATABASE {}", name('a', 255)),
            format!("CREATE DATABASE {}", name('b', 256)),
            "CREATE DATABASE ok".to_string(),
            format!(
                "CREATE RETENTION POLICY {} ON ok DURATION 1d REPLICATION 1",
                name('r', 255)
            ),
            format!(
                "CREATE RETENTION POLICY {} ON ok DURATION 1d REPLICATION 1",
                name('s', 300)
            ),
        ] {
            a.push(common::query(&url, "", &q).await);
        }
        for line in [
            format!("{} v=1 1", name('m', 65_535 - 4 - 1)),
            format!("{} v=1 1", name('m', 65_535 - 4)),
            format!("{} v=1 1", name('m', 70_000)),
            format!("m {}=1 1", name('f', 65_535 - 5)),
            format!("m {}=1 1", name('f', 65_535 - 4)),
            format!("m,{}=1 v=1 1", name('t', 65_530)),
            format!("m,{}=1 v=1 1", name('t', 70_000)),
            // One line too long among good ones: a partial write.
            format!("m v=2 2\nm {}=1 3\nm v=4 4", name('f', 70_000)),
        ] {
            a.push(common::write(&url, "ok", "s", &line).await);
        }
        a.push(common::query(&url, "ok", "SELECT count(v) FROM m").await);
        answers.push(a);
    }
    for (i, (want, got)) in answers[0].iter().zip(&answers[1]).enumerate() {
        assert_eq!(
            want.0,
            got.0,
            "{i}: status: {} vs {}",
            short(&want.1),
            short(&got.1)
        );
        if want.1.contains("name too long") {
            let g: Value = serde_json::from_str(&got.1).unwrap();
            let e = g["results"][0]["error"].as_str().unwrap_or("");
            assert!(e.starts_with("name too long"), "{i}: {}", short(&got.1));
        } else {
            assert_eq!(
                want.1,
                got.1,
                "{i}: {} vs {}",
                short(&want.1),
                short(&got.1)
            );
        }
    }
    torc.stop().await;
}

fn short(s: &str) -> String {
    if s.len() <= 300 {
        s.to_string()
    } else {
        format!("{}...{}", &s[..150], &s[s.len() - 150..])
    }
}

/// A data directory where an older torc created a database whose name this one refuses
/// (300 bytes): it opens, the name is reported, and the database is served and can be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_on_disk_is_reported_and_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), torc_tsdb::Options::default()).unwrap();
        db.create_database("ok").unwrap();
    }
    // What the older version wrote: the name in meta.json, no directory (it could not make one).
    let long = name('x', 300);
    let meta_path = dir.path().join("meta.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let ok = meta["databases"]["ok"].clone();
    meta["databases"][&long] = ok;
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

    let torc = common::TorcServer::start_in(dir).await;
    let warnings = torc.db.startup_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("database") && w.contains("300 bytes") && w.contains("xxxx")),
        "{warnings:?}"
    );
    let (s, b) = common::write(&torc.url(), &long, "s", "m v=7 7").await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = common::query(&torc.url(), &long, "SELECT v FROM m").await;
    assert!(s == 200 && b.contains(",7]"), "{b}");
    let (s, b) = common::write(&torc.url(), "ok", "s", "m v=1 1").await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = common::query(&torc.url(), "", &format!("DROP DATABASE {long}")).await;
    assert_eq!(s, 200, "{b}");
    let torc = torc.restart().await;
    assert!(torc.db.startup_warnings().is_empty());
    assert_eq!(torc.db.databases(), vec!["ok".to_string()]);
    torc.stop().await;
}

/// The 0.8 API's `POST /db` checks the name too (a 400 naming the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v08_create_refuses_long_names() {
    let torc = common::TorcServer::start().await;
    let r = common::client()
        .post(format!("{}/db", torc.url()))
        .body(format!(r#"{{"name":"{}"}}"#, name('z', 256)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let b = r.text().await.unwrap();
    assert!(
        b.starts_with("name too long: a database name has at most 255 bytes"),
        "{b}"
    );
    assert!(torc.db.databases().is_empty());
    torc.stop().await;
}
