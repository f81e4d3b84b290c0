//! Fuzz targets on the stable toolchain: `kv-request` (gRPC messages of the KV, Lease and Watch
//! services, decoded and applied to the MVCC core with small bounds) and `kv-authority` (bytes
//! through the HTTP/2 `:authority` rewriter, read in chunks). The checks are in
//! `torc_kv::fuzzing`.
//!
//! The driver (mutation, corpus, the test-suite and long runs, crash files) is `torc-fuzz`;
//! this file makes structured inputs from its bytes: requests built field by field from a few
//! keys, values of every size, ranges, sort orders, limits, revisions, leases and nested txns,
//! encoded with prost and framed as gRPC, sometimes with their bytes or frame damaged; HTTP/2
//! connection starts with SETTINGS, HEADERS (padded, with priority, split over CONTINUATION,
//! oversized) whose header blocks hold `:authority` URLs, Huffman strings and table updates.
//! `scripts/fuzz kv-request 300` runs one for as long as asked.

mod common;

use arbitrary::Unstructured;
use common::{H2_PREFACE, h2_frame};
use prost::Message;
use torc_fuzz::{Outcome, Target};
use torc_kv::fuzzing;
use torc_kv_client::proto::etcdserverpb as pb;

const TARGETS: &[Target] = &[
    Target {
        name: "kv-request",
        run: run_requests,
        dictionary: &[
            b"\x00\x00\x00\x00\x05",
            b"\x0a\x01a",
            b"\x12\x01\x00",
            b"\x18\x01",
            b"\x20\x02",
            b"\x28\xff\xff\xff\xff\x0f",
            b"\x48\x01",
            b"\x50\x01",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ],
        ci_inputs: 4_000,
        crate_dir: env!("CARGO_MANIFEST_DIR"),
    },
    Target {
        name: "kv-authority",
        run: run_authority,
        dictionary: &[
            b"\x00\x00\x00\x01\x04\x00\x00\x00\x01",
            b"\x00\x00\x00\x09\x04\x00\x00\x00\x01",
            b"\x41\x15http://127.0.0.1:2379",
            b"\x01\x15http://127.0.0.1:2379",
            b"\x10\x0a:authority",
            b"\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff",
            b"\x3f\xe1\x1f",
            b"\x7f\x81\x01",
            b"://",
            b"\xff\xff\xff",
        ],
        ci_inputs: 4_000,
        crate_dir: env!("CARGO_MANIFEST_DIR"),
    },
];

const KEYS: &[&[u8]] = &[
    b"a", b"b", b"k/1", b"k/2", b"k/3", b"k0", b"\0", b"\xff", b"",
];

fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<bytes::Bytes> {
    Ok(if u.ratio(7, 8)? {
        bytes::Bytes::from_static(u.choose(KEYS)?)
    } else {
        let n = u.int_in_range(0..=40)?;
        bytes::Bytes::copy_from_slice(u.bytes(n)?)
    })
}

fn value(u: &mut Unstructured<'_>) -> arbitrary::Result<bytes::Bytes> {
    let n = *u.choose(&[0usize, 1, 3, 60, 200, 700, 1500, 3000])?;
    Ok(vec![u.arbitrary::<u8>()?; n].into())
}

fn revision(u: &mut Unstructured<'_>) -> arbitrary::Result<i64> {
    Ok(*u.choose(&[0i64, 1, 2, 3, 5, 8, 13, 100, -1, i64::MAX, i64::MIN])?)
}

fn range(u: &mut Unstructured<'_>) -> arbitrary::Result<pb::RangeRequest> {
    Ok(pb::RangeRequest {
        key: key(u)?,
        range_end: if u.ratio(1, 2)? {
            key(u)?
        } else {
            Default::default()
        },
        limit: *u.choose(&[0i64, 1, 2, 5, 6, 7, 100, -1])?,
        revision: revision(u)?,
        sort_order: u.int_in_range(0..=3)?,
        sort_target: u.int_in_range(0..=5)?,
        serializable: u.arbitrary()?,
        keys_only: u.ratio(1, 4)?,
        count_only: u.ratio(1, 8)?,
        min_mod_revision: if u.ratio(1, 8)? { revision(u)? } else { 0 },
        max_mod_revision: if u.ratio(1, 8)? { revision(u)? } else { 0 },
        min_create_revision: if u.ratio(1, 8)? { revision(u)? } else { 0 },
        max_create_revision: if u.ratio(1, 8)? { revision(u)? } else { 0 },
    })
}

fn put(u: &mut Unstructured<'_>) -> arbitrary::Result<pb::PutRequest> {
    Ok(pb::PutRequest {
        key: key(u)?,
        value: value(u)?,
        lease: if u.ratio(1, 8)? {
            u.int_in_range(0..=3)?
        } else {
            0
        },
        prev_kv: u.arbitrary()?,
        ignore_value: u.ratio(1, 10)?,
        ignore_lease: u.ratio(1, 10)?,
    })
}

