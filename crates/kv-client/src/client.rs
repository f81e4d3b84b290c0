//! A client for torc kv, or any etcd v3 server, for the rest of torc: the
//! typed gRPC clients of [`crate::proto`] over one channel, with etcd's
//! authentication done the way etcd's own clients do it.
//!
//! With [`Credentials`], the client calls Authenticate before its first
//! request, sends the token it gets in the `token` metadata of every call
//! (a tonic interceptor, so streams carry it too), and when a unary call
//! made through [`Client::call`] (or [`Client::range`], [`Client::put`],
//! ...) fails with `invalid auth token` (the token expired, the server
//! restarted, the user's password changed) or `user name is empty` (auth
//! was enabled after the client learned it was off), it authenticates again
//! and repeats the call once. A server that answers `authentication is not
//! enabled` is called without a token, as etcd's clients do.
//!
//! With [`ClientTls`] (etcdctl's `--cacert`, and `--cert`/`--key` for a
//! client certificate) it speaks TLS to an `https://` endpoint, checking the
//! server's certificate against that CA only and offering `h2` by ALPN. The
//! scheme decides: an `https://` endpoint without a CA, or TLS towards an
//! `http://` one, is refused (etcdctl would fall back to the system's roots,
//! or to plain text).
//!
//! Not here: several endpoints, retries of anything else.
//!
//! ```no_run
//! # async fn demo() -> Result<(), torc_kv_client::ClientError> {
//! use torc_kv_client::{Client, ClientTls, Credentials};
//! use torc_kv_client::proto::etcdserverpb::PutRequest;
//! let password = torc_kv_client::read_password_file("/etc/torc/kv-password".as_ref())?;
//! let tls = ClientTls::from_files("/etc/torc/ca.pem".as_ref(), None)?;
//! let client = Client::connect_with(
//!     "https://127.0.0.1:2379",
//!     Some(Credentials::new("statesync", password)),
//!     Some(tls),
//! )
//! .await?;
//! client.put(PutRequest { key: "/torc/x".into(), value: "1".into(), ..Default::default() }).await?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::future::Future;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::proto::etcdserverpb as pb;
use crate::rpctypes;
use pb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
};

/// A user name and its password. `Debug` does not show the password.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a call through the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("authenticating as {user}: {}", status.message())]
    Authenticate { user: String, status: Status },
    /// The server refused the call (its message is etcd's).
    #[error("{}", .0.message())]
    Rpc(#[from] Status),
    #[error(transparent)]
    PasswordFile(#[from] torc_tls::files::PasswordFileError),
    #[error("TLS: {0}")]
    Tls(#[from] torc_tls::TlsError),
}

impl ClientError {
    /// The gRPC status of a refused call or authentication.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Authenticate { status, .. } | ClientError::Rpc(status) => Some(status),
            _ => None,
        }
    }
}

/// Reads a password from a file: [`torc_tls::files::read_password_file`] (re-exported here
/// for the clients of a store).
pub use torc_tls::files::read_password_file;

/// TLS towards the server: the CA its certificate must chain to (etcdctl's
/// `--cacert`) and, when the server asks for one, a client certificate
/// (`--cert`, `--key`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<torc_tls::ClientConfig>,
}

impl ClientTls {
    /// Trusts only `ca`; presents `identity` when asked for a certificate.
    pub fn new(
        ca: &[torc_tls::CertificateDer<'static>],
        identity: Option<torc_tls::Identity>,
    ) -> Result<ClientTls, ClientError> {
        let mut config = torc_tls::client_config(ca, identity)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// From etcdctl's flags: `--cacert`, and `--cert` with `--key`. The key
    /// file must be readable by its owner only.
    pub fn from_files(
        cacert: &Path,
        cert_and_key: Option<(&Path, &Path)>,
    ) -> Result<ClientTls, ClientError> {
        let ca = torc_tls::load_certs(cacert)?;
        let identity = match cert_and_key {
            Some((cert, key)) => {
                let pem = torc_tls::files::read_secret(key)?;
                Some(torc_tls::Identity {
                    chain: torc_tls::load_certs(cert)?,
                    key: torc_tls::parse_key(&pem, &key.display().to_string())?,
                })
            }
            None => None,
        };
        ClientTls::new(&ca, identity)
    }

    /// A channel to `endpoint` (whose URI must be `https://`) over TLS,
    /// connecting on first use.
    pub fn channel_lazy(&self, endpoint: &Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector())
    }

    /// A channel to `endpoint` (whose URI must be `https://`) over TLS,
    /// connected now.
    pub async fn channel(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.connector()).await
    }

