//! What the subcommands of the process share: logging, the shutdown signal, the controller
//! a client command talks to by default, and the parser of `NAME=VALUE` arguments.

/// The controller a client command talks to when none is given: the local rack of `torc up`.
pub const DEFAULT_CONTROLLER: &str = "https://127.0.3.20:3000";

/// A `NAME=VALUE` argument without its `=`.
#[derive(Debug, thiserror::Error)]
#[error("expected {what}=VALUE, got {text:?}")]
pub struct NotKeyValue {
    /// What the left-hand side names, as the flag's help spells it (`KEY`, `NAME`).
    what: &'static str,
    text: String,
}

/// Splits `NAME=VALUE` at its first `=`; `what` names the left-hand side in the error.
pub fn key_value(what: &'static str, text: &str) -> Result<(String, String), NotKeyValue> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| NotKeyValue {
            what,
            text: text.to_string(),
        })
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves once SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    let mut int = signal(SignalKind::interrupt()).expect("can listen for SIGINT");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
