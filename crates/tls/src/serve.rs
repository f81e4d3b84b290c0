//! The accept loop of torc's HTTP servers: plain or TLS, HTTP/1.1, graceful shutdown.
//!
//! Each accepted connection gets its own task: the TLS handshake (bounded by
//! [`ServeOptions::handshake_timeout`]), then hyper's HTTP/1.1 connection, whose request
//! headers must arrive within [`ServeOptions::header_read_timeout`]. A failed handshake is
//! logged at debug level and closes only that connection. Accept errors (e.g. out of file
//! descriptors) pause accepting briefly instead of ending the server.
//!
//! Connections are bounded: at most [`ServeOptions::max_connections`] in all and
//! [`ServeOptions::max_per_source`] from one address; a connection over either cap is closed at
//! once (the client sees a reset), so a flood of idle connections cannot exhaust the process's
//! file descriptors, and the handshake and header deadlines free every slot a silent client
//! takes.
//!
//! On shutdown the listener closes at once; open connections finish their current request
//! (keep-alive is turned off) for up to [`ServeOptions::shutdown_grace`], after which `serve`
//! returns and whatever is still open is dropped with the runtime.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

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
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let options = Arc::new(options);
    let open = Arc::new(OpenConnections::default());
    // Tells connections still in their TLS handshake to give up: the graceful shutdown waits
    // for requests in flight, not for clients that never finished saying hello.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: the listener is fine, the process is short of
                    // something; pause rather than spin or give up.
                    tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = open.take(addr.ip(), &options) else {
            tracing::debug!(%addr, "connection over the cap; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let app = app.clone();
        let acceptor = acceptor.clone();
        let options = Arc::clone(&options);
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => {
                    let conn = connection(stream, addr, None, app, options.header_read_timeout);
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(options.handshake_timeout, acceptor.accept(stream));
                    let tls = tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%addr, "TLS handshake timed out");
                                return;
                            }
                        },
                        _ = stopping.changed() => return,
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .filter(|c| !c.is_empty())
                        .map(|c| PeerCertificates(Arc::new(c.to_vec())));
                    let conn = connection(tls, addr, peer, app, options.header_read_timeout);
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
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

/// The connections open now, in all and per source address.
#[derive(Default)]
struct OpenConnections {
    by_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    total: std::sync::atomic::AtomicUsize,
}

/// A connection's place in [`OpenConnections`], given back when dropped.
struct Slot {
    open: Arc<OpenConnections>,
    source: std::net::IpAddr,
}

impl OpenConnections {
    fn take(self: &Arc<Self>, source: std::net::IpAddr, options: &ServeOptions) -> Option<Slot> {
        let mut by_source = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.total.load(std::sync::atomic::Ordering::Relaxed);
        let mine = by_source.get(&source).copied().unwrap_or(0);
        if total >= options.max_connections || mine >= options.max_per_source {
            return None;
        }
        by_source.insert(source, mine + 1);
        self.total
            .store(total + 1, std::sync::atomic::Ordering::Relaxed);
        Some(Slot {
            open: Arc::clone(self),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_source = self
            .open
            .by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
        self.open
            .total
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One HTTP/1.1 connection serving `app`, with the peer's address and certificates attached
/// to every request.
fn connection<IO>(
    io: IO,
    addr: SocketAddr,
    peer: Option<PeerCertificates>,
    app: Router,
    header_read_timeout: Duration,
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
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        app.clone().oneshot(req)
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
}
