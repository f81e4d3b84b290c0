//! The order in which influxd 1.6 merges the series of a group in a raw query: a binary heap
//! of the series (in series key order; reversed for `ORDER BY time DESC`) from which the
//! earliest point is popped and the series' next one pushed. Of points with one time, the
//! heap prefers the one whose auxiliary values (the projected fields and tags, by name) are
//! less, compared as long as both are strings; otherwise neither is less, and the heap's own
//! order decides (hosts a, b, c at one time come out a, c, b, then c, b, a). The heap
//! operations are those of Go's `container/heap`, whose order this reproduces.
//! Used for raw queries and for `integral()`, whose stream depends on the order.
//! What it does not do: read or filter rows (see [`super::select`]), or order the rows of
//! other aggregates (which read them by time and series key).

use std::cmp::Ordering;

use super::rows::{RowKey, Rows};
use crate::model::FieldValue;
use crate::storage::SeriesInfo;

/// Where the merge finds an auxiliary value of a row.
pub(super) enum Aux<'a> {
    /// A loaded field, by its slot.
    Field(usize),
    Tag(&'a str),
    /// A name that is neither: no value.
    Missing,
}

/// One series in the heap: its rows in merge order and the next one's position.
struct Cursor {
    /// Each row with its position in the keys merged.
    rows: Vec<(RowKey, usize)>,
    at: usize,
}

struct Merge<'a> {
    rows: &'a Rows,
    series: &'a [&'a SeriesInfo],
    aux: &'a [Aux<'a>],
    descending: bool,
    cursors: Vec<Cursor>,
}

impl Merge<'_> {
    fn head(&self, c: usize) -> &RowKey {
        let cur = &self.cursors[c];
        &cur.rows[cur.at].0
    }

    fn aux_str<'r>(&'r self, k: &'r RowKey, a: &Aux<'_>) -> Option<&'r str> {
        match a {
            Aux::Field(i) => match self.rows.values_of(k).get(*i) {
                Some(Some(FieldValue::Str(s))) => Some(s),
                _ => None,
            },
            Aux::Tag(t) => Some(self.series[k.series].tag(t).unwrap_or("")),
            Aux::Missing => None,
        }
    }

    /// The heap's order of two cursors' next rows.
    fn less(&self, a: usize, b: usize) -> bool {
        let (x, y) = (self.head(a), self.head(b));
        let want = if self.descending {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        if x.time != y.time {
            return x.time.cmp(&y.time) == want;
        }
        for a in self.aux {
            match (self.aux_str(x, a), self.aux_str(y, a)) {
                (Some(v1), Some(v2)) if v1 == v2 => continue,
                (Some(v1), Some(v2)) => return v1.cmp(v2) == want,
                _ => return false,
            }
        }
        false
    }
}

/// A binary heap of cursor numbers with Go's `container/heap` operations.
struct Heap(Vec<usize>);

impl Heap {
    fn up(&mut self, m: &Merge<'_>, mut j: usize) {
        while j > 0 {
            let i = (j - 1) / 2;
            if !m.less(self.0[j], self.0[i]) {
                break;
            }
            self.0.swap(i, j);
            j = i;
        }
    }

    fn down(&mut self, m: &Merge<'_>, mut i: usize, n: usize) {
        loop {
            let j1 = 2 * i + 1;
            if j1 >= n {
                break;
            }
            let mut j = j1;
            if j1 + 1 < n && m.less(self.0[j1 + 1], self.0[j1]) {
                j = j1 + 1;
            }
            if !m.less(self.0[j], self.0[i]) {
                break;
            }
            self.0.swap(i, j);
            i = j;
        }
    }

    fn init(&mut self, m: &Merge<'_>) {
        let n = self.0.len();
        for i in (0..n / 2).rev() {
            self.down(m, i, n);
        }
    }

    fn pop(&mut self, m: &Merge<'_>) -> Option<usize> {
        let n = self.0.len().checked_sub(1)?;
        self.0.swap(0, n);
        self.down(m, 0, n);
        self.0.pop()
    }

    fn push(&mut self, m: &Merge<'_>, c: usize) {
        self.0.push(c);
        self.up(m, self.0.len() - 1);
    }
}

/// Orders `rows` (each series' rows in time order) as influxd 1.6 merges them; for
/// `descending`, the result is in ascending order of that merge reversed, as the projection
/// reads it backwards.
pub(super) fn merge_like_influxd(
    rows: &mut Rows,
    series: &[&SeriesInfo],
    aux: &[Aux<'_>],
    descending: bool,
) {
    let order = merged(&rows.keys, rows, series, aux, descending);
    rows.keys = order.into_iter().map(|i| rows.keys[i]).collect();
}

/// The positions of `keys` (rows of `rows`, each series' in time order) in influxd 1.6's
/// merge order, as [`merge_like_influxd`] says.
pub(super) fn merged(
    keys: &[RowKey],
    rows: &Rows,
    series: &[&SeriesInfo],
    aux: &[Aux<'_>],
    descending: bool,
) -> Vec<usize> {
    let mut per: Vec<Vec<(RowKey, usize)>> = vec![Vec::new(); series.len()];
    for (i, k) in keys.iter().enumerate() {
        if let Some(v) = per.get_mut(k.series) {
            v.push((*k, i));
        }
    }
    if descending {
        per.reverse();
        per.iter_mut().for_each(|v| v.reverse());
    }
    let cursors: Vec<Cursor> = per
        .into_iter()
        .filter(|v| !v.is_empty())
        .map(|rows| Cursor { rows, at: 0 })
        .collect();
    let n = keys.len();
    let mut m = Merge {
        rows,
        series,
        aux,
        descending,
        cursors,
    };
    let mut heap = Heap((0..m.cursors.len()).collect());
    heap.init(&m);
    let mut out = Vec::with_capacity(n);
    while let Some(c) = heap.pop(&m) {
        let cur = &m.cursors[c];
        out.push(cur.rows[cur.at].1);
        m.cursors[c].at += 1;
        if m.cursors[c].at < m.cursors[c].rows.len() {
            heap.push(&m, c);
        }
    }
    if descending {
        out.reverse();
    }
    out
}
