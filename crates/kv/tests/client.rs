//! The client helper (`torc_kv_client`) against torc kv with auth: it
//! authenticates, carries its token, and authenticates again when the token
//! expires, when the server restarts (tokens live in memory only) and when
//! it is told auth is off; a changed password ends its session at once.

mod common;

use std::time::Duration;

use common::{TorcKv, etcdctl};
use tonic::Code;
use torc_kv::KvOptions;
use torc_kv_client::proto::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};
use torc_kv_client::{Client, ClientError, Credentials};

const TTL: Duration = Duration::from_secs(1);

fn options() -> KvOptions {
    KvOptions {
        auth_token_ttl: TTL,
        ..KvOptions::default()
    }
}

/// root (password rootpw), and auth enabled, through etcdctl.
fn enable_auth(endpoint: &str) {
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["auth", "enable"],
    ] {
        let out = etcdctl(endpoint, args, None);
        assert!(!out.contains("(exit"), "{args:?}: {out}");
    }
}

fn root() -> Option<Credentials> {
    Some(Credentials::new("root", "rootpw"))
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// A Range made with `token` (or none) directly, not through the helper.
async fn raw_get(url: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut kv = KvClient::connect(url.to_string()).await.expect("connect");
    let mut req = tonic::Request::new(get("k"));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("token", t.parse().expect("ascii token"));
    }
    kv.range(req).await.map(|_| ())
}

/// One worker thread, so connections close in the background when dropped.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn an_expired_token_is_replaced_by_authenticating_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = TorcKv::start_in(dir.path(), options());
    enable_auth(&kv.endpoint);
    let url = format!("http://{}", kv.endpoint);
    runtime().block_on(async {
        let client = Client::connect(&url, root()).await.expect("connect");
        let first = client.token().expect("a token");
        client.put(put("k", "1")).await.expect("put");
        assert_eq!(
            raw_get(&url, None).await.map_err(|s| s.code()),
            Err(Code::InvalidArgument)
        );
        // Each use renews a token, so nothing can watch it expire without
        // keeping it alive: wait out its TTL (the one wait on the clock
        // here), then it is refused as etcd refuses it.
        tokio::time::sleep(TTL + Duration::from_millis(300)).await;
        let refused = raw_get(&url, Some(&first)).await.expect_err("expired");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), "etcdserver: invalid auth token");
        // The helper's call is refused the same way, authenticates again
        // and repeats it.
        let resp = client.range(get("k")).await.expect("range after expiry");
        assert_eq!(resp.kvs[0].value, "1");
        let second = client.token().expect("a new token");
        assert_ne!(first, second);
        assert_eq!(
            raw_get(&url, Some(&second)).await.map_err(|s| s.code()),
            Ok(())
        );
    });
}

#[test]
fn a_restart_forgets_tokens_and_the_client_logs_in_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = TorcKv::start_in(dir.path(), KvOptions::default());
    enable_auth(&kv.endpoint);
    let rt = runtime();
    let url = format!("http://{}", kv.endpoint);
    let client = rt.block_on(async {
        let client = Client::connect(&url, root()).await.expect("connect");
        client.put(put("k", "before")).await.expect("put");
        client
    });
    let before = client.token();
    // An open connection would hold the server's shutdown for its grace.
    drop(client);
    kv.stop();
    // Same data, new process state (and port): auth is still on, the token
    // is unknown.
    let kv = TorcKv::start_in(dir.path(), KvOptions::default());
    let url = format!("http://{}", kv.endpoint);
    rt.block_on(async {
        assert_eq!(
            raw_get(&url, None).await.map_err(|s| s.code()),
            Err(Code::InvalidArgument)
        );
        let moved = Client::lazy(
            tonic::transport::Endpoint::from_shared(url.clone()).expect("url"),
            root(),
        );
        // A lazy client authenticates before its first call.
        assert_eq!(moved.token(), None);
        let resp = moved.range(get("k")).await.expect("range");
        assert_eq!(resp.kvs[0].value, "before");
        assert!(moved.token().is_some());
        let stale = before.expect("old token");
        let refused = raw_get(&url, Some(&stale))
            .await
            .expect_err("unknown token");
        assert_eq!(refused.message(), "etcdserver: invalid auth token");
    });
}

#[test]
fn a_changed_password_ends_the_session_at_once() {
    let kv = TorcKv::start();
    enable_auth(&kv.endpoint);
    for args in [
        &[
            "--user=root:rootpw",
            "user",
            "add",
            "alice",
            "--new-user-password=old",
        ][..],
        &["--user=root:rootpw", "role", "add", "app"],
        &[
            "--user=root:rootpw",
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "k",
        ],
        &["--user=root:rootpw", "user", "grant-role", "alice", "app"],
    ] {
        let out = etcdctl(&kv.endpoint, args, None);
        assert!(!out.contains("(exit"), "{args:?}: {out}");
    }
    let url = format!("http://{}", kv.endpoint);
    runtime().block_on(async {
        let alice = Client::connect(&url, Some(Credentials::new("alice", "old")))
            .await
            .expect("connect");
        alice.put(put("k", "mine")).await.expect("put");
        let out = etcdctl(
            &kv.endpoint,
            &[
                "--user=root:rootpw",
                "user",
                "passwd",
                "alice",
                "--interactive=false",
            ],
            Some("new\n"),
        );
        assert_eq!(out, "Password updated\n");
        // The old token is gone; authenticating again with the old
        // password fails, and says so.
        let err = alice.range(get("k")).await.expect_err("old password");
        assert!(
            matches!(&err, ClientError::Authenticate { endpoint, user, status }
                if endpoint == &url && user == "alice" && status.code() == Code::InvalidArgument),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "etcd at {url}: authenticating as alice: etcdserver: authentication failed, \
                 invalid user ID or password"
            )
        );
        let again = Client::connect(&url, Some(Credentials::new("alice", "new")))
            .await
            .expect("connect");
        assert_eq!(
            again.range(get("k")).await.expect("range").kvs[0].value,
            "mine"
        );
        // A permission taken away takes effect on the next call.
        let out = etcdctl(
            &kv.endpoint,
            &["--user=root:rootpw", "user", "revoke-role", "alice", "app"],
            None,
        );
        assert_eq!(out, "Role app is revoked from user alice\n");
        let err = again.range(get("k")).await.expect_err("revoked");
        assert_eq!(err.status().map(|s| s.code()), Some(Code::PermissionDenied));
        assert_eq!(err.to_string(), "etcdserver: permission denied");
    });
}

#[test]
fn credentials_work_against_a_server_without_auth_and_after_it_is_enabled() {
    let kv = TorcKv::start();
    let url = format!("http://{}", kv.endpoint);
    runtime().block_on(async {
        let client = Client::connect(&url, root()).await.expect("connect");
        assert_eq!(client.token(), None, "auth is off: no token");
        client.put(put("k", "1")).await.expect("put without auth");
        enable_auth(&kv.endpoint);
        // Refused for want of a user: the client authenticates and goes on.
        client.put(put("k", "2")).await.expect("put with auth");
        assert!(client.token().is_some());
        let anonymous = Client::connect(&url, None).await.expect("connect");
        let err = anonymous.put(put("k", "3")).await.expect_err("no user");
        assert_eq!(err.to_string(), "etcdserver: user name is empty");
    });
}
