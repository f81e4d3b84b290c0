//! Immutable, compressed segment files: one per flush (or compaction) of one shard.
//!
//! Layout (all integers varints unless noted):
//! ```text
//! "TSDBSEG\0" u32-LE version
//! body:   nstrings, strings...                      (measurements, tag keys/values, field names)
//!         nschemas, per schema: nfields, (name-id, type u8)...
//!         time-base (zigzag)
//!         nseries, per series:
//!           measurement-id, ntags, (key-id, value-id)...,
//!           schema-id, npoints, time-exponent u8, chunk(times)
//!           per schema field: has-bitmap u8, [chunk(bitmap)], chunk(values)
//! footer: u32-LE crc32 of the body
//! ```
//! Timestamps are stored once per series (the union of its fields' times, sorted, unique) as
//! `(t - time-base) / 10^time-exponent`: fields written together share them, and second or
//! millisecond precision costs nothing. A field without a bitmap has a value at every time; a
//! bitmap marks the times it has. Strings and field lists (schemas) are stored once per
//! segment, so a series costs a few bytes besides its columns.
//!
//! Version history: 1 stored names, tags and field headers inline per series; it is refused
//! with [`Error::UnsupportedFormat`] (fail closed) rather than read.
//!
//! Invariants: a file is written with `torc_durable::write_atomic` (a `.*.tmp` file, fsynced,
//! renamed, the directory fsynced; a leftover `.tmp` is removed at open), so a segment on disk is always
//! complete; a body whose checksum fails, or an unknown version, refuses to load (fail closed).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
use crate::encoding::{self, DecodeError, Reader, put_chunk, put_uvarint, unzigzag, zigzag};
use crate::error::Damage;
use crate::model::{Column, FieldType, Values};

pub const SEG_MAGIC: &[u8; 8] = b"TSDBSEG\0";
pub const SEG_VERSION: u32 = 2;

/// Largest power of ten a time column may be scaled by (10^18 still fits an i64).
const MAX_TIME_EXPONENT: u8 = 18;

/// One series of a segment, as located in the file's bytes.
#[derive(Debug)]
pub struct SegSeries {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub n: usize,
    times: Range<usize>,
    /// 10^time-exponent: stored times are multiplied by it and added to the segment's base.
    time_scale: i64,
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
    time_base: i64,
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
        detail: e.into(),
    }
}

