//! [`EtcdStore`]: the controller's durable state in a real etcd v3 cluster, under one prefix
//! (docs/design/ha-controller.md §3, §4, §5.3).
//!
//! One key per record (`layout`), the same JSON bytes redb stores; counters as decimal text;
//! `P secrets/*` sealed (`seal`) when the options carry a sealer. Every commit is ONE Txn
//! fenced by the leadership it acts under: compare `create_revision(own election key) ==
//! epoch`, success = the batch's puts and deletes + `Put(P meta/writer, epoch)`, failure = who
//! leads now. A deposed leader's Txn therefore writes nothing, checked inside etcd's apply.
//!
//! The etcd client runs on a small tokio runtime of the store's own, on one thread named
//! `torc-etcd`, so a busy API runtime never delays etcd I/O; the synchronous [`Store`] methods
//! send their work there and wait with a deadline. The election, keepalives and the mirror are
//! meant to run on that same thread ([`EtcdStore::handle`], [`EtcdStore::client`]).
//!
//! Invariants:
//! - At connect, `P format` is created as `"1"` if absent, and any other value is refused
//!   (`Version`); etcd must take 2,048 operations in one Txn (probed with a read-only Txn),
//!   else the store refuses to start, naming the member and `--max-txn-ops 4096`.
//! - A batch over 2,047 writes or over the request-byte bound is refused before anything is
//!   sent (`TooLarge`, naming the flag).
//! - After `NotLeader`, `TooLarge` or `Refused` nothing was written and the store still takes
//!   commits (etcd holds the truth). After `Unknown` (deadline passed, connection broke after
//!   sending) the store refuses commits (`Unsettled`) until a successful `load`, which shows
//!   whether the batch landed.
//! - A load reads the whole prefix at one revision, 500 keys a page; keys that are not
//!   records or counters (format, config, election, members, `meta/writer`) are skipped, and a
//!   record that does not decode is `Corrupt`, naming its key.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::runtime::{Handle, Runtime};
use torc_kv_client::proto::etcdserverpb as pb;
use torc_kv_client::proto::mvccpb;
use torc_kv_client::{
    Client, ClientError, ClientOptions, ClientTls, Credentials, Election, Leadership, RangeAll,
};

use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::range_request::{SortOrder, SortTarget};
use pb::request_op::Request;
use pb::response_op::Response;

use super::layout::{Key, Layout};
use super::seal::Sealer;
use super::{Epoch, FORMAT_VERSION, Loaded, Store, StoreError, Table, Write};

// Defined with the store's errors, which name them.
pub use super::{TXN_OPS, TXN_OPS_FLAG};
/// The controller's flag that bounds a commit's bytes (etcd's `--max-request-bytes`).
pub const REQUEST_BYTES_FLAG: &str = "--etcd-max-request-bytes";
/// etcd's default `--max-request-bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// Keys per page of a load (each page stays far below tonic's 4 MiB decode limit unless
/// records are huge).
const PAGE: i64 = 500;
/// Room left under the byte bound for what etcd adds around a Txn (its request header).
const REQUEST_MARGIN: usize = 512;
/// How long a whole load may take (each page has the per-call deadline too).
const LOAD_DEADLINE: Duration = Duration::from_secs(60);
/// How much longer than its own deadline a call's caller waits for the answer to come back
/// from the `torc-etcd` thread.
const GRACE: Duration = Duration::from_secs(1);

/// How to reach etcd, and where the state lives.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members (`https://` with `tls`).
    pub endpoints: Vec<String>,
    pub tls: Option<ClientTls>,
    pub credentials: Option<Credentials>,
    /// The prefix (`--etcd-prefix`).
    pub layout: Layout,
    /// A commit's deadline (`--etcd-commit-timeout`): past it, the outcome is unknown.
    pub commit_timeout: Duration,
    /// How long connecting to one member may take.
    pub dial_timeout: Duration,
    /// The byte bound of one Txn (`--etcd-max-request-bytes`; etcd's `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Seals the `secrets` table (§8); `None` stores them as they are (tests of other
    /// things only: the controller always seals).
    pub sealer: Option<Arc<Sealer>>,
}

impl EtcdOptions {
    /// The defaults: commits 3 s, dial 2 s, 1.5 MiB per Txn, no TLS, no credentials, no sealer.
    pub fn new(endpoints: Vec<String>, layout: Layout) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            tls: None,
            credentials: None,
            layout,
            commit_timeout: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(2),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            sealer: None,
        }
    }
}

