//! Reaching the rack from the host without a host socket ever sending to a rack address: a
//! listener on the host's loopback (`127.0.3.20:3000`) hands each TCP connection, and each UDP
//! client, to a socket that was *created inside* the rack's namespace and connects to the
//! service's rack address there.
//!
//! [`NetnsDialer`] is one thread per target namespace that entered it once and makes sockets
//! on request; a socket keeps the namespace it was created in, so tokio then drives it from
//! any worker. [`tcp`] and [`udp`] are the forwarders, each taking a bound host socket and a
//! shutdown future (convention 9).
//!
//! Bounds: [`tcp`] serves at most `max_connections` at once (more wait in the listen backlog);
//! [`udp`] keeps at most `max_clients` client addresses, each with one upstream socket that is
//! closed after `idle` without traffic (datagrams from more clients are dropped). On shutdown
//! both stop taking new work, end every relay and close every socket before returning.
//!
//! Inside the rack every forwarded client appears with the rack namespace's own address (the
//! source the kernel picks there), not the host client's.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::netns::{self, Netns};
use crate::{Error, Result};

/// A kind of socket the dialer makes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    Udp,
}

type Reply = oneshot::Sender<io::Result<OwnedFd>>;

/// Makes IPv4 sockets inside one namespace: a thread that entered it once and answers
/// requests over a channel. The thread ends when the dialer is dropped.
pub struct NetnsDialer {
    requests: Option<mpsc::Sender<(Kind, Reply)>>,
    thread: Option<thread::JoinHandle<()>>,
    label: String,
}

impl std::fmt::Debug for NetnsDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsDialer")
            .field("ns", &self.label)
            .finish()
    }
}

impl NetnsDialer {
    /// A dialer into `ns`. Refuses the calling thread's own namespace: the point of a dialer
    /// is that the host's namespace never connects to a rack address.
    pub fn new(ns: &Netns) -> Result<NetnsDialer> {
        if ns.id()? == Netns::current()?.id()? {
            return Err(Error::invalid(
                "dialer namespace",
                ns.label(),
                "is the caller's own namespace; a dialer makes sockets inside a rack namespace",
            ));
        }
        let inside = ns.try_clone()?;
        let (requests, incoming) = mpsc::channel::<(Kind, Reply)>();
        let (entered_tx, entered_rx) = mpsc::channel::<io::Result<()>>();
        let thread = thread::Builder::new()
            .name("torc-dialer".into())
            .spawn(move || {
                let entered = netns::enter(inside.as_fd());
                drop(inside);
                let failed = entered.is_err();
                let _ = entered_tx.send(entered);
                if failed {
                    return;
                }
                for (kind, reply) in incoming {
                    let _ = reply.send(make_socket(kind));
                }
            })
            .map_err(|e| Error::Netns {
                ns: ns.label().to_string(),
                step: "start the dialer's thread".into(),
                source: e,
            })?;
        let entered = entered_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the dialer's thread ended early")));
        let dialer = NetnsDialer {
            requests: Some(requests),
            thread: Some(thread),
            label: ns.label().to_string(),
        };
        entered.map_err(|e| Error::Netns {
            ns: dialer.label.clone(),
            step: "enter (setns) on the dialer's thread".into(),
            source: e,
        })?;
        Ok(dialer)
    }

    /// The label of the namespace the sockets are made in.
    pub fn namespace(&self) -> &str {
        &self.label
    }

    async fn socket(&self, kind: Kind) -> io::Result<OwnedFd> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("the dialer's thread is gone");
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((kind, reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// An unconnected TCP socket inside the namespace.
    pub async fn tcp_socket(&self) -> io::Result<TcpSocket> {
        let fd = self.socket(Kind::Tcp).await?;
        Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
    }

    /// A TCP connection to `target`, made from inside the namespace.
    pub async fn connect_tcp(&self, target: SocketAddr) -> io::Result<TcpStream> {
        self.tcp_socket().await?.connect(target).await
    }

    /// A UDP socket inside the namespace, bound to an ephemeral port there.
    pub async fn udp_socket(&self) -> io::Result<UdpSocket> {
        let socket = Socket::from(self.socket(Kind::Udp).await?);
        socket.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).into())?;
        UdpSocket::from_std(socket.into())
    }
}

/// Runs on the dialer's thread: a non-blocking, close-on-exec IPv4 socket.
fn make_socket(kind: Kind) -> io::Result<OwnedFd> {
    let ty = match kind {
        Kind::Tcp => Type::STREAM,
        Kind::Udp => Type::DGRAM,
    };
    Ok(Socket::new(Domain::IPV4, ty.nonblocking(), None)?.into())
}

impl Drop for NetnsDialer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it has nothing else to finish.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Options of [`tcp`].
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// Connections relayed at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long connecting to the target may take.
    pub connect_timeout: Duration,
}

