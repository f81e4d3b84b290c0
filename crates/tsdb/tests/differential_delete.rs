//! Differential test of deletions (`DROP SERIES`, `DELETE`, `DROP MEASUREMENT`): the script
//! `tests/data/differential/delete.txt` runs against a real influxd 1.6 and torc on a fresh copy
//! of `data.lp`, with torc's data in three places: all in the in-memory head, all compacted
//! into segments, and half in segments and half in the head. Every answer must match; the
//! queries of the script's `== final` section are asked again after torc restarts and after it
//! compacts, and must still give influxd's answers (deleted data does not come back).
//!
//! Normalisation (explicit, and the only one): answers are compared as parsed JSON, and
//! influxd's error prefix `shard <id>: ` is removed (torc has no shard ids).

mod common;

use serde_json::Value;

enum Step<'a> {
    Query(&'a str),
    Write(&'a str),
}

fn norm(body: &str) -> Value {
    let re = regex::Regex::new(r"shard \d+: ").unwrap();
    let body = re.replace_all(body, "");
    serde_json::from_str(&body).unwrap_or(Value::String(body.into_owned()))
}

async fn load(url: &str, db: &str, lines: &[&str]) {
    for chunk in lines.chunks(100) {
        let (s, b) = common::write(url, db, "s", &chunk.join("\n")).await;
        assert_eq!(s, 204, "{url}: {b}");
    }
}

async fn run(url: &str, db: &str, step: &Step<'_>) -> (u16, Value) {
    match step {
        Step::Query(q) => {
            let (s, b) = common::query(url, db, q).await;
            (s, norm(&b))
        }
        Step::Write(lp) => {
            let (s, b) = common::write(url, db, "s", lp).await;
            (s, norm(if b.is_empty() { "null" } else { &b }))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_like_influxdb() {
    let influx = common::Influxd::start().await;
    let data = std::fs::read_to_string(common::data_path("differential/data.lp")).unwrap();
    let lines: Vec<&str> = data.lines().filter(|l| !l.trim().is_empty()).collect();
    let script = std::fs::read_to_string(common::data_path("differential/delete.txt")).unwrap();
    let mut steps = Vec::new();
    let mut finals = Vec::new();
    let mut in_final = false;
    for l in script.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l == "== final" {
            in_final = true;
        } else if let Some(lp) = l.strip_prefix("> ") {
            steps.push(Step::Write(lp));
        } else {
            steps.push(Step::Query(l));
            if in_final {
                finals.push(l);
            }
        }
    }
    assert!(steps.len() >= 30 && finals.len() >= 5, "script too small");
    let mut failures = Vec::new();
    for phase in ["head", "segments", "mixed"] {
        let mut torc = common::TorcServer::start().await;
        let db = format!("del_{phase}");
        for url in [influx.url(), torc.url()] {
            let (s, b) = common::query(&url, "", &format!("CREATE DATABASE {db}")).await;
            assert_eq!(s, 200, "{b}");
        }
        let half = lines.len() / 2;
        match phase {
            "head" => load(&torc.url(), &db, &lines).await,
            "segments" => {
                load(&torc.url(), &db, &lines).await;
                torc.db.compact().await.expect("compact");
            }
            _ => {
                load(&torc.url(), &db, &lines[..half]).await;
                torc.db.compact().await.expect("compact");
                load(&torc.url(), &db, &lines[half..]).await;
            }
        }
        load(&influx.url(), &db, &lines).await;
        for step in &steps {
            let a = run(&influx.url(), &db, step).await;
            let b = run(&torc.url(), &db, step).await;
            if a != b {
                let text = match step {
                    Step::Query(q) => q,
                    Step::Write(w) => w,
                };
                failures.push(format!(
                    "[{phase}] {text}\n  influxdb {}: {}\n  torc     {}: {}",
                    a.0, a.1, b.0, b.1
                ));
            }
        }
        for check in ["restart", "compact"] {
            if check == "restart" {
                torc = torc.restart().await;
            } else {
                torc.db.compact().await.expect("compact");
            }
            for q in &finals {
                let a = run(&influx.url(), &db, &Step::Query(q)).await;
                let b = run(&torc.url(), &db, &Step::Query(q)).await;
                if a != b {
                    failures.push(format!(
                        "[{phase}, after {check}] {q}\n  influxdb {}: {}\n  torc     {}: {}",
                        a.0, a.1, b.0, b.1
                    ));
                }
            }
        }
        torc.stop().await;
    }
    assert!(
        failures.is_empty(),
        "{} answers differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
