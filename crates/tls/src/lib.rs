//! TLS for torc's HTTP servers and clients, and the rack's certificate authority.
//!
//! What it is:
//! - [`server_config`] and [`client_config`]: rustls configurations (rustls' aws-lc-rs provider with
//!   hybrid post-quantum key exchange; TLS 1.2 and 1.3) from PEM certificates and keys ([`load_certs`], [`load_key`]), with
//!   client certificates off, optional, or required and checked against the rack CA;
//! - [`incoming`]: the accept path every torc TCP server shares (the HTTP servers below and
//!   kv's gRPC), plain or TLS: connections capped in all and per source address, each TLS
//!   handshake in its own task with a deadline, so a client that stalls mid-handshake holds
//!   nothing but its own socket; it yields [`Connection`]s ready for a protocol;
//! - [`serve`]: the HTTP/1.1 server every torc HTTP server runs (controller, agent, tsdb, the
//!   DNS example's API) over that accept path, with deadlines for a request's headers, pauses
//!   in its body and in taking the answer. The client's verified certificate chain reaches
//!   handlers as the
//!   [`PeerCertificates`] request extension, and its address as axum's
//!   `ConnectInfo<SocketAddr>`;
//! - [`cert_names`]: whether a verified certificate is valid for a DNS name (how the
//!   controller tells which node an agent's certificate speaks for);
//! - [`files`]: secret files (tokens, keys): written whole with mode 0600 in a 0700
//!   directory, and refused when others can read them (password files are read as the
//!   operator made them: see [`files::read_password_file`]);
//! - with the `pki` feature, [`pki`]: the rack CA on disk and the certificates it issues.
//!
//! What it is not: a policy. Which routes need which certificate is the caller's decision;
//! this crate only proves what the peer presented.
//!
//! Invariants: a client certificate reaches a handler only after rustls verified its chain to
//! the configured roots; nothing here reads a clock of its own for certificate validity
//! (rustls and webpki do); private keys are read from files only, never from arguments, and
//! only from files no one else can read ([`load_key`], [`files::read_secret`]).

mod accept;
mod error;
pub mod files;
mod serve;

#[cfg(feature = "pki")]
pub mod pki;

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
pub use rustls::{ClientConfig, ServerConfig};

pub use accept::{AcceptOptions, Connection, Incoming, Stream, incoming};
pub use error::TlsError;
pub use serve::{PeerCertificates, ServeOptions, serve, serve_with};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate in a PEM file, in order (a chain starts with the leaf).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        error: source,
    })?;
    certs_from_pem(&pem).map_err(|e| match e {
        PemError::Empty => TlsError::NoCertificate { path: path.into() },
        PemError::Bad(message) => TlsError::Pem {
            path: path.into(),
            message,
        },
    })
}

enum PemError {
    Empty,
    Bad(String),
}

fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::Empty);
    }
    Ok(certs)
}

/// Certificates from PEM text (`what` names it in errors).
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from_pem(pem.as_bytes()).map_err(|e| match e {
        PemError::Empty => TlsError::NoCertificate { path: what.into() },
        PemError::Bad(message) => TlsError::Pem {
            path: what.into(),
            message,
        },
    })
}

/// The first private key in a PEM file, read as the secret it is ([`files::read_secret`]: a
/// key file others can read, or another user owns, is refused).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = files::read_secret(path)?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::NoKey { path: path.into() })
}

/// A private key from PEM text (`what` names it in errors).
pub fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::NoKey { path: what.into() })
}

/// A certificate chain and its private key: what a server, or a client that authenticates
/// itself, presents.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Reads a certificate chain and its key from two PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: load_certs(cert)?,
            key: load_key(key)?,
        })
    }

    /// From PEM text.
    pub fn from_pem(cert: &str, key: &str, what: &str) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: parse_certs(cert, what)?,
            key: parse_key(key, what)?,
        })
    }
}

/// Whether and how a server asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificates (clients authenticate some other way, e.g. tokens).
    None,
    /// A client may present a certificate; if it does, it must chain to these roots. Routes
    /// that need one look for [`PeerCertificates`].
    Optional(Vec<CertificateDer<'static>>),
    /// Every client must present a certificate chaining to these roots.
    Required(Vec<CertificateDer<'static>>),
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone())?;
    }
    Ok(store)
}

/// A server configuration presenting `identity`, offering HTTP/1.1 by ALPN.
pub fn server_config(
    identity: Identity,
    client_auth: ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let mut config = server_builder(client_auth)?.with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A server configuration presenting whatever identity `current` holds at each handshake
/// (none yet: handshakes fail), offering HTTP/1.1 by ALPN. For a server whose certificate
/// arrives or is renewed while it runs (an agent's, from its registration).
pub fn server_config_reloadable(
    current: Arc<ReloadableIdentity>,
    client_auth: ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let mut config = server_builder(client_auth)?.with_cert_resolver(current);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A server identity that can be replaced while the server runs.
#[derive(Debug, Default)]
pub struct ReloadableIdentity(std::sync::RwLock<Option<Arc<rustls::sign::CertifiedKey>>>);

impl ReloadableIdentity {
    /// Presents `identity` from the next handshake on.
    pub fn set(&self, identity: Identity) -> Result<(), TlsError> {
        let key = provider().key_provider.load_private_key(identity.key)?;
        let certified = rustls::sign::CertifiedKey::new(identity.chain, key);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(certified));
        Ok(())
    }

    /// Whether an identity has been set.
    pub fn is_set(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

impl rustls::server::ResolvesServerCert for ReloadableIdentity {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn server_builder(
    client_auth: ClientAuth,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(&roots)?),
                provider(),
            )
            .allow_unauthenticated()
            .build()?,
        ),
        ClientAuth::Required(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(&roots)?),
                provider(),
            )
            .build()?,
        ),
    };
    Ok(builder)
}

/// A client configuration that trusts only `roots` (the rack CA), presenting `identity` when
/// the server asks for a certificate.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(roots)?);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The DNS name every controller certificate carries and no other certificate of a rack may
/// (the controller refuses to issue one with it): torc's own clients of the controller check
/// it instead of the address they dialled, so a certificate issued to a task or a node, which
/// may carry the controller node's address, never passes for the controller. `.internal` is
/// reserved for private use and never resolves.
pub const CONTROLLER_NAME: &str = "controller.torc.internal";

/// A client configuration for talking to the controller: like [`client_config`], but the
/// server's certificate must be valid for [`CONTROLLER_NAME`], whatever address was dialled.
pub fn controller_client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(root_store(roots)?),
        provider(),
    )
    .build()
    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let verifier = Arc::new(PinnedName {
        inner,
        name: ServerName::try_from(CONTROLLER_NAME).expect("a valid DNS name"),
    });
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// webpki's verification, for a fixed name instead of the one dialled.
#[derive(Debug)]
struct PinnedName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `cert` (already verified by the handshake) is valid for the DNS name `name`.
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.verify_is_valid_for_subject_name(&server_name).is_ok(),
        Err(_) => false,
    }
}
