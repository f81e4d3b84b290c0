//! The state browser's access to the rack's state store: the running `etcd` service (`torc kv`,
//! or a real etcd) through the etcd v3 API, for the web UI, which cannot speak gRPC itself.
//!
//! The controller logs in as the rack config's `access.etcd` user (its password a rack secret)
//! through `torc_kv_client`, which keeps the etcd token and logs in again when it expires. One
//! client is kept per store address, so a page's requests cost no new login (a bcrypt check on
//! the store) each.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use torc_kv_client::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
    watch_request::RequestUnion,
};
use torc_kv_client::{Client, ClientError, Credentials};

/// Why the state store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("state store: {0}")]
    Store(#[from] ClientError),
    #[error("state store: {}", .0.message())]
    Status(#[from] tonic::Status),
    #[error("no key {0:?} in the state store")]
    NoKey(String),
    #[error("the state store ended the watch")]
    WatchEnded,
    #[error("state store address {url}: {reason}")]
    Endpoint { url: String, reason: String },
}

/// A user and password.
type Login = (String, String);

/// The store's URL and the login a client was made with (a changed password makes a new
/// client), and the client.
type Kept = (String, Option<Login>, Client);

/// The controller's client of the rack's state store, kept across requests.
#[derive(Default)]
pub struct KvClients {
    current: Mutex<Option<Kept>>,
}

impl KvClients {
    /// The client for `url` logged in as `login` (user, password), made on first use; over
    /// TLS trusting `ca` for an `https://` URL.
    pub fn get(
        &self,
        url: &str,
        login: Option<Login>,
        ca: Option<&[torc_tls::CertificateDer<'static>]>,
    ) -> Result<Client, KvError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((u, made_with, client)) = current.as_ref()
            && u == url
            && *made_with == login
        {
            return Ok(client.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| KvError::Endpoint {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(35));
        let tls = match (url.starts_with("https://"), ca) {
            (true, Some(ca)) => Some(torc_kv_client::ClientTls::new(ca, None)?),
            _ => None,
        };
        let client = Client::lazy_with(
            endpoint,
            login.clone().map(|(u, p)| Credentials::new(u, p)),
            tls,
        )?;
        *current = Some((url.to_string(), login, client.clone()));
        Ok(client)
    }
}

/// Most keys one listing returns.
const MAX_KEYS: i64 = 5_000;
/// Most bytes of keys and values one listing holds (a store's values can be 1.5 MiB each);
/// past it the listing stops and says there is more.
const MAX_LISTING_BYTES: usize = 8 << 20;

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

pub async fn list(client: &Client, endpoint: &str, prefix: &str) -> Result<KvListing, KvError> {
    let resp = client
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: torc_kv_client::prefix_end(prefix.as_bytes()).into(),
            limit: MAX_KEYS,
            ..Default::default()
        })
        .await?;
    let mut more = resp.more;
    let mut bytes = 0;
    let mut entries = Vec::new();
    for kv in resp.kvs {
        bytes += kv.key.len() + kv.value.len();
        if bytes > MAX_LISTING_BYTES {
            more = true;
            break;
        }
        entries.push(KvEntry {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: String::from_utf8_lossy(&kv.value).into_owned(),
            version: kv.version,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        });
    }
    Ok(KvListing {
        endpoint: endpoint.to_string(),
        revision: resp.header.map_or(0, |h| h.revision),
        more,
        entries,
    })
}

pub async fn put(client: &Client, key: &str, value: &str) -> Result<i64, KvError> {
    let resp = client
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?;
    Ok(resp.header.map_or(0, |h| h.revision))
}

pub async fn delete(client: &Client, key: &str) -> Result<i64, KvError> {
    let resp = client
        .delete_range(DeleteRangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?;
    if resp.deleted == 0 {
        return Err(KvError::NoKey(key.to_string()));
    }
    Ok(resp.header.map_or(0, |h| h.revision))
}

/// Waits (up to `wait`) for a change under `prefix` after revision `after`, with an etcd watch.
pub async fn wait_change(
    client: &Client,
    prefix: &str,
    after: i64,
    wait: Duration,
) -> Result<KvChange, KvError> {
    let mut watch = client.watch();
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: torc_kv_client::prefix_end(prefix.as_bytes()).into(),
            start_revision: after + 1,
            ..Default::default()
        })),
    };
    // The request stream stays open (a closed one would end the watch) until we return.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.map_err(|_| KvError::WatchEnded)?;
    let mut stream = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
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
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(None)) => return Err(KvError::WatchEnded),
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
