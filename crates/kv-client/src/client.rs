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
//! With several endpoints ([`Client::lazy_endpoints`], [`Client::connect_endpoints`]) it
//! pins one and moves to the next when a call says the member cannot serve (see
//! `endpoints`): a read runs again on the next member, a change only when it surely did not
//! run. After a move it authenticates again, since etcd's simple tokens are per member. When
//! every endpoint failed, the error names each with its reason
//! ([`ClientError::Unavailable`]). Such a client sends etcd's `hasleader` metadata
//! (clientv3's `WithRequireLeader`), so a member cut off from raft refuses at once instead of
//! holding the call.
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
use std::time::Duration;

use std::future::Future;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::endpoints::{
    EndpointFailure, Member, Members, describe_tried, member_failed, retry_safe,
};
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
    /// No endpoint could serve the call: each tried, with its reason, in order
    /// (`etcd at URL: why; at URL: why`).
    #[error("{}", describe_tried(tried))]
    Unavailable { tried: Vec<EndpointFailure> },
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("etcd at {endpoint}: authenticating as {user}: {}", status.message())]
    Authenticate {
        /// The member that refused.
        endpoint: String,
        user: String,
        status: Status,
    },
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
            ClientError::Unavailable { tried } => tried.last().map(|t| &t.status),
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
    /// Send `hasleader` with every call.
    require_leader: bool,
}

impl Session {
    fn token(&self) -> Option<AsciiMetadataValue> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_token(&self, token: Option<AsciiMetadataValue>) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }
}

/// Puts the client's token, if it has one, in a call's metadata, and etcd's `hasleader`
/// when the client requires a leader.
#[derive(Clone)]
pub struct TokenInterceptor(Arc<Session>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = self.0.token() {
            request.metadata_mut().insert("token", token);
        }
        if self.0.require_leader {
            request.metadata_mut().insert(
                rpctypes::REQUIRE_LEADER_KEY,
                AsciiMetadataValue::from_static(rpctypes::HAS_LEADER),
            );
        }
        Ok(request)
    }
}

/// The channel the typed clients use: every call carries the token.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// A connection to an etcd v3 server, or to one of a cluster's members; cheap to clone
/// (clones share the connections, the pinned member and the token).
#[derive(Clone)]
pub struct Client {
    members: Arc<Members>,
    session: Arc<Session>,
}

/// How often the client pings each member's connection (HTTP/2 PING), and how long it waits for
/// the answer before it gives the connection up.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How a client with several endpoints connects ([`Client::lazy_endpoints`]).
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub credentials: Option<Credentials>,
    /// TLS towards `https://` endpoints (then every endpoint must be `https://`).
    pub tls: Option<ClientTls>,
    /// How long connecting to one endpoint may take before the next is tried.
    pub connect_timeout: Duration,
    /// Deadline of each unary call (and of a stream's start). A change that misses it has
    /// an unknown outcome and is not retried. `None`: no deadline of torc's own (etcd's is
    /// 7 s).
    pub request_timeout: Option<Duration>,
    /// Send etcd's `hasleader` metadata: a member without a raft leader refuses at once
    /// (`etcdserver: no leader`) and the client moves on.
    pub require_leader: bool,
}

impl Default for ClientOptions {
    /// No credentials, no TLS, 2 s to connect, 5 s per call, a leader required.
    fn default() -> ClientOptions {
        ClientOptions {
            credentials: None,
            tls: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Some(Duration::from_secs(5)),
            require_leader: true,
        }
    }
}

