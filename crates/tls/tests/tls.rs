//! The accept loop and the rack CA end to end: a real TLS server on loopback, real clients
//! (reqwest over rustls), certificates from the rack CA and from a stranger's CA.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use torc_tls::pki::{Ca, CertRequest};
use torc_tls::{ClientAuth, Identity, PeerCertificates};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn request(common_name: &str, dns: &[&str]) -> CertRequest {
    CertRequest {
        common_name: common_name.into(),
        dns_names: dns.iter().map(|s| s.to_string()).collect(),
        ips: vec![LOCALHOST],
        validity: Duration::from_secs(3600),
    }
}

fn identity(ca: &Ca, common_name: &str, dns: &[&str]) -> Identity {
    let issued = ca.issue(&request(common_name, dns)).expect("issue");
    Identity::from_pem(&issued.cert_pem, &issued.key_pem.unwrap(), common_name).expect("pem")
}

fn ca_roots(ca: &Ca) -> Vec<torc_tls::CertificateDer<'static>> {
    torc_tls::parse_certs(ca.cert_pem(), "ca").expect("ca pem")
}

/// Answers with the DNS name the client's certificate is valid for, of two candidates.
async fn who(peer: Option<Extension<PeerCertificates>>) -> String {
    match peer.as_ref().and_then(|p| p.leaf().cloned()) {
        Some(cert) if torc_tls::cert_names(&cert, "node-a.rack.test") => "node-a".into(),
        Some(_) => "someone else".into(),
        None => "anonymous".into(),
    }
}

async fn start(
    ca: &Ca,
    client_auth: ClientAuth,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = identity(ca, "server", &["server.rack.test"]);
    let config = torc_tls::server_config(server, client_auth).expect("server config");
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0))
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/who", get(who));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        torc_tls::serve(listener, app, Some(Arc::new(config)), async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    (url, tx, task)
}

fn client(roots: &[torc_tls::CertificateDer<'static>], id: Option<Identity>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(torc_tls::client_config(roots, id).expect("client config"))
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[tokio::test]
async fn clients_are_told_apart_by_their_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create(&dir.path().join("pki"), "test").expect("ca");
    let (url, stop, task) = start(&ca, ClientAuth::Optional(ca_roots(&ca))).await;
    let roots = ca_roots(&ca);

    let anonymous = client(&roots, None);
    let body = anonymous.get(format!("{url}/who")).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "anonymous");

    let node_a = client(&roots, Some(identity(&ca, "node a", &["node-a.rack.test"])));
    let body = node_a.get(format!("{url}/who")).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "node-a");

    let node_b = client(&roots, Some(identity(&ca, "node b", &["node-b.rack.test"])));
    let body = node_b.get(format!("{url}/who")).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "someone else");

    // A certificate from another CA is refused in the handshake, even where certificates are
    // optional: presenting one that does not verify is not the same as presenting none.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = Ca::create(stranger_dir.path(), "other").expect("ca");
    let forged = client(
        &roots,
        Some(identity(&stranger, "node a", &["node-a.rack.test"])),
    );
    let err = forged.get(format!("{url}/who")).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // A client that does not trust the rack CA refuses the server.
    let wrong_roots = client(&ca_roots(&stranger), None);
    assert!(wrong_roots.get(format!("{url}/who")).send().await.is_err());

    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn required_client_certificates_refuse_anonymous_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create(dir.path(), "test").expect("ca");
    let (url, stop, task) = start(&ca, ClientAuth::Required(ca_roots(&ca))).await;
    let roots = ca_roots(&ca);
    assert!(
        client(&roots, None)
            .get(format!("{url}/who"))
            .send()
            .await
            .is_err()
    );
    let node_a = client(&roots, Some(identity(&ca, "node a", &["node-a.rack.test"])));
    let body = node_a.get(format!("{url}/who")).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "node-a");
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn a_stalled_handshake_holds_nothing_but_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create(dir.path(), "test").expect("ca");
    let (url, stop, task) = start(&ca, ClientAuth::None).await;
    let addr = url.trim_start_matches("https://").to_string();
    // Ten clients connect and say nothing.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let body = client(&ca_roots(&ca), None)
        .get(format!("{url}/who"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.text().await.unwrap(), "anonymous");
    let _ = stop.send(());
    task.await.unwrap();
}

#[test]
fn a_loaded_ca_issues_certificates_its_own_certificate_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let created = Ca::create(dir.path(), "test").expect("ca");
    assert!(
        Ca::create(dir.path(), "test").is_err(),
        "create must not overwrite an existing CA"
    );
    let loaded = Ca::load(dir.path()).expect("load");
    assert_eq!(created.cert_pem(), loaded.cert_pem());
    // Modes: the key is the controller's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(mode("ca.pem"), 0o644);
    // A certificate from the loaded CA must verify against the created CA's certificate:
    // served over TLS and accepted by a client trusting only that certificate.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (url, stop, task) = start(&loaded, ClientAuth::None).await;
        let body = client(&ca_roots(&created), None)
            .get(format!("{url}/who"))
            .send()
            .await
            .unwrap();
        assert_eq!(body.status(), 200);
        let _ = stop.send(());
        task.await.unwrap();
    });
}