/// Interns strings (and field lists) in first-seen order.
struct Interner<K> {
    ids: HashMap<K, u64>,
    items: Vec<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Interner<K> {
    fn new() -> Self {
        Interner {
            ids: HashMap::new(),
            items: Vec::new(),
        }
    }

    fn id(&mut self, k: K) -> u64 {
        if let Some(&id) = self.ids.get(&k) {
            return id;
        }
        let id = self.items.len() as u64;
        self.ids.insert(k.clone(), id);
        self.items.push(k);
        id
    }
}

/// The largest `e <= MAX_TIME_EXPONENT` such that 10^e divides every offset.
fn time_exponent(offsets: &[i64]) -> u8 {
    let mut e = 0u8;
    let mut scale: i64 = 1;
    while e < MAX_TIME_EXPONENT {
        let next = scale * 10;
        if offsets.iter().any(|&o| o % next != 0) {
            break;
        }
        scale = next;
        e += 1;
    }
    e
}

/// The times of one series: its columns' shared times, or their sorted union.
fn series_times(s: &SeriesData<'_>) -> (Vec<i64>, bool) {
    let same = s.columns.windows(2).all(|w| w[0].1.times == w[1].1.times);
    if same {
        let t = s
            .columns
            .first()
            .map(|c| c.1.times.clone())
            .unwrap_or_default();
        return (t, true);
    }
    let mut t: Vec<i64> = s
        .columns
        .iter()
        .flat_map(|c| c.1.times.iter().copied())
        .collect();
    t.sort_unstable();
    t.dedup();
    (t, false)
}

/// Encodes series into segment bytes. Series without any point are skipped.
pub fn encode(series: &[SeriesData<'_>]) -> Vec<u8> {
    let mut strings: Interner<&str> = Interner::new();
    let mut schemas: Interner<Vec<(u64, u8)>> = Interner::new();
    let prepared: Vec<(&SeriesData<'_>, Vec<i64>, bool)> = series
        .iter()
        .map(|s| {
            let (t, same) = series_times(s);
            (s, t, same)
        })
        .filter(|(_, t, _)| !t.is_empty())
        .collect();
    let time_base = prepared
        .iter()
        .filter_map(|(_, t, _)| t.first().copied())
        .min()
        .unwrap_or(0);
    let mut records = Vec::new();
    let mut scratch = Vec::new();
    for (s, times, same) in &prepared {
        put_uvarint(&mut records, strings.id(s.measurement));
        put_uvarint(&mut records, s.tags.len() as u64);
        for (k, v) in s.tags {
            put_uvarint(&mut records, strings.id(k.as_str()));
            put_uvarint(&mut records, strings.id(v.as_str()));
        }
        let schema: Vec<(u64, u8)> = s
            .columns
            .iter()
            .map(|(name, col)| (strings.id(name), col.values.field_type().code()))
            .collect();
        put_uvarint(&mut records, schemas.id(schema));
        put_uvarint(&mut records, times.len() as u64);
        let offsets: Vec<i64> = times.iter().map(|t| t.wrapping_sub(time_base)).collect();
        let e = time_exponent(&offsets);
        records.push(e);
        let scale = 10i64.pow(u32::from(e));
        let scaled: Vec<i64> = offsets.iter().map(|o| o / scale).collect();
        scratch.clear();
        encoding::encode_ints(&scaled, &mut scratch);
        put_chunk(&mut records, &scratch);
        for (_, col) in &s.columns {
            if *same {
                records.push(0);
            } else {
                records.push(1);
                let mut present = Vec::with_capacity(times.len());
                let mut j = 0;
                for &t in times {
                    let p = j < col.times.len() && col.times[j] == t;
                    if p {
                        j += 1;
                    }
                    present.push(p);
                }
                scratch.clear();
                encoding::encode_bools(&present, &mut scratch);
                put_chunk(&mut records, &scratch);
            }
            scratch.clear();
            encoding::encode_values(&col.values, &mut scratch);
            put_chunk(&mut records, &scratch);
        }
    }
    let mut body = Vec::with_capacity(records.len() + 4096);
    put_uvarint(&mut body, strings.items.len() as u64);
    for st in &strings.items {
        put_chunk(&mut body, st.as_bytes());
    }
    put_uvarint(&mut body, schemas.items.len() as u64);
    for sc in &schemas.items {
        put_uvarint(&mut body, sc.len() as u64);
        for &(name, code) in sc {
            put_uvarint(&mut body, name);
            body.push(code);
        }
    }
    put_uvarint(&mut body, zigzag(time_base));
    put_uvarint(&mut body, prepared.len() as u64);
    body.extend_from_slice(&records);
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
    torc_durable::write_atomic(&path, &bytes)?;
    Segment::parse(seq, path, bytes)
}

/// Writes the bytes of a segment file taken from elsewhere (a backup) as segment `seq` of
/// `dir`, durably, once they have passed every check a load makes (header, version, checksum,
/// structure): damaged bytes never reach the directory.
pub fn write_checked(dir: &Path, seq: u64, bytes: Vec<u8>) -> Result<Segment, Error> {
    let path = seg_path(dir, seq);
    let seg = Segment::parse(seq, path.clone(), bytes)?;
    torc_durable::write_atomic(&path, &seg.data)?;
    Ok(seg)
}

/// Reads a varint length and skips that many bytes, returning their range.
fn chunk_range(r: &mut Reader<'_>) -> Result<Range<usize>, DecodeError> {
    let len = usize::try_from(r.uvarint()?).map_err(|_| DecodeError("length overflow"))?;
    let s = r.pos;
    r.bytes(len)?;
    Ok(s..s + len)
}

impl Segment {
    pub fn load(seq: u64, path: PathBuf) -> Result<Segment, Error> {
        let data = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Segment::parse(seq, path, data)
    }

    /// A segment file's bytes checked and indexed: header, version and checksum, then the
    /// string table, the field lists (schemas) and each series' directory.
    fn parse(seq: u64, path: PathBuf, data: Vec<u8>) -> Result<Segment, Error> {
        let body_end = check_frame(&path, &data)?;
        let mut r = Reader::new(&data[..body_end]);
        r.pos = 12;
        // Borrowed by the readers below; `path` itself goes into the segment.
        let at = path.clone();
        let d = dec(&at);
        let nstrings = r.uvarint().map_err(&d)? as usize;
        let mut strings: Vec<Arc<str>> = Vec::with_capacity(nstrings.min(1 << 16));
        for _ in 0..nstrings {
            strings.push(Arc::from(r.str().map_err(&d)?));
        }
        let table = Table {
            path: &at,
            data: &data,
            strings: &strings,
            schemas: Vec::new(),
        };
        let table = table.read_schemas(&mut r)?;
        let time_base = unzigzag(r.uvarint().map_err(&d)?);
        let nseries = r.uvarint().map_err(&d)? as usize;
        let mut series = Vec::with_capacity(nseries.min(1 << 20));
        let (mut smin, mut smax) = (i64::MAX, i64::MIN);
        for _ in 0..nseries {
            let s = table.read_series(&mut r, time_base)?;
            smin = smin.min(s.min_t);
            smax = smax.max(s.max_t);
            series.push(s);
        }
        if !r.is_empty() {
            return Err(corrupt(&at, Damage::TrailingBytes));
        }
        Ok(Segment {
            seq,
            path,
            data,
            time_base,
            series,
            min_t: smin,
            max_t: smax,
        })
    }

    /// Disk size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// The file's bytes (header, body, checksum), as a backup copies them.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Number of values stored (over every series and field).
    pub fn values(&self) -> u64 {
        self.series
            .iter()
            .flat_map(|s| &s.fields)
            .map(|f| f.count() as u64)
            .sum()
    }

    /// Decodes one field of series number `si`.
    pub fn read(&self, si: usize, field: &str) -> Result<Option<Column>, Error> {
        Ok(self.read_fields(si, &[field])?.pop().flatten())
    }

    /// Decodes several fields of series number `si`, decoding its times once. The result has
    /// one entry per requested field, `None` where the series lacks it.
    pub fn read_fields(&self, si: usize, fields: &[&str]) -> Result<Vec<Option<Column>>, Error> {
        let mut out: Vec<Option<Column>> = fields.iter().map(|_| None).collect();
        let Some(s) = self.series.get(si) else {
            return Ok(out);
        };
        let names: Vec<&str> = s.fields.iter().map(|f| &*f.name).collect();
        let wanted: Vec<Option<&SegField>> = crate::model::positions(&names, fields)
            .into_iter()
            .map(|at| at.map(|i| &s.fields[i]))
            .collect();
        if wanted.iter().all(Option::is_none) {
            return Ok(out);
        }
        let d = dec(&self.path);
        let times = decode_times(&self.data, self.time_base, s).map_err(&d)?;
        for (slot, f) in out.iter_mut().zip(wanted) {
            let Some(f) = f else { continue };
            let values = encoding::decode_values(f.ftype, &self.data[f.values.clone()], f.count)
                .map_err(&d)?;
            let times = match &f.bitmap {
                None => times.clone(),
                Some(b) => {
                    let present = encoding::decode_bools(&self.data[b.clone()], s.n).map_err(&d)?;
                    times
                        .iter()
                        .zip(present)
                        .filter_map(|(&t, p)| p.then_some(t))
                        .collect()
                }
            };
            if times.len() != values.len() {
                return Err(Error::Corrupt {
                    path: self.path.clone(),
                    detail: Damage::ValueCount,
                });
            }
            *slot = Some(Column { times, values });
        }
        Ok(out)
    }
}

fn corrupt(path: &Path, detail: Damage) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}

/// Checks a segment's header, version and checksum; returns where its body ends.
fn check_frame(path: &Path, data: &[u8]) -> Result<usize, Error> {
    if data.len() < 16 || &data[..8] != SEG_MAGIC {
        return Err(corrupt(path, Damage::SegmentHeader));
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != SEG_VERSION {
        return Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
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
        return Err(corrupt(path, Damage::SegmentChecksum));
    }
    Ok(body_end)
}

/// What a segment's series directory refers to while it is read: the file's bytes, its
/// string table and its field lists.
struct Table<'a> {
    path: &'a Path,
    data: &'a [u8],
    strings: &'a [Arc<str>],
    schemas: Vec<Vec<(Arc<str>, FieldType)>>,
}

impl Table<'_> {
    fn string(&self, id: u64) -> Result<&Arc<str>, Error> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.strings.get(i))
            .ok_or_else(|| corrupt(self.path, Damage::StringId))
    }

    /// The field lists (name, type) that series refer to by index.
    fn read_schemas(mut self, r: &mut Reader<'_>) -> Result<Self, Error> {
        let d = dec(self.path);
        let nschemas = r.uvarint().map_err(&d)? as usize;
        let mut schemas = Vec::with_capacity(nschemas.min(1 << 16));
        for _ in 0..nschemas {
            let nf = r.uvarint().map_err(&d)? as usize;
            let mut fields = Vec::with_capacity(nf.min(4096));
            for _ in 0..nf {
                let name = self.string(r.uvarint().map_err(&d)?)?.clone();
                let ftype = FieldType::from_code(r.u8().map_err(&d)?)
                    .ok_or_else(|| corrupt(self.path, Damage::FieldType))?;
                fields.push((name, ftype));
            }
            schemas.push(fields);
        }
        self.schemas = schemas;
        Ok(self)
    }

    /// One series' entry: its key, its time column (decoded once for its bounds) and its
    /// fields' value columns and presence bitmaps.
    fn read_series(&self, r: &mut Reader<'_>, time_base: i64) -> Result<SegSeries, Error> {
        let d = dec(self.path);
        let measurement = self.string(r.uvarint().map_err(&d)?)?.to_string();
        let ntags = r.uvarint().map_err(&d)? as usize;
        let mut tags = Vec::with_capacity(ntags.min(256));
        for _ in 0..ntags {
            let k = self.string(r.uvarint().map_err(&d)?)?.to_string();
            let v = self.string(r.uvarint().map_err(&d)?)?.to_string();
            tags.push((k, v));
        }
        let schema = usize::try_from(r.uvarint().map_err(&d)?)
            .ok()
            .and_then(|i| self.schemas.get(i))
            .ok_or_else(|| corrupt(self.path, Damage::SchemaId))?;
        let n = r.uvarint().map_err(&d)? as usize;
        let e = r.u8().map_err(&d)?;
        if e > MAX_TIME_EXPONENT {
            return Err(corrupt(self.path, Damage::TimeExponent));
        }
        let times = chunk_range(r).map_err(&d)?;
        let mut s = SegSeries {
            measurement,
            tags,
            n,
            times,
            time_scale: 10i64.pow(u32::from(e)),
            min_t: 0,
            max_t: 0,
            fields: Vec::with_capacity(schema.len()),
        };
        let decoded = decode_times(self.data, time_base, &s).map_err(&d)?;
        (s.min_t, s.max_t) = match (decoded.first(), decoded.last()) {
            (Some(&a), Some(&b)) => (a, b),
            _ => return Err(corrupt(self.path, Damage::EmptySeries)),
        };
        for (name, ftype) in schema {
            let (bitmap, count) = match r.u8().map_err(&d)? {
                0 => (None, n),
                1 => {
                    let b = chunk_range(r).map_err(&d)?;
                    let present = encoding::decode_bools(&self.data[b.clone()], n).map_err(&d)?;
                    (Some(b), present.iter().filter(|&&p| p).count())
                }
                _ => return Err(corrupt(self.path, Damage::BitmapFlag)),
            };
            let values = chunk_range(r).map_err(&d)?;
            s.fields.push(SegField {
                name: name.clone(),
                ftype: *ftype,
                bitmap,
                count,
                values,
            });
        }
        Ok(s)
    }
}