/// `url` without the `/` a `Uri` adds.
fn trim_url(url: &str) -> String {
    url.trim_end_matches('/').to_string()
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
        let url = trim_url(&endpoint.uri().to_string());
        Client::over(url, endpoint.connect_lazy(), credentials)
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
        let url = trim_url(&endpoint.uri().to_string());
        Ok(Client::over(url, channel, credentials))
    }

    fn over(url: String, channel: Channel, credentials: Option<Credentials>) -> Client {
        Client::of(vec![Member { url, channel }], credentials, false)
    }

    fn of(members: Vec<Member>, credentials: Option<Credentials>, require_leader: bool) -> Client {
        Client {
            members: Arc::new(Members::new(members)),
            session: Arc::new(Session {
                credentials,
                token: RwLock::new(None),
                generation: AtomicU64::new(0),
                auth_off: AtomicBool::new(false),
                authenticating: tokio::sync::Mutex::new(()),
                require_leader,
            }),
        }
    }

    /// A client of a cluster: `urls` are its members' client URLs (`http://host:port`, or
    /// `https://` with `options.tls`). It pins the first and moves on as `endpoints` says.
    /// No I/O: the first call connects.
    pub fn lazy_endpoints<S: AsRef<str>>(
        urls: &[S],
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut members = Vec::with_capacity(urls.len());
        for url in urls {
            let url = url.as_ref();
            check_scheme(url, options.tls.is_some())?;
            let mut endpoint =
                Endpoint::from_shared(url.to_string()).map_err(|e| ClientError::Endpoint {
                    endpoint: url.to_string(),
                    reason: e.to_string(),
                })?;
            endpoint = endpoint
                .connect_timeout(options.connect_timeout)
                // A member that accepts and never answers (frozen, partitioned after the
                // handshake) ends the connection, and with it every stream on it (a watch, a
                // keepalive stream), within interval + timeout; the client then moves to the
                // next member. etcd refuses pings more often than every 5 s
                // (`--grpc-keepalive-min-time`).
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
            if let Some(timeout) = options.request_timeout {
                endpoint = endpoint.timeout(timeout);
            }
            let channel = match &options.tls {
                Some(tls) => tls.channel_lazy(&endpoint),
                None => endpoint.connect_lazy(),
            };
            members.push(Member {
                url: trim_url(url),
                channel,
            });
        }
        Ok(Client::of(
            members,
            options.credentials,
            options.require_leader,
        ))
    }

    /// [`Client::lazy_endpoints`], then pins the first endpoint (in order) that answers
    /// (and accepts the credentials, if any). When none does, the error names each endpoint
    /// and why it failed.
    pub async fn connect_endpoints<S: AsRef<str>>(
        urls: &[S],
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let client = Client::lazy_endpoints(urls, options)?;
        let mut tried = Vec::new();
        for i in 0..client.members.len() {
            client.members.pin(i);
            client.session.set_token(None);
            let probe = if client.session.credentials.is_some() {
                client.authenticate().await
            } else {
                client
                    .maintenance()
                    .status(pb::StatusRequest {})
                    .await
                    .map(drop)
                    .map_err(ClientError::Rpc)
            };
            match probe {
                Ok(()) => return Ok(client),
                Err(e) => match e.status() {
                    Some(status) if member_failed(status) => tried.push(EndpointFailure {
                        endpoint: client.members.get(i).url.clone(),
                        status: status.clone(),
                    }),
                    // A refusal (a wrong password): another member would say the same.
                    _ => return Err(e),
                },
            }
        }
        Err(ClientError::Unavailable { tried })
    }

    /// The endpoint calls go to now.
    pub fn endpoint(&self) -> String {
        self.members.get(self.members.pinned()).url.clone()
    }

    /// Every endpoint of the client, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.urls()
    }

    /// The pinned member's channel.
    fn channel(&self) -> Channel {
        self.members.get(self.members.pinned()).channel.clone()
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
        let client = Client::over(trim_url(url), channel, credentials);
        if client.session.credentials.is_some() {
            client.authenticate().await?;
        }
        Ok(client)
    }

    fn interceptor(&self) -> TokenInterceptor {
        TokenInterceptor(self.session.clone())
    }

    pub fn kv(&self) -> KvClient<AuthChannel> {
        KvClient::with_interceptor(self.channel(), self.interceptor())
    }

    pub fn watch(&self) -> WatchClient<AuthChannel> {
        WatchClient::with_interceptor(self.channel(), self.interceptor())
    }

    pub fn lease(&self) -> LeaseClient<AuthChannel> {
        LeaseClient::with_interceptor(self.channel(), self.interceptor())
    }

    pub fn auth(&self) -> AuthClient<AuthChannel> {
        AuthClient::with_interceptor(self.channel(), self.interceptor())
    }

    pub fn cluster(&self) -> ClusterClient<AuthChannel> {
        ClusterClient::with_interceptor(self.channel(), self.interceptor())
    }

    pub fn maintenance(&self) -> MaintenanceClient<AuthChannel> {
        MaintenanceClient::with_interceptor(self.channel(), self.interceptor())
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
        let endpoint = self.endpoint();
        let refused = |status: Status| ClientError::Authenticate {
            endpoint: endpoint.clone(),
            user: creds.user.clone(),
            status,
        };
        // Not through the interceptor: no stale token, but `hasleader` all the same.
        let mut request = tonic::Request::new(request);
        if self.session.require_leader {
            request.metadata_mut().insert(
                rpctypes::REQUIRE_LEADER_KEY,
                AsciiMetadataValue::from_static(rpctypes::HAS_LEADER),
            );
        }
        match AuthClient::new(self.channel()).authenticate(request).await {
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

    /// Runs one unary call that changes something, `f` (given this client), on the pinned
    /// member: authenticating first if there is no token yet, and once more (then calling
    /// `f` again) if the call is refused for want of a valid token. When the member cannot
    /// serve, the pin moves on and the call runs on the next member only if it surely did
    /// not run (see `endpoints`).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call_with(false, f).await
    }

    /// [`Client::call`] for a call that may run twice (a read): it runs again on the next
    /// member after any failure of the member.
    pub async fn call_idempotent<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call_with(true, f).await
    }

    async fn call_with<T, F, Fut>(&self, idempotent: bool, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut tried = Vec::new();
        loop {
            let pinned = self.members.pinned();
            let error = match self.call_pinned(&mut f).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(status) = error.status().filter(|s| member_failed(s)).cloned() else {
                return Err(error);
            };
            self.left(pinned);
            let retry = retry_safe(&status, idempotent);
            tried.push(EndpointFailure {
                endpoint: self.members.get(pinned).url.clone(),
                status,
            });
            if !retry || tried.len() >= self.members.len() {
                return Err(ClientError::Unavailable { tried });
            }
        }
    }

    /// Leaves member `pinned` after it failed: the next calls go to the next member, with a
    /// token of that member's.
    fn left(&self, pinned: usize) {
        if self.members.len() > 1 && self.members.leave(pinned) {
            self.session.set_token(None);
        }
    }

    /// Marks the pinned member as failed by something the caller saw (a stream that broke,
    /// a keepalive that timed out), so the next calls go to the next member. Whether the
    /// status says the member failed (and so the pin moved, if there is another).
    pub fn member_failed(&self, status: &Status) -> bool {
        if !member_failed(status) {
            return false;
        }
        self.left(self.members.pinned());
        true
    }

    /// Before opening a stream (watch, keepalive) on the pinned member: authenticates if
    /// the client has no token for it yet, since a stream carries the token it starts with.
    /// A failure comes back as the status a stream would have failed with.
    pub(crate) async fn ready_for_stream(&self) -> Result<(), Status> {
        self.call_idempotent(|_| async { Ok(()) })
            .await
            .map_err(|e| {
                e.status()
                    .cloned()
                    .unwrap_or_else(|| Status::unavailable(e.to_string()))
            })
    }

    async fn call_pinned<T, F, Fut>(&self, f: &mut F) -> Result<T, ClientError>
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
        self.call_idempotent(|c| {
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
