//! The controller: the rack, the credentials and the store behind one lock, and the write path
//! that keeps them in step.
//!
//! Every change goes through [`Controller::write`] (or `write_keys`): the closure changes the
//! `Rack` (and the `Keys`), the changes are drained and committed to the store (a
//! `Box<dyn Store>`, fenced with the epoch the store gave at start) as one durable batch, and only then are the agents, frameworks and the DNS role that the change
//! concerns woken. Reads take the same lock.
//!
//! What it is not: the HTTP layer (`crate::http`) and the health prober (`crate::health`) use it;
//! it uses neither. `Controller::serve` (in the crate root) wires them together.
//!
//! Invariants:
//! - The lock is never held across an await point.
//! - A change is acknowledged (its closure's result returned) only after its commit.
//! - What is served is durable. When a commit fails, the store is poisoned (every later change
//!   answers 503; but a commit refused for want of space fails alone, `StoreError::NoSpace`,
//!   answered 507, and changes are taken again once space returns, without a restart) and the
//!   rack and credentials go back to the store's last committed state
//!   (a store's batches are atomic: a failed one left nothing), reloaded as at a start, with
//!   a new frameworks' event epoch so frameworks resynchronise (the store's epoch, which
//!   numbers the published documents and fences the commits, stays: same controller life). Reads keep working on that state. Should even
//!   the reload fail, the in-memory state is kept and an error is logged (reads then show the
//!   failed change; the controller must be restarted).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::now_millis;
use tokio::sync::watch;
use torc_types::{NodeName, TaskId, UnixMillis};

use crate::auth;
use crate::kv::KvClients;
use crate::leadership::{Event, LeaderInfo};
use crate::published::Published;
use crate::rack::{HealthCheck, Rack, RackError};
use crate::seat::{NotActing, Seat};
use crate::sessions::Access;
use crate::settings::RackSettings;
use crate::store::{Epoch, RedbStore, Store, StoreError};

/// How the controller authenticates its callers.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// No credentials: anyone who reaches the API may do anything. Logged as a warning at
    /// start and shown by `torc status`.
    Insecure,
    /// Tokens (and, under TLS, agents' certificates).
    Tokens {
        /// An admin token: adopted when the file exists, else minted and written there (0600,
        /// its directory 0700).
        admin_token_file: Option<PathBuf>,
        /// The join token agents register with, the same way.
        join_token_file: Option<PathBuf>,
    },
}

/// How to run a controller beyond its rack config.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub auth: AuthMode,
    /// The rack CA's directory (`ca.pem`, `ca.key`): serve TLS with a certificate from it,
    /// check agents' certificates, issue nodes' and tasks' certificates. `None`: plain HTTP.
    pub ca_dir: Option<PathBuf>,
    /// DNS names a browser may reach the web UI by, beyond IP literals and the rack's names.
    pub ui_hosts: Vec<String>,
}