/// The absolute times of a series.
fn decode_times(data: &[u8], base: i64, s: &SegSeries) -> Result<Vec<i64>, DecodeError> {
    let mut t = encoding::decode_ints(&data[s.times.clone()], s.n)?;
    for x in &mut t {
        *x = base.wrapping_add(x.wrapping_mul(s.time_scale));
    }
    Ok(t)
}

/// Used by tests and `Values`-level helpers.
pub fn empty_values(t: FieldType) -> Values {
    Values::new(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(times: &[i64], values: Values) -> Column {
        Column {
            times: times.to_vec(),
            values,
        }
    }

    #[test]
    fn round_trip_with_shared_and_sparse_fields() {
        let dir = tempfile::tempdir().unwrap();
        let tags_a = vec![("host".to_string(), "a".to_string())];
        let tags_b = vec![
            ("cpu".to_string(), "0".to_string()),
            ("host".to_string(), "b".to_string()),
        ];
        // Series a: fields written together (shared times, second precision).
        let a_f = col(
            &[1_000_000_000, 2_000_000_000, 3_000_000_000],
            Values::Float(vec![1.5, -0.0, f64::MAX]),
        );
        let a_i = col(
            &[1_000_000_000, 2_000_000_000, 3_000_000_000],
            Values::Int(vec![10, 20, -5]),
        );
        // Series b: fields with different times (bitmaps), nanosecond and negative times.
        let b_s = col(
            &[-7, 3, 1_000_000_001],
            Values::Str(vec!["x".into(), "y".into(), "x".into()]),
        );
        let b_b = col(&[3, 9], Values::Bool(vec![true, false]));
        let data = vec![
            SeriesData {
                measurement: "m",
                tags: &tags_a,
                columns: vec![("f", &a_f), ("i", &a_i)],
            },
            SeriesData {
                measurement: "n",
                tags: &tags_b,
                columns: vec![("s", &b_s), ("b", &b_b)],
            },
        ];
        let written = write(dir.path(), 7, &data).unwrap();
        let seg = Segment::load(7, seg_path(dir.path(), 7)).unwrap();
        assert_eq!(seg.size(), written.size());
        assert_eq!((seg.min_t, seg.max_t), (-7, 3_000_000_000));
        assert_eq!(seg.series[0].measurement, "m");
        assert_eq!(seg.series[1].tags, tags_b);
        let got = seg.read_fields(0, &["i", "nope", "f"]).unwrap();
        assert_eq!(got[0].as_ref(), Some(&a_i));
        assert!(got[1].is_none());
        let f = got[2].as_ref().unwrap();
        assert_eq!(f.times, a_f.times);
        let (Values::Float(x), Values::Float(y)) = (&f.values, &a_f.values) else {
            panic!("float column expected");
        };
        assert!(x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(seg.read(1, "s").unwrap(), Some(b_s));
        assert_eq!(seg.read(1, "b").unwrap(), Some(b_b));
        assert_eq!(seg.series[1].fields[1].count(), 2);
    }

    #[test]
    fn other_versions_refuse_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let tags = Vec::new();
        let c = col(&[1], Values::Int(vec![1]));
        write(
            dir.path(),
            1,
            &[SeriesData {
                measurement: "m",
                tags: &tags,
                columns: vec![("v", &c)],
            }],
        )
        .unwrap();
        let path = seg_path(dir.path(), 1);
        let mut b = std::fs::read(&path).unwrap();
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&path, b).unwrap();
        let e = Segment::load(1, path).unwrap_err();
        assert!(
            matches!(&e, Error::UnsupportedFormat { found, .. } if found == "segment version 1"),
            "{e}"
        );
    }
}
