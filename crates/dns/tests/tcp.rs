//! TCP connection limits with real sockets: idle connections from one source cannot take the
//! slots of others, a full server gives the slot of its longest-waiting connection to a new
//! client, and silent or trickling connections are closed at their deadlines.
//! Clients use several loopback addresses (all of 127.0.0.0/8 is local) to be several sources.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{TestServer, query_packet, snapshot, tcp_ask, tcp_from};
use torc_dns::DnsConfig;

/// True if the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => panic!("unexpected bytes from the server"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

fn answered(stream: &mut TcpStream, id: u16) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tcp_ask(stream, &query_packet(id, "bladerunner1.homer.ave"))
        .is_ok_and(|a| a[..2] == id.to_be_bytes() && a[3] & 0x0f == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_source_leave_room_for_others() {
    let server = TestServer::start(
        DnsConfig {
            max_tcp_connections: 8,
            max_tcp_connections_per_source: 4,
            ..DnsConfig::default()
        },
        Some(&snapshot("rack.json")),
    );
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // Ten idle connections from one source: four are held, six closed at once.
        let mut idle: Vec<_> = (0..10).map(|_| tcp_from("127.0.0.1", addr)).collect();
        let closed = idle
            .iter_mut()
            .filter_map(|s| closed_within(s, Duration::from_millis(300)).then_some(()))
            .count();
        assert_eq!(
            closed, 6,
            "over its cap, a source's connections are closed at once"
        );
        // A fresh client from another source is answered, several times.
        let mut fresh = tcp_from("127.0.0.2", addr);
        for id in 1..=3 {
            assert!(answered(&mut fresh, id));
        }
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_gives_the_longest_waiting_slot_to_a_new_client() {
    let server = TestServer::start(
        DnsConfig {
            max_tcp_connections: 4,
            max_tcp_connections_per_source: 2,
            ..DnsConfig::default()
        },
        Some(&snapshot("rack.json")),
    );
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // Four sources' idle connections fill the server; the first waited longest.
        let mut idle: Vec<_> = ["127.0.0.3", "127.0.0.3", "127.0.0.4", "127.0.0.4"]
            .iter()
            .map(|ip| {
                let mut s = tcp_from(ip, addr);
                // Accepted and registered: it answers.
                assert!(answered(&mut s, 7));
                s
            })
            .collect();
        let mut fresh = tcp_from("127.0.0.5", addr);
        assert!(answered(&mut fresh, 1), "the new client is served");
        assert!(
            closed_within(&mut idle[0], Duration::from_secs(5)),
            "the connection idle longest gave its slot"
        );
        for s in &mut idle[1..] {
            assert!(!closed_within(s, Duration::from_millis(50)));
        }
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_at_their_deadlines() {
    const INITIAL: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_millis(400);
    let server = TestServer::start(
        DnsConfig {
            tcp_initial_timeout: INITIAL,
            tcp_idle_timeout: IDLE,
            ..DnsConfig::default()
        },
        Some(&snapshot("rack.json")),
    );
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // Silent from the start: closed after the initial timeout, not before.
        let started = Instant::now();
        let mut silent = tcp_from("127.0.0.1", addr);
        assert!(closed_within(&mut silent, Duration::from_secs(5)));
        let took = started.elapsed();
        assert!(took >= INITIAL, "closed after {took:?}");

        // Silent after an answer: closed after the idle timeout.
        let mut done = tcp_from("127.0.0.1", addr);
        assert!(answered(&mut done, 1));
        let answered_at = Instant::now();
        assert!(closed_within(&mut done, Duration::from_secs(5)));
        let took = answered_at.elapsed();
        assert!(
            took >= IDLE - Duration::from_millis(20),
            "closed after {took:?}"
        );

        // Trickling a query a byte at a time does not extend the deadline: the whole message
        // must arrive within it.
        let mut slow = tcp_from("127.0.0.1", addr);
        let q = query_packet(2, "bladerunner1.homer.ave");
        let frame = [&(q.len() as u16).to_be_bytes()[..], &q].concat();
        let started = Instant::now();
        let mut cut = false;
        for byte in &frame {
            if slow.write_all(&[*byte]).is_err() || closed_within(&mut slow, INITIAL / 4) {
                cut = true;
                break;
            }
        }
        assert!(cut, "a trickled query was read whole");
        assert!(started.elapsed() < INITIAL * 3, "{:?}", started.elapsed());
    })
    .await
    .unwrap();
    server.stop().await;
}
