//! torc kv's connections under abuse, over raw TCP and through the real
//! etcdctl: an oversized or endless HTTP/2 header block is refused at once
//! (never buffered), connections over the caps are refused, silent and idle
//! connections are closed at their deadlines, and through all of it the
//! server keeps serving everyone else. Plain and TLS go through the same
//! accept path (`torc_tls::incoming`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Certs, ClientCerts, H2_PREFACE, Lines, TorcKv, etcdctl, h2_frame};
use torc_kv::KvOptions;

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const FRAME_SIZE_ERROR: u32 = 0x6;

/// A raw connection that has said hello in HTTP/2 (preface and empty
/// SETTINGS).
fn hello(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(H2_PREFACE).expect("preface");
    s.write_all(&h2_frame(SETTINGS, 0, 0, 0)).expect("settings");
    s
}

/// Reads frames until a GOAWAY (its error code) or the connection's end
/// (`None`), failing after `within`.
fn goaway_within(s: &mut TcpStream, within: Duration) -> Option<u32> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY && len >= 8 {
                return Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no GOAWAY and no close within {within:?}");
        s.set_read_timeout(Some(left)).expect("timeout");
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("no GOAWAY and no close within {within:?}")
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("no GOAWAY and no close within {within:?}")
            }
            // Reset: closed.
            Err(_) => return None,
        }
    }
}

/// Whether the server closed `s` (EOF or reset, after any frames) within
/// `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn still_serves(kv: &TorcKv, key: &str) {
    assert_eq!(etcdctl(&kv.target, &["put", key, "v"], None), "OK\n");
    assert_eq!(
        etcdctl(&kv.target, &["get", key, "--print-value-only"], None),
        "v\n"
    );
}

/// A HEADERS frame that claims 16 MiB is refused from its 9-byte header
/// (h2's FRAME_SIZE_ERROR), before any of its payload: the server never
/// waits to buffer it. (It used to: the authority rewriter held back whole
/// HEADERS frames of any length.)
#[test]
fn an_oversized_headers_frame_is_refused_at_once() {
    let kv = TorcKv::start();
    let mut s = hello(&kv.endpoint);
    s.write_all(&h2_frame(HEADERS, END_HEADERS, 1, 0xff_ffff))
        .expect("frame header");
    s.write_all(&[0x82; 1000]).expect("a little payload");
    let started = Instant::now();
    let code = goaway_within(&mut s, Duration::from_secs(5));
    assert_eq!(code, Some(FRAME_SIZE_ERROR), "{:?}", started.elapsed());
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    still_serves(&kv, "after-oversized");
}

/// A header block that never ends (HEADERS, then CONTINUATION frames of the
/// largest size, forever) is cut off by h2's header-list bound: the server
/// says GOAWAY and closes while the client is still sending, and serves
/// others meanwhile and after.
#[test]
fn an_endless_header_block_is_cut_off() {
    let kv = TorcKv::start();
    let mut s = hello(&kv.endpoint);
    let mut reader = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut sent = 0usize;
        let payload = vec![0x40u8; 16_384];
        let mut head = h2_frame(HEADERS, 0, 1, payload.len());
        head.extend_from_slice(&payload);
        if s.write_all(&head).is_err() {
            return sent;
        }
        // Up to 256 MiB: far past any bound the server may have.
        for _ in 0..16_384 {
            let mut f = h2_frame(CONTINUATION, 0, 1, payload.len());
            f.extend_from_slice(&payload);
            if s.write_all(&f).is_err() {
                return sent;
            }
            sent += f.len();
        }
        sent
    });
    let _ = goaway_within(&mut reader, Duration::from_secs(10));
    assert!(closed_within(&mut reader, Duration::from_secs(10)));
    let sent = writer.join().expect("writer");
    assert!(
        sent < 64 << 20,
        "the server read {sent} bytes of one header block"
    );
    still_serves(&kv, "after-endless");
}

/// Connections over the per-source cap are refused (reset at once); one
/// freed makes room again.
#[test]
fn connections_over_the_cap_are_refused() {
    let kv = TorcKv::start_with_options(KvOptions {
        max_connections_per_source: 3,
        ..KvOptions::default()
    });
    let held: Vec<TcpStream> = (0..3).map(|_| hello(&kv.endpoint)).collect();
    // The fourth is closed at once, before it can say anything.
    let mut over = TcpStream::connect(&kv.endpoint).expect("connect");
    assert!(closed_within(&mut over, Duration::from_secs(5)));
    drop(held);
    // Slots come back when connections close: etcdctl gets one.
    common::wait_until(Duration::from_secs(10), "a slot to come back", || {
        etcdctl(&kv.target, &["put", "k", "v"], None) == "OK\n"
    });
}

/// A connection that never sends the HTTP/2 preface is closed at the
/// handshake deadline; one that said hello but opened no stream gets a
/// GOAWAY at the idle deadline.
#[test]
fn silent_and_idle_connections_are_closed() {
    let kv = TorcKv::start_with_options(KvOptions {
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..KvOptions::default()
    });
    let mut silent = TcpStream::connect(&kv.endpoint).expect("connect");
    let mut idle = hello(&kv.endpoint);
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(goaway_within(&mut idle, Duration::from_secs(5)), Some(0));
    assert!(started.elapsed() >= Duration::from_millis(550));
    assert!(closed_within(&mut idle, Duration::from_secs(5)));
    still_serves(&kv, "after-idle");
}

/// A connection with a watch open is not idle, however long nothing
/// happens: the watch still gets its events after several idle deadlines.
#[test]
fn an_open_watch_keeps_its_connection() {
    let kv = TorcKv::start_with_options(KvOptions {
        idle_timeout: Duration::from_millis(200),
        ..KvOptions::default()
    });
    let mut child = kv
        .target
        .command()
        .args(["watch", "w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    // Established once a put shows up.
    common::wait_until(Duration::from_secs(10), "the watch to see a put", || {
        etcdctl(&kv.target, &["put", "w", "probe"], None);
        lines.next(Duration::from_millis(200)).is_some()
    });
    while lines.next(Duration::from_millis(100)).is_some() {}
    // Five idle deadlines with nothing to say.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(etcdctl(&kv.target, &["put", "w", "late"], None), "OK\n");
    let got = lines.take(3, Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, ["PUT", "w", "late"]);
}

/// Over TLS the same accept path applies its caps and deadlines: a client
/// that finishes the handshake and then says nothing is closed, one over
/// the cap is refused, and etcdctl is served throughout.
#[test]
fn tls_connections_have_the_same_caps_and_deadlines() {
    let certs = Certs::new();
    let kv = TorcKv::start_tls_with(
        &certs,
        ClientCerts::None,
        KvOptions {
            handshake_timeout: Duration::from_millis(300),
            max_connections_per_source: 2,
            ..KvOptions::default()
        },
    );
    let addr = kv.endpoint.trim_start_matches("https://").to_string();
    let mut config = torc_tls::client_config(
        &torc_tls::load_certs(&certs.path("ca.pem")).expect("ca"),
        None,
    )
    .expect("client config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let name = torc_tls::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        // Holds one of the two slots; a second raw connection holds the other.
        let second = std::net::TcpStream::connect(&addr).expect("connect");
        let mut over = std::net::TcpStream::connect(&addr).expect("connect");
        assert!(closed_within(&mut over, Duration::from_secs(5)));
        drop(second);
        // The silent TLS client is closed after the preface deadline.
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent TLS client was not closed");
    });
    still_serves(&kv, "after-tls");
}
