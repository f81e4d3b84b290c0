//! One shard (a database's retention policy): its index, striped in-memory head, frozen
//! heads being flushed and segments, behind one lock, and the merged read of a series' fields
//! over all of them ([`ShardState::columns`]). Also a subquery's in-memory shard.
//! What it does not do: the WAL, flushes or deletions (see [`super::write`],
//! [`super::flush`], [`super::delete`]).
//!
//! Lock discipline: see [`ShardState`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::index::Index;
use crate::Error;
use crate::model::{Column, FieldValue, Point};
use crate::segment::Segment;

#[derive(Debug, Default)]
pub(super) struct SeriesHead {
    pub(super) fields: Vec<(String, Column)>,
}

#[derive(Debug)]
pub(super) struct Frozen {
    pub(super) id: u64,
    pub(super) series: HashMap<u32, Vec<(String, Column)>>,
}

/// Number of independently locked parts of a head. Writers append under the shard's *shared*
/// lock plus one stripe's mutex, so a big batch never excludes queries; 64 stripes keep two
/// concurrent batches (thousands of series each) from queueing on the same mutex for long.
pub(super) const HEAD_STRIPES: usize = 64;

/// The head: recent writes per series, striped by series id.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) stripes: Vec<Mutex<HashMap<u32, SeriesHead>>>,
    pub(super) values: AtomicUsize,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            stripes: (0..HEAD_STRIPES).map(|_| Mutex::default()).collect(),
            values: AtomicUsize::new(0),
        }
    }
}