impl Default for TcpOptions {
    fn default() -> TcpOptions {
        TcpOptions {
            max_connections: 256,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// How long to wait after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Forwards every connection accepted on `listener` (in the host's namespace) to `target`,
/// connecting from inside `dialer`'s namespace, until `shutdown` completes. Then it stops
/// accepting, ends every relay and returns once their sockets are closed.
pub async fn tcp(
    listener: TcpListener,
    dialer: Arc<NetnsDialer>,
    target: SocketAddr,
    options: TcpOptions,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut relays = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while relays.try_join_next().is_some() {}
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(ns = dialer.namespace(), %target, "forwarder cannot accept: {e}");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let dialer = dialer.clone();
        let connect_timeout = options.connect_timeout;
        relays.spawn(async move {
            let _permit = permit;
            if let Err(e) = relay_tcp(client, &dialer, target, connect_timeout).await {
                tracing::debug!(ns = dialer.namespace(), %target, %peer, "forwarded connection: {e}");
            }
        });
    }
    relays.shutdown().await;
}

async fn relay_tcp(
    mut client: TcpStream,
    dialer: &NetnsDialer,
    target: SocketAddr,
    connect_timeout: Duration,
) -> io::Result<()> {
    let socket = dialer.tcp_socket().await?;
    let mut upstream = tokio::time::timeout(connect_timeout, socket.connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Options of [`udp`].
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Client addresses served at once; datagrams from more are dropped.
    pub max_clients: usize,
    /// A client's upstream socket is closed after this long without traffic either way.
    pub idle: Duration,
}

impl Default for UdpOptions {
    fn default() -> UdpOptions {
        UdpOptions {
            max_clients: 1024,
            idle: Duration::from_secs(30),
        }
    }
}

/// The largest UDP payload.
const DATAGRAM: usize = 65_535;

/// One client of the UDP forwarder: its upstream socket inside the namespace, and when it last
/// sent (milliseconds since the forwarder started).
struct Client {
    upstream: Arc<UdpSocket>,
    last_sent: Arc<AtomicU64>,
}

type Clients = Arc<Mutex<HashMap<SocketAddr, Client>>>;

/// Forwards datagrams arriving on `socket` (in the host's namespace) to `target` from a socket
/// per client made inside `dialer`'s namespace, and that socket's replies back to the client,
/// until `shutdown` completes. Then it ends every reply pump and returns once their sockets
/// are closed.
pub async fn udp(
    socket: UdpSocket,
    dialer: Arc<NetnsDialer>,
    target: SocketAddr,
    options: UdpOptions,
    shutdown: impl Future<Output = ()>,
) {
    let host = Arc::new(socket);
    let clients: Clients = Arc::default();
    let started = Instant::now();
    let mut pumps = JoinSet::new();
    let mut buf = vec![0u8; DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        let received = tokio::select! {
            () = &mut shutdown => break,
            received = host.recv_from(&mut buf) => received,
        };
        while pumps.try_join_next().is_some() {}
        let (len, client) = match received {
            Ok(received) => received,
            // An ICMP error for an earlier reply to a client; nothing to do.
            Err(e) => {
                tracing::debug!(ns = dialer.namespace(), %target, "forwarder receive: {e}");
                continue;
            }
        };
        let now = started.elapsed().as_millis() as u64;
        let known = clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .map(|c| {
                c.last_sent.store(now, Ordering::Relaxed);
                c.upstream.clone()
            });
        let upstream = match known {
            Some(upstream) => upstream,
            None => {
                if clients.lock().unwrap_or_else(|e| e.into_inner()).len() >= options.max_clients {
                    tracing::debug!(ns = dialer.namespace(), %target, %client, "forwarder full; datagram dropped");
                    continue;
                }
                let upstream = match dialer.udp_socket().await {
                    Ok(upstream) => upstream,
                    Err(e) => {
                        tracing::warn!(ns = dialer.namespace(), %target, "forwarder cannot make a socket: {e}");
                        continue;
                    }
                };
                if let Err(e) = upstream.connect(target).await {
                    tracing::warn!(ns = dialer.namespace(), %target, "forwarder cannot connect: {e}");
                    continue;
                }
                let upstream = Arc::new(upstream);
                let last_sent = Arc::new(AtomicU64::new(now));
                clients.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    client,
                    Client {
                        upstream: upstream.clone(),
                        last_sent: last_sent.clone(),
                    },
                );
                pumps.spawn(pump_replies(
                    host.clone(),
                    upstream.clone(),
                    client,
                    last_sent,
                    started,
                    options.idle,
                    clients.clone(),
                ));
                upstream
            }
        };
        if let Err(e) = upstream.send(&buf[..len]).await {
            tracing::debug!(ns = dialer.namespace(), %target, %client, "forwarder send: {e}");
        }
    }
    pumps.shutdown().await;
}

/// Carries `upstream`'s replies to `client` until neither side has sent for `idle`, then
/// forgets the client.
async fn pump_replies(
    host: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    last_sent: Arc<AtomicU64>,
    started: Instant,
    idle: Duration,
    clients: Clients,
) {
    let mut buf = vec![0u8; DATAGRAM];
    let mut last_reply = started.elapsed();
    loop {
        match tokio::time::timeout(idle, upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                last_reply = started.elapsed();
                if let Err(e) = host.send_to(&buf[..len], client).await {
                    tracing::debug!(%client, "forwarder reply: {e}");
                }
            }
            // The target answered an earlier datagram with ICMP port unreachable.
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Ok(Err(e)) => {
                tracing::debug!(%client, "forwarder upstream receive: {e}");
                break;
            }
            Err(_) => {
                let sent = Duration::from_millis(last_sent.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(sent.max(last_reply)) >= idle {
                    break;
                }
            }
        }
    }
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    if clients
        .get(&client)
        .is_some_and(|c| Arc::ptr_eq(&c.upstream, &upstream))
    {
        clients.remove(&client);
    }
}
