//! Column compression for immutable blocks.
//!
//! * integers and timestamps: first value, then zigzag deltas or deltas-of-deltas, bit-packed
//!   at the width of the largest one (regular timestamps cost ~0 bits) or in simple8b words
//!   (outliers such as counter resets cost only their own word), whichever is smallest;
//! * floats: if every value of the block is exactly `k / 10^d` for a small `d` (metrics usually
//!   are), the integers `k` are encoded as above; otherwise Gorilla XOR encoding;
//! * booleans: one bit each; strings: a dictionary when values repeat, else length-prefixed.
//!
//! Invariants: `decode(encode(x)) == x` bit for bit (floats included, `-0.0` too); decoding
//! untrusted bytes never panics and never allocates more than the stated count allows
//! (counts are bounded by [`MAX_BLOCK_POINTS`]).

use crate::model::Values;

/// Upper bound on the number of points in one block, checked when decoding.
pub const MAX_BLOCK_POINTS: usize = 1 << 24;

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("corrupt block: {0}")]
pub struct DecodeError(pub &'static str);

type Result<T> = std::result::Result<T, DecodeError>;

// ---------- varints ----------

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A bounds-checked reader over a byte slice.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn uvarint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError("varint overflow"));
            }
        }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    /// A varint length followed by that many bytes.
    pub fn chunk(&mut self) -> Result<&'a [u8]> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError("length overflow"))?;
        self.bytes(n)
    }

    pub fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.chunk()?).map_err(|_| DecodeError("invalid utf-8"))
    }
}

pub fn put_chunk(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

// ---------- bit packing ----------

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    fn new() -> Self {
        BitWriter {
            out: Vec::new(),
            acc: 0,
            nbits: 0,
        }
    }

    /// Writes the low `n` bits of `v` (n <= 64), most significant first.
    fn write(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        if n > 32 {
            self.write(v >> 32, n - 32);
            self.write(v & 0xffff_ffff, 32);
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        self.acc = (self.acc << n) | v;
        self.nbits += n;
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.out.push((self.acc >> self.nbits) as u8);
        }
        self.acc &= (1u64 << self.nbits) - 1;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.out.push((self.acc << (8 - self.nbits)) as u8);
        }
        self.out
    }
}

struct BitReader<'a> {
    buf: &'a [u8],
    bitpos: usize,
}

impl<'a> BitReader<'a> {
    fn read(&mut self, n: u32) -> Result<u64> {
        if n == 0 {
            return Ok(0);
        }
        let end = self
            .bitpos
            .checked_add(n as usize)
            .ok_or(DecodeError("bits"))?;
        if end > self.buf.len() * 8 {
            return Err(DecodeError("truncated bits"));
        }
        let mut v: u64 = 0;
        let mut left = n;
        while left > 0 {
            let byte = self.buf[self.bitpos / 8];
            let off = (self.bitpos % 8) as u32;
            let avail = 8 - off;
            let take = avail.min(left);
            let bits = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            v = if take == 64 { bits } else { (v << take) | bits };
            self.bitpos += take as usize;
            left -= take;
        }
        Ok(v)
    }
}

fn check_count(n: usize) -> Result<()> {
    if n > MAX_BLOCK_POINTS {
        Err(DecodeError("block too large"))
    } else {
        Ok(())
    }
}

// ---------- integers ----------

fn width(vals: &[u64]) -> u32 {
    let m = vals.iter().fold(0u64, |a, &b| a | b);
    64 - m.leading_zeros()
}

/// Integer encodings (the first byte of an encoded integer column).
const INT_DELTA_PACKED: u8 = 1;
const INT_DOD_PACKED: u8 = 2;
const INT_DELTA_SIMPLE8B: u8 = 3;
const INT_DOD_SIMPLE8B: u8 = 4;

