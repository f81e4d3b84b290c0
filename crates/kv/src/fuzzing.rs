//! Entry points for the fuzz targets in `tests/fuzz.rs`; not an API (hidden from the docs, no
//! stability promised). Each runs one input through the real code and checks what must hold
//! for any input, returning `Ok(signature)`, a short description of what the input did (the
//! driver keeps inputs with new signatures), or `Err(Violation)`, the check that broke with
//! what was seen. Panics are the driver's to catch.
//!
//! - [`requests`]: a sequence of gRPC messages (5-byte frame header, then the protobuf) of the
//!   KV, Lease and Watch services, each decoded into torc's generated request type, checked
//!   as the services check it (size, shape) and applied to one pure [`Core`] with small
//!   limits: as the server does, minus I/O and auth. Checks: a decoded request encodes and
//!   decodes back to itself; the space the quota counts always equals a recount; revisions
//!   never go back and the compaction point stays at or below them; no Range answers past its
//!   bounds; a write refused for space changes nothing, and while the NOSPACE alarm is raised
//!   no write adds data.
//! - [`authority`]: bytes through the HTTP/2 authority rewriter, read in chunks of the
//!   input's choosing. Checks: the output does not depend on the chunking; input without a
//!   `://` comes out unchanged; frames come out in the same number, order, types and streams;
//!   at most one frame of the largest accepted size is ever held back.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use prost::Message;
use tokio::io::{AsyncRead, ReadBuf};

use crate::authority::{AuthorityFix, MAX_FRAME_BYTES};
use crate::error::EtcdError;
use crate::mvcc::{Core, KeyRange, Limits};
use crate::proto::etcdserverpb as pb;

/// A check that broke: a bug in the MVCC core, the services' checks or the authority
/// rewriter. Revisions and space are shown as `(revision, bytes in use[, alarm raised])`.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    #[error("a decoded {request} does not decode again: {source}")]
    DecodesOnce {
        request: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{request} came back as {again}")]
    RoundTrip { request: String, again: String },
    #[error("a Range answered {keys} keys and {bytes} bytes, past its bounds")]
    RangePastBounds { keys: usize, bytes: usize },
    #[error("after compacting at {revision}, it is unreadable")]
    UnreadableAfterCompaction { revision: i64 },
    #[error("{request}: revisions went from {before:?} to {after:?}")]
    RevisionsWentBack {
        request: &'static str,
        before: (i64, u64, bool),
        after: (i64, u64),
    },
    #[error("{request}: the quota counts {counted} bytes, a recount {recounted}")]
    QuotaMiscounted {
        request: &'static str,
        counted: u64,
        recounted: u64,
    },
    #[error(
        "{request}: refused for space or under the alarm, yet it changed {before:?} to {after:?}"
    )]
    WroteWithoutSpace {
        request: &'static str,
        before: (i64, u64, bool),
        after: (i64, u64),
    },
    #[error("reading failed: {0}")]
    ReadFailed(#[source] std::io::Error),
    #[error("a slice reader never waits")]
    Waited,
    #[error("{bytes} bytes held back")]
    HeldBack { bytes: usize },
    #[error("the output depends on how the input was read")]
    DependsOnChunks,
    #[error("input without a URL was changed")]
    ChangedWithoutUrl,
    #[error("frames changed: {before:?} became {after:?}")]
    FramesChanged {
        before: Vec<(u8, u8, u32)>,
        after: Vec<(u8, u8, u32)>,
    },
}

/// The request kinds [`requests`] decodes, by the first byte of each item.
pub const REQUEST_KINDS: [&str; 9] = [
    "range",
    "put",
    "delete",
    "txn",
    "compact",
    "lease-grant",
    "lease-revoke",
    "lease-keep-alive",
    "watch",
];

/// Small bounds, so inputs reach them.
fn limits() -> Limits {
    Limits {
        max_txn_ops: 8,
        max_range_bytes: 512,
        max_range_keys: 6,
        quota_bytes: 4096,
    }
}

/// The largest request the services accept here (their `--max-request-bytes`).
const MAX_REQUEST_BYTES: usize = 2048;

/// One gRPC message of a length-prefixed stream: `None` when the framing is
/// bad (compressed without a codec, a length past the bytes), as tonic
/// refuses it before any decoding.
fn unframe(frame: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = frame.split_first()?;
    let (len, body) = rest.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    if compressed != 0 {
        return None;
    }
    body.get(..len)
}