    /// TCP, then TLS with the endpoint's host as the server name. (tonic's
    /// own TLS features stay off: with them, tonic would insist on doing
    /// TLS itself for `https://` URIs.)
    fn connector(
        &self,
    ) -> impl tower::Service<
        Uri,
        Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
        Error = std::io::Error,
        Future = impl Future<
            Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>,
        > + Send,
    > + Clone
    + Send
    + 'static {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        tower::service_fn(move |uri: Uri| {
            let connector = connector.clone();
            async move {
                let bad =
                    |reason: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, reason);
                let host = uri
                    .host()
                    .ok_or_else(|| bad(format!("{uri}: no host")))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = uri.port_u16().unwrap_or(443);
                let name = torc_tls::ServerName::try_from(host.clone())
                    .map_err(|e| bad(format!("{host}: not a server name: {e}")))?;
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name, tcp).await?;
                Ok(TokioIo::new(tls))
            }
        })
    }
}

/// Checks `url`'s scheme against whether TLS is configured.
fn check_scheme(url: &str, tls: bool) -> Result<(), ClientError> {
    let https = url.starts_with("https://");
    let reason = match (https, tls) {
        (true, false) => "an https:// endpoint needs the CA to check the server against (--cacert)",
        (false, true) if url.starts_with("http://") => {
            "TLS options (--cacert) are given for an http:// endpoint; use https://"
        }
        (false, true) => "give the endpoint as https://HOST:PORT",
        _ => return Ok(()),
    };
    Err(ClientError::Endpoint {
        endpoint: url.to_string(),
        reason: reason.to_string(),
    })
}

/// The token shared by a client's clones and its interceptors.
struct Session {
    credentials: Option<Credentials>,
    token: RwLock<Option<AsciiMetadataValue>>,
    /// Counts authentications, so that of several calls failing on the
    /// same token only one authenticates again.
    generation: AtomicU64,
    /// The server said auth is not enabled: calls go without a token.
    auth_off: AtomicBool,
    authenticating: tokio::sync::Mutex<()>,
}

impl Session {
    fn token(&self) -> Option<AsciiMetadataValue> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_token(&self, token: Option<AsciiMetadataValue>) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }
}

