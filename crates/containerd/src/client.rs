//! The connection to one containerd: a tonic channel over its unix socket, the namespace (and
//! optionally the lease) every call carries, a timeout on every unary call, and the calls that
//! are not about containers or tasks (`Version`, `Introspection.Plugins`, `Namespaces.List`,
//! `Leases`).
//!
//! The channel reconnects by itself: after containerd restarts, the next call connects again
//! (and fails with [`Error::is_unavailable`] while nothing answers). Streams (events) do not
//! survive a restart; [`crate::Subscription`] starts them again.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, chain};
use crate::ids::Namespace;
use crate::proto::containerd::services as svc;
use svc::containers::v1::containers_client::ContainersClient;
use svc::content::v1::content_client::ContentClient;
use svc::diff::v1::diff_client::DiffClient;
use svc::events::v1::events_client::EventsClient;
use svc::images::v1::images_client::ImagesClient;
use svc::introspection::v1::introspection_client::IntrospectionClient;
use svc::leases::v1::leases_client::LeasesClient;
use svc::namespaces::v1::namespaces_client::NamespacesClient;
use svc::snapshots::v1::snapshots_client::SnapshotsClient;
use svc::tasks::v1::tasks_client::TasksClient;
use svc::version::v1::version_client::VersionClient;

/// The metadata key containerd reads a call's namespace from.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The metadata key containerd reads a call's lease from: what the call creates (content,
/// snapshots) is held by the lease until the lease is deleted or expires.
pub const LEASE_HEADER: &str = "containerd-lease";
/// How long a unary call may take unless [`Client::with_call_timeout`] says otherwise.
/// containerd answers in milliseconds; a task's create starts a shim and runc (about 100 ms on
/// a loaded machine), so this only catches a containerd that hangs.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The interceptor that puts the namespace (and the lease) on every call, streams included.
#[derive(Clone)]
pub struct Headers {
    namespace: AsciiMetadataValue,
    lease: Option<AsciiMetadataValue>,
}

impl Interceptor for Headers {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        metadata.insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Some(lease) = &self.lease {
            metadata.insert(LEASE_HEADER, lease.clone());
        }
        Ok(request)
    }
}

/// A generated client's transport: the channel with [`Headers`].
pub type Service = InterceptedService<Channel, Headers>;

/// containerd's version, as `Version` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// e.g. `1.6.20~ds1`.
    pub version: String,
    pub revision: String,
}

impl Version {
    /// The major and minor numbers (`1.6.20~ds1` → `(1, 6)`), if the version has them.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let text = self.version.trim_start_matches('v');
        let mut parts = text.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
}

/// A plugin of containerd, as `Introspection.Plugins` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// e.g. `io.containerd.snapshotter.v1`.
    pub kind: String,
    /// e.g. `overlayfs`.
    pub id: String,
    /// Why the plugin failed to initialise; it cannot be used. `None` when it is ready.
    pub init_error: Option<String>,
    pub exports: HashMap<String, String>,
    pub capabilities: Vec<String>,
}

/// A lease: what calls made with it create is kept from containerd's garbage collector until
/// it is deleted or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
}

/// A client of one containerd in one namespace. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Client {
    socket: Arc<Path>,
    namespace: Namespace,
    headers: Headers,
    channel: Channel,
    call_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("namespace", &self.namespace)
            .field("lease", &self.headers.lease)
            .finish()
    }
}

impl Client {
    /// Connects to the containerd listening on `socket` now; fails if nothing answers there.
    pub async fn connect(socket: impl AsRef<Path>, namespace: Namespace) -> Result<Client, Error> {
        let socket: Arc<Path> = Arc::from(socket.as_ref());
        let channel = endpoint()
            .connect_with_connector(connector(&socket))
            .await
            .map_err(|e| Error::Connect {
                socket: socket.to_path_buf(),
                reason: chain(&e),
            })?;
        Ok(Client::new(socket, namespace, channel))
    }

    /// A client that connects on its first call (and again after containerd restarts), for a
    /// caller that starts before containerd may answer. Does no I/O; needs a tokio runtime.
    pub fn connect_lazy(socket: impl AsRef<Path>, namespace: Namespace) -> Client {
        let socket: Arc<Path> = Arc::from(socket.as_ref());
        let channel = endpoint().connect_with_connector_lazy(connector(&socket));
        Client::new(socket, namespace, channel)
    }

