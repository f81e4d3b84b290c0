//! Load generator for `bench/tsdb.sh`: identical line-protocol batches to any InfluxDB-1.x
//! compatible server, then query latency percentiles.
//!
//! Usage:
//!   tsdb-load write URL DB [series=40000] [rounds=30] [batch=5000] [concurrency=4] [start_s]
//!   tsdb-load query URL DB N QUERY
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let client = reqwest::Client::builder().no_proxy().build()?;
    match args.get(1).map(String::as_str) {
        Some("write") => {
            let url = args[2].clone();
            let db = args[3].clone();
            let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
            let (series, rounds, batch, conc) =
                (num(4, 40_000), num(5, 30), num(6, 5000), num(7, 4));
            let start_s: i64 = args
                .get(8)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_600_000_000);
            let batches = std::sync::Arc::new(gen_batches(series, rounds, batch, start_s));
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..conc {
                let (batches, next, client, url, db) = (
                    batches.clone(),
                    next.clone(),
                    client.clone(),
                    url.clone(),
                    db.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(b) = batches.get(i) else {
                            return Ok::<_, anyhow::Error>(());
                        };
                        let r = client
                            .post(format!("{url}/write?db={db}&precision=s"))
                            .body(b.clone())
                            .send()
                            .await?;
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
            let secs = t0.elapsed().as_secs_f64();
            let values = (series * rounds * 10) as f64;
            println!(
                "values={} seconds={secs:.2} values_per_sec={:.0}",
                values,
                values / secs
            );
        }
        Some("query") => {
            let url = &args[2];
            let db = &args[3];
            let n: usize = args[4].parse()?;
            let q = &args[5];
            let mut lat = Vec::with_capacity(n);
            let mut rows = 0usize;
            for _ in 0..n {
                let t = Instant::now();
                let r = client
                    .get(format!("{url}/query"))
                    .query(&[("db", db.as_str()), ("q", q.as_str())])
                    .send()
                    .await?;
                let body = r.text().await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                rows = body.matches("],[").count() + 1;
            }
            lat.sort_by(|a, b| a.total_cmp(b));
            let p = |x: f64| lat[((lat.len() as f64 * x) as usize).min(lat.len() - 1)];
            println!("p50_ms={:.2} p99_ms={:.2} rows~{rows}", p(0.5), p(0.99));
        }
        _ => anyhow::bail!(
            "usage: tsdb-load write URL DB [series rounds batch conc start_s] | query URL DB N QUERY"
        ),
    }
    Ok(())
}
