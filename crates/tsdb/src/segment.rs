//! Immutable, compressed segment files: one per flush (or compaction) of one shard.
//!
//! Layout (all integers varints unless noted):
//! ```text
//! "TSDBSEG\0" u32-LE version
//! body:   nfield-names, names...           (field-name dictionary)
//!         nseries, per series:
//!           measurement, ntags, (key, value)...,
//!           npoints, chunk(times)          (the union of the fields' times, sorted, unique)
//!           nfields, per field: name-id, type u8, has-bitmap u8, [chunk(bitmap)], count, chunk(values)
//! footer: u32-LE crc32 of the body
//! ```
//! Timestamps are stored once per series: fields written together share them, which is what
//! keeps regular metrics near one byte per value.
//!
//! Invariants: a file is written to `*.tmp`, fsynced and renamed, so a segment on disk is always
//! complete; a body whose checksum fails, or an unknown version, refuses to load (fail closed).

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
use crate::encoding::{self, DecodeError, Reader, put_chunk, put_uvarint};
use crate::model::{Column, FieldType, Values};

pub const SEG_MAGIC: &[u8; 8] = b"TSDBSEG\0";
pub const SEG_VERSION: u32 = 1;

/// One series of a segment, as located in the file's bytes.
#[derive(Debug)]
pub struct SegSeries {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub n: usize,
    times: Range<usize>,
    pub min_t: i64,
    pub max_t: i64,
    pub fields: Vec<SegField>,
}

#[derive(Debug)]
pub struct SegField {
    pub name: Arc<str>,
    pub ftype: FieldType,
    bitmap: Option<Range<usize>>,
    count: usize,
    values: Range<usize>,
}

impl SegField {
    /// Number of values stored.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// A loaded segment: the raw bytes plus an index into them.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    data: Vec<u8>,
    pub series: Vec<SegSeries>,
    pub min_t: i64,
    pub max_t: i64,
}

/// Input for writing: one series with its (normalized) columns.
pub struct SeriesData<'a> {
    pub measurement: &'a str,
    pub tags: &'a [(String, String)],
    pub columns: Vec<(&'a str, &'a Column)>,
}

pub fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn dec(path: &Path) -> impl Fn(DecodeError) -> Error + '_ {
    move |e| Error::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Encodes series into segment bytes.
