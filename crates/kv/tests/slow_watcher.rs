//! A watch client that stops reading: the server ends its stream once the
//! events waiting for it pass `watch_backlog_bytes`, naming the first
//! revision the stream's watches did not get, instead of queueing without
//! bound; a real etcd client (etcdctl) then watches again from there by
//! itself, so it still sees every event, once and in order; and such a
//! client does not hold the server's shutdown.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::{TorcKv, etcdctl, require};
use torc_kv::KvOptions;
use torc_kv_client::proto::etcdserverpb::{
    PutRequest, WatchCreateRequest, WatchRequest, WatchResponse, kv_client::KvClient,
    watch_client::WatchClient, watch_request::RequestUnion,
};

const LIMIT: usize = 64 << 10;
const PUTS: usize = 300;
const VALUE: usize = 4096;

fn small_backlog() -> KvOptions {
    KvOptions {
        watch_backlog_bytes: LIMIT,
        ..KvOptions::default()
    }
}

/// A test's client side. Dropping it closes its connections; tests do that
/// before stopping the server, which would otherwise give them
/// `SHUTDOWN_GRACE` (all but the test of exactly that).
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_client_that_stops_reading_gets_its_stream_ended_with_the_revision_to_resume_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = TorcKv::start_in(dir.path(), small_backlog());
    let runtime = client_runtime();
    runtime.block_on(stop_reading(format!("http://{}", kv.endpoint)));
}

/// A watch of `big/` on a connection of its own with small HTTP/2 windows,
/// so the server soon cannot send and events queue in it rather than in
/// this client; once created. (The sender keeps the stream open.)
async fn watch_big(
    url: &str,
) -> (
    tokio::sync::mpsc::UnboundedSender<WatchRequest>,
    tonic::Streaming<WatchResponse>,
) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: "big/".into(),
            range_end: torc_kv_client::prefix_end(b"big/").into(),
            ..Default::default()
        })),
    })
    .expect("send");
    let mut stream = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = stream.message().await.expect("created").expect("created");
    assert!(created.created);
    (tx, stream)
}