/// Decodes `body` as `M`; checks the message survives encoding.
fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Result<Option<M>, Violation> {
    let Ok(m) = M::decode(body) else {
        return Ok(None);
    };
    let again =
        M::decode(m.encode_to_vec().as_slice()).map_err(|source| Violation::DecodesOnce {
            request: format!("{m:?}"),
            source,
        })?;
    if again != m {
        return Err(Violation::RoundTrip {
            request: format!("{m:?}"),
            again: format!("{again:?}"),
        });
    }
    if m.encoded_len() > MAX_REQUEST_BYTES {
        // The services refuse it (etcd's `request is too large`).
        return Ok(None);
    }
    Ok(Some(m))
}

fn outcome<T>(r: &Result<T, EtcdError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("")
            .into(),
    }
}

/// Checks a Range's answer against the bounds.
fn check_range(resp: &pb::RangeResponse, l: &Limits) -> Result<(), Violation> {
    let bytes: usize = resp
        .kvs
        .iter()
        .map(|kv| kv.key.len() + kv.value.len())
        .sum();
    if resp.kvs.len() > l.max_range_keys || bytes > l.max_range_bytes {
        return Err(Violation::RangePastBounds {
            keys: resp.kvs.len(),
            bytes,
        });
    }
    Ok(())
}

/// Runs `items` (`(kind, gRPC frame)`) through one core; see the module comment.
pub fn requests(items: &[(u8, Vec<u8>)]) -> Result<String, Violation> {
    let l = limits();
    let mut core = Core::new(l.clone(), 7);
    let now = std::time::Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    for (kind, frame) in items {
        let name = REQUEST_KINDS[usize::from(*kind) % REQUEST_KINDS.len()];
        let Some(body) = unframe(frame) else {
            seen.insert("decode".into());
            continue;
        };
        // The request decoded as its kind, or on to the next one.
        macro_rules! decoded {
            ($t:ty) => {
                match decode::<$t>(body)? {
                    Some(r) => r,
                    None => {
                        seen.insert("decode".into());
                        continue;
                    }
                }
            };
        }
        let before = (core.revision(), core.space_in_use(), core.nospace_alarm());
        let adds_data;
        let result = match name {
            "range" => {
                adds_data = false;
                let r = decoded!(pb::RangeRequest);
                let resp = core.range(&r, core.revision());
                if let Ok(resp) = &resp {
                    check_range(resp, &l)?;
                }
                outcome(&resp)
            }
            "put" => {
                adds_data = true;
                let r = decoded!(pb::PutRequest);
                let done = crate::mvcc::check_put_shape(&r).and_then(|()| core.put(&r));
                outcome(&done)
            }
            "delete" => {
                adds_data = false;
                let r = decoded!(pb::DeleteRangeRequest);
                outcome(&core.delete_range(&r))
            }
            "txn" => {
                let r = decoded!(pb::TxnRequest);
                adds_data = crate::mvcc::txn_cost(&r) > 0;
                let done =
                    crate::mvcc::check_txn_shape(&r, l.max_txn_ops).and_then(|()| core.txn(&r));
                if let Ok(done) = &done {
                    for op in &done.response.responses {
                        if let Some(pb::response_op::Response::ResponseRange(range)) = &op.response
                        {
                            check_range(range, &l)?;
                        }
                    }
                }
                outcome(&done)
            }
            "compact" => {
                adds_data = false;
                let r = decoded!(pb::CompactionRequest);
                let done = core.compact(r.revision, core.revision());
                if done.is_ok() {
                    let at = pb::RangeRequest {
                        key: vec![0].into(),
                        range_end: vec![0].into(),
                        revision: r.revision,
                        count_only: true,
                        ..Default::default()
                    };
                    if core.range(&at, core.revision()).is_err() {
                        return Err(Violation::UnreadableAfterCompaction {
                            revision: r.revision,
                        });
                    }
                }
                outcome(&done)
            }
            "lease-grant" => {
                adds_data = true;
                let r = decoded!(pb::LeaseGrantRequest);
                outcome(&core.lease_grant(r.id, r.ttl, now))
            }
            "lease-revoke" => {
                adds_data = false;
                let r = decoded!(pb::LeaseRevokeRequest);
                outcome(&core.lease_revoke(r.id))
            }
            "lease-keep-alive" => {
                adds_data = false;
                let r = decoded!(pb::LeaseKeepAliveRequest);
                match core.lease_keep_alive(r.id, now) {
                    Some(_) => "ok".into(),
                    None => "unknown".into(),
                }
            }
            _ => {
                adds_data = false;
                let r = decoded!(pb::WatchRequest);
                match r.request_union {
                    Some(pb::watch_request::RequestUnion::CreateRequest(c)) => {
                        let range = KeyRange::new(c.key, c.range_end);
                        let from = c.start_revision.max(1);
                        outcome(&core.history(&range, from, core.revision()))
                    }
                    _ => "other".into(),
                }
            }
        };
        if result == "NoSpace" {
            // As the services: raise the alarm.
            core.set_nospace_alarm(true);
        }
        let after = (core.revision(), core.space_in_use());
        if after.0 < before.0 || core.compact_revision() > core.revision() {
            return Err(Violation::RevisionsWentBack {
                request: name,
                before,
                after,
            });
        }
        if core.space_in_use() != core.recount_space() {
            return Err(Violation::QuotaMiscounted {
                request: name,
                counted: core.space_in_use(),
                recounted: core.recount_space(),
            });
        }
        if adds_data && (before.2 || result == "NoSpace") && after != (before.0, before.1) {
            return Err(Violation::WroteWithoutSpace {
                request: name,
                before,
                after,
            });
        }
        if result == "ok" && core.nospace_alarm() && name == "compact" {
            // Compaction frees space; the alarm stays until disarmed.
            core.set_nospace_alarm(false);
        }
        // Coarse, so that the corpus keeps inputs that reach a new outcome,
        // not every new mix of them.
        let group = match result.as_str() {
            "ok" | "other" | "unknown" => continue,
            "RangeTooLarge" | "RangeTooManyKeys" | "NoSpace" | "TooManyOps" => result,
            "Compacted" | "FutureRevision" => "revision".into(),
            "LeaseNotFound" | "LeaseExists" | "LeaseTtlTooLarge" => "lease".into(),
            _ => "shape".into(),
        };
        seen.insert(group);
    }
    seen.insert(format!("alarm:{}", core.nospace_alarm()));
    Ok(seen.into_iter().collect::<Vec<_>>().join(" "))
}

