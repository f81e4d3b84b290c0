//! `DnsHandle::stats` moves with real traffic: queries sent with `dig` over UDP and TCP, plus
//! raw packets for the outcomes dig cannot provoke, each show up in the right counter.

mod common;

use std::{net::UdpSocket, time::Duration};

use common::{TestServer, dig, query_packet, snapshot, zone};
use torc_dns::{DnsConfig, DnsStats};

/// Runs `dig @addr -p port +time=2 +tries=1 ARGS` and returns its status line's rcode.
async fn dig_status(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let stdout = dig(addr, args).await;
    stdout
        .split_once("status: ")
        .and_then(|(_, rest)| rest.split(',').next())
        .unwrap_or_else(|| panic!("dig printed no status:\n{stdout}"))
        .to_owned()
}

/// Sends `packet` and waits for the answer (or for nothing, if `expect_answer` is false).
fn raw(addr: std::net::SocketAddr, packet: &[u8], expect_answer: bool) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(packet, addr).unwrap();
    if expect_answer {
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 4096];
        socket.recv_from(&mut buf).expect("an answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_queries() {
    const N: u64 = 20;
    let config = DnsConfig {
        static_zones: vec![zone("homer.ave=homer.ave.zone")],
        ..DnsConfig::default()
    };
    let server = TestServer::start(config, Some(&snapshot("rack.json")));
    assert_eq!(server.handle.stats(), DnsStats::default());

    // N answered over UDP (the cache serves all but the first), a NODATA among them.
    for i in 0..N {
        let args: &[&str] = if i % 5 == 0 {
            &["bladerunner1.homer.ave", "SRV"]
        } else {
            &["bladerunner1.homer.ave", "A"]
        };
        assert_eq!(dig_status(server.addr, args).await, "NOERROR");
    }
    // 3 NXDOMAIN, 2 REFUSED (outside our zones, no upstream), 2 over TCP.
    for name in ["nope.homer.ave", "NOPE.homer.ave", "gone.service.torc"] {
        assert_eq!(dig_status(server.addr, &[name]).await, "NXDOMAIN");
    }
    for name in ["example.com", "example.org"] {
        assert_eq!(dig_status(server.addr, &[name]).await, "REFUSED");
    }
    assert_eq!(
        dig_status(server.addr, &["+tcp", "ns.homer.ave"]).await,
        "NOERROR"
    );
    assert_eq!(
        dig_status(server.addr, &["+tcp", "nothere.homer.ave"]).await,
        "NXDOMAIN"
    );
    // FORMERR: two questions. NOTIMP: opcode 2 (STATUS). Dropped: a response (QR set).
    let mut two_questions = query_packet(7, "ns.homer.ave");
    two_questions[5] = 2;
    raw(server.addr, &two_questions, true);
    let mut status = query_packet(8, "ns.homer.ave");
    status[2] = 2 << 3;
    raw(server.addr, &status, true);
    let mut response = query_packet(9, "ns.homer.ave");
    response[2] |= 0x80;
    raw(server.addr, &response, false);
    // The dropped packet gives no answer to wait for: wait for the counter, with a timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.handle.stats().dropped == 0 {
        assert!(tokio::time::Instant::now() < deadline, "drop never counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stats = server.handle.stats();
    let expected = {
        let mut s = DnsStats::default();
        s.queries = N + 3 + 2 + 2 + 3;
        s.answered = N + 1;
        s.nxdomain = 3 + 1;
        s.refused = 2;
        s.formerr = 1;
        s.other = 1;
        s.dropped = 1;
        s.tcp_queries = 2;
        // One UDP thread, one answer cache: the N questions are two (A and SRV), each looked
        // up once.
        s.cache_hits = N - 2;
        s
    };
    assert_eq!(stats, expected);
    // Clones of the handle read the same counters.
    assert_eq!(server.handle.clone().stats(), stats);
    server.stop().await;
}

/// A forwarded query counts as forwarded on the server that forwarded it, and as answered on
/// the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_queries_are_counted() {
    let upstream = TestServer::start(DnsConfig::default(), Some(&snapshot("upstream.json")));
    let server = TestServer::start(
        DnsConfig {
            upstreams: vec![upstream.addr],
            ..DnsConfig::default()
        },
        Some(&snapshot("rack.json")),
    );
    let name = "www.example.test"; // answered by upstream.json, not in rack.json
    assert_eq!(dig_status(server.addr, &[name]).await, "NOERROR");
    assert_eq!(dig_status(server.addr, &["+tcp", name]).await, "NOERROR");
    let stats = server.handle.stats();
    assert_eq!(
        (stats.queries, stats.forwarded, stats.tcp_queries),
        (2, 2, 1),
        "{stats:?}"
    );
    let upstream_stats = upstream.handle.stats();
    assert_eq!(upstream_stats.answered, 2, "{upstream_stats:?}");
    server.stop().await;
    upstream.stop().await;
}