fn delete(u: &mut Unstructured<'_>) -> arbitrary::Result<pb::DeleteRangeRequest> {
    Ok(pb::DeleteRangeRequest {
        key: key(u)?,
        range_end: if u.ratio(1, 2)? {
            key(u)?
        } else {
            Default::default()
        },
        prev_kv: u.arbitrary()?,
    })
}

fn txn(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<pb::TxnRequest> {
    let ops = |u: &mut Unstructured<'_>| -> arbitrary::Result<Vec<pb::RequestOp>> {
        let n = u.int_in_range(0..=4)?;
        (0..n)
            .map(|_| {
                use pb::request_op::Request;
                let request = match u.int_in_range(0..=4)? {
                    0 => Some(Request::RequestRange(range(u)?)),
                    1 | 2 => Some(Request::RequestPut(put(u)?)),
                    3 => Some(Request::RequestDeleteRange(delete(u)?)),
                    _ if depth < 3 => Some(Request::RequestTxn(txn(u, depth + 1)?)),
                    _ => None,
                };
                Ok(pb::RequestOp { request })
            })
            .collect()
    };
    let compares = (0..u.int_in_range(0..=2)?)
        .map(|_| {
            use pb::compare::TargetUnion;
            let target = u.int_in_range(0..=4)?;
            Ok(pb::Compare {
                result: u.int_in_range(0..=4)?,
                target,
                key: key(u)?,
                range_end: if u.ratio(1, 4)? {
                    key(u)?
                } else {
                    Default::default()
                },
                target_union: Some(match target {
                    0 => TargetUnion::Version(revision(u)?),
                    1 => TargetUnion::CreateRevision(revision(u)?),
                    2 => TargetUnion::ModRevision(revision(u)?),
                    3 => TargetUnion::Value(value(u)?),
                    _ => TargetUnion::Lease(revision(u)?),
                }),
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    Ok(pb::TxnRequest {
        compare: compares,
        success: ops(u)?,
        failure: ops(u)?,
    })
}

/// One request of `kind` (see `fuzzing::REQUEST_KINDS`), encoded.
fn message(u: &mut Unstructured<'_>, kind: usize) -> arbitrary::Result<Vec<u8>> {
    Ok(match kind {
        0 => range(u)?.encode_to_vec(),
        1 => put(u)?.encode_to_vec(),
        2 => delete(u)?.encode_to_vec(),
        3 => txn(u, 0)?.encode_to_vec(),
        4 => pb::CompactionRequest {
            revision: revision(u)?,
            physical: u.arbitrary()?,
        }
        .encode_to_vec(),
        5 => pb::LeaseGrantRequest {
            ttl: *u.choose(&[0i64, 1, 60, 9_000_000_001, -5])?,
            id: u.int_in_range(0..=3)?,
        }
        .encode_to_vec(),
        6 => pb::LeaseRevokeRequest {
            id: u.int_in_range(0..=3)?,
        }
        .encode_to_vec(),
        7 => pb::LeaseKeepAliveRequest {
            id: u.int_in_range(0..=3)?,
        }
        .encode_to_vec(),
        _ => pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: key(u)?,
                    range_end: if u.ratio(1, 2)? {
                        key(u)?
                    } else {
                        Default::default()
                    },
                    start_revision: revision(u)?,
                    ..Default::default()
                },
            )),
        }
        .encode_to_vec(),
    })
}

fn requests(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<(u8, Vec<u8>)>> {
    let n = u.int_in_range(1..=24)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let kind: u8 = u.arbitrary()?;
        let kinds = fuzzing::REQUEST_KINDS.len();
        let mut body = if u.ratio(7, 8)? {
            message(u, usize::from(kind) % kinds)?
        } else {
            let n = u.int_in_range(0..=64)?;
            u.bytes(n)?.to_vec()
        };
        if u.ratio(1, 8)? && !body.is_empty() {
            // Damage: a flipped byte or a cut.
            let at = u.choose_index(body.len())?;
            if u.arbitrary()? {
                body[at] ^= u.arbitrary::<u8>()? | 1;
            } else {
                body.truncate(at);
            }
        }
        let mut frame = vec![u8::from(u.ratio(1, 32)?)];
        let len = if u.ratio(15, 16)? {
            body.len() as u32
        } else {
            u.arbitrary()?
        };
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        items.push((kind, frame));
    }
    Ok(items)
}

fn run_requests(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let Ok(items) = requests(&mut u) else {
        return Ok("no input".into());
    };
    Ok(fuzzing::requests(&items)?.into())
}