/// The controller's records in etcd (see the module doc).
pub struct EtcdStore {
    /// `Some` until dropped (then shut down without waiting on its thread).
    runtime: Option<Runtime>,
    handle: Handle,
    client: Client,
    codec: Codec,
    commit_timeout: Duration,
    max_request_bytes: usize,
    /// The largest answer a load takes: one record at the byte bound always fits.
    decode_limit: usize,
    /// The leadership commits are fenced with; `None` while following.
    leadership: Mutex<Option<Leadership>>,
    /// A commit's outcome is unknown: refuse commits until a load succeeds.
    unsettled: AtomicBool,
}

/// How keys and values of the prefix are made and read: the layout, and the sealer of the
/// secrets. One place for the store's commits, its loads and the mirror.
#[derive(Clone)]
pub(crate) struct Codec {
    pub(crate) layout: Layout,
    sealer: Option<Arc<Sealer>>,
}

impl Codec {
    /// The etcd key and value of a put.
    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<(String, Vec<u8>), StoreError> {
        let etcd_key = self.layout.key(&Key::Record(table, key.to_string()));
        let value = match (&self.sealer, table) {
            (Some(sealer), Table::Secrets) => sealer
                .seal(etcd_key.as_bytes(), value)
                .map_err(|e| StoreError::Write(e.to_string()))?,
            _ => value.to_vec(),
        };
        Ok((etcd_key, value))
    }
}

/// The prefix's records and counters as last read, decoded; changed one key at a time (a
/// load's pages, a watch's events).
#[derive(Default, Clone)]
pub(crate) struct Contents {
    records: BTreeMap<(Table, String), serde_json::Value>,
    meta: BTreeMap<String, u64>,
}

impl Contents {
    /// Applies a put of `key` (a raw etcd key) to `value`. Keys that are not records or
    /// counters are skipped.
    pub(crate) fn put(
        &mut self,
        codec: &Codec,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        match parse(codec, key)? {
            Some(Key::Record(table, name)) => {
                let shown = String::from_utf8_lossy(key).into_owned();
                let corrupt = |message: String| StoreError::Corrupt {
                    table: table.name(),
                    key: shown.clone(),
                    message,
                };
                let opened;
                let bytes = match (&codec.sealer, table) {
                    (Some(sealer), Table::Secrets) => {
                        opened = sealer
                            .open(key, value)
                            .map_err(|e| corrupt(e.to_string()))?;
                        &opened[..]
                    }
                    _ => value,
                };
                let value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
                self.records.insert((table, name), value);
            }
            Some(Key::Meta(name)) => {
                let number = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        table: "meta",
                        key: String::from_utf8_lossy(key).into_owned(),
                        message: format!(
                            "{:?} is not a decimal counter",
                            String::from_utf8_lossy(value)
                        ),
                    })?;
                self.meta.insert(name, number);
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a delete of `key`.
    pub(crate) fn delete(&mut self, codec: &Codec, key: &[u8]) -> Result<(), StoreError> {
        match parse(codec, key)? {
            Some(Key::Record(table, name)) => {
                self.records.remove(&(table, name));
            }
            Some(Key::Meta(name)) => {
                self.meta.remove(&name);
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies one event of a watch.
    pub(crate) fn apply(&mut self, codec: &Codec, event: &mvccpb::Event) -> Result<(), StoreError> {
        let Some(kv) = &event.kv else {
            return Ok(());
        };
        if event.r#type == mvccpb::event::EventType::Delete as i32 {
            self.delete(codec, &kv.key)
        } else {
            self.put(codec, &kv.key, &kv.value)
        }
    }

    /// Everything, as a load gives it.
    pub(crate) fn loaded(&self) -> Loaded {
        let mut out = Loaded::default();
        for table in Table::ALL {
            out.records.entry(table).or_default();
        }
        for ((table, key), value) in &self.records {
            (out.records.entry(*table).or_default()).push((key.clone(), value.clone()));
        }
        out.meta = self.meta.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out
    }

    /// Decodes a whole prefix read at one revision.
    pub(crate) fn of(codec: &Codec, kvs: &[mvccpb::KeyValue]) -> Result<Contents, StoreError> {
        let mut out = Contents::default();
        for kv in kvs {
            out.put(codec, &kv.key, &kv.value)?;
        }
        Ok(out)
    }
}

/// What a raw key under the prefix holds, if it is a record or a counter a load reports.
fn parse(codec: &Codec, key: &[u8]) -> Result<Option<Key>, StoreError> {
    match codec.layout.parse(key) {
        Ok(Key::Meta(name)) if name == WRITER => Ok(None),
        Ok(key @ (Key::Record(..) | Key::Meta(_))) => Ok(Some(key)),
        Ok(_) => Ok(None),
        // Campaigners' keys are the election's to name (it writes `<lease in hex>`).
        Err(_) if key.starts_with(codec.layout.election_prefix().as_bytes()) => Ok(None),
        Err(e) => Err(StoreError::Corrupt {
            table: "(key)",
            key: String::from_utf8_lossy(key).into_owned(),
            message: e.to_string(),
        }),
    }
}

/// The counter each fenced Txn writes: its writer's epoch.
pub const WRITER: &str = "writer";

impl EtcdStore {
    /// Connects (naming every endpoint tried when none answers), creates `P format` if absent
    /// (refusing another version) and checks that etcd takes [`TXN_OPS`] operations per Txn.
    /// The store follows until [`EtcdStore::lead`].
    pub fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_name("torc-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open {
                path: options.endpoints.join(","),
                message: format!("starting the torc-etcd thread: {e}"),
            })?;
        let handle = runtime.handle().clone();
        let client_options = ClientOptions {
            credentials: options.credentials.clone(),
            tls: options.tls.clone(),
            connect_timeout: options.dial_timeout,
            request_timeout: Some(options.commit_timeout),
            require_leader: true,
        };
        let endpoints = options.endpoints.clone();
        let layout = options.layout.clone();
        let deadline =
            options.dial_timeout * (endpoints.len().max(1) as u32) + options.commit_timeout * 3;
        let connected = run(&handle, deadline, async move {
            let client = Client::connect_endpoints(&endpoints, client_options)
                .await
                .map_err(|e| client_error(e, &endpoints.join(",")))?;
            init_format(&client, &layout).await?;
            probe_txn_ops(&client, &layout).await?;
            Ok::<_, StoreError>(client)
        });
        let client = match connected {
            Some(result) => result?,
            None => {
                return Err(StoreError::Unreachable {
                    tried: options
                        .endpoints
                        .iter()
                        .map(|e| (e.clone(), format!("no answer within {deadline:?}")))
                        .collect(),
                });
            }
        };
        Ok(EtcdStore {
            runtime: Some(runtime),
            handle,
            client,
            codec: Codec {
                layout: options.layout,
                sealer: options.sealer,
            },
            commit_timeout: options.commit_timeout,
            max_request_bytes: options.max_request_bytes,
            decode_limit: (options.max_request_bytes + (1 << 20)).max(4 << 20),
            leadership: Mutex::new(None),
            unsettled: AtomicBool::new(false),
        })
    }

    /// The `torc-etcd` runtime: the election, keepalives and the mirror run there.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn layout(&self) -> &Layout {
        &self.codec.layout
    }

