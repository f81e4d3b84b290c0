//! Netlink requests from synchronous code: a short-lived thread with a runtime of its own, so
//! that the rack can be built and torn down from any caller (an async `torc up`, a test's
//! `Drop`) without blocking on the caller's runtime or nesting one in it.

use std::future::Future;

use crate::{Error, Result};

/// Runs `f` to completion on a new thread with its own current-thread runtime. The thread
/// starts in the caller's namespace (a new thread inherits it).
pub(crate) fn run<T: Send>(f: impl Future<Output = Result<T>> + Send) -> Result<T> {
    let failed = |step: &str, source| Error::Netns {
        ns: "the caller's namespace".into(),
        step: step.to_string(),
        source,
    };
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("torc-rack-net".into())
            .spawn_scoped(scope, || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| failed("start a runtime for netlink requests", e))?;
                runtime.block_on(f)
            })
            .map_err(|e| failed("start a thread for netlink requests", e))?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