async fn stop_reading(url: String) {
    let (tx, mut stream) = watch_big(&url).await;

    // Many more bytes of events than the limit and both windows, unread. (The
    // puts go over another connection: this one's window is the watch's.)
    let mut client = KvClient::connect(url).await.expect("connect");
    let mut revisions = Vec::new();
    for i in 0..PUTS {
        let resp = client
            .put(PutRequest {
                key: format!("big/{i:04}").into(),
                value: vec![b'v'; VALUE].into(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        revisions.push(resp.header.expect("header").revision);
    }

    // Now read: events in order, with no gap, then the end naming the next one.
    let mut seen: Vec<i64> = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream neither ended nor sent anything for 10 s")
        {
            Ok(Some(resp)) => seen.extend(
                resp.events
                    .iter()
                    .map(|e| e.kv.as_ref().expect("kv").mod_revision),
            ),
            Ok(None) => panic!(
                "the stream ended without a status after {} events",
                seen.len()
            ),
            Err(status) => break status,
        }
    };
    drop(tx);
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        seen.len() < PUTS,
        "the stream overflowed, so it did not get every event"
    );
    assert_eq!(seen, revisions[..seen.len()], "every event before the end");
    let next = revisions[seen.len()];
    assert!(
        status.message().contains(&format!(
            "every event before revision {next}, watch again from there"
        )),
        "{status:?}"
    );
    assert!(
        status.message().contains(&format!("{LIMIT} bytes")),
        "{status:?}"
    );
}

#[test]
fn etcdctl_watching_through_an_overflow_sees_every_event_once() {
    require("etcdctl");
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = TorcKv::start_in(dir.path(), small_backlog());
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", kv.endpoint))
        .args(["watch", "big/", "--prefix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next_line = || lines.next().expect("etcdctl's output ended").expect("read");
    // The watch is in place once the first event comes through.
    let value = "v".repeat(VALUE);
    let first = std::thread::scope(|s| {
        let reader = s.spawn(|| [next_line(), next_line(), next_line()]);
        while !reader.is_finished() {
            etcdctl(&kv.endpoint, &["put", "big/first", "x"], None);
            std::thread::sleep(Duration::from_millis(200));
        }
        reader.join().expect("reader")
    });
    assert_eq!(first, ["PUT", "big/first", "x"]);
    // It stops reading (more `big/first` events may follow; they are skipped).
    let pid = Pid::from_raw(watch.id() as i32);
    kill(pid, Signal::SIGSTOP).expect("stop the watcher");
    for i in 0..PUTS {
        let key = format!("big/{i:04}");
        let out = etcdctl(&kv.endpoint, &["put", &key, &value], None);
        assert_eq!(out, "OK\n", "{key}");
    }
    kill(pid, Signal::SIGCONT).expect("continue the watcher");
    let mut keys = Vec::new();
    while keys.len() < PUTS {
        let (op, key, v) = (next_line(), next_line(), next_line());
        assert_eq!(op, "PUT");
        if key == "big/first" {
            continue;
        }
        assert_eq!(v.len(), VALUE, "{key}");
        keys.push(key);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let want: Vec<String> = (0..PUTS).map(|i| format!("big/{i:04}")).collect();
    assert_eq!(keys, want, "every event once, in order");
}

/// A client that stopped reading does not hold the server's shutdown: its
/// connection gets `SHUTDOWN_GRACE`, then is closed.
#[test]
fn a_client_that_stopped_reading_does_not_hold_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = TorcKv::start_in(dir.path(), KvOptions::default());
    let url = format!("http://{}", kv.endpoint);
    let (stuck_tx, stuck_rx) = std::sync::mpsc::channel();
    // The client's runtime lives on, never reading, until the test ends.
    let _client = std::thread::spawn(move || {
        let runtime = client_runtime();
        runtime.block_on(async move {
            let unread = watch_big(&url).await;
            let mut client = KvClient::connect(url).await.expect("connect");
            // More than the windows, less than the backlog limit: the server
            // holds events it cannot send.
            for i in 0..100 {
                client
                    .put(PutRequest {
                        key: format!("big/{i:04}").into(),
                        value: vec![b'v'; VALUE].into(),
                        ..Default::default()
                    })
                    .await
                    .expect("put");
            }
            stuck_tx.send(()).expect("stuck");
            std::future::pending::<()>().await;
            drop(unread);
        });
    });
    stuck_rx.recv().expect("the client got stuck");
    let began = std::time::Instant::now();
    kv.stop();
    let took = began.elapsed();
    assert!(
        took < torc_kv::SHUTDOWN_GRACE + Duration::from_secs(20),
        "stopping took {took:?}"
    );
}

/// A client that asks without reading the answers is not read from: ten
/// watches of `big/` whose history is well over the limit, then a plain
/// watch of `late/` (id 100), all sent at once and left unread while
/// `late/1` is put. The plain watch is created only once the client has
/// read the histories, so after `late/1`, which it therefore never sees;
/// `late/2`, put once it exists, it does.
#[test]
fn requests_wait_while_the_client_does_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = TorcKv::start_in(dir.path(), small_backlog());
    let runtime = client_runtime();
    runtime.block_on(async {
        let url = format!("http://{}", kv.endpoint);
        let mut client = KvClient::connect(url.clone()).await.expect("connect");
        let put = |key: &str| PutRequest {
            key: key.to_string().into(),
            value: vec![b'v'; VALUE].into(),
            ..Default::default()
        };
        for i in 0..100 {
            client.put(put(&format!("big/{i:04}"))).await.expect("put");
        }
        let (tx, mut stream) = watch_big(&url).await;
        let create = |prefix: &str, watch_id: i64, start_revision: i64| WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.to_string().into(),
                range_end: torc_kv_client::prefix_end(prefix.as_bytes()).into(),
                start_revision,
                watch_id,
                ..Default::default()
            })),
        };
        for id in 1..=10 {
            tx.send(create("big/", id, 1)).expect("send");
        }
        tx.send(create("late/", 100, 0)).expect("send");
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.put(put("late/1")).await.expect("put");

        let mut plain_created = false;
        let mut plain_keys = Vec::new();
        while !plain_keys.iter().any(|k| k == "late/2") {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("nothing for 10 s")
                .expect("stream")
                .expect("stream ended");
            if resp.watch_id == 100 {
                if resp.created && !plain_created {
                    plain_created = true;
                    client.put(put("late/2")).await.expect("put");
                }
                plain_keys.extend(resp.events.iter().map(|e| {
                    String::from_utf8_lossy(&e.kv.as_ref().expect("kv").key).into_owned()
                }));
            }
        }
        assert_eq!(plain_keys, ["late/2"]);
        drop(tx);
    });
}
