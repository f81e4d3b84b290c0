//! Helpers shared by the integration tests: start a server in-process on a free port.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::{net::SocketAddr, path::PathBuf};

use tokio::{sync::oneshot, task::JoinHandle};
use torc_dns::{DnsConfig, DnsHandle, DnsServer, DnsSnapshot, Listeners, StaticZone};

/// A server on 127.0.0.1 and a free port, stopped by [`TestServer::stop`].
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: DnsHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server; must be called inside a tokio runtime.
    pub fn start(config: DnsConfig, snapshot: Option<&DnsSnapshot>) -> Self {
        let (server, handle) = DnsServer::new(config);
        if let Some(snapshot) = snapshot {
            assert!(handle.apply(snapshot).expect("valid snapshot").takes());
        }
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), 1).expect("bind");
        let addr = listeners.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listeners, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            handle,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("server");
    }
}

/// A path under `tests/data`.
pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

pub fn snapshot(file: &str) -> DnsSnapshot {
    let path = data(&format!("snapshots/{file}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A zone from `ORIGIN=FILE`, FILE under `tests/data/zones`.
pub fn zone(spec: &str) -> StaticZone {
    let (origin, file) = spec.split_once('=').expect("zone: ORIGIN=FILE");
    StaticZone::from_file(&data(&format!("zones/{file}")), Some(origin))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A plain A query for `name` with the given ID, as raw bytes.
pub fn query_packet(id: u16, name: &str) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

/// Runs `dig @addr -p port +time=2 +tries=1 ARGS` and returns its output; fails loudly when
/// dig is not installed.
pub async fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let output = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run `dig` ({e}): install it with `apt-get install bind9-dnsutils`")
        });
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `query_packet` with another type.
pub fn query_packet_type(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = query_packet(id, name);
    let n = p.len();
    p[n - 4..n - 2].copy_from_slice(&qtype.to_be_bytes());
    p
}

/// A UDP socket on `local` (e.g. `127.0.1.1`: loopback has all of 127.0.0.0/8, so tests can be
/// clients in other prefixes), connected to `server`.
pub fn udp_from(local: &str, server: std::net::SocketAddr) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind((local, 0)).expect("bind a loopback address");
    socket.connect(server).expect("connect");
    socket
}

/// A TCP connection to `server` from `local` (any address of 127.0.0.0/8).
pub fn tcp_from(local: &str, server: std::net::SocketAddr) -> std::net::TcpStream {
    let local: std::net::SocketAddr = format!("{local}:0").parse().expect("an IPv4 address");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    socket.bind(&local.into()).expect("bind a loopback address");
    socket.connect(&server.into()).expect("connect");
    socket.into()
}

/// Sends one length-prefixed query on `stream` and reads its answer.
pub fn tcp_ask(stream: &mut std::net::TcpStream, query: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    stream.write_all(&[&(query.len() as u16).to_be_bytes()[..], query].concat())?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

/// Waits (polling, bounded) until `done` holds for the server's counters; returns them.
pub async fn wait_for_stats(
    handle: &DnsHandle,
    what: &str,
    done: impl Fn(&torc_dns::DnsStats) -> bool,
) -> torc_dns::DnsStats {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = handle.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after 10 s: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
