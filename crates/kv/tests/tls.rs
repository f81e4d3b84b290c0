//! torc kv over TLS, as etcd 3.4 serves it (`--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth`), driven by the real etcdctl
//! with `--cacert`/`--cert`/`--key` and compared with a real etcd 3.4
//! started with the same flags and certificates:
//! - the case files in `tests/cases/tls/` (each names its server flags on a
//!   `# tls: MODE` line) must give their expected output against both;
//! - watch sessions, with and without auth, must give the same events;
//! - torc's own client, with a client certificate, gets the same answers
//!   from both, also when a request carries etcd's gateway mark;
//! - handshakes: refused without a certificate or with one from another
//!   CA, through torc's own client too; a client that stalls in its
//!   handshake holds up no one else and is dropped after the deadline.

mod common;

use std::io::Read as _;
use std::time::{Duration, Instant};

use common::{
    Certs, ClientCerts, Etcd, Server, TorcKv, WATCH_EXPECTED, auth_watch_session, case_files_in,
    etcdctl, run_case, watch_session,
};
use torc_kv::KvOptions;
use torc_kv_client::proto::etcdserverpb::{PutRequest, RangeRequest};
use torc_kv_client::{Client, ClientTls};

/// The server flags a TLS case file asks for on its `# tls: MODE` line.
fn mode_of(name: &str, text: &str) -> ClientCerts {
    let mode = text
        .lines()
        .find_map(|l| l.strip_prefix("# tls: "))
        .unwrap_or_else(|| panic!("{name}: no `# tls: MODE` line"));
    match mode.trim() {
        "server" => ClientCerts::None,
        "trusted-ca" => ClientCerts::Required,
        "client-cert-auth" => ClientCerts::NameUsers,
        other => panic!("{name}: unknown TLS mode {other:?}"),
    }
}

