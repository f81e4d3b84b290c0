//! Flushes, compaction and retention: heads frozen and written as segments (then the sealed
//! WAL files deleted), a shard's segments merged into one, expired data dropped.
//! What it does not do: writes or deletions (see [`super::write`], [`super::delete`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::shard::{Frozen, Shard, ShardState, install_segment};
use super::tsdb::{Tsdb, blocking, now_ns};
use crate::Error;
use crate::model::{Column, FieldType};
use crate::segment::{self, Segment, SeriesData};
use crate::wal;

impl Tsdb {
    pub(super) fn checkpoint_blocking(&self, old_wal: &[u64]) -> Result<(), Error> {
        let shards = self.all_shards();
        for shard in shards {
            if let Some(fz) = self.freeze(&shard) {
                self.write_frozen(&shard, &fz)?;
            }
        }
        for seq in old_wal {
            let _ = std::fs::remove_file(wal::wal_path(self.wal.dir(), *seq));
        }
        wal::sync_dir(self.wal.dir())
    }

    pub(super) fn freeze(&self, shard: &Shard) -> Option<Arc<Frozen>> {
        let mut st = shard.write();
        let head = st.head.take();
        if head.is_empty() {
            return None;
        }
        let series = head
            .into_iter()
            .map(|(sid, h)| {
                let cols = h
                    .fields
                    .into_iter()
                    .map(|(n, mut c)| {
                        c.normalize();
                        (n, c)
                    })
                    .collect();
                (sid, cols)
            })
            .collect();
        let fz = Arc::new(Frozen {
            id: self.next_frozen.fetch_add(1, Ordering::Relaxed),
            series,
        });
        st.frozen.push(fz.clone());
        Some(fz)
    }

    pub(super) fn write_frozen(&self, shard: &Shard, fz: &Frozen) -> Result<(), Error> {
        let cutoff = self.retention_cutoff(shard);
        let seq = shard.next_seq.fetch_add(1, Ordering::Relaxed);
        let seg = {
            let st = shard.read();
            let mut sids: Vec<&u32> = fz.series.keys().collect();
            sids.sort_unstable();
            let mut trimmed: Vec<(u32, Vec<(String, Column)>)> = Vec::new();
            for sid in sids {
                let cols: Vec<(String, Column)> = fz.series[sid]
                    .iter()
                    .filter_map(|(n, c)| trim_before(c, cutoff).map(|c| (n.clone(), c)))
                    .collect();
                if !cols.is_empty() {
                    trimmed.push((*sid, cols));
                }
            }
            write_segment(shard, &st, seq, &trimmed)?
        };
        let mut st = shard.write();
        if let Some(seg) = seg {
            install_segment(&mut st, Arc::new(seg), &shard.db_series);
        }
        st.frozen.retain(|f| f.id != fz.id);
        Ok(())
    }

    pub(super) fn retention_cutoff(&self, shard: &Shard) -> i64 {
        match self.resolve_rp(&shard.db, Some(&shard.rp)) {
            Ok((_, m)) if m.duration_ns > 0 => now_ns().saturating_sub(m.duration_ns),
            _ => i64::MIN,
        }
    }

    /// Moves every head into segments and deletes the WAL files that are then redundant;
    /// compacts shards that have too many segments.
    pub async fn flush(&self) -> Result<(), Error> {
        self.check_poison()?;
        let _f = self.flush_lock.lock().await;
        self.flush_held().await
    }

    /// [`Tsdb::flush`] for a caller that holds the flush lock: every write acknowledged before
    /// this call began is in a segment when it returns, and no other flush, compaction,
    /// deletion or drop can run until the caller lets the lock go.
    pub(super) async fn flush_held(&self) -> Result<(), Error> {
        let shards = self.all_shards();
        let mut frozen = Vec::new();
        let sealed_below;
        {
            let _g = self.gate.write().await;
            for s in &shards {
                if let Some(fz) = self.freeze(s) {
                    frozen.push((s.clone(), fz));
                }
            }
            sealed_below = self.wal.rotate().await?;
        }
        for (s, fz) in frozen {
            let r = blocking(|| self.write_frozen(&s, &fz));
            if let Err(e) = r {
                self.poison(&e);
                return Err(e);
            }
        }
        for seq in wal::list(self.wal.dir())? {
            if seq < sealed_below {
                let _ = std::fs::remove_file(wal::wal_path(self.wal.dir(), seq));
            }
        }
        wal::sync_dir(self.wal.dir())?;
        for s in &shards {
            if s.read().segments.len() > self.opts.max_segments {
                blocking(|| self.compact_shard(s))?;
            }
        }
        Ok(())
    }

    /// Flushes and then merges each shard's segments into one (drops expired points).
    pub async fn compact(&self) -> Result<(), Error> {
        self.flush().await?;
        let _f = self.flush_lock.lock().await;
        let shards = self.all_shards();
        for s in &shards {
            blocking(|| self.compact_shard(s))?;
        }
        Ok(())
    }

