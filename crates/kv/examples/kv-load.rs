//! A small etcd v3 load generator for `bench/kv.sh`, built on the typed
//! clients generated from torc kv's own protos, so torc kv and a real etcd
//! see exactly the same requests.
//!
//! ```text
//! kv-load put   --endpoint http://127.0.0.1:2379 --clients 64 --seconds 10 [--value-size 256]
//! kv-load watch --endpoint http://127.0.0.1:2379 --events 2000
//! ```
//!
//! `put` prints `puts_per_sec=… p50_us=… p99_us=…` (every put is durable
//! before it is acknowledged); `watch` prints `watch_p50_us=… watch_p99_us=…`:
//! for each of a series of sequential puts, the time from sending the put to
//! its event arriving on an already-open watch (so it includes the commit).

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use torc_kv::proto::etcdserverpb::{
    PutRequest, WatchCreateRequest, WatchRequest, kv_client::KvClient, watch_client::WatchClient,
    watch_request::RequestUnion,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> ! {
    eprintln!(
        "usage: kv-load put --endpoint URL [--clients N] [--seconds S] [--value-size B]\n       kv-load watch --endpoint URL [--events N]"
    );
    std::process::exit(2);
}

struct Args {
    mode: String,
    endpoint: String,
    clients: usize,
    seconds: u64,
    value_size: usize,
    events: usize,
}

fn parse() -> Args {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_else(|| usage());
    let mut a = Args {
        mode,
        endpoint: "http://127.0.0.1:2379".into(),
        clients: 1,
        seconds: 10,
        value_size: 256,
        events: 2000,
    };
    while let Some(flag) = argv.next() {
        let v = argv.next().unwrap_or_else(|| usage());
        let num = || v.parse::<usize>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--endpoint" => a.endpoint = v.clone(),
            "--clients" => a.clients = num(),
            "--seconds" => a.seconds = num() as u64,
            "--value-size" => a.value_size = num(),
            "--events" => a.events = num(),
            _ => usage(),
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_micros()
}

async fn channel(endpoint: &str) -> Result<Channel, BoxError> {
    Ok(Endpoint::from_shared(endpoint.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

async fn put_load(a: &Args) -> Result<(), BoxError> {
    // Clients share a few HTTP/2 connections, as etcd clients do.
    let conns = a.clients.clamp(1, 16);
    let mut channels = Vec::new();
    for _ in 0..conns {
        channels.push(channel(&a.endpoint).await?);
    }
    let value = bytes::Bytes::from(vec![b'x'; a.value_size]);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let mut client = KvClient::new(channels[c % conns].clone());
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let req = PutRequest {
                    key: format!("bench/{c}/{}", i % 1000).into(),
                    value: value.clone(),
                    ..Default::default()
                };
                let t = Instant::now();
                client.put(req).await?;
                lat.push(t.elapsed());
                i += 1;
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64().max(a.seconds as f64);
    all.sort();
    println!(
        "puts_per_sec={:.0} p50_us={} p99_us={} puts={}",
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.len()
    );
    Ok(())
}

/// One watcher on a prefix and one writer putting keys one after another;
/// each event's latency runs from sending its put to the event's arrival.
async fn watch_load(a: &Args) -> Result<(), BoxError> {
    let ch = channel(&a.endpoint).await?;
    let mut kv = KvClient::new(ch.clone());
    let mut watch = WatchClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: "wbench/".into(),
            range_end: "wbench0".into(),
            ..Default::default()
        })),
    })?;
    let mut stream = watch
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let created = stream.message().await?.ok_or("watch closed")?;
    if !created.created {
        return Err("watch not created".into());
    }
    let (arr_tx, mut arr_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let now = Instant::now();
            for _ in &resp.events {
                let _ = arr_tx.send(now);
            }
        }
    });
    let mut lat = Vec::with_capacity(a.events);
    for i in 0..a.events {
        let req = PutRequest {
            key: format!("wbench/{}", i % 100).into(),
            value: "v".into(),
            ..Default::default()
        };
        let sent = Instant::now();
        kv.put(req).await?;
        let arrived = tokio::time::timeout(Duration::from_secs(5), arr_rx.recv())
            .await?
            .ok_or("watch ended")?;
        lat.push(arrived.saturating_duration_since(sent));
    }
    reader.abort();
    lat.sort();
    println!(
        "watch_p50_us={} watch_p99_us={} events={}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let a = parse();
    match a.mode.as_str() {
        "put" => put_load(&a).await,
        "watch" => watch_load(&a).await,
        _ => usage(),
    }
}
