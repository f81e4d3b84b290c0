//! A small etcd v3 load generator for `bench/kv.sh`, built on the typed
//! clients generated from torc kv's own protos, so torc kv and a real etcd
//! see exactly the same requests.
//!
//! ```text
//! kv-load put   --endpoint http://127.0.0.1:2379 --clients 64 --seconds 10 [--value-size 256]
//! kv-load get   --endpoint http://127.0.0.1:2379 --clients 64 --seconds 10 --kind serializable|linearizable|prefix
//! kv-load watch --endpoint http://127.0.0.1:2379 --events 500 [--watchers 1000] [--streams 10]
//! kv-load fill  --endpoint http://127.0.0.1:2379 --keys 1000000 --clients 64 [--value-size 256]
//! any of them:  [--client-threads N]
//! ```
//!
//! With `--cacert FILE` (and `--cert FILE --key FILE` for a server that
//! asks for a client certificate) it speaks TLS to an `https://` endpoint,
//! through `torc_kv_client::ClientTls`, one handshake per connection.
//!
//! `put` prints `puts_per_sec=… p50_us=… p99_us=…` (every put is durable
//! before it is acknowledged).
//!
//! `fill` writes `--keys` keys `fill/0000000`.. once each, in txns of
//! [`FILL_TXN`] puts (under etcd's default `--max-txn-ops`), for the
//! snapshot benchmark (`bench/kv.sh snapshot`); it prints
//! `keys_per_sec=… keys=…`.
//!
//! `get` first writes 100 keys `rbench/000`..`rbench/099` (256-byte values),
//! then reads them: `serializable` and `linearizable` are single-key gets
//! (etcd's `--consistency=s|l`; a linearizable read in etcd waits for a
//! ReadIndex round), `prefix` is a linearizable range over all 100 keys. It
//! prints `gets_per_sec=… p50_us=… p99_us=…`.
//!
//! `watch` opens `--watchers` watches on one key, spread evenly over
//! `--streams` watch streams (one HTTP/2 connection each), like etcd's
//! `benchmark watch-latency`. Then it puts that key `--events` times, one
//! after another, each put only once every watcher has seen the previous one.
//! It prints `watch_p50_us=… watch_p99_us=…` over every (event, watcher)
//! delivery: the time from sending the put to the event arriving on that
//! watch, so it includes the durable commit and the fan-out. It also prints
//! `after_ack_p50_us=… after_ack_p99_us=…`: the same deliveries timed from
//! the put's acknowledgement (0 when the event came first), which is how
//! etcd's own `benchmark watch-latency` times them, and `put_p50_us=…
//! put_p99_us=…`, the puts' own round trips, so a tail can be told apart
//! into the commit's part and the delivery's.
//!
//! The generator runs on one thread by default: bench/kv.sh pins it to one
//! core, where tokio's multi-threaded scheduler only adds wakeups (with 1,000
//! watchers they added ~0.3 ms to every event's p99, against either server).
//! `--client-threads N` (N > 1) runs it instead as most clients run: on
//! tokio's multi-threaded runtime with N workers, as `#[tokio::main]` (and so
//! the `etcd-client` crate's users) do, with the load's own loop on the main
//! thread and the connections' and readers' tasks on the workers. The server
//! should serve both alike.

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use torc_kv_client::ClientTls;
use torc_kv_client::proto::etcdserverpb::{
    PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, kv_client::KvClient,
    watch_client::WatchClient, watch_request::RequestUnion,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> ! {
    eprintln!(
        "usage: kv-load put --endpoint URL [--clients N] [--seconds S] [--value-size B]\n       kv-load get --endpoint URL [--clients N] [--seconds S] [--kind serializable|linearizable|prefix]\n       kv-load watch --endpoint URL [--events N] [--watchers N] [--streams N]\n       kv-load fill --endpoint URL --keys N [--clients N] [--value-size B]\n       [--client-threads N] (N > 1: a multi-threaded tokio runtime with N workers)\n       TLS (https:// URL): [--cacert FILE [--cert FILE --key FILE]]"
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
    watchers: usize,
    streams: usize,
    kind: String,
    keys: usize,
    /// Tokio workers: 1 is a current-thread runtime.
    client_threads: usize,
    cacert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    /// Built from `cacert`, `cert` and `key` once the flags are read.
    tls: Option<ClientTls>,
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
        events: 500,
        watchers: 1,
        streams: 1,
        kind: "serializable".into(),
        keys: 0,
        client_threads: 1,
        cacert: None,
        cert: None,
        key: None,
        tls: None,
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
            "--watchers" => a.watchers = num(),
            "--streams" => a.streams = num(),
            "--kind" => a.kind = v.clone(),
            "--keys" => a.keys = num(),
            "--client-threads" => a.client_threads = num().max(1),
            "--cacert" => a.cacert = Some(v.clone()),
            "--cert" => a.cert = Some(v.clone()),
            "--key" => a.key = Some(v.clone()),
            _ => usage(),
        }
    }
    a
}

