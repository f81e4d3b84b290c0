//! The crate's one error type: every variant names what it was working on (the namespace, the
//! link, the address, the route) and the step that failed, so a caller can log it as it is.

use std::io;

/// Why a step of the rack network failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name, prefix, address or protocol that cannot be used; nothing was done.
    #[error("bad {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A step on a namespace failed: create, mount, open, enter, delete, a sysctl.
    #[error("network namespace {ns}: cannot {step}: {source}")]
    Netns {
        ns: String,
        step: String,
        #[source]
        source: io::Error,
    },
    /// A netlink request inside `ns` failed; `source` carries the kernel's errno.
    #[error("in {ns}: cannot {step}: {source}")]
    Netlink {
        ns: String,
        step: String,
        #[source]
        source: io::Error,
    },
    /// The link a request names is not in the namespace.
    #[error("in {ns}: no link named {name}")]
    NoSuchLink { ns: String, name: String },
    /// A netlink connection is a tokio task, and there was no runtime to run it on.
    #[error("cannot {step}: not called inside a tokio runtime")]
    NoRuntime { step: &'static str },
    /// A step of a forwarder failed (binding, making a socket in the target namespace).
    #[error("forwarder to {target} in {ns}: cannot {step}: {source}")]
    Forward {
        ns: String,
        target: String,
        step: String,
        #[source]
        source: io::Error,
    },
    /// A rack's lock or record under `/run/torc` could not be used.
    #[error("{path}: cannot {step}: {source}")]
    State {
        path: String,
        step: String,
        #[source]
        source: io::Error,
    },
    /// Another process holds the rack's lock: that rack is running.
    #[error("rack {slug} is in use: another process holds {path}")]
    Busy { slug: String, path: String },
    /// A rack's network is not what its plan says (checked before anything is sent).
    #[error("rack network check: {ns}: {problem}")]
    Check { ns: String, problem: String },
}

impl Error {
    /// The OS error number behind this error, when there is one (`EEXIST`, `ESRCH`, `EPERM`,
    /// ...), for callers that treat some of them as expected.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Netns { source, .. }
            | Error::Netlink { source, .. }
            | Error::Forward { source, .. }
            | Error::State { source, .. } => source.raw_os_error(),
            Error::Invalid { .. }
            | Error::NoSuchLink { .. }
            | Error::NoRuntime { .. }
            | Error::Busy { .. }
            | Error::Check { .. } => None,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