/// Reads everything `fix` hands on, `chunks` deciding how much each read
/// asks for.
fn read_all(input: &[u8], chunks: &[u8]) -> Result<Vec<u8>, Violation> {
    let mut fix = AuthorityFix::new(input);
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut cx = Context::from_waker(Waker::noop());
    let mut i = 0;
    loop {
        let want = chunks
            .get(i % chunks.len().max(1))
            .map_or(4096, |&c| usize::from(c) + 1);
        i += 1;
        let mut buf = vec![0u8; want];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut fix).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return Ok(out),
            Poll::Ready(Ok(())) => out.extend_from_slice(read.filled()),
            Poll::Ready(Err(e)) => return Err(Violation::ReadFailed(e)),
            Poll::Pending => return Err(Violation::Waited),
        }
        // Held back: at most one whole frame plus one read of the input.
        if fix.held_back() > MAX_FRAME_BYTES + 9 + 8192 {
            return Err(Violation::HeldBack {
                bytes: fix.held_back(),
            });
        }
    }
}

/// The frames after the preface: (type, flags without PADDED, stream).
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32)> {
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(h) = bytes.get(at..at + 9) {
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        out.push((
            h[3],
            h[4] & !0x8,
            u32::from_be_bytes([h[5], h[6], h[7], h[8]]),
        ));
        at += 9 + len;
    }
    out
}

/// Runs `input` through the authority rewriter; see the module comment.
pub fn authority(input: &[u8], chunks: &[u8]) -> Result<String, Violation> {
    let whole = read_all(input, &[255])?;
    let chunked = read_all(input, chunks)?;
    if whole != chunked {
        return Err(Violation::DependsOnChunks);
    }
    let has_url = input.windows(3).any(|w| w == b"://");
    if !has_url && whole != input {
        return Err(Violation::ChangedWithoutUrl);
    }
    let changed = whole != input;
    if changed && frames(&whole) != frames(input) {
        return Err(Violation::FramesChanged {
            before: frames(input),
            after: frames(&whole),
        });
    }
    let frames = frames(input);
    let has = |kind: u8| frames.iter().any(|f| f.0 == kind);
    Ok(format!(
        "changed:{changed} headers:{} continuation:{} frames:{}",
        has(0x1),
        has(0x9),
        frames.len().min(4)
    ))
}
