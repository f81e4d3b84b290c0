//! Serving gRPC connections: each connection torc-tls's shared accept path
//! ([`torc_tls::incoming`]: caps in all and per source address, TLS
//! handshakes with a deadline) hands over runs here as one HTTP/2 connection
//! (hyper's) over [`AuthorityFix`], with the services' routes.
//!
//! tonic's own server loop is not used because it offers no per-connection
//! state and no idle timeout. Here each connection gets a [`Peer`], a request
//! extension every request on it carries: the client certificate's common
//! name (see [`crate::tls`]) and the connection's [`ConnState`] (its open
//! streams, and what the per-connection limits count: watchers, leases).
//!
//! Deadlines (all in [`ConnOptions`]):
//! - the HTTP/2 client preface must arrive within the handshake deadline,
//!   else the connection is closed: a client that connects and says nothing
//!   holds its slot only that long;
//! - a connection with no open stream (no call in flight, no watch or
//!   keep-alive stream open) for `idle_timeout` gets a GOAWAY: new calls go
//!   to a new connection, which gRPC clients open by themselves; a client
//!   that does not close its end (h2 waits for a PING's answer) is dropped
//!   one handshake deadline later;
//! - HTTP/2 keep-alive pings (etcd's `--grpc-keepalive-interval` and
//!   `--grpc-keepalive-timeout`) close a connection whose peer went away
//!   while it held a watch open.
//!
//! On shutdown every connection gets a GOAWAY and finishes the calls in
//! flight; the server gives them [`crate::SHUTDOWN_GRACE`].
//!
//! Invariants: every request carries its connection's [`Peer`]; a
//! connection's open-stream count includes every request from its start
//! until its response body ends or is dropped, so no stream is cut by the
//! idle timeout; frames h2 reads are bounded by [`MAX_FRAME_BYTES`] and
//! header lists by [`MAX_HEADER_LIST_BYTES`].

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::authority::{AuthorityFix, MAX_FRAME_BYTES};
use crate::error::EtcdError;

/// The largest header list (HPACK-decoded) a request may carry: hyper's
/// default, stated here so that the bound is ours. etcd's requests carry a
/// token and a few gRPC headers.
pub(crate) const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// Per-connection settings.
#[derive(Clone, Debug)]
pub(crate) struct ConnOptions {
    /// Longest until the HTTP/2 preface has arrived.
    pub preface_timeout: Duration,
    /// A connection with no open stream this long is closed (GOAWAY).
    pub idle_timeout: Duration,
    /// Most streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Ping a connection silent this long (etcd's `--grpc-keepalive-interval`).
    pub keepalive_interval: Duration,
    /// ... and close it when the ping gets no answer within this
    /// (`--grpc-keepalive-timeout`).
    pub keepalive_timeout: Duration,
    /// `--client-cert-auth`: certificates' common names are read for
    /// [`Peer::cert_name`].
    pub cert_names: bool,
}

/// What a request knows of its connection (a request extension).
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The common name of the client certificate its TLS handshake
    /// verified, if it presented one (`""` when unreadable: no one).
    pub cert_name: Option<Arc<str>>,
    pub conn: Arc<ConnState>,
}