/// Encodes integers; the count is not stored (the caller stores it).
///
/// Four candidates are built and the smallest is kept: zigzag deltas or deltas-of-deltas, each
/// either bit-packed at one width (best for uniform columns, e.g. regular timestamps cost 0
/// bits) or in simple8b words (best when a few outliers, such as a counter reset, would
/// otherwise set the width of the whole column).
pub fn encode_ints(v: &[i64], out: &mut Vec<u8>) {
    if v.is_empty() {
        return;
    }
    let deltas: Vec<i64> = v.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let zd: Vec<u64> = deltas.iter().map(|&d| zigzag(d)).collect();
    let dods: Vec<u64> = deltas
        .windows(2)
        .map(|w| zigzag(w[1].wrapping_sub(w[0])))
        .collect();
    let mut best: Option<Vec<u8>> = None;
    let mut consider = |candidate: Vec<u8>| {
        if best.as_ref().is_none_or(|b| candidate.len() < b.len()) {
            best = Some(candidate);
        }
    };
    let header = |mode: u8, with_first_delta: bool| {
        let mut c = vec![mode];
        put_uvarint(&mut c, zigzag(v[0]));
        if with_first_delta {
            put_uvarint(&mut c, zd[0]);
        }
        c
    };
    let mut c = header(INT_DELTA_PACKED, false);
    pack_fixed(&zd, &mut c);
    consider(c);
    if v.len() > 2 {
        let mut c = header(INT_DOD_PACKED, true);
        pack_fixed(&dods, &mut c);
        consider(c);
    }
    let mut c = header(INT_DELTA_SIMPLE8B, false);
    if simple8b_encode(&zd, &mut c) {
        consider(c);
    }
    if v.len() > 2 {
        let mut c = header(INT_DOD_SIMPLE8B, true);
        if simple8b_encode(&dods, &mut c) {
            consider(c);
        }
    }
    if let Some(b) = best {
        out.extend_from_slice(&b);
    }
}

/// A width byte, then every value at that width.
fn pack_fixed(vals: &[u64], out: &mut Vec<u8>) {
    let w = width(vals);
    out.push(w as u8);
    let mut bw = BitWriter::new();
    for &d in vals {
        bw.write(d, w);
    }
    out.extend_from_slice(&bw.finish());
}

/// (values per word, bits per value) of each simple8b selector; selectors 0 and 1 are runs
/// of zeros.
const SIMPLE8B: [(usize, u32); 16] = [
    (240, 0),
    (120, 0),
    (60, 1),
    (30, 2),
    (20, 3),
    (15, 4),
    (12, 5),
    (10, 6),
    (8, 7),
    (7, 8),
    (6, 10),
    (5, 12),
    (4, 15),
    (3, 20),
    (2, 30),
    (1, 60),
];

/// Packs values into 64-bit little-endian words: a 4-bit selector (top bits) and as many
/// values as fit at the selector's width, lowest bits first. The last word may be partly
/// filled (the count is known to the decoder). Returns false if a value needs more than 60
/// bits, in which case `out` must be discarded.
fn simple8b_encode(vals: &[u64], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < vals.len() {
        let rest = &vals[i..];
        let Some((sel, take, bits)) =
            SIMPLE8B
                .iter()
                .enumerate()
                .find_map(|(sel, &(per_word, bits))| {
                    let take = per_word.min(rest.len());
                    let limit = if bits == 0 { 1 } else { 1u64 << bits };
                    rest[..take]
                        .iter()
                        .all(|&x| x < limit)
                        .then_some((sel, take, bits))
                })
        else {
            return false;
        };
        let mut word = (sel as u64) << 60;
        for (k, &x) in rest[..take].iter().enumerate() {
            word |= x << (k as u32 * bits);
        }
        out.extend_from_slice(&word.to_le_bytes());
        i += take;
    }
    true
}

