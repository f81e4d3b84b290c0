//! The host's way into a rack: forwarders from addresses of the host's loopback
//! (`127.0.3.20:3000`) to the same service at a rack address (`198.18.0.20:3000`), whose
//! upstream sockets are made inside the switch's namespace ([`crate::forward`]). They run on a
//! thread of their own with its own runtime, so a caller that blocks (a test running the CLI)
//! never stalls them.

use std::fmt;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::thread;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::forward::{self, NetnsDialer, TcpOptions, UdpOptions};
use crate::netns::Netns;
use crate::{Error, Result};

/// A transport protocol to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One forwarder: `listen` on the host to `target` in the rack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub listen: SocketAddrV4,
    pub target: SocketAddrV4,
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{proto} {} -> {}", self.listen, self.target)
    }
}

/// Bound host sockets, before the runtime that serves them exists.
enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Running forwarders. [`Forwarders::stop`] (or dropping them) ends every relay and closes
/// every socket before it returns.
pub struct Forwarders {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl fmt::Debug for Forwarders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarders").finish_non_exhaustive()
    }
}

impl Forwarders {
    /// Binds every `listen` address on the calling thread (so a port in use is an error here,
    /// naming it) and starts forwarding into `into` (the switch's namespace, which reaches
    /// every node).
    pub fn start(into: &Netns, forwards: &[Forward]) -> Result<Forwarders> {
        let dialer = Arc::new(NetnsDialer::new(into)?);
        let mut bound = Vec::with_capacity(forwards.len());
        for f in forwards {
            let err = |step: &str, source| Error::Forward {
                ns: into.label().to_string(),
                target: f.target.to_string(),
                step: format!("{step} {}", f.listen),
                source,
            };
            let socket = match f.proto {
                Proto::Tcp => Bound::Tcp(
                    std::net::TcpListener::bind(f.listen).map_err(|e| err("listen on tcp", e))?,
                ),
                Proto::Udp => {
                    Bound::Udp(std::net::UdpSocket::bind(f.listen).map_err(|e| err("bind udp", e))?)
                }
            };
            let nonblocking = match &socket {
                Bound::Tcp(s) => s.set_nonblocking(true),
                Bound::Udp(s) => s.set_nonblocking(true),
            };
            nonblocking.map_err(|e| err("make non-blocking", e))?;
            bound.push((socket, f.target));
        }
        let (stop, stopped) = oneshot::channel();
        let failed = |step: &str, source| Error::Forward {
            ns: into.label().to_string(),
            target: "the rack".into(),
            step: step.to_string(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed("start a runtime", e))?;
        let thread = thread::Builder::new()
            .name("torc-forward".into())
            .spawn(move || runtime.block_on(serve(bound, dialer, stopped)))
            .map_err(|e| failed("start the forwarders' thread", e))?;
        Ok(Forwarders {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops every forwarder and waits until their sockets are closed.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Forwarders {
    fn drop(&mut self) {
        self.shut();
    }
}

async fn serve(
    bound: Vec<(Bound, SocketAddrV4)>,
    dialer: Arc<NetnsDialer>,
    stopped: oneshot::Receiver<()>,
) {
    let (shutdown, watch_shutdown) = watch::channel(false);
    let mut running = JoinSet::new();
    for (socket, target) in bound {
        let mut until = watch_shutdown.clone();
        let done = async move {
            let _ = until.wait_for(|stop| *stop).await;
        };
        let dialer = dialer.clone();
        match socket {
            Bound::Tcp(listener) => match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    running.spawn(forward::tcp(
                        listener,
                        dialer,
                        target.into(),
                        TcpOptions::default(),
                        done,
                    ));
                }
                Err(e) => tracing::warn!(%target, "forwarder not started: {e}"),
            },
            Bound::Udp(socket) => match tokio::net::UdpSocket::from_std(socket) {
                Ok(socket) => {
                    running.spawn(forward::udp(
                        socket,
                        dialer,
                        target.into(),
                        UdpOptions::default(),
                        done,
                    ));
                }
                Err(e) => tracing::warn!(%target, "forwarder not started: {e}"),
            },
        }
    }
    // Either a stop or the owner gone.
    let _ = stopped.await;
    let _ = shutdown.send(true);
    while running.join_next().await.is_some() {}
}
