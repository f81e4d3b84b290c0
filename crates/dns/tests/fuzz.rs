//! Fuzz targets on the stable toolchain: `dns-wire` (a datagram through the UDP answer path and
//! the TCP engine path) and `dns-zone` (zone-file text through the parser, then served). The
//! checks are in `torc_dns::fuzzing`.
//!
//! The driver (mutation, corpus, the test-suite and long runs, crash files) is `torc-fuzz`;
//! this file makes structured inputs from its bytes: a DNS packet with a header, a question and
//! OPT records; zone-file lines of directives, owners, TTLs, types and data. Signatures: outcome,
//! rcode, sections; an error of a new kind. `scripts/fuzz dns-wire 300` runs one for as long as
//! asked.

use arbitrary::Unstructured;
use torc_dns::fuzzing;
use torc_fuzz::{Outcome, Target};

const TARGETS: &[Target] = &[
    Target {
        name: "dns-wire",
        run: run_wire,
        dictionary: &[
            b"\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00",
            b"\x00\x00\x29\xff\xff\x01\x00\x00\x00\x00\x04",
            b"\xc0\x0c",
            b"\x3f",
            b"\x40",
            b"\x00\xff\x00\x01",
            b"\x00\xfc\x00\x01",
            b"\x06compat\x04test\x00",
            b"\x05homer\x03ave\x00",
            b"\x07service\x04torc\x00",
        ],
        ci_inputs: 15_000,
        crate_dir: env!("CARGO_MANIFEST_DIR"),
    },
    Target {
        name: "dns-zone",
        run: run_zone,
        dictionary: &[
            b"$ORIGIN ",
            b"$TTL ",
            b"$INCLUDE ",
            b"$GENERATE ",
            b"${",
            b",n}",
            b" IN ",
            b" SOA ns.a. h.a. 1 2 3 4 5\n",
            b" CNAME ",
            b" TXT \"",
            b"\\",
            b"\\065",
            b"(",
            b")",
            b";",
            b"\n",
            b"\n\t",
            b"@",
            b".",
            b"..",
            b"4294967296",
            b"1w2d3h4m5s",
        ],
        ci_inputs: 5_000,
        crate_dir: env!("CARGO_MANIFEST_DIR"),
    },
];

/// A record type for a generated question or record.
const QTYPES: &[u16] = &[
    1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 252, 251, 255, 0, 13, 65535,
];
/// Question names: ours (both zones, apex, nested, CNAMEs, wildcards), mixed case, and outside.
const NAMES: &[&str] = &[
    "compat.test",
    "a.b.dyn.compat.test",
    "x.cn.compat.test",
    "*.dyn.compat.test",
    "x.ent.dyn.compat.test",
    "pool.compat.test",
    "www.compat.test",
    "dangling.compat.test",
    "external.compat.test",
    "nope.compat.test",
    "a.b.deep.compat.test",
    "_sip._udp.compat.test",
    "MaIl.CoMpAt.TeSt",
    "bladerunner1.homer.ave",
    "homer.ave",
    "1.0.250.10.in-addr.arpa",
    "21.3.250.10.in-addr.arpa",
    "web.service.torc",
    "_web._tcp.service.torc",
    "big.service.torc",
    "example.com",
    "",
];

/// All the bytes not used yet.
fn rest<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<&'a [u8]> {
    let n = u.len();
    u.bytes(n)
}

fn push_name(p: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
}

/// A DNS packet from the bytes, and the peer it comes from.
fn packet(u: &mut Unstructured<'_>) -> arbitrary::Result<(Vec<u8>, u8)> {
    let peer = u.arbitrary::<u8>()?;
    if u.ratio(1, 8)? {
        return Ok((rest(u)?.to_vec(), peer));
    }
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&u.arbitrary::<u16>()?.to_be_bytes());
    // Mostly a plain query (QR clear, opcode QUERY), sometimes anything.
    let flags_hi = if u.ratio(7, 8)? {
        u.arbitrary::<u8>()? & 0x07
    } else {
        u.arbitrary()?
    };
    p.push(flags_hi);
    p.push(u.arbitrary()?);
    let qdcount: u16 = if u.ratio(9, 10)? { 1 } else { u.arbitrary()? };
    let (ancount, nscount): (u16, u16) = if u.ratio(9, 10)? {
        (0, 0)
    } else {
        (u.arbitrary()?, u.arbitrary()?)
    };
    let opts = u.int_in_range(0..=3u8)?;
    for count in [qdcount, ancount, nscount, u16::from(opts)] {
        p.extend_from_slice(&count.to_be_bytes());
    }
    // The question.
    if u.ratio(3, 4)? {
        push_name(&mut p, u.choose(NAMES)?);
    } else {
        for _ in 0..u.int_in_range(0..=6u8)? {
            let len = *u.choose(&[0u8, 1, 3, 63, 64, 0xc0, 0xff])?;
            let len = if len == 3 {
                u.int_in_range(1..=62)?
            } else {
                len
            };
            p.push(len);
            let body = u.bytes(usize::from(len.min(63)))?;
            p.extend_from_slice(body);
        }
        p.push(0);
    }
    let qtype = if u.ratio(7, 8)? {
        *u.choose(QTYPES)?
    } else {
        u.arbitrary()?
    };
    p.extend_from_slice(&qtype.to_be_bytes());
    let qclass: u16 = *u.choose(&[1u16, 1, 1, 255, 3, 254, 0])?;
    p.extend_from_slice(&qclass.to_be_bytes());
    // The additional section: OPT records (payload, version, DO, options), or other junk.
    for _ in 0..opts {
        if u.ratio(4, 5)? {
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            let payload = *u.choose(&[512u16, 1232, 4096, 0, 65535, 1])?;
            p.extend_from_slice(&payload.to_be_bytes());
            p.push(u.arbitrary()?);
            p.push(if u.ratio(7, 8)? { 0 } else { u.arbitrary()? });
            p.push(if u.ratio(1, 2)? { 0x80 } else { 0 });
            p.push(0);
            let n = u.int_in_range(0..=8)?;
            let rdata = u.bytes(n)?;
            let rdlen = if u.ratio(9, 10)? {
                rdata.len() as u16
            } else {
                u.arbitrary()?
            };
            p.extend_from_slice(&rdlen.to_be_bytes());
            p.extend_from_slice(rdata);
        } else {
            let n = u.int_in_range(0..=16)?;
            let junk = u.bytes(n)?;
            p.extend_from_slice(junk);
        }
    }
    if u.ratio(1, 8)? {
        p.extend_from_slice(rest(u)?);
    }
    Ok((p, peer))
}

