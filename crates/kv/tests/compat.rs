//! Compatibility: the same etcdctl sessions against a real etcd 3.4 and
//! against torc kv must give the same output. The case files' expected text
//! is what etcd prints, so running them against both compares the two.

mod common;

use common::{
    Etcd, Server, TorcKv, WATCH_EXPECTED, auth_watch_session, case_files, run_case, watch_session,
};

#[test]
fn case_files_match_real_etcd() {
    let mut failures = Vec::new();
    for (name, text) in case_files() {
        let etcd = Etcd::start_with_flags(&common::case_server_flags(&text));
        failures.extend(run_case(&name, &text, &etcd.endpoint, Server::Etcd));
    }
    assert!(
        failures.is_empty(),
        "etcd disagrees with the case files:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn watch_sessions_match() {
    let etcd = Etcd::start();
    let torc = TorcKv::start();
    let from_etcd = watch_session(&etcd.endpoint);
    let from_torc = watch_session(&torc.endpoint);
    assert_eq!(from_torc, from_etcd);
    assert_eq!(&from_etcd[..WATCH_EXPECTED.len()], WATCH_EXPECTED);
}

/// A watch made by a user with read permission, with auth enabled, and
/// what it sees after the user loses the permission.
#[test]
fn auth_watch_sessions_match() {
    let etcd = Etcd::start();
    let torc = TorcKv::start();
    let from_etcd = auth_watch_session(&etcd.endpoint);
    let from_torc = auth_watch_session(&torc.endpoint);
    assert_eq!(from_torc, from_etcd);
    assert_eq!(
        from_etcd,
        [
            "PUT",
            "/w/a",
            "1",
            "DELETE",
            "/w/a",
            "1",
            "/w/a",
            "",
            "Error: etcdserver: permission denied\n(exit 1)\n",
            "PUT",
            "/w/b",
            "2",
        ]
    );
}

/// Several watchers on one stream, some wanting the same events (which torc
/// kv encodes once for all of them) and some not: every watch gets the same
/// events from torc kv as from etcd.
#[test]
fn watchers_sharing_a_stream_match() {
    let etcd = Etcd::start();
    let torc = TorcKv::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let from_etcd = rt.block_on(shared_stream_session(&etcd.endpoint));
    let from_torc = rt.block_on(shared_stream_session(&torc.endpoint));
    assert_eq!(from_torc, from_etcd);
    assert_eq!(from_etcd.len(), 5, "{from_etcd:?}");
}

/// Watch id → its events as `TYPE key=value (prev prev_value)` lines.
async fn shared_stream_session(endpoint: &str) -> std::collections::BTreeMap<i64, Vec<String>> {
    use torc_kv_client::proto::etcdserverpb::{
        PutRequest, WatchCreateRequest, WatchRequest, kv_client::KvClient,
        watch_client::WatchClient, watch_create_request::FilterType, watch_request::RequestUnion,
    };
    let url = format!("http://{endpoint}");
    let create = |key: &str, range_end: &str, prev_kv: bool, filters: Vec<i32>| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_string().into(),
            range_end: range_end.to_string().into(),
            prev_kv,
            filters,
            ..Default::default()
        })),
    };
    let requests = vec![
        create("s/a", "", false, vec![]),
        create("s/a", "", false, vec![]),
        create("s/a", "", true, vec![]),
        create("s/", "s0", false, vec![FilterType::Nodelete as i32]),
        create("s/b", "", true, vec![]),
    ];
    let watches = requests.len();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for r in requests {
        tx.send(r).expect("queue create");
    }
    let mut watch = WatchClient::connect(url.clone()).await.expect("connect");
    let mut stream = watch
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    for _ in 0..watches {
        let resp = next_response(&mut stream).await;
        assert!(resp.created && !resp.canceled, "{resp:?}");
    }
    let mut kv = KvClient::connect(url).await.expect("connect");
    for (key, value) in [("s/a", "1"), ("s/b", "2"), ("s/a", "3")] {
        kv.put(PutRequest {
            key: key.to_string().into(),
            value: value.to_string().into(),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    kv.delete_range(torc_kv_client::proto::etcdserverpb::DeleteRangeRequest {
        key: "s/a".into(),
        ..Default::default()
    })
    .await
    .expect("delete");
    // Expected events: 3 for each plain or prev_kv watch of s/a, 3 puts for
    // the prefix (no deletes), 1 for s/b.
    let mut want = 3 + 3 + 3 + 3 + 1;
    let mut got: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
    while want > 0 {
        let resp = next_response(&mut stream).await;
        for ev in resp.events {
            let text = |kv: &Option<torc_kv_client::proto::mvccpb::KeyValue>| {
                kv.as_ref().map_or("-".to_string(), |kv| {
                    format!(
                        "{}={}@{}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value),
                        kv.mod_revision
                    )
                })
            };
            got.entry(resp.watch_id).or_default().push(format!(
                "{} {} (prev {})",
                ev.r#type,
                text(&ev.kv),
                text(&ev.prev_kv)
            ));
            want -= 1;
        }
    }
    got
}

/// The next response on a watch stream, within 10 s.
async fn next_response(
    stream: &mut tonic::Streaming<torc_kv_client::proto::etcdserverpb::WatchResponse>,
) -> torc_kv_client::proto::etcdserverpb::WatchResponse {
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("watch response in time")
        .expect("watch stream")
        .expect("watch open")
}

/// What etcdctl cannot send, sent with the gRPC client to both servers:
/// ranges with `count_only`, revision filters and an explicit KEY ASCEND
/// with limits, and nested txns (the headers inside them, etcd's
/// duplicate-key rule across nesting). The answers must be the same, ids
/// aside.
#[test]
fn grpc_ranges_and_nested_txns_match() {
    let etcd = Etcd::start();
    let torc = TorcKv::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let from_etcd = rt.block_on(grpc_session(&etcd.endpoint));
    let from_torc = rt.block_on(grpc_session(&torc.endpoint));
    assert_eq!(from_etcd.len(), from_torc.len());
    let differences: Vec<String> = from_etcd
        .iter()
        .zip(&from_torc)
        .enumerate()
        .filter(|(_, (e, t))| e != t)
        .map(|(i, (e, t))| format!("answer {i}\n  etcd: {e}\n  torc: {t}"))
        .collect();
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The session exercised what it is about.
    assert!(from_etcd.iter().any(|r| r.contains("more: true")));
    assert!(from_etcd.iter().any(|r| r.contains("duplicate key")));
    assert!(from_etcd.iter().any(|r| r.contains("ResponseTxn")));
}

/// Each answer as text (`Debug`), the cluster and member ids zeroed.
async fn grpc_session(endpoint: &str) -> Vec<String> {
    use torc_kv_client::proto::etcdserverpb::{
        PutRequest, RangeRequest, RequestOp, TxnRequest,
        kv_client::KvClient,
        range_request::{SortOrder, SortTarget},
        request_op::Request,
    };
    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect");
    let b = |s: &str| bytes::Bytes::copy_from_slice(s.as_bytes());
    // Revisions 2..=7; g/c is written twice (version 2).
    for (k, v) in [
        ("g/c", "5"),
        ("g/a", "9"),
        ("g/d", "1"),
        ("g/b", "5"),
        ("g/c", "0"),
        ("g/e", "7"),
    ] {
        kv.put(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    let prefix = |limit: i64| RangeRequest {
        key: b("g/"),
        range_end: b("g0"),
        limit,
        ..Default::default()
    };
    let ranges = [
        RangeRequest {
            count_only: true,
            ..prefix(1)
        },
        RangeRequest {
            count_only: true,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Value as i32,
            ..prefix(2)
        },
        RangeRequest {
            sort_order: SortOrder::Ascend as i32,
            ..prefix(2)
        },
        RangeRequest {
            sort_order: SortOrder::Descend as i32,
            ..prefix(2)
        },
        RangeRequest {
            min_mod_revision: 4,
            ..prefix(2)
        },
        RangeRequest {
            min_mod_revision: 4,
            sort_target: SortTarget::Value as i32,
            ..prefix(2)
        },
        RangeRequest {
            max_create_revision: 4,
            sort_target: SortTarget::Version as i32,
            sort_order: SortOrder::Descend as i32,
            ..prefix(1)
        },
        RangeRequest {
            max_mod_revision: 5,
            min_create_revision: 3,
            ..prefix(0)
        },
        RangeRequest {
            revision: 4,
            sort_target: SortTarget::Mod as i32,
            ..prefix(1)
        },
    ];
    let mut out = Vec::new();
    for r in ranges {
        out.push(text(kv.range(r).await));
    }
    let op = |request: Request| RequestOp {
        request: Some(request),
    };
    let get = |k: &str| {
        op(Request::RequestRange(RangeRequest {
            key: b(k),
            ..Default::default()
        }))
    };
    let put = |k: &str, v: &str| {
        op(Request::RequestPut(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        }))
    };
    let del = |k: &str, end: &str| {
        op(Request::RequestDeleteRange(
            torc_kv_client::proto::etcdserverpb::DeleteRangeRequest {
                key: b(k),
                range_end: b(end),
                ..Default::default()
            },
        ))
    };
    let nested = |success: Vec<RequestOp>, failure: Vec<RequestOp>| {
        op(Request::RequestTxn(TxnRequest {
            success,
            failure,
            ..Default::default()
        }))
    };
    let txns = [
        // Read-only, nested.
        TxnRequest {
            success: vec![get("g/a"), nested(vec![get("g/b")], vec![])],
            ..Default::default()
        },
        // Writes inside and after a nested txn.
        TxnRequest {
            success: vec![
                get("g/a"),
                del("nothing", ""),
                nested(vec![get("g/a"), put("n/1", "x"), get("n/1")], vec![]),
                get("n/1"),
                del("g/e", ""),
            ],
            ..Default::default()
        },
        // Only a nested delete that deletes nothing.
        TxnRequest {
            success: vec![nested(vec![del("nothing", "")], vec![]), get("g/a")],
            ..Default::default()
        },
        // The same key in both branches of a nested txn is fine ...
        TxnRequest {
            success: vec![nested(vec![put("n/2", "a")], vec![put("n/2", "b")])],
            ..Default::default()
        },
        // ... but not next to a put or a delete of it outside.
        TxnRequest {
            success: vec![nested(vec![put("n/3", "a")], vec![]), put("n/3", "b")],
            ..Default::default()
        },
        TxnRequest {
            success: vec![del("n/", "n0"), nested(vec![], vec![put("n/4", "b")])],
            ..Default::default()
        },
        TxnRequest {
            success: vec![nested(vec![del("n/", "n0")], vec![]), put("n/5", "b")],
            ..Default::default()
        },
        // Deletes overlapping across nesting are fine.
        TxnRequest {
            success: vec![nested(vec![del("n/", "n0")], vec![]), del("n/1", "")],
            ..Default::default()
        },
    ];
    for t in txns {
        out.push(text(kv.txn(t).await));
    }
    out
}

/// A response (or error) as text, without the server's ids (only the
/// outer header carries them).
fn text<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(resp) => {
            let s = format!("{:?}", resp.into_inner());
            blank_first(&blank_first(&s, "cluster_id: "), "member_id: ")
        }
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// `s` with the value after the first `field` (up to a comma) made `_`.
fn blank_first(s: &str, field: &str) -> String {
    let Some(at) = s.find(field).map(|a| a + field.len()) else {
        return s.to_string();
    };
    let end = s[at..].find(',').map_or(s.len(), |e| e + at);
    format!("{}_{}", &s[..at], &s[end..])
}
