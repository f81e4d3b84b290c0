//! MVCC rules, tested on the pure core: no I/O, time passed in.

use super::*;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request;

fn core() -> Core {
    Core::new(Limits::default(), 42)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(c: &mut Core, k: &str, v: &str) -> Vec<Mutation> {
    c.put(&pb::PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    })
    .unwrap()
    .mutations
}

fn get_at(c: &Core, k: &str, rev: i64) -> Result<Vec<(String, String)>, EtcdError> {
    let resp = c.range(
        &pb::RangeRequest {
            key: b(k),
            revision: rev,
            ..Default::default()
        },
        c.revision(),
    )?;
    Ok(resp
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect())
}

fn range_keys(c: &Core, req: pb::RangeRequest) -> (Vec<String>, bool, i64) {
    let resp = c.range(&req, c.revision()).unwrap();
    (
        resp.kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect(),
        resp.more,
        resp.count,
    )
}

#[test]
fn revisions_versions_and_tombstones() {
    let mut c = core();
    assert_eq!(c.revision(), 1);
    put(&mut c, "a", "1"); // rev 2
    put(&mut c, "a", "2"); // rev 3
    let kv = c.get(b"a", 3).unwrap().clone();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let out = c
        .delete_range(&pb::DeleteRangeRequest {
            key: b("a"),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(out.response.deleted, 1);
    assert_eq!(out.response.prev_kvs[0].value, b("2"));
    assert_eq!(c.revision(), 4);
    assert!(c.get(b"a", 4).is_none());
    // Past revisions still read the old versions.
    assert_eq!(get_at(&c, "a", 2).unwrap(), vec![("a".into(), "1".into())]);
    // Recreating starts a new generation.
    put(&mut c, "a", "3"); // rev 5
    let kv = c.get(b"a", 5).unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
    // Deleting nothing does not bump the revision.
    let out = c
        .delete_range(&pb::DeleteRangeRequest {
            key: b("zz"),
            ..Default::default()
        })
        .unwrap();
    assert!(out.mutations.is_empty());
    assert_eq!(c.revision(), 5);
}

#[test]
fn future_and_compacted_revisions() {
    let mut c = core();
    for i in 0..5 {
        put(&mut c, "k", &i.to_string()); // revs 2..=6
    }
    assert_eq!(get_at(&c, "k", 7), Err(EtcdError::FutureRevision));
    c.compact(4, c.revision()).unwrap();
    assert_eq!(get_at(&c, "k", 3), Err(EtcdError::Compacted));
    assert_eq!(get_at(&c, "k", 4).unwrap(), vec![("k".into(), "2".into())]);
    assert_eq!(c.compact(4, c.revision()).err(), Some(EtcdError::Compacted));
    assert_eq!(
        c.compact(99, c.revision()).err(),
        Some(EtcdError::FutureRevision)
    );
    // Watch history below the compaction point is gone.
    let all = KeyRange::new(b("\0"), b("\0"));
    assert_eq!(c.history(&all, 3, 6), Err(EtcdError::Compacted));
    assert_eq!(c.history(&all, 4, 6).unwrap().len(), 3);
}

#[test]
fn compaction_drops_deleted_keys() {
    let mut c = core();
    put(&mut c, "gone", "x"); // 2
    c.delete_range(&pb::DeleteRangeRequest {
        key: b("gone"),
        ..Default::default()
    })
    .unwrap(); // 3
    put(&mut c, "kept", "y"); // 4
    c.compact(4, 4).unwrap();
    assert!(!c.index.contains_key(&b"gone"[..]));
    assert_eq!(c.index[&b"kept"[..]].len(), 1);
}

#[test]
fn range_end_forms_limit_sort_and_count() {
    let mut c = core();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "0")] {
        put(&mut c, k, v);
    }
    let req = |key: &str, end: &str| pb::RangeRequest {
        key: b(key),
        range_end: b(end),
        ..Default::default()
    };
    let cases: Vec<(pb::RangeRequest, Vec<&str>, bool, i64)> = vec![
        (req("b", ""), vec!["b"], false, 1),
        (req("b", "d"), vec!["b", "c"], false, 2),
        (req("b", "\0"), vec!["b", "c", "d"], false, 3),
        (req("\0", "\0"), vec!["a", "b", "c", "d"], false, 4),
        (req("d", "b"), vec![], false, 0),
        (
            pb::RangeRequest {
                limit: 2,
                ..req("a", "\0")
            },
            vec!["a", "b"],
            true,
            4,
        ),
        (
            pb::RangeRequest {
                sort_order: 2,
                limit: 1,
                ..req("a", "\0")
            },
            vec!["d"],
            true,
            4,
        ),
        (
            // Sorting by value ascending is implied by a non-key target.
            pb::RangeRequest {
                sort_target: 4,
                ..req("a", "\0")
            },
            vec!["d", "b", "c", "a"],
            false,
            4,
        ),
        (
            pb::RangeRequest {
                count_only: true,
                ..req("a", "\0")
            },
            vec![],
            false,
            4,
        ),
        (
            pb::RangeRequest {
                min_mod_revision: 4,
                ..req("a", "\0")
            },
            vec!["c", "d"],
            false,
            4,
        ),
    ];
    for (i, (r, keys, more, count)) in cases.into_iter().enumerate() {
        let got = range_keys(&c, r);
        assert_eq!(
            got,
            (keys.iter().map(|s| s.to_string()).collect(), more, count),
            "case {i}"
        );
    }
    assert_eq!(
        c.range(&req("", ""), c.revision()).err(),
        Some(EtcdError::EmptyKey)
    );
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        target_union: Some(u),
        range_end: Bytes::new(),
    }
}

