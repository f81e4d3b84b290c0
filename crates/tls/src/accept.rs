//! The accept path of every torc TCP server (the HTTP servers of [`crate::serve`], and kv's
//! gRPC): connections capped in all and per source address, TLS handshakes off the accept loop
//! with a deadline, and what comes out a [`Connection`] ready for a protocol, plain or TLS.
//!
//! [`incoming`] spawns the accept loop and returns the [`Incoming`] end, from which a server
//! takes [`Connection`]s. Each accepted socket first takes a slot ([`AcceptOptions`]'s
//! `max_connections` in all, `max_per_source` per IP address); a socket over either cap is
//! closed at once (its client sees a reset), so a flood of connections cannot exhaust the
//! process's file descriptors. A TLS handshake runs in its own task, bounded by
//! `handshake_timeout`, so a client that stalls mid-handshake holds only its own socket and
//! slot, and only until the deadline. Accept errors (e.g. out of file descriptors) pause
//! accepting briefly instead of ending the server.
//!
//! What it is not: a protocol. Deadlines after the handshake (HTTP headers, idle HTTP/2
//! connections) are the server's; it holds the slot as long as it holds the [`Connection`].
//!
//! Invariants: a [`Connection`] is handed out only after its handshake finished (and rustls
//! verified the client's chain when the configuration asks for one); its slot is given back
//! when it is dropped, whoever drops it; once the [`Incoming`] end is dropped, the listener
//! closes and handshakes still running are abandoned.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Limits of the accept path.
#[derive(Debug, Clone)]
pub struct AcceptOptions {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one IP address.
    pub max_per_source: usize,
}

impl Default for AcceptOptions {
    fn default() -> Self {
        AcceptOptions {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_per_source: 1024,
        }
    }
}

/// The byte stream of a [`Connection`]: the TCP socket, or TLS over it.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, handshake done, holding its place under the caps until dropped.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    addr: SocketAddr,
    _slot: Slot,
}

impl Connection {
    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate chain the client presented and the handshake verified, leaf first
    /// (TLS connections whose client sent one).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .filter(|c| !c.is_empty()),
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where a server takes its connections from (see [`incoming`]). Dropping it stops accepting
/// and closes the listener.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Connection>,
}

impl Incoming {
    /// The next connection ready for its protocol; `None` once the accept loop ended (it does
    /// only when the runtime shuts down).
    pub async fn accept(&mut self) -> Option<Connection> {
        self.rx.recv().await
    }
}

/// Starts accepting on `listener` (TLS with `tls`) under `options`' caps and deadline.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    options: AcceptOptions,
) -> Incoming {
    // A handful of finished handshakes may wait for the server to take them; past that the
    // handshake tasks (and the accept loop, for plain connections) wait.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, options, tx));
    Incoming { rx }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    options: AcceptOptions,
    tx: mpsc::Sender<Connection>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(OpenConnections::default());
    loop {
        let (socket, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: the listener is fine, the process is short of
                    // something; pause rather than spin or give up.
                    tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        () = tx.closed() => break,
                    }
                }
            },
            () = tx.closed() => break,
        };
        let Some(slot) = open.take(addr.ip(), &options) else {
            tracing::debug!(%addr, "connection over the cap; closed");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        match &acceptor {
            None => {
                let conn = Connection {
                    stream: Stream::Plain(socket),
                    addr,
                    _slot: slot,
                };
                if tx.send(conn).await.is_err() {
                    break;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let deadline = options.handshake_timeout;
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(deadline, acceptor.accept(socket));
                    let tls = tokio::select! {
                        done = handshake => match done {
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
                        // The server stopped accepting.
                        () = tx.closed() => return,
                    };
                    let conn = Connection {
                        stream: Stream::Tls(Box::new(tls)),
                        addr,
                        _slot: slot,
                    };
                    let _ = tx.send(conn).await;
                });
            }
        }
    }
}

/// The connections open now, in all and per source address.
#[derive(Debug, Default)]
struct OpenConnections {
    by_source: Mutex<std::collections::HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// A connection's place in [`OpenConnections`], given back when dropped.
#[derive(Debug)]
struct Slot {
    open: Arc<OpenConnections>,
    source: IpAddr,
}

impl OpenConnections {
    fn take(self: &Arc<Self>, source: IpAddr, options: &AcceptOptions) -> Option<Slot> {
        let mut by_source = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.total.load(Ordering::Relaxed);
        let mine = by_source.get(&source).copied().unwrap_or(0);
        if total >= options.max_connections || mine >= options.max_per_source {
            return None;
        }
        by_source.insert(source, mine + 1);
        self.total.store(total + 1, Ordering::Relaxed);
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
        self.open.total.fetch_sub(1, Ordering::Relaxed);
    }
}