    pub(crate) fn codec(&self) -> &Codec {
        &self.codec
    }

    pub(crate) fn decode_limit(&self) -> usize {
        self.decode_limit
    }

    /// The controllers' election (`P election/`).
    pub fn election(&self) -> Election {
        Election::new(&self.client, self.codec.layout.election_prefix())
    }

    /// Commits from now on act under `leadership` (won in [`EtcdStore::election`]).
    pub fn lead(&self, leadership: Leadership) {
        *self.lock() = Some(leadership);
    }

    /// Stops acting: commits are refused (`NotLeader`) until [`EtcdStore::lead`] again.
    /// Returns the leadership it held.
    pub fn follow(&self) -> Option<Leadership> {
        self.lock().take()
    }

    pub fn leadership(&self) -> Option<Leadership> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Leadership>> {
        // The guarded value is a plain Option: a panic elsewhere cannot leave it half-set.
        self.leadership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record and counter at one revision, and that revision (a takeover catches up to
    /// it). A success settles the store after an `Unknown` commit.
    pub fn load_at(&self) -> Result<(Loaded, i64), StoreError> {
        let client = self.client.clone();
        let layout = self.codec.layout.clone();
        let decode_limit = self.decode_limit;
        let read = run(&self.handle, LOAD_DEADLINE, async move {
            read_prefix(&client, &layout, decode_limit).await
        });
        let all = match read {
            Some(Ok(all)) => all,
            Some(Err(e)) => return Err(client_error(e, &self.client.endpoint())),
            None => {
                return Err(StoreError::Unreachable {
                    tried: vec![(
                        self.client.endpoint(),
                        format!("a load took longer than {LOAD_DEADLINE:?}"),
                    )],
                });
            }
        };
        let contents = Contents::of(&self.codec, &all.kvs)?;
        self.unsettled.store(false, Ordering::Release);
        Ok((contents.loaded(), all.revision))
    }

    /// The Txn of a batch: compare, success ops, failure op; or why it is refused locally.
    fn txn(&self, leadership: &Leadership, writes: &[Write]) -> Result<pb::TxnRequest, StoreError> {
        let layout = &self.codec.layout;
        // etcd refuses a Txn that names a key twice: the last write to each key wins.
        let mut last: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for w in writes {
            match w {
                Write::Put(table, key, value) => {
                    let (k, v) = self.codec.put(*table, key, value)?;
                    last.insert(k, Some(v));
                }
                Write::Delete(table, key) => {
                    last.insert(layout.key(&Key::Record(*table, key.clone())), None);
                }
                Write::Meta(name, value) => {
                    last.insert(
                        layout.key(&Key::Meta(name.to_string())),
                        Some(value.to_string().into_bytes()),
                    );
                }
            }
        }
        last.insert(
            layout.key(&Key::Meta(WRITER.to_string())),
            Some(leadership.epoch.to_string().into_bytes()),
        );
        let ops = last.len();
        let success = last
            .into_iter()
            .map(|(key, value)| pb::RequestOp {
                request: Some(match value {
                    Some(value) => Request::RequestPut(pb::PutRequest {
                        key: key.into_bytes().into(),
                        value: value.into(),
                        ..Default::default()
                    }),
                    None => Request::RequestDeleteRange(pb::DeleteRangeRequest {
                        key: key.into_bytes().into(),
                        ..Default::default()
                    }),
                }),
            })
            .collect();
        let election = layout.election_prefix();
        let req = pb::TxnRequest {
            compare: vec![leadership.fence()],
            success,
            failure: vec![pb::RequestOp {
                request: Some(Request::RequestRange(pb::RangeRequest {
                    range_end: torc_kv_client::prefix_end(election.as_bytes()).into(),
                    key: election.into_bytes().into(),
                    limit: 1,
                    sort_order: SortOrder::Ascend as i32,
                    sort_target: SortTarget::Create as i32,
                    ..Default::default()
                })),
            }],
        };
        let bytes = req.encoded_len();
        if ops > TXN_OPS {
            return Err(StoreError::TooLarge {
                ops,
                bytes,
                limit: TXN_OPS_FLAG,
            });
        }
        if bytes + REQUEST_MARGIN > self.max_request_bytes {
            return Err(StoreError::TooLarge {
                ops,
                bytes,
                limit: REQUEST_BYTES_FLAG,
            });
        }
        Ok(req)
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropped from anywhere (an async test included): do not wait on the thread.
            runtime.shutdown_background();
        }
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        Ok(self.load_at()?.0)
    }

    /// The current leadership's epoch (its key's create revision); 0 while following.
    fn epoch(&self) -> Epoch {
        self.lock()
            .as_ref()
            .map_or(Epoch(0), |l| Epoch(l.epoch as u64))
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.unsettled.load(Ordering::Acquire) {
            return Err(StoreError::Unsettled);
        }
        if self.lock().is_none() {
            return Err(StoreError::NotLeader {
                fence: Epoch(0),
                current: None,
                leader: None,
            });
        }
        Ok(())
    }

    fn commit(&self, fence: Epoch, writes: &[Write]) -> Result<(), StoreError> {
        if self.unsettled.load(Ordering::Acquire) {
            return Err(StoreError::Unsettled);
        }
        let leadership = self.leadership();
        let leadership = match leadership {
            Some(l) if Epoch(l.epoch as u64) == fence => l,
            other => {
                return Err(StoreError::NotLeader {
                    fence,
                    current: other.map(|l| Epoch(l.epoch as u64)),
                    leader: None,
                });
            }
        };
        if writes.is_empty() {
            return Ok(());
        }
        let req = self.txn(&leadership, writes)?;
        let client = self.client.clone();
        let endpoint = self.client.endpoint();
        let sent = run(&self.handle, self.commit_timeout + GRACE, async move {
            client.txn(req).await
        });
        let unknown = |why: String| {
            self.unsettled.store(true, Ordering::Release);
            StoreError::Unknown {
                endpoint: endpoint.clone(),
                why,
            }
        };
        let resp = match sent {
            None => {
                return Err(unknown(format!(
                    "no answer within {:?}",
                    self.commit_timeout + GRACE
                )));
            }
            Some(Ok(resp)) => resp,
            Some(Err(ClientError::Unavailable { tried }))
                if !tried.iter().all(|t| t.surely_not_sent()) =>
            {
                let why = tried
                    .iter()
                    .map(|t| format!("{}: {t}", t.endpoint))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(unknown(why));
            }
            Some(Err(e)) => return Err(client_error(e, &endpoint)),
        };
        if resp.succeeded {
            return Ok(());
        }
        let leader = resp.responses.first().and_then(|r| match &r.response {
            Some(Response::ResponseRange(range)) => range.kvs.first().cloned(),
            _ => None,
        });
        Err(StoreError::NotLeader {
            fence,
            current: leader.as_ref().map(|kv| Epoch(kv.create_revision as u64)),
            leader: leader.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        })
    }
}

/// Every key of the prefix at one revision, [`PAGE`] keys a page (fewer when a page's
/// answer would exceed `decode_limit`).
pub(crate) async fn read_prefix(
    client: &Client,
    layout: &Layout,
    decode_limit: usize,
) -> Result<RangeAll, ClientError> {
    client
        .range_all_within(
            layout.prefix().as_bytes().to_vec(),
            layout.range_end().into_bytes(),
            0,
            PAGE,
            decode_limit,
        )
        .await
}

/// Runs `fut` on the `torc-etcd` runtime and waits for it, at most `deadline` (plus a grace
/// for the answer to come back); `None` when it did not finish in time.
fn run<T, F>(handle: &Handle, deadline: Duration, fut: F) -> Option<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = handle.spawn(async move {
        if let Ok(value) = tokio::time::timeout(deadline, fut).await {
            let _ = tx.send(value);
        }
    });
    match rx.recv_timeout(deadline + GRACE) {
        Ok(value) => Some(value),
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// A client's error as the store's: which endpoints failed, or what etcd refused.
fn client_error(e: ClientError, endpoint: &str) -> StoreError {
    match e {
        ClientError::Unavailable { tried } => StoreError::Unreachable {
            tried: tried
                .iter()
                .map(|t| (t.endpoint.clone(), t.to_string()))
                .collect(),
        },
        ClientError::Authenticate {
            endpoint,
            user,
            status,
        } => StoreError::Refused {
            endpoint,
            why: format!("authenticating as {user}: {}", status.message()),
        },
        ClientError::Connect { endpoint, source } => StoreError::Unreachable {
            tried: vec![(endpoint, source.to_string())],
        },
        other => StoreError::Refused {
            endpoint: endpoint.to_string(),
            why: other.to_string(),
        },
    }
}

/// Creates `P format` as the version this torc writes if absent; refuses another.
async fn init_format(client: &Client, layout: &Layout) -> Result<(), StoreError> {
    let key = layout.key(&Key::Format);
    let resp = client
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone().into_bytes().into(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                range_end: Default::default(),
            }],
            success: vec![pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: key.clone().into_bytes().into(),
                    value: FORMAT_VERSION.to_string().into_bytes().into(),
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(Request::RequestRange(pb::RangeRequest {
                    key: key.clone().into_bytes().into(),
                    ..Default::default()
                })),
            }],
        })
        .await
        .map_err(|e| client_error(e, &client.endpoint()))?;
    if resp.succeeded {
        return Ok(());
    }
    let found = resp.responses.first().and_then(|r| match &r.response {
        Some(Response::ResponseRange(range)) => range.kvs.first().map(|kv| kv.value.clone()),
        _ => None,
    });
    let path = format!("etcd {} key {key}", client.endpoint());
    let Some(found) = found else {
        // Deleted between the compare and now: another start races this one; try again.
        return Err(StoreError::Open {
            path,
            message: "the format key vanished while it was read; start again".into(),
        });
    };
    match std::str::from_utf8(&found)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(FORMAT_VERSION) => Ok(()),
        Some(found) => Err(StoreError::Version { path, found }),
        None => Err(StoreError::Open {
            path,
            message: format!(
                "the format is {:?}, not a version number",
                String::from_utf8_lossy(&found)
            ),
        }),
    }
}

