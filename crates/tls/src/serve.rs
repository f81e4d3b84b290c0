//! The accept loop of torc's HTTP servers: plain or TLS, HTTP/1.1, graceful shutdown.
//!
//! Connections come from the shared accept path ([`crate::accept`]): capped at
//! [`ServeOptions::max_connections`] in all and [`ServeOptions::max_per_source`] from one
//! address (a connection over either cap is closed at once, the client sees a reset), each TLS
//! handshake in its own task bounded by [`ServeOptions::handshake_timeout`]. Each ready
//! connection then gets its own task running hyper's HTTP/1.1 connection, whose request headers
//! must arrive within [`ServeOptions::header_read_timeout`], so the handshake and header
//! deadlines free every slot a silent client takes.
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
        let header_read_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            // The connection (and its slot under the caps) lives as long as this task.
            let conn = connection(conn, addr, peer, app, header_read_timeout);
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
