//! Garbage in, no panic out: random bytes, truncated and crafted packets over UDP and TCP,
//! after which the server still answers. Bounded in count and time; no dig needed.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use common::{TestServer, query_packet, snapshot, tcp_ask, tcp_from};
use torc_dns::DnsConfig;

/// xorshift64: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends a valid query and waits (bounded) for its answer, skipping answers to earlier packets.
/// Like any UDP client it asks again on a timeout: the flood may have filled the server's queue.
fn still_answers(socket: &UdpSocket, id: u16) -> Vec<u8> {
    let query = query_packet(id, "bladerunner1.homer.ave");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket.send(&query).unwrap();
        // Drain what is queued; a timeout (Err) means: ask again.
        while let Ok(n) = socket.recv(&mut buf) {
            if n >= 12 && buf[..2] == id.to_be_bytes() {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no answer to a valid query after the garbage");
}

fn crafted() -> Vec<Vec<u8>> {
    let good = query_packet(7, "bladerunner1.homer.ave");
    let mut packets: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    let header = |qd: u16, an: u16, ar: u16| {
        let mut p = vec![0, 9, 1, 0];
        for count in [qd, an, 0, ar] {
            p.extend_from_slice(&count.to_be_bytes());
        }
        p
    };
    // A compression pointer loop in the question.
    packets.push([header(1, 0, 0), vec![0xc0, 12, 0, 1, 0, 1]].concat());
    // A label longer than the packet.
    packets.push([header(1, 0, 0), vec![63, b'a', 0, 1]].concat());
    // A name longer than 255 bytes.
    let long: Vec<u8> = (0..50)
        .flat_map(|_| [5, b'a', b'b', b'c', b'd', b'e'])
        .collect();
    packets.push([header(1, 0, 0), long, vec![0, 0, 1, 0, 1]].concat());
    // No question, many questions, an answer section in a query.
    packets.push(header(0, 0, 0));
    packets.push([header(9, 0, 0), good[12..].to_vec()].concat());
    packets.push([header(1, 1, 0), good[12..].to_vec()].concat());
    // Two OPT records, an OPT with a length past the end, an OPT not owned by the root.
    let opt = [0u8, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0];
    packets.push(
        [
            header(1, 0, 2),
            good[12..].to_vec(),
            opt.to_vec(),
            opt.to_vec(),
        ]
        .concat(),
    );
    packets.push(
        [
            header(1, 0, 1),
            good[12..].to_vec(),
            vec![0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 9],
        ]
        .concat(),
    );
    packets.push(
        [
            header(1, 0, 1),
            good[12..].to_vec(),
            vec![1, b'x', 0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat(),
    );
    // EDNS version 1 (BADVERS), qtype OPT, class CHAOS, AXFR over UDP.
    packets.push(
        [
            header(1, 0, 1),
            good[12..].to_vec(),
            vec![0, 0, 41, 16, 0, 0, 1, 0, 0, 0, 0],
        ]
        .concat(),
    );
    let mut qtype_opt = good.clone();
    let n = qtype_opt.len();
    qtype_opt[n - 4..n - 2].copy_from_slice(&41u16.to_be_bytes());
    packets.push(qtype_opt);
    let mut chaos = good.clone();
    chaos[n - 2..].copy_from_slice(&3u16.to_be_bytes());
    packets.push(chaos);
    let mut axfr = good.clone();
    axfr[n - 4..n - 2].copy_from_slice(&252u16.to_be_bytes());
    packets.push(axfr);
    // A response (QR set) must be ignored, not answered.
    let mut response = good;
    response[2] |= 0x80;
    packets.push(response);
    packets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_garbage_never_kills_the_server() {
    let server = TestServer::start(DnsConfig::default(), Some(&snapshot("rack.json")));
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let started = Instant::now();
        for round in 0..20_000u32 {
            let len = (rng.next() % 600) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if p.len() > 12 && round % 2 == 0 {
                // Look like a query, to get past the header checks.
                p[2] &= 0x07;
                p[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, (rng.next() % 3) as u8]);
            }
            let _ = socket.send(&p);
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        for packet in crafted() {
            socket.send(&packet).unwrap();
        }
        let answer = still_answers(&socket, 0xbeef);
        assert_eq!(answer[3] & 0x0f, 0, "NOERROR");
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_packets_get_the_right_rcode() {
    let server = TestServer::start(DnsConfig::default(), Some(&snapshot("rack.json")));
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let ask = |packet: &[u8]| {
            socket.send(packet).unwrap();
            let mut buf = [0u8; 4096];
            let n = socket.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        };
        let good = query_packet(1, "bladerunner1.homer.ave");
        let n = good.len();
        // Truncated question: FORMERR, header only.
        let answer = ask(&good[..n - 2]);
        assert_eq!((answer[3] & 0x0f, answer.len()), (1, 12));
        // Opcode UPDATE: NOTIMP.
        let mut update = good.clone();
        update[2] = 5 << 3;
        assert_eq!(ask(&update)[3] & 0x0f, 4);
        // Class CHAOS: REFUSED.
        let mut chaos = good.clone();
        chaos[n - 2..].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(ask(&chaos)[3] & 0x0f, 5);
        // EDNS version 1: BADVERS (16) = 0 in the header, 1 in the OPT's extended rcode.
        let mut badvers = good.clone();
        badvers[11] = 1;
        badvers.extend_from_slice(&[0, 0, 41, 16, 0, 0, 1, 0, 0, 0, 0]);
        let answer = ask(&badvers);
        assert_eq!((answer[3] & 0x0f, answer[answer.len() - 6]), (0, 1));
        // And the ID is always echoed.
        assert_eq!(ask(&good)[..2], [0, 1]);
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pipelined_queries_and_garbage() {
    let server = TestServer::start(DnsConfig::default(), Some(&snapshot("rack.json")));
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // Three queries in one write: three answers, in order.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut frames = Vec::new();
        for id in 1..=3u16 {
            let q = query_packet(id, "web.service.torc");
            frames.extend_from_slice(&(q.len() as u16).to_be_bytes());
            frames.extend_from_slice(&q);
        }
        stream.write_all(&frames).unwrap();
        for id in 1..=3u16 {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).unwrap();
            let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut answer).unwrap();
            assert_eq!(answer[..2], id.to_be_bytes());
            assert_eq!(answer[7], 3, "three A records");
        }
        // Garbage frames, then a frame cut short by a close: the server carries on.
        let mut rng = Rng(42);
        for _ in 0..200 {
            let mut s = TcpStream::connect(addr).unwrap();
            let len = (rng.next() % 100) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            bytes.splice(0..0, (len as u16 + (rng.next() % 3) as u16).to_be_bytes());
            let _ = s.write_all(&bytes);
        }
        // From another source: 127.0.0.1 may still hold its 32 slots (the per-source cap) for
        // the moment the server takes to read the garbage connections' ends.
        let mut s = tcp_from("127.0.0.2", addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let answer = tcp_ask(&mut s, &query_packet(9, "bladerunner1.homer.ave")).unwrap();
        assert_eq!(answer[..2], [0, 9]);
    })
    .await
    .unwrap();
    server.stop().await;
}