/// One connection's counters.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Watchers open on the connection's watch streams.
    watchers: AtomicUsize,
    /// Leases granted through the connection (that may still exist), and
    /// grants in flight.
    leases: Mutex<(HashSet<i64>, usize)>,
    /// Open streams, and since when there were none.
    streams: Mutex<(usize, Option<Instant>)>,
    changed: Notify,
    preface_seen: Arc<AtomicBool>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            watchers: AtomicUsize::new(0),
            leases: Mutex::new((HashSet::new(), 0)),
            streams: Mutex::new((0, Some(Instant::now()))),
            changed: Notify::new(),
            preface_seen: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Takes a place for one more watcher, if fewer than `max` are open.
    pub(crate) fn take_watcher(&self, max: usize) -> Result<(), EtcdError> {
        self.watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| EtcdError::TooManyWatchers { limit: max })
    }

    /// Gives back `n` watchers' places.
    pub(crate) fn release_watchers(&self, n: usize) {
        if n > 0 {
            self.watchers.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Takes a place for one more lease grant, if the connection holds
    /// fewer than `max` leases (counting grants in flight). Leases that no
    /// longer `exists` are forgotten first. Give it back with
    /// [`ConnState::granted`].
    pub(crate) fn take_lease(
        &self,
        max: usize,
        exists: impl Fn(i64) -> bool,
    ) -> Result<(), EtcdError> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let (ids, pending) = &mut *leases;
        if ids.len() + *pending >= max {
            ids.retain(|id| exists(*id));
        }
        if ids.len() + *pending >= max {
            return Err(EtcdError::TooManyLeases { limit: max });
        }
        *pending += 1;
        Ok(())
    }

    /// Ends a grant [`ConnState::take_lease`] made room for: `Some(id)`
    /// when it granted that lease.
    pub(crate) fn granted(&self, id: Option<i64>) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.1 = leases.1.saturating_sub(1);
        if let Some(id) = id {
            leases.0.insert(id);
        }
    }

    fn open_stream(self: &Arc<Self>) -> StreamGuard {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.0 += 1;
        streams.1 = None;
        drop(streams);
        self.changed.notify_waiters();
        StreamGuard(Arc::clone(self))
    }

    /// Resolves when the connection should be closed: no preface within
    /// `preface`, or no open stream for `idle`.
    async fn idle(&self, preface: Duration, idle: Duration) {
        tokio::time::sleep(preface).await;
        if !self.preface_seen.load(Ordering::Acquire) {
            return;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let since = self.streams.lock().unwrap_or_else(|e| e.into_inner()).1;
            match since {
                Some(since) => tokio::select! {
                    () = tokio::time::sleep_until(since + idle) => {
                        let now = self.streams.lock().unwrap_or_else(|e| e.into_inner()).1;
                        if now == Some(since) {
                            return;
                        }
                    }
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }
}

/// A stream's place in its connection's count, given back when dropped.
#[derive(Debug)]
struct StreamGuard(Arc<ConnState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = self.0.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.0 = streams.0.saturating_sub(1);
        if streams.0 == 0 {
            streams.1 = Some(Instant::now());
        }
        drop(streams);
        self.0.changed.notify_waiters();
    }
}

/// A response body that holds its stream's place until it ends.
struct CountedBody {
    inner: tonic::body::Body,
    guard: Option<StreamGuard>,
}

impl Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves every connection from `incoming` with `routes` until `stop`
/// turns true; then tells open connections to finish and waits for them
/// (the caller bounds the wait).
pub(crate) async fn serve(
    mut incoming: torc_tls::Incoming,
    routes: tonic::service::Routes,
    options: ConnOptions,
    mut stop: watch::Receiver<bool>,
) {
    let routes = routes.prepare();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            conn = incoming.accept() => match conn {
                Some(conn) => {
                    connections.spawn(serve_one(conn, routes.clone(), options.clone(), stop.clone()));
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    // Closes the listener; connections still in their handshake are dropped.
    drop(incoming);
    while connections.join_next().await.is_some() {}
}

/// One connection, until it closes, its idle deadline passes, or `stop`.
async fn serve_one(
    conn: torc_tls::Connection,
    routes: tonic::service::Routes,
    options: ConnOptions,
    mut stop: watch::Receiver<bool>,
) {
    let addr = conn.remote_addr();
    let cert_name = conn
        .peer_certificates()
        .and_then(<[_]>::first)
        .filter(|_| options.cert_names)
        // A subject torc cannot read names no one (no user is called "").
        .map(|cert| Arc::from(crate::tls::common_name(cert).unwrap_or_default()));
    let state = Arc::new(ConnState::new());
    let peer = Peer {
        cert_name,
        conn: Arc::clone(&state),
    };
    let io = AuthorityFix::with_preface_flag(conn, Arc::clone(&state.preface_seen));
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            let guard = peer.conn.open_stream();
            let call = routes.clone().oneshot(req);
            async move {
                let response = call.await?;
                Ok::<_, Infallible>(response.map(|inner| CountedBody {
                    inner,
                    guard: Some(guard),
                }))
            }
        });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_frame_size(MAX_FRAME_BYTES as u32)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_concurrent_streams(options.max_concurrent_streams)
        .keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idle = state.idle(options.preface_timeout, options.idle_timeout);
    tokio::pin!(idle);
    let mut closing = *stop.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    // After an idle connection's GOAWAY, h2 waits for the client to answer
    // a PING before it closes; a client that never does is dropped after
    // this long.
    let close_grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(close_grace);
    loop {
        tokio::select! {
            done = connection.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%addr, error = %e, "kv connection ended");
                }
                break;
            }
            () = &mut idle, if !closing => {
                tracing::debug!(%addr, "kv connection idle or silent; closing it");
                if !state.preface_seen.load(Ordering::Acquire) {
                    // Not HTTP/2 yet: nothing to say goodbye to.
                    break;
                }
                connection.as_mut().graceful_shutdown();
                closing = true;
                close_grace.as_mut().reset(Instant::now() + options.preface_timeout);
            }
            () = &mut close_grace => {
                tracing::debug!(%addr, "kv connection did not close after its GOAWAY; dropped");
                break;
            }
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}
