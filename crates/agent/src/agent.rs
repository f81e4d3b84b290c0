//! The agent's task table and its loops: registration, reporting, desired-state reconciling.
//!
//! Desired states are ordered by `(epoch, generation)` (`torc_api::order::Floor`): a
//! registration sets the floor to the leader's epoch, a document of a lower epoch than the one
//! followed (a deposed leader's late answer) is ignored and said once, one of a higher epoch
//! (a new leader the client moved to) is applied at once. An ignored document changes nothing,
//! so it never stops a running task.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use torc_api::order::{Admit, Floor};
use torc_api::{DesiredState, DesiredTask, RegisterRequest, StatusReport, TaskReport};
use torc_client::{Client, ClientError};
use torc_types::{
    NodeName, PortRange, Resources, TaskId, TaskSpec, TaskState, UnixMillis, now_millis,
};

use crate::dispatch::Runtimes;
use crate::lease::Lease;
use crate::network::{TaskAddress, TaskNamespace, TaskNetworks};
use crate::runtime::{
    ExitRecord, Found, Handle, ProcessRuntime, RuntimeError, StartRequest, Started, TaskUser,
    stop_deadline,
};

/// How many retired task ids the agent remembers (never to start them again). An id older than
/// that is forgotten: it is not started again only because the controller never reuses an id
/// nor asks to launch a task that ended (terminal states are final).
const RETIRED_KEPT: usize = 10_000;
/// How often the agent asks its container engine whether it still runs containers.
const ENGINE_CHECK: Duration = Duration::from_secs(10);
/// How long one desired-state long poll may wait at the controller.
const LONG_POLL: Duration = Duration::from_secs(25);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: NodeName,
    pub ip: IpAddr,
    /// The controllers' root URLs, comma-separated (`--controller URL[,URL…]`): the agent
    /// follows the leader among them (`torc_client::Endpoints`).
    pub controller: String,
    /// Registers the node when it has no credential of its own yet (or its credential was
    /// revoked); the registration mints the node's credential, kept in the data dir.
    pub join_token: Option<String>,
    /// The rack CA's certificate (a PEM file). With it the agent trusts only controllers
    /// whose certificate chains to it, gets a certificate of its own at registration (for a
    /// key it generates and keeps in the data dir), presents it to the controller (mTLS) and
    /// serves its API over TLS with it.
    pub ca: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub node_type: Option<torc_types::NodeType>,
    pub node_function: Option<String>,
    pub resources: Resources,
    pub port_range: PortRange,
    pub attributes: BTreeMap<String, String>,
    /// Stop every task when the agent shuts down (a local rack); otherwise tasks keep running
    /// and the next agent re-adopts them.
    pub kill_tasks_on_exit: bool,
    /// The `torc` binary, used to start task shims.
    pub exe: PathBuf,
    /// The ids unprivileged tasks run as, one per task name (`None`: every task runs as the
    /// agent's own user, when the agent is not root and cannot switch).
    pub task_ids: Option<std::ops::RangeInclusive<u32>>,
    /// How often host and task metrics are sampled.
    pub metrics_interval: Duration,
    /// The container engine (`None`: containers are turned off on this node, `--containerd
    /// off`).
    pub containerd: Option<crate::container::ContainerdConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent's task table {path} is unreadable: {message}")]
    Table { path: String, message: String },
    #[error(transparent)]
    Credentials(#[from] torc_tls::TlsError),
    #[error(transparent)]
    Client(#[from] torc_client::SetupError),
}

/// How long the agent trusts the controller's word on a caller's token.
const REVIEW_TTL: Duration = Duration::from_secs(10);
/// How long a refusal is remembered (a caller retrying a bad token costs the controller little).
const REFUSAL_TTL: Duration = Duration::from_secs(2);
/// Most answers remembered; past it the cache starts over.
const REVIEWS_KEPT: usize = 1024;

/// The node's credentials as the agent holds them.
struct Credentials {
    /// The node's own token (`None` until the first registration minted it).
    token: Option<String>,
    /// The rack CA's certificates, when the rack runs TLS.
    roots: Option<Vec<torc_tls::CertificateDer<'static>>>,
    /// The node's private key (PEM) and its public half (hex), under TLS.
    key: Option<(String, String)>,
    /// The node's certificate (PEM), once the controller issued one.
    cert: Option<String>,
}

/// One task as the agent knows it. Persisted in the data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LocalTask {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub ports: Vec<u16>,
    pub handle: Option<Handle>,
    /// Recorded before its shim is spawned and until its handle is known: the next agent asks
    /// the shim's lock whether it runs (see `Agent::adopt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starting: bool,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub kill_requested: bool,
    pub updated_at: UnixMillis,
    /// A `network: rack` task's own network (for display, and for the sweep of task veths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<TaskNet>,
}

/// A `network: rack` task's network as the agent made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskNet {
    /// The task's own address (`$IP`), from its node's task block.
    pub address: Ipv4Addr,
    /// The node's end of the task's veth, once it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veth: Option<String>,
}

impl LocalTask {
    /// A task of the desired state as first recorded: running, until said otherwise.
    fn new(d: &DesiredTask, now: UnixMillis) -> LocalTask {
        LocalTask {
            id: d.id.clone(),
            spec: d.spec.clone(),
            ports: d.ports.clone(),
            handle: None,
            starting: false,
            state: TaskState::Running,
            exit_code: None,
            message: None,
            kill_requested: false,
            updated_at: now,
            net: None,
        }
    }

    /// Settles a task recorded as starting that is not started after all, saying why.
    fn not_started(&mut self, state: TaskState, why: String) {
        self.starting = false;
        self.state = state;
        self.message = Some(why);
        self.updated_at = now_millis();
    }

