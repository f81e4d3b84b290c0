//! etcd 3.4's rule against a txn writing one key twice ("duplicate key
//! given in txn request"), checked on the request alone, before the
//! compares are read, so both branches are checked whichever is taken:
//! - within one branch (nested txns included), no key is put twice, and no
//!   key is put that a delete of the same branch covers, in either order;
//! - deletes may overlap each other;
//! - a nested txn may put the same key in its success and its failure
//!   branch (only one of them runs);
//! - a delete with range end `"\0"` (etcdctl's `--from-key`) is, as etcd
//!   checks it, the byte interval from its key up to `"\0"`, which holds no
//!   key; so it never conflicts with a put. The write itself still deletes
//!   every key from its key on; this only follows what etcd refuses.
//!
//! Checked by `tests/cases/txn_duplicates.case` against a real etcd. What it does not
//! do: apply anything, or check shapes other than duplicates.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::error::EtcdError;
use crate::proto::etcdserverpb as pb;

/// Refuses `req` if either of its branches writes a key twice.
pub(super) fn check_duplicates(req: &pb::TxnRequest) -> Result<(), EtcdError> {
    writes(&req.success)?;
    writes(&req.failure)?;
    Ok(())
}

/// A delete's keys as etcd's duplicate check sees them.
#[derive(Debug)]
struct Deleted {
    key: Bytes,
    /// Empty: the key alone.
    end: Bytes,
}

impl Deleted {
    fn covers(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == &self.key[..]
        } else {
            // A plain byte interval: an end at or below the key (`"\0"`
            // among them) covers nothing.
            k >= &self.key[..] && k < &self.end[..]
        }
    }
}

/// The keys `ops` put and the ranges they delete, nested txns included;
/// refused when a key is written twice.
fn writes(ops: &[pb::RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<Deleted>), EtcdError> {
    use pb::request_op::Request;
    let mut deleted: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                key: d.key.clone(),
                end: d.range_end.clone(),
            }),
            _ => None,
        })
        .collect();
    let mut put: BTreeSet<Bytes> = BTreeSet::new();
    let covered = |deleted: &[Deleted], k: &[u8]| deleted.iter().any(|d| d.covers(k));
    // Nested txns first: their puts against this branch's deletes and the
    // deletes of nested txns before them.
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (put_then, deleted_then) = writes(&t.success)?;
        let (put_else, deleted_else) = writes(&t.failure)?;
        for k in &put_then {
            if put.contains(k) || covered(&deleted, k) {
                return Err(EtcdError::DuplicateKey);
            }
            put.insert(k.clone());
        }
        for k in &put_else {
            if (put.contains(k) && !put_then.contains(k)) || covered(&deleted, k) {
                return Err(EtcdError::DuplicateKey);
            }
            put.insert(k.clone());
        }
        deleted.extend(deleted_then);
        deleted.extend(deleted_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if put.contains(&p.key) || covered(&deleted, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        put.insert(p.key.clone());
    }
    Ok((put, deleted))
}
