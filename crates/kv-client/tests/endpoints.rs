//! A client of several endpoints against a real 3-member etcd: it moves off a dead, frozen or
//! leaderless member by itself, authenticates again on the new one, and when nothing answers
//! its error names every endpoint it tried.

use std::time::{Duration, Instant};

use torc_kv_client::proto::etcdserverpb::{PutRequest, RangeRequest};
use torc_kv_client::{Client, ClientError, ClientOptions, Credentials};
use torc_test_utils::{EtcdCluster, etcdctl, free_port, wait_for};

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

async fn value(client: &Client, key: &str) -> Result<String, ClientError> {
    let resp = client.range(get(key)).await?;
    Ok(resp
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default())
}

/// `key`'s value, read again until a read succeeds (10 s at most).
async fn read_again(client: &Client, key: &str) -> String {
    wait_for("a successful read", Duration::from_secs(10), || async {
        value(client, key).await.ok()
    })
    .await
    .unwrap()
}

/// A URL on which nothing listens.
fn closed_url() -> String {
    let ip = std::net::Ipv4Addr::LOCALHOST;
    format!("http://{ip}:{}", free_port(ip))
}

fn member_index(cluster: &EtcdCluster, client: &Client) -> usize {
    cluster
        .index_of(&client.endpoint())
        .expect("pinned on a member")
}

#[tokio::test]
async fn errors_name_every_endpoint_tried() {
    let urls = [closed_url(), closed_url()];
    let err = Client::connect_endpoints(&urls, ClientOptions::default())
        .await
        .err()
        .expect("nothing listens");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("etcd at {}: ", urls[0])),
        "{text}"
    );
    assert!(text.contains(&format!("; at {}: ", urls[1])), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");

    // A lazy client says the same on its first call.
    let lazy = Client::lazy_endpoints(&urls, ClientOptions::default()).unwrap();
    let text = lazy.put(put("/k", "v")).await.unwrap_err().to_string();
    assert!(text.contains(&urls[0]) && text.contains(&urls[1]), "{text}");

    let none: [&str; 0] = [];
    assert!(matches!(
        Client::lazy_endpoints(&none, ClientOptions::default()),
        Err(ClientError::NoEndpoints)
    ));
}

#[tokio::test]
async fn moves_off_a_dead_member_and_keeps_working() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    // A closed port first: a change that was never sent runs on the next endpoint.
    let mut urls = vec![closed_url()];
    urls.extend(cluster.endpoints());
    let client = Client::lazy_endpoints(&urls, ClientOptions::default()).unwrap();
    client.put(put("/k", "1")).await.unwrap();
    assert_eq!(client.endpoint(), urls[1]);
    assert_eq!(client.endpoints(), urls);

    // Kill the member it uses: the next read moves and succeeds. Writes follow once the
    // survivors have a raft leader (if the dead member led).
    let dead = member_index(&cluster, &client);
    cluster.kill(dead);
    let started = Instant::now();
    // If the dead member led raft, a read can find every survivor between leaders ("leader
    // changed", "no leader"); the client then names them all and the caller tries again.
    let read = read_again(&client, "/k").await;
    let moved_in = started.elapsed();
    assert_eq!(read, "1");
    assert_ne!(client.endpoint(), cluster.endpoint(dead));
    wait_for("a write after the kill", Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.put(put("/k", "2")).await.ok() }
    })
    .await
    .unwrap();
    assert_eq!(value(&client, "/k").await.unwrap(), "2");
    eprintln!("read moved off a killed member in {moved_in:?}");
}

#[tokio::test]
async fn moves_off_a_frozen_member_by_its_deadline() {
    let cluster = EtcdCluster::start().await.unwrap();
    let options = ClientOptions {
        request_timeout: Some(Duration::from_millis(800)),
        ..ClientOptions::default()
    };
    let client = Client::connect_endpoints(&cluster.endpoints(), options)
        .await
        .unwrap();
    client.put(put("/f", "x")).await.unwrap();
    let frozen = member_index(&cluster, &client);
    cluster.stop(frozen).unwrap();
    // A read runs again elsewhere after the deadline.
    let started = Instant::now();
    let got = wait_for(
        "a read past the frozen member",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move { value(&client, "/f").await.ok() }
        },
    )
    .await;
    cluster.cont(frozen).unwrap();
    assert_eq!(got.unwrap(), "x");
    assert_ne!(client.endpoint(), cluster.endpoint(frozen));
    eprintln!("read moved off a frozen member in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_leaderless_member_refuses_at_once_and_is_named() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    cluster.kill(0);
    cluster.kill(1);
    // Only the survivor, which has lost its quorum: with `hasleader` it refuses (no 7 s
    // wait), and the error names it.
    let survivor = [cluster.endpoint(2)];
    let client = Client::lazy_endpoints(&survivor, ClientOptions::default()).unwrap();
    let text = wait_for("etcd's `no leader`", Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let err = client.put(put("/q", "1")).await.err()?;
            let text = err.to_string();
            (text.contains("no leader") && started.elapsed() < Duration::from_secs(2))
                .then_some(text)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        text,
        format!("etcd at {}: etcdserver: no leader", survivor[0])
    );
}

#[tokio::test]
async fn authenticates_again_on_the_next_member() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    let first = cluster.endpoint(0);
    etcdctl(&first, &["user", "add", "root:rootpw"]).unwrap();
    etcdctl(&first, &["auth", "enable"]).unwrap();
    let options = ClientOptions {
        credentials: Some(Credentials::new("root", "rootpw")),
        ..ClientOptions::default()
    };
    let client = Client::connect_endpoints(&cluster.endpoints(), options.clone())
        .await
        .unwrap();
    client.put(put("/a", "1")).await.unwrap();
    let token = client.token().expect("a token");
    let dead = member_index(&cluster, &client);
    cluster.kill(dead);
    assert_eq!(read_again(&client, "/a").await, "1");
    // etcd's simple tokens are per member: the client holds a new one.
    assert_ne!(client.token().expect("a token"), token);

    // A wrong password is a refusal, not a dead member: it is not tried everywhere.
    let wrong = ClientOptions {
        credentials: Some(Credentials::new("root", "nope")),
        ..options
    };
    let live: Vec<String> = (0..3)
        .filter(|&i| i != dead)
        .map(|i| cluster.endpoint(i))
        .collect();
    let err = Client::connect_endpoints(&live, wrong)
        .await
        .err()
        .expect("wrong password");
    assert!(
        matches!(err, ClientError::Authenticate { ref user, .. } if user == "root"),
        "{err:?}"
    );
}
