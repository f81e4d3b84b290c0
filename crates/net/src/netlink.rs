//! A netlink (rtnetlink) connection bound to one namespace: the socket was created inside it,
//! so every request on it acts there, whichever thread sends it. Made by
//! [`crate::netns::connect_in`] or, for the caller's own namespace, [`Netlink::current`].

use std::io;
use std::sync::Arc;

use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket as _, TokioSocket};

use crate::{Error, Result};

/// A handle on a netlink connection inside one namespace. Clones share the connection, which
/// ends when the last clone is dropped.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    ns: Arc<str>,
    _connection: Arc<AbortOnDrop>,
}

/// The connection's task, stopped with its last handle.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("ns", &self.ns).finish()
    }
}

/// A non-blocking NETLINK_ROUTE socket in the calling thread's namespace, registered with the
/// tokio runtime the thread has entered, with strict checking on (dump requests are filtered
/// by the kernel, and a filter it does not know is an error instead of being ignored).
pub(crate) fn open_socket() -> io::Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
    socket.socket_mut().set_netlink_get_strict_chk(true)?;
    Ok(socket)
}

impl Netlink {
    pub(crate) fn from_socket(socket: TokioSocket, ns: &str) -> Netlink {
        let (connection, handle, _unsolicited) = rtnetlink::from_socket(socket);
        let task = tokio::spawn(connection);
        Netlink {
            handle,
            ns: ns.into(),
            _connection: Arc::new(AbortOnDrop(task)),
        }
    }

    /// A connection in the calling thread's own namespace (on a real switch, where the network
    /// agent runs in the namespace it programs). Must be called inside a tokio runtime.
    pub fn current() -> Result<Netlink> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime {
                step: "connect to netlink",
            });
        }
        let socket = open_socket().map_err(|e| Error::Netns {
            ns: "the current namespace".into(),
            step: "open a netlink socket".into(),
            source: e,
        })?;
        Ok(Netlink::from_socket(socket, "the current namespace"))
    }

    /// The rtnetlink handle, for requests the wrappers here do not cover.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// The label of the namespace this connection acts on.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The error for a failed request: the namespace, the step, and the kernel's errno.
    pub(crate) fn fail(&self, step: impl Into<String>, e: rtnetlink::Error) -> Error {
        Error::Netlink {
            ns: self.ns.to_string(),
            step: step.into(),
            source: to_io(e),
        }
    }
}

/// rtnetlink's error as an `io::Error`: the kernel's errno when it sent one (so callers can
/// match `EEXIST` or `ESRCH`), else its text.
fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}