fn put_op(k: &str, v: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestPut(pb::PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })),
    }
}

#[test]
fn txn_compares() {
    let mut c = core();
    put(&mut c, "k", "v"); // rev 2
    use CompareResult::*;
    use CompareTarget::*;
    let cases = [
        (cmp("k", Value, Equal, TargetUnion::Value(b("v"))), true),
        (cmp("k", Value, Greater, TargetUnion::Value(b("a"))), true),
        (cmp("k", Value, NotEqual, TargetUnion::Value(b("v"))), false),
        (cmp("k", Version, Equal, TargetUnion::Version(1)), true),
        (cmp("k", Create, Less, TargetUnion::CreateRevision(3)), true),
        (cmp("k", Mod, Greater, TargetUnion::ModRevision(2)), false),
        (cmp("k", Lease, Equal, TargetUnion::Lease(0)), true),
        // A missing key: version 0, but VALUE never matches.
        (cmp("nope", Version, Equal, TargetUnion::Version(0)), true),
        (cmp("nope", Value, Equal, TargetUnion::Value(b(""))), false),
    ];
    for (i, (compare, want)) in cases.into_iter().enumerate() {
        let out = c
            .txn(&pb::TxnRequest {
                compare: vec![compare],
                success: vec![],
                failure: vec![],
            })
            .unwrap();
        assert_eq!(out.response.succeeded, want, "case {i}");
        assert!(out.mutations.is_empty());
    }
}