impl ControllerOptions {
    /// No credentials, plain HTTP: for tests of the rack's rules.
    pub fn insecure() -> ControllerOptions {
        ControllerOptions {
            auth: AuthMode::Insecure,
            ca_dir: None,
            ui_hosts: Vec::new(),
        }
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the state store does not match the rack config: {0}")]
    State(#[source] StoreError),
    #[error(
        "no credentials: start the controller with --admin-token-file FILE (a fresh admin token is written there if it does not exist), or with --insecure to let anyone who reaches it do anything"
    )]
    NoCredentials,
    #[error("{path}: {message}")]
    TokenFile { path: String, message: String },
    #[error(transparent)]
    Tls(#[from] torc_tls::TlsError),
    #[error(transparent)]
    Prefix(#[from] crate::store::layout::LayoutError),
    #[error(transparent)]
    Seal(#[from] crate::store::seal::SealError),
    #[error("the controller's etcd {what}")]
    EtcdClient {
        what: &'static str,
        #[source]
        source: torc_kv_client::ClientError,
    },
    #[error(transparent)]
    Mirror(#[from] crate::store::MirrorError),
}

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Rejected(#[from] RackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This controller may not act now (a standby, or a leader whose lease is not renewed).
    #[error("{}", .0.why)]
    NotActing(NotActing),
}

struct Inner {
    rack: Rack,
    keys: auth::Keys,
    store: Box<dyn Store>,
    /// The epoch the rack was built for: every commit is fenced with it, and a change is made
    /// only while the seat acts under this same epoch (after a takeover, not before the rack
    /// is rebuilt for it).
    epoch: Epoch,
    /// A failed commit's reload from the store failed too: the rack in memory may hold the
    /// refused change, so no change is taken until a reload succeeds (tried again first).
    reload_pending: bool,
}

impl Inner {
    /// After a failed commit (`failed`): the rack and credentials as the store last committed
    /// them.
    fn back_to_durable(&mut self, failed: &StoreError) {
        if matches!(failed, StoreError::NoSpace { .. }) {
            tracing::warn!(
                error = %failed,
                "a change was refused for want of space; the rack goes back to its last durable \
                 state, and changes are taken again once space returns"
            );
        } else {
            tracing::error!(
                error = %failed,
                "a change could not be made durable; the rack goes back to its last durable state \
                 and refuses changes until the controller is restarted"
            );
        }
        if let Err(e) = self.reload() {
            tracing::error!(
                error = %e,
                "cannot reload the last durable state; no change is taken until it can be"
            );
            self.reload_pending = true;
        }
    }

    /// The rack and credentials from what the store holds.
    fn reload(&mut self) -> Result<(), StoreError> {
        let settings = self.rack.settings().clone();
        let mut loaded = self.store.load()?;
        let mut keys = auth::Keys::load(&mut loaded)?;
        let mut rack = Rack::new(settings, loaded, now_millis())?;
        // What the reload derived (tasks of removed nodes lost) is redone at the next start;
        // the poisoned store could not take it anyway.
        let _ = rack.take_changes();
        let _ = keys.take_writes();
        keys.keep_controller_token(&mut self.keys);
        self.rack = rack;
        self.keys = keys;
        self.reload_pending = false;
        Ok(())
    }
}

/// The controller, shared by the API handlers and the background reconciler.
pub struct Controller {
    inner: Mutex<Inner>,
    /// Whether this controller may act (always, for a sole controller on its local store).
    pub(crate) seat: Seat,
    /// This controller's name among the rack's controllers (logs, proxied requests).
    name: String,
    /// Where clients reach this controller (`--advertise-url`), when given.
    url: Option<String>,
    /// What the status says of the store and the other controllers (kept current by the role
    /// driver of a controller of several).
    backstage: watch::Sender<Backstage>,
    /// The epoch the rack was built for (`Inner::epoch`, readable without the rack's lock).
    built: std::sync::atomic::AtomicU64,
    /// How callers authenticate (its token files are adopted again at each takeover).
    auth: AuthMode,
    /// Per node: the generation of its desired set, to wake long-polling agents.
    watchers: Mutex<HashMap<NodeName, watch::Sender<u64>>>,
    pub(crate) access: Access,
    /// The TLS configuration the API is served with (`None`: plain HTTP).
    pub(crate) tls: Option<Arc<torc_tls::ServerConfig>>,
    /// The rack CA, which signs nodes' and tasks' certificates.
    pub(crate) ca: Option<torc_tls::pki::Ca>,
    /// Certificates issued to live tasks, so that every desired-set poll hands out the same.
    task_certs: Mutex<HashMap<TaskId, torc_tls::pki::Issued>>,
    /// The controller's own token, for its calls to agents.
    pub(crate) own_token: String,
    /// The state browser's client of the rack's state store.
    pub(crate) kv: KvClients,
    pub(crate) http: reqwest::Client,
    /// The frameworks' update position, to wake frameworks' long polls.
    updates: watch::Sender<u64>,
    /// The rack's names for the DNS role's long poll (numbered on the way out).
    pub(crate) names: Published<torc_api::dns::DnsSnapshot>,
    /// The routes the switch should hold, for the network agent's long poll.
    pub(crate) routes: Published<SwitchRoutes>,
    /// What the network agent last reported of the switch, and when.
    network_report: Mutex<Option<(torc_api::NetworkReport, UnixMillis)>>,
    /// Nodes whose reports arrived since the reconciler's last step, and when the latest did:
    /// noted before the report waits for the rack's lock, so that a report queued behind other
    /// changes still counts as word from its node (`Rack::heard`). At most [`MAX_ARRIVALS`].
    arrivals: Mutex<HashMap<NodeName, UnixMillis>>,
    /// The controller's own counters, for `/metrics`.
    pub(crate) stats: crate::stats::Stats,
    /// The pending and firing alerts (`crate::alerts`), while this controller acts.
    pub(crate) alerts: Mutex<crate::alerts::Alerts>,
    /// The rack config it runs with and its file (`crate::apply`).
    pub(crate) applied: Mutex<Option<crate::settings::AppliedConfig>>,
}

/// Most nodes whose reports' arrivals one reconciler step takes: far more than a rack holds, so
/// that callers naming nodes that do not exist cannot grow the map without bound.
const MAX_ARRIVALS: usize = 4096;

/// What the status says of the store and the other controllers.
#[derive(Debug, Clone)]
pub(crate) struct Backstage {
    /// The controllers campaigning, in election order.
    pub controllers: Vec<torc_api::controller::ControllerRef>,
    pub store: torc_api::controller::StoreView,
}

/// What the network agent is told: where the switch is and the routes it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwitchRoutes {
    pub switch: Option<String>,
    pub routes: Vec<torc_api::RackRoute>,
}

impl SwitchRoutes {
    fn of(rack: &Rack) -> SwitchRoutes {
        SwitchRoutes {
            switch: rack.settings().switch.clone(),
            routes: rack.rack_routes(),
        }
    }
}

impl Controller {
    /// Opens (or creates) the controller's state in `data_dir`.
    pub fn open(
        settings: RackSettings,
        data_dir: &Path,
        options: ControllerOptions,
    ) -> Result<Arc<Controller>, StartError> {
        torc_tls::files::own_private_dir(data_dir).map_err(|e| StartError::DataDir {
            path: data_dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let path = data_dir.join("controller.redb");
        let store = RedbStore::open(&path)?;
        let ctl = Controller::with_store(settings, Box::new(store), options)?;
        ctl.set_backstage(|b| b.store.location = path.display().to_string());
        Ok(ctl)
    }

    /// Starts the controller on `store`, opened (its epoch started) by the caller: the sole
    /// controller of its rack, acting under the store's epoch.
    pub(crate) fn with_store(
        settings: RackSettings,
        store: Box<dyn Store>,
        options: ControllerOptions,
    ) -> Result<Arc<Controller>, StartError> {
        let epoch = store.epoch();
        let loaded = store.load()?;
        let (rack, keys, writes) = start_state(settings, loaded, &options.auth, now_millis())?;
        // Whatever reconciling the load did (lost tasks of removed nodes) is persisted now.
        store.commit(epoch, &writes)?;
        Controller::build(rack, keys, store, epoch, Seat::Sole(epoch), options, None)
    }

    /// Starts a controller of several as a standby: its rack is built from `loaded` (its
    /// mirror of the store) for reads, nothing is written, and it acts only after
    /// [`Controller::take_over`]. It needs an admin to be known: stored, or in its token file
    /// (adopted when it takes over).
    pub(crate) fn standby(
        settings: RackSettings,
        store: Box<dyn Store>,
        options: ControllerOptions,
        mut loaded: crate::store::Loaded,
        seat: Seat,
        identity: Option<(String, String)>,
    ) -> Result<Arc<Controller>, StartError> {
        let now = now_millis();
        let keys = auth::Keys::load(&mut loaded)?;
        if let AuthMode::Tokens {
            admin_token_file, ..
        } = &options.auth
            && !keys.has_admin(now)
            && !admin_token_file.as_ref().is_some_and(|p| p.exists())
        {
            return Err(StartError::NoCredentials);
        }
        let mut rack = Rack::new(settings, loaded, now).map_err(StartError::State)?;
        // What the load derived is the leader's to write.
        let _ = rack.take_changes();
        Controller::build(rack, keys, store, Epoch(0), seat, options, identity)
    }

    /// Takes over as the leader under `epoch`, from `loaded` (the store as of the win): a
    /// controller start, on a running controller. Its first fenced commit carries what the
    /// start derived; the long polls' documents start again under `epoch`, and every waiting
    /// reader is answered. Nodes and frameworks get a full timeout from now, so nobody is
    /// declared lost by a failover.
    pub(crate) fn take_over(
        &self,
        epoch: Epoch,
        loaded: crate::store::Loaded,
    ) -> Result<(), StartError> {
        let settings = self.read(|r| r.settings().clone());
        let (rack, mut keys, writes) = start_state(settings, loaded, &self.auth, now_millis())?;
        let (names, routes, position) = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.store.commit(epoch, &writes)?;
            keys.keep_controller_token(&mut inner.keys);
            inner.rack = rack;
            inner.keys = keys;
            inner.epoch = epoch;
            self.built
                .store(epoch.0, std::sync::atomic::Ordering::Release);
            (
                inner.rack.dns_snapshot(),
                SwitchRoutes::of(&inner.rack),
                inner.rack.update_position().1,
            )
        };
        self.names.restart(epoch, names);
        self.routes.restart(epoch, routes);
        self.updates.send_replace(position);
        // Agents waiting on this controller hold a desired set of the old life: answer them.
        let watched: Vec<NodeName> = {
            let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
            watchers.keys().cloned().collect()
        };
        let generations: Vec<(NodeName, u64)> = self.read(|r| {
            (watched.into_iter())
                .filter_map(|node| Some((node.clone(), r.desired_generation(&node)?)))
                .collect()
        });
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        for (node, generation) in generations {
            if let Some(tx) = watchers.get(&node) {
                tx.send_replace(generation);
            }
        }
        tracing::info!(%epoch, "this controller leads and acts");
        Ok(())
    }

    /// A controller that does not act rebuilds its copy of the rack from `loaded` (its
    /// mirror), for reads marked stale. An acting one ignores it: its rack is the truth.
    pub(crate) fn refresh(&self, mut loaded: crate::store::Loaded) -> Result<(), StartError> {
        if self.acting().is_ok() {
            return Ok(());
        }
        let settings = self.read(|r| r.settings().clone());
        let now = now_millis();
        let mut keys = auth::Keys::load(&mut loaded)?;
        let mut rack = Rack::new(settings, loaded, now).map_err(StartError::State)?;
        let _ = rack.take_changes();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.acting().is_ok() {
            // It took over meanwhile.
            return Ok(());
        }
        keys.keep_controller_token(&mut inner.keys);
        inner.rack = rack;
        inner.keys = keys;
        Ok(())
    }

    fn build(
        rack: Rack,
        mut keys: auth::Keys,
        store: Box<dyn Store>,
        epoch: Epoch,
        seat: Seat,
        options: ControllerOptions,
        identity: Option<(String, String)>,
    ) -> Result<Arc<Controller>, StartError> {
        let insecure = matches!(options.auth, AuthMode::Insecure);
        let own_token = keys.controller_token();
        let (ca, tls, client_tls) = match &options.ca_dir {
            Some(dir) => {
                let ca = torc_tls::pki::Ca::load(dir)?;
                let roots = torc_tls::parse_certs(ca.cert_pem(), "the rack CA")?;
                let issued = ca.issue(&controller_cert_request(rack.settings()))?;
                let identity = torc_tls::Identity::from_pem(
                    &issued.cert_pem,
                    issued.key_pem.as_deref().unwrap_or_default(),
                    "the controller's certificate",
                )?;
                let server = torc_tls::server_config(
                    identity.clone(),
                    torc_tls::ClientAuth::Optional(roots.clone()),
                )?;
                let client = torc_tls::client_config(&roots, Some(identity))?;
                (Some(ca), Some(Arc::new(server)), Some(client))
            }
            None => (None, None, None),
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .no_proxy();
        if let Some(config) = client_tls {
            http = http.tls_backend_preconfigured(config);
        }
        let http = http.build().map_err(|e| {
            StartError::Tls(torc_tls::TlsError::Pem {
                path: "the controller's HTTP client".into(),
                message: e.to_string(),
            })
        })?;
        let mut hosts = vec!["localhost".to_string()];
        hosts.extend(rack.settings().own_names());
        hosts.extend(options.ui_hosts.iter().map(|h| h.to_ascii_lowercase()));
        let (updates, _) = watch::channel(rack.update_position().1);
        let names = Published::new(epoch, rack.dns_snapshot());
        let routes = Published::new(epoch, SwitchRoutes::of(&rack));
        let (name, url) = match identity {
            Some((name, url)) => (name, Some(url)),
            None => (
                rack.settings()
                    .nodes
                    .iter()
                    .find(|n| n.node_type == torc_types::NodeType::Master)
                    .map_or_else(|| "controller".to_string(), |n| n.name.to_string()),
                None,
            ),
        };
        let backstage = watch::channel(Backstage {
            controllers: Vec::new(),
            store: torc_api::controller::StoreView {
                kind: "redb".into(),
                location: String::new(),
                revision: None,
                endpoints: Vec::new(),
            },
        })
        .0;
        Ok(Arc::new(Controller {
            seat,
            name,
            url,
            backstage,
            built: std::sync::atomic::AtomicU64::new(epoch.0),
            auth: options.auth,
            routes,
            network_report: Mutex::new(None),
            arrivals: Mutex::new(HashMap::new()),
            stats: crate::stats::Stats::default(),
            alerts: Mutex::new(crate::alerts::Alerts::default()),
            applied: Mutex::new(None),
            names,
            inner: Mutex::new(Inner {
                rack,
                keys,
                store,
                epoch,
                reload_pending: false,
            }),
            watchers: Mutex::new(HashMap::new()),
            access: Access::new(insecure, hosts),
            tls,
            ca,
            task_certs: Mutex::new(HashMap::new()),
            own_token,
            kv: KvClients::default(),
            http,
            updates,
        }))
    }

    /// The epoch to act under now, or why this controller may not act: its seat must act, and
    /// under the epoch its rack was built for.
    pub(crate) fn acting(&self) -> Result<Epoch, NotActing> {
        let epoch = self.seat.acting()?;
        // Not the rack's lock: requests that do not touch the rack must not wait on a commit.
        let built = Epoch(self.built.load(std::sync::atomic::Ordering::Acquire));
        if built == epoch {
            Ok(epoch)
        } else {
            Err(loading(epoch))
        }
    }

    /// This controller's name among the rack's controllers.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Where clients reach this controller, when it was told (`--advertise-url`).
    pub(crate) fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The store and the other controllers, as last seen.
    pub(crate) fn backstage(&self) -> Backstage {
        self.backstage.borrow().clone()
    }

    /// Updates what the status says of the store and the other controllers.
    pub(crate) fn set_backstage(&self, f: impl FnOnce(&mut Backstage)) {
        self.backstage.send_modify(f);
    }

    /// Who holds `token`.
    pub(crate) fn authenticate(&self, token: &str) -> Result<auth::Who, auth::AuthError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.keys.authenticate(token, now_millis(), |task| {
            inner.rack.task_token_access(task)
        })
    }

    /// Whether an identity found earlier (a UI session's) still holds: its credential is not
    /// revoked, its task still lives.
    pub(crate) fn still_valid(&self, who: &auth::Who) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match who {
            auth::Who::Credential { id, .. } => inner.keys.knows(id, now_millis()),
            auth::Who::Task { task, .. } => inner.rack.task_token_access(task).is_some(),
            auth::Who::Controller | auth::Who::Delegate(_) | auth::Who::Insecure => true,
        }
    }

    /// The user and password the controller logs in to a rack service with (`access.etcd`,
    /// `access.influxdb` in the rack config), the password from its rack secret.
    pub(crate) fn login(
        &self,
        which: impl FnOnce(&RackSettings) -> Option<(String, torc_types::SecretName)>,
    ) -> (Option<String>, Option<String>) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match which(inner.rack.settings()) {
            Some((user, secret)) => (
                Some(user),
                inner.keys.secret(secret.as_str()).map(str::to_string),
            ),
            None => (None, None),
        }
    }

    /// How a node reaches the registry `image` comes from, when the rack config names it
    /// (`containers.registries`): its login, the password read from its rack secret, and
    /// whether it is plain HTTP. A login whose secret is not set yet is left out (the pull
    /// goes anonymously, and the registry's refusal names the missing credential).
    pub(crate) fn registry_auth(
        &self,
        image: &torc_types::ImageRef,
    ) -> Option<torc_api::images::RegistryAuth> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let registry = (inner.rack.settings().containers).registry(image.registry())?;
        let login = registry
            .user
            .as_ref()
            .zip(registry.password_secret.as_ref());
        let (user, password) = match login {
            Some((user, secret)) => match inner.keys.secret(secret.as_str()) {
                Some(password) => (user.clone(), password.to_string()),
                None => {
                    tracing::warn!(
                        registry = %registry.host,
                        %secret,
                        "the registry's password secret is not set (`torc secret set`): pulling without a login"
                    );
                    (String::new(), String::new())
                }
            },
            None => (String::new(), String::new()),
        };
        Some(torc_api::images::RegistryAuth {
            host: registry.host.to_string(),
            user,
            password,
            insecure: registry.insecure,
        })
    }

    /// The DNS name a node's certificate carries: `<node>.<domain>`.
    pub(crate) fn node_cert_name(&self, node: &str) -> String {
        let domain = self.read(|r| r.settings().domain.clone());
        format!("{node}.{domain}")
    }

    /// Changes the credentials (and maybe the rack) and persists both in one commit.
    pub(crate) fn write_keys<R>(
        &self,
        f: impl FnOnce(&mut Rack, &mut auth::Keys) -> Result<R, RackError>,
    ) -> Result<R, ChangeError> {
        self.write_inner(f)
    }

    /// `write_keys` on the blocking pool.
    pub(crate) async fn change_keys<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Rack, &mut auth::Keys) -> Result<R, RackError> + Send + 'static,
    ) -> Result<R, ChangeError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.write_keys(f))
            .await
            .expect("rack changes do not panic")
    }

    /// The credential files of a task placed on a node (see `TaskCredentials`). Its
    /// certificate names `ip` and, for a task on its node's network, the node's `endpoint`
    /// (where the host reaches the node's services through a forwarder).
    pub(crate) fn task_files(
        &self,
        task: &torc_api::DesiredTask,
        ip: Option<IpAddr>,
        endpoint: Option<IpAddr>,
    ) -> std::collections::BTreeMap<String, String> {
        let mut files = std::collections::BTreeMap::new();
        let wants = &task.spec.credentials;
        if wants.is_empty() {
            return files;
        }
        {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if wants.api_access.is_some()
                && let Some(token) = inner.keys.task_token(&task.id)
            {
                files.insert("token".to_string(), token);
            }
            for name in &wants.secrets {
                if let Some(value) = inner.keys.secret(name.as_str()) {
                    files.insert(name.to_string(), value.to_string());
                }
            }
        }
        if wants.tls
            && let Some(ca) = &self.ca
        {
            let service_domain = self.read(|r| r.settings().service_domain.clone());
            let mut certs = self.task_certs.lock().unwrap_or_else(|e| e.into_inner());
            let issued = match certs.get(&task.id) {
                Some(i) => Some(i.clone()),
                None => {
                    let name = format!("{}.{service_domain}", task.spec.name);
                    if name == torc_tls::CONTROLLER_NAME {
                        tracing::error!(task = %task.id, "refusing a task certificate that would name the controller");
                        return files;
                    }
                    let req = torc_tls::pki::CertRequest {
                        common_name: format!("task {}", task.id),
                        dns_names: vec![name],
                        ips: ip
                            .into_iter()
                            .chain(
                                endpoint
                                    .filter(|_| task.spec.network == torc_types::TaskNetwork::Node),
                            )
                            .collect(),
                        validity: TASK_CERT_VALIDITY,
                    };
                    match ca.issue(&req) {
                        Ok(i) => {
                            certs.insert(task.id.clone(), i.clone());
                            Some(i)
                        }
                        Err(e) => {
                            tracing::error!(task = %task.id, error = %e, "cannot issue the task's certificate");
                            None
                        }
                    }
                }
            };
            if let Some(i) = issued {
                files.insert("tls.crt".into(), i.cert_pem);
                files.insert("tls.key".into(), i.key_pem.unwrap_or_default());
                files.insert("ca.crt".into(), ca.cert_pem().to_string());
            }
        }
        files
    }

    /// Forgets certificates of tasks that ended.
    fn prune_task_certs(&self) {
        let mut certs = self.task_certs.lock().unwrap_or_else(|e| e.into_inner());
        if certs.is_empty() {
            return;
        }
        let live: std::collections::HashSet<TaskId> = self.read(|r| {
            certs
                .keys()
                .filter(|id| {
                    r.task_token_access(id).is_some()
                        || r.task(id).is_ok_and(|t| !t.state.is_terminal())
                })
                .cloned()
                .collect()
        });
        certs.retain(|id, _| live.contains(id));
    }

    /// Reads the rack.
    pub fn read<R>(&self, f: impl FnOnce(&Rack) -> R) -> R {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&inner.rack)
    }

    /// The epoch this controller acts under: what a registration answers as the agent's floor.
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.built.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Reads the rack, with the epoch this controller acts under in the same look: what numbers
    /// the documents it serves (an agent's desired state, its registration's floor).
    pub(crate) fn read_numbered<R>(&self, f: impl FnOnce(&Rack) -> R) -> (Epoch, R) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.epoch, f(&inner.rack))
    }

    /// What the store holds, as of one commit: read under the rack's lock, so no change is half
    /// in it (a backup, `backup`). Only while acting: the copy of a controller that does not
    /// act may be stale. Blocking (a store read).
    pub(crate) fn durable_state(&self) -> Result<crate::store::Loaded, ChangeError> {
        let epoch = self.seat.acting().map_err(ChangeError::NotActing)?;
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.epoch != epoch {
            return Err(ChangeError::NotActing(loading(epoch)));
        }
        Ok(inner.store.load()?)
    }

    /// Changes the rack, persists the change, then wakes the agents it concerns. Blocking (it
    /// waits for fsync): async callers go through `change`.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Rack) -> Result<R, RackError>,
    ) -> Result<R, ChangeError> {
        self.write_inner(|rack, _| f(rack))
    }

    fn write_inner<R>(
        &self,
        f: impl FnOnce(&mut Rack, &mut auth::Keys) -> Result<R, RackError>,
    ) -> Result<R, ChangeError> {
        let epoch = self.seat.acting().map_err(ChangeError::NotActing)?;
        let (result, wake, event_seq, names) = {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let inner = &mut *guard;
            // Checked again under the lock: a takeover may be building the rack right now.
            if inner.epoch != epoch {
                return Err(ChangeError::NotActing(loading(epoch)));
            }
            // A poisoned store takes no more changes: refuse before touching the rack, which
            // was put back to the durable state once, when the store failed.
            inner.store.writable()?;
            if inner.reload_pending {
                inner.reload()?;
            }
            let result = f(&mut inner.rack, &mut inner.keys);
            let mut changes = inner.rack.take_changes();
            changes.writes.extend(inner.keys.take_writes());
            let began = std::time::Instant::now();
            let committed = inner.store.commit(epoch, &changes.writes);
            (self.stats).committed(changes.writes.len(), began.elapsed(), committed.is_ok());
            if let Err(e) = committed {
                // The leadership learns what the store said before the rack is reloaded.
                match &e {
                    StoreError::NotLeader {
                        current, leader, ..
                    } => self.seat.on(Event::FenceFailed {
                        epoch,
                        leader: current.zip(leader.as_deref()).map(|(epoch, value)| {
                            LeaderInfo::from_campaign(value.as_bytes(), epoch)
                        }),
                    }),
                    StoreError::Unknown { .. } => self.seat.on(Event::CommitUnknown {
                        epoch,
                        why: e.to_string(),
                    }),
                    _ => {}
                }
                inner.back_to_durable(&e);
                return Err(e.into());
            }
            let names = changes
                .names_may_change
                .then(|| (inner.rack.dns_snapshot(), SwitchRoutes::of(&inner.rack)));
            (result?, changes.wake, inner.rack.update_position().1, names)
        };
        if let Some((names, routes)) = names {
            self.names.publish(names);
            self.routes.publish(routes);
        }
        self.updates.send_if_modified(|seq| {
            let changed = *seq != event_seq;
            *seq = event_seq;
            changed
        });
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        for (node, generation) in wake {
            if let Some(tx) = watchers.get(&node) {
                tx.send_replace(generation);
            }
        }
        Ok(result)
    }

    /// `write` on the blocking pool, for async handlers.
    pub async fn change<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Rack) -> Result<R, RackError> + Send + 'static,
    ) -> Result<R, ChangeError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.write(f))
            .await
            .expect("rack changes do not panic")
    }

    /// The generation of a node's desired set, to wait on; `None` for an unknown node.
    pub(crate) fn subscribe(&self, node: &NodeName) -> Option<watch::Receiver<u64>> {
        let generation = self.read(|r| r.desired_generation(node))?;
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let tx = watchers
            .entry(node.clone())
            .or_insert_with(|| watch::channel(generation).0);
        Some(tx.subscribe())
    }

    /// Keeps the network agent's report of the switch (in memory: the switch is the truth);
    /// answers when it was received.
    /// Keeps `report` as the network agent's last, and answers when, with the one it replaced
    /// (in one step: two reports at once each see the other's, never the same one twice).
    pub(crate) fn set_network_report(
        &self,
        report: torc_api::NetworkReport,
    ) -> (UnixMillis, Option<torc_api::NetworkReport>) {
        let now = now_millis();
        let previous = self
            .network_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((report, now));
        (now, previous.map(|(report, _)| report))
    }

    pub(crate) fn network_report(&self) -> Option<(torc_api::NetworkReport, UnixMillis)> {
        self.network_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The frameworks' update position, to wait on.
    pub(crate) fn subscribe_updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// The health checks due now, each marked started (so it is not started twice).
    pub(crate) fn start_due_health_checks(&self, now: torc_types::UnixMillis) -> Vec<HealthCheck> {
        // Only the acting leader probes: a standby's copy of the rack must not decide health.
        if self.acting().is_err() {
            return Vec::new();
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let due = inner.rack.due_health_checks(now);
        for c in &due {
            inner.rack.health_check_started(&c.service, now);
        }
        due
    }

    /// Reads the credentials.
    pub(crate) fn keys<R>(&self, f: impl FnOnce(&auth::Keys) -> R) -> R {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&inner.keys)
    }

    /// A node's report arrived: noted before it waits for the rack's lock (see `arrivals`).
    pub(crate) fn report_arrived(&self, node: &NodeName) {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        if arrivals.len() < MAX_ARRIVALS || arrivals.contains_key(node) {
            arrivals.insert(node.clone(), now_millis());
        }
    }

    /// Background reconciler: expires silent nodes and frameworks, restarts services, retries
    /// pending tasks.
    pub(crate) async fn reconcile(self: Arc<Self>) {
        let period = self
            .read(|r| r.heartbeat_interval())
            .min(Duration::from_millis(500));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the last step ended, on the boot clock (which counts a SIGSTOP and a suspended
        // host, as `clock::now_millis` does).
        let mut last_step = crate::seat::boot_now();
        loop {
            interval.tick().await;
            // Time this loop did not run beyond its period since its last step ended: past a
            // period, the controller itself stalled, and nobody's silence over it counts
            // against them (`Rack::excuse_stall`). A step's own wait for the rack's lock is
            // not counted: reports that waited with it count from their arrival (`arrivals`).
            let stalled = crate::seat::boot_now()
                .saturating_sub(last_step)
                .saturating_sub(period);
            // A controller that does not act takes no step (its write would be refused anyway).
            if self.acting().is_err() {
                last_step = crate::seat::boot_now();
                continue;
            }
            let excused = (stalled > period).then(|| {
                tracing::warn!(
                    stalled_ms = stalled.as_millis() as u64,
                    "this controller did not run for a while (frozen or starved); nodes and \
                     frameworks get that time back before their timeouts are checked"
                );
                stalled.as_millis() as u64
            });
            let this = Arc::clone(&self);
            if let Err(e) = self
                .change_keys(move |rack, keys| {
                    let now = now_millis();
                    if let Some(ms) = excused {
                        rack.excuse_stall(ms, now);
                    }
                    // Taken under the rack's lock: a report that arrived while this step
                    // waited for it counts too.
                    let arrivals = std::mem::take(
                        &mut *this.arrivals.lock().unwrap_or_else(|e| e.into_inner()),
                    );
                    rack.heard(arrivals);
                    rack.tick(now);
                    keys.expire(now);
                    Ok(())
                })
                .await
            {
                tracing::error!(error = %e, "reconcile step failed");
            }
            last_step = crate::seat::boot_now();
            self.prune_task_certs();
        }
    }
}

/// Why a leader whose rack is not yet built for its epoch does not act.
fn loading(epoch: Epoch) -> NotActing {
    NotActing {
        leader: None,
        why: format!("this controller leads (epoch {epoch}) but is still loading the rack's state"),
    }
}

/// How long a task's certificate is valid. Tasks get a fresh one at each start.
// TODO-correctness: a task that runs longer than this keeps an expired certificate; renew
// certificates of live tasks (the agent would rewrite the files and signal the task).
const TASK_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The rack and credentials a controller starts acting with, from what the store holds, and
/// the writes that starting derived (adopted token files, the task-token key, rack secrets,
/// tasks of nodes the config no longer lists).
fn start_state(
    settings: RackSettings,
    mut loaded: crate::store::Loaded,
    auth_mode: &AuthMode,
    now: UnixMillis,
) -> Result<(Rack, auth::Keys, Vec<crate::store::Write>), StartError> {
    let mut keys = auth::Keys::load(&mut loaded)?;
    if let AuthMode::Tokens {
        admin_token_file,
        join_token_file,
    } = auth_mode
    {
        if let Some(path) = admin_token_file {
            token_file(&mut keys, path, "admin", auth::Role::Admin, now)?;
        }
        if let Some(path) = join_token_file {
            token_file(&mut keys, path, "join", auth::Role::Join, now)?;
        }
        if !keys.has_admin(now) {
            return Err(StartError::NoCredentials);
        }
    } else {
        tracing::warn!(
            "--insecure: anyone who reaches this controller can run any command on any node of the rack"
        );
    }
    keys.ensure_task_key();
    let mut rack = Rack::new(settings, loaded, now).map_err(StartError::State)?;
    for name in rack.settings().secret_names() {
        keys.ensure_secret(name.as_str());
    }
    let mut changes = rack.take_changes();
    changes.writes.extend(keys.take_writes());
    Ok((rack, keys, changes.writes))
}

/// Adopts the token in `path`, or mints one and writes it there.
fn token_file(
    keys: &mut auth::Keys,
    path: &Path,
    what: &str,
    role: auth::Role,
    now: torc_types::UnixMillis,
) -> Result<(), StartError> {
    let shown = path.display().to_string();
    let err = |message: String| StartError::TokenFile {
        path: shown.clone(),
        message,
    };
    if path.exists() {
        let token = torc_tls::files::read_secret(path).map_err(|e| err(e.to_string()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| what.to_string());
        match keys.adopt(&token, &name, role, now) {
            Ok(true) => tracing::info!(path = %shown, "{what} token adopted"),
            Ok(false) => {}
            Err(auth::AuthError::Revoked) => {
                return Err(err(
                    "its token was revoked; remove the file to get a fresh one".to_string(),
                ));
            }
            Err(e) => {
                return Err(err(format!(
                    "{e}; a token of torc's shape (torc_<16 hex>_<64 hex>) that this controller does not know under another secret; remove the file to get a fresh token"
                )));
            }
        }
    } else {
        let minted = keys.mint(what, role, now, None);
        torc_tls::files::write_secret(path, &format!("{}\n", minted.token))
            .map_err(|e| err(e.to_string()))?;
        tracing::info!(path = %shown, "a new {what} token is in the file");
    }
    Ok(())
}

/// The controller's certificate: its address, its node's addresses (its endpoint included)
/// and names, loopback.
fn controller_cert_request(settings: &RackSettings) -> torc_tls::pki::CertRequest {
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    if let Some(addr) = settings.controller_addr
        && !addr.ip().is_unspecified()
    {
        ips.push(addr.ip());
    }
    for node in settings
        .nodes
        .iter()
        .filter(|n| n.node_type == torc_types::NodeType::Master)
    {
        ips.push(node.ip);
        ips.extend(node.external_ip);
        // Where the host reaches it through a forwarder (torc up on network namespaces).
        ips.extend(node.endpoint);
    }
    ips.sort();
    ips.dedup();
    let mut dns_names = settings.own_names();
    dns_names.push(torc_tls::CONTROLLER_NAME.to_string());
    torc_tls::pki::CertRequest {
        common_name: format!("controller of rack {}", settings.rack_name),
        dns_names,
        ips,
        validity: Duration::from_secs(365 * 24 * 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use torc_types::{FrameworkName, TaskSpec};

    fn launch(ctl: &Controller, name: &str) -> Result<TaskId, ChangeError> {
        ctl.write(|rack| {
            let spec = TaskSpec::new(name.parse().expect("a task name"), "sleep");
            let fw = FrameworkName::new(torc_types::BUILTIN_FRAMEWORK).expect("valid");
            rack.launch(spec, fw, now_millis())
        })
    }

    fn task_names(ctl: &Controller) -> Vec<String> {
        ctl.read(|r| {
            r.tasks(&torc_api::TaskFilter::default())
                .into_iter()
                .map(|t| t.spec.name.to_string())
                .collect()
        })
    }

    /// A change whose commit fails is not served: the rack goes back to what is on disk, and
    /// every later change is refused.
    fn settings() -> RackSettings {
        let config = torc_config::RackConfig::parse(
            "nodes:\n  - name: wedge\n    ip: 10.0.0.20\n    type: master\n",
            "rack.yaml",
        )
        .unwrap();
        RackSettings::from_config(&config, "rack.yaml")
    }

    /// The epochs of the documents published to long polls: (names, routes).
    fn published_epochs(ctl: &Controller) -> (u64, u64) {
        (ctl.names.current().epoch, ctl.routes.current().epoch)
    }

    #[test]
    fn a_change_that_fails_to_commit_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("controller.redb")).unwrap();
        let fail = store.failure_switch();
        let ctl =
            Controller::with_store(settings(), Box::new(store), ControllerOptions::insecure())
                .unwrap();
        launch(&ctl, "kept").unwrap();
        let epoch = ctl.read(|r| r.update_position().0);
        let published = published_epochs(&ctl);

        fail.store(true, std::sync::atomic::Ordering::Release);
        let err = launch(&ctl, "lost").unwrap_err();
        assert!(matches!(err, ChangeError::Store(_)), "{err}");
        assert_eq!(task_names(&ctl), ["kept"], "the failed change is served");
        assert_ne!(
            ctl.read(|r| r.update_position().0),
            epoch,
            "frameworks are told to resynchronise"
        );
        let reloaded_epoch = ctl.read(|r| r.update_position().0);
        let err = launch(&ctl, "later").unwrap_err();
        assert!(
            matches!(err, ChangeError::Store(StoreError::Poisoned)),
            "{err}"
        );
        assert_eq!(task_names(&ctl), ["kept"]);
        assert_eq!(
            ctl.read(|r| r.update_position().0),
            reloaded_epoch,
            "the rack is reloaded once, not at every refused change"
        );
        let err = ctl.write(|_| Ok(())).unwrap_err();
        assert!(
            matches!(err, ChangeError::Store(StoreError::Poisoned)),
            "a change that writes nothing is refused too: {err}"
        );
        assert_eq!(
            published_epochs(&ctl),
            published,
            "the same controller life: long-poll readers keep their numbers"
        );
    }

    /// A change whose commit the file system refuses for want of space (a real `ENOSPC`,
    /// reported by the redb file's backend) is refused alone: the rack goes back to the
    /// durable state, and the next change is taken without a restart.
    #[test]
    fn a_change_refused_for_want_of_space_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("controller.redb")).unwrap();
        let inject = store.injector();
        let ctl =
            Controller::with_store(settings(), Box::new(store), ControllerOptions::insecure())
                .unwrap();
        launch(&ctl, "kept").unwrap();
        *inject.lock().unwrap() = Some(crate::store::Injected::NoSpace);
        let err = launch(&ctl, "refused").unwrap_err();
        assert!(
            matches!(err, ChangeError::Store(StoreError::NoSpace { .. })),
            "{err}"
        );
        assert_eq!(task_names(&ctl), ["kept"], "the refused change is served");
        launch(&ctl, "later").unwrap();
        assert_eq!(task_names(&ctl), ["kept", "later"]);
    }

    /// A controller of several starts as a standby: it serves reads of its copy, refuses
    /// every change (naming why), and acts only once its seat leads *and* it took over, whose
    /// documents then carry the new epoch.
    #[test]
    fn a_standby_acts_only_after_it_took_over() {
        use crate::leadership::{Action, Event, Timing};
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("controller.redb")).unwrap();
        let epoch = store.epoch();
        let loaded = store.load().unwrap();
        let (elected, mut actions) = crate::seat::Elected::new(Timing::default());
        let ctl = Controller::standby(
            settings(),
            Box::new(store),
            ControllerOptions::insecure(),
            loaded,
            Seat::Elected(elected),
            None,
        )
        .unwrap();
        let err = launch(&ctl, "early").unwrap_err();
        assert!(
            matches!(&err, ChangeError::NotActing(n) if n.why.contains("standby")),
            "{err}"
        );
        ctl.seat.on(Event::Renewed {
            sent: crate::seat::boot_now(),
            ttl: Duration::from_secs(60),
        });
        ctl.seat.on(Event::Won { epoch });
        ctl.seat.on(Event::CaughtUp { epoch });
        assert_eq!(actions.try_recv().unwrap(), Action::CatchUp { epoch });
        assert_eq!(
            actions.try_recv().unwrap(),
            Action::Act { epoch, fresh: true }
        );
        // The seat leads, but the rack is not rebuilt for the epoch yet: still no change.
        let err = launch(&ctl, "between").unwrap_err();
        assert!(
            matches!(&err, ChangeError::NotActing(n) if n.why.contains("loading")),
            "{err}"
        );
        let loaded = ctl.inner.lock().unwrap().store.load().unwrap();
        ctl.take_over(epoch, loaded).unwrap();
        launch(&ctl, "web").unwrap();
        assert_eq!(task_names(&ctl), ["web"]);
        assert_eq!(published_epochs(&ctl), (epoch.0, epoch.0));
        // Losing the lease stops it at once.
        ctl.seat.on(Event::LeaseGone);
        assert!(matches!(
            launch(&ctl, "late"),
            Err(ChangeError::NotActing(_))
        ));
        assert!(matches!(actions.try_recv().unwrap(), Action::Stop { .. }));
        assert_eq!(actions.try_recv().unwrap(), Action::Campaign);
        // A standby's copy follows the store it mirrors (here: a record written meanwhile).
        let stored = ctl.inner.lock().unwrap().store.load().unwrap();
        ctl.refresh(stored).unwrap();
        assert_eq!(task_names(&ctl), ["web"]);
    }

    /// Each start of the controller on one data directory has a higher epoch than the last,
    /// read back from the store, and the documents it publishes carry it.
    #[test]
    fn the_epoch_is_durable_and_goes_up_at_each_start() {
        let dir = tempfile::tempdir().unwrap();
        let open =
            || Controller::open(settings(), dir.path(), ControllerOptions::insecure()).unwrap();
        let ctl = open();
        let (first, routes) = published_epochs(&ctl);
        assert_eq!(first, 1, "a new store's first epoch");
        assert_eq!(routes, first);
        assert_eq!(ctl.inner.lock().unwrap().epoch, Epoch(first));
        launch(&ctl, "web").unwrap();
        drop(ctl);
        let ctl = open();
        assert_eq!(published_epochs(&ctl), (first + 1, first + 1));
        let stored = ctl.inner.lock().unwrap().store.load().unwrap();
        assert_eq!(stored.meta("epoch"), Some(first + 1));
        assert_eq!(task_names(&ctl), ["web"]);
        drop(ctl);
        // A start that changes nothing still takes a new epoch.
        assert_eq!(published_epochs(&open()).0, first + 2);
    }
}
