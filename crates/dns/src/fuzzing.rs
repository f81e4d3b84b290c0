//! Entry points for the fuzz targets in `tests/fuzz.rs`; not an API (hidden from the docs, no
//! stability promised). Each runs one input through the real code and checks what must hold
//! for any input, returning `Ok(signature)`, a short description of what the input did (the
//! driver keeps inputs with new signatures), or `Err(Violation)`, the check that broke
//! with what was seen. Panics are the driver's to catch.
//!
//! - [`wire`]: a datagram through a UDP thread's answer path (`udp.rs`: parse, cache, engine,
//!   patch, rate limit, truncation) and the TCP engine path, against a catalog of the test zone
//!   and snapshot. Checks: an answer echoes the ID and has QR; a query's answer repeats its
//!   question byte for byte; UDP answers fit the client's limit; hickory-proto decodes every
//!   answer; a cached answer is the same bytes as a fresh one; with a rate of 1 a second, three
//!   copies are sent, slipped (TC, no records) and dropped.
//! - [`zone`]: zone-file text through `StaticZone::parse`. Checks: errors name the file; a
//!   parsed zone keeps its invariants (one SOA, at the apex; every name lowercase, at or below
//!   the apex), and serves: queries for each of its names pass the `wire` checks.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, OnceLock},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};

use hickory_proto::serialize::binary::DecodeError;
use torc_api::dns::DnsSnapshot;

pub use crate::stats::Outcome;

use crate::{
    catalog::Catalog,
    cidr::Cidr,
    engine::{self, Engine, Transport},
    key::key_of,
    rrl::RateLimit,
    udp::{Step, WorkerState},
    wire::{self, FLAG_QR, FLAG_TC, HEADER_LEN, KEY_LEN, KEY_PREFIX, Parsed},
    zonefile::StaticZone,
};

/// A check that broke: a bug in the server or the zone parser. Answers are the bytes sent.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    #[error("an error that does not name the file: {message:?}")]
    ErrorWithoutFile { message: String },
    #[error("a parsed zone with {count} SOA records")]
    SoaCount { count: usize },
    #[error("{name} is outside the zone {apex}")]
    OutsideZone { name: String, apex: String },
    #[error("{name} is not lowercase")]
    NotLowercase { name: String },
    #[error("the SOA is at {owner}, not the apex {apex}")]
    SoaNotAtApex { owner: String, apex: String },
    #[error("forwarded the second time only")]
    ForwardedOnCacheHit,
    #[error(
        "the cached answer differs: {first_outcome:?} {first:02x?} then {again_outcome:?} \
         {again:02x?}"
    )]
    CachedAnswerDiffers {
        first_outcome: Outcome,
        first: Vec<u8>,
        again_outcome: Outcome,
        again: Vec<u8>,
    },
    #[error("forwarded only when rate-limited")]
    ForwardedWhenLimited,
    #[error("a slipped answer with records or without TC: {answer:02x?}")]
    SlipWithRecords { answer: Vec<u8> },
    #[error("rate-limited outcomes {outcomes:?}, expected {expected:?}")]
    RateLimitOutcomes {
        outcomes: Vec<Outcome>,
        expected: Vec<Outcome>,
    },
    #[error("an answer shorter than a header: {answer:02x?}")]
    ShortAnswer { answer: Vec<u8> },
    #[error("an answer without the ID or QR: {answer:02x?}")]
    NoIdOrQr { answer: Vec<u8> },
    #[error("the answer's question is not the query's: {answer:02x?}")]
    OtherQuestion { answer: Vec<u8> },
    #[error("a {len}-byte UDP answer for a client that takes {limit}")]
    OverUdpLimit { len: usize, limit: usize },
    #[error("hickory-proto cannot read our answer ({source}): {answer:02x?}")]
    Unreadable {
        #[source]
        source: DecodeError,
        answer: Vec<u8>,
    },
}

const ZONE: &str = include_str!("../tests/data/zones/compat.test.zone");
const SNAPSHOT: &str = include_str!("../tests/data/snapshots/rack.json");

/// The peers an input can come from: loopback may recurse, the others not.
const PEERS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    IpAddr::V4(Ipv4Addr::new(10, 250, 3, 21)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
];

fn engine() -> Engine {
    Engine {
        max_udp_payload: 1232,
        allow_recursion: Cidr::loopback(),
        can_forward: true,
    }
}

fn test_catalog() -> Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG
        .get_or_init(|| {
            let zone = StaticZone::parse(ZONE, "compat.test.zone", Some("compat.test"))
                .expect("the test zone parses");
            let snapshot: DnsSnapshot =
                serde_json::from_str(SNAPSHOT).expect("the test snapshot parses");
            Arc::new(Catalog::build(&[zone], &snapshot).expect("the test snapshot applies"))
        })
        .clone()
}