/// A plain server with short deadlines and small caps.
async fn start_plain(
    options: torc_tls::ServeOptions,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    serve_plain(Router::new().route("/who", get(who)), options).await
}

/// Serves `app` over plain HTTP on a free loopback port with `options`.
async fn serve_plain(
    app: Router,
    options: torc_tls::ServeOptions,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        torc_tls::serve_with(listener, app, None, options, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    (addr, tx, task)
}

/// Reads until the peer closes (Ok(true)) or `within` passes (Ok(false)).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_at_their_deadline() {
    use tokio::io::AsyncWriteExt as _;
    let options = torc_tls::ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (addr, stop, task) = start_plain(options).await;
    // Says nothing at all.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    // Sends half a request head, a byte now and then (slowloris).
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let head = b"GET /who HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut closed = false;
    for byte in head.iter().cycle().take(200) {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed || closed_within(&mut slow, Duration::from_secs(1)).await);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // One request, then idle on a kept-alive connection.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn connections_over_the_caps_are_refused_and_slots_come_back() {
    let options = torc_tls::ServeOptions {
        max_connections: 8,
        max_per_source: 4,
        ..Default::default()
    };
    let (addr, stop, task) = start_plain(options).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // The fifth from the same address is closed at once.
    let mut fifth = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await);
    // Another source still gets in (127.0.0.2 is loopback too).
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind((Ipv4Addr::new(127, 0, 0, 2), 0).into()).unwrap();
    let other = other.connect(addr).await.unwrap();
    drop(other);
    // Slots come back when connections close.
    held.clear();
    let url = format!("http://{addr}/who");
    let answered = async {
        loop {
            if let Ok(r) = reqwest::Client::new().get(&url).send().await {
                return r.status();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(5), answered)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let _ = stop.send(());
    task.await.unwrap();
}

/// A private key is a secret: a key file others can read is refused, with the fix.
#[test]
fn a_private_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create(&dir.path().join("pki"), "test").expect("ca");
    let issued = ca.issue(&request("server", &[])).expect("issue");
    let (crt, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
    std::fs::write(&crt, &issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem.unwrap()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Identity::from_files(&crt, &key).unwrap_err();
    assert!(
        matches!(err, torc_tls::TlsError::Exposed { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Identity::from_files(&crt, &key).expect("a private key file is read");
}

/// An answer that never ends (64 KiB chunks, as fast as the connection takes them).
struct Endless;

impl hyper::body::Body for Endless {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        static CHUNK: [u8; 64 << 10] = [b'x'; 64 << 10];
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(
            hyper::body::Bytes::from_static(&CHUNK),
        ))))
    }
}

/// A plain server with one connection slot, `/echo` (answers the length of the request body)
/// and `/endless`.
async fn start_one_slot(
    options: torc_tls::ServeOptions,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let app = Router::new()
        .route(
            "/echo",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .route("/endless", get(|| async { axum::body::Body::new(Endless) }));
    let options = torc_tls::ServeOptions {
        max_connections: 1,
        max_per_source: 1,
        ..options
    };
    serve_plain(app, options).await
}

/// Waits (at most 10 s) until the server's one slot is free again: a new request is answered.
async fn slot_comes_back(addr: std::net::SocketAddr) {
    let url = format!("http://{addr}/echo");
    let answered = async {
        loop {
            if let Ok(r) = reqwest::Client::new().post(&url).body("hi").send().await
                && r.status() == 200
            {
                return r.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(10), answered)
        .await
        .expect("the stalled client's slot was never given back");
    assert_eq!(body, "2");
}

fn options_300ms_body() -> torc_tls::ServeOptions {
    torc_tls::ServeOptions {
        body_read_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

/// A client that sends its headers and then stops in the middle of the body frees its slot
/// at the body deadline; one that keeps sending, however slowly, is served.
#[tokio::test]
async fn a_stalled_request_body_frees_its_slot() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (addr, stop, task) = start_one_slot(options_300ms_body()).await;
    // Ten bytes of a hundred, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);
    slot_comes_back(addr).await;
    let _ = stop.send(());
    task.await.unwrap();

    // A hundred bytes over about a second, ten at a time: slower than the deadline in all,
    // but never pausing that long (a server of its own: the last one's slot may still be
    // closing).
    let (addr, stop, task) = start_one_slot(options_300ms_body()).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        slow.write_all(b"0123456789").await.unwrap();
    }
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n100"), "{answer}");
    let _ = stop.send(());
    task.await.unwrap();
}

/// A client that asks and never reads the answer frees its slot at the write deadline.
#[tokio::test]
async fn a_client_that_reads_no_answer_frees_its_slot() {
    use tokio::io::AsyncWriteExt as _;
    let options = torc_tls::ServeOptions {
        write_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (addr, stop, task) = start_one_slot(options).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    reader
        .write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // It never reads: the socket buffers fill and the server's writes stall.
    slot_comes_back(addr).await;
    drop(reader);
    let _ = stop.send(());
    task.await.unwrap();
}
