//! Key-range permissions: which keys a user may read and write, merged from
//! the permissions of its roles, and the checks etcd 3.4 makes with them
//! (`auth/range_perm_cache.go`, over `pkg/adt`'s intervals). Pure: no I/O, no
//! clock.
//!
//! Keys compare as etcd's "affine" byte strings: the empty string stands
//! for the end of the key space, above every key. A permission is an
//! interval `[begin, end)`:
//! - a single key `k` (`range_end` empty) is `[k, k + "\0")`;
//! - `range_end == "\0"` (etcdctl `--prefix ""`, `--from-key`) is
//!   `[k, end of key space)`;
//! - otherwise `[k, range_end)`.
//!
//! A request for one key (`range_end` empty) is allowed when any interval
//! overlaps that key's interval; a request for a range is allowed when the
//! union of the intervals covers the whole range (etcd's `Contains`).
//! Overlap is etcd's asymmetric `Interval.Compare`, kept as is so edge
//! cases (an empty key, an empty range) are decided as etcd decides them.

use std::cmp::Ordering;

use crate::proto::authpb::{Permission, permission::Type as PermType};

/// A key bound in etcd's affine order: the empty string is the largest.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bound(Vec<u8>);

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0.is_empty(), other.0.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.0.cmp(&other.0),
        }
    }
}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `[begin, end)` in affine order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    begin: Bound,
    end: Bound,
}