/// An HPACK string literal, raw or (claimed) Huffman.
fn literal(u: &mut Unstructured<'_>, out: &mut Vec<u8>, text: &[u8]) -> arbitrary::Result<()> {
    let huffman = if u.ratio(1, 4)? { 0x80 } else { 0 };
    if text.len() < 127 {
        out.push(huffman | text.len() as u8);
    } else {
        out.push(huffman | 0x7f);
        let mut n = text.len() - 127;
        while n >= 128 {
            out.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(text);
    Ok(())
}

/// A header block with `:authority` fields among others.
fn header_block(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    const AUTHORITIES: &[&[u8]] = &[
        b"http://127.0.0.1:2379",
        b"https://h:1/x/y",
        b"127.0.0.1:2379",
        b"://",
        b"a://b://c",
        b"",
    ];
    let mut block = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        match u.int_in_range(0..=6)? {
            // Indexed.
            0 => block.push(0x80 | u.int_in_range(1..=70)?),
            // :authority by static index, with or without indexing.
            1 | 2 => {
                block.push(*u.choose(&[0x41u8, 0x01, 0x11])?);
                let text = *u.choose(AUTHORITIES)?;
                literal(u, &mut block, text)?;
            }
            // :authority by name.
            3 => {
                block.push(*u.choose(&[0x40u8, 0x00, 0x10])?);
                literal(u, &mut block, b":authority")?;
                let text = *u.choose(AUTHORITIES)?;
                literal(u, &mut block, text)?;
            }
            // Dynamic table size update.
            4 => block.extend_from_slice(u.choose(&[&[0x20u8][..], &[0x3f, 0xe1, 0x1f]])?),
            5 => {
                block.push(0x40);
                literal(u, &mut block, b"te")?;
                literal(u, &mut block, b"trailers")?;
            }
            _ => {
                let n = u.int_in_range(0..=8)?;
                block.extend_from_slice(u.bytes(n)?);
            }
        }
    }
    Ok(block)
}

fn connection(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let mut out = if u.ratio(15, 16)? {
        H2_PREFACE.to_vec()
    } else {
        let n = u.int_in_range(0..=24)?;
        u.bytes(n)?.to_vec()
    };
    out.extend(h2_frame(0x4, 0, 0, 0));
    for _ in 0..u.int_in_range(0..=5)? {
        let stream: u32 = *u.choose(&[1u32, 3, 0, 0x8000_0001])?;
        match u.int_in_range(0..=5)? {
            0..=2 => {
                let block = header_block(u)?;
                let padded = u.ratio(1, 4)?;
                let priority = u.ratio(1, 4)?;
                let end_headers = u.ratio(5, 6)?;
                let pad = if padded { u.int_in_range(0..=8)? } else { 0 };
                let mut payload = Vec::new();
                if padded {
                    // Sometimes more padding than payload.
                    payload.push(if u.ratio(1, 8)? { 0xff } else { pad });
                }
                if priority {
                    payload.extend_from_slice(&[0, 0, 0, 3, 16]);
                }
                payload.extend_from_slice(&block);
                payload.extend(std::iter::repeat_n(0, usize::from(pad)));
                let flags = 0x1
                    | if end_headers { 0x4 } else { 0 }
                    | if padded { 0x8 } else { 0 }
                    | if priority { 0x20 } else { 0 };
                let len = if u.ratio(1, 16)? {
                    *u.choose(&[16_385usize, 0xff_ffff, 0])?
                } else {
                    payload.len()
                };
                out.extend(h2_frame(0x1, flags, stream, len));
                out.extend_from_slice(&payload);
                if !end_headers {
                    let block = header_block(u)?;
                    out.extend(h2_frame(0x9, 0x4, stream, block.len()));
                    out.extend_from_slice(&block);
                }
            }
            3 => {
                let n = u.int_in_range(0..=32)?;
                let data = u.bytes(n)?;
                out.extend(h2_frame(0x0, 0x1, stream, data.len()));
                out.extend_from_slice(data);
            }
            _ => {
                let n = u.int_in_range(0..=16)?;
                let kind = u.int_in_range(0..=12)?;
                let data = u.bytes(n)?;
                out.extend(h2_frame(kind, u.arbitrary()?, stream, data.len()));
                out.extend_from_slice(data);
            }
        }
    }
    if u.ratio(1, 8)? {
        let n = u.int_in_range(0..=9)?;
        out.truncate(out.len().saturating_sub(n));
    }
    Ok(out)
}

fn run_authority(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let Ok(input) = connection(&mut u) else {
        return Ok("no input".into());
    };
    let n = u.len().min(16);
    let chunks = u.bytes(n).unwrap_or_default().to_vec();
    Ok(fuzzing::authority(&input, &chunks)?.into())
}

#[test]
fn kv_request() {
    torc_fuzz::ci_run(TARGETS, "kv-request", 0x5eed_0101, 10);
}

#[test]
fn kv_authority() {
    torc_fuzz::ci_run(TARGETS, "kv-authority", 0x5eed_0102, 5);
}

/// The long run `scripts/fuzz` starts (see `torc_fuzz::long_run`).
#[test]
#[ignore = "run by scripts/fuzz"]
fn long_run() {
    torc_fuzz::long_run(TARGETS);
}
