//! Why TLS material could not be loaded, assembled or written: the one error of this crate.

use std::path::PathBuf;

/// Why TLS material could not be loaded or assembled.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not PEM certificates: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)")]
    NoKey { path: PathBuf },
    #[error(
        "{path} is readable by others (mode {mode:04o}); it holds a secret: `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error(
        "{path} belongs to uid {owner}, not to this process's user; it holds a secret and is not trusted"
    )]
    NotOwned { path: PathBuf, owner: u32 },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[cfg(feature = "pki")]
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[cfg(feature = "pki")]
    #[error("the OS's random source failed: {0}")]
    Random(String),
    /// A file written atomically (its text names the file and the step that failed).
    #[error(transparent)]
    WriteFile(#[from] torc_durable::WriteError),
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}
