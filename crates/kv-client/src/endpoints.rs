//! The members a [`crate::Client`] can talk to: a list of endpoints, one of them pinned, and
//! the rules for leaving it.
//!
//! Every call goes to the pinned endpoint. A failure that says the member cannot serve (no
//! connection, etcd's `no leader`, `Unavailable`, the call's own deadline) moves the pin to
//! the next endpoint in the list, whether or not the call is retried there, so the next call
//! does not wait on the same dead or frozen member. Retrying is the client's decision
//! ([`retry_safe`]): a read may run again anywhere, a change only when it certainly did not
//! run (it was never sent, or etcd refused it for want of a leader), as etcd's `clientv3`
//! retries.
//!
//! Invariant: the pin only moves forward from the endpoint a failed call used
//! (compare-and-swap), so calls failing together on one member move it once, not once each.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::rpctypes;

/// One endpoint: its URL as given (without a trailing `/`) and its channel (which connects on
/// first use and again after the member went away).
pub(crate) struct Member {
    pub(crate) url: String,
    pub(crate) channel: Channel,
}

/// The endpoints of a client and the one it uses now.
pub(crate) struct Members {
    list: Vec<Member>,
    pinned: AtomicUsize,
}

impl Members {
    /// `list` must not be empty (the constructors check).
    pub(crate) fn new(list: Vec<Member>) -> Members {
        debug_assert!(!list.is_empty());
        Members {
            list,
            pinned: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Acquire) % self.list.len()
    }

    pub(crate) fn get(&self, i: usize) -> &Member {
        &self.list[i % self.list.len()]
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.list.iter().map(|m| m.url.clone()).collect()
    }

    /// Moves the pin from `from` to the next endpoint, unless another call moved it already.
    /// Whether it moved.
    pub(crate) fn leave(&self, from: usize) -> bool {
        let next = (from + 1) % self.list.len();
        self.pinned
            .compare_exchange(from, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Pins endpoint `i`.
    pub(crate) fn pin(&self, i: usize) {
        self.pinned.store(i % self.list.len(), Ordering::Release);
    }
}

/// An endpoint that failed a call, and how.
#[derive(Debug)]
pub struct EndpointFailure {
    pub endpoint: String,
    pub status: Status,
}

impl EndpointFailure {
    /// Whether a change that failed so surely did not run (no connection was made, or the
    /// member had no raft leader); otherwise its outcome is unknown.
    pub fn surely_not_sent(&self) -> bool {
        retry_safe(&self.status, false)
    }
}

impl std::fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", describe(&self.status))
    }
}

/// `etcd at A: why; at B: why` for the endpoints tried, in order.
pub(crate) fn describe_tried(tried: &[EndpointFailure]) -> String {
    let mut out = String::from("etcd");
    for (i, t) in tried.iter().enumerate() {
        let sep = if i == 0 { "" } else { ";" };
        out.push_str(&format!("{sep} at {}: {t}", t.endpoint));
    }
    out
}

/// A status on one line with its sources (tonic's transport errors say little at the top:
/// `tcp connect error`, then `Connection refused (os error 111)` below).
pub(crate) fn describe(status: &Status) -> String {
    let mut out = status.message().to_string();
    let mut source = status.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    if out.is_empty() {
        out = format!("{:?}", status.code());
    }
    out
}

/// The call never reached a member: no connection could be made.
fn not_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let text = describe(status).to_lowercase();
    text.contains("connect") && !text.contains("reset")
}

/// Whether a failure says the member cannot serve now, so the pin moves on.
pub(crate) fn member_failed(status: &Status) -> bool {
    match status.code() {
        // No connection, a broken one, no leader, a stopped server.
        Code::Unavailable => true,
        // The call's own deadline (a frozen member holds the connection and answers
        // nothing).
        Code::DeadlineExceeded | Code::Cancelled => true,
        // A connection that broke mid-call comes back from tonic as Unknown (`transport
        // error`, or `h2 protocol error: error reading a body from connection` with hyper's
        // broken pipe below).
        Code::Unknown => {
            let text = describe(status).to_lowercase();
            ["transport", "h2 protocol", "connection", "broken pipe"]
                .iter()
                .any(|t| text.contains(t))
        }
        _ => false,
    }
}

/// Whether a call that failed with `status` may run again on another member: a read
/// (`idempotent`) after any member failure; a change only if it surely did not run.
pub(crate) fn retry_safe(status: &Status, idempotent: bool) -> bool {
    if !member_failed(status) {
        return false;
    }
    idempotent || not_sent(status) || status.message() == rpctypes::NO_LEADER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_retry_only_when_not_sent() {
        let refused = Status::unavailable("tcp connect error: Connection refused (os error 111)");
        let no_leader = Status::unavailable(rpctypes::NO_LEADER);
        let timed_out = Status::unavailable("etcdserver: request timed out");
        let deadline = Status::deadline_exceeded("Timeout expired");
        let denied = Status::permission_denied("etcdserver: permission denied");
        let broken = Status::unknown("h2 protocol error: error reading a body from connection");
        assert!(member_failed(&broken) && !retry_safe(&broken, false));
        for s in [&refused, &no_leader, &timed_out, &deadline] {
            assert!(member_failed(s), "{s:?}");
            assert!(retry_safe(s, true), "{s:?}");
        }
        assert!(retry_safe(&refused, false));
        assert!(retry_safe(&no_leader, false));
        // Outcome unknown: the caller decides.
        assert!(!retry_safe(&timed_out, false));
        assert!(!retry_safe(&deadline, false));
        assert!(!member_failed(&denied));
        assert!(!retry_safe(&denied, true));
    }

    #[tokio::test]
    async fn the_pin_moves_once_per_failure() {
        let channel = || Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let members = Members::new(
            ["a", "b", "c"]
                .map(|u| Member {
                    url: u.into(),
                    channel: channel(),
                })
                .into(),
        );
        assert_eq!(members.pinned(), 0);
        assert!(members.leave(0));
        // A second call that failed on 0 does not move it past 1.
        assert!(!members.leave(0));
        assert_eq!(members.pinned(), 1);
        assert!(members.leave(1));
        assert!(members.leave(2));
        assert_eq!(members.pinned(), 0);
    }

    #[test]
    fn failures_name_every_endpoint() {
        let tried = [
            EndpointFailure {
                endpoint: "http://127.0.0.1:1".into(),
                status: Status::unavailable("tcp connect error"),
            },
            EndpointFailure {
                endpoint: "http://127.0.0.1:2".into(),
                status: Status::unavailable(rpctypes::NO_LEADER),
            },
        ];
        assert_eq!(
            describe_tried(&tried),
            "etcd at http://127.0.0.1:1: tcp connect error; at http://127.0.0.1:2: etcdserver: no leader"
        );
    }
}
