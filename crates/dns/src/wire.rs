//! Hand-rolled reading of DNS queries, patching of encoded answers, and the answers without
//! records.
//!
//! This is the hot path: a query is read without allocating, its name is lowercased into a
//! caller-provided key buffer, and a pre-encoded answer is patched in place (ID, flags, the
//! question's case) instead of being encoded again. Answers with records are built by
//! `hickory-proto` (`engine.rs`, from what `catalog.rs` resolves); this module writes only the
//! answers that are a header, the question and maybe an OPT record (`bare_answer`,
//! `error_answer`, `truncate`, `push_opt`).
//!
//! Invariants:
//! - No function here panics, whatever the bytes: every index is checked first.
//! - A query with the QR bit set is never answered (no reflection loops between servers).
//! - A [`Query`] always holds exactly one question whose name has no compression pointer and is
//!   at most 255 bytes long, so it can be copied verbatim over the question of an answer.

/// Length of the fixed DNS header.
pub(crate) const HEADER_LEN: usize = 12;
/// Largest wire-format name (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Bytes in front of the name in a cache key: EDNS flags, qtype, qclass.
pub(crate) const KEY_PREFIX: usize = 5;
/// Size of the buffer a key is written into.
pub(crate) const KEY_LEN: usize = KEY_PREFIX + MAX_NAME_LEN;

pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const CLASS_ANY: u16 = 255;

/// Header flag bits, byte 2.
pub(crate) const FLAG_QR: u8 = 0x80;
pub(crate) const FLAG_AA: u8 = 0x04;
pub(crate) const FLAG_TC: u8 = 0x02;
pub(crate) const FLAG_RD: u8 = 0x01;
/// Header flag bits, byte 3.
pub(crate) const FLAG_RA: u8 = 0x80;
pub(crate) const FLAG_CD: u8 = 0x10;

/// Response codes this module writes itself.
pub(crate) mod rcode {
    pub(crate) const NOERROR: u8 = 0;
    pub(crate) const FORMERR: u8 = 1;
    pub(crate) const SERVFAIL: u8 = 2;
    pub(crate) const NXDOMAIN: u8 = 3;
    pub(crate) const NOTIMP: u8 = 4;
    pub(crate) const REFUSED: u8 = 5;
    /// BADVERS is 16: low 4 bits in the header (0), high 8 bits in the OPT record (1).
    pub(crate) const BADVERS_HIGH: u8 = 1;
}

/// The EDNS(0) part of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Edns {
    /// The client's UDP payload size, as sent (may be below 512).
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query read by [`parse_query`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Query<'a> {
    pub id: u16,
    /// Byte 2 of the header (QR, opcode, AA, TC, RD).
    pub flags_hi: u8,
    /// Byte 3 of the header (RA, Z, AD, CD, rcode).
    pub flags_lo: u8,
    /// The question name as sent (original case), including the root label.
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// Length of header plus question, i.e. where the answer section starts.
    pub(crate) fn question_end(&self) -> usize {
        HEADER_LEN + self.qname.len() + 4
    }

    /// The largest UDP answer the client accepts (RFC 6891 §6.2.5: never below 512).
    pub(crate) fn udp_limit(&self, server_max: u16) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload.clamp(512, server_max.max(512))),
            None => 512,
        }
    }
}

/// What to do with a packet.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// Not a query, or not even a header: say nothing.
    Drop,
    /// A readable header but a query we will not look up: answer with a bare header.
    Error { id: u16, flags_hi: u8, rcode: u8 },
    /// A well-formed query; the lowercased key was written to the key buffer.
    Query { query: Query<'a>, key_len: usize },
}

