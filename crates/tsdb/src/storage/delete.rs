//! Deletions (`DROP SERIES`, `DELETE`, `DROP MEASUREMENT`): the WAL record (kind 3) made
//! durable first, then the head filtered and older segments rewritten, then the index rebuilt
//! from what remains; replay redoes it ([`apply_delete`] is idempotent).
//! What it does not do: decide which series go (the caller's `select`, see
//! [`crate::exec`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::shard::{SeriesHead, Shard, ShardState, install_segment};
use super::tsdb::{Tsdb, blocking};
use crate::Error;
use crate::encoding::{put_chunk, put_uvarint, zigzag};
use crate::model::Column;
use crate::segment::{self, Segment, SeriesData};
use crate::wal;

impl Tsdb {
    /// Deletes data of a database: in each shard, the series `select` names (by key), values
    /// with times in `[min, max]` (`DROP SERIES`, `DROP MEASUREMENT`, `DELETE`). A series left
    /// with no value leaves the index, and a measurement left with no series disappears, as in
    /// InfluxDB 1.6.
    ///
    /// `select` runs for every shard before anything changes, so an error it returns (a field
    /// in the condition) leaves the data untouched. Writes and flushes wait meanwhile. Per
    /// shard, a WAL record (kind 3: the keys, the time range and the shard's next segment seq)
    /// is made durable first, then the head is filtered and every older segment that holds one
    /// of the series is rewritten in place; replay redoes the whole deletion, so a crash at any
    /// point leaves either nothing or all of it deleted, and deleted data never comes back.
    pub async fn delete<E: From<Error>>(
        &self,
        db: &str,
        min: i64,
        max: i64,
        select: impl Fn(&ShardState) -> Result<Vec<String>, E>,
    ) -> Result<(), E> {
        self.check_poison()?;
        if min > max {
            return Ok(());
        }
        let _f = self.flush_lock.lock().await;
        let _g = self.gate.write().await;
        let mut plan = Vec::new();
        for shard in self.shards_of(db) {
            let keys = select(&shard.read())?;
            if !keys.is_empty() {
                plan.push((shard, keys));
            }
        }
        for (shard, keys) in plan {
            let bound = shard.next_seq.load(Ordering::Relaxed);
            let rec = encode_delete_record(&shard.db, &shard.rp, bound, min, max, &keys);
            if let Err(e) = self.wal.append(&rec).await {
                self.poison(&e);
                return Err(e.into());
            }
            if let Err(e) = blocking(|| apply_delete(&shard, &keys, min, max, bound)) {
                self.poison(&e);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

pub(super) fn encode_delete_record(
    db: &str,
    rp: &str,
    bound: u64,
    min: i64,
    max: i64,
    keys: &[String],
) -> Vec<u8> {
    let mut out = vec![3u8];
    put_chunk(&mut out, db.as_bytes());
    put_chunk(&mut out, rp.as_bytes());
    put_uvarint(&mut out, bound);
    put_uvarint(&mut out, zigzag(min));
    put_uvarint(&mut out, zigzag(max));
    put_uvarint(&mut out, keys.len() as u64);
    for k in keys {
        put_chunk(&mut out, k.as_bytes());
    }
    out
}

/// The values of `c` outside `[min, max]` (`None` when none remain). Order is kept.
pub(super) fn cut_range(c: Column, min: i64, max: i64) -> Option<Column> {
    if c.times.iter().all(|&t| t < min || t > max) {
        return (!c.times.is_empty()).then_some(c);
    }
    let idx: Vec<usize> = (0..c.times.len())
        .filter(|&i| c.times[i] < min || c.times[i] > max)
        .collect();
    if idx.is_empty() {
        return None;
    }
    Some(Column {
        times: idx.iter().map(|&i| c.times[i]).collect(),
        values: c.values.permute(&idx),
    })
}

/// Removes the values of the series `keys` with times in `[min, max]` from a shard: filters
/// the head, rewrites (same seq, atomically) every segment below `bound` that holds one of
/// them, then rebuilds the index from what remains. Idempotent, so WAL replay can redo it.
/// Callers exclude flushes (no frozen heads exist) and writes.
///
/// TODO-scalability: a deletion rewrites every segment holding one of the series, under the
/// shard's exclusive lock (queries of the shard wait); per-segment tombstones applied at read
/// and compaction time would make it cost what it deletes.
pub(super) fn apply_delete(
    shard: &Shard,
    keys: &[String],
    min: i64,
    max: i64,
    bound: u64,
) -> Result<(), Error> {
    // Keeps "segments written after a deletion have a seq at or above its bound" true even
    // when the deletion removed the newest segment file and a restart computed a lower next
    // seq. (Data such a replay checkpoints also follows the deletion record in the WAL, so it
    // would be replayed again anyway; the invariant just keeps the reasoning local.)
    shard.next_seq.fetch_max(bound, Ordering::Relaxed);
    let mut st = shard.write();
    let target: std::collections::HashSet<u32> = keys
        .iter()
        .filter_map(|k| st.index.by_key.get(k).copied())
        .collect();
    if target.is_empty() {
        return Ok(());
    }
    if !st.frozen.is_empty() {
        return Err(Error::FlushInProgress);
    }
    // The head.
    let mut head: Vec<(u32, SeriesHead)> = Vec::new();
    for (sid, mut h) in st.head.take() {
        if target.contains(&sid) {
            h.fields = std::mem::take(&mut h.fields)
                .into_iter()
                .filter_map(|(n, c)| cut_range(c, min, max).map(|c| (n, c)))
                .collect();
            if h.fields.is_empty() {
                continue;
            }
        }
        head.push((sid, h));
    }
    // The segments written before the deletion.
    let segs = std::mem::take(&mut st.segments);
    let maps = std::mem::take(&mut st.seg_maps);
    let mut kept: Vec<Arc<Segment>> = Vec::with_capacity(segs.len());
    for (seg, map) in segs.into_iter().zip(maps) {
        if seg.seq >= bound || !map.keys().any(|sid| target.contains(sid)) {
            kept.push(seg);
            continue;
        }
        let hit: std::collections::HashSet<usize> = map
            .iter()
            .filter(|(sid, _)| target.contains(sid))
            .map(|(_, &si)| si)
            .collect();
        let mut series: Vec<(usize, Vec<(String, Column)>)> = Vec::new();
        for (si, s) in seg.series.iter().enumerate() {
            let names: Vec<&str> = s.fields.iter().map(|f| &*f.name).collect();
            let mut cols = Vec::with_capacity(names.len());
            for (name, c) in names.iter().zip(seg.read_fields(si, &names)?) {
                let Some(c) = c else { continue };
                let c = if hit.contains(&si) {
                    cut_range(c, min, max)
                } else {
                    Some(c)
                };
                if let Some(c) = c {
                    cols.push((name.to_string(), c));
                }
            }
            if !cols.is_empty() {
                series.push((si, cols));
            }
        }
        if series.is_empty() {
            std::fs::remove_file(&seg.path)
                .map_err(|e| Error::io(format!("removing {}", seg.path.display()), e))?;
            continue;
        }
        let data: Vec<SeriesData<'_>> = series
            .iter()
            .map(|(si, cols)| SeriesData {
                measurement: &seg.series[*si].measurement,
                tags: &seg.series[*si].tags,
                columns: cols.iter().map(|(n, c)| (n.as_str(), c)).collect(),
            })
            .collect();
        kept.push(Arc::new(segment::write(&shard.dir, seg.seq, &data)?));
    }
    wal::sync_dir(&shard.dir)?;
    // Rebuild the index from what remains; a measurement that keeps series keeps its field
    // types (as InfluxDB's field set does).
    let old = std::mem::take(&mut st.index);
    shard
        .db_series
        .fetch_sub(old.series.len(), Ordering::Relaxed);
    for seg in kept {
        install_segment(&mut st, seg, &shard.db_series);
    }
    let mut values = 0;
    for (old_sid, h) in head {
        let info = &old.series[old_sid as usize];
        let is_new = !st.index.by_key.contains_key(&info.key);
        let sid = st
            .index
            .get_or_insert(info.key.clone(), &info.measurement, &info.tags);
        if is_new {
            shard.db_series.fetch_add(1, Ordering::Relaxed);
        }
        values += h.fields.iter().map(|(_, c)| c.times.len()).sum::<usize>();
        st.head.stripe(sid).insert(sid, h);
    }
    st.head.values.store(values, Ordering::Relaxed);
    for (m, mi) in old.measurements {
        if let Some(now) = st.index.measurements.get_mut(&m) {
            for (f, t) in mi.fields {
                now.fields.entry(f).or_insert(t);
            }
        }
    }
    Ok(())
}