/// Runs `packet`, sent by peer `peer % 4`, against the test zone and snapshot.
pub fn wire(packet: &[u8], peer: u8) -> Result<String, Violation> {
    check_packet(&test_catalog(), packet, peer)
}

/// Parses `text` as a zone file (with `origin`, as `--zone-file ORIGIN=PATH` gives it).
pub fn zone(text: &str, origin: Option<&str>) -> Result<String, Violation> {
    let zone = match StaticZone::parse(text, "fuzz.zone", origin) {
        Ok(zone) => zone,
        Err(e) => {
            let message = e.to_string();
            if !message.starts_with("fuzz.zone") || message.len() < "fuzz.zone: x".len() {
                return Err(Violation::ErrorWithoutFile { message });
            }
            return Ok(format!("error: {}", shape(&message)));
        }
    };
    let apex = zone.apex().clone();
    let soas = zone
        .records()
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .count();
    if soas != 1 {
        return Err(Violation::SoaCount { count: soas });
    }
    let mut types: Vec<String> = Vec::new();
    for record in zone.records() {
        if !apex.zone_of(&record.name) {
            return Err(Violation::OutsideZone {
                name: record.name.to_string(),
                apex: apex.to_string(),
            });
        }
        if record.name.to_lowercase().to_ascii() != record.name.to_ascii() {
            return Err(Violation::NotLowercase {
                name: record.name.to_string(),
            });
        }
        if record.record_type() == RecordType::SOA && record.name != apex {
            return Err(Violation::SoaNotAtApex {
                owner: record.name.to_string(),
                apex: apex.to_string(),
            });
        }
        let t = record.record_type().to_string();
        if !types.contains(&t) {
            types.push(t);
        }
    }
    types.sort();
    // Serve it: every name (up to 16), for its types, ANY, A and a missing child.
    let catalog = Arc::new(Catalog::from_static(std::slice::from_ref(&zone)));
    let mut names: Vec<_> = zone.records().iter().map(|r| key_of(&r.name)).collect();
    names.dedup();
    for (i, name) in names.iter().take(16).enumerate() {
        let mut qtypes: Vec<u16> = zone
            .records()
            .iter()
            .filter(|r| key_of(&r.name) == *name)
            .map(|r| u16::from(r.record_type()))
            .collect();
        qtypes.extend([255, 1]);
        qtypes.dedup();
        for qtype in qtypes {
            check_packet(&catalog, &query(i as u16, name, qtype), i as u8)?;
        }
        if name.len() + 2 <= wire::MAX_NAME_LEN {
            let child = [&[1, b'x'][..], name].concat();
            check_packet(&catalog, &query(i as u16, &child, 1), 0)?;
        }
    }
    Ok(format!("zone of {}", types.join(" ")))
}

/// A query packet for the wire-format `name`.
fn query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p
}

/// An error message with its particulars (quoted text, numbers) taken out, so that errors of
/// one kind share a signature.
fn shape(message: &str) -> String {
    let message = message.split_once(": ").map_or(message, |(_, rest)| rest);
    let mut out = String::new();
    let mut quoted = false;
    let mut last = ' ';
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            // Inside a quoted (Debug-formatted) string, `\"` does not end it.
            '\\' if quoted => {
                chars.next();
                continue;
            }
            '"' => {
                quoted = !quoted;
                'Q'
            }
            _ if quoted => continue,
            '0'..='9' => 'N',
            c => c,
        };
        if !(c == last && (c == 'N' || c == 'Q')) {
            out.push(c);
        }
        last = c;
    }
    // Keep words and punctuation, up to a second colon (what follows it is hickory-proto's
    // detail, often the input itself).
    let out = match out.match_indices(": ").nth(1) {
        Some((at, _)) => &out[..at],
        None => &out[..],
    };
    // Names (a word with a dot in it) become `D`, characters (`'x'`) `C`.
    let words: Vec<&str> = out
        .split(' ')
        .map(|w| match w {
            _ if w.len() > 2 && w.starts_with('\'') && w.ends_with('\'') => "C",
            _ if w.len() > 1 && w.contains('.') => "D",
            _ => w,
        })
        .collect();
    words
        .join(" ")
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(60)
        .collect()
}

