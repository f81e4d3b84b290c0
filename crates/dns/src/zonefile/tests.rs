//! Tests of the zone-file parser (`zonefile.rs`), `$GENERATE` lines included.

use super::*;

const HOMER: &str = r#"
$TTL 60
$ORIGIN homer.ave.
@   IN  SOA ns.homer.ave. admin.homer.ave. (
        2       ; serial
        1h      ; refresh
        15m     ; retry
        1w      ; expire
        60 )    ; minimum
    IN  NS  ns
    IN  A   10.250.3.20
ns          A       10.250.3.20
wedge   300 IN CNAME ns.homer.ave.
mail    IN 120 MX 10 ns
info        TXT     "hello \"rack\"" plain
_x._tcp     SRV     1 2 80 ns
"#;

#[test]
fn parses_a_bind_zone() {
    let zone = StaticZone::parse(HOMER, "db.homer.ave", None).unwrap();
    assert_eq!(zone.apex().to_string(), "homer.ave.");
    let text: Vec<String> = zone.records().iter().map(|r| r.to_string()).collect();
    assert_eq!(text.len(), 8, "{text:#?}");
    assert!(text[0].contains("SOA"), "{}", text[0]);
    assert!(text[0].contains("3600 900 604800 60"), "{}", text[0]);
    assert_eq!(text[1], "homer.ave. 60 IN NS ns.homer.ave.");
    assert_eq!(text[4], "wedge.homer.ave. 300 IN CNAME ns.homer.ave.");
    assert_eq!(text[5], "mail.homer.ave. 120 IN MX 10 ns.homer.ave.");
    assert!(text[6].contains("hello \"rack\""), "{}", text[6]);
}

#[test]
fn errors_name_file_line_and_problem() {
    let cases = [
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nfoo 60 A 1.2.3\n",
            "f:3: bad IPv4 address \"1.2.3\"",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nfoo 60 HINFO a b\n",
            "f:3: record type \"HINFO\" is not supported",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x (1 2 3 4 5\n",
            "f:2: '(' is never closed",
        ),
        ("$ORIGIN a.\nfoo 60 A 1.2.3.4\n", "f: no SOA record for a."),
        (
            "@ 60 SOA ns x 1 2 3 4 5\n",
            "f:1: relative name \"@\" but no $ORIGIN",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nb.c. 60 A 1.2.3.4\n",
            "f:3: b.c. is outside the zone a.",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nw 60 CNAME x\nw 60 A 1.1.1.1\n",
            "f:3: w.a. has a CNAME and other data",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nw 60 A 1.1.1.1\nx 60 A 1.1.1.1\nW 60 CNAME x\n",
            "f:3: w.a. has a CNAME and other data",
        ),
        (
            "$ORIGIN a.\n@ SOA ns x 1 2 3 4 5\nw A 1.1.1.1\n$INCLUDE other\n",
            "f:4: $INCLUDE is not supported",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nw 60 MX ten x\n",
            "f:3: bad MX preference \"ten\"",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nw 60 TXT \"open\n",
            "f:3: unterminated string",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\na..b 60 A 1.2.3.4\n",
            "f:3: bad name \"a..b\": an empty label",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nné 60 A 1.2.3.4\n",
            "f:3: bad name \"né\": 'é' is not allowed in a name",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\na/b 60 A 1.2.3.4\n",
            "f:3: bad name \"a/b\": '/' is not allowed in a name",
        ),
        (
            "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\n$INCLUDES x\n",
            "f:3: unknown directive \"$INCLUDES\"",
        ),
    ];
    for (text, want) in cases {
        let err = StaticZone::parse(text, "f", None).unwrap_err().to_string();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
    }
}

