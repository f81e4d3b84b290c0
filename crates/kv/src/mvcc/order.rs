//! How a Range picks, orders and pages its answer, as etcd 3.4's server
//! does (its `Range` applier), checked against a real etcd 3.4 by
//! `tests/cases/sort_limit.case` and `tests/compat.rs`.
//!
//! etcd's rules, which this module keeps:
//! - The store yields keys in ascending key order. When the request asks
//!   for no order (`NONE`) and filters on no revision (`min_`/`max_`
//!   `mod`/`create_revision`), only the first `limit + 1` keys are fetched;
//!   otherwise every key in the range is fetched, filtered, sorted, and then
//!   cut to `limit`.
//! - A target other than `KEY` with order `NONE` is sorted `ASCEND`, but
//!   only after the limited fetch: `--sort-by=VALUE --limit=2` answers two
//!   of the first three keys, not the two smallest values of the range.
//! - `more` says that keys were cut; `count` counts every key in the range
//!   at the read revision, filters aside; a `count_only` Range has no keys
//!   and `more` false.
//! - Equal sort values keep their key order, in `DESCEND` too (etcd sorts
//!   with the comparison reversed, not the result).
//!
//! What it is not: a copy of Go's unstable sort. When more than 12 keys
//! are sorted and some share a sort value, etcd's order among those (and
//! with a limit, which of them are kept) is an artifact of Go's
//! pattern-defeating quicksort; torc keeps key order there, as etcd itself
//! does for up to 12 keys (which Go sorts by insertion, a stable sort).
//! TODO-correctness: match that tie order too, if a client ever relies on it.

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::KeyValue;
use pb::range_request::{SortOrder, SortTarget};

/// What a Range request asks of its answer's order and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RangeOrder {
    target: SortTarget,
    /// The order applied: `NONE` only with target `KEY`.
    order: SortOrder,
    /// Every key in the range is fetched before the answer is cut to
    /// `limit`; else only the first `limit + 1` in key order.
    fetch_all: bool,
    /// The most keys answered (`usize::MAX`: no limit).
    pub(super) limit: usize,
}

impl RangeOrder {
    pub(super) fn of(req: &pb::RangeRequest) -> RangeOrder {
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let asked = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let filters = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let order = if target != SortTarget::Key && asked == SortOrder::None {
            SortOrder::Ascend
        } else {
            asked
        };
        RangeOrder {
            target,
            order,
            fetch_all: asked != SortOrder::None || filters,
            limit: if req.limit > 0 {
                usize::try_from(req.limit).unwrap_or(usize::MAX)
            } else {
                usize::MAX
            },
        }
    }

    /// Whether the fetched keys are reordered (by key ascending they are
    /// already in order).
    pub(super) fn sorts(&self) -> bool {
        !(self.order == SortOrder::None
            || (self.target == SortTarget::Key && self.order == SortOrder::Ascend))
    }

    /// How many keys (in key order, after the filters) are fetched before
    /// sorting.
    pub(super) fn fetch(&self) -> usize {
        if self.fetch_all {
            usize::MAX
        } else {
            self.limit.saturating_add(1)
        }
    }

    /// Sorts the fetched keys (given in key order), ties kept in key order,
    /// and cuts them to the limit; returns whether any were cut.
    pub(super) fn sort_and_cut(&self, kvs: &mut Vec<&KeyValue>) -> bool {
        if self.sorts() {
            let by = |a: &KeyValue, b: &KeyValue| match self.target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            // A stable sort: equal values stay in key order either way.
            if self.order == SortOrder::Descend {
                kvs.sort_by(|a, b| by(b, a));
            } else {
                kvs.sort_by(|a, b| by(a, b));
            }
        }
        let cut = kvs.len() > self.limit;
        kvs.truncate(self.limit);
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, version: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec().into(),
            version,
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    fn order(target: SortTarget, order: SortOrder, limit: i64) -> RangeOrder {
        RangeOrder::of(&pb::RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            limit,
            ..Default::default()
        })
    }

    #[test]
    fn what_is_fetched_and_sorted() {
        use SortOrder::{Ascend, Descend, None};
        use SortTarget::{Key, Value};
        // By key ascending, or no order: the first limit + 1, unsorted.
        for o in [order(Key, None, 2), order(Key, Ascend, 2)] {
            assert!(!o.sorts());
        }
        assert_eq!(order(Key, None, 2).fetch(), 3);
        // Another target with no order: sorted, but from limit + 1 keys.
        let o = order(Value, None, 2);
        assert!(o.sorts());
        assert_eq!(o.fetch(), 3);
        // An order asked for: everything, then sorted.
        assert_eq!(order(Value, Ascend, 2).fetch(), usize::MAX);
        assert_eq!(order(Key, Descend, 2).fetch(), usize::MAX);
        // A revision filter fetches everything too.
        let filtered = RangeOrder::of(&pb::RangeRequest {
            min_mod_revision: 3,
            limit: 2,
            ..Default::default()
        });
        assert_eq!(filtered.fetch(), usize::MAX);
        assert_eq!(order(Value, None, 0).fetch(), usize::MAX);
    }

    #[test]
    fn ties_keep_key_order_both_ways() {
        let (a, b, c, d) = (
            kv("a", 1, "y"),
            kv("b", 2, "x"),
            kv("c", 1, "y"),
            kv("d", 2, "z"),
        );
        let keys = |kvs: &[&KeyValue]| {
            kvs.iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut kvs = vec![&a, &b, &c, &d];
        assert!(!order(SortTarget::Version, SortOrder::Descend, 0).sort_and_cut(&mut kvs));
        assert_eq!(keys(&kvs), "b,d,a,c");
        let mut kvs = vec![&a, &b, &c, &d];
        assert!(order(SortTarget::Value, SortOrder::Descend, 3).sort_and_cut(&mut kvs));
        assert_eq!(keys(&kvs), "d,a,c");
        let mut kvs = vec![&a, &b, &c, &d];
        assert!(order(SortTarget::Version, SortOrder::Ascend, 3).sort_and_cut(&mut kvs));
        assert_eq!(keys(&kvs), "a,c,b");
    }
}