/// Refuses an etcd that takes fewer than [`TXN_OPS`] operations per Txn: a read-only Txn of
/// that many Ranges on `P format`.
async fn probe_txn_ops(client: &Client, layout: &Layout) -> Result<(), StoreError> {
    let key: Vec<u8> = layout.key(&Key::Format).into_bytes();
    let range = pb::RequestOp {
        request: Some(Request::RequestRange(pb::RangeRequest {
            key: key.into(),
            count_only: true,
            ..Default::default()
        })),
    };
    let probe = pb::TxnRequest {
        compare: vec![],
        success: vec![range; TXN_OPS],
        failure: vec![],
    };
    match client.txn(probe).await {
        Ok(_) => Ok(()),
        Err(ClientError::Rpc(status)) if status.message().contains("too many operations") => {
            Err(StoreError::Refused {
                endpoint: client.endpoint(),
                why: format!(
                    "it takes fewer than {TXN_OPS} operations per transaction ({}); start its members with `{TXN_OPS_FLAG} 4096` (torc up does)",
                    status.message()
                ),
            })
        }
        Err(e) => Err(client_error(e, &client.endpoint())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicU64;

    use serde_json::json;
    use torc_test_utils::{EtcdCluster, etcdctl};

    use super::*;
    use crate::store::conformance::{Backend, Bound, FailureRule};

    /// A lease long enough that no test outlives it (nothing keeps it alive here).
    const LEASE_TTL: i64 = 120;

    /// One real etcd member (with `--max-txn-ops 4096`, as `torc up` runs it) and a prefix
    /// of this test's own.
    pub(crate) struct RealEtcd {
        pub(crate) cluster: EtcdCluster,
        pub(crate) layout: Layout,
        /// The lease of the last store opened: a new open revokes it, as the takeover after
        /// a dead leader would find it gone.
        last_lease: Mutex<Option<i64>>,
        /// A commit deadline short enough for the failure case.
        commit_timeout: Duration,
        runtime: Runtime,
    }

    impl RealEtcd {
        pub(crate) fn start() -> RealEtcd {
            RealEtcd::start_with(&["--max-txn-ops", "4096"])
        }

        pub(crate) fn start_with(flags: &[&str]) -> RealEtcd {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let cluster = runtime
                .block_on(EtcdCluster::start_with(1, flags))
                .expect("etcd starts");
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let layout = Layout::new(&format!("/torc-test/p{}-{n}/", std::process::id())).unwrap();
            RealEtcd {
                cluster,
                layout,
                last_lease: Mutex::new(None),
                commit_timeout: Duration::from_secs(1),
                runtime,
            }
        }

        pub(crate) fn options(&self) -> EtcdOptions {
            let mut options = EtcdOptions::new(self.cluster.endpoints(), self.layout.clone());
            options.commit_timeout = self.commit_timeout;
            options
        }

        /// A store that leads: connected, campaigned with a lease of its own, won.
        pub(crate) fn open_with(&self, options: EtcdOptions) -> Result<EtcdStore, StoreError> {
            let store = EtcdStore::connect(options)?;
            let client = store.client().clone();
            let previous = self.last_lease.lock().unwrap().take();
            let election = store.election();
            let leadership = store.handle().block_on(async move {
                if let Some(lease) = previous {
                    client.lease_revoke(lease).await.unwrap();
                }
                let lease = client.lease_grant(LEASE_TTL).await.unwrap();
                election
                    .campaign(lease.id, "test-controller")
                    .await
                    .unwrap()
            });
            *self.last_lease.lock().unwrap() = Some(leadership.lease);
            store.lead(leadership);
            Ok(store)
        }

        /// The raw value of `key` in etcd.
        pub(crate) fn raw(&self, key: &str) -> Option<Vec<u8>> {
            let client = self.client();
            let key = key.as_bytes().to_vec();
            self.runtime.block_on(async move {
                let resp = client
                    .range(pb::RangeRequest {
                        key: key.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                resp.kvs.first().map(|kv| kv.value.to_vec())
            })
        }

        pub(crate) fn put_raw(&self, key: &str, value: &[u8]) {
            let client = self.client();
            let (key, value) = (key.as_bytes().to_vec(), value.to_vec());
            self.runtime.block_on(async move {
                client
                    .put(pb::PutRequest {
                        key: key.into(),
                        value: value.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            });
        }

        pub(crate) fn block_on<F: Future>(&self, fut: F) -> F::Output {
            self.runtime.block_on(fut)
        }

        pub(crate) fn client(&self) -> Client {
            let _in_runtime = self.runtime.enter();
            Client::lazy_endpoints(&self.cluster.endpoints(), ClientOptions::default()).unwrap()
        }
    }

    impl Backend for RealEtcd {
        type S = EtcdStore;

        fn open(&self) -> Result<EtcdStore, StoreError> {
            self.open_with(self.options())
        }

        fn set_format(&self, version: u64) {
            self.put_raw(
                &self.layout.key(&Key::Format),
                version.to_string().as_bytes(),
            );
        }

        fn fail_next_commit(&self, _store: &EtcdStore) -> Option<FailureRule> {
            // A frozen member: the Txn is sent and never answered within the deadline.
            self.cluster.stop(0).unwrap();
            Some(FailureRule::UnsettledUntilLoad)
        }

        fn recover(&self) {
            self.cluster.cont(0).unwrap();
        }

        fn depose(&self, store: &EtcdStore) -> bool {
            let lease = store.leadership().unwrap().lease;
            let client = self.client();
            self.block_on(async move { client.lease_revoke(lease).await.unwrap() });
            true
        }

        fn bound(&self) -> Option<Bound> {
            Some(Bound {
                writes: TXN_OPS - 1,
                bytes: DEFAULT_MAX_REQUEST_BYTES,
            })
        }
    }

    crate::store::conformance::suite!(RealEtcd::start());

    fn put(table: Table, key: &str, value: serde_json::Value) -> Write {
        Write::put(table, key, &value)
    }

    /// The fence refuses a deposed leader's commit inside etcd: a rival that won since is
    /// named in the refusal, and nothing of the batch is written (`meta/writer` included).
    #[test]
    fn a_deposed_leader_is_told_who_leads_now() {
        let etcd = RealEtcd::start();
        let first = etcd.open().unwrap();
        first
            .commit(first.epoch(), &[put(Table::Nodes, "a", json!(1))])
            .unwrap();
        let writer = etcd.layout.key(&Key::Meta(WRITER.into()));
        assert_eq!(
            etcd.raw(&writer),
            Some(first.epoch().0.to_string().into_bytes())
        );
        // The rival revokes the first's lease and wins (`open` does both).
        let rival = etcd.open().unwrap();
        assert!(rival.epoch() > first.epoch());
        let err = first
            .commit(first.epoch(), &[put(Table::Nodes, "a", json!(2))])
            .unwrap_err();
        match &err {
            StoreError::NotLeader {
                fence,
                current,
                leader,
            } => {
                assert_eq!(*fence, first.epoch());
                assert_eq!(*current, Some(rival.epoch()));
                assert_eq!(leader.as_deref(), Some("test-controller"));
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("test-controller"), "{err}");
        assert_eq!(
            etcd.raw(&writer),
            Some(first.epoch().0.to_string().into_bytes()),
            "the deposed commit wrote meta/writer"
        );
        let mut loaded = rival.load().unwrap();
        let nodes: Vec<serde_json::Value> = loaded.take(Table::Nodes).unwrap();
        assert_eq!(nodes, [json!(1)]);
        // Following: refused locally, before any I/O.
        let held = rival.follow().unwrap();
        assert!(matches!(
            rival.commit(Epoch(held.epoch as u64), &[]),
            Err(StoreError::NotLeader { current: None, .. })
        ));
        assert!(rival.writable().is_err());
        rival.lead(held);
        rival.commit(rival.epoch(), &[]).unwrap();
    }

    /// Commits are one Txn with `meta/writer`; keys that are not records are skipped by a
    /// load; a record that does not decode is named.
    #[test]
    fn a_load_skips_what_is_not_a_record_and_names_a_corrupt_one() {
        let etcd = RealEtcd::start();
        let store = etcd.open().unwrap();
        store
            .commit(store.epoch(), &[put(Table::Tasks, "t/1", json!({"t": 1}))])
            .unwrap();
        etcd.put_raw(&etcd.layout.key(&Key::Config), b"abc");
        etcd.put_raw(&etcd.layout.key(&Key::Member("c1".into())), b"{}");
        let (loaded, revision) = store.load_at().unwrap();
        assert!(revision > store.epoch().0 as i64);
        assert_eq!(loaded.meta(WRITER), None, "meta/writer is not a counter");
        assert_eq!(loaded.records[&Table::Tasks][0].1, json!({"t": 1}));
        assert_eq!(loaded.records[&Table::Tasks].len(), 1);
        // The key is percent-encoded in etcd.
        assert!(
            etcd.raw(&format!("{}tasks/t%2F1", etcd.layout.prefix()))
                .is_some()
        );

        let bad = etcd.layout.key(&Key::Record(Table::Nodes, "n1".into()));
        etcd.put_raw(&bad, b"{not json");
        let err = store.load().err().expect("a corrupt record is refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&bad), "{err}");
    }

    /// Secrets are sealed in etcd under the local store key, bound to their etcd key.
    #[test]
    fn secrets_are_sealed_in_etcd() {
        let etcd = RealEtcd::start();
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(Sealer::from_file(&dir.path().join("store.key")).unwrap());
        let mut options = etcd.options();
        options.sealer = Some(Arc::clone(&sealer));
        let store = etcd.open_with(options.clone()).unwrap();
        store
            .commit(
                store.epoch(),
                &[
                    put(Table::Secrets, "influx", json!({"password": "hunter2"})),
                    put(Table::Nodes, "n1", json!({"name": "n1"})),
                ],
            )
            .unwrap();
        let key = etcd
            .layout
            .key(&Key::Record(Table::Secrets, "influx".into()));
        let raw = etcd.raw(&key).unwrap();
        assert!(raw.starts_with(b"torc-sealed-v1:"), "{raw:?}");
        assert!(!String::from_utf8_lossy(&raw).contains("hunter2"));
        // Other tables are stored as they are.
        let node = etcd.layout.key(&Key::Record(Table::Nodes, "n1".into()));
        assert_eq!(etcd.raw(&node).unwrap(), br#"{"name":"n1"}"#);
        let mut loaded = store.load().unwrap();
        let secrets: Vec<serde_json::Value> = loaded.take(Table::Secrets).unwrap();
        assert_eq!(secrets, [json!({"password": "hunter2"})]);

        // Another controller with another store.key cannot open it, and says so.
        let mut other = etcd.options();
        other.sealer = Some(Arc::new(
            Sealer::from_file(&dir.path().join("other.key")).unwrap(),
        ));
        let err = EtcdStore::connect(other).unwrap().load().err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&key), "{err}");
        assert!(err.to_string().contains("another store.key"), "{err}");

        // A sealed value moved to another key does not open there, naming that key.
        let moved = etcd
            .layout
            .key(&Key::Record(Table::Secrets, "registry".into()));
        etcd.put_raw(&moved, &raw);
        let err = store.load().err().unwrap();
        assert!(err.to_string().contains(&moved), "{err}");
        etcd.put_raw(&moved, br#"{"password":"plain"}"#);
        let err = store.load().err().expect("an unsealed secret is refused");
        assert!(err.to_string().contains(&moved), "{err}");
    }

    /// etcd's default `--max-txn-ops` (128) is refused at connect, naming the member and
    /// the flag.
    #[test]
    fn an_etcd_with_too_few_txn_ops_is_refused() {
        let etcd = RealEtcd::start_with(&[]);
        let err = EtcdStore::connect(etcd.options()).err().expect("refused");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Refused { .. }), "{text}");
        assert!(text.contains("--max-txn-ops 4096"), "{text}");
        assert!(text.contains(&etcd.cluster.endpoint(0)), "{text}");
    }

    /// Nothing listening: the error names every endpoint tried.
    #[test]
    fn unreachable_endpoints_are_all_named() {
        let closed = |_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let endpoints: Vec<String> = (0..2).map(closed).collect();
        let mut options =
            EtcdOptions::new(endpoints.clone(), Layout::new("/torc-test/x/").unwrap());
        options.dial_timeout = Duration::from_millis(500);
        let err = EtcdStore::connect(options).err().expect("unreachable");
        assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
        for e in &endpoints {
            assert!(err.to_string().contains(e.as_str()), "{err}");
        }
    }

    /// A refused authentication names the member and the user; the right password connects
    /// (and commits as the user).
    #[test]
    fn a_refused_user_is_named_with_the_endpoint() {
        let etcd = RealEtcd::start();
        let endpoint = etcd.cluster.endpoint(0);
        etcdctl(&endpoint, &["user", "add", "root:rootpw"]).unwrap();
        etcdctl(&endpoint, &["auth", "enable"]).unwrap();
        let mut wrong = etcd.options();
        wrong.credentials = Some(Credentials::new("root", "nope"));
        let err = EtcdStore::connect(wrong).err().expect("refused");
        assert!(matches!(err, StoreError::Refused { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&endpoint), "{text}");
        assert!(text.contains("root"), "{text}");
        assert!(text.contains("authentication failed"), "{text}");
        let mut right = etcd.options();
        right.credentials = Some(Credentials::new("root", "rootpw"));
        let store = EtcdStore::connect(right).unwrap();
        assert!(store.load().unwrap().records.values().all(Vec::is_empty));
    }

    /// The store's I/O runs on its own thread, `torc-etcd`.
    #[test]
    fn io_runs_on_the_torc_etcd_thread() {
        let etcd = RealEtcd::start();
        let store = etcd.open().unwrap();
        let name = store
            .handle()
            .block_on(async {
                tokio::spawn(async { std::thread::current().name().map(String::from) }).await
            })
            .unwrap();
        assert_eq!(name.as_deref(), Some("torc-etcd"));
    }
}