#[test]
fn generate_expands_as_bind9_does() {
    let text = "$ORIGIN g.\n$TTL 300\n@ SOA ns h 1 2 3 4 5\n\
        $GENERATE 1-3 host$ A 192.0.2.$\n\
        $GENERATE 8-12/2 pad${0,3} 60 IN AAAA 2001:db8::${0,0,x}\n\
        $GENERATE 10-10 ${-10,2,x}.hex IN 120 TXT \"v=$ \\$ $$\" \n\
        $GENERATE 1-1 c$ CNAME host${1}\n\
        $GENERATE 1-1 mx$ MX \"10 host$\"\n\
        $GENERATE 250-250 ${0,4,n}nib PTR host1\n\
        $GENERATE 1-1 @ TXT plain\\$\\065\n";
    let zone = StaticZone::parse(text, "f", None).unwrap();
    let text: Vec<String> = zone.records()[1..].iter().map(|r| r.to_string()).collect();
    assert_eq!(
        text,
        [
            "host1.g. 300 IN A 192.0.2.1",
            "host2.g. 300 IN A 192.0.2.2",
            "host3.g. 300 IN A 192.0.2.3",
            "pad008.g. 60 IN AAAA 2001:db8::8",
            "pad010.g. 60 IN AAAA 2001:db8::a",
            "pad012.g. 60 IN AAAA 2001:db8::c",
            "00.hex.g. 120 IN TXT v=10$$",
            "c1.g. 300 IN CNAME host2.g.",
            "mx1.g. 300 IN MX 10 host1.g.",
            "a.f.nib.g. 300 IN PTR host1.g.",
            "g. 300 IN TXT plain$A",
        ]
    );
    // The quoted RHS is read as data after filling: three strings, as bind9 makes.
    let RData::TXT(txt) = &zone.records()[7].data else {
        panic!("{:?}", zone.records()[7]);
    };
    let strings: Vec<&[u8]> = txt.txt_data.iter().map(|s| &s[..]).collect();
    assert_eq!(strings, [&b"v=10"[..], b"$", b"$"]);
}

