//! Writes: a batch classified against the shard's index (shared lock in the steady state,
//! exclusive only for new series or fields), logged in the WAL (kind 1) and made durable,
//! then appended to the head; rejected points reported as influxd's partial write.
//! What it does not do: parse line protocol (see [`crate::lineproto`]) or flush (see
//! [`super::flush`]).

use std::sync::atomic::Ordering;

use super::record::encode_points_record;
use super::shard::{HEAD_STRIPES, Shard, ShardState, apply_point};
use super::tsdb::{Tsdb, blocking, now_ns};
use crate::Error;
use crate::error::Rejection;
use crate::model::Point;
use crate::names;

/// Summary of a write that was applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub written: usize,
    pub dropped: usize,
}

impl Tsdb {
    /// Writes points durably. Rejected points (type conflicts, series limit, retention) are
    /// reported as InfluxDB's partial-write error after the accepted ones are durable.
    pub async fn write(
        &self,
        db: &str,
        rp: Option<&str>,
        points: Vec<Point>,
    ) -> Result<WriteSummary, Error> {
        self.check_poison()?;
        let (rp_name, rp_meta) = self.resolve_rp(db, rp)?;
        let shard = self.shard(db, &rp_name)?;
        let now = now_ns();
        let _g = self.gate.read().await;
        // The CPU-heavy parts of a write (series keys, index registration, WAL encoding, head
        // apply) run through `blocking`, so a big batch never stalls the runtime's worker and a
        // query that arrives meanwhile is served at once (the OS time-slices the two threads).
        let (accepted, first_rejection, dropped, rec) = self
            .cpu_bound(|| {
                // Series keys are built before any lock. In the steady state every series and field
                // is known, and the shared lock suffices: queries run alongside. Only a batch that
                // brings a new series or field takes the exclusive lock (and classifies again).
                let keys: Vec<String> = points
                    .iter()
                    .map(|p| crate::lineproto::series_key(&p.measurement, &p.tags))
                    .collect();
                let retention_floor = if rp_meta.duration_ns > 0 {
                    now.saturating_sub(rp_meta.duration_ns)
                } else {
                    i64::MIN
                };
                let shared = {
                    let st = shard.read();
                    let mut reg = Registration::new(points.len());
                    let mut complete = true;
                    for (p, key) in points.iter().zip(&keys) {
                        match classify(&st, p, key, retention_floor) {
                            Class::Known(sid) => reg.accepted.push((sid, p)),
                            Class::Reject(r) => reg.reject(r),
                            Class::New => {
                                complete = false;
                                break;
                            }
                        }
                    }
                    complete.then_some(reg)
                };
                let reg = match shared {
                    Some(reg) => reg,
                    None => self.register_new(&shard, &points, keys, retention_floor),
                };
                let Registration {
                    accepted,
                    first_rejection,
                    dropped,
                } = reg;
                let rec = (!accepted.is_empty())
                    .then(|| encode_points_record(db, &rp_name, accepted.iter().map(|(_, p)| *p)));
                (accepted, first_rejection, dropped, rec)
            })
            .await;
        if let Some(rec) = rec {
            if let Err(e) = self.wal.append(&rec).await {
                // Out of space, nothing of the record was kept: refused, not poisoned (see
                // `wal`). TODO-correctness: series this write registered stay in the index
                // without data until a restart.
                if !matches!(e, Error::NoSpace { .. }) {
                    self.poison(&e);
                }
                return Err(e);
            }
            drop(rec);
            self.cpu_bound(|| {
                let st = shard.read();
                apply_points(&st, &accepted);
                if st.head_values() >= self.opts.flush_values {
                    self.flush_pending.store(true, Ordering::Relaxed);
                }
            })
            .await;
        }
        let summary = WriteSummary {
            written: accepted.len(),
            dropped,
        };
        if let Some(reason) = first_rejection {
            return Err(Error::PartialWrite { reason, dropped });
        }
        Ok(summary)
    }