/// Decodes `n` simple8b values, calling `emit` for each.
fn simple8b_decode(buf: &[u8], n: usize, mut emit: impl FnMut(u64)) -> Result<()> {
    let mut done = 0;
    let mut words = buf.chunks_exact(8);
    while done < n {
        let w = words.next().ok_or(DecodeError("truncated simple8b"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let word = u64::from_le_bytes(a);
        let (per_word, bits) = SIMPLE8B[(word >> 60) as usize];
        let take = per_word.min(n - done);
        if bits == 0 {
            for _ in 0..take {
                emit(0);
            }
        } else {
            let mask = (1u64 << bits) - 1;
            for k in 0..take {
                emit((word >> (k as u32 * bits)) & mask);
            }
        }
        done += take;
    }
    Ok(())
}

pub fn decode_ints(buf: &[u8], n: usize) -> Result<Vec<i64>> {
    check_count(n)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(buf);
    let mode = r.u8()?;
    let first = unzigzag(r.uvarint()?);
    let mut out = Vec::with_capacity(n);
    out.push(first);
    match mode {
        INT_DELTA_PACKED => {
            let w = u32::from(r.u8()?);
            if w > 64 {
                return Err(DecodeError("bad width"));
            }
            let mut br = BitReader {
                buf: &buf[r.pos..],
                bitpos: 0,
            };
            let mut cur = first;
            for _ in 1..n {
                cur = cur.wrapping_add(unzigzag(br.read(w)?));
                out.push(cur);
            }
        }
        INT_DOD_PACKED => {
            let mut delta = unzigzag(r.uvarint()?);
            let w = u32::from(r.u8()?);
            if w > 64 {
                return Err(DecodeError("bad width"));
            }
            let mut br = BitReader {
                buf: &buf[r.pos..],
                bitpos: 0,
            };
            let mut cur = first;
            for i in 1..n {
                if i > 1 {
                    delta = delta.wrapping_add(unzigzag(br.read(w)?));
                }
                cur = cur.wrapping_add(delta);
                out.push(cur);
            }
        }
        INT_DELTA_SIMPLE8B => {
            let mut cur = first;
            simple8b_decode(&buf[r.pos..], n - 1, |z| {
                cur = cur.wrapping_add(unzigzag(z));
                out.push(cur);
            })?;
        }
        INT_DOD_SIMPLE8B => {
            let mut delta = unzigzag(r.uvarint()?);
            let mut cur = first.wrapping_add(delta);
            if n > 1 {
                out.push(cur);
            }
            simple8b_decode(&buf[r.pos..], n.saturating_sub(2), |z| {
                delta = delta.wrapping_add(unzigzag(z));
                cur = cur.wrapping_add(delta);
                out.push(cur);
            })?;
        }
        _ => return Err(DecodeError("unknown integer encoding")),
    }
    Ok(out)
}

// ---------- floats ----------

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

fn as_decimal(v: &[f64]) -> Option<(u8, Vec<i64>)> {
    'outer: for (d, &scale) in POW10.iter().enumerate() {
        let mut ks = Vec::with_capacity(v.len());
        for &x in v {
            let k = (x * scale).round();
            if k.abs() >= 9.0e15 {
                continue 'outer;
            }
            let back = k / scale;
            if back.to_bits() != x.to_bits() {
                continue 'outer;
            }
            ks.push(k as i64);
        }
        return Some((d as u8, ks));
    }
    None
}

pub fn encode_floats(v: &[f64], out: &mut Vec<u8>) {
    if v.is_empty() {
        return;
    }
    let gorilla = gorilla_encode(v);
    if let Some((d, ks)) = as_decimal(v) {
        let mut dec = Vec::new();
        encode_ints(&ks, &mut dec);
        if dec.len() + 1 < gorilla.len() {
            out.push(1);
            out.push(d);
            out.extend_from_slice(&dec);
            return;
        }
    }
    out.push(0);
    out.extend_from_slice(&gorilla);
}

pub fn decode_floats(buf: &[u8], n: usize) -> Result<Vec<f64>> {
    check_count(n)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(buf);
    match r.u8()? {
        0 => gorilla_decode(&buf[1..], n),
        1 => {
            let d = r.u8()? as usize;
            let scale = *POW10.get(d).ok_or(DecodeError("bad decimal scale"))?;
            let ks = decode_ints(&buf[2..], n)?;
            Ok(ks.into_iter().map(|k| k as f64 / scale).collect())
        }
        _ => Err(DecodeError("unknown float encoding")),
    }
}

fn gorilla_encode(v: &[f64]) -> Vec<u8> {
    let mut bw = BitWriter::new();
    let mut prev = v[0].to_bits();
    bw.write(prev, 64);
    let mut lead: u32 = u32::MAX;
    let mut trail: u32 = 0;
    for &x in &v[1..] {
        let b = x.to_bits();
        let xor = b ^ prev;
        prev = b;
        if xor == 0 {
            bw.write(0, 1);
            continue;
        }
        bw.write(1, 1);
        let l = xor.leading_zeros().min(31);
        let t = xor.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            bw.write(0, 1);
            let sig = 64 - lead - trail;
            bw.write(xor >> trail, sig);
        } else {
            lead = l;
            trail = t;
            let sig = 64 - l - t;
            bw.write(1, 1);
            bw.write(u64::from(l), 5);
            // 64 significant bits are stored as 0.
            bw.write(u64::from(sig & 63), 6);
            bw.write(xor >> t, sig);
        }
    }
    bw.finish()
}