/// Runs `packet` through the UDP path twice (miss, then cache hit), through a rate-limited UDP
/// path three times, and through the TCP engine path; checks every answer.
fn check_packet(catalog: &Arc<Catalog>, packet: &[u8], peer: u8) -> Result<String, Violation> {
    let engine = engine();
    let peer = SocketAddr::new(PEERS[usize::from(peer) % PEERS.len()], 5353);
    let max = engine.max_udp_payload;

    // Unlimited: a fresh answer, then the cached one, byte for byte the same.
    let mut state = WorkerState::new(catalog.clone(), 64, &RateLimit::OFF);
    let mut first = Vec::new();
    let outcome = match state.answer(&engine, packet, peer, &mut first) {
        Step::Forward(_) => return Ok("forwarded".to_owned()),
        Step::Done(outcome) => outcome,
    };
    let mut again = Vec::new();
    let Step::Done(outcome_again) = state.answer(&engine, packet, peer, &mut again) else {
        return Err(Violation::ForwardedOnCacheHit);
    };
    if (outcome_again, &again) != (outcome, &first) {
        return Err(Violation::CachedAnswerDiffers {
            first_outcome: outcome,
            first,
            again_outcome: outcome_again,
            again,
        });
    }
    let mut key = [0u8; KEY_LEN];
    let parsed = wire::parse_query(packet, &mut key);
    if outcome != Outcome::Dropped {
        check_answer(packet, &parsed, &first, true, max)?;
    }

    // Rate-limited to one answer a second: sent, slipped, dropped.
    let rate = RateLimit {
        responses_per_second: 1,
        ..RateLimit::default()
    };
    let mut limited = WorkerState::new(catalog.clone(), 64, &rate);
    limited.tick();
    let mut verdicts = Vec::new();
    for _ in 0..3 {
        let mut out = Vec::new();
        let Step::Done(o) = limited.answer(&engine, packet, peer, &mut out) else {
            return Err(Violation::ForwardedWhenLimited);
        };
        if o == Outcome::Slipped {
            check_answer(packet, &parsed, &out, true, max)?;
            let records = out.get(6..10).is_some_and(|c| c != [0, 0, 0, 0]);
            let truncated = out.get(2).is_some_and(|f| f & FLAG_TC != 0);
            // Errors slip as they are; BADVERS has NOERROR in the header, BADVERS in the OPT.
            let rcode = Message::from_vec(&out).map(|m| m.metadata.response_code);
            let error = !matches!(rcode, Ok(ResponseCode::NoError | ResponseCode::NXDomain));
            if !error && (records || !truncated) {
                return Err(Violation::SlipWithRecords { answer: out });
            }
        }
        verdicts.push(o);
    }
    let expected = match outcome {
        Outcome::Dropped => vec![outcome; 3],
        _ => vec![outcome, Outcome::Slipped, Outcome::RateLimited],
    };
    if verdicts != expected {
        return Err(Violation::RateLimitOutcomes {
            outcomes: verdicts,
            expected,
        });
    }

    // TCP: the engine's answer, ANY in full.
    let mut tcp = Vec::new();
    let tcp_outcome = match &parsed {
        Parsed::Query { query, key_len } => {
            let name = &key[KEY_PREFIX..*key_len];
            let ra = engine.recursion_available(peer.ip());
            match engine.answer(catalog, query, name, Transport::Tcp, ra, &mut tcp) {
                engine::Outcome::Forward => "forward",
                engine::Outcome::Cacheable { .. } | engine::Outcome::Immediate => {
                    wire::patch_answer(&mut tcp, query, ra);
                    check_answer(packet, &parsed, &tcp, false, max)?;
                    "answer"
                }
            }
        }
        Parsed::Error { .. } => "error",
        Parsed::Drop => "drop",
    };

    let count = |at: usize| match first.get(at..at + 2) {
        Some([0, 0]) | None => "0",
        Some([0, 1]) => "1",
        Some(_) => "n",
    };
    Ok(format!(
        "{outcome:?} rcode {} tc {} an {} ns {} ar {} tcp {tcp_outcome}",
        first.get(3).map_or(0, |f| f & 0x0f),
        first.get(2).is_some_and(|f| f & FLAG_TC != 0),
        count(6),
        count(8),
        count(10),
    ))
}

/// The checks every answer we would send passes.
fn check_answer(
    packet: &[u8],
    parsed: &Parsed<'_>,
    answer: &[u8],
    udp: bool,
    max: u16,
) -> Result<(), Violation> {
    let answer_bytes = || answer.to_vec();
    if answer.len() < HEADER_LEN {
        return Err(Violation::ShortAnswer {
            answer: answer_bytes(),
        });
    }
    if answer[..2] != packet[..2] || answer[2] & FLAG_QR == 0 {
        return Err(Violation::NoIdOrQr {
            answer: answer_bytes(),
        });
    }
    if let Parsed::Query { query, .. } = parsed {
        let question = &packet[HEADER_LEN..query.question_end()];
        if answer.get(HEADER_LEN..query.question_end()) != Some(question) {
            return Err(Violation::OtherQuestion {
                answer: answer_bytes(),
            });
        }
        if udp && answer.len() > query.udp_limit(max) {
            return Err(Violation::OverUdpLimit {
                len: answer.len(),
                limit: query.udp_limit(max),
            });
        }
    }
    Message::from_vec(answer)
        .map(|_| ())
        .map_err(|source| Violation::Unreadable {
            source,
            answer: answer_bytes(),
        })
}