    /// Registers a batch that brings a new series or field, under the shard's exclusive lock
    /// (classifying every point again: another batch may have registered them meanwhile).
    fn register_new<'a>(
        &self,
        shard: &Shard,
        points: &'a [Point],
        keys: Vec<String>,
        retention_floor: i64,
    ) -> Registration<'a> {
        let mut st = shard.write();
        let limit = self.opts.max_series_per_database;
        let mut reg = Registration::new(points.len());
        for (p, key) in points.iter().zip(keys) {
            let sid = match classify(&st, p, &key, retention_floor) {
                Class::Known(sid) => sid,
                Class::Reject(r) => {
                    reg.reject(r);
                    continue;
                }
                Class::New => {
                    let sid = match st.index.by_key.get(&key) {
                        Some(&id) => id,
                        None => {
                            if limit > 0 && shard.db_series.load(Ordering::Relaxed) >= limit {
                                reg.reject(Rejection::SeriesLimit {
                                    limit: self.opts.max_series_per_database,
                                });
                                continue;
                            }
                            shard.db_series.fetch_add(1, Ordering::Relaxed);
                            st.index.get_or_insert(key, &p.measurement, &p.tags)
                        }
                    };
                    let m = st
                        .index
                        .measurements
                        .get_mut(&p.measurement)
                        .expect("measurement registered with its series");
                    for (f, v) in &p.fields {
                        if !m.fields.contains_key(f) {
                            m.fields.insert(f.clone(), v.field_type());
                        }
                    }
                    sid
                }
            };
            reg.accepted.push((sid, p));
        }
        reg
    }

    /// Runs CPU-heavy work of a write (parsing, indexing, head appends) off the async worker,
    /// at most one such job per core at a time (see `cpu`).
    pub async fn cpu_bound<R>(&self, f: impl FnOnce() -> R) -> R {
        let _permit = self.cpu.acquire().await.ok();
        blocking(f)
    }

    /// True when a write found the heads over the flush threshold.
    pub fn take_flush_request(&self) -> bool {
        self.flush_pending.swap(false, Ordering::Relaxed)
    }
}

/// The outcome of registering a batch in a shard's index.
pub(super) struct Registration<'a> {
    pub(super) accepted: Vec<(u32, &'a Point)>,
    pub(super) first_rejection: Option<Rejection>,
    pub(super) dropped: usize,
}

impl<'a> Registration<'a> {
    pub(super) fn new(n: usize) -> Self {
        Registration {
            accepted: Vec::with_capacity(n),
            first_rejection: None,
            dropped: 0,
        }
    }

    pub(super) fn reject(&mut self, r: Rejection) {
        self.dropped += 1;
        self.first_rejection.get_or_insert(r);
    }
}

/// How the index sees one point of a write.
pub(super) enum Class {
    Known(u32),
    Reject(Rejection),
    /// Its series or one of its fields is new: registering it needs the exclusive lock.
    New,
}

pub(super) fn classify(st: &ShardState, p: &Point, key: &str, retention_floor: i64) -> Class {
    if p.time < retention_floor {
        return Class::Reject(Rejection::Retention);
    }
    // Line protocol refuses these already (with the line in the message); this holds the
    // limit for every other way in (0.8 writes, library callers).
    let too_long = names::series_key_error(key.len()).or_else(|| {
        p.fields
            .iter()
            .find_map(|(f, _)| names::field_key_error(key.len(), f.len()))
    });
    if let Some(reason) = too_long {
        return Class::Reject(Rejection::KeyTooLong(reason));
    }
    let Some(m) = st.index.measurements.get(&p.measurement) else {
        return Class::New;
    };
    let mut new_field = false;
    for (f, v) in &p.fields {
        match m.fields.get(f) {
            Some(&have) if have != v.field_type() => {
                return Class::Reject(Rejection::TypeConflict {
                    field: f.clone(),
                    measurement: p.measurement.clone(),
                    got: v.field_type(),
                    have,
                });
            }
            Some(_) => {}
            None => new_field = true,
        }
    }
    match st.index.by_key.get(key) {
        Some(&sid) if !new_field => Class::Known(sid),
        _ => Class::New,
    }
}

/// Appends accepted points to the head, one stripe at a time (points of one series keep their
/// order). Callers hold the shard lock (shared is enough).
pub(super) fn apply_points(st: &ShardState, accepted: &[(u32, &Point)]) {
    let mut order: Vec<u32> = (0..accepted.len() as u32).collect();
    order.sort_by_key(|&i| accepted[i as usize].0 as usize % HEAD_STRIPES);
    let mut added = 0;
    for chunk in order.chunk_by(|&a, &b| {
        accepted[a as usize].0 as usize % HEAD_STRIPES
            == accepted[b as usize].0 as usize % HEAD_STRIPES
    }) {
        let mut stripe = st.head.stripe(accepted[chunk[0] as usize].0);
        for &i in chunk {
            let (sid, p) = accepted[i as usize];
            added += apply_point(stripe.entry(sid).or_default(), p);
        }
    }
    st.head.values.fetch_add(added, Ordering::Relaxed);
}