fn gorilla_decode(buf: &[u8], n: usize) -> Result<Vec<f64>> {
    let mut br = BitReader { buf, bitpos: 0 };
    let mut out = Vec::with_capacity(n);
    let mut prev = br.read(64)?;
    out.push(f64::from_bits(prev));
    let mut lead: u32 = 0;
    let mut trail: u32 = 0;
    let mut have_window = false;
    for _ in 1..n {
        if br.read(1)? == 0 {
            out.push(f64::from_bits(prev));
            continue;
        }
        if br.read(1)? == 1 {
            lead = br.read(5)? as u32;
            let mut sig = br.read(6)? as u32;
            if sig == 0 {
                sig = 64;
            }
            if lead + sig > 64 {
                return Err(DecodeError("bad gorilla window"));
            }
            trail = 64 - lead - sig;
            have_window = true;
        } else if !have_window {
            return Err(DecodeError("gorilla window missing"));
        }
        let sig = 64 - lead - trail;
        let bits = br.read(sig)?;
        let xor = if trail >= 64 { 0 } else { bits << trail };
        prev ^= xor;
        out.push(f64::from_bits(prev));
    }
    Ok(out)
}

// ---------- booleans and strings ----------

pub fn encode_bools(v: &[bool], out: &mut Vec<u8>) {
    let mut bw = BitWriter::new();
    for &b in v {
        bw.write(u64::from(b), 1);
    }
    out.extend_from_slice(&bw.finish());
}

pub fn decode_bools(buf: &[u8], n: usize) -> Result<Vec<bool>> {
    check_count(n)?;
    let mut br = BitReader { buf, bitpos: 0 };
    (0..n).map(|_| Ok(br.read(1)? == 1)).collect()
}

pub fn encode_strings(v: &[String], out: &mut Vec<u8>) {
    let mut dict: Vec<&str> = Vec::new();
    let mut idx: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut codes = Vec::with_capacity(v.len());
    for s in v {
        let next = dict.len() as i64;
        let c = *idx.entry(s.as_str()).or_insert_with(|| {
            dict.push(s.as_str());
            next
        });
        codes.push(c);
    }
    if dict.len() * 2 <= v.len() {
        out.push(1);
        put_uvarint(out, dict.len() as u64);
        for s in &dict {
            put_chunk(out, s.as_bytes());
        }
        encode_ints(&codes, out);
    } else {
        out.push(0);
        for s in v {
            put_chunk(out, s.as_bytes());
        }
    }
}

pub fn decode_strings(buf: &[u8], n: usize) -> Result<Vec<String>> {
    check_count(n)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(buf);
    match r.u8()? {
        0 => (0..n).map(|_| Ok(r.str()?.to_string())).collect(),
        1 => {
            let nd = r.uvarint()? as usize;
            check_count(nd)?;
            let mut dict = Vec::with_capacity(nd.min(4096));
            for _ in 0..nd {
                dict.push(r.str()?.to_string());
            }
            let codes = decode_ints(&buf[r.pos..], n)?;
            codes
                .into_iter()
                .map(|c| {
                    usize::try_from(c)
                        .ok()
                        .and_then(|c| dict.get(c))
                        .cloned()
                        .ok_or(DecodeError("bad dictionary code"))
                })
                .collect()
        }
        _ => Err(DecodeError("unknown string encoding")),
    }
}

/// Encodes a typed column.
pub fn encode_values(v: &Values, out: &mut Vec<u8>) {
    match v {
        Values::Float(x) => encode_floats(x, out),
        Values::Int(x) => encode_ints(x, out),
        Values::Bool(x) => encode_bools(x, out),
        Values::Str(x) => encode_strings(x, out),
    }
}

