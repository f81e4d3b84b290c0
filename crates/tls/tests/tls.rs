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
