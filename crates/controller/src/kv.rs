//! The state browser's access to the rack's state store: the running `etcd` service (`torc kv`,
//! or a real etcd) through the etcd v3 API, for the web UI, which cannot speak gRPC itself.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use torc_kv::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion,
};

/// Most keys one listing returns.
const MAX_KEYS: i64 = 5_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: String,
    pub version: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvListing {
    /// The store at `endpoint`.
    pub endpoint: String,
    pub revision: i64,
    /// More keys matched than were returned.
    pub more: bool,
    pub entries: Vec<KvEntry>,
}

/// The store's revision after a watch wait: newer than asked when something changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvChange {
    pub revision: i64,
    pub changed: bool,
}

fn channel(addr: SocketAddr) -> Result<Channel, String> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(35))
            .connect_lazy(),
    )
}

fn status(e: tonic::Status) -> String {
    format!("state store: {}", e.message())
}

pub async fn list(addr: SocketAddr, prefix: &str) -> Result<KvListing, String> {
    let mut kv = KvClient::new(channel(addr)?);
    let resp = kv
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: torc_kv::prefix_end(prefix.as_bytes()).into(),
            limit: MAX_KEYS,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(KvListing {
        endpoint: addr.to_string(),
        revision: resp.header.map_or(0, |h| h.revision),
        more: resp.more,
        entries: resp
            .kvs
            .into_iter()
            .map(|kv| KvEntry {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                value: String::from_utf8_lossy(&kv.value).into_owned(),
                version: kv.version,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                lease: kv.lease,
            })
            .collect(),
    })
}

pub async fn put(addr: SocketAddr, key: &str, value: &str) -> Result<i64, String> {
    let mut kv = KvClient::new(channel(addr)?);
    let resp = kv
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(resp.header.map_or(0, |h| h.revision))
}

pub async fn delete(addr: SocketAddr, key: &str) -> Result<i64, String> {
    let mut kv = KvClient::new(channel(addr)?);
    let resp = kv
        .delete_range(DeleteRangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    if resp.deleted == 0 {
        return Err(format!("no key {key:?} in the state store"));
    }
    Ok(resp.header.map_or(0, |h| h.revision))
}

/// Waits (up to `wait`) for a change under `prefix` after revision `after`, with an etcd watch.
pub async fn wait_change(
    addr: SocketAddr,
    prefix: &str,
    after: i64,
    wait: Duration,
) -> Result<KvChange, String> {
    let mut watch = WatchClient::new(channel(addr)?);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: torc_kv::prefix_end(prefix.as_bytes()).into(),
            start_revision: after + 1,
            ..Default::default()
        })),
    };
    // The request stream stays open (a closed one would end the watch) until we return.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.map_err(|e| e.to_string())?;
    let mut stream = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => {
                return Ok(KvChange {
                    revision: after,
                    changed: false,
                });
            }
            Ok(Err(e)) => return Err(status(e)),
            Ok(Ok(None)) => return Err("state store ended the watch".into()),
            Ok(Ok(Some(resp))) => {
                if resp.canceled {
                    // The revision was compacted away: tell the browser to reload.
                    return Ok(KvChange {
                        revision: resp.header.map_or(after, |h| h.revision),
                        changed: true,
                    });
                }
                if let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                    return Ok(KvChange {
                        revision: last.mod_revision,
                        changed: true,
                    });
                }
            }
        }
    }
}
