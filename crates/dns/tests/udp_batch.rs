//! The batched UDP loop (`batch.rs`: `recvmmsg`, `sendmmsg`) over IPv4 and IPv6: queries
//! queued at once by several clients each get their own answer, sent back to the client that
//! asked, and a datagram too long for a receive slot is dropped (and counted) without losing
//! the queries around it. Linux only, as the batched loop is.

#![cfg(target_os = "linux")]

mod common;

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use common::{query_packet, wait_for_stats, zone};
use tokio::sync::oneshot;
use torc_dns::{DnsConfig, DnsServer, Listeners, RateLimit};

const CLIENTS: u16 = 4;
const QUERIES: u16 = 16;

/// Starts a server on `bind` (port 0), sends every client's queries before reading any
/// answer, and checks the answers.
async fn answers_every_queued_query(bind: &str) {
    let config = DnsConfig {
        static_zones: vec![zone("homer.ave=homer.ave.zone")],
        // One source sends all of these at once; response-rate limiting would cut them.
        rate_limit: RateLimit {
            responses_per_second: 0,
            ..RateLimit::default()
        },
        ..DnsConfig::default()
    };
    let (server, handle) = DnsServer::new(config);
    let listeners = Listeners::bind(bind.parse().unwrap(), 1).expect("bind");
    let addr = listeners.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listeners, async {
        let _ = stopped.await;
    }));

    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => "127.0.0.1:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::1]:0".parse().unwrap(),
    };
    tokio::task::spawn_blocking(move || {
        let clients: Vec<UdpSocket> = (0..CLIENTS)
            .map(|_| {
                let socket = UdpSocket::bind(local).expect("a client socket");
                socket.connect(addr).expect("connect");
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                socket
            })
            .collect();
        // A query too long for a receive slot (4096 bytes) among the first ones.
        let mut long = query_packet(0xffff, "ns.homer.ave");
        long.resize(5000, 0);
        clients[0].send(&long).unwrap();
        for q in 0..QUERIES {
            for (c, client) in clients.iter().enumerate() {
                let id = c as u16 * 1000 + q;
                client.send(&query_packet(id, "ns.homer.ave")).unwrap();
            }
        }
        for (c, client) in clients.iter().enumerate() {
            let mut ids = BTreeSet::new();
            let mut buf = [0u8; 4096];
            for _ in 0..QUERIES {
                let n = client.recv(&mut buf).expect("an answer");
                assert!(n > 12 && buf[2] & 0x80 != 0, "a response: {:?}", &buf[..n]);
                assert_eq!(buf[3] & 0x0f, 0, "NOERROR");
                ids.insert(u16::from_be_bytes([buf[0], buf[1]]));
            }
            let expected: BTreeSet<u16> = (0..QUERIES).map(|q| c as u16 * 1000 + q).collect();
            assert_eq!(ids, expected, "client {c} got its own answers, each once");
        }
    })
    .await
    .unwrap();
    let stats = wait_for_stats(&handle, "the long datagram counted", |s| s.dropped == 1).await;
    assert_eq!(stats.queries, 1 + u64::from(CLIENTS * QUERIES), "{stats:?}");
    let _ = stop.send(());
    task.await.expect("server task").expect("server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_get_their_own_answers() {
    answers_every_queued_query("127.0.0.1:0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_get_their_own_answers() {
    answers_every_queued_query("[::1]:0").await;
}
