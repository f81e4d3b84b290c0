//! Change notices from a namespace's kernel: a netlink socket created inside the namespace
//! and joined to its multicast groups for links and IPv4 routes (what `ip monitor link route`
//! shows), so a reader of the table learns of a change when the kernel makes it instead of at
//! its next poll.
//!
//! A notice carries no content: after one, read the table again ([`crate::observe`]). Notices
//! are coalesced: however many changes arrive while the reader is busy, it sees one notice.
//! Messages are drained as they come by a task of the watch, so neither the kernel's socket
//! buffer nor a queue here grows with a burst (10,000 routes replaced at once are 10,000
//! messages read and dropped, one notice kept). A kernel that drops messages on a full buffer
//! (`ENOBUFS`) drops only notices, never a change: the table is read whole.
//!
//! Invariant: the socket is created inside the namespace it watches (on a short-lived thread
//! that entered it), and keeps watching that namespace whichever thread polls it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt as _;
use rtnetlink::MulticastGroup;
use rtnetlink::sys::{AsyncSocket as _, SocketAddr};
use tokio::sync::Notify;

use crate::netlink::{Netlink, open_socket};
use crate::netns::run_blocking;
use crate::{Error, Netns, Result};

/// The groups watched: links (ports up or down, added, removed) and IPv4 routes.
const GROUPS: [MulticastGroup; 2] = [MulticastGroup::Link, MulticastGroup::Ipv4Route];

/// A watch on one namespace's links and IPv4 routes; it ends when dropped.
pub struct Changes {
    shared: Arc<Shared>,
    ns: String,
    task: tokio::task::JoinHandle<()>,
    connection: tokio::task::JoinHandle<()>,
}

struct Shared {
    notify: Notify,
    ended: AtomicBool,
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.task.abort();
        self.connection.abort();
    }
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").field("ns", &self.ns).finish()
    }
}

impl Changes {
    /// Waits for the next change since the last call (or since the watch began). Answers
    /// `false` once the watch has ended (its socket failed): the caller then polls, or watches
    /// again.
    pub async fn changed(&self) -> bool {
        if self.shared.ended.load(Ordering::Acquire) {
            return false;
        }
        self.shared.notify.notified().await;
        !self.shared.ended.load(Ordering::Acquire)
    }

    /// The label of the namespace watched.
    pub fn namespace(&self) -> &str {
        &self.ns
    }
}

/// Watches `ns`, or the caller's own namespace when `None`. Must be called inside a tokio
/// runtime (the watch runs as tasks on it).
pub fn watch(ns: Option<&Netns>) -> Result<Changes> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
        step: "watch netlink",
    })?;
    let label = ns.map_or("the current namespace", Netns::label).to_string();
    let mut mask = 0u32;
    for group in GROUPS {
        mask |= 1 << (group as u32 - 1);
    }
    let open = move || {
        let _entered = runtime.enter();
        let mut socket = open_socket()?;
        socket.socket_mut().bind(&SocketAddr::new(0, mask))?;
        Ok::<_, std::io::Error>(socket)
    };
    let fail = |e| Error::Netns {
        ns: label.clone(),
        step: "open a netlink socket for link and route changes".into(),
        source: e,
    };
    let socket = match ns {
        Some(ns) => run_blocking(ns, open)?.map_err(fail)?,
        None => open().map_err(fail)?,
    };
    let (connection, _handle, mut messages) = rtnetlink::from_socket(socket);
    let shared = Arc::new(Shared {
        notify: Notify::new(),
        ended: AtomicBool::new(false),
    });
    let connection = tokio::spawn(connection);
    let task = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while messages.next().await.is_some() {
                // One stored permit at most: a burst is one notice.
                shared.notify.notify_one();
            }
            shared.ended.store(true, Ordering::Release);
            shared.notify.notify_waiters();
            shared.notify.notify_one();
        })
    };
    Ok(Changes {
        shared,
        ns: label,
        task,
        connection,
    })
}

/// A switch as its readers hold it (the network agent, statesync): a netlink connection in
/// the namespace a setting names ([`crate::netns::open_setting`]) and a watch on its changes.
/// A watch that cannot be made or that ends leaves the reader polling (logged once).
pub struct Switch {
    setting: String,
    nl: Netlink,
    changes: Option<Changes>,
}

impl Switch {
    /// Connects to and watches the namespace `setting` names (`""`: the caller's own). Must be
    /// called inside a tokio runtime.
    pub fn open(setting: &str) -> Result<Switch> {
        let ns = crate::netns::open_setting(setting)?;
        let nl = crate::netns::connect(ns.as_ref())?;
        let changes = watch(ns.as_ref())
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot watch the switch's changes; reading it on a timer only")
            })
            .ok();
        Ok(Switch {
            setting: setting.to_string(),
            nl,
            changes,
        })
    }

    /// The setting it was opened with.
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// The connection to the switch's namespace.
    pub fn netlink(&self) -> &Netlink {
        &self.nl
    }

    /// Waits for a change of the switch's links or routes; forever when it is not watched (a
    /// watch that ended is dropped here, logged).
    pub async fn changed(&mut self) {
        match &self.changes {
            Some(changes) if changes.changed().await => {}
            Some(_) => {
                tracing::warn!(
                    "the watch on the switch's changes ended; reading it on a timer only"
                );
                self.changes = None;
                std::future::pending::<()>().await
            }
            None => std::future::pending::<()>().await,
        }
    }
}