pub fn encode(series: &[SeriesData<'_>]) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    let mut name_ids: HashMap<&str, u64> = HashMap::new();
    for s in series {
        for (n, _) in &s.columns {
            if !name_ids.contains_key(n) {
                name_ids.insert(n, names.len() as u64);
                names.push(n);
            }
        }
    }
    let mut body = Vec::new();
    put_uvarint(&mut body, names.len() as u64);
    for n in &names {
        put_chunk(&mut body, n.as_bytes());
    }
    put_uvarint(&mut body, series.len() as u64);
    let mut scratch = Vec::new();
    for s in series {
        put_chunk(&mut body, s.measurement.as_bytes());
        put_uvarint(&mut body, s.tags.len() as u64);
        for (k, v) in s.tags {
            put_chunk(&mut body, k.as_bytes());
            put_chunk(&mut body, v.as_bytes());
        }
        let same = s.columns.windows(2).all(|w| w[0].1.times == w[1].1.times);
        let times: Vec<i64> = if same {
            s.columns
                .first()
                .map(|c| c.1.times.clone())
                .unwrap_or_default()
        } else {
            let mut t: Vec<i64> = s
                .columns
                .iter()
                .flat_map(|c| c.1.times.iter().copied())
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        put_uvarint(&mut body, times.len() as u64);
        scratch.clear();
        encoding::encode_ints(&times, &mut scratch);
        put_chunk(&mut body, &scratch);
        put_uvarint(&mut body, s.columns.len() as u64);
        for (name, col) in &s.columns {
            put_uvarint(&mut body, name_ids[name]);
            body.push(col.values.field_type().code());
            if same {
                body.push(0);
            } else {
                body.push(1);
                let mut present = Vec::with_capacity(times.len());
                let mut j = 0;
                for &t in &times {
                    let p = j < col.times.len() && col.times[j] == t;
                    if p {
                        j += 1;
                    }
                    present.push(p);
                }
                scratch.clear();
                encoding::encode_bools(&present, &mut scratch);
                put_chunk(&mut body, &scratch);
            }
            put_uvarint(&mut body, col.values.len() as u64);
            scratch.clear();
            encoding::encode_values(&col.values, &mut scratch);
            put_chunk(&mut body, &scratch);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(SEG_MAGIC);
    out.extend_from_slice(&SEG_VERSION.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out
}

/// Writes a segment durably: tmp file, fsync, rename, fsync dir. Replaces an existing `seq`.
pub fn write(dir: &Path, seq: u64, series: &[SeriesData<'_>]) -> Result<Segment, Error> {
    let bytes = encode(series);
    let path = seg_path(dir, seq);
    let tmp = dir.join(format!("{seq:020}.seg.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming segment", e))?;
    crate::wal::sync_dir(dir)?;
    Segment::parse(seq, path, bytes)
}

impl Segment {
    pub fn load(seq: u64, path: PathBuf) -> Result<Segment, Error> {
        let data = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Segment::parse(seq, path, data)
    }

    fn parse(seq: u64, path: PathBuf, data: Vec<u8>) -> Result<Segment, Error> {
        let corrupt = |d: &str| Error::Corrupt {
            path: path.clone(),
            detail: d.to_string(),
        };
        if data.len() < 16 || &data[..8] != SEG_MAGIC {
            return Err(corrupt("bad segment header"));
        }
        let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        if version != SEG_VERSION {
            return Err(Error::UnsupportedFormat {
                path,
                found: format!("segment version {version}"),
                expected: SEG_VERSION,
            });
        }
        let body_end = data.len() - 4;
        let crc = u32::from_le_bytes([
            data[body_end],
            data[body_end + 1],
            data[body_end + 2],
            data[body_end + 3],
        ]);
        if crc32fast::hash(&data[12..body_end]) != crc {
            return Err(corrupt("segment checksum mismatch"));
        }
        let mut r = Reader::new(&data[..body_end]);
        r.pos = 12;
        let d_path = path.clone();
        let d = dec(&d_path);
        let nnames = r.uvarint().map_err(&d)? as usize;
        let mut names: Vec<Arc<str>> = Vec::with_capacity(nnames.min(65536));
        for _ in 0..nnames {
            names.push(Arc::from(r.str().map_err(&d)?));
        }
        let nseries = r.uvarint().map_err(&d)? as usize;
        let mut series = Vec::with_capacity(nseries.min(1 << 20));
        let (mut smin, mut smax) = (i64::MAX, i64::MIN);
        for _ in 0..nseries {
            let measurement = r.str().map_err(&d)?.to_string();
            let ntags = r.uvarint().map_err(&d)? as usize;
            let mut tags = Vec::with_capacity(ntags.min(256));
            for _ in 0..ntags {
                let k = r.str().map_err(&d)?.to_string();
                let v = r.str().map_err(&d)?.to_string();
                tags.push((k, v));
            }
            let n = r.uvarint().map_err(&d)? as usize;
            let tstart = {
                let len = r.uvarint().map_err(&d)? as usize;
                let s = r.pos;
                r.bytes(len).map_err(&d)?;
                s..s + len
            };
            let times = encoding::decode_ints(&data[tstart.clone()], n).map_err(&d)?;
            let (min_t, max_t) = match (times.first(), times.last()) {
                (Some(&a), Some(&b)) => (a, b),
                _ => return Err(corrupt("empty series in segment")),
            };
            smin = smin.min(min_t);
            smax = smax.max(max_t);
            let nf = r.uvarint().map_err(&d)? as usize;
            let mut fields = Vec::with_capacity(nf.min(4096));
            for _ in 0..nf {
                let id = r.uvarint().map_err(&d)? as usize;
                let name = names
                    .get(id)
                    .cloned()
                    .ok_or_else(|| corrupt("bad field id"))?;
                let ftype =
                    FieldType::from_code(r.u8().map_err(&d)?).ok_or_else(|| corrupt("bad type"))?;
                let bitmap = match r.u8().map_err(&d)? {
                    0 => None,
                    1 => {
                        let len = r.uvarint().map_err(&d)? as usize;
                        let s = r.pos;
                        r.bytes(len).map_err(&d)?;
                        Some(s..s + len)
                    }
                    _ => return Err(corrupt("bad bitmap flag")),
                };
                let count = r.uvarint().map_err(&d)? as usize;
                if count > n {
                    return Err(corrupt("field has more values than times"));
                }
                let len = r.uvarint().map_err(&d)? as usize;
                let s = r.pos;
                r.bytes(len).map_err(&d)?;
                fields.push(SegField {
                    name,
                    ftype,
                    bitmap,
                    count,
                    values: s..s + len,
                });
            }
            series.push(SegSeries {
                measurement,
                tags,
                n,
                times: tstart,
                min_t,
                max_t,
                fields,
            });
        }
        if !r.is_empty() {
            return Err(corrupt("trailing bytes in segment body"));
        }
        Ok(Segment {
            seq,
            path,
            data,
            series,
            min_t: smin,
            max_t: smax,
        })
    }

    /// Disk size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Decodes one field of series number `si`.
    pub fn read(&self, si: usize, field: &str) -> Result<Option<Column>, Error> {
        let Some(s) = self.series.get(si) else {
            return Ok(None);
        };
        let Some(f) = s.fields.iter().find(|f| &*f.name == field) else {
            return Ok(None);
        };
        let d = dec(&self.path);
        let times = encoding::decode_ints(&self.data[s.times.clone()], s.n).map_err(&d)?;
        let values =
            encoding::decode_values(f.ftype, &self.data[f.values.clone()], f.count).map_err(&d)?;
        let times = match &f.bitmap {
            None => times,
            Some(b) => {
                let present = encoding::decode_bools(&self.data[b.clone()], s.n).map_err(&d)?;
                times
                    .into_iter()
                    .zip(present)
                    .filter_map(|(t, p)| p.then_some(t))
                    .collect()
            }
        };
        if times.len() != values.len() {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                detail: "time and value counts differ".into(),
            });
        }
        Ok(Some(Column { times, values }))
    }
}

/// Used by tests and `Values`-level helpers.
pub fn empty_values(t: FieldType) -> Values {
    Values::new(t)
}