    fn new(socket: Arc<Path>, namespace: Namespace, channel: Channel) -> Client {
        let headers = Headers {
            namespace: header_value(namespace.as_str()),
            lease: None,
        };
        Client {
            socket,
            namespace,
            headers,
            channel,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The same connection, calling in another namespace.
    pub fn in_namespace(&self, namespace: Namespace) -> Client {
        let mut client = self.clone();
        client.headers.namespace = header_value(namespace.as_str());
        client.namespace = namespace;
        client
    }

    /// The same connection, with every call made under `lease` (the `containerd-lease`
    /// header).
    pub fn with_lease(&self, lease: &Lease) -> Result<Client, Error> {
        let value =
            AsciiMetadataValue::try_from(lease.id.as_str()).map_err(|_| Error::Request {
                call: "with_lease",
                target: lease.id.clone(),
                reason: "a lease id must be visible ASCII".into(),
            })?;
        let mut client = self.clone();
        client.headers.lease = Some(value);
        Ok(client)
    }

    /// The same connection, with another timeout for unary calls.
    pub fn with_call_timeout(&self, timeout: Duration) -> Client {
        let mut client = self.clone();
        client.call_timeout = timeout;
        client
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The generated clients, for calls this crate has no wrapper for; each carries the
    /// namespace (and lease) headers.
    pub fn containers_api(&self) -> ContainersClient<Service> {
        ContainersClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn tasks_api(&self) -> TasksClient<Service> {
        TasksClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn snapshots_api(&self) -> SnapshotsClient<Service> {
        SnapshotsClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn images_api(&self) -> ImagesClient<Service> {
        ImagesClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn content_api(&self) -> ContentClient<Service> {
        ContentClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn diff_api(&self) -> DiffClient<Service> {
        DiffClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn leases_api(&self) -> LeasesClient<Service> {
        LeasesClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn events_api(&self) -> EventsClient<Service> {
        EventsClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn introspection_api(&self) -> IntrospectionClient<Service> {
        IntrospectionClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn namespaces_api(&self) -> NamespacesClient<Service> {
        NamespacesClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }
    pub fn version_api(&self) -> VersionClient<Service> {
        VersionClient::with_interceptor(self.channel.clone(), self.headers.clone())
    }

    /// Runs one unary call with the client's timeout, naming it in any error.
    pub(crate) async fn unary<T>(
        &self,
        call: &'static str,
        target: &str,
        future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.call_timeout, future).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(call, target, status)),
            Err(_) => Err(Error::Timeout {
                socket: self.socket.to_path_buf(),
                call,
                target: target.to_string(),
                seconds: self.call_timeout.as_secs(),
            }),
        }
    }

    pub(crate) fn status_error(
        &self,
        call: &'static str,
        target: &str,
        status: tonic::Status,
    ) -> Error {
        let mut message = status.message().to_string();
        if message.is_empty() {
            message = chain(&status);
        }
        Error::Call {
            socket: self.socket.to_path_buf(),
            call,
            target: target.to_string(),
            code: status.code(),
            message,
        }
    }

    pub(crate) fn answer_error(
        &self,
        call: &'static str,
        target: &str,
        what: impl Into<String>,
    ) -> Error {
        Error::Answer {
            socket: self.socket.to_path_buf(),
            call,
            target: target.to_string(),
            what: what.into(),
        }
    }

    /// `Version`: which containerd answers.
    pub async fn version(&self) -> Result<Version, Error> {
        let answer = self
            .unary("Version.Version", "", self.version_api().version(()))
            .await?;
        Ok(Version {
            version: answer.version,
            revision: answer.revision,
        })
    }

    /// `Introspection.Plugins`, with containerd's filters (ORed; e.g.
    /// `type==io.containerd.snapshotter.v1,id==overlayfs`); all plugins when empty.
    pub async fn plugins(&self, filters: &[&str]) -> Result<Vec<Plugin>, Error> {
        let request = svc::introspection::v1::PluginsRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
        };
        let answer = self
            .unary(
                "Introspection.Plugins",
                &filters.join(" or "),
                self.introspection_api().plugins(request),
            )
            .await?;
        Ok(answer
            .plugins
            .into_iter()
            .map(|p| Plugin {
                kind: p.r#type,
                id: p.id,
                init_error: p.init_err.map(|s| {
                    if s.message.is_empty() {
                        format!("error code {}", s.code)
                    } else {
                        s.message
                    }
                }),
                exports: p.exports,
                capabilities: p.capabilities,
            })
            .collect())
    }

    /// `Namespaces.List`: every namespace of this containerd (the client's own need not be
    /// one yet: containerd makes a namespace on its first use).
    pub async fn namespaces(&self) -> Result<Vec<Namespace>, Error> {
        let answer = self
            .unary(
                "Namespaces.List",
                "",
                self.namespaces_api()
                    .list(svc::namespaces::v1::ListNamespacesRequest::default()),
            )
            .await?;
        answer
            .namespaces
            .into_iter()
            .map(|n| {
                Namespace::new(n.name)
                    .map_err(|e| self.answer_error("Namespaces.List", "", e.to_string()))
            })
            .collect()
    }

    /// `Leases.Create`: a lease with a random id that containerd's garbage collector drops by
    /// itself after `expire` (so a caller that dies holding it leaks nothing for long).
    pub async fn create_lease(&self, expire: Duration) -> Result<Lease, Error> {
        let mut bytes = [0u8; 8];
        random(&mut bytes);
        let id = format!(
            "torc-{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            rfc3339(SystemTime::now() + expire),
        )]);
        let request = svc::leases::v1::CreateRequest {
            id: id.clone(),
            labels,
        };
        let answer = self
            .unary("Leases.Create", &id, self.leases_api().create(request))
            .await?;
        let lease = answer
            .lease
            .ok_or_else(|| self.answer_error("Leases.Create", &id, "no lease"))?;
        Ok(Lease { id: lease.id })
    }

    /// `Leases.Delete`: what only the lease held becomes garbage (collected at once with
    /// `sync`).
    pub async fn delete_lease(&self, lease: &Lease, sync: bool) -> Result<(), Error> {
        let request = svc::leases::v1::DeleteRequest {
            id: lease.id.clone(),
            sync,
        };
        self.unary(
            "Leases.Delete",
            &lease.id,
            self.leases_api().delete(request),
        )
        .await
    }
}

fn header_value(text: &str) -> AsciiMetadataValue {
    // Identifiers are ASCII letters, digits and `._-` (checked by `Namespace::new`).
    AsciiMetadataValue::try_from(text).expect("a containerd identifier is a valid header value")
}

fn endpoint() -> Endpoint {
    // The URI is only the HTTP/2 `:authority`; the connector ignores it. containerd's own
    // clients send `localhost` too.
    Endpoint::from_static("http://localhost").connect_timeout(Duration::from_secs(5))
}

fn connector(
    socket: &Arc<Path>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    let socket = Arc::clone(socket);
    tower::service_fn(move |_: Uri| {
        let socket = Arc::clone(&socket);
        async move { Ok(TokioIo::new(UnixStream::connect(&*socket).await?)) }
    })
}

/// A protobuf timestamp as a time, if it is set and representable.
pub(crate) fn time(stamp: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let stamp = stamp?;
    if stamp.seconds <= 0 && stamp.nanos <= 0 {
        // containerd's zero time (Go's `time.Time{}` is year 1, sent as a large negative).
        return None;
    }
    let nanos = u32::try_from(stamp.nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(u64::try_from(stamp.seconds).ok()?, nanos))
}

/// `2025-01-31T12:00:00Z`: the form containerd's `gc.expire` label takes (Go's RFC 3339).
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Random bytes from the OS (lease ids, markers), as everywhere in torc.
pub(crate) fn random(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("the OS's random source");
}

/// The path as containerd and the shim get it: UTF-8 only.
pub(crate) fn path_text(call: &'static str, target: &str, path: &Path) -> Result<String, Error> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Request {
            call,
            target: target.to_string(),
            reason: format!("{} is not UTF-8", path.display()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_gos() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661)),
            "2000-02-29T01:01:01Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31T23:59:59Z"
        );
    }

    #[test]
    fn versions() {
        let v = |s: &str| Version {
            version: s.into(),
            revision: String::new(),
        };
        assert_eq!(v("1.6.20~ds1").major_minor(), Some((1, 6)));
        assert_eq!(v("v2.0.0").major_minor(), Some((2, 0)));
        assert_eq!(v("dev").major_minor(), None);
    }
}