    fn report(&self) -> TaskReport {
        TaskReport {
            id: self.id.clone(),
            state: self.state,
            exit_code: self.exit_code,
            message: self.message.clone(),
            at: self.updated_at,
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Table {
    tasks: BTreeMap<TaskId, LocalTask>,
    retired: VecDeque<TaskId>,
    /// The id each task name runs as on this node (unprivileged tasks), kept for good: a
    /// service's restarted instance owns its data directory again.
    #[serde(default)]
    task_ids: BTreeMap<torc_types::ServiceName, u32>,
    #[serde(skip)]
    retired_set: HashSet<TaskId>,
    /// Where the agent stands in the desired states since it registered.
    #[serde(skip)]
    desired: Floor,
}

impl Table {
    /// The id `name` runs as: its own from before, or the lowest free one of `range`.
    fn task_id(
        &mut self,
        name: &torc_types::ServiceName,
        range: &std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        if let Some(id) = self.task_ids.get(name) {
            return Some(*id);
        }
        let used: std::collections::BTreeSet<u32> = self.task_ids.values().copied().collect();
        let id = range.clone().find(|i| !used.contains(i))?;
        self.task_ids.insert(name.clone(), id);
        Some(id)
    }

    fn retire(&mut self, id: &TaskId) {
        if self.tasks.remove(id).is_some() && self.retired_set.insert(id.clone()) {
            self.retired.push_back(id.clone());
            while self.retired.len() > RETIRED_KEPT {
                if let Some(old) = self.retired.pop_front() {
                    self.retired_set.remove(&old);
                }
            }
        }
    }

    fn knows(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id) || self.retired_set.contains(id)
    }
}

pub struct Agent {
    pub(crate) cfg: AgentConfig,
    pub(crate) runtime: Runtimes,
    /// Task namespaces for `network: rack` tasks, or why this agent cannot make them.
    networks: TaskNetworks,
    client: std::sync::RwLock<Client>,
    creds: Mutex<Credentials>,
    /// What the agent's API presents under TLS: the node's certificate, once it has one.
    pub(crate) identity: Arc<torc_tls::ReloadableIdentity>,
    /// The controller's answers about callers' tokens (by SHA-256 of the token).
    reviews:
        Mutex<std::collections::HashMap<[u8; 32], (torc_api::ReviewResponse, std::time::Instant)>>,
    table: Mutex<Table>,
    table_path: PathBuf,
    /// Wakes the reporter after a transition.
    pub(crate) report_now: Notify,
    /// Ends the controller session (to register again) when the runtime's info changed.
    runtime_changed: Notify,
    /// Whether the controller surely counts the node active (see `lease`).
    lease: Mutex<Lease>,
    /// Wakes a desired-state follower waiting for the lease, once a report is acknowledged.
    lease_renewed: Notify,
    pub(crate) metrics: Mutex<crate::metrics::Sampler>,
    /// What the node keeps on its disk: the rack's rules from the last registration (`None`
    /// before the first).
    upkeep: std::sync::RwLock<Option<torc_api::Upkeep>>,
    /// Wakes the upkeep loop when a registration changed the rules.
    pub(crate) upkeep_changed: Notify,
    /// The data dir's file system, as the upkeep last measured it (sent with every report).
    pub(crate) disk: Mutex<Option<torc_api::DiskUsage>>,
    /// Set when shutdown begins: from then on no task is started (a desired state that arrives
    /// late must not start a task after the agent stopped them all).
    shutting_down: std::sync::atomic::AtomicBool,
    /// Tests: stop right after a task's shim is spawned, as an agent killed at that moment.
    #[cfg(test)]
    crash_after_spawn: std::sync::atomic::AtomicBool,
}

/// Aborts a spawned task when dropped (a plain `JoinHandle` detaches it instead).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Agent {
    /// Opens the agent's data dir, loads its task table and re-adopts what still runs.
    pub fn open(cfg: AgentConfig) -> Result<Arc<Agent>, StartError> {
        let dir_err = |source| StartError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        };
        torc_tls::files::own_private_dir(&cfg.data_dir)?;
        std::fs::create_dir_all(cfg.data_dir.join("sandboxes")).map_err(dir_err)?;
        if cfg.task_ids.is_some() {
            // Tasks of the task user reach their own sandbox and data directory (each 0700,
            // theirs) through these, and list nothing: the credential, the key and the task
            // table stay the agent's (0600, or in a 0700 directory).
            use std::os::unix::fs::PermissionsExt as _;
            for dir in [
                cfg.data_dir.clone(),
                cfg.data_dir.join("sandboxes"),
                cfg.data_dir.join("data"),
            ] {
                std::fs::create_dir_all(&dir).map_err(dir_err)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                    .map_err(dir_err)?;
            }
        }
        let table_path = cfg.data_dir.join("tasks.json");
        let mut table: Table = match std::fs::read(&table_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StartError::Table {
                path: table_path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::default(),
            Err(e) => return Err(dir_err(e)),
        };
        table.retired_set = table.retired.iter().cloned().collect();
        let process = Arc::new(ProcessRuntime::new(
            cfg.exe.clone(),
            cfg.data_dir.join("sandboxes"),
            cfg.node.as_str(),
        ));
        let containers = match &cfg.containerd {
            None => Err("turned off (--containerd off)".to_string()),
            Some(c) => crate::container::ContainerRuntime::new(
                c.clone(),
                cfg.data_dir.join("sandboxes"),
                cfg.data_dir.join("data"),
                cfg.node.as_str(),
            )
            .map(|c| Arc::new(c.with_logger(cfg.exe.clone()))),
        };
        let runtime = Runtimes {
            process,
            containers,
        };
        let creds = load_credentials(&cfg)?;
        let identity = Arc::new(torc_tls::ReloadableIdentity::default());
        if let (Some(cert), Some((key, _))) = (&creds.cert, &creds.key) {
            identity.set(torc_tls::Identity::from_pem(
                cert,
                key,
                "the node's certificate",
            )?)?;
        }
        let client = make_client(&cfg, &creds)?;
        let cfg_node = cfg.node.clone();
        let networks = TaskNetworks::open(&cfg.node);
        Ok(Arc::new(Agent {
            cfg,
            runtime,
            networks,
            client: std::sync::RwLock::new(client),
            creds: Mutex::new(creds),
            identity,
            reviews: Mutex::new(std::collections::HashMap::new()),
            table: Mutex::new(table),
            table_path,
            report_now: Notify::new(),
            runtime_changed: Notify::new(),
            lease: Mutex::new(Lease::default()),
            lease_renewed: Notify::new(),
            metrics: Mutex::new(crate::metrics::Sampler::new(cfg_node)),
            upkeep: std::sync::RwLock::new(None),
            upkeep_changed: Notify::new(),
            disk: Mutex::new(None),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            crash_after_spawn: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The rack's rules for this node's disk, as last registered (the built-in defaults
    /// before the first registration).
    pub(crate) fn upkeep(&self) -> torc_api::Upkeep {
        self.known_upkeep().unwrap_or_default()
    }

    pub(crate) fn known_upkeep(&self) -> Option<torc_api::Upkeep> {
        *self.upkeep.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids of the tasks the agent tracks (running, or ended and not yet acknowledged).
    pub(crate) fn tracked_ids(&self) -> std::collections::HashSet<TaskId> {
        self.lock().tasks.keys().cloned().collect()
    }

    /// The tasks of `service` that have not ended.
    pub(crate) fn live_tasks_of(&self, service: &torc_types::ServiceName) -> Vec<TaskId> {
        self.lock()
            .tasks
            .values()
            .filter(|t| t.spec.name == *service && !t.state.is_terminal())
            .map(|t| t.id.clone())
            .collect()
    }

    /// Whether `id` ended here and its end was acknowledged.
    pub(crate) fn retired(&self, id: &TaskId) -> bool {
        self.lock().retired_set.contains(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease_mut(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the agent speaks TLS (the rack has a CA).
    pub(crate) fn tls(&self) -> bool {
        self.cfg.ca.is_some()
    }

    /// Who holds `token` (empty: a caller without one), as the controller says, remembered
    /// for a few seconds.
    pub(crate) async fn review(
        &self,
        token: &str,
    ) -> Result<torc_api::ReviewResponse, ClientError> {
        let key = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(d.as_ref());
            k
        };
        let now = std::time::Instant::now();
        if let Some((answer, at)) = self
            .reviews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            let ttl = if answer.authenticated {
                REVIEW_TTL
            } else {
                REFUSAL_TTL
            };
            if now.duration_since(*at) < ttl {
                return Ok(answer.clone());
            }
        }
        let answer = self.client().review(token).await?;
        let mut reviews = self.reviews.lock().unwrap_or_else(|e| e.into_inner());
        if reviews.len() >= REVIEWS_KEPT {
            // Stale answers go first, then the oldest: a flood of bad tokens does not push out
            // the answers that serve legitimate callers while the controller cannot be asked.
            reviews.retain(|_, (a, at)| {
                let ttl = if a.authenticated {
                    REVIEW_TTL
                } else {
                    REFUSAL_TTL
                };
                now.duration_since(*at) < ttl
            });
            if reviews.len() >= REVIEWS_KEPT
                && let Some(oldest) = reviews
                    .iter()
                    .filter(|(_, (a, _))| !a.authenticated)
                    .chain(reviews.iter())
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                reviews.remove(&oldest);
            }
        }
        reviews.insert(key, (answer.clone(), now));
        Ok(answer)
    }

    /// Keeps what a registration handed out: the rack's rules for the node's disk, the node's
    /// credential and certificate.
    fn registered(&self, resp: &torc_api::RegisterResponse) -> Result<(), StartError> {
        let rules = Some(resp.upkeep.unwrap_or_default());
        let before = std::mem::replace(
            &mut *self.upkeep.write().unwrap_or_else(|e| e.into_inner()),
            rules,
        );
        if before != rules {
            self.upkeep_changed.notify_one();
        }
        if resp.credential.is_none() && resp.certificate.is_none() {
            return Ok(());
        }
        let mut creds = self.creds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = &resp.credential {
            torc_tls::files::write_secret(&self.cfg.data_dir.join("credential"), token)?;
            creds.token = Some(token.clone());
        }
        if let Some(cert) = &resp.certificate {
            let (key, _) = creds
                .key
                .as_ref()
                .ok_or_else(|| torc_tls::TlsError::NoKey {
                    path: self.cfg.data_dir.join("tls").join("node.key"),
                })?;
            self.identity.set(torc_tls::Identity::from_pem(
                cert,
                key,
                "the node's certificate",
            )?)?;
            torc_tls::files::write_file(
                &self.cfg.data_dir.join("tls").join("node.crt"),
                cert.as_bytes(),
                0o644,
            )?;
            creds.cert = Some(cert.clone());
        }
        let client = make_client(&self.cfg, &creds)?.with_endpoints_of(&self.client());
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
        Ok(())
    }

    /// Forgets a credential the controller no longer accepts, so the join token is used.
    fn forget_credential(&self) {
        let mut creds = self.creds.lock().unwrap_or_else(|e| e.into_inner());
        if creds.token.take().is_some() {
            let _ = std::fs::remove_file(self.cfg.data_dir.join("credential"));
            if let Ok(client) = make_client(&self.cfg, &creds) {
                let client = client.with_endpoints_of(&self.client());
                *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
            }
        }
    }

    /// Writes the task table atomically. Called with the lock held, after each change. A
    /// failure is logged here; what is not saved is derived again at the next start (a task's
    /// end from its shim's exit record, a retirement from the controller's next answer).
    fn persist(&self, table: &Table) -> Result<(), torc_tls::TlsError> {
        // 0600: the table holds the tasks' specs, their env included.
        let bytes = serde_json::to_vec(table).expect("table serialises");
        let saved = torc_tls::files::write_file(&self.table_path, &bytes, 0o600);
        if let Err(e) = &saved {
            tracing::error!(error = %e, "cannot save the task table");
        }
        saved
    }

    /// The runtime's description, with whether this agent can give tasks a namespace.
    pub(crate) fn runtime_info(&self) -> torc_api::RuntimeInfo {
        let mut info = self.runtime.info();
        (info.rack_network, info.rack_network_note) = self.networks.capability();
        info
    }

    pub(crate) fn snapshot(&self) -> Vec<LocalTask> {
        self.lock().tasks.values().cloned().collect()
    }

    pub(crate) fn sandbox(&self, id: &TaskId) -> Option<PathBuf> {
        self.lock()
            .tasks
            .get(id)
            .map(|_| self.runtime.process.sandbox_of(id))
            .or_else(|| {
                let dir = self.runtime.process.sandbox_of(id);
                dir.is_dir().then_some(dir)
            })
    }

    /// Re-adopts tasks recorded as running: live ones are watched again, the others are
    /// settled from their exit record, or lost. A task recorded as starting (the last agent
    /// died around its start, or while it made a rack task's network) is running when its
    /// runtime finds it ([`Runtime::find`]: for a process task, its shim's lock is held), and
    /// otherwise never started or ended: settled from its exit record, or lost. A rack task's
    /// namespace needs nothing: its shim holds it.
    ///
    /// Runs before anything else of the agent (its API, its controller session): the table's
    /// lock is not held while the runtime looks, and nothing can change the table meanwhile.
    async fn adopt(self: &Arc<Self>) {
        enum Outcome {
            Adopt(Handle),
            Settle(Option<ExitRecord>),
            NeverStarted,
        }
        let recorded: Vec<(TaskId, TaskSpec, bool, Option<Handle>)> = self
            .lock()
            .tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Running | TaskState::Staging))
            // (Staging is only ever recorded with `starting`; the second test is defensive.)
            .map(|t| {
                let starting = t.starting || t.state == TaskState::Staging;
                (t.id.clone(), t.spec.clone(), starting, t.handle.clone())
            })
            .collect();
        let mut outcomes = Vec::new();
        for (id, spec, starting, handle) in recorded {
            let outcome = if starting {
                match self.runtime.find(&id, &spec).await {
                    Found::Running(handle) => Outcome::Adopt(handle),
                    Found::Ended(record) => Outcome::Settle(Some(record)),
                    Found::Never => Outcome::NeverStarted,
                }
            } else if let Some(handle) = handle {
                if self.runtime.is_alive(&handle) {
                    Outcome::Adopt(handle)
                } else {
                    // Ended already: answers at once.
                    Outcome::Settle(self.runtime.ended(Started::adopted(handle)).await)
                }
            } else {
                continue;
            };
            outcomes.push((id, outcome));
        }
        let mut table = self.lock();
        for (id, outcome) in outcomes {
            let Some(task) = table.tasks.get_mut(&id) else {
                continue;
            };
            task.starting = false;
            match outcome {
                Outcome::Adopt(handle) => {
                    tracing::info!(task = %id, pid = handle.pid, "re-adopted running task");
                    task.state = TaskState::Running;
                    task.handle = Some(handle.clone());
                    self.watch(id, Started::adopted(handle));
                }
                Outcome::Settle(record) => settle(task, record),
                Outcome::NeverStarted => {
                    settle(task, None);
                    task.message = Some(
                        "the agent stopped while starting the task, and no supervisor \
                         of it runs: it did not start, or ended without a record"
                            .into(),
                    );
                }
            }
        }
        let _ = self.persist(&table);
    }

    /// Watches a task until it ends, then settles and reports it.
    fn watch(self: &Arc<Self>, id: TaskId, task: Started) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let record = this.runtime.ended(task).await;
            this.finish(&id, record);
        });
    }

    fn finish(&self, id: &TaskId, record: Option<ExitRecord>) {
        let mut table = self.lock();
        if let Some(task) = table.tasks.get_mut(id) {
            settle(task, record);
            tracing::info!(task = %id, state = %task.state, exit_code = ?task.exit_code, "task ended");
        }
        let _ = self.persist(&table);
        drop(table);
        self.report_now.notify_one();
    }

    /// Applies a desired-state document: start what is new, stop what is gone.
    ///
    /// New tasks are recorded as starting and the table saved *before* any is started, so an
    /// agent that dies at any point leaves a record the next one re-adopts from (see
    /// [`Agent::adopt`]); when the table cannot be saved nothing is started, and the new tasks
    /// are reported failed with the reason. Then the tasks on the node's network are started
    /// one by one ([`Agent::launch`], without the table's lock: a runtime's start is async),
    /// and the table saved and reported once. A `network: rack` task is recorded as staging
    /// and started by a future of its own once its network is made: see
    /// [`Agent::start_rack_task`].
    ///
    /// Not to be cancelled between its record and its starts (a task recorded as starting
    /// would never start nor be reported): `follow_desired` runs it as a task of its own.
    async fn apply(self: &Arc<Self>, doc: DesiredState) {
        let Some(starting) = self.record_desired(&doc) else {
            return;
        };
        for (d, run_as) in &starting {
            if self.launch(d, *run_as, None).await.is_break() {
                return;
            }
        }
        if !starting.is_empty() {
            let table = self.lock();
            // A failure is logged; a started task is still on disk as starting, and its
            // runtime tells the next agent whether it runs.
            let _ = self.persist(&table);
            drop(table);
            self.report_now.notify_one();
        }
    }

    /// The first half of [`Agent::apply`], under the table's lock: records every new task
    /// (lost, failed, or starting with its user), saves, spawns the rack tasks' starts and
    /// stops what is no longer wanted. Answers the tasks on the node's network to start, in
    /// order; `None` for a document not newer than the one applied, one of an epoch below the
    /// one followed (ignored, said once: nothing is stopped for it), or once shutdown began.
    fn record_desired<'d>(
        self: &Arc<Self>,
        doc: &'d DesiredState,
    ) -> Option<Vec<(&'d DesiredTask, Option<TaskUser>)>> {
        let mut table = self.lock();
        // Checked under the table lock, which `stop_all` takes after setting the flag: a task
        // recorded before is stopped there (or, still starting, once started: see `launch`),
        // none is recorded after.
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        match table.desired.offer(doc.stamp()) {
            Admit::Apply => {}
            Admit::NotNewer => return None,
            Admit::Stale { following, first } => {
                if first {
                    tracing::warn!(
                        epoch = doc.epoch,
                        generation = doc.generation,
                        following,
                        "ignoring a desired state of epoch {} (this agent follows epoch {following}): \
                         a deposed controller's late answer; it stops and starts nothing",
                        doc.epoch
                    );
                }
                return None;
            }
        }
        let wanted: BTreeSet<&TaskId> = doc.tasks.iter().map(|t| &t.id).collect();
        let now = now_millis();
        let mut changed = false;
        let mut starting = Vec::new();
        for d in &doc.tasks {
            if table.knows(&d.id) {
                continue;
            }
            changed = true;
            let mut task = LocalTask::new(d, now);
            if !d.launch {
                task.state = TaskState::Lost;
                task.message =
                    Some("this agent has no record of the task (was its data dir wiped?)".into());
                table.tasks.insert(d.id.clone(), task);
                continue;
            }
            let address = match self.rack_address(d) {
                Ok(address) => address,
                Err(why) => {
                    task.state = TaskState::Failed;
                    task.message = Some(why);
                    table.tasks.insert(d.id.clone(), task);
                    continue;
                }
            };
            let run_as = match (&self.cfg.task_ids, d.spec.privileged) {
                (Some(range), false) => match table.task_id(&d.spec.name, range) {
                    Some(id) => Some(TaskUser { uid: id, gid: id }),
                    None => {
                        task.state = TaskState::Failed;
                        task.message = Some(format!(
                            "no free task user id left in {}-{} on this node (--task-ids)",
                            range.start(),
                            range.end()
                        ));
                        table.tasks.insert(d.id.clone(), task);
                        continue;
                    }
                },
                _ => None,
            };
            task.starting = true;
            // Not running before its shim is spawned (and a rack task's network made): a
            // report meanwhile says staging.
            task.state = TaskState::Staging;
            if let Some(address) = address {
                task.net = Some(TaskNet {
                    address: address.ip,
                    veth: None,
                });
            }
            table.tasks.insert(d.id.clone(), task);
            starting.push((d, run_as, address));
        }
        if !starting.is_empty()
            && let Err(e) = self.persist(&table)
        {
            for (d, _, _) in starting.drain(..) {
                let task = table.tasks.get_mut(&d.id).expect("just recorded");
                task.starting = false;
                task.state = TaskState::Failed;
                task.message = Some(not_saved(&e));
            }
        }
        let mut on_node = Vec::new();
        for (d, run_as, address) in starting {
            match address {
                None if d.spec.container.is_none() => on_node.push((d, run_as)),
                // A container may pull its image first: started by a future of its own.
                None => {
                    let this = Arc::clone(self);
                    let d = d.clone();
                    tokio::spawn(async move { this.start_async_task(d, run_as).await });
                }
                Some(address) => {
                    let this = Arc::clone(self);
                    let d = d.clone();
                    tokio::spawn(async move { this.start_rack_task(d, run_as, address).await });
                }
            }
        }
        let unwanted: Vec<TaskId> = table
            .tasks
            .values()
            .filter(|t| {
                matches!(t.state, TaskState::Running | TaskState::Staging)
                    && !t.kill_requested
                    && !wanted.contains(&t.id)
            })
            .map(|t| t.id.clone())
            .collect();
        for id in unwanted {
            changed = true;
            let task = table.tasks.get_mut(&id).expect("listed");
            // A task still starting (a rack task making its network, or one whose runtime
            // is starting it) is stopped once started, or not started: see `launch`.
            task.kill_requested = true;
            self.stop_task(task);
        }
        if changed && on_node.is_empty() {
            // With tasks to start, `apply` saves and reports once they are.
            let _ = self.persist(&table);
            drop(table);
            self.report_now.notify_one();
        }
        Some(on_node)
    }

    /// Asks a running task to stop, and kills it after its grace period (no-op for a task not
    /// started yet).
    fn stop_task(&self, task: &LocalTask) {
        let Some(handle) = task.handle.clone() else {
            return;
        };
        tracing::info!(task = %task.id, "stopping task");
        self.runtime.stop(&handle);
        let runtime = self.runtime.clone();
        let deadline = stop_deadline(&task.spec);
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            runtime.kill_now(&handle);
        });
    }

    /// What a rack task's `rack_address` says: `None` for a task on the node's network, its
    /// checked address for a `network: rack` task, or why it cannot have one (the task fails
    /// with that reason).
    fn rack_address(&self, d: &DesiredTask) -> Result<Option<TaskAddress>, String> {
        match (&d.rack_address, d.spec.network) {
            (None, torc_types::TaskNetwork::Node) => Ok(None),
            (None, torc_types::TaskNetwork::Rack) => Err(
                "network: rack: the controller sent no address for the task (an older controller?)"
                    .into(),
            ),
            (Some(a), torc_types::TaskNetwork::Node) => Err(format!(
                "the controller sent the rack address {} for a task on the node's network",
                a.ip
            )),
            (Some(a), torc_types::TaskNetwork::Rack) => {
                self.networks.check(a).map(Some).map_err(|e| e.to_string())
            }
        }
    }

    /// Starts a task recorded (and saved) as starting, in `net`'s namespace for a rack task,
    /// and records the outcome in the table (the caller saves it): running and watched,
    /// adopted, or failed. The table's lock is never held across the runtime's start:
    /// - just before it, a task killed or an agent shutting down since the task was
    ///   recorded is settled as killed and not started;
    /// - just after it, a task whose kill came while it started is stopped at once (and
    ///   `stop_all` waits for tasks still starting).
    ///
    /// The task stays recorded as starting throughout, so an agent that dies meanwhile leaves
    /// it to the next one's [`Agent::adopt`]. `Break` only in tests that simulate a crash
    /// right after the spawn.
    async fn launch(
        self: &Arc<Self>,
        d: &DesiredTask,
        run_as: Option<TaskUser>,
        net: Option<(&TaskNamespace, Ipv4Addr)>,
    ) -> ControlFlow<()> {
        {
            let mut table = self.lock();
            let Some(task) = table.tasks.get_mut(&d.id) else {
                return ControlFlow::Continue(());
            };
            if task.kill_requested || self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                task.not_started(TaskState::Killed, "killed before it started".into());
                return ControlFlow::Continue(());
            }
        }
        let ip = net.map_or(self.cfg.ip, |(_, ip)| IpAddr::V4(ip));
        let resolv = d.resolver.as_ref().map(torc_api::Resolver::resolv_conf);
        // A long start (a container's image pull) says how it goes in the task's message,
        // reported at once (not saved: the next report repeats it).
        let progress = {
            let agent = Arc::clone(self);
            let id = d.id.clone();
            move |message: String| {
                let mut table = agent.lock();
                if let Some(t) = table.tasks.get_mut(&id)
                    && t.state == TaskState::Staging
                {
                    t.message = Some(message);
                    t.updated_at = now_millis();
                }
                drop(table);
                agent.report_now.notify_one();
            }
        };
        let result = self
            .runtime
            .start(&StartRequest {
                id: &d.id,
                spec: &d.spec,
                ports: &d.ports,
                ip,
                netns: net.map(|(ns, _)| std::os::fd::AsFd::as_fd(ns.netns())),
                extra_env: self.task_env(&d.id, &d.ports, ip),
                files: &d.files,
                run_as,
                resolv_conf: resolv.as_deref(),
                progress: Some(&progress),
                registry: d.registry.as_ref(),
                pull_timeout: d.pull_timeout_seconds.map(Duration::from_secs),
                logs: self.upkeep().logs.with(d.spec.logs.as_ref()),
            })
            .await;
        #[cfg(test)]
        if self
            .crash_after_spawn
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // As if the agent were killed here: nothing more is saved or watched.
            if let Ok(started) = result {
                std::mem::forget(started);
            }
            return ControlFlow::Break(());
        }
        let mut table = self.lock();
        let task = table.tasks.get_mut(&d.id).expect("recorded as starting");
        task.starting = false;
        task.updated_at = now_millis();
        // The pull's progress is over: the message is the outcome's.
        task.message = None;
        let started = match result {
            Ok(started) => {
                tracing::info!(task = %d.id, pid = started.handle.pid, %ip, "task started");
                Some(started)
            }
            Err(RuntimeError::AlreadyRunning(handle)) => {
                // Only a table restored from an older copy gets here: the runtime says the
                // task runs already.
                tracing::warn!(task = %d.id, pid = handle.pid, "task already running; adopted");
                Some(Started::adopted(handle))
            }
            Err(e) => {
                tracing::warn!(task = %d.id, error = %e, "task could not start");
                task.state = TaskState::Failed;
                task.message = Some(e.to_string());
                None
            }
        };
        if let Some(started) = started {
            task.state = TaskState::Running;
            task.handle = Some(started.handle.clone());
            if task.kill_requested {
                // Its kill (or the agent's shutdown) came while it started.
                self.stop_task(task);
            }
            self.watch(d.id.clone(), started);
        }
        ControlFlow::Continue(())
    }

    /// Makes a rack task's network, then starts its shim inside it (unless the task was
    /// killed, or the agent began to shut down, meanwhile), saves and reports. The namespace's
    /// descriptor is dropped on return: from then on the shim alone holds the namespace, and
    /// when the network could not be made or the task is not started, the namespace and its
    /// veth go at once.
    async fn start_rack_task(
        self: Arc<Self>,
        d: DesiredTask,
        run_as: Option<TaskUser>,
        address: TaskAddress,
    ) {
        let prepared = self.networks.prepare(&d.id, address).await;
        let ns = {
            let mut table = self.lock();
            let Some(task) = table.tasks.get_mut(&d.id) else {
                return;
            };
            let stopped =
                task.kill_requested || self.shutting_down.load(std::sync::atomic::Ordering::SeqCst);
            match prepared {
                Ok(ns) if !stopped => {
                    if let Some(net) = &mut task.net {
                        net.veth = Some(ns.veth().to_string());
                    }
                    // Saved before the spawn: a next agent that adopts the task keeps its
                    // veth out of the sweep. Unsaved, the task is not started (as in `apply`).
                    match self.persist(&table) {
                        Ok(()) => Some(ns),
                        Err(e) => {
                            let task = table.tasks.get_mut(&d.id).expect("looked up");
                            task.not_started(TaskState::Failed, not_saved(&e));
                            None
                        }
                    }
                }
                Ok(_) => {
                    task.not_started(TaskState::Killed, "killed before it started".into());
                    None
                }
                Err(e) => {
                    tracing::warn!(task = %d.id, error = %e, "cannot make the task's network");
                    let state = if stopped {
                        TaskState::Killed
                    } else {
                        TaskState::Failed
                    };
                    task.not_started(state, e.to_string());
                    None
                }
            }
        };
        if let Some(ns) = &ns
            && self
                .launch(&d, run_as, Some((ns, address.ip)))
                .await
                .is_break()
        {
            // A simulated crash: the descriptor goes with the "dead" agent, as it would.
            return;
        }
        let table = self.lock();
        let _ = self.persist(&table);
        drop(table);
        self.report_now.notify_one();
    }

    /// Starts a task on the node's network that may take a while (a container whose image
    /// is pulled first), then saves and reports.
    async fn start_async_task(self: Arc<Self>, d: DesiredTask, run_as: Option<TaskUser>) {
        if self.launch(&d, run_as, None).await.is_break() {
            return;
        }
        let table = self.lock();
        let _ = self.persist(&table);
        drop(table);
        self.report_now.notify_one();
    }

    /// Deletes the task veths of the node no live task of this agent holds (see
    /// `network::TaskNetworks::sweep`). Run after [`Agent::adopt`], before any task starts.
    async fn sweep_task_veths(&self) {
        let keep: BTreeSet<String> = self
            .snapshot()
            .into_iter()
            .filter(|t| matches!(t.state, TaskState::Running | TaskState::Staging))
            .filter_map(|t| t.net?.veth)
            .collect();
        if let Err(e) = self.networks.sweep(&keep).await {
            tracing::warn!(error = %e, "cannot sweep the node's task veths");
        }
    }

    /// The variables the agent gives every task. `ip` is the task's address (`HOST`,
    /// `TORC_TASK_IP`): a rack task's own, else the node's (`TORC_NODE_IP` either way).
    fn task_env(&self, id: &TaskId, ports: &[u16], ip: IpAddr) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("TORC_TASK_ID".into(), id.to_string());
        env.insert("TORC_NODE".into(), self.cfg.node.to_string());
        env.insert("TORC_NODE_IP".into(), self.cfg.ip.to_string());
        env.insert("TORC_TASK_IP".into(), ip.to_string());
        env.insert("HOST".into(), ip.to_string());
        // Every controller for our clients; one URL, the one followed now, for scripts.
        let client = self.client();
        env.insert(torc_client::ENV_CONTROLLERS.into(), client.controllers());
        env.insert(torc_client::ENV_CONTROLLER.into(), client.base_url());
        if self.cfg.ca.is_some() {
            // The agent's own public copy: the operator's file may sit where tasks of the task
            // user cannot read.
            env.insert(
                torc_client::ENV_CA.into(),
                self.cfg.data_dir.join("ca.pem").display().to_string(),
            );
        }
        if let Some(first) = ports.first() {
            env.insert("PORT".into(), first.to_string());
        }
        for (i, p) in ports.iter().enumerate() {
            env.insert(format!("PORT{i}"), p.to_string());
        }
        env
    }

    fn register_request(&self, agent_url: &str) -> RegisterRequest {
        RegisterRequest {
            node: self.cfg.node.clone(),
            ip: self.cfg.ip,
            agent_url: agent_url.to_string(),
            node_type: self.cfg.node_type,
            node_function: self.cfg.node_function.clone(),
            resources: self.cfg.resources,
            port_range: self.cfg.port_range,
            attributes: self.cfg.attributes.clone(),
            runtime: self.runtime_info(),
            tasks: self.snapshot().iter().map(LocalTask::report).collect(),
            public_key: self
                .creds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .as_ref()
                .map(|(_, public)| public.clone()),
        }
    }

    /// Sends the full task list; on success, forgets the ended tasks it carried.
    async fn report(&self) -> Result<(), ClientError> {
        let tasks = self.snapshot();
        let ended: Vec<TaskId> = tasks
            .iter()
            .filter(|t| t.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        let report = StatusReport {
            tasks: tasks.iter().map(LocalTask::report).collect(),
            full: true,
            disk: self.disk(),
        };
        self.client().report_status(&self.cfg.node, &report).await?;
        if !ended.is_empty() {
            let mut table = self.lock();
            for id in &ended {
                table.retire(id);
            }
            let _ = self.persist(&table);
        }
        Ok(())
    }

    /// Serves `app` (the agent API, `Agent::run` gives it) on `listener` and keeps in touch
    /// with the controller until `shutdown` completes.
    pub(crate) async fn run_with(
        self: Arc<Self>,
        listener: TcpListener,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let port = listener.local_addr()?.port();
        let scheme = if self.tls() { "https" } else { "http" };
        let agent_url = format!("{scheme}://{}:{port}", url_host(self.cfg.ip));
        // The engine is asked before anything is adopted or registered (a container task's
        // adoption and the node's capability need its answer), then again every
        // ENGINE_CHECK: a change registers the node again.
        let engine = match &self.runtime.containers {
            Ok(c) => {
                c.check().await;
                let (this, c) = (Arc::clone(&self), Arc::clone(c));
                Some(AbortOnDrop(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(ENGINE_CHECK).await;
                        let before = c.state();
                        if c.check().await != before {
                            this.runtime_changed.notify_one();
                        }
                    }
                })))
            }
            Err(_) => None,
        };
        self.adopt().await;
        self.sweep_task_veths().await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tls = if self.tls() {
            Some(Arc::new(
                torc_tls::server_config_reloadable(
                    Arc::clone(&self.identity),
                    torc_tls::ClientAuth::None,
                )
                .map_err(std::io::Error::other)?,
            ))
        } else {
            None
        };
        let server = {
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                torc_tls::serve(listener, app, tls, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
            })
        };
        let session = tokio::spawn(Arc::clone(&self).controller_session(agent_url));
        let sampler = tokio::spawn(Arc::clone(&self).sample_metrics());
        let upkeep = AbortOnDrop(tokio::spawn(Arc::clone(&self).upkeep_loop()));
        shutdown.await;
        tracing::info!("agent shutting down");
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        session.abort();
        sampler.abort();
        drop(upkeep);
        drop(engine);
        if self.cfg.kill_tasks_on_exit {
            self.stop_all().await;
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        Ok(())
    }

    /// Samples host and task metrics on a timer.
    async fn sample_metrics(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.metrics_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let dirs = vec![self.cfg.data_dir.display().to_string()];
        loop {
            tick.tick().await;
            let probes: Vec<crate::metrics::TaskProbe> = self
                .snapshot()
                .into_iter()
                .filter(|t| t.state == TaskState::Running)
                .filter_map(|t| {
                    Some(crate::metrics::TaskProbe {
                        probe: self.runtime.probe(t.handle.as_ref()?),
                        id: t.id,
                        name: t.spec.name.clone(),
                        metered: t.spec.metered,
                    })
                })
                .collect();
            let this = Arc::clone(&self);
            let dirs = dirs.clone();
            // /proc reads are blocking file I/O.
            let _ = tokio::task::spawn_blocking(move || {
                let mut sampler = this.metrics.lock().unwrap_or_else(|e| e.into_inner());
                sampler.sample(&probes, &dirs);
            })
            .await;
        }
    }

    /// Stops every running task and waits (bounded) for them to end, then reports once.
    async fn stop_all(&self) {
        let mut longest = Duration::ZERO;
        {
            let mut table = self.lock();
            // A rack task still staging sees the flag and is not started.
            for task in table
                .tasks
                .values_mut()
                .filter(|t| matches!(t.state, TaskState::Running | TaskState::Staging))
            {
                task.kill_requested = true;
                task.message = Some(torc_api::AGENT_SHUTDOWN_STOP.into());
                if let Some(h) = &task.handle {
                    self.runtime.stop(h);
                    longest = longest.max(stop_deadline(&task.spec));
                }
            }
            let _ = self.persist(&table);
        }
        // Rack tasks still making their network settle within this too (as killed), and a
        // task whose runtime is starting it is stopped once started (see `launch`).
        let deadline = tokio::time::Instant::now() + longest.max(Duration::from_secs(3));
        loop {
            let tasks = self.snapshot();
            let staging = tasks
                .iter()
                .any(|t| t.state == TaskState::Staging || t.starting);
            let running: Vec<Handle> = tasks
                .into_iter()
                .filter(|t| t.state == TaskState::Running)
                .filter_map(|t| t.handle)
                .filter(|h| self.runtime.is_alive(h))
                .collect();
            if running.is_empty() && !staging {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for h in &running {
                    self.runtime.kill_now(h);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A container's end is collected by its watcher (recorded, then its task, container
        // and snapshot removed from containerd): waited for too, briefly, so that an agent
        // that stops its tasks leaves its engine clean.
        let collected_by = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < collected_by
            && self.snapshot().iter().any(|t| {
                t.state == TaskState::Running
                    && t.handle.as_ref().is_some_and(|h| h.container.is_some())
            })
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.report()).await;
    }

    /// Register, then report and follow the desired state; start over when the controller
    /// says it no longer knows us.
    async fn controller_session(self: Arc<Self>, agent_url: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = std::time::Instant::now();
            let (interval, epoch) = match self
                .client()
                .register_agent(&self.register_request(&agent_url))
                .await
            {
                Ok(resp) => {
                    backoff = Duration::from_millis(100);
                    if let Err(e) = self.registered(&resp) {
                        tracing::error!(error = %e, "cannot keep the node's credentials; registering again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    // A controller that does not say its node timeout reports at a quarter of
                    // it, or less (never more).
                    let timeout = Duration::from_millis(
                        resp.node_timeout_ms
                            .unwrap_or(resp.heartbeat_interval_ms * 4),
                    );
                    self.lease_mut().registered(sent, timeout);
                    tracing::info!(controller = %self.client().base_url(), epoch = resp.epoch, "registered");
                    (
                        Duration::from_millis(resp.heartbeat_interval_ms.max(50)),
                        resp.epoch,
                    )
                }
                Err(e) => {
                    let had_credential = self
                        .creds
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .token
                        .is_some();
                    if e.status().map(|s| s.as_u16()) == Some(401)
                        && had_credential
                        && self.cfg.join_token.is_some()
                    {
                        tracing::warn!(error = %e, "the node's credential was refused; registering with the join token");
                        self.forget_credential();
                        continue;
                    }
                    if e.is_transport() {
                        tracing::debug!(error = %e, "controller unreachable; retrying");
                    } else {
                        tracing::error!(error = %e, "registration refused; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // The registration is a write on the acting leader: its epoch is the floor, and
            // that leader's next document is applied whatever was applied before.
            self.lock().desired = Floor::registered(epoch);
            // Ends with this session, also when the session itself is aborted.
            let follower = AbortOnDrop(tokio::spawn(Arc::clone(&self).follow_desired()));
            tokio::select! {
                result = self.reporter(interval) => {
                    tracing::warn!(error = %result, "controller session ended; registering again");
                }
                // What the node can run changed (its container engine came or went): the
                // controller hears it from a registration, which carries the runtime's info.
                () = self.runtime_changed.notified() => {
                    tracing::info!("the node's runtime changed; registering again");
                }
            }
            drop(follower);
        }
    }

    /// Reports after each change and on every heartbeat. Returns when the controller wants a
    /// fresh registration.
    async fn reporter(&self, interval: Duration) -> ClientError {
        loop {
            let sent = std::time::Instant::now();
            match self.report().await {
                Ok(()) => {
                    self.lease_mut().acknowledged(sent);
                    self.lease_renewed.notify_waiters();
                }
                Err(e) if e.is_transport() => {
                    tracing::debug!(error = %e, "report failed; the next heartbeat retries");
                }
                // 401: the node's credential was revoked; register again (with the join token).
                Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(401 | 404 | 409)) => {
                    return e;
                }
                Err(e) => tracing::error!(error = %e, "report refused"),
            }
            let _ = tokio::time::timeout(interval, self.report_now.notified()).await;
        }
    }

    async fn follow_desired(self: Arc<Self>) {
        loop {
            let at = self.lock().desired.position();
            let client = self.client();
            let polled = client.base_url();
            let poll = client.desired(&self.cfg.node, at.epoch, at.generation, LONG_POLL);
            // The heartbeats moved to another controller (this one stopped answering: killed,
            // frozen, deposed): poll there now rather than at the end of this poll's wait.
            let moved = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if client.base_url() != polled {
                        return;
                    }
                }
            };
            let answer = tokio::select! {
                answer = poll => answer,
                () = moved => {
                    tracing::info!(from = %polled, to = %client.base_url(), "following another controller");
                    continue;
                }
            };
            match answer {
                // A task of its own: `apply` must not be cancelled with this session between
                // recording a task as starting and starting it. Waited for, so documents
                // are applied in order.
                Ok(doc) if !self.lease_mut().held(std::time::Instant::now()) => {
                    // The answer may have waited through a partition or a freeze: the rack
                    // may have lost these tasks and started them elsewhere. Asked again once
                    // the controller has acknowledged a report (or, if it declared the node
                    // inactive, by the next session, after registering again).
                    tracing::warn!(
                        generation = doc.generation,
                        "the controller has not acknowledged a report of this node for most of \
                         its node timeout: it may count the node inactive, so this desired set \
                         may be stale; starting nothing from it until it hears the node again"
                    );
                    self.report_now.notify_one();
                    let held = async {
                        loop {
                            let renewed = self.lease_renewed.notified();
                            if self.lease_mut().held(std::time::Instant::now()) {
                                return;
                            }
                            // Only an acknowledged report renews the lease, and the reporter
                            // wakes this after each one (`notified` was made before the check).
                            renewed.await;
                        }
                    };
                    held.await;
                }
                Ok(doc) => {
                    // A deposed leader answers a poll of another epoch at once: not a busy
                    // loop until the client moves on.
                    let stale = doc.epoch < at.epoch;
                    let this = Arc::clone(&self);
                    let _ = tokio::spawn(async move { this.apply(doc).await }).await;
                    if stale {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "desired-state poll failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

/// Reads the node's credential and, under TLS, its key (made now if missing) and certificate.
fn load_credentials(cfg: &AgentConfig) -> Result<Credentials, StartError> {
    let credential_path = cfg.data_dir.join("credential");
    let token = if credential_path.exists() {
        Some(torc_tls::files::read_secret(&credential_path)?)
    } else {
        None
    };
    let Some(ca) = &cfg.ca else {
        return Ok(Credentials {
            token,
            roots: None,
            key: None,
            cert: None,
        });
    };
    let roots = torc_tls::load_certs(ca)?;
    // A public copy of the CA for the node's tasks (TORC_CA).
    torc_tls::files::write_file(
        &cfg.data_dir.join("ca.pem"),
        &std::fs::read(ca).map_err(|error| torc_tls::TlsError::Read {
            path: ca.clone(),
            error,
        })?,
        0o644,
    )?;
    let tls_dir = cfg.data_dir.join("tls");
    let key_path = tls_dir.join("node.key");
    let key = if key_path.exists() {
        torc_tls::files::read_secret(&key_path)?
    } else {
        let (key, _) = torc_tls::pki::generate_key()?;
        torc_tls::files::write_secret(&key_path, &key)?;
        key
    };
    let public = torc_tls::pki::public_key_hex(&key)?;
    let cert_path = tls_dir.join("node.crt");
    let cert = match std::fs::read_to_string(&cert_path) {
        Ok(c) => Some(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(torc_tls::TlsError::Read {
                path: cert_path,
                error: source,
            }
            .into());
        }
    };
    Ok(Credentials {
        token,
        roots: Some(roots),
        key: Some((key, public)),
        cert,
    })
}

/// The controller client for the credentials at hand: the node's token (else the join
/// token), the rack CA, and the node's certificate once it has one.
fn make_client(cfg: &AgentConfig, creds: &Credentials) -> Result<Client, StartError> {
    let token = creds.token.clone().or_else(|| cfg.join_token.clone());
    let tls = match &creds.roots {
        Some(roots) => {
            let identity = match (&creds.cert, &creds.key) {
                (Some(cert), Some((key, _))) => Some(torc_tls::Identity::from_pem(
                    cert,
                    key,
                    "the node's certificate",
                )?),
                _ => None,
            };
            Some(torc_client::RackTls {
                roots: roots.clone(),
                identity,
            })
        }
        None => None,
    };
    Ok(Client::with_tls(cfg.controller.clone(), token, tls)?)
}

/// Why a task was not started when the table could not be saved first.
fn not_saved(e: &torc_tls::TlsError) -> String {
    format!(
        "not started: the agent cannot save its task table ({e}), and a task it cannot \
         remember could be started a second time after a restart"
    )
}

/// Settles an ended task from its shim's exit record.
fn settle(task: &mut LocalTask, record: Option<ExitRecord>) {
    task.updated_at = now_millis();
    match record {
        Some(r) if task.kill_requested || r.stopped => {
            task.state = TaskState::Killed;
            task.exit_code = Some(r.exit_code);
        }
        Some(r) if r.oom => {
            task.state = TaskState::Failed;
            task.exit_code = Some(r.exit_code);
            task.message = Some(match task.spec.resources.mem_mb {
                mb if mb > 0.0 => {
                    format!("out of memory: killed by the kernel at its memory limit ({mb} MiB)")
                }
                _ => "out of memory: killed by the kernel".into(),
            });
        }
        Some(ExitRecord {
            spawn_error: Some(msg),
            exit_code,
            ..
        }) => {
            task.state = TaskState::Failed;
            task.exit_code = Some(exit_code);
            task.message = Some(msg);
        }
        Some(r) if r.exit_code == 0 => {
            task.state = TaskState::Finished;
            task.exit_code = Some(0);
        }
        Some(r) => {
            task.state = TaskState::Failed;
            task.exit_code = Some(r.exit_code);
            task.message = Some(match r.signal {
                Some(s) => format!("killed by signal {s}"),
                None => format!("exited with code {}", r.exit_code),
            });
        }
        None if task.kill_requested => {
            task.state = TaskState::Killed;
        }
        None => {
            task.state = TaskState::Lost;
            task.message = Some("the task's supervisor vanished without an exit record".into());
        }
    }
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Resources of this machine: cpus, memory, and disk of the file system holding `dir`.
pub fn detect_resources(dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0).floor())
        .unwrap_or(0.0);
    let disk_mb = nix::sys::statvfs::statvfs(dir)
        .map(|s| {
            (s.blocks_available() as f64 * s.fragment_size() as f64 / (1024.0 * 1024.0)).floor()
        })
        .unwrap_or(0.0);
    Resources::new(cpus, mem_mb, disk_mb)
}

#[cfg(test)]
mod rack_tests;

#[cfg(test)]
mod container_tests;

#[cfg(test)]
mod tests;