/// Reads a query and writes its cache key into `key`: `[flags][qtype][qclass][name]`, the name
/// lowercased; the flags byte says whether the query has EDNS, DO, and capitals in its name. The key identifies the answer bytes completely, except for the ID, RD, CD, RA
/// and the question's case, which are patched per query.
pub(crate) fn parse_query<'a>(packet: &'a [u8], key: &mut [u8; KEY_LEN]) -> Parsed<'a> {
    let Some(header) = packet.get(..HEADER_LEN) else {
        return Parsed::Drop;
    };
    let id = u16::from_be_bytes([header[0], header[1]]);
    let flags_hi = header[2];
    let flags_lo = header[3];
    if flags_hi & FLAG_QR != 0 {
        return Parsed::Drop;
    }
    let error = |rcode| Parsed::Error {
        id,
        flags_hi,
        rcode,
    };
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    if (flags_hi >> 3) & 0x0f != 0 {
        return error(rcode::NOTIMP);
    }
    if qdcount != 1 || ancount != 0 || nscount != 0 {
        return error(rcode::FORMERR);
    }

    // The question name: plain labels only, lowercased into the key as we go.
    let mut pos = HEADER_LEN;
    let mut out = KEY_PREFIX;
    let mut mixed_case = false;
    loop {
        let Some(&len) = packet.get(pos) else {
            return error(rcode::FORMERR);
        };
        let len = usize::from(len);
        if len > 63 {
            // A compression pointer (or a reserved label type) in a question: nobody sends one.
            return error(rcode::FORMERR);
        }
        let Some(label) = packet.get(pos..pos + 1 + len) else {
            return error(rcode::FORMERR);
        };
        if out + label.len() > KEY_LEN {
            return error(rcode::FORMERR);
        }
        for (dst, src) in key[out..out + label.len()].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
            mixed_case |= *dst != *src;
        }
        out += label.len();
        pos += label.len();
        if len == 0 {
            break;
        }
    }
    let qname = &packet[HEADER_LEN..pos];
    let Some(tc) = packet.get(pos..pos + 4) else {
        return error(rcode::FORMERR);
    };
    let qtype = u16::from_be_bytes([tc[0], tc[1]]);
    let qclass = u16::from_be_bytes([tc[2], tc[3]]);
    pos += 4;

    // The additional section: find the OPT record, skip anything else (we do not verify TSIG).
    let mut edns = None;
    for _ in 0..arcount {
        let Some(name_end) = skip_name(packet, pos) else {
            return error(rcode::FORMERR);
        };
        let Some(fixed) = packet.get(name_end..name_end + 10) else {
            return error(rcode::FORMERR);
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let end = name_end + 10 + rdlen;
        if end > packet.len() {
            return error(rcode::FORMERR);
        }
        if rtype == TYPE_OPT {
            // RFC 6891 §6.1.1: one OPT only, owned by the root.
            if edns.is_some() || name_end != pos + 1 || packet[pos] != 0 {
                return error(rcode::FORMERR);
            }
            edns = Some(Edns {
                payload: u16::from_be_bytes([fixed[2], fixed[3]]),
                version: fixed[5],
                dnssec_ok: fixed[6] & 0x80 != 0,
            });
        }
        pos = end;
    }
    if qtype == TYPE_OPT {
        return error(rcode::FORMERR);
    }

    // A question with capitals gets answers of its own (see `engine::encode`).
    key[0] = match edns {
        None => 0,
        Some(e) => 1 | (u8::from(e.dnssec_ok) << 1),
    } | (u8::from(mixed_case) << 2);
    key[1..3].copy_from_slice(&qtype.to_be_bytes());
    key[3..5].copy_from_slice(&qclass.to_be_bytes());
    Parsed::Query {
        query: Query {
            id,
            flags_hi,
            flags_lo,
            qname,
            qtype,
            qclass,
            edns,
        },
        key_len: out,
    }
}

/// What [`read_query`] made of a packet.
pub(crate) enum Read<'a> {
    /// A query to look up; its key is in the key buffer, `key_len` bytes long.
    Query { query: Query<'a>, key_len: usize },
    /// Not to be looked up: `out` holds its header-only error answer (FORMERR, NOTIMP).
    Error,
    /// Not a query: say nothing.
    Drop,
}

