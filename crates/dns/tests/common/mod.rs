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
            assert!(handle.apply(snapshot).expect("valid snapshot"));
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