impl Interval {
    /// The interval of a single key.
    fn point(key: &[u8]) -> Interval {
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            begin: Bound(key.to_vec()),
            end: Bound(end),
        }
    }

    /// `[key, end)`, where an `end` of "\0" (or empty) is the end of the key
    /// space.
    fn range(key: &[u8], end: &[u8]) -> Interval {
        let end = if end == b"\0" {
            Vec::new()
        } else {
            end.to_vec()
        };
        Interval {
            begin: Bound(key.to_vec()),
            end: Bound(end),
        }
    }

    /// etcd's `Interval.Compare(other) == 0`: `self` is neither wholly left
    /// of `other` nor at or after its end.
    fn overlaps(&self, other: &Interval) -> bool {
        let left_of = self.begin < other.begin && self.end <= other.begin;
        let right_of = self.begin >= other.end;
        !left_of && !right_of
    }
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One user's merged permissions (etcd's `unifiedRangePermissions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPermissions {
    read: Vec<Interval>,
    write: Vec<Interval>,
}

impl UserPermissions {
    /// Merges the permissions of a user's roles.
    pub fn merge<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> UserPermissions {
        let mut out = UserPermissions::default();
        for p in perms {
            let ivl = if p.range_end.is_empty() {
                Interval::point(&p.key)
            } else {
                Interval::range(&p.key, &p.range_end)
            };
            match PermType::try_from(p.perm_type) {
                Ok(PermType::Read) => out.read.push(ivl),
                Ok(PermType::Write) => out.write.push(ivl),
                Ok(PermType::Readwrite) => {
                    out.read.push(ivl.clone());
                    out.write.push(ivl);
                }
                // A type this build does not know grants nothing.
                Err(_) => {}
            }
        }
        for list in [&mut out.read, &mut out.write] {
            list.sort_by(|a, b| a.begin.cmp(&b.begin).then_with(|| a.end.cmp(&b.end)));
        }
        out
    }

    /// Whether `access` to `key` (`range_end` empty) or to the range
    /// `[key, range_end)` (`"\0"`: every key from `key` on) is allowed.
    pub fn allows(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        let ivls = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            let pt = Interval::point(key);
            return ivls.iter().any(|i| pt.overlaps(i));
        }
        covers(ivls, &Interval::range(key, range_end))
    }
}

/// etcd's `IntervalTree.Contains`: the intervals overlapping `q`, in order
/// of their start, leave no gap and reach from `q`'s start to its end.
fn covers(sorted: &[Interval], q: &Interval) -> bool {
    let mut reach: Option<(&Bound, &Bound)> = None; // (min begin, max end)
    for ivl in sorted.iter().filter(|i| q.overlaps(i)) {
        reach = Some(match reach {
            None => (&ivl.begin, &ivl.end),
            Some((_, max_end)) if *max_end < ivl.begin => return false,
            Some((min_begin, max_end)) => (min_begin, max_end.max(&ivl.end)),
        });
    }
    reach.is_some_and(|(min_begin, max_end)| *max_end >= q.end && *min_begin <= q.begin)
}

/// etcd (3.4.25 on) refuses to grant a permission on a range
/// that selects nothing: `key` must be set, and `range_end` empty (one key),
/// `"\0"` (every key from `key` on), or above `key`.
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    range_end.is_empty() || range_end == b"\0" || Bound(key.to_vec()) < Bound(range_end.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
        }
    }

    fn user(perms: &[Permission]) -> UserPermissions {
        UserPermissions::merge(perms)
    }

    #[test]
    fn a_single_key_permission_allows_that_key_only() {
        let u = user(&[perm(PermType::Read, "/a", "")]);
        assert!(u.allows(Access::Read, b"/a", b""));
        assert!(!u.allows(Access::Read, b"/a0", b""));
        assert!(!u.allows(Access::Read, b"/", b""));
        assert!(!u.allows(Access::Write, b"/a", b""));
        // A range holding only /a is [/a, /a\0): covered.
        assert!(u.allows(Access::Read, b"/a", b"/a\0"));
        // --prefix /a is [/a, /b): not covered.
        assert!(!u.allows(Access::Read, b"/a", b"/b"));
    }

    #[test]
    fn a_prefix_permission_covers_sub_ranges_and_keys() {
        let u = user(&[perm(PermType::Readwrite, "/p/", "/p0")]);
        for access in [Access::Read, Access::Write] {
            assert!(u.allows(access, b"/p/x", b""));
            assert!(u.allows(access, b"/p/", b"/p0"));
            assert!(u.allows(access, b"/p/a", b"/p/b"));
            assert!(!u.allows(access, b"/p", b"/q"), "wider than the prefix");
            assert!(!u.allows(access, b"/p/", b"\0"), "open-ended");
            assert!(!u.allows(access, b"/p0", b""));
        }
    }

    #[test]
    fn ranges_are_covered_by_adjacent_or_overlapping_permissions_only() {
        let u = user(&[
            perm(PermType::Write, "a", "c"),
            perm(PermType::Write, "c", "e"),
            perm(PermType::Write, "d", "g"),
            perm(PermType::Write, "h", "k"),
        ]);
        assert!(u.allows(Access::Write, b"a", b"g"), "contiguous");
        assert!(u.allows(Access::Write, b"b", b"f"));
        assert!(!u.allows(Access::Write, b"a", b"i"), "gap between g and h");
        assert!(u.allows(Access::Write, b"h", b"k"));
        assert!(!u.allows(Access::Write, b"h", b"k\0"));
        assert!(!u.allows(Access::Read, b"a", b"b"), "write is not read");
    }

    #[test]
    fn open_ended_permissions() {
        let from = user(&[perm(PermType::Read, "/from", "\0")]);
        assert!(from.allows(Access::Read, b"/zzz", b""));
        assert!(from.allows(Access::Read, b"/from", b"\0"));
        assert!(from.allows(Access::Read, b"/g", b"/h"));
        assert!(!from.allows(Access::Read, b"/a", b"\0"));
        // etcdctl's `--prefix ""` grants ["\0", end of key space): every key.
        let all = user(&[perm(PermType::Read, "\0", "\0")]);
        assert!(all.allows(Access::Read, b"\0", b"\0"));
        assert!(all.allows(Access::Read, b"anything", b""));
        assert!(all.allows(Access::Read, b"a", b"z"));
        // A range starting at the empty key starts past the end of the key
        // space for etcd: no permission covers it.
        assert!(!all.allows(Access::Read, b"", b"\0"));
    }

    #[test]
    fn no_permissions_allow_nothing() {
        let u = user(&[]);
        assert!(!u.allows(Access::Read, b"a", b""));
        assert!(!u.allows(Access::Write, b"a", b"b"));
    }

    #[test]
    fn permissions_of_several_roles_merge() {
        let u = user(&[
            perm(PermType::Read, "/r/", "/r0"),
            perm(PermType::Write, "/w/", "/w0"),
            perm(PermType::Read, "/w/", "/w0"),
        ]);
        assert!(u.allows(Access::Read, b"/r/", b"/r0"));
        assert!(!u.allows(Access::Write, b"/r/x", b""));
        assert!(u.allows(Access::Read, b"/w/x", b""));
        assert!(u.allows(Access::Write, b"/w/x", b""));
    }

    #[test]
    fn valid_permission_ranges() {
        assert!(is_valid_permission_range(b"/a", b""));
        assert!(is_valid_permission_range(b"/a", b"/b"));
        assert!(is_valid_permission_range(b"/a", b"\0"));
        assert!(is_valid_permission_range(b"\0", b"\0"));
        assert!(!is_valid_permission_range(b"", b""));
        assert!(!is_valid_permission_range(b"/x", b"/x"));
        assert!(!is_valid_permission_range(b"/z", b"/a"));
    }
}