/// [`parse_query`], writing the error answer into `out` when the packet gets one: what both the
/// UDP and the TCP path start with.
pub(crate) fn read_query<'a>(
    packet: &'a [u8],
    key: &mut [u8; KEY_LEN],
    out: &mut Vec<u8>,
) -> Read<'a> {
    match parse_query(packet, key) {
        Parsed::Drop => Read::Drop,
        Parsed::Error {
            id,
            flags_hi,
            rcode,
        } => {
            error_answer(out, id, flags_hi, rcode);
            Read::Error
        }
        Parsed::Query { query, key_len } => Read::Query { query, key_len },
    }
}

/// Returns the offset just past the (possibly compressed) name at `pos`.
fn skip_name(packet: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *packet.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xc0 => return packet.get(pos + 1).map(|_| pos + 2),
            _ => return None,
        }
    }
    None
}

/// Patches an encoded answer (whose question is the lowercased name) for `query`: ID, RD and CD
/// from the query, RA for this client, and the question's original case, which compression
/// pointers to offset 12 then carry into the answer's owner names.
pub(crate) fn patch_answer(answer: &mut [u8], query: &Query<'_>, recursion_available: bool) {
    let qend = HEADER_LEN + query.qname.len();
    if answer.len() < qend {
        return;
    }
    answer[0..2].copy_from_slice(&query.id.to_be_bytes());
    answer[2] = (answer[2] & !FLAG_RD) | (query.flags_hi & FLAG_RD);
    let ra = if recursion_available { FLAG_RA } else { 0 };
    answer[3] = (answer[3] & !(FLAG_RA | FLAG_CD)) | (query.flags_lo & FLAG_CD) | ra;
    answer[HEADER_LEN..qend].copy_from_slice(query.qname);
}

/// Cuts an answer down to header + question (+ OPT) with TC set, for a UDP client whose payload
/// size it exceeds. The client retries over TCP.
pub(crate) fn truncate(answer: &mut Vec<u8>, query: &Query<'_>, server_max: u16) {
    answer.truncate(query.question_end());
    if answer.len() < HEADER_LEN {
        return;
    }
    answer[2] |= FLAG_TC;
    answer[6..10].fill(0);
    answer[10..12].copy_from_slice(&u16::from(query.edns.is_some()).to_be_bytes());
    if let Some(edns) = query.edns {
        push_opt(answer, server_max, edns.dnssec_ok, 0);
    }
}

/// Appends this server's OPT record.
pub(crate) fn push_opt(out: &mut Vec<u8>, payload: u16, dnssec_ok: bool, rcode_high: u8) {
    let [p0, p1] = payload.to_be_bytes();
    let do_bit = if dnssec_ok { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, 41, p0, p1, rcode_high, 0, do_bit, 0, 0, 0]);
}

/// Writes a bare answer for `query`: its header and question, no records, the given rcode, and
/// an OPT record when the query had one.
pub(crate) fn bare_answer(
    out: &mut Vec<u8>,
    query: &Query<'_>,
    rcode: u8,
    authoritative: bool,
    recursion_available: bool,
    server_max: u16,
) {
    out.clear();
    out.extend_from_slice(&query.id.to_be_bytes());
    let aa = if authoritative { FLAG_AA } else { 0 };
    out.push(FLAG_QR | aa | (query.flags_hi & FLAG_RD));
    let ra = if recursion_available { FLAG_RA } else { 0 };
    out.push(ra | (query.flags_lo & FLAG_CD) | (rcode & 0x0f));
    let arcount = u16::from(query.edns.is_some());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(&arcount.to_be_bytes());
    out.extend_from_slice(query.qname);
    out.extend_from_slice(&query.qtype.to_be_bytes());
    out.extend_from_slice(&query.qclass.to_be_bytes());
    if let Some(edns) = query.edns {
        push_opt(out, server_max, edns.dnssec_ok, 0);
    }
}

