//! Shutdown: `serve` returns only when every thread and task it started has ended, including
//! the tasks that wait on upstreams for forwarded UDP queries.

mod common;

use std::time::Duration;

use common::{TestServer, query_packet, udp_from};
use torc_dns::DnsConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_udp_queries_waiting_on_an_upstream() {
    // An upstream that takes queries and never answers.
    let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = DnsConfig {
        upstreams: vec![upstream.local_addr().unwrap()],
        upstream_timeout: Duration::from_secs(600),
        ..DnsConfig::default()
    };
    let server = TestServer::start(config, None);
    let addr = server.addr;
    let client = udp_from("127.0.0.1", addr);
    client.send(&query_packet(7, "example.com")).unwrap();
    let mut buf = [0u8; 512];
    tokio::time::timeout(Duration::from_secs(10), upstream.recv_from(&mut buf))
        .await
        .expect("the query is forwarded to the upstream")
        .unwrap();

    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("serve returns without waiting for the upstream");
    // The forwarded query's task held the server's UDP socket: with it ended, the port is free.
    std::net::UdpSocket::bind(addr)
        .expect("nothing serve started holds the server's UDP socket once serve has returned");
}