/// Puts the client's token, if it has one, in a call's metadata.
#[derive(Clone)]
pub struct TokenInterceptor(Arc<Session>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = self.0.token() {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

/// The channel the typed clients use: every call carries the token.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// A connection to an etcd v3 server; cheap to clone (clones share the
/// connection and the token).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    session: Arc<Session>,
}

/// Whether a refusal means "authenticate again": the token is not (or no
/// longer) valid, or there was none and the server now wants one.
fn wants_new_token(status: &Status) -> bool {
    (status.code() == Code::Unauthenticated && status.message() == rpctypes::INVALID_AUTH_TOKEN)
        || (status.code() == Code::InvalidArgument && status.message() == rpctypes::USER_EMPTY)
}

impl Client {
    /// A client that connects on its first call (and again after the
    /// server went away): creating it does no I/O, so a server that is down
    /// does not hold up its creator. Configure timeouts on `endpoint`.
    /// Plain text only: see [`Client::lazy_with`].
    pub fn lazy(endpoint: Endpoint, credentials: Option<Credentials>) -> Client {
        Client::over(endpoint.connect_lazy(), credentials)
    }

    /// [`Client::lazy`], over TLS when given `tls` (then `endpoint` must be
    /// `https://`; without it, it must not be).
    pub fn lazy_with(
        endpoint: Endpoint,
        credentials: Option<Credentials>,
        tls: Option<ClientTls>,
    ) -> Result<Client, ClientError> {
        check_scheme(&endpoint.uri().to_string(), tls.is_some())?;
        let channel = match &tls {
            Some(tls) => tls.channel_lazy(&endpoint),
            None => endpoint.connect_lazy(),
        };
        Ok(Client::over(channel, credentials))
    }

    fn over(channel: Channel, credentials: Option<Credentials>) -> Client {
        Client {
            channel,
            session: Arc::new(Session {
                credentials,
                token: RwLock::new(None),
                generation: AtomicU64::new(0),
                auth_off: AtomicBool::new(false),
                authenticating: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Connects to `url` (`http://host:port`) now, and authenticates now
    /// if given credentials.
    pub async fn connect(
        url: &str,
        credentials: Option<Credentials>,
    ) -> Result<Client, ClientError> {
        Client::connect_with(url, credentials, None).await
    }

    /// [`Client::connect`], over TLS to an `https://` `url` when given
    /// `tls`.
    pub async fn connect_with(
        url: &str,
        credentials: Option<Credentials>,
        tls: Option<ClientTls>,
    ) -> Result<Client, ClientError> {
        check_scheme(url, tls.is_some())?;
        let endpoint =
            Endpoint::from_shared(url.to_string()).map_err(|e| ClientError::Endpoint {
                endpoint: url.to_string(),
                reason: e.to_string(),
            })?;
        let connected = match &tls {
            Some(tls) => tls.channel(&endpoint).await,
            None => endpoint.connect().await,
        };
        let channel = connected.map_err(|source| ClientError::Connect {
            endpoint: url.to_string(),
            source,
        })?;
        let client = Client::over(channel, credentials);
        if client.session.credentials.is_some() {
            client.authenticate().await?;
        }
        Ok(client)
    }

    fn interceptor(&self) -> TokenInterceptor {
        TokenInterceptor(self.session.clone())
    }

    pub fn kv(&self) -> KvClient<AuthChannel> {
        KvClient::with_interceptor(self.channel.clone(), self.interceptor())
    }

    pub fn watch(&self) -> WatchClient<AuthChannel> {
        WatchClient::with_interceptor(self.channel.clone(), self.interceptor())
    }

    pub fn lease(&self) -> LeaseClient<AuthChannel> {
        LeaseClient::with_interceptor(self.channel.clone(), self.interceptor())
    }

    pub fn auth(&self) -> AuthClient<AuthChannel> {
        AuthClient::with_interceptor(self.channel.clone(), self.interceptor())
    }

    pub fn cluster(&self) -> ClusterClient<AuthChannel> {
        ClusterClient::with_interceptor(self.channel.clone(), self.interceptor())
    }

    pub fn maintenance(&self) -> MaintenanceClient<AuthChannel> {
        MaintenanceClient::with_interceptor(self.channel.clone(), self.interceptor())
    }

    /// The token calls carry now, if any (for diagnostics and tests).
    pub fn token(&self) -> Option<String> {
        self.session
            .token()
            .and_then(|t| t.to_str().ok().map(str::to_string))
    }

    /// Authenticates with the client's credentials and uses the new token
    /// from now on (nothing without credentials).
    pub async fn authenticate(&self) -> Result<(), ClientError> {
        let Some(creds) = &self.session.credentials else {
            return Ok(());
        };
        let request = pb::AuthenticateRequest {
            name: creds.user.clone(),
            password: creds.password.clone(),
        };
        let refused = |status: Status| ClientError::Authenticate {
            user: creds.user.clone(),
            status,
        };
        match AuthClient::new(self.channel.clone())
            .authenticate(request)
            .await
        {
            Ok(resp) => {
                let token = AsciiMetadataValue::try_from(resp.into_inner().token)
                    .map_err(|e| refused(Status::internal(format!("unusable token: {e}"))))?;
                self.session.set_token(Some(token));
                self.session.auth_off.store(false, Ordering::Release);
            }
            Err(status) if status.message() == rpctypes::AUTH_NOT_ENABLED => {
                self.session.set_token(None);
                self.session.auth_off.store(true, Ordering::Release);
            }
            Err(status) => return Err(refused(status)),
        }
        self.session.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Authenticates unless another call did since `seen` (its generation).
    async fn reauthenticate(&self, seen: u64) -> Result<(), ClientError> {
        let _one_at_a_time = self.session.authenticating.lock().await;
        if self.session.generation.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        self.authenticate().await
    }

    /// Runs one unary call, `f` (given this client), authenticating first
    /// if there is no token yet, and once more (then calling `f` again)
    /// if the call is refused for want of a valid token.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let session = &self.session;
        if session.credentials.is_some()
            && session.token().is_none()
            && !session.auth_off.load(Ordering::Acquire)
        {
            self.reauthenticate(session.generation.load(Ordering::Acquire))
                .await?;
        }
        let seen = session.generation.load(Ordering::Acquire);
        match f(self.clone()).await {
            Err(status) if session.credentials.is_some() && wants_new_token(&status) => {
                self.reauthenticate(seen).await?;
                Ok(f(self.clone()).await?)
            }
            result => Ok(result?),
        }
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(c.kv().range(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(c.kv().put(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(c.kv().delete_range(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(c.kv().txn(req).await?.into_inner()) }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_do_not_print_the_password() {
        let c = Credentials::new("alice", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