impl Head {
    pub(super) fn stripe(&self, sid: u32) -> std::sync::MutexGuard<'_, HashMap<u32, SeriesHead>> {
        self.stripes[sid as usize % HEAD_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Empties the head, returning its series. Callers hold the shard lock exclusively.
    pub(super) fn take(&self) -> HashMap<u32, SeriesHead> {
        let mut all = HashMap::new();
        for s in &self.stripes {
            all.extend(std::mem::take(
                &mut *s.lock().unwrap_or_else(|p| p.into_inner()),
            ));
        }
        self.values.store(0, Ordering::Relaxed);
        all
    }
}

/// Mutable state of a shard, behind its lock.
///
/// Lock discipline: the index, frozen heads and segments change only under the exclusive lock;
/// head appends take the shared lock plus a stripe mutex, and freezing the head takes the
/// exclusive lock, so a reader holding the shared lock sees every value exactly once (in the
/// head, a frozen head or a segment).
#[derive(Debug, Default)]
pub struct ShardState {
    pub index: Index,
    pub(super) head: Head,
    pub(super) frozen: Vec<Arc<Frozen>>,
    pub(super) segments: Vec<Arc<Segment>>,
    /// series id -> (segment position, series position in it) for each segment.
    pub(super) seg_maps: Vec<HashMap<u32, usize>>,
}

/// One database + retention policy.
#[derive(Debug)]
pub struct Shard {
    pub db: String,
    pub rp: String,
    pub(super) dir: PathBuf,
    pub(super) state: RwLock<ShardState>,
    pub(super) next_seq: AtomicU64,
    pub(super) db_series: Arc<AtomicUsize>,
}

impl Shard {
    /// A shard that lives only in memory, holding `points` in its head: the rows of a subquery,
    /// queried like stored data. It is never flushed or logged. A value whose type differs from
    /// the first one seen for its field (in its measurement) is left out, as a write would be.
    pub fn in_memory(points: &[Point]) -> Arc<Shard> {
        let mut st = ShardState::default();
        let mut values = 0;
        for p in points {
            let key = crate::lineproto::series_key(&p.measurement, &p.tags);
            let sid = st.index.get_or_insert(key, &p.measurement, &p.tags);
            let Some(m) = st.index.measurements.get_mut(&p.measurement) else {
                continue;
            };
            let fields: Vec<(String, FieldValue)> = p
                .fields
                .iter()
                .filter(|(f, v)| {
                    *m.fields.entry(f.clone()).or_insert(v.field_type()) == v.field_type()
                })
                .cloned()
                .collect();
            if fields.is_empty() {
                continue;
            }
            let p = Point {
                measurement: String::new(),
                tags: Vec::new(),
                fields,
                time: p.time,
            };
            values += apply_point(st.head.stripe(sid).entry(sid).or_default(), &p);
        }
        st.head.values.store(values, Ordering::Relaxed);
        Arc::new(Shard {
            db: String::new(),
            rp: String::new(),
            dir: PathBuf::new(),
            state: RwLock::new(st),
            next_seq: AtomicU64::new(1),
            db_series: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// True for a subquery's shard (see [`Shard::in_memory`]).
    pub fn is_in_memory(&self) -> bool {
        self.dir.as_os_str().is_empty()
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ShardState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, ShardState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl ShardState {
    /// The merged columns of some fields of one series, limited to `[min, max]`: one entry
    /// per requested field, `None` where the series has no value in range. Each segment's
    /// times are decoded once for all the fields.
    pub fn columns(
        &self,
        sid: u32,
        fields: &[&str],
        min: i64,
        max: i64,
    ) -> Result<Vec<Option<Column>>, Error> {
        let mut acc: Vec<Option<Column>> = fields.iter().map(|_| None).collect();
        let add = |slot: &mut Option<Column>, c: Column| {
            let (lo, hi) = c.slice_time(min, max);
            if lo == hi {
                return;
            }
            let c = if lo == 0 && hi == c.times.len() {
                c
            } else {
                let idx: Vec<usize> = (lo..hi).collect();
                Column {
                    times: c.times[lo..hi].to_vec(),
                    values: c.values.permute(&idx),
                }
            };
            *slot = Some(match slot.take() {
                None => c,
                Some(a) => a.merge(c),
            });
        };
        for (seg, map) in self.segments.iter().zip(&self.seg_maps) {
            if let Some(&si) = map.get(&sid) {
                let s = &seg.series[si];
                if s.max_t < min || s.min_t > max {
                    continue;
                }
                for (slot, c) in acc.iter_mut().zip(seg.read_fields(si, fields)?) {
                    if let Some(c) = c {
                        add(slot, c);
                    }
                }
            }
        }
        let find = |cols: &[(String, Column)]| -> Vec<Option<usize>> {
            let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
            crate::model::positions(&names, fields)
        };
        for fz in &self.frozen {
            if let Some(cols) = fz.series.get(&sid) {
                for (slot, at) in acc.iter_mut().zip(find(cols)) {
                    if let Some(i) = at {
                        add(slot, cols[i].1.clone());
                    }
                }
            }
        }
        let head_cols: Vec<Option<Column>> = {
            let stripe = self.head.stripe(sid);
            match stripe.get(&sid) {
                Some(h) => find(&h.fields)
                    .into_iter()
                    .map(|at| at.map(|i| h.fields[i].1.clone()))
                    .collect(),
                None => fields.iter().map(|_| None).collect(),
            }
        };
        for (slot, c) in acc.iter_mut().zip(head_cols) {
            if let Some(mut c) = c {
                c.normalize();
                add(slot, c);
            }
        }
        Ok(acc)
    }

    /// Number of values in the head.
    pub fn head_values(&self) -> usize {
        self.head.values.load(Ordering::Relaxed)
    }
}

pub(super) fn install_segment(st: &mut ShardState, seg: Arc<Segment>, counter: &AtomicUsize) {
    let mut map = HashMap::with_capacity(seg.series.len());
    for (i, s) in seg.series.iter().enumerate() {
        let key = crate::lineproto::series_key(&s.measurement, &s.tags);
        let new = !st.index.by_key.contains_key(&key);
        let sid = st.index.get_or_insert(key, &s.measurement, &s.tags);
        if new {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = st.index.measurements.get_mut(&s.measurement) {
            for f in &s.fields {
                m.fields.entry(f.name.to_string()).or_insert(f.ftype);
            }
        }
        map.insert(sid, i);
    }
    st.segments.push(seg);
    st.seg_maps.push(map);
}

/// Appends one point to a series' head; returns the number of values added.
///
/// Linear in the point's fields: a point's fields usually come in the order of the head's, so
/// the next column is tried first; a miss in a wide series falls back to a map of the columns.
pub(super) fn apply_point(h: &mut SeriesHead, p: &Point) -> usize {
    let mut added = 0;
    let mut next = 0;
    let mut index: Option<HashMap<String, usize>> = None;
    for (f, v) in &p.fields {
        let found = if h.fields.get(next).is_some_and(|(n, _)| n == f) {
            Some(next)
        } else if h.fields.len() <= 16 {
            h.fields.iter().position(|(n, _)| n == f)
        } else {
            index
                .get_or_insert_with(|| {
                    h.fields
                        .iter()
                        .enumerate()
                        .map(|(i, (n, _))| (n.clone(), i))
                        .collect()
                })
                .get(f)
                .copied()
        };
        let i = match found {
            Some(i) => i,
            None => {
                h.fields.push((f.clone(), Column::new(v.field_type())));
                if let Some(index) = &mut index {
                    index.insert(f.clone(), h.fields.len() - 1);
                }
                h.fields.len() - 1
            }
        };
        next = i + 1;
        let col = &mut h.fields[i].1;
        if col.values.push(v) {
            col.times.push(p.time);
            added += 1;
        }
    }
    added
}
