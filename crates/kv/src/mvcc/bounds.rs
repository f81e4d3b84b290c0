//! The bounds of the core: request limits (etcd's `--max-txn-ops`), a
//! Range's answer (torc's own), and the storage quota's cost estimates
//! (etcd's `--quota-backend-bytes`, counted as etcd's `etcdserver/quota.go`
//! estimates).

use crate::error::EtcdError;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::KeyValue;

/// Bounds on requests and on the data, as etcd's `--max-txn-ops` and
/// `--quota-backend-bytes`, and torc's own on a Range's answer.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_txn_ops: usize,
    /// Most bytes of keys and values one Range (or one txn's ranges
    /// together) may answer with.
    pub max_range_bytes: usize,
    /// Most keys one Range (or one txn's ranges together) may answer with.
    pub max_range_keys: usize,
    /// The storage quota: writes that would bring [`Core::space_in_use`](crate::mvcc::Core::space_in_use)
    /// to it or past it are refused with NOSPACE (0: no quota).
    pub quota_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_txn_ops: 128,
            max_range_bytes: DEFAULT_MAX_RANGE_BYTES,
            max_range_keys: DEFAULT_MAX_RANGE_KEYS,
            quota_bytes: DEFAULT_QUOTA_BYTES,
        }
    }
}

/// Default of [`Limits::max_range_bytes`].
pub const DEFAULT_MAX_RANGE_BYTES: usize = 64 << 20;
/// Default of [`Limits::max_range_keys`].
pub const DEFAULT_MAX_RANGE_KEYS: usize = 100_000;
/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// etcd's cost estimates (`etcdserver/quota.go`), which the quota counts
/// in: a key's metadata ...
pub(super) const KV_OVERHEAD: u64 = 256;
/// ... and a lease.
pub(super) const LEASE_OVERHEAD: u64 = 64;

/// What the quota counts for one stored version: etcd's `costPut`.
pub(super) fn version_cost(kv: &KeyValue) -> u64 {
    KV_OVERHEAD + kv.key.len() as u64 + kv.value.len() as u64
}

/// What a put adds, as etcd estimates it before the write.
pub(super) fn put_cost(req: &pb::PutRequest) -> u64 {
    KV_OVERHEAD + req.key.len() as u64 + req.value.len() as u64
}

/// What a txn adds: the puts of its costlier branch (nested txns
/// included), as etcd's `costTxn`.
pub(crate) fn txn_cost(req: &pb::TxnRequest) -> u64 {
    use pb::request_op::Request;
    let branch = |ops: &[pb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Request::RequestPut(p)) => put_cost(p),
                Some(Request::RequestTxn(t)) => txn_cost(t),
                _ => 0,
            })
            .sum()
    };
    branch(&req.success).max(branch(&req.failure))
}

/// What a Range may still add to its answer (a txn's ranges share one).
#[derive(Clone, Copy, Debug)]
pub(super) struct RangeBudget {
    bytes: usize,
    keys: usize,
}

impl RangeBudget {
    pub(super) fn of(limits: &Limits) -> RangeBudget {
        RangeBudget {
            bytes: limits.max_range_bytes,
            keys: limits.max_range_keys,
        }
    }

    pub(super) fn unbounded() -> RangeBudget {
        RangeBudget {
            bytes: usize::MAX,
            keys: usize::MAX,
        }
    }

    /// Takes one key-value of `bytes` bytes; the error names the limit
    /// (from `limits`) it would pass.
    pub(super) fn take(&mut self, bytes: usize, limits: &Limits) -> Result<(), EtcdError> {
        if self.keys == 0 {
            return Err(EtcdError::RangeTooManyKeys {
                limit: limits.max_range_keys,
            });
        }
        if bytes > self.bytes {
            return Err(EtcdError::RangeTooLarge {
                limit: limits.max_range_bytes,
            });
        }
        self.keys -= 1;
        self.bytes -= bytes;
        Ok(())
    }
}
