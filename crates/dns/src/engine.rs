//! Turns one parsed query into answer bytes: the part shared by UDP and TCP.
//!
//! The engine decides, it does no I/O: an authoritative answer (cacheable per key, since it
//! depends on nothing but the key, the transport and the catalog), an immediate bare answer
//! (REFUSED, BADVERS), or "forward this". Per-query details (ID, RD, CD, RA, the question's case,
//! truncation) are patched in by the caller with `wire::patch_answer` and `wire::truncate`.
//!
//! ANY (QTYPE 255) is answered as bind9 9.18 does with `minimal-any yes`: over UDP with one
//! RRset, the first at the name in the zone's order (RFC 8482 §4.1), so an ANY query amplifies no
//! more than a query for that type; over TCP, where the source address cannot be forged, with
//! every RRset. Why not bind9's default (`minimal-any no`: every RRset over UDP too, which is the
//! amplification RFC 8482 is about) and why not RFC 8482 §4.2's synthesized HINFO: one real RRset
//! is still a useful answer (`dig +notcp NAME ANY` shows something true), and it is what bind9
//! answers when configured so, which `tests/named_compat.rs` compares record by record. Names
//! with no RRset (empty non-terminals) and missing names get the usual NODATA and NXDOMAIN. Note
//! that dig sends ANY over TCP unless given `+notcp`.

use std::net::IpAddr;

use hickory_proto::{
    op::{self, Message, OpCode, ResponseCode},
    rr::{DNSClass, Name, RecordType},
    serialize::binary::BinDecodable,
};

use crate::{
    catalog::{Catalog, Resolution},
    cidr::Cidr,
    key::key_of,
    wire::{self, CLASS_ANY, CLASS_IN, Query, rcode},
};

/// How a query arrived: ANY is answered in full only over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// What the engine made of a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `out` holds an answer that depends only on the key and the catalog generation.
    /// `zone_at`: where, in the lowercased question name, the zone's apex starts when the answer
    /// is negative (NXDOMAIN or NODATA), else 0; the rate limiter keeps negative answers' accounts
    /// per zone, as bind9 does (`rrl.rs`).
    Cacheable { zone_at: u8 },
    /// `out` holds an answer for this query only.
    Immediate,
    /// Not ours, and this client may recurse: ask an upstream.
    Forward,
}

/// The policy part of the server configuration.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub max_udp_payload: u16,
    pub allow_recursion: Vec<Cidr>,
    pub can_forward: bool,
}

impl Engine {
    /// True if `client` may have names outside our zones resolved (RA in its answers).
    pub(crate) fn recursion_available(&self, client: IpAddr) -> bool {
        self.can_forward && self.allow_recursion.iter().any(|c| c.contains(client))
    }

    /// Answers `query` into `out`. `name` is the lowercased question name (from the cache key).
    pub(crate) fn answer(
        &self,
        catalog: &Catalog,
        query: &Query<'_>,
        name: &[u8],
        transport: Transport,
        recursion_available: bool,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let max = self.max_udp_payload;
        if let Some(edns) = query.edns
            && edns.version > 0
        {
            wire::bare_answer(out, query, rcode::NOERROR, false, false, max);
            // The OPT record is last; its extended-rcode byte is 6 from its end.
            let at = out.len() - 6;
            out[at] = rcode::BADVERS_HIGH;
            return Outcome::Immediate;
        }
        let qtype = RecordType::from(query.qtype);
        let transfer = matches!(qtype, RecordType::AXFR | RecordType::IXFR);
        if !matches!(query.qclass, CLASS_IN | CLASS_ANY) || transfer {
            // TODO-correctness: zone transfers to secondaries are not supported.
            wire::bare_answer(out, query, rcode::REFUSED, false, recursion_available, max);
            return Outcome::Immediate;
        }
        match catalog.resolve(name, qtype, transport == Transport::Udp) {
            Some(resolution) => {
                let zone_at = zone_offset(&resolution, name);
                match encode(resolution, name, query, max) {
                    Some(bytes) => {
                        out.clear();
                        out.extend_from_slice(&bytes);
                        Outcome::Cacheable { zone_at }
                    }
                    None => {
                        wire::bare_answer(out, query, rcode::SERVFAIL, false, false, max);
                        Outcome::Immediate
                    }
                }
            }
            None if recursion_available => Outcome::Forward,
            None => {
                wire::bare_answer(out, query, rcode::REFUSED, false, false, max);
                Outcome::Immediate
            }
        }
    }
}

/// For a negative answer (its SOA in the authority section), where the zone's apex starts in
/// `name`; 0 otherwise, or when the SOA is not a suffix of `name` (a CNAME chain into another
/// zone).
fn zone_offset(resolution: &Resolution, name: &[u8]) -> u8 {
    let negative = resolution.rcode == ResponseCode::NXDomain || resolution.answers.is_empty();
    let Some(soa) = resolution.authority.first().filter(|_| negative) else {
        return 0;
    };
    let apex = key_of(&soa.name);
    if name.ends_with(&apex) {
        u8::try_from(name.len() - apex.len()).unwrap_or(0)
    } else {
        0
    }
}

/// Encodes an authoritative answer; `None` only if `hickory-proto` cannot encode it (a bug,
/// answered with SERVFAIL). `name` is the lowercased question name.
///
/// The caller writes the query's own spelling of the name over the question. Names in the
/// records are compressed to the question where they share its suffix, so they would take that
/// spelling too: `hostmaster.CoMpAt.TeSt.` in an SOA for a query of `NoPe.CoMpAt.TeSt`. So a
/// question with capitals (it has cache entries of its own, see `wire::parse_query`) is encoded
/// in capitals: hickory compresses case-sensitively, record names (always lowercase) then never
/// point at a letter of the question, and they keep the zone's spelling whatever spelling is
/// patched in, as bind9's do. A lowercase question is encoded as is (the common case, smallest
/// answer).
fn encode(resolution: Resolution, name: &[u8], query: &Query<'_>, max: u16) -> Option<Vec<u8>> {
    let name = if query.qname == name {
        Name::from_bytes(name).ok()?
    } else {
        Name::from_bytes(&name.to_ascii_uppercase()).ok()?
    };
    let mut msg = Message::response(0, OpCode::Query);
    msg.metadata.authoritative = true;
    msg.metadata.response_code = resolution.rcode;
    let mut question = op::Query::query(name, RecordType::from(query.qtype));
    question.set_query_class(DNSClass::from(query.qclass));
    msg.add_query(question);
    msg.answers = resolution.answers;
    msg.authorities = resolution.authority;
    msg.additionals = resolution.additional;
    if let Some(edns) = query.edns {
        let mut opt = op::Edns::new();
        opt.set_max_payload(max.max(512));
        opt.set_version(0);
        opt.set_dnssec_ok(edns.dnssec_ok);
        msg.set_edns(opt);
    }
    msg.to_vec().ok()
}
