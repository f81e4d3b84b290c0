//! Response-rate limiting over real sockets: a flood of one question from one client prefix is
//! cut to the rate, half its excess slipped (TC=1) and the rest dropped; dig, slipped, retries
//! over TCP and gets its answer; other prefixes, TCP, and a server with limiting off are not
//! affected; NXDOMAIN for random names under one zone shares one account.

mod common;

use std::{net::UdpSocket, time::Duration};

use common::{
    TestServer, dig, query_packet, query_packet_type, snapshot, tcp_ask, tcp_from, udp_from,
    wait_for_stats,
};
use torc_dns::{DnsConfig, DnsStats, RateLimit};

fn config(rate: u32) -> DnsConfig {
    DnsConfig {
        rate_limit: RateLimit {
            responses_per_second: rate,
            // A long window, so the few milliseconds a test takes earn nothing worth counting.
            window_secs: 3600,
            ..RateLimit::default()
        },
        ..DnsConfig::default()
    }
}

/// What came back for a burst: (full answers, truncated answers).
fn drain(socket: &UdpSocket) -> (u64, u64) {
    socket.set_nonblocking(true).unwrap();
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        assert!(n >= 12);
        if buf[2] & 0x02 != 0 {
            assert_eq!(
                buf[6..12],
                [0, 0, 0, 0, 0, 0],
                "a slipped answer has no records"
            );
            truncated += 1;
        } else {
            full += 1;
        }
    }
    (full, truncated)
}

/// Sends `packets` from `socket` and waits until the server has counted `total` queries.
async fn burst(
    server: &TestServer,
    socket: &UdpSocket,
    packets: &[Vec<u8>],
    total: u64,
) -> DnsStats {
    for p in packets {
        socket.send(p).unwrap();
    }
    wait_for_stats(&server.handle, "the burst counted", |s| s.queries >= total).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_cut_to_the_rate_and_half_its_excess_slips() {
    const RATE: u64 = 10;
    const SENT: u64 = 60;
    let server = TestServer::start(config(RATE as u32), Some(&snapshot("rack.json")));
    let socket = udp_from("127.0.0.1", server.addr);
    let packets: Vec<_> = (0..SENT as u16)
        .map(|id| query_packet(id, "bladerunner1.homer.ave"))
        .collect();
    let stats = burst(&server, &socket, &packets, SENT).await;
    // The burst takes well under a second: at most one credit earned meanwhile.
    assert!((RATE..=RATE + 1).contains(&stats.answered), "{stats:?}");
    let limited = SENT - stats.answered;
    assert_eq!(stats.rate_limited + stats.slipped, limited, "{stats:?}");
    // slip 2: the first limited answer slips, then every other one.
    assert!(stats.slipped.abs_diff(stats.rate_limited) <= 1, "{stats:?}");
    // The datagrams sent may still be on their way when the counters moved: wait for them.
    let got = wait_for_datagrams(&socket, stats.answered + stats.slipped).await;
    assert_eq!(got, (stats.answered, stats.slipped));

    // Another /24 is another client: answered. So is the same question over TCP.
    let other = udp_from("127.0.1.1", server.addr);
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other
        .send(&query_packet(1, "bladerunner1.homer.ave"))
        .unwrap();
    let mut buf = [0u8; 4096];
    other.recv(&mut buf).unwrap();
    assert_eq!((buf[2] & 0x02, buf[7]), (0, 1), "full answer, one record");
    let mut tcp = tcp_from("127.0.0.1", server.addr);
    for id in 0..20 {
        let answer = tcp_ask(&mut tcp, &query_packet(id, "bladerunner1.homer.ave")).unwrap();
        assert_eq!(
            (answer[2] & 0x02, answer[7]),
            (0, 1),
            "TCP is never limited"
        );
    }
    server.stop().await;
}

/// Drains `socket` until `want` datagrams came (bounded): (full, truncated).
async fn wait_for_datagrams(socket: &UdpSocket, want: u64) -> (u64, u64) {
    let mut got = drain(socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.0 + got.1 < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {got:?} of {want} datagrams"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (f, t) = drain(socket);
        got = (got.0 + f, got.1 + t);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_retries_a_slipped_answer_over_tcp() {
    let server = TestServer::start(config(1), Some(&snapshot("rack.json")));
    // Spend the account of 127.0.0.0/24 for this question (with dig's EDNS, as dig asks it).
    let socket = udp_from("127.0.0.1", server.addr);
    let mut edns = query_packet(1, "web.service.torc");
    edns[11] = 1;
    edns.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    let stats = burst(&server, &socket, &vec![edns; 3], 3).await;
    assert_eq!(
        (stats.answered, stats.slipped, stats.rate_limited),
        (1, 1, 1),
        "{stats:?}"
    );
    // With slip 2 the next limited answer, dig's, slips: dig says so and asks over TCP.
    let out = dig(server.addr, &["web.service.torc"]).await;
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("status: NOERROR"), "{out}");
    assert_eq!(
        out.matches("\tIN\tA\t").count(),
        3,
        "three A records:\n{out}"
    );
    assert!(server.handle.stats().tcp_queries >= 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_for_random_names_shares_the_zone_account() {
    let server = TestServer::start(config(5), Some(&snapshot("rack.json")));
    let socket = udp_from("127.0.0.1", server.addr);
    let packets: Vec<_> = (0..20u16)
        .map(|i| query_packet(i, &format!("random{i}.homer.ave")))
        .collect();
    let stats = burst(&server, &socket, &packets, 20).await;
    assert!((5..=6).contains(&stats.nxdomain), "{stats:?}");
    assert_eq!(stats.nxdomain + stats.slipped + stats.rate_limited, 20);
    // A positive answer in the same zone has an account of its own.
    let mut buf = [0u8; 4096];
    drain(&socket);
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .send(&query_packet_type(99, "bladerunner1.homer.ave", 1))
        .unwrap();
    loop {
        let n = socket.recv(&mut buf).unwrap();
        if buf[..2] == [0, 99] {
            assert_eq!((n > 12, buf[3] & 0x0f, buf[7]), (true, 0, 1));
            break;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_means_every_answer_is_sent() {
    let server = TestServer::start(config(0), Some(&snapshot("rack.json")));
    let socket = udp_from("127.0.0.1", server.addr);
    let packets: Vec<_> = (0..300u16)
        .map(|id| query_packet(id, "bladerunner1.homer.ave"))
        .collect();
    let stats = burst(&server, &socket, &packets, 300).await;
    assert_eq!(
        (stats.answered, stats.rate_limited, stats.slipped),
        (300, 0, 0)
    );
    server.stop().await;
}