fn run_wire(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let Ok((packet, peer)) = packet(&mut u) else {
        return Ok("no input".into());
    };
    Ok(fuzzing::wire(&packet, peer)?.into())
}

/// Zone-file text from the bytes, and the origin it is given.
fn zone_text(u: &mut Unstructured<'_>) -> arbitrary::Result<(String, Option<&'static str>)> {
    let origin = *u.choose(&[
        Some("a"),
        Some("compat.test"),
        None,
        Some("x..y"),
        Some("@"),
    ])?;
    if u.ratio(1, 8)? {
        return Ok((String::from_utf8_lossy(rest(u)?).into_owned(), origin));
    }
    const OWNERS: &[&str] = &["@", "www", "a.b", "x.a.", "*", "", "\\.", "outside.", "ns"];
    const TYPES: &[&str] = &[
        "A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "PTR", "SOA", "HINFO", "a", "IN",
    ];
    const DATA: &[&str] = &[
        "1.2.3.4",
        "::1",
        "ns",
        "ns.a.",
        "10",
        "\"t x\"",
        "\"open",
        "\"\\\"q\\\" \\255\"",
        "( 1 2",
        ")",
        "; c",
        "1 2 3 4 5",
        "ns.a. h.a. 1 2 3 4 5",
        "ns h ( 1 2 3 4 5 )",
        "999999999999",
        "1h",
        "@",
        "256.1.1.1",
        "1 1 80 t",
    ];
    let mut text = String::new();
    if u.ratio(3, 4)? {
        text.push_str("@ 60 IN SOA ns.a. h.a. 1 2 3 4 5\n");
    }
    // $GENERATE ranges and templates: small, reversed, malformed (the file's limit is a unit test).
    const RANGES: &[&str] = &["1-3", "0-300/7", "3-1", "1-2/0", "x", "0-999", "5"];
    const TEMPLATES: &[&str] = &[
        "h$",
        "$",
        "${0,3}",
        "${-5,2,x}",
        "${0,4,n}",
        "${1",
        "${0,0,q}",
        "$$",
        "\\$",
        "\"10 h$\"",
        "1.2.3.$",
        "@",
        "${0,300}",
    ];
    for _ in 0..u.int_in_range(0..=12u8)? {
        match u.int_in_range(0..=10u8)? {
            10 => text.push_str(&format!(
                "$GENERATE {} {} {} {}\n",
                u.choose(RANGES)?,
                u.choose(TEMPLATES)?,
                u.choose(TYPES)?,
                u.choose(TEMPLATES)?
            )),
            0 => text.push_str(&format!("$ORIGIN {}\n", u.choose(OWNERS)?)),
            1 => text.push_str(&format!("$TTL {}\n", u.choose(DATA)?)),
            2 => {
                // A random line.
                let len = u.int_in_range(0..=40)?;
                text.push_str(&String::from_utf8_lossy(u.bytes(len)?));
                text.push('\n');
            }
            3 => {
                // A long label or name.
                let label = "l".repeat(u.int_in_range(60..=70)?);
                let n = u.int_in_range(1..=5)?;
                text.push_str(&vec![label; n].join("."));
                text.push_str(" 60 A 1.2.3.4\n");
            }
            _ => {
                if u.ratio(1, 4)? {
                    text.push('\t');
                } else {
                    text.push_str(u.choose(OWNERS)?);
                    text.push(' ');
                }
                if u.ratio(1, 2)? {
                    text.push_str(&format!("{} ", u.int_in_range(0..=86_400u32)?));
                }
                if u.ratio(1, 2)? {
                    text.push_str("IN ");
                }
                text.push_str(u.choose(TYPES)?);
                for _ in 0..u.int_in_range(0..=3u8)? {
                    text.push(' ');
                    text.push_str(u.choose(DATA)?);
                }
                text.push('\n');
            }
        }
    }
    Ok((text, origin))
}

fn run_zone(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let Ok((text, origin)) = zone_text(&mut u) else {
        return Ok("no input".into());
    };
    Ok(fuzzing::zone(&text, origin)?.into())
}

#[test]
fn dns_wire() {
    torc_fuzz::ci_run(TARGETS, "dns-wire", 0x5eed_0001, 10);
}

#[test]
fn dns_zone() {
    torc_fuzz::ci_run(TARGETS, "dns-zone", 0x5eed_0002, 5);
}

/// The long run `scripts/fuzz` starts (see `torc_fuzz::long_run`).
#[test]
#[ignore = "run by scripts/fuzz"]
fn long_run() {
    torc_fuzz::long_run(TARGETS);
}