#[test]
fn tls_case_files_pass() {
    let certs = Certs::new();
    let mut failures = Vec::new();
    for (name, text) in case_files_in("tests/cases/tls") {
        let kv = TorcKv::start_tls(&certs, mode_of(&name, &text));
        failures.extend(run_case(&name, &text, &kv.target, Server::Torc));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn tls_case_files_match_real_etcd() {
    let certs = Certs::new();
    let mut failures = Vec::new();
    for (name, text) in case_files_in("tests/cases/tls") {
        let etcd = Etcd::start_tls(&certs, mode_of(&name, &text));
        failures.extend(run_case(&name, &text, &etcd.target, Server::Etcd));
    }
    assert!(
        failures.is_empty(),
        "etcd disagrees with the TLS case files:\n{}",
        failures.join("\n\n")
    );
}

/// Puts, deletes, a replayed and a live watch, and a watch from a
/// compacted revision, over TLS (etcdctl --cacert).
#[test]
fn watch_sessions_match_over_tls() {
    let certs = Certs::new();
    let etcd = Etcd::start_tls(&certs, ClientCerts::None);
    let torc = TorcKv::start_tls(&certs, ClientCerts::None);
    let from_etcd = watch_session(&etcd.target);
    let from_torc = watch_session(&torc.target);
    assert_eq!(from_torc, from_etcd);
    assert_eq!(&from_etcd[..WATCH_EXPECTED.len()], WATCH_EXPECTED);
}

/// The auth watch session (etcdctl --user) with client certificates
/// required and naming users: the tokens win over root's certificate.
#[test]
fn auth_watch_sessions_match_with_client_certificates() {
    let certs = Certs::new();
    let etcd = Etcd::start_tls(&certs, ClientCerts::NameUsers);
    let torc = TorcKv::start_tls(&certs, ClientCerts::NameUsers);
    let from_etcd = auth_watch_session(etcd.target.with_cert("root"));
    let from_torc = auth_watch_session(torc.target.with_cert("root"));
    assert_eq!(from_torc, from_etcd);
    assert_eq!(from_etcd.len(), 12, "{from_etcd:?}");
}

fn client_tls(certs: &Certs, cert: Option<&str>) -> ClientTls {
    let (crt, key) = match cert {
        Some(name) => (
            Some(certs.path(&format!("{name}.crt"))),
            Some(certs.path(&format!("{name}.key"))),
        ),
        None => (None, None),
    };
    ClientTls::from_files(&certs.path("ca.pem"), crt.as_deref().zip(key.as_deref()))
        .expect("client TLS")
}

/// A put then a get through torc's client; the error text if either fails.
async fn put_get(url: &str, tls: ClientTls) -> Result<String, String> {
    let client = Client::connect_with(url, None, Some(tls))
        .await
        .map_err(|e| format!("{e:?}"))?;
    client
        .put(PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("{e:?}"))?;
    let got = client
        .range(RangeRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(String::from_utf8_lossy(&got.kvs[0].value).into_owned())
}

/// A TLS handshake with `url`'s server, presenting `cert` if given, then
/// a read: with TLS 1.3 a client learns that the server refused its
/// certificate from the alert that follows the client's last handshake
/// message. `Ok` when the server accepted and kept the connection open.
async fn raw_handshake(url: &str, certs: &Certs, cert: Option<&str>) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let roots = torc_tls::load_certs(&certs.path("ca.pem")).expect("ca");
    let identity = cert.map(|name| {
        torc_tls::Identity::from_files(
            &certs.path(&format!("{name}.crt")),
            &certs.path(&format!("{name}.key")),
        )
        .expect("identity")
    });
    let mut config = torc_tls::client_config(&roots, identity).expect("config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = torc_tls::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buf)).await {
        // Nothing to read within a second (an HTTP/2 server waits for the
        // client's preface): the connection stands.
        Err(_) => Ok(()),
        Ok(Ok(0)) => Err("closed without an alert".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

#[test]
fn torc_client_speaks_tls_and_handshakes_refuse_wrong_certificates() {
    let certs = Certs::new();
    let kv = TorcKv::start_tls(&certs, ClientCerts::Required);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        assert_eq!(
            put_get(&kv.endpoint, client_tls(&certs, Some("alice"))).await,
            Ok("v".to_string())
        );
        for (who, cert, alert) in [
            ("no certificate", None, "CertificateRequired"),
            ("a stranger", Some("stranger"), "UnknownCA"),
        ] {
            put_get(&kv.endpoint, client_tls(&certs, cert))
                .await
                .expect_err(who);
            // Refused in the handshake: the server's alert says why.
            let err = raw_handshake(&kv.endpoint, &certs, cert)
                .await
                .expect_err(who);
            assert!(err.contains(alert), "{who}: {err}");
        }
        raw_handshake(&kv.endpoint, &certs, Some("alice"))
            .await
            .expect("alice's certificate");
    });
    // The scheme decides: https needs a CA, TLS is never sent to http://.
    rt.block_on(async {
        let plain = kv.endpoint.replace("https://", "http://");
        let err = Client::connect_with(&plain, None, Some(client_tls(&certs, None)))
            .await
            .err()
            .expect("TLS to http://");
        assert!(err.to_string().contains("use https://"), "{err}");
        let err = Client::connect(&kv.endpoint, None)
            .await
            .err()
            .expect("https without a CA");
        assert!(err.to_string().contains("--cacert"), "{err}");
    });
}

/// A server certificate from a CA the client does not trust is refused by
/// the client.
#[test]
fn torc_client_refuses_a_server_it_does_not_trust() {
    let certs = Certs::new();
    let others = Certs::new();
    let kv = TorcKv::start_tls(&certs, ClientCerts::None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let err = rt
        .block_on(put_get(&kv.endpoint, client_tls(&others, None)))
        .expect_err("an untrusted server");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

/// Clients that open a connection and say nothing (or half a hello) do not
/// stop others from being served, and are dropped at the deadline.
#[test]
fn stalled_handshakes_hold_up_no_one() {
    let certs = Certs::new();
    let deadline = Duration::from_millis(500);
    let kv = TorcKv::start_tls_with(
        &certs,
        ClientCerts::None,
        KvOptions {
            handshake_timeout: deadline,
            ..KvOptions::default()
        },
    );
    let addr = kv.endpoint.trim_start_matches("https://").to_string();
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        if i % 2 == 1 {
            // The first bytes of a TLS record: a handshake, 512 bytes long.
            std::io::Write::write_all(&mut s, &[0x16, 0x03, 0x01, 0x02, 0x00]).expect("write");
        }
        stalled.push(s);
    }
    let started = Instant::now();
    assert_eq!(etcdctl(&kv.target, &["put", "k", "v"], None), "OK\n");
    assert_eq!(
        etcdctl(&kv.target, &["get", "k", "--print-value-only"], None),
        "v\n"
    );
    // Well before the stalled ones are dropped (etcdctl's own start-up
    // takes most of this).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let t = Instant::now();
        match s.read(&mut buf) {
            // Closed by the server: EOF, or a reset.
            Ok(0) | Err(_) if t.elapsed() < Duration::from_secs(9) => {}
            other => panic!("a stalled handshake was not dropped: {other:?}"),
        }
    }
}

/// torc's client (TLS with a client certificate) against both servers with
/// `--client-cert-auth` and auth enabled: root's certificate makes a
/// request root's, except one carrying etcd's gRPC-gateway mark, for which
/// etcd ignores the connection's certificate.
#[test]
fn certificate_names_and_the_gateway_mark_as_in_etcd() {
    let certs = Certs::new();
    let etcd = Etcd::start_tls(&certs, ClientCerts::NameUsers);
    let torc = TorcKv::start_tls(&certs, ClientCerts::NameUsers);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut answers = Vec::new();
    for (target, url) in [
        (&etcd.target, &etcd.endpoint),
        (&torc.target, &torc.endpoint),
    ] {
        let root = target.with_cert("root");
        for args in [
            &["user", "add", "root", "--new-user-password=rootpw"][..],
            &["auth", "enable"],
        ] {
            let out = etcdctl(&root, args, None);
            assert!(!out.contains("(exit"), "{url} {args:?}: {out}");
        }
        answers.push(rt.block_on(async {
            let client = Client::connect_with(url, None, Some(client_tls(&certs, Some("root"))))
                .await
                .expect("connect");
            let mut out = Vec::new();
            for gateway in [false, true] {
                let mut req = tonic::Request::new(RangeRequest {
                    key: "k".into(),
                    ..Default::default()
                });
                if gateway {
                    req.metadata_mut().insert(
                        "grpcgateway-accept",
                        "application/json".parse().expect("value"),
                    );
                }
                out.push(match client.kv().range(req).await {
                    Ok(resp) => format!("{} keys", resp.into_inner().kvs.len()),
                    Err(status) => status.message().to_string(),
                });
            }
            out
        }));
    }
    assert_eq!(answers[1], answers[0], "torc kv, then etcd");
    assert_eq!(answers[0], ["0 keys", "etcdserver: user name is empty"]);
}