/// Decodes a typed column of `n` values.
pub fn decode_values(t: crate::model::FieldType, buf: &[u8], n: usize) -> Result<Values> {
    use crate::model::FieldType;
    Ok(match t {
        FieldType::Float => Values::Float(decode_floats(buf, n)?),
        FieldType::Integer => Values::Int(decode_ints(buf, n)?),
        FieldType::Boolean => Values::Bool(decode_bools(buf, n)?),
        FieldType::String => Values::Str(decode_strings(buf, n)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator so the property tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn ints_round_trip() {
        let mut r = Rng(0x9e3779b97f4a7c15);
        for case in 0..400 {
            let n = (r.next() % 300) as usize;
            let mut v = Vec::with_capacity(n);
            let mut cur = r.next() as i64;
            for _ in 0..n {
                cur = match case % 5 {
                    0 => cur.wrapping_add(10_000_000_000),
                    1 => cur.wrapping_add((r.next() % 100) as i64 - 50),
                    2 => r.next() as i64,
                    3 if r.next().is_multiple_of(16) => (r.next() % 1_000_000) as i64,
                    3 => cur.wrapping_add(700 + (r.next() % 3) as i64),
                    _ => [i64::MIN, i64::MAX, 0, -1][(r.next() % 4) as usize],
                };
                v.push(cur);
            }
            let mut buf = Vec::new();
            encode_ints(&v, &mut buf);
            assert_eq!(decode_ints(&buf, v.len()).unwrap(), v, "case {case}");
        }
    }

    #[test]
    fn floats_round_trip() {
        let mut r = Rng(12345);
        for case in 0..400 {
            let n = (r.next() % 300) as usize;
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(match case % 5 {
                    0 => (r.next() % 10000) as f64 / 10.0,
                    1 => f64::from_bits(r.next()),
                    2 => i as f64 * 0.25 - 3.0,
                    3 => [0.0, -0.0, f64::MAX, f64::MIN_POSITIVE, 1e-300][(r.next() % 5) as usize],
                    _ => (r.next() as f64).sqrt(),
                });
            }
            let mut buf = Vec::new();
            encode_floats(&v, &mut buf);
            let back = decode_floats(&buf, v.len()).unwrap();
            assert_eq!(back.len(), v.len());
            for (a, b) in back.iter().zip(&v) {
                assert_eq!(a.to_bits(), b.to_bits(), "case {case}");
            }
        }
    }

    #[test]
    fn strings_and_bools_round_trip() {
        let mut r = Rng(777);
        for _ in 0..200 {
            let n = (r.next() % 100) as usize;
            let s: Vec<String> = (0..n).map(|_| format!("v{}", r.next() % 7)).collect();
            let b: Vec<bool> = (0..n).map(|_| r.next().is_multiple_of(2)).collect();
            let mut buf = Vec::new();
            encode_strings(&s, &mut buf);
            assert_eq!(decode_strings(&buf, n).unwrap(), s);
            let mut buf = Vec::new();
            encode_bools(&b, &mut buf);
            assert_eq!(decode_bools(&buf, n).unwrap(), b);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut r = Rng(4242);
        for _ in 0..2000 {
            let len = (r.next() % 40) as usize;
            let buf: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
            let n = (r.next() % 64) as usize;
            let _ = decode_ints(&buf, n);
            let _ = decode_floats(&buf, n);
            let _ = decode_strings(&buf, n);
            let _ = decode_bools(&buf, n);
        }
        assert!(decode_ints(&[1, 0, 0], MAX_BLOCK_POINTS + 1).is_err());
    }

    #[test]
    fn a_counter_reset_costs_only_its_own_words() {
        // A counter growing by ~500 per step, reset once: deltas-of-deltas are tiny except
        // around the reset, which must not widen the whole column.
        let v: Vec<i64> = (0..40)
            .map(|i: i64| {
                if i < 30 {
                    500 * i + i % 3
                } else {
                    500 * (i - 30) + i % 3
                }
            })
            .collect();
        let mut buf = Vec::new();
        encode_ints(&v, &mut buf);
        assert_eq!(decode_ints(&buf, v.len()).unwrap(), v);
        assert!(buf.len() <= 40, "{}", buf.len());
    }

    #[test]
    fn regular_timestamps_are_nearly_free() {
        let v: Vec<i64> = (0..1000)
            .map(|i| 1_600_000_000_000_000_000 + i * 10_000_000_000)
            .collect();
        let mut buf = Vec::new();
        encode_ints(&v, &mut buf);
        assert!(buf.len() < 20, "{}", buf.len());
    }
}