#[test]
fn txn_writes_share_one_revision_and_nest() {
    let mut c = core();
    let out = c
        .txn(&pb::TxnRequest {
            compare: vec![],
            success: vec![
                put_op("x", "1"),
                put_op("y", "2"),
                pb::RequestOp {
                    request: Some(Request::RequestTxn(pb::TxnRequest {
                        compare: vec![],
                        success: vec![put_op("z", "3")],
                        failure: vec![],
                    })),
                },
                pb::RequestOp {
                    request: Some(Request::RequestRange(pb::RangeRequest {
                        key: b("x"),
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        })
        .unwrap();
    assert!(out.response.succeeded);
    assert_eq!(c.revision(), 2);
    for k in ["x", "y", "z"] {
        assert_eq!(c.get(k.as_bytes(), 2).unwrap().mod_revision, 2);
    }
    // The range inside the txn sees the txn's own write.
    match &out.response.responses[3].response {
        Some(pb::response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b("1")),
        other => panic!("unexpected {other:?}"),
    }
    // Duplicate keys and unknown leases refuse the whole txn.
    let dup = c.txn(&pb::TxnRequest {
        compare: vec![],
        success: vec![put_op("x", "1"), put_op("x", "2")],
        failure: vec![],
    });
    assert_eq!(dup.err(), Some(EtcdError::DuplicateKey));
    let bad_lease = c.txn(&pb::TxnRequest {
        compare: vec![],
        success: vec![
            put_op("q", "1"),
            pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: b("r"),
                    lease: 7,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    });
    assert_eq!(bad_lease.err(), Some(EtcdError::LeaseNotFound));
    assert!(c.get(b"q", c.revision()).is_none());
    assert_eq!(c.revision(), 2);
}

#[test]
fn put_ignore_value_and_lease() {
    let mut c = core();
    let now = Instant::now();
    let (lease, _) = c.lease_grant(0, 60, now).unwrap().response;
    c.put(&pb::PutRequest {
        key: b("k"),
        value: b("v"),
        lease,
        ..Default::default()
    })
    .unwrap();
    c.put(&pb::PutRequest {
        key: b("k"),
        value: b("w"),
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    let kv = c.get(b"k", c.revision()).unwrap();
    assert_eq!((kv.value.clone(), kv.lease), (b("w"), lease));
    let err = |req: pb::PutRequest| c.clone_for_test().put(&req).err();
    assert_eq!(
        err(pb::PutRequest {
            key: b("missing"),
            ignore_value: true,
            ..Default::default()
        }),
        Some(EtcdError::KeyNotFound)
    );
    assert_eq!(
        err(pb::PutRequest {
            key: b("k"),
            value: b("x"),
            ignore_value: true,
            ..Default::default()
        }),
        Some(EtcdError::ValueProvided)
    );
    assert_eq!(
        err(pb::PutRequest {
            key: Bytes::new(),
            ..Default::default()
        }),
        Some(EtcdError::EmptyKey)
    );
}

#[test]
fn lease_expiry_deletes_keys_in_one_revision() {
    let mut c = core();
    let t0 = Instant::now();
    let (id, ttl) = c.lease_grant(0, 1, t0).unwrap().response;
    assert_eq!(ttl, MIN_LEASE_TTL);
    for k in ["a", "b"] {
        c.put(&pb::PutRequest {
            key: b(k),
            value: b("v"),
            lease: id,
            ..Default::default()
        })
        .unwrap();
    }
    assert_eq!(
        c.lease_time_to_live(id, t0).unwrap().keys,
        vec![b("a"), b("b")]
    );
    assert!(c.expired_leases(t0 + Duration::from_secs(1)).is_empty());
    // Keep-alive pushes expiry out.
    assert_eq!(c.lease_keep_alive(id, t0 + Duration::from_secs(1)), Some(2));
    assert!(c.expired_leases(t0 + Duration::from_secs(2)).is_empty());
    let later = t0 + Duration::from_secs(3);
    assert_eq!(c.expired_leases(later), vec![id]);
    assert_eq!(c.lease_keep_alive(id, later), None);
    let rev = c.revision();
    let out = c.lease_revoke(id).unwrap();
    assert_eq!(c.revision(), rev + 1);
    assert_eq!(out.mutations.len(), 2);
    assert!(c.get(b"a", c.revision()).is_none() && c.get(b"b", c.revision()).is_none());
    assert_eq!(c.lease_revoke(id).err(), Some(EtcdError::LeaseNotFound));
    assert_eq!(
        c.lease_grant(0, MAX_LEASE_TTL + 1, t0).err(),
        Some(EtcdError::LeaseTtlTooLarge)
    );
    c.lease_grant(5, 10, t0).unwrap();
    assert_eq!(c.lease_grant(5, 10, t0).err(), Some(EtcdError::LeaseExists));
}

#[test]
fn restore_replays_to_the_same_state() {
    let mut c = core();
    let mut log = Vec::new();
    for m in put(&mut c, "a", "1")
        .into_iter()
        .chain(put(&mut c, "a", "2"))
        .chain(put(&mut c, "b", "3"))
    {
        if let Mutation::Revision(r) = m {
            log.push(r);
        }
    }
    let mut r = core();
    for rev in &log {
        let events = rev
            .events
            .iter()
            .map(|e| Event {
                prev_kv: None,
                ..e.clone()
            })
            .collect();
        r.restore_revision(rev.revision, events);
    }
    r.restore_revisions(c.revision(), 0);
    let all = KeyRange::new(b("\0"), b("\0"));
    assert_eq!(r.history(&all, 1, 4), c.history(&all, 1, 4));
    assert_eq!(get_at(&r, "a", 2), get_at(&c, "a", 2));
}

impl Core {
    fn clone_for_test(&self) -> Core {
        Core {
            index: self.index.clone(),
            log: self.log.clone(),
            revision: self.revision,
            compact_revision: self.compact_revision,
            leases: self.leases.clone(),
            next_lease_id: self.next_lease_id,
            limits: self.limits.clone(),
            space_in_use: self.space_in_use,
            nospace: self.nospace,
        }
    }
}

/// Compaction visits only the keys changed by the revisions it drops (and
/// at the compaction point); in small steps (as automatic compaction runs)
/// it must keep exactly what one pass over every key would: for each key,
/// the newest version at or below the compaction point unless it is a
/// tombstone (as etcd), and everything after it. The space the quota
/// counts follows every step.
#[test]
fn stepwise_compaction_keeps_what_a_full_pass_keeps() {
    let mut c = core();
    // Deterministic mix of puts, re-puts, deletes and txns over 20 keys.
    let mut x: u64 = 7;
    for _ in 0..600 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("k{}", (x >> 33) % 20);
        match (x >> 20) % 5 {
            0 => {
                c.delete_range(&pb::DeleteRangeRequest {
                    key: b(&key),
                    ..Default::default()
                })
                .unwrap();
            }
            1 => {
                let other = format!("k{}", (x >> 40) % 20);
                let ops: Vec<pb::RequestOp> = [key.clone(), other]
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|k| pb::RequestOp {
                        request: Some(Request::RequestPut(pb::PutRequest {
                            key: b(&k),
                            value: b("t"),
                            ..Default::default()
                        })),
                    })
                    .collect();
                c.txn(&pb::TxnRequest {
                    success: ops,
                    ..Default::default()
                })
                .unwrap();
            }
            _ => {
                put(&mut c, &key, &x.to_string());
            }
        }
    }
    let top = c.revision();
    let mut step = c.clone_for_test();
    let mut at = 1;
    while at + 7 < top - 50 {
        at += 7;
        step.compact(at, top).unwrap();
    }
    let mut full = c.clone_for_test();
    full.compact(at, top).unwrap();
    // The reference: a pass over every key, as compaction used to run.
    full.index.retain(|_, entries| {
        let first_after = entries.partition_point(|e| e.kv.mod_revision <= at);
        let newest = first_after.saturating_sub(1);
        let drop_tomb = first_after > 0 && entries[newest].tombstone;
        entries.drain(..if drop_tomb { first_after } else { newest });
        !entries.is_empty()
    });
    assert_eq!(c.space_in_use(), c.recount_space());
    assert_eq!(step.space_in_use(), step.recount_space());
    assert!(step.space_in_use() < c.space_in_use());
    let shape = |c: &Core| -> Vec<(Bytes, Vec<(i64, bool)>)> {
        c.index
            .iter()
            .map(|(k, es)| {
                let vs = es
                    .iter()
                    .map(|e| (e.kv.mod_revision, e.tombstone))
                    .collect();
                (k.clone(), vs)
            })
            .collect()
    };
    assert_eq!(shape(&step), shape(&full));
    let all = KeyRange::new(b("\0"), b("\0"));
    assert_eq!(step.history(&all, at, top), full.history(&all, at, top));
    for rev in at..=top {
        for k in 0..20 {
            let key = format!("k{k}");
            assert_eq!(
                get_at(&step, &key, rev),
                get_at(&c, &key, rev),
                "{key}@{rev}"
            );
        }
    }
}

/// etcd's `checkTxnRequest`: every branch and nested txn, before anything
/// else; a nested txn gets what its parent's largest list left.
#[test]
fn txn_shape_is_checked_in_both_branches_and_nested_txns() {
    let get = |k: &str| pb::RequestOp {
        request: Some(Request::RequestRange(pb::RangeRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            ..Default::default()
        })),
    };
    let txn = |success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>| pb::TxnRequest {
        compare: Vec::new(),
        success,
        failure,
    };
    assert_eq!(
        check_txn_shape(&txn(vec![get("a")], vec![get("b")]), 2),
        Ok(())
    );
    assert_eq!(
        check_txn_shape(&txn(vec![get("a")], vec![get("")]), 2),
        Err(EtcdError::EmptyKey),
        "the failure branch too"
    );
    let mut compare_empty = txn(vec![], vec![]);
    compare_empty.compare.push(pb::Compare::default());
    assert_eq!(check_txn_shape(&compare_empty, 2), Err(EtcdError::EmptyKey));
    assert_eq!(
        check_txn_shape(&txn(vec![get("a"), get("b"), get("c")], vec![]), 2),
        Err(EtcdError::TooManyOps)
    );
    let nested = |inner: pb::TxnRequest| pb::RequestOp {
        request: Some(Request::RequestTxn(inner)),
    };
    // 3 allowed, the parent lists 1: the nested txn may list 2, not 3.
    let ok = txn(vec![nested(txn(vec![get("a"), get("b")], vec![]))], vec![]);
    assert_eq!(check_txn_shape(&ok, 3), Ok(()));
    let too_many = txn(
        vec![nested(txn(vec![get("a"), get("b"), get("c")], vec![]))],
        vec![],
    );
    assert_eq!(check_txn_shape(&too_many, 3), Err(EtcdError::TooManyOps));
    let put = pb::RequestOp {
        request: Some(Request::RequestPut(pb::PutRequest {
            key: Bytes::from_static(b"k"),
            ignore_lease: true,
            lease: 5,
            ..Default::default()
        })),
    };
    assert_eq!(
        check_txn_shape(&txn(vec![], vec![nested(txn(vec![put], vec![]))]), 3),
        Err(EtcdError::LeaseProvided)
    );
}

/// The quota: a write whose estimated cost would bring the space in use to
/// the quota is refused, as is every write that adds data while the alarm
/// is raised (a txn that could put, whichever branch it takes; a lease);
/// deletes, read-only txns and compaction go on, and free space.
#[test]
fn the_quota_refuses_writes_that_add_data() {
    let mut c = Core::new(
        Limits {
            quota_bytes: 1000,
            ..Limits::default()
        },
        1,
    );
    put(&mut c, "a", &"x".repeat(400));
    assert_eq!(c.space_in_use(), 256 + 1 + 400);
    let big = pb::PutRequest {
        key: b("b"),
        value: b(&"x".repeat(100)),
        ..Default::default()
    };
    // 657 + 357 >= 1000.
    assert_eq!(c.put(&big).err(), Some(EtcdError::NoSpace));
    assert_eq!(
        c.set_nospace_alarm(true).mutations,
        vec![Mutation::NoSpaceAlarm(true)]
    );
    assert!(c.set_nospace_alarm(true).mutations.is_empty());
    let small = pb::PutRequest {
        key: b("c"),
        value: b("1"),
        ..Default::default()
    };
    assert_eq!(c.put(&small).err(), Some(EtcdError::NoSpace));
    assert_eq!(
        c.lease_grant(0, 60, Instant::now()).err(),
        Some(EtcdError::NoSpace)
    );
    let failing_put = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: b("nope"),
            target: CompareTarget::Value as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::Value(b("x"))),
            ..Default::default()
        }],
        failure: vec![pb::RequestOp {
            request: Some(Request::RequestPut(small.clone())),
        }],
        ..Default::default()
    };
    assert_eq!(c.txn(&failing_put).err(), Some(EtcdError::NoSpace));
    let read_only = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(Request::RequestRange(pb::RangeRequest {
                key: b("a"),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    assert!(c.txn(&read_only).is_ok());
    c.delete_range(&pb::DeleteRangeRequest {
        key: b("a"),
        ..Default::default()
    })
    .unwrap();
    let rev = c.revision();
    c.compact(rev, rev).unwrap();
    assert_eq!(c.space_in_use(), 0);
    assert_eq!(c.space_in_use(), c.recount_space());
    assert_eq!(
        c.put(&small).err(),
        Some(EtcdError::NoSpace),
        "still raised"
    );
    c.set_nospace_alarm(false);
    assert!(c.put(&big).is_ok());
    assert!(c.lease_grant(0, 60, Instant::now()).is_ok());
    assert_eq!(c.space_in_use(), c.recount_space());
}

/// A Range's answer is bounded in keys and bytes; a txn's ranges share the
/// bound; a sorted Range with a limit is measured by its page.
#[test]
fn range_answers_are_bounded() {
    let mut c = Core::new(
        Limits {
            max_range_keys: 2,
            max_range_bytes: 10,
            ..Limits::default()
        },
        1,
    );
    for (k, v) in [("a", "1"), ("b", "22"), ("c", "333")] {
        put(&mut c, k, v);
    }
    let range = |key: &str, end: &str, limit: i64| pb::RangeRequest {
        key: b(key),
        range_end: b(end),
        limit,
        ..Default::default()
    };
    let rev = c.revision();
    assert_eq!(
        c.range(&range("a", "d", 0), rev).err(),
        Some(EtcdError::RangeTooManyKeys { limit: 2 })
    );
    let two = c.range(&range("a", "d", 2), rev).unwrap();
    assert_eq!((two.kvs.len(), two.more, two.count), (2, true, 3));
    // b22 + c333 = 7 bytes fit; with a bigger value they do not.
    put(&mut c, "c", "3333333333");
    let rev = c.revision();
    assert_eq!(
        c.range(&range("b", "d", 0), rev).err(),
        Some(EtcdError::RangeTooLarge { limit: 10 })
    );
    let mut keys_only = range("b", "d", 0);
    keys_only.keys_only = true;
    assert_eq!(c.range(&keys_only, rev).unwrap().kvs.len(), 2);
    let mut sorted = range("a", "d", 1);
    sorted.sort_order = pb::range_request::SortOrder::Descend as i32;
    sorted.sort_target = pb::range_request::SortTarget::Value as i32;
    sorted.keys_only = true;
    let page = c.range(&sorted, rev).unwrap();
    assert_eq!(page.kvs[0].key, b("c"));
    let txn = pb::TxnRequest {
        success: vec![
            pb::RequestOp {
                request: Some(Request::RequestRange(range("a", "c", 0))),
            },
            pb::RequestOp {
                request: Some(Request::RequestRange(range("c", "", 0))),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        c.txn(&txn).err(),
        Some(EtcdError::RangeTooManyKeys { limit: 2 })
    );
}

/// A store file may hold history below its compaction point (the log is
/// folded lazily); restoring drops what compaction had dropped, so the
/// restored core keeps, and the quota counts, what the original did.
#[test]
fn restoring_below_the_compaction_point_keeps_what_compaction_kept() {
    let mut c = core();
    let mut log = Vec::new();
    for i in 0..30 {
        let k = format!("k{}", i % 4);
        let mut ms = put(&mut c, &k, &format!("v{i}"));
        if i % 7 == 6 {
            ms.extend(
                c.delete_range(&pb::DeleteRangeRequest {
                    key: b(&k),
                    ..Default::default()
                })
                .unwrap()
                .mutations,
            );
        }
        log.extend(ms.into_iter().filter_map(|m| match m {
            Mutation::Revision(r) => Some(r),
            _ => None,
        }));
    }
    let at = c.revision() - 5;
    c.compact(at, c.revision()).unwrap();
    let mut r = core();
    for rev in &log {
        r.restore_revision(rev.revision, rev.stored_events());
    }
    r.restore_revisions(c.revision(), at);
    assert_eq!(r.space_in_use(), c.space_in_use());
    assert_eq!(r.space_in_use(), r.recount_space());
    for k in 0..4 {
        let key = format!("k{k}");
        for rev in at..=c.revision() {
            assert_eq!(get_at(&r, &key, rev), get_at(&c, &key, rev), "{key}@{rev}");
        }
    }
    let all = KeyRange::new(b("\0"), b("\0"));
    let strip = |events: Vec<Event>| -> Vec<Event> {
        events
            .into_iter()
            .map(|e| Event { prev_kv: None, ..e })
            .collect()
    };
    assert_eq!(
        strip(r.history(&all, at, c.revision()).unwrap()),
        strip(c.history(&all, at, c.revision()).unwrap())
    );
}