#[test]
fn generate_errors_name_the_line() {
    let head = "$ORIGIN g.\n@ 60 SOA ns h 1 2 3 4 5\n";
    let cases = [
        (
            "$GENERATE 3-1 x$ A 1.2.3.4",
            "f:3: bad $GENERATE range \"3-1\"",
        ),
        ("$GENERATE 1-2 x$", "f:3: $GENERATE needs RANGE LHS"),
        ("$GENERATE 1-2", "f:3: $GENERATE needs RANGE LHS"),
        (
            "$GENERATE 1-2 x${1,2,q} A 1.2.3.$",
            "f:3: bad $GENERATE modifier in \"x${1,2,q}\": the base is not one of",
        ),
        (
            "$GENERATE 1-2 x$ A 1.2.3.$ extra",
            "f:3: text after the $GENERATE RHS: \"extra\"",
        ),
        (
            "$GENERATE 255-256 x$ A 1.2.3.$",
            "f:3: $GENERATE, for 256: bad IPv4 address \"1.2.3.256\"",
        ),
        (
            "$GENERATE 1-1 x$ HINFO a",
            "f:3: $GENERATE, for 1: record type \"HINFO\" is not supported",
        ),
        (
            "$GENERATE 1-2 x$ CH A 1.2.3.4",
            "f:3: class \"CH\" is not supported",
        ),
        (
            "$GENERATE 1-1 ${0,70} A 1.2.3.4",
            "f:3: $GENERATE, for 1: bad name \"0000",
        ),
        (
            "$GENERATE 1-1 x${-5,0,o} A 1.2.3.4",
            "f:3: $GENERATE value -4 is negative",
        ),
        (
            "$GENERATE 0-65536 x$ A 1.2.3.4",
            "f:3: $GENERATE would make 65537 records in this file; at most 65536",
        ),
    ];
    for (line, want) in cases {
        let err = StaticZone::parse(&format!("{head}{line}\n"), "f", None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
    }
    // The limit holds for the file, not per line; a record generated outside the zone or
    // beside a CNAME is reported at the $GENERATE line.
    let two = format!("{head}$GENERATE 1-40000 a$ A 1.2.3.4\n$GENERATE 1-40000 b$ A 1.2.3.4\n");
    let err = StaticZone::parse(&two, "f", None).unwrap_err().to_string();
    assert!(err.starts_with("f:4: $GENERATE would make 80000"), "{err}");
    let outside = format!("{head}$GENERATE 1-1 x$.other. A 1.2.3.4\n");
    let err = StaticZone::parse(&outside, "f", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("f:3: x1.other. is outside the zone g."),
        "{err}"
    );
}

#[test]
fn errors_carry_their_cause() {
    let err = StaticZone::parse(
        "$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nw 60 MX ten x\n",
        "f",
        None,
    )
    .unwrap_err();
    let ZoneError::Syntax {
        line: 3,
        problem: LineProblem::BadField { rtype, field, text },
        ..
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(
        (rtype.as_str(), *field, text.as_str()),
        ("MX", "preference", "ten")
    );

    let err = StaticZone::parse("$ORIGIN a.\nw 60 A 1.2.3.4\n", "f", None).unwrap_err();
    assert!(
        matches!(&err, ZoneError::Zone { problem: ZoneProblem::NoSoa { apex }, .. } if apex == "a."),
        "{err:?}"
    );

    let label64 = "a".repeat(64);
    let err = StaticZone::parse(&format!("$ORIGIN x.{label64}.\n"), "f", None).unwrap_err();
    assert!(
        matches!(
            &err,
            ZoneError::Syntax {
                line: 1,
                problem: LineProblem::Name(BadName {
                    fault: NameFault::LongLabel { index: 2, len: 64 },
                    ..
                }),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn names_over_the_rfc_limits_are_named_errors() {
    let label64 = "a".repeat(64);
    let label63 = "a".repeat(63);
    // Four 63-byte labels: 4 × 64 + 1 = 257 bytes in wire form.
    let long = format!("{label63}.{label63}.{label63}.{label63}");
    // 3 × 64 + 60 + 1 = 253 bytes: fits alone, not under `ab.` (256).
    let fits_alone = format!("{label63}.{label63}.{label63}.{}", "b".repeat(59));
    let cases = [
        (
            format!("$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\n{label64} 60 A 1.2.3.4\n"),
            "f:3: bad name \"aaaa",
            "label 1 is 64 bytes long; a label is at most 63 bytes",
        ),
        (
            format!("$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\nw 60 CNAME x.{label64}.\n"),
            "f:3: bad name \"x.aaaa",
            "label 2 is 64 bytes long",
        ),
        (
            format!("$ORIGIN a.\n@ 60 SOA ns x 1 2 3 4 5\n{long} 60 A 1.2.3.4\n"),
            "f:3: bad name \"aaaa",
            "257 bytes long; a name is at most 255 bytes",
        ),
        (
            format!("$ORIGIN ab.\n@ 60 SOA ns x 1 2 3 4 5\n{fits_alone} 60 A 1.2.3.4\n"),
            "f:3: bad name \"aaaa",
            "256 bytes long; a name is at most 255 bytes",
        ),
        (
            format!("$ORIGIN {long}.\n"),
            "f:1: bad name \"aaaa",
            "257 bytes long; a name is at most 255 bytes",
        ),
    ];
    for (text, starts, contains) in cases {
        let err = StaticZone::parse(&text, "f", None).unwrap_err().to_string();
        assert!(err.starts_with(starts), "got {err:?}");
        assert!(err.contains(contains), "got {err:?}, want {contains:?}");
        assert!(err.len() < 200, "the name is cut in the message: {err}");
    }
    // Exactly at the limits is fine: a 63-byte label, a 255-byte name.
    let at_limit = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
    let text = format!("$ORIGIN {at_limit}.\n@ 60 SOA ns.x. h.x. 1 2 3 4 5\n");
    assert!(StaticZone::parse(&text, "f", None).is_ok());
}

#[test]
fn ttl_units() {
    assert_eq!(parse_ttl("3600"), Some(3600));
    assert_eq!(parse_ttl("1h30m"), Some(5400));
    assert_eq!(parse_ttl("1W"), Some(604_800));
    assert_eq!(parse_ttl("h"), None);
    assert_eq!(parse_ttl("IN"), None);
    assert_eq!(parse_ttl("99999999999"), None);
}