/// Writes a header-only error answer (FORMERR, NOTIMP) for a query we could not read in full.
pub(crate) fn error_answer(out: &mut Vec<u8>, id: u16, flags_hi: u8, rcode: u8) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    // Keep the opcode and RD; set QR.
    out.push(FLAG_QR | (flags_hi & (0x78 | FLAG_RD)));
    out.push(rcode & 0x0f);
    out.extend_from_slice(&[0; 8]);
}

/// True if `answer` answers `query`: a response with the same ID and the same question
/// (names compared without regard to case). Used to accept upstream answers.
pub(crate) fn answers_query(answer: &[u8], id: u16, question: &[u8]) -> bool {
    answer.len() >= HEADER_LEN + question.len()
        && answer[0..2] == id.to_be_bytes()
        && answer[2] & FLAG_QR != 0
        && answer[4..6] == [0, 1]
        && answer[HEADER_LEN..HEADER_LEN + question.len()].eq_ignore_ascii_case(question)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, opt: Option<[u8; 11]>) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(opt) = opt {
            p.extend_from_slice(&opt);
        }
        p
    }

    #[test]
    fn reads_a_query_and_lowercases_the_key() {
        let name = b"\x03WwW\x05Homer\x03ave\x00";
        let p = query(name, 1, Some([0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]));
        let mut key = [0; KEY_LEN];
        let Parsed::Query { query, key_len } = parse_query(&p, &mut key) else {
            panic!("not a query");
        };
        assert_eq!(query.id, 0x1234);
        assert_eq!(query.qname, name);
        assert_eq!(
            query.edns,
            Some(Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        // Flags: EDNS, DO, capitals in the name.
        assert_eq!(
            &key[..key_len],
            b"\x07\x00\x01\x00\x01\x03www\x05homer\x03ave\x00"
        );
        // The same name in lowercase: the same key but for the capitals flag.
        let lower = self::query(b"\x03www\x05homer\x03ave\x00", 1, None);
        let mut lower_key = [0; KEY_LEN];
        let Parsed::Query { key_len, .. } = parse_query(&lower, &mut lower_key) else {
            panic!("not a query");
        };
        assert_eq!(lower_key[0], 0);
        assert_eq!(lower_key[1..key_len], key[1..key_len]);
    }

    #[test]
    fn bad_packets_are_dropped_or_formerr() {
        let mut key = [0; KEY_LEN];
        assert!(matches!(parse_query(b"\x12\x34", &mut key), Parsed::Drop));
        let good = query(b"\x01a\x00", 1, None);
        for cut in HEADER_LEN..good.len() {
            assert!(
                matches!(
                    parse_query(&good[..cut], &mut key),
                    Parsed::Error { rcode: 1, .. }
                ),
                "cut at {cut}"
            );
        }
        let pointer = query(b"\xc0\x0c", 1, None);
        assert!(matches!(
            parse_query(&pointer, &mut key),
            Parsed::Error { rcode: 1, .. }
        ));
        let mut notify = good.clone();
        notify[2] = 4 << 3;
        assert!(matches!(
            parse_query(&notify, &mut key),
            Parsed::Error { rcode: 4, .. }
        ));
        let mut response = good;
        response[2] |= FLAG_QR;
        assert!(matches!(parse_query(&response, &mut key), Parsed::Drop));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut key = [0; KEY_LEN];
        let mut out = Vec::new();
        for _ in 0..50_000 {
            let len = (next() % 300) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if p.len() > 12 && next() % 2 == 0 {
                // Make it look like a query more often, to get past the header checks.
                p[2] = 0;
                p[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, (next() % 3) as u8]);
            }
            if let Parsed::Query { query, .. } = parse_query(&p, &mut key) {
                bare_answer(&mut out, &query, rcode::REFUSED, false, false, 1232);
                truncate(&mut out, &query, 1232);
            }
        }
    }
}
