//! Load generator for `bench/tsdb.sh`: identical line-protocol batches to any InfluxDB-1.x
//! compatible server, then query latency percentiles.
//!
//! Usage:
//!   tsdb-load write URL DB [series=40000] [rounds=30] [batch=5000] [concurrency=4] [start_s]
//!   tsdb-load query URL DB N QUERY
//!   tsdb-load mixed URL DB SERIES ROUNDS BATCH CONC START_S INTERVAL_MS QUERY
//!     (writes like `write` while one client runs QUERY every INTERVAL_MS until the writes end;
//!     prints the write line, then the query line of the queries that ran during the writes)
//!
//! Data: measurement `machine`, tags `hostname=host<H>` (1000 hosts) x `cpu=cpu<C>`, 10 fields
//! (5 gauges with one decimal, 5 integer counters), one point per series per round, rounds
//! 120 s apart (30 rounds = one hour). Values are deterministic.
use std::time::Instant;

fn gen_batches(series: usize, rounds: usize, batch: usize, start_s: i64) -> Vec<String> {
    let hosts = 1000;
    let per_host = series.div_ceil(hosts);
    let mut out = Vec::new();
    let mut cur = String::with_capacity(batch * 200);
    let mut n = 0;
    for r in 0..rounds {
        let t = start_s + r as i64 * 120;
        for s in 0..series {
            let h = s / per_host;
            let c = s % per_host;
            let seed = (s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            cur.push_str(&format!("machine,hostname=host{h},cpu=cpu{c} "));
            for f in 0..5u64 {
                let base = ((seed >> (f * 8)) % 500) as f64 / 10.0;
                let wobble = ((r as u64 * 7 + f * 3 + s as u64) % 11) as f64 / 10.0;
                cur.push_str(&format!("f{f}={:.1},", base + wobble));
            }
            for f in 5..10u64 {
                let rate = (seed >> (f * 4)) % 1000;
                let v = rate * r as u64 + ((s as u64 + r as u64) % 3);
                cur.push_str(&format!("f{f}={v}i"));
                if f < 9 {
                    cur.push(',');
                }
            }
            cur.push_str(&format!(" {t}\n"));
            n += 1;
            if n == batch {
                out.push(std::mem::take(&mut cur));
                n = 0;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

type Client = reqwest::Client;

/// Posts the batches with `conc` writers; returns the elapsed seconds.
async fn write_all(
    client: &Client,
    url: &str,
    db: &str,
    batches: Vec<String>,
    conc: usize,
) -> anyhow::Result<f64> {
    let batches = std::sync::Arc::new(batches);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (batches, next, client) = (batches.clone(), next.clone(), client.clone());
        let endpoint = format!("{url}/write?db={db}&precision=s");
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(b) = batches.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let r = client.post(&endpoint).body(b.clone()).send().await?;
                anyhow::ensure!(
                    r.status().as_u16() == 204,
                    "write failed: {}",
                    r.text().await?
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Runs one query; returns (milliseconds, approximate row count).
async fn query_once(client: &Client, url: &str, db: &str, q: &str) -> anyhow::Result<(f64, usize)> {
    let t = Instant::now();
    let r = client
        .get(format!("{url}/query"))
        .query(&[("db", db), ("q", q)])
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "query failed: {}", r.status());
    let body = r.text().await?;
    Ok((
        t.elapsed().as_secs_f64() * 1000.0,
        body.matches("],[").count() + 1,
    ))
}

fn report(mut lat: Vec<f64>, rows: usize) -> String {
    if lat.is_empty() {
        return "p50_ms=nan p99_ms=nan n=0".into();
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |x: f64| lat[((lat.len() as f64 * x) as usize).min(lat.len() - 1)];
    format!(
        "p50_ms={:.2} p99_ms={:.2} p90_ms={:.2} max_ms={:.2} n={} rows~{rows}",
        p(0.5),
        p(0.99),
        p(0.9),
        lat[lat.len() - 1],
        lat.len()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // TSDB_LOAD_CA=FILE: trust this CA (PEM) for an https:// URL (`bench/tsdb.sh tls`).
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Ok(ca) = std::env::var("TSDB_LOAD_CA") {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?);
    }
    let client = builder.build()?;
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let start_s: i64 = args
        .get(8)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_600_000_000);
    match args.get(1).map(String::as_str) {
        Some("write") => {
            let (url, db) = (&args[2], &args[3]);
            let (series, rounds, batch, conc) =
                (num(4, 40_000), num(5, 30), num(6, 5000), num(7, 4));
            let batches = gen_batches(series, rounds, batch, start_s);
            let secs = write_all(&client, url, db, batches, conc).await?;
            let values = (series * rounds * 10) as f64;
            println!(
                "values={values} seconds={secs:.2} values_per_sec={:.0}",
                values / secs
            );
        }
        Some("mixed") => {
            let (url, db) = (args[2].clone(), args[3].clone());
            let (series, rounds, batch, conc) =
                (num(4, 40_000), num(5, 30), num(6, 5000), num(7, 4));
            let interval = std::time::Duration::from_millis(num(9, 20) as u64);
            let q = args.get(10).cloned().unwrap_or_default();
            let batches = gen_batches(series, rounds, batch, start_s);
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let querier = {
                let (client, url, db, done) =
                    (client.clone(), url.clone(), db.clone(), done.clone());
                tokio::spawn(async move {
                    let (mut lat, mut rows) = (Vec::new(), 0);
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let (ms, r) = query_once(&client, &url, &db, &q).await?;
                        lat.push(ms);
                        rows = r;
                        tokio::time::sleep(interval).await;
                    }
                    Ok::<_, anyhow::Error>(report(lat, rows))
                })
            };
            let secs = write_all(&client, &url, &db, batches, conc).await?;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let values = (series * rounds * 10) as f64;
            println!(
                "values={values} seconds={secs:.2} values_per_sec={:.0}",
                values / secs
            );
            println!("{}", querier.await??);
        }
        Some("query") => {
            let (url, db) = (&args[2], &args[3]);
            let n: usize = args[4].parse()?;
            let q = &args[5];
            let (mut lat, mut rows) = (Vec::with_capacity(n), 0);
            for _ in 0..n {
                let (ms, r) = query_once(&client, url, db, q).await?;
                lat.push(ms);
                rows = r;
            }
            println!("{}", report(lat, rows));
        }
        _ => anyhow::bail!(
            "usage: tsdb-load write URL DB [series rounds batch conc start_s] | query URL DB N QUERY \
             | mixed URL DB series rounds batch conc start_s interval_ms QUERY"
        ),
    }
    Ok(())
}
