//! The accept loop of torc's HTTP servers: plain or TLS, HTTP/1.1, graceful shutdown.
//!
//! Connections come from the shared accept path ([`crate::accept`]): capped at
//! [`ServeOptions::max_connections`] in all and [`ServeOptions::max_per_source`] from one
//! address (a connection over either cap is closed at once, the client sees a reset), each TLS
//! handshake in its own task bounded by [`ServeOptions::handshake_timeout`]. Each ready
//! connection then gets its own task running hyper's HTTP/1.1 connection, with three deadlines
//! so that a client that stops taking part frees its slot:
//! - its request headers must arrive within [`ServeOptions::header_read_timeout`] (also
//!   between requests on a kept-alive connection);
//! - while a handler waits for the request body, the next bytes of it must arrive within
//!   [`ServeOptions::body_read_timeout`] (an idle deadline: a slow upload that makes progress
//!   goes on; the handler sees an error, and the connection closes after its answer);
//! - while the server has answer bytes to send, the client must take some within
//!   [`ServeOptions::write_timeout`] (idle too: a slow reader of a long answer is fine), or
//!   the connection is closed.
//!
//! A handler that takes long without touching the connection (a long poll) is not limited
//! here: that is the handler's own bound.
//!
//! On shutdown the listener closes at once; open connections finish their current request
//! (keep-alive is turned off) for up to [`ServeOptions::shutdown_grace`], after which `serve`
//! returns and whatever is still open is dropped with the runtime.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::accept::AcceptOptions;

/// The certificate chain a TLS client presented and the handshake verified, leaf first. Present
/// as a request extension only on TLS connections whose client sent a certificate.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

impl PeerCertificates {
    /// The client's own certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// Timeouts of [`serve_with`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest a client may take to send a request's headers, also between requests on a
    /// kept-alive connection.
    pub header_read_timeout: Duration,
    /// Longest a client may pause in the middle of a request body while a handler waits for
    /// it.
    pub body_read_timeout: Duration,
    /// Longest a client may take no bytes of an answer the server is sending.
    pub write_timeout: Duration,
    /// How long open connections get to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one IP address.
    pub max_per_source: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 4096,
            max_per_source: 1024,
        }
    }
}

/// Serves `app` on `listener` (TLS when `tls` is given) until `shutdown` resolves, with the
/// default [`ServeOptions`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, app, tls, ServeOptions::default(), shutdown).await
}

/// [`serve`] with explicit timeouts.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut incoming = crate::accept::incoming(
        listener,
        tls,
        AcceptOptions {
            handshake_timeout: options.handshake_timeout,
            max_connections: options.max_connections,
            max_per_source: options.max_per_source,
        },
    );
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = incoming.accept() => match conn {
                Some(conn) => conn,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let addr = conn.remote_addr();
        let peer = conn
            .peer_certificates()
            .map(|c| PeerCertificates(Arc::new(c.to_vec())));
        let watcher = graceful.watcher();
        let app = app.clone();
        let options = options.clone();
        tokio::spawn(async move {
            // The connection (and its slot under the caps) lives as long as this task.
            let conn = connection(
                WriteDeadline::new(conn, options.write_timeout),
                addr,
                peer,
                app,
                options,
            );
            let _ = watcher.watch(conn).await;
        });
    }
    // Closes the listener and abandons handshakes still running: the graceful shutdown waits
    // for requests in flight, not for clients that never finished saying hello.
    drop(incoming);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            "connections still open {} s after shutdown began; leaving them",
            options.shutdown_grace.as_secs()
        );
    }
    Ok(())
}

/// One HTTP/1.1 connection serving `app`, with the peer's address and certificates attached
/// to every request.
fn connection<IO>(
    io: IO,
    addr: SocketAddr,
    peer: Option<PeerCertificates>,
    app: Router,
    options: ServeOptions,
) -> hyper::server::conn::http1::Connection<
    TokioIo<IO>,
    impl hyper::service::Service<
        hyper::Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
    > + use<IO>,
>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let body_read_timeout = options.body_read_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(|body| ReadDeadline::new(body, body_read_timeout));
        req.extensions_mut().insert(ConnectInfo(addr));
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        app.clone().oneshot(req)
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
}

/// The idle deadline both wrappers keep: armed when an operation goes pending, disarmed when
/// one completes; `Err` once it passes with no progress.
struct Idle {
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Idle {
    fn new(limit: Duration) -> Idle {
        Idle { limit, timer: None }
    }

    /// `poll` as it came from the operation, or the deadline's error.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<T>,
        expired: impl FnOnce() -> T,
    ) -> Poll<T> {
        if poll.is_ready() {
            self.timer = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(expired()),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A request body whose next bytes must come within an idle deadline while someone waits for
/// them (nothing is timed while no one reads the body).
struct ReadDeadline {
    body: Incoming,
    idle: Idle,
}

impl ReadDeadline {
    fn new(body: Incoming, limit: Duration) -> ReadDeadline {
        ReadDeadline {
            body,
            idle: Idle::new(limit),
        }
    }
}

/// Why a request body ended early: the client paused past [`ServeOptions::body_read_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("the client sent no more of the request body for {} ms", .0.as_millis())]
struct BodyStalled(Duration);

impl hyper::body::Body for ReadDeadline {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.body)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)));
        let limit = this.idle.limit;
        this.idle
            .check(cx, poll, || Some(Err(BodyStalled(limit).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose writes must make progress: a write or flush pending past the idle
/// deadline fails with `TimedOut`, and hyper closes the connection.
struct WriteDeadline<IO> {
    io: IO,
    idle: Idle,
}

impl<IO> WriteDeadline<IO> {
    fn new(io: IO, limit: Duration) -> WriteDeadline<IO> {
        WriteDeadline {
            io,
            idle: Idle::new(limit),
        }
    }
}

fn write_stalled<T>(limit: Duration) -> std::io::Result<T> {
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the client took none of the answer for {} ms",
            limit.as_millis()
        ),
    ))
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        let limit = this.idle.limit;
        this.idle.check(cx, poll, || write_stalled(limit))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        let limit = this.idle.limit;
        this.idle.check(cx, poll, || write_stalled(limit))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        let limit = this.idle.limit;
        this.idle.check(cx, poll, || write_stalled(limit))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        let limit = this.idle.limit;
        this.idle.check(cx, poll, || write_stalled(limit))
    }
}
