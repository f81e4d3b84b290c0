//! The state machine alone: outcomes in, next steps out.

use std::net::SocketAddr;

use super::*;

const A: &str = "https://10.0.0.1:3000";
const B: &str = "https://10.0.0.2:3000";
const C: &str = "https://10.0.0.3:3000";

fn three() -> Endpoints {
    Endpoints::parse(&format!("{A}, {B}/,{C}"), true).unwrap()
}

fn refused() -> Outcome {
    Outcome::NotSent("connection refused".into())
}

fn answered(status: u16, leader: Option<&str>) -> Outcome {
    Outcome::Answered {
        status,
        leader: leader.map(str::to_string),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn parse_trims_dedups_and_keeps_order() {
    let e = three();
    assert_eq!(e.configured(), [A, B, C]);
    assert_eq!(e.current(), A);
    let e = Endpoints::parse(&format!("{A},{A}/"), true).unwrap();
    assert_eq!(e.configured(), [A]);
    // A path prefix is kept.
    let e = Endpoints::parse("http://10.0.0.1:3000/torc/", false).unwrap();
    assert_eq!(e.current(), "http://10.0.0.1:3000/torc");
}

#[test]
fn parse_refuses_bad_lists_naming_the_entry() {
    assert_eq!(
        Endpoints::parse(" ", true).unwrap_err(),
        EndpointsError::Empty
    );
    assert!(matches!(
        Endpoints::parse(&format!("{A},,{B}"), true),
        Err(EndpointsError::EmptyEntry { .. })
    ));
    for bad in [
        "ftp://10.0.0.1",
        "10.0.0.1:3000",
        "http://user:pw@10.0.0.1",
        "http://10.0.0.1/?x=1",
        "unix:/run/torc.sock",
    ] {
        let err = Endpoints::parse(&format!("{A},{bad}"), true).unwrap_err();
        assert!(
            matches!(&err, EndpointsError::Invalid { url, .. } if url == bad),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn refused_moves_to_the_next_and_a_round_fails_naming_every_url() {
    let mut e = three();
    let mut call = e.begin(Kind::Change);
    assert_eq!(e.decide(&mut call, A, refused()), Next::Retry(B.into()));
    assert_eq!(e.current(), B);
    assert_eq!(e.decide(&mut call, B, refused()), Next::Retry(C.into()));
    assert_eq!(e.decide(&mut call, C, refused()), Next::Fail);
    let urls: Vec<&str> = call.tried().iter().map(|t| t.url.as_str()).collect();
    assert_eq!(urls, [A, B, C]);
    // The next call starts after the last one tried.
    assert_eq!(e.current(), A);
}

#[test]
fn a_success_stays_where_it_is() {
    let mut e = three();
    let mut call = e.begin(Kind::Change);
    assert_eq!(e.decide(&mut call, A, refused()), Next::Retry(B.into()));
    assert_eq!(e.decide(&mut call, B, answered(200, None)), Next::Return);
    assert_eq!(e.current(), B);
    // An error answer is the controller's word: returned, not retried.
    let mut call = e.begin(Kind::Change);
    assert_eq!(e.decide(&mut call, B, answered(409, None)), Next::Return);
    assert_eq!(e.current(), B);
}

#[test]
fn misdirected_follows_the_named_leader() {
    let mut e = three();
    let mut call = e.begin(Kind::Change);
    assert_eq!(
        e.decide(&mut call, A, answered(421, Some(C))),
        Next::Retry(C.into())
    );
    assert_eq!(e.current(), C);
    assert_eq!(e.decide(&mut call, C, answered(201, None)), Next::Return);
    assert_eq!(e.current(), C);
}

#[test]
fn misdirected_without_a_leader_tries_the_next() {
    let mut e = three();
    let mut call = e.begin(Kind::Change);
    assert_eq!(
        e.decide(&mut call, A, answered(421, None)),
        Next::Retry(B.into())
    );
}

#[test]
fn two_standbys_naming_each_other_do_not_loop() {
    let mut e = Endpoints::parse(&format!("{A},{B}"), true).unwrap();
    let mut call = e.begin(Kind::Change);
    assert_eq!(
        e.decide(&mut call, A, answered(421, Some(B))),
        Next::Retry(B.into())
    );
    assert_eq!(e.decide(&mut call, B, answered(421, Some(A))), Next::Fail);
    assert_eq!(call.tried().len(), 2);
    assert!(
        call.tried()[1].what.contains("the leader is"),
        "{:?}",
        call.tried()
    );
}

#[test]
fn hops_are_bounded_even_through_new_leaders() {
    let mut e = Endpoints::parse(A, true).unwrap();
    let mut call = e.begin(Kind::Change);
    let mut from = A.to_string();
    for i in 0..MAX_HOPS {
        let leader = format!("https://10.0.1.{i}:3000");
        assert_eq!(
            e.decide(&mut call, &from, answered(421, Some(&leader))),
            Next::Retry(leader.clone())
        );
        from = leader;
    }
    // The last hint is still learned, but not followed within this call; the other targets
    // were all tried, so the call fails.
    assert_eq!(
        e.decide(
            &mut call,
            &from,
            answered(421, Some("https://10.0.2.1:3000"))
        ),
        Next::Fail
    );
    assert_eq!(
        e.current(),
        "https://10.0.2.1:3000",
        "the next call starts at the last named"
    );
    assert!(e.targets().len() <= 1 + MAX_LEARNED);
}

#[test]
fn a_leader_header_on_a_success_switches_the_next_call() {
    let mut e = three();
    let mut call = e.begin(Kind::Read);
    assert_eq!(e.decide(&mut call, A, answered(200, Some(B))), Next::Return);
    assert_eq!(e.current(), B);
    // Naming itself changes nothing.
    let mut call = e.begin(Kind::Read);
    assert_eq!(e.decide(&mut call, B, answered(200, Some(B))), Next::Return);
    assert_eq!(e.current(), B);
}

#[test]
fn leaders_are_followed_only_within_the_scheme_or_the_list() {
    let e = Endpoints::parse("http://10.0.0.1:3000,https://10.0.0.2:3000", true).unwrap();
    // Configured: followed whatever its scheme.
    assert_eq!(
        e.accept_leader("http://10.0.0.1:3000", "https://10.0.0.2:3000/"),
        Ok("https://10.0.0.2:3000".into())
    );
    // Another controller, given every controller: not followed (that URL is how the rack
    // reaches it, which this caller may not be able to use; the next configured one is asked).
    assert!(
        e.accept_leader("https://10.0.0.2:3000", "https://10.0.0.9:3000")
            .is_err()
    );
    // Given one controller, the same scheme: followed (learned).
    let one = Endpoints::parse("https://10.0.0.2:3000", true).unwrap();
    assert_eq!(
        one.accept_leader("https://10.0.0.2:3000", "https://10.0.0.9:3000"),
        Ok("https://10.0.0.9:3000".into())
    );
    // A downgrade, another scheme, junk, credentials: not followed.
    for bad in [
        "http://10.0.0.9:3000",
        "ftp://10.0.0.9",
        "not a url",
        "https://u:p@10.0.0.9:3000",
        "https://10.0.0.9:3000/?next=http://x",
    ] {
        assert!(
            one.accept_leader("https://10.0.0.2:3000", bad).is_err(),
            "{bad} was accepted"
        );
    }
}

#[test]
fn a_refused_hint_on_421_tries_the_next_and_says_why() {
    let mut e = three();
    let mut call = e.begin(Kind::Change);
    assert_eq!(
        e.decide(&mut call, A, answered(421, Some("http://evil.example:80"))),
        Next::Retry(B.into())
    );
    assert!(
        call.tried()[0].what.contains("not followed"),
        "{:?}",
        call.tried()
    );
    assert!(!e.targets().iter().any(|t| t.contains("evil")));
}

#[test]
fn a_change_lost_after_sending_is_not_sent_again() {
    let mut e = three();
    let mut call = e.begin(Kind::Change);
    assert_eq!(
        e.decide(&mut call, A, Outcome::Lost("connection reset".into())),
        Next::Fail
    );
    assert_eq!(call.tried().len(), 1);
    // But the next call goes elsewhere.
    assert_eq!(e.current(), B);
}

#[test]
fn a_read_is_sent_again_after_any_failure() {
    let mut e = three();
    let mut call = e.begin(Kind::Read);
    assert_eq!(
        e.decide(&mut call, A, Outcome::Lost("timed out".into())),
        Next::Retry(B.into())
    );
    assert_eq!(
        e.decide(&mut call, B, answered(503, None)),
        Next::Retry(C.into())
    );
    // The last 503 is the answer the caller gets.
    assert_eq!(e.decide(&mut call, C, answered(503, None)), Next::Return);
}

#[test]
fn a_change_answered_503_is_not_sent_again() {
    // A 503 may come after a commit of unknown outcome: the caller decides.
    let mut e = three();
    let mut call = e.begin(Kind::Change);
    assert_eq!(e.decide(&mut call, A, answered(503, None)), Next::Return);
}

#[test]
fn names_expand_into_addresses_and_again_after_a_failed_round() {
    let mut e = Endpoints::parse("https://ctl.example:3000,http://10.0.0.9:3000", true).unwrap();
    assert_eq!(e.lookups(), [(0, "ctl.example".to_string(), 3000)]);
    e.expand(&[(0, vec![addr("10.0.0.1:3000"), addr("[fd00::1]:3000")])]);
    assert_eq!(
        e.targets(),
        [
            "https://10.0.0.1:3000",
            "https://[fd00::1]:3000",
            "http://10.0.0.9:3000"
        ]
    );
    assert_eq!(e.current(), "https://10.0.0.1:3000");
    assert!(e.lookups().is_empty(), "looked up once until a round fails");
    let mut call = e.begin(Kind::Change);
    let mut from = e.current().to_string();
    loop {
        match e.decide(&mut call, &from, refused()) {
            Next::Retry(next) => from = next,
            Next::Fail => break,
            Next::Return => unreachable!(),
        }
    }
    assert_eq!(call.tried().len(), 3);
    assert_eq!(
        e.lookups().len(),
        1,
        "a failed round looks the names up again"
    );
    // The name now has another address; the current target moves to it.
    e.expand(&[(0, vec![addr("10.0.0.5:3000")])]);
    assert_eq!(e.targets()[0], "https://10.0.0.5:3000");
}

#[test]
fn a_failed_lookup_keeps_the_name() {
    let mut e = Endpoints::parse("http://ctl.example:3000", false).unwrap();
    e.expand(&[]);
    assert_eq!(e.targets(), ["http://ctl.example:3000"]);
}

#[test]
fn https_names_stay_names_without_the_rack_tls() {
    // System roots check the dialled name: an address would fail verification.
    let e = Endpoints::parse("https://ctl.example:3000", false).unwrap();
    assert!(e.lookups().is_empty());
    let e = Endpoints::parse("http://ctl.example:3000", false).unwrap();
    assert_eq!(e.lookups().len(), 1);
}

#[test]
fn expansion_keeps_the_current_target_and_learned_leaders() {
    let mut e = Endpoints::parse("http://ctl.example:3000", false).unwrap();
    e.expand(&[(0, vec![addr("10.0.0.1:3000"), addr("10.0.0.9:3000")])]);
    let mut call = e.begin(Kind::Change);
    let learned = "http://10.0.7.7:3000";
    assert_eq!(
        e.decide(
            &mut call,
            "http://10.0.0.9:3000",
            answered(421, Some(learned))
        ),
        Next::Retry(learned.into())
    );
    e.stale = true;
    e.expand(&[(0, vec![addr("10.0.0.2:3000")])]);
    assert_eq!(e.current(), learned);
    assert!(e.targets().iter().any(|t| t == learned));
}

#[test]
fn learned_leaders_are_bounded() {
    let mut e = Endpoints::parse(A, true).unwrap();
    for i in 0..10 {
        let mut call = e.begin(Kind::Read);
        let leader = format!("https://10.0.3.{i}:3000");
        assert_eq!(
            e.decide(&mut call, A, answered(200, Some(&leader))),
            Next::Return
        );
        assert_eq!(e.current(), leader);
    }
    assert_eq!(e.targets().len(), 1 + MAX_LEARNED);
    assert_eq!(e.targets()[0], A);
}
