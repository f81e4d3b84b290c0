//! The WAL's points record (kind 1) encoded and decoded, and the replay of every record kind
//! at open (points, dropped database, deletion, dropped retention policy).
//! What it does not do: the WAL file itself (see [`crate::wal`]).

use std::sync::atomic::Ordering;

use super::delete::apply_delete;
use super::shard::apply_point;
use super::tsdb::Tsdb;
use crate::encoding::{Reader, put_chunk, put_uvarint, unzigzag, zigzag};
use crate::error::ReplayError;
use crate::model::{FieldType, FieldValue, Point};

impl Tsdb {
    pub(super) fn replay_record(&self, rec: &[u8]) -> Result<(), ReplayError> {
        let mut r = Reader::new(rec);
        match r.u8()? {
            1 => {
                let db = r.str()?.to_string();
                let rp = r.str()?.to_string();
                let points = decode_points(&mut r)?;
                if self.resolve_rp(&db, Some(&rp)).is_err() {
                    return Ok(()); // dropped since
                }
                let shard = self.shard(&db, &rp).map_err(Box::new)?;
                let mut st = shard.write();
                for p in &points {
                    let key = crate::lineproto::series_key(&p.measurement, &p.tags);
                    let new = !st.index.by_key.contains_key(&key);
                    let sid = st.index.get_or_insert(key, &p.measurement, &p.tags);
                    if new {
                        shard.db_series.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(m) = st.index.measurements.get_mut(&p.measurement) {
                        for (f, v) in &p.fields {
                            m.fields.entry(f.clone()).or_insert(v.field_type());
                        }
                    }
                    let added = apply_point(st.head.stripe(sid).entry(sid).or_default(), p);
                    st.head.values.fetch_add(added, Ordering::Relaxed);
                }
                Ok(())
            }
            2 => {
                let db = r.str()?.to_string();
                for ((d, _), s) in self.shards.read().unwrap_or_else(|p| p.into_inner()).iter() {
                    if *d == db {
                        let st = s.write();
                        st.head.take();
                    }
                }
                Ok(())
            }
            3 => {
                let db = r.str()?.to_string();
                let rp = r.str()?.to_string();
                let bound = r.uvarint()?;
                let min = unzigzag(r.uvarint()?);
                let max = unzigzag(r.uvarint()?);
                let n = r.uvarint()? as usize;
                let mut keys = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    keys.push(r.str()?.to_string());
                }
                if self.resolve_rp(&db, Some(&rp)).is_err() {
                    return Ok(()); // dropped since
                }
                let shard = self.shard(&db, &rp).map_err(Box::new)?;
                Ok(apply_delete(&shard, &keys, min, max, bound).map_err(Box::new)?)
            }
            4 => {
                let db = r.str()?.to_string();
                let rp = r.str()?.to_string();
                let key = (db, rp);
                if let Some(s) = self
                    .shards
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                {
                    let st = s.write();
                    st.head.take();
                }
                Ok(())
            }
            k => Err(ReplayError::UnknownKind(k)),
        }
    }
}

pub(super) fn encode_points_record<'a>(
    db: &str,
    rp: &str,
    points: impl Iterator<Item = &'a Point>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.push(1u8);
    put_chunk(&mut out, db.as_bytes());
    put_chunk(&mut out, rp.as_bytes());
    let pts: Vec<&Point> = points.collect();
    put_uvarint(&mut out, pts.len() as u64);
    for p in pts {
        put_chunk(&mut out, p.measurement.as_bytes());
        put_uvarint(&mut out, p.tags.len() as u64);
        for (k, v) in &p.tags {
            put_chunk(&mut out, k.as_bytes());
            put_chunk(&mut out, v.as_bytes());
        }
        put_uvarint(&mut out, p.fields.len() as u64);
        for (k, v) in &p.fields {
            put_chunk(&mut out, k.as_bytes());
            out.push(v.field_type().code());
            match v {
                FieldValue::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
                FieldValue::Int(i) => put_uvarint(&mut out, zigzag(*i)),
                FieldValue::Bool(b) => out.push(u8::from(*b)),
                FieldValue::Str(s) => put_chunk(&mut out, s.as_bytes()),
            }
        }
        put_uvarint(&mut out, zigzag(p.time));
    }
    out
}

pub(super) fn decode_points(
    r: &mut Reader<'_>,
) -> Result<Vec<Point>, crate::encoding::DecodeError> {
    use crate::encoding::DecodeError;
    let n = r.uvarint()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let measurement = r.str()?.to_string();
        let nt = r.uvarint()? as usize;
        let mut tags = Vec::with_capacity(nt.min(256));
        for _ in 0..nt {
            tags.push((r.str()?.to_string(), r.str()?.to_string()));
        }
        let nf = r.uvarint()? as usize;
        let mut fields = Vec::with_capacity(nf.min(256));
        for _ in 0..nf {
            let k = r.str()?.to_string();
            let v = match FieldType::from_code(r.u8()?).ok_or(DecodeError("field type"))? {
                FieldType::Float => {
                    let b = r.bytes(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    FieldValue::Float(f64::from_le_bytes(a))
                }
                FieldType::Integer => FieldValue::Int(unzigzag(r.uvarint()?)),
                FieldType::Boolean => FieldValue::Bool(r.u8()? != 0),
                FieldType::String => FieldValue::Str(r.str()?.to_string()),
            };
            fields.push((k, v));
        }
        let time = unzigzag(r.uvarint()?);
        out.push(Point {
            measurement,
            tags,
            fields,
            time,
        });
    }
    Ok(out)
}