    pub(super) fn compact_shard(&self, shard: &Shard) -> Result<(), Error> {
        let (segs, maps): (Vec<Arc<Segment>>, Vec<HashMap<u32, usize>>) = {
            let st = shard.read();
            (st.segments.clone(), st.seg_maps.clone())
        };
        if segs.len() < 2 && self.retention_cutoff(shard) == i64::MIN {
            return Ok(());
        }
        if segs.is_empty() {
            return Ok(());
        }
        let cutoff = self.retention_cutoff(shard);
        let seq = segs.iter().map(|s| s.seq).max().unwrap_or(0);
        let new_seg = {
            let st = shard.read();
            let mut sids: Vec<u32> = maps.iter().flat_map(|m| m.keys().copied()).collect();
            sids.sort_unstable();
            sids.dedup();
            let mut merged: Vec<(u32, Vec<(String, Column)>)> = Vec::with_capacity(sids.len());
            for sid in sids {
                let mut fields: Vec<(String, Column)> = Vec::new();
                for (seg, map) in segs.iter().zip(&maps) {
                    let Some(&si) = map.get(&sid) else { continue };
                    let names: Vec<&str> = seg.series[si].fields.iter().map(|f| &*f.name).collect();
                    for (name, c) in names.iter().zip(seg.read_fields(si, &names)?) {
                        if let Some(c) = c {
                            match fields.iter_mut().find(|(n, _)| n == name) {
                                Some((_, acc)) => {
                                    let old = std::mem::replace(acc, Column::new(FieldType::Float));
                                    *acc = old.merge(c);
                                }
                                None => fields.push((name.to_string(), c)),
                            }
                        }
                    }
                }
                let fields: Vec<(String, Column)> = fields
                    .into_iter()
                    .filter_map(|(n, c)| trim_before(&c, cutoff).map(|c| (n, c)))
                    .collect();
                if !fields.is_empty() {
                    merged.push((sid, fields));
                }
            }
            write_segment(shard, &st, seq, &merged)?
        };
        let mut st = shard.write();
        let n_old = segs.len();
        let rest_segs: Vec<Arc<Segment>> = st.segments.drain(n_old..).collect();
        st.segments.clear();
        st.seg_maps.clear();
        if let Some(seg) = new_seg {
            install_segment(&mut st, Arc::new(seg), &shard.db_series);
        } else {
            // Everything expired: the file named `seq` must go too.
            let _ = std::fs::remove_file(segment::seg_path(&shard.dir, seq));
        }
        for s in rest_segs {
            install_segment(&mut st, s, &shard.db_series);
        }
        drop(st);
        for s in segs {
            if s.seq != seq {
                let _ = std::fs::remove_file(&s.path);
            }
        }
        wal::sync_dir(&shard.dir)
    }

    /// Drops the data older than its retention policy's duration: segments entirely older are
    /// deleted, partly expired ones compacted without the expired points, and heads holding
    /// data of a policy with a duration are flushed first (a flush writes them trimmed at the
    /// cutoff), so queries stop returning expired points as influxd's do once it drops their
    /// shard with its cache. Called every `retention_check_interval` by the server.
    /// Known difference: influxd drops whole shard groups (1 h to 7 d of time, by the policy's
    /// duration) once their end is past the cutoff, so it keeps expired points up to a shard
    /// group longer; torc cuts at the cutoff itself.
    pub async fn enforce_retention(&self) -> Result<(), Error> {
        let expiring = self
            .all_shards()
            .iter()
            .any(|s| s.read().head_values() > 0 && self.retention_cutoff(s) != i64::MIN);
        if expiring {
            self.flush().await?;
        }
        let _f = self.flush_lock.lock().await;
        let shards = self.all_shards();
        for s in shards {
            let cutoff = self.retention_cutoff(&s);
            if cutoff == i64::MIN {
                continue;
            }
            let mut removed = false;
            let partly = {
                let mut st = s.write();
                let mut keep_s = Vec::new();
                let mut keep_m = Vec::new();
                let segs = std::mem::take(&mut st.segments);
                let maps = std::mem::take(&mut st.seg_maps);
                for (seg, map) in segs.into_iter().zip(maps) {
                    if seg.max_t < cutoff {
                        let _ = std::fs::remove_file(&seg.path);
                        removed = true;
                    } else {
                        keep_s.push(seg);
                        keep_m.push(map);
                    }
                }
                st.segments = keep_s;
                st.seg_maps = keep_m;
                st.segments.iter().any(|seg| seg.min_t < cutoff)
            };
            if removed {
                wal::sync_dir(&s.dir)?;
            }
            if partly {
                blocking(|| self.compact_shard(&s))?;
            }
        }
        Ok(())
    }

    /// Bytes on disk of segments (what a flushed database costs), and number of stored values.
    pub fn disk_usage(&self) -> (u64, u64) {
        let mut bytes = 0u64;
        let mut values = 0u64;
        for s in self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let st = s.read();
            for seg in &st.segments {
                bytes += seg.size() as u64;
                for ser in &seg.series {
                    values += ser.fields.iter().map(|f| f.count() as u64).sum::<u64>();
                }
            }
        }
        (bytes, values)
    }
}

pub(super) fn trim_before(c: &Column, cutoff: i64) -> Option<Column> {
    if cutoff == i64::MIN || c.times.first().is_some_and(|&t| t >= cutoff) {
        return if c.times.is_empty() {
            None
        } else {
            Some(c.clone())
        };
    }
    let lo = c.times.partition_point(|&t| t < cutoff);
    if lo == c.times.len() {
        return None;
    }
    let idx: Vec<usize> = (lo..c.times.len()).collect();
    Some(Column {
        times: c.times[lo..].to_vec(),
        values: c.values.permute(&idx),
    })
}

/// Writes the columns of some series of a shard as segment `seq` (nothing when there are none).
fn write_segment(
    shard: &Shard,
    st: &ShardState,
    seq: u64,
    series: &[(u32, Vec<(String, Column)>)],
) -> Result<Option<Segment>, Error> {
    let data: Vec<SeriesData<'_>> = series
        .iter()
        .map(|(sid, cols)| {
            let info = &st.index.series[*sid as usize];
            SeriesData {
                measurement: &info.measurement,
                tags: &info.tags,
                columns: cols.iter().map(|(n, c)| (n.as_str(), c)).collect(),
            }
        })
        .collect();
    if data.is_empty() {
        return Ok(None);
    }
    Ok(Some(segment::write(&shard.dir, seq, &data)?))
}