fn tls(a: &Args) -> Result<Option<ClientTls>, BoxError> {
    let Some(ca) = &a.cacert else {
        if a.cert.is_some() || a.key.is_some() {
            usage();
        }
        return Ok(None);
    };
    let identity = match (&a.cert, &a.key) {
        (Some(cert), Some(key)) => Some((std::path::Path::new(cert), std::path::Path::new(key))),
        (None, None) => None,
        _ => usage(),
    };
    Ok(Some(ClientTls::from_files(ca.as_ref(), identity)?))
}

/// Waits for the load's tasks, then prints `{unit}_per_sec=… p50_us=… p99_us=… {unit}=…` (the
/// line bench/kv.sh reads). The rate is over the run's length, at least `seconds`.
async fn report(
    unit: &str,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, tonic::Status>>>,
    seconds: u64,
) -> Result<(), BoxError> {
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64().max(seconds as f64);
    all.sort();
    println!(
        "{unit}_per_sec={:.0} p50_us={} p99_us={} {unit}={}",
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.len()
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_micros()
}

async fn channel(a: &Args) -> Result<Channel, BoxError> {
    let endpoint = Endpoint::from_shared(a.endpoint.clone())?.tcp_nodelay(true);
    Ok(match &a.tls {
        Some(tls) => tls.channel(&endpoint).await?,
        None => endpoint.connect().await?,
    })
}

/// The connections `--clients` clients share (a few HTTP/2 connections, as etcd clients
/// do), and how many there are.
async fn client_channels(a: &Args) -> Result<(Vec<Channel>, usize), BoxError> {
    let conns = a.clients.clamp(1, 16);
    let mut channels = Vec::new();
    for _ in 0..conns {
        channels.push(channel(a).await?);
    }
    Ok((channels, conns))
}

async fn put_load(a: &Args) -> Result<(), BoxError> {
    let (channels, conns) = client_channels(a).await?;
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
    report("puts", tasks, a.seconds).await
}

/// Reads 100 preloaded keys from many clients; see the module comment.
async fn get_load(a: &Args) -> Result<(), BoxError> {
    let serializable = match a.kind.as_str() {
        "serializable" => true,
        "linearizable" | "prefix" => false,
        _ => usage(),
    };
    let prefix = a.kind == "prefix";
    let value = bytes::Bytes::from(vec![b'x'; 256]);
    let mut kv = KvClient::new(channel(a).await?);
    for i in 0..100 {
        kv.put(PutRequest {
            key: format!("rbench/{i:03}").into(),
            value: value.clone(),
            ..Default::default()
        })
        .await?;
    }
    let (channels, conns) = client_channels(a).await?;
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let mut client = KvClient::new(channels[c % conns].clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c as u64;
            while Instant::now() < deadline {
                let req = if prefix {
                    RangeRequest {
                        key: "rbench/".into(),
                        range_end: "rbench0".into(),
                        ..Default::default()
                    }
                } else {
                    RangeRequest {
                        key: format!("rbench/{:03}", i % 100).into(),
                        serializable,
                        ..Default::default()
                    }
                };
                let t = Instant::now();
                let resp = client.range(req).await?.into_inner();
                lat.push(t.elapsed());
                let want = if prefix { 100 } else { 1 };
                if resp.kvs.len() != want {
                    return Err(tonic::Status::internal(format!(
                        "expected {want} keys, got {}",
                        resp.kvs.len()
                    )));
                }
                i += 1;
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    report("gets", tasks, a.seconds).await
}

/// Many watchers on one key and one writer putting it repeatedly; see the
/// module comment.
async fn watch_load(a: &Args) -> Result<(), BoxError> {
    let streams = a.streams.clamp(1, a.watchers.max(1));
    let key: bytes::Bytes = "wbench/key".into();
    // Every delivery: (watch stream, event revision, arrival time).
    let (arr_tx, mut arr_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for s in 0..streams {
        let n = a.watchers / streams + usize::from(s < a.watchers % streams);
        let mut watch = WatchClient::new(channel(a).await?);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..n {
            tx.send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            })?;
        }
        let mut stream = watch
            .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut created = 0;
        while created < n {
            let resp = stream.message().await?.ok_or("watch closed")?;
            if !resp.created || resp.canceled {
                return Err("watch not created".into());
            }
            created += 1;
        }
        senders.push(tx);
        let arr_tx = arr_tx.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                let now = Instant::now();
                for ev in &resp.events {
                    let rev = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    let _ = arr_tx.send((rev, now));
                }
            }
        }));
    }
    let mut kv = KvClient::new(channel(a).await?);
    let mut lat = Vec::with_capacity(a.events * a.watchers);
    let mut after_ack = Vec::with_capacity(a.events * a.watchers);
    let mut put_lat = Vec::with_capacity(a.events);
    for _ in 0..a.events {
        let sent = Instant::now();
        let resp = kv
            .put(PutRequest {
                key: key.clone(),
                value: "v".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let acked = Instant::now();
        put_lat.push(acked - sent);
        let rev = resp.header.ok_or("no header")?.revision;
        let mut seen = 0;
        while seen < a.watchers {
            let (ev_rev, arrived) = tokio::time::timeout(Duration::from_secs(5), arr_rx.recv())
                .await?
                .ok_or("watch ended")?;
            if ev_rev != rev {
                return Err(format!("event for revision {ev_rev}, expected {rev}").into());
            }
            lat.push(arrived.saturating_duration_since(sent));
            after_ack.push(arrived.saturating_duration_since(acked));
            seen += 1;
        }
    }
    for r in readers {
        r.abort();
    }
    drop(senders);
    lat.sort();
    after_ack.sort();
    put_lat.sort();
    println!(
        "watch_p50_us={} watch_p99_us={} after_ack_p50_us={} after_ack_p99_us={} put_p50_us={} put_p99_us={} watchers={} streams={} events={} client_threads={}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&after_ack, 0.50),
        percentile(&after_ack, 0.99),
        percentile(&put_lat, 0.50),
        percentile(&put_lat, 0.99),
        a.watchers,
        streams,
        a.events,
        a.client_threads
    );
    Ok(())
}

/// Puts per txn of `fill`.
const FILL_TXN: usize = 100;

/// Writes `--keys` distinct keys once each; see the module comment.
async fn fill(a: &Args) -> Result<(), BoxError> {
    use torc_kv_client::proto::etcdserverpb::{RequestOp, TxnRequest, request_op::Request};
    let (channels, conns) = client_channels(a).await?;
    let value = bytes::Bytes::from(vec![b'x'; a.value_size]);
    let txns = a.keys.div_ceil(FILL_TXN);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients.max(1) {
        let mut client = KvClient::new(channels[c % conns].clone());
        let (value, keys, clients) = (value.clone(), a.keys, a.clients.max(1));
        tasks.push(tokio::spawn(async move {
            for t in (c..txns).step_by(clients) {
                let success = (t * FILL_TXN..((t + 1) * FILL_TXN).min(keys))
                    .map(|k| RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: format!("fill/{k:07}").into(),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                client
                    .txn(TxnRequest {
                        success,
                        ..Default::default()
                    })
                    .await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("keys_per_sec={:.0} keys={}", a.keys as f64 / secs, a.keys);
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut a = parse();
    a.tls = tls(&a)?;
    let runtime = if a.client_threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.client_threads)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(run(&a))
}

async fn run(a: &Args) -> Result<(), BoxError> {
    match a.mode.as_str() {
        "put" => put_load(a).await,
        "get" => get_load(a).await,
        "watch" => watch_load(a).await,
        "fill" => fill(a).await,
        _ => usage(),
    }
}
