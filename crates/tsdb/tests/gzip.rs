//! gzip on the HTTP API, against a real influxd 1.6 where it has a behaviour: `/write` with
//! `Content-Encoding: gzip` (Telegraf's default) and `/query` answers compressed when the client
//! sends `Accept-Encoding: gzip`. A damaged body is a 400 with influxd's error text and writes
//! nothing. Not compared (influxd 1.6 differs on purpose): a body that inflates past the 25 MB
//! limit is refused with a 413 by torc, while 1.6 bounds only the compressed size. The 0.8
//! endpoint does not inflate bodies at all, and bounds them at the same 25 MB.

mod common;

use std::io::{Read, Write};

use serde_json::Value;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut s)
        .unwrap();
    s
}

async fn write_gz(url: &str, body: Vec<u8>) -> (u16, String) {
    let r = common::client()
        .post(format!("{url}/write"))
        .query(&[("db", "g"), ("precision", "s")])
        .header("Content-Encoding", "gzip")
        .body(body)
        .send()
        .await
        .expect("write");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Queries with `Accept-Encoding: gzip`; returns status, whether the answer was gzip, body.
async fn query_gz(url: &str, q: &str) -> (u16, bool, String) {
    let r = common::client()
        .get(format!("{url}/query"))
        .query(&[("db", "g"), ("q", q)])
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("query");
    let s = r.status().as_u16();
    let is_gz = r
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let b = r.bytes().await.unwrap();
    let text = if is_gz {
        gunzip(&b)
    } else {
        String::from_utf8_lossy(&b).into_owned()
    };
    (s, is_gz, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_like_influxdb() {
    let influx = common::Influxd::start().await;
    let torc = common::TorcServer::start().await;
    let lines: String = (0..500)
        .map(|i| format!("cpu,host=h{} v={i},n={i}i {}\n", i % 7, 1_600_000_000 + i))
        .collect();
    let good = gz(lines.as_bytes());
    let mut truncated = gz(b"bad v=1 1600000000\nbad v=2 1600000001\n");
    truncated.truncate(truncated.len() - 6);
    let mut bad_magic = gz(b"bad v=1 1600000000\n");
    bad_magic[0] = b'x';
    for url in [influx.url(), torc.url()] {
        let (s, b) = common::query(&url, "", "CREATE DATABASE g").await;
        assert_eq!(s, 200, "{b}");
    }
    let mut answers: Vec<Vec<(u16, String)>> = Vec::new();
    for url in [influx.url(), torc.url()] {
        let mut a = Vec::new();
        a.push(write_gz(&url, good.clone()).await);
        a.push(write_gz(&url, truncated.clone()).await);
        a.push(write_gz(&url, b"garbage\n".to_vec()).await);
        a.push(write_gz(&url, bad_magic.clone()).await);
        for q in [
            "SELECT count(v), sum(n) FROM cpu GROUP BY host",
            "SELECT * FROM bad",
            "SELECT * FROM cpu WHERE host = 'h3' LIMIT 5",
            "SELECT nope FROM",
        ] {
            let (s, is_gz, body) = query_gz(&url, q).await;
            // influxd compresses 200 answers; a query that does not parse is answered plain.
            assert_eq!(is_gz, s == 200, "{url} {q}: {s}");
            a.push((s, body));
        }
        answers.push(a);
    }
    let (i, t) = (&answers[0], &answers[1]);
    for (n, (x, y)) in i.iter().zip(t).enumerate() {
        let vx: Value = serde_json::from_str(&x.1).unwrap_or(Value::String(x.1.clone()));
        let vy: Value = serde_json::from_str(&y.1).unwrap_or(Value::String(y.1.clone()));
        assert!(
            x.0 == y.0 && vx == vy,
            "step {n}: influxdb {} {}\n torc {} {}",
            x.0,
            x.1,
            y.0,
            y.1
        );
    }
    // The damaged bodies wrote nothing (checked above: `SELECT * FROM bad` is empty on both);
    // the answers without Accept-Encoding are plain.
    let (s, b) = common::query(&torc.url(), "g", "SELECT count(v) FROM cpu").await;
    assert_eq!(s, 200);
    assert!(b.contains("500"), "{b}");
    torc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_refused_and_server_keeps_serving() {
    let torc = common::TorcServer::start().await;
    let (s, _) = common::query(&torc.url(), "", "CREATE DATABASE g").await;
    assert_eq!(s, 200);
    // 40 MB of newlines compress to ~40 KB: well under the body limit, far over it inflated.
    let mut bomb = vec![b'\n'; 40_000_000];
    bomb[..20].copy_from_slice(b"bomb v=1 1600000000\n");
    let bomb = gz(&bomb);
    assert!(bomb.len() < 1_000_000);
    let (s, b) = write_gz(&torc.url(), bomb).await;
    assert_eq!(s, 413, "{b}");
    assert_eq!(b, "{\"error\":\"http: request body too large\"}\n");
    // Nothing written, and the server still answers.
    let (s, b) = common::query(&torc.url(), "g", "SELECT * FROM bomb").await;
    assert_eq!(
        (s, b.as_str()),
        (200, "{\"results\":[{\"statement_id\":0}]}\n")
    );
    let (s, _) = write_gz(&torc.url(), gz(b"ok v=1 1600000000\n")).await;
    assert_eq!(s, 204);
    // A plain body over the limit gets the same JSON error (not the HTTP stack's plain text).
    let r = reqwest::Client::new()
        .post(format!("{}/write?db=g", torc.url()))
        .body(vec![b'\n'; torc_tsdb::http::MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"error\":\"http: request body too large\"}\n"
    );
    // Exactly at the limit is accepted.
    let mut at_limit = vec![b'\n'; torc_tsdb::http::MAX_BODY];
    at_limit[..18].copy_from_slice(b"ok v=2 1600000001\n");
    let r = torc_tsdb::http::gunzip_bounded(&gz(&at_limit), torc_tsdb::http::MAX_BODY);
    assert_eq!(r.map(|b| b.len()).ok(), Some(torc_tsdb::http::MAX_BODY));
    torc.stop().await;
}

/// The 0.8 write endpoint never inflates a body (0.8 clients send plain JSON), so a gzip bomb
/// there is just bytes that are not JSON; a body over the limit is a 413 there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v08_bodies_are_bounded() {
    let torc = common::TorcServer::start().await;
    let (s, _) = common::query(&torc.url(), "", "CREATE DATABASE g").await;
    assert_eq!(s, 200);
    let url = format!("{}/db/g/series", torc.url());
    let bomb = gz(&vec![b' '; 40_000_000]);
    let r = common::client()
        .post(&url)
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().starts_with("invalid JSON"));
    let r = common::client()
        .post(&url)
        .body(vec![b' '; torc_tsdb::http::MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Still serving.
    let r = common::client()
        .post(&url)
        .body(r#"[{"name":"m","columns":["v"],"points":[[1]]}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    torc.stop().await;
}
