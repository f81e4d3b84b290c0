//! The client's errors: each names the socket, the call and what it was about, so a log line
//! or a task's message says which containerd refused what.

use std::path::PathBuf;

use crate::ids::IdError;

/// What went wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered on the socket (containerd down, wrong path, no permission).
    #[error("containerd at {}: cannot connect: {reason}", socket.display())]
    Connect { socket: PathBuf, reason: String },
    /// containerd refused a call, or the call broke in transit.
    #[error("containerd at {}: {call}{}: {message} ({code:?})", socket.display(), about(target))]
    Call {
        socket: PathBuf,
        /// `Service.Method`, e.g. `Tasks.Create`.
        call: &'static str,
        /// What the call was about (a container id, a snapshot key), or empty.
        target: String,
        code: tonic::Code,
        message: String,
    },
    /// containerd did not answer within the client's call timeout.
    #[error("containerd at {}: {call}{}: no answer after {seconds} s", socket.display(), about(target))]
    Timeout {
        socket: PathBuf,
        call: &'static str,
        target: String,
        seconds: u64,
    },
    /// containerd's answer lacked something it always carries, or carried a bad value.
    #[error("containerd at {}: {call}{}: unexpected answer: {what}", socket.display(), about(target))]
    Answer {
        socket: PathBuf,
        call: &'static str,
        target: String,
        what: String,
    },
    /// A request was refused before it was sent: the reason says what is wrong with it.
    #[error("{call}{}: {reason}", about(target))]
    Request {
        call: &'static str,
        target: String,
        reason: String,
    },
    #[error(transparent)]
    Id(#[from] IdError),
}

fn about(target: &str) -> String {
    if target.is_empty() {
        String::new()
    } else {
        format!(" {target}")
    }
}

impl Error {
    /// The gRPC code containerd answered with, if the error is its answer.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Call { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// containerd said the thing named does not exist (`errdefs.ErrNotFound`).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// containerd said the thing named exists already (`errdefs.ErrAlreadyExists`).
    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(tonic::Code::AlreadyExists)
    }

    /// containerd could not be reached (down, restarting, or the socket is gone): worth a
    /// retry later, unlike a refusal.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Timeout { .. })
            || self.code() == Some(tonic::Code::Unavailable)
    }
}

/// A call's answer, or `None` when containerd said that what the call names does not exist.
pub(crate) fn found<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(answer) => Ok(Some(answer)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// An error and its sources on one line (tonic's transport errors say little at the top).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let part = next.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = next.source();
    }
    text
}
