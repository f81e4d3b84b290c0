//! [`ContainerRuntime`]: the `Runtime` of tasks with an image, on containerd (design §6).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use torc_api::RuntimeInfo;
use torc_api::images::RegistryAuth;
use torc_containerd::images::{self, Credentials, PullOptions, PullProgress, RunConfig};
use torc_containerd::{
    Client, ContainerId, Namespace, NewContainer, NewTask, OVERLAYFS, RuncOptions, TaskIo,
    TaskStatus,
};
use torc_types::{ContainerSpec, ImageRef, TaskId};

use super::cgroups::{self, Hierarchies};
use super::spec::{self, Bind, HostDevice, Netns, Prepared};
use super::{ContainerdConfig, Engine, EngineState};
use crate::runtime::{
    ContainerRef, ExitRecord, Found, Handle, Probe, RuntimeError, StartRequest, Started,
    process_start_time,
};

/// Labels torc puts on its containers.
const LABEL_TASK: &str = "torc.task";
const LABEL_SERVICE: &str = "torc.service";
const LABEL_NODE: &str = "torc.node";
/// The signal a stop sends first, as a number (the image's `StopSignal` or `--stop-signal`).
const LABEL_STOP_SIGNAL: &str = "torc.stop-signal";

/// How long a pull may take when the controller does not say (Nomad's `image_pull_timeout`
/// default, and the rack config's).
const PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a pull's progress reaches the task's message, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs tasks with an image as containers on containerd, each in its sandbox directory as a
/// process task is (its `stdout` and `stderr`, its exit record).
pub struct ContainerRuntime {
    cfg: ContainerdConfig,
    client: Client,
    namespace: Namespace,
    runc: RuncOptions,
    sandboxes: PathBuf,
    data_dirs: PathBuf,
    node: String,
    engine: RwLock<EngineState>,
    cgroups: Hierarchies,
    /// Facts of this node every spec needs, read once: whether the memory controller
    /// accounts for swap, and the agent's capability bounding set.
    swap_accounted: bool,
    capability_bound: u64,
    /// Tasks asked to stop (their exit record says `stopped`).
    stopping: Mutex<HashSet<String>>,
    /// One pull of a name at a time: a second waits for the first, then finds the image.
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Each image's run config and unpacked chain, by name, for the target digest it was read
    /// from: a start of an image the node ran before reads and writes nothing of it again.
    run_configs: Mutex<HashMap<String, (String, RunConfig)>>,
    /// The `torc` binary, containerd's logging program for containers' output (capped and
    /// rotated, see `logfiles`); `None`: the shim appends to the sandbox's files uncapped.
    logger: Option<PathBuf>,
}

/// Where a pull is: bytes in the content store of what the image needs (`total` 0 until its
/// manifest is read), and the phase in words (`pulling X: 4.2 MB of 10.5 MB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullStatus {
    pub fetched: u64,
    pub total: u64,
    pub message: String,
}

/// Why a container runtime call failed, as the task or the caller sees it.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("containers: unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Containerd(Box<torc_containerd::Error>),
    #[error(transparent)]
    Pull(Box<images::PullError>),
    #[error(transparent)]
    Unpack(Box<images::UnpackError>),
    #[error(transparent)]
    Import(Box<images::ImportError>),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("{0}")]
    Prepare(String),
    #[error(
        "image {image}: the registry {registry} refused ({what}); the rack has no login for \
         {registry} (containers.registries in the rack config, its password_secret set with \
         torc secret set)"
    )]
    RefusedWithoutLogin {
        image: String,
        registry: String,
        what: String,
    },
    #[error("image {image}: the pull timed out after {seconds} s ({fetched} of {total})")]
    PullTimeout {
        image: String,
        seconds: u64,
        fetched: String,
        total: String,
    },
    #[error(
        "image {image} is used by {tasks} on this node; --force removes it anyway (the \
         containers keep their own snapshots)"
    )]
    InUse { image: String, tasks: String },
    #[error("no image {0} on this node")]
    NoImage(String),
    #[error("{0}")]
    BadReference(#[from] torc_types::ImageRefError),
}

macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),*) => {$(
        impl From<$ty> for ContainerError {
            fn from(e: $ty) -> ContainerError {
                ContainerError::$variant(Box::new(e))
            }
        }
    )*};
}
boxed_from!(
    Containerd(torc_containerd::Error),
    Pull(images::PullError),
    Unpack(images::UnpackError),
    Import(images::ImportError)
);

impl From<ContainerError> for RuntimeError {
    fn from(e: ContainerError) -> RuntimeError {
        RuntimeError::Container(e.to_string())
    }
}

impl ContainerRuntime {
    /// Containers' output goes through `exe` (`torc`, as containerd's logging program), which
    /// caps and rotates it. A test agent without the binary keeps the plain files, and says
    /// so once.
    pub fn with_logger(mut self, exe: PathBuf) -> ContainerRuntime {
        if exe.is_file() {
            self.logger = Some(exe);
        } else {
            tracing::warn!(
                exe = %exe.display(),
                "no torc binary to copy containers' output through: their stdout and stderr are not capped"
            );
        }
        self
    }

    pub fn new(
        cfg: ContainerdConfig,
        sandboxes: PathBuf,
        data_dirs: PathBuf,
        node: &str,
    ) -> Result<ContainerRuntime, String> {
        let namespace = Namespace::new(cfg.namespace.clone())
            .map_err(|e| format!("--containerd-namespace {}: {e}", cfg.namespace))?;
        let client = Client::connect_lazy(&cfg.socket, namespace.clone());
        // runc's state goes beside the socket: `/run/containerd/runc` for the system's
        // containerd (its default), the private daemon's own run dir for a local rack's.
        let runc = RuncOptions {
            root: cfg
                .socket
                .parent()
                .unwrap_or(Path::new("/run/containerd"))
                .join("runc"),
            binary_name: "runc".into(),
        };
        let cgroups = Hierarchies::detect();
        Ok(ContainerRuntime {
            logger: None,
            cfg,
            client,
            namespace,
            runc,
            sandboxes,
            data_dirs,
            node: node.to_string(),
            engine: RwLock::new(EngineState::Unknown),
            swap_accounted: cgroups.swap_accounted(),
            capability_bound: spec::own_capability_bound(),
            cgroups,
            stopping: Mutex::new(HashSet::new()),
            pulls: tokio::sync::Mutex::new(HashMap::new()),
            run_configs: Mutex::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Asks containerd whether it can run containers here, and remembers the answer (see
    /// `Engine`). Run at start and again from time to time, so a containerd that comes or goes
    /// shows in the next heartbeat.
    pub async fn check(&self) -> EngineState {
        let state = Engine::probe(&self.client, &self.cfg, cgroups::describe(&self.cgroups)).await;
        let mut slot = self.engine.write().unwrap_or_else(|e| e.into_inner());
        if *slot != state {
            match &state {
                EngineState::Ready(note) => tracing::info!(engine = %note, "containers: ready"),
                EngineState::Unavailable(why) => tracing::warn!(%why, "containers: unavailable"),
                EngineState::Unknown => {}
            }
        }
        *slot = state.clone();
        state
    }

    pub fn state(&self) -> EngineState {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The engine, or why containers cannot run now.
    pub fn ready(&self) -> Result<(), ContainerError> {
        match self.state() {
            EngineState::Ready(_) => Ok(()),
            EngineState::Unavailable(why) => Err(ContainerError::Unavailable(why)),
            EngineState::Unknown => Err(ContainerError::Unavailable(
                "the agent has not reached containerd yet".into(),
            )),
        }
    }

    pub fn fill_info(&self, info: &mut RuntimeInfo) {
        let (ready, note) = match self.state() {
            EngineState::Ready(note) => (true, note),
            EngineState::Unavailable(why) => (false, why),
            EngineState::Unknown => (false, "the agent has not reached containerd yet".into()),
        };
        info.containers = ready;
        info.containers_note = Some(note);
    }

    fn sandbox_of(&self, id: &TaskId) -> PathBuf {
        self.sandboxes.join(id.as_str())
    }

    fn cgroup_of(&self, id: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}/{id}",
            torc_containerd::daemon::cgroup_parent(&self.namespace)
        ))
    }

    fn container_id(id: &TaskId) -> Result<ContainerId, ContainerError> {
        ContainerId::new(id.as_str()).map_err(|e| ContainerError::Prepare(e.to_string()))
    }

    /// What the image `reference` names on this node (its target), pulled first when the node
    /// does not have it (then with the pull). `progress` hears (at most once a second) how the
    /// pull goes.
    pub async fn ensure_image(
        &self,
        image: &ImageRef,
        registry: Option<&RegistryAuth>,
        timeout: Option<Duration>,
        progress: &(dyn Fn(PullStatus) + Send + Sync),
    ) -> Result<(images::Descriptor, Option<images::Pulled>), ContainerError> {
        if let Some(target) = images::get(&self.client, image.as_str()).await? {
            return Ok((target, None));
        }
        let gate = {
            let mut pulls = self.pulls.lock().await;
            Arc::clone(pulls.entry(image.to_string()).or_default())
        };
        let result = async {
            let _one = gate.lock().await;
            if let Some(target) = images::get(&self.client, image.as_str()).await? {
                return Ok((target, None));
            }
            let pulled = self.pull(image, registry, timeout, progress).await?;
            Ok((pulled.target.clone(), Some(pulled)))
        }
        .await;
        // The last one out forgets the gate: the map holds only pulls under way.
        let mut pulls = self.pulls.lock().await;
        if Arc::strong_count(&gate) == 2 {
            pulls.remove(image.as_str());
        }
        result
    }

    /// Pulls `image` (again, even when the node has it: a tag may have moved).
    pub async fn pull(
        &self,
        image: &ImageRef,
        registry: Option<&RegistryAuth>,
        timeout: Option<Duration>,
        progress: &(dyn Fn(PullStatus) + Send + Sync),
    ) -> Result<images::Pulled, ContainerError> {
        self.ready()?;
        let options = PullOptions {
            credentials: registry
                .filter(|r| !r.user.is_empty() || !r.password.is_empty())
                .map(|r| Credentials {
                    user: r.user.clone(),
                    password: r.password.clone(),
                }),
            insecure: registry.is_some_and(|r| r.insecure),
            snapshotter: OVERLAYFS.into(),
        };
        let name = image.to_string();
        progress(PullStatus {
            fetched: 0,
            total: 0,
            message: format!("pulling {name}"),
        });
        let mut last = Instant::now();
        let (mut fetched, mut total) = (0, 0);
        let mut report = |p: PullProgress| {
            let message = match p {
                PullProgress::Resolved { total: t, .. } => {
                    total = t;
                    format!("pulling {name}: 0 of {}", mb(total))
                }
                PullProgress::Bytes { done, total: t } => {
                    (fetched, total) = (done, t);
                    if last.elapsed() < PROGRESS_EVERY && done < total {
                        return;
                    }
                    format!("pulling {name}: {} of {}", mb(done), mb(total))
                }
                PullProgress::Unpacking => format!("pulling {name}: unpacking"),
            };
            last = Instant::now();
            progress(PullStatus {
                fetched,
                total,
                message,
            });
        };
        let limit = timeout.unwrap_or(PULL_TIMEOUT);
        match tokio::time::timeout(
            limit,
            images::pull(&self.client, image, &options, &mut report),
        )
        .await
        {
            Ok(Err(images::PullError::Refused {
                image,
                registry,
                what,
            })) if options.credentials.is_none() => Err(ContainerError::RefusedWithoutLogin {
                image,
                registry,
                what,
            }),
            Ok(pulled) => Ok(pulled?),
            // What it wrote stays under its lease, which containerd expires within the hour.
            Err(_) => Err(ContainerError::PullTimeout {
                image: name.clone(),
                seconds: limit.as_secs(),
                fetched: mb(fetched),
                total: mb(total),
            }),
        }
    }

    /// How image `name` runs, with its unpacked chain: from the cache when the name still
    /// points at the digest it was read from (`target`, as `ensure_image` found it), else read
    /// and unpacked (an unpack writes a GC label and leases: done once per image, not per
    /// start).
    async fn run_config(
        &self,
        name: &str,
        target: &images::Descriptor,
    ) -> Result<RunConfig, ContainerError> {
        if let Some((digest, run)) = self.cached(name)
            && digest == target.digest
        {
            return Ok(run);
        }
        let run = images::run_config(&self.client, name).await?;
        let chain = images::unpack(&self.client, name, OVERLAYFS).await?;
        let run = RunConfig {
            chain_id: chain,
            ..run
        };
        self.run_configs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (target.digest.clone(), run.clone()));
        Ok(run)
    }

    fn cached(&self, name: &str) -> Option<(String, RunConfig)> {
        let cache = self.run_configs.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(name).cloned()
    }

    /// Forgets what the cache says of image `name` (its chain was not there after all).
    fn forget(&self, name: &str) {
        let mut cache = self.run_configs.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(name);
    }

    /// The container record, then its rootfs snapshot: the record references the snapshot by
    /// key, which keeps it from containerd's GC from the moment it is prepared (no lease, two
    /// writes fewer per start). A leftover of an earlier start that never ran (a record or a
    /// snapshot of this id) is removed and the step done again; a parent chain gone from the
    /// snapshotter (the image was removed and imported again) is unpacked again.
    async fn create_container(
        &self,
        new: &NewContainer,
        image: &str,
        chain: &str,
    ) -> Result<Vec<torc_containerd::Mount>, ContainerError> {
        let cid = &new.id;
        if let Err(e) = self.client.create_container(new).await {
            if !e.is_already_exists() {
                return Err(e.into());
            }
            self.client.remove(cid).await?;
            self.client.create_container(new).await?;
        }
        let prepare = |parent: String| async move {
            self.client
                .prepare_snapshot(OVERLAYFS, cid.as_str(), &parent, HashMap::new())
                .await
        };
        match prepare(chain.to_string()).await {
            Ok(mounts) => Ok(mounts),
            Err(e) if e.is_already_exists() => {
                self.client.remove_snapshot(OVERLAYFS, cid.as_str()).await?;
                Ok(prepare(chain.to_string()).await?)
            }
            Err(e) if e.is_not_found() => {
                self.forget(image);
                let target = images::get(&self.client, image)
                    .await?
                    .ok_or_else(|| ContainerError::NoImage(image.into()))?;
                let run = self.run_config(image, &target).await?;
                Ok(prepare(run.chain_id).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Everything of a container task before its start: the image, its config, the user.
    async fn prepare(
        &self,
        req: &StartRequest<'_>,
        node_netns: &std::fs::File,
        container: &ContainerSpec,
        cid: &ContainerId,
        sandbox: &Path,
    ) -> Result<(Vec<u8>, RunConfig, Option<i32>), ContainerError> {
        let progress = |message: String| {
            if let Some(p) = req.progress {
                p(message);
            }
        };
        let started = Instant::now();
        let pull_progress = |s: PullStatus| progress(s.message);
        let (target, pulled) = self
            .ensure_image(
                &container.image,
                req.registry,
                req.pull_timeout,
                &pull_progress,
            )
            .await?;
        if let Some(pulled) = pulled {
            progress(format!(
                "pulled {} ({}) in {:.1} s",
                pulled.name,
                mb(pulled.size),
                started.elapsed().as_secs_f64()
            ));
        }
        let run = self.run_config(container.image.as_str(), &target).await?;
        let spec = req.spec;
        let data_dir = self.data_dirs.join(spec.name.as_str());
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            ContainerError::Prepare(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let files = write_sandbox_files(sandbox, req, container)?;
        let fill = |t: &str| {
            torc_types::expand_placeholders(t, Some(req.ip), req.ports)
                .replace("$DATA_DIR", spec::DATA_DIR)
                .replace("$SECRETS_DIR", spec::SECRETS_DIR)
        };
        let args = spec::argv(spec, container, &run.entrypoint, &run.cmd, fill)?;
        let mut over: BTreeMap<String, String> =
            spec.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect();
        over.extend(req.extra_env.clone());
        over.insert("TORC_DATA_DIR".into(), spec::DATA_DIR.into());
        let mut binds = files;
        // The service's data directories this start made or mounts, to be given to the
        // container's user below.
        let mut data_dirs = vec![data_dir.clone()];
        binds.push(Bind {
            source: data_dir.display().to_string(),
            destination: spec::DATA_DIR.into(),
            read_only: false,
        });
        if !req.files.is_empty() {
            let secrets =
                crate::runtime::write_secrets(sandbox, req.files, &None).map_err(|e| {
                    ContainerError::Prepare(format!("cannot write the task's secrets: {e}"))
                })?;
            binds.push(Bind {
                source: secrets.display().to_string(),
                destination: spec::SECRETS_DIR.into(),
                read_only: true,
            });
            over.insert("TORC_SECRETS_DIR".into(), spec::SECRETS_DIR.into());
            if req.files.contains_key("token") {
                over.insert(
                    "TORC_TOKEN_FILE".into(),
                    format!("{}/token", spec::SECRETS_DIR),
                );
            }
        }
        if let Some(ca) = over.get(torc_client::ENV_CA).cloned() {
            binds.push(Bind {
                source: ca,
                destination: spec::CA_FILE.into(),
                read_only: true,
            });
            over.insert(torc_client::ENV_CA.into(), spec::CA_FILE.into());
        }
        for v in &container.volumes {
            let source = match v.data_dir_subpath() {
                Some(sub) => {
                    let dir = data_dir.join(sub.trim_start_matches('/'));
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        ContainerError::Prepare(format!("cannot create {}: {e}", dir.display()))
                    })?;
                    data_dirs.push(dir.clone());
                    dir
                }
                None => PathBuf::from(v.host_path()),
            };
            if !source.exists() {
                return Err(ContainerError::Prepare(format!(
                    "volume {}: no such file or directory on {}",
                    v.host_path(),
                    self.node
                )));
            }
            binds.push(Bind {
                source: source.display().to_string(),
                destination: v.container_path().to_string(),
                read_only: v.read_only(),
            });
        }
        let env = spec::environment(&run.env, &over);
        let user_text = container
            .options
            .user
            .clone()
            .unwrap_or_else(|| run.user.clone());
        let user = self.resolve_user(&user_text, cid, &run).await?;
        // `$DATA_DIR` is the service's own: a container running as a user of its image writes
        // there as that user (the directories, not what is in them, change owner).
        if user.0 != 0 {
            for dir in &data_dirs {
                nix::unistd::chown(
                    dir,
                    Some(nix::unistd::Uid::from_raw(user.0)),
                    Some(nix::unistd::Gid::from_raw(user.1)),
                )
                .map_err(|e| {
                    ContainerError::Prepare(format!(
                        "cannot give {} to user {}:{}: {e}",
                        dir.display(),
                        user.0,
                        user.1
                    ))
                })?;
            }
        }
        let cwd = container
            .options
            .workdir
            .clone()
            .or_else(|| (!run.working_dir.is_empty()).then(|| run.working_dir.clone()))
            .unwrap_or_else(|| "/".into());
        let network = match spec::network_mode(spec, container) {
            torc_types::NetworkMode::Rack => match req.netns {
                Some(fd) => Netns::Path(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                )),
                None => {
                    return Err(ContainerError::Prepare(
                        "the task is on the rack network but has no namespace".into(),
                    ));
                }
            },
            torc_types::NetworkMode::None => Netns::New,
            // The node's namespace, named explicitly: containerd may live in another one
            // (a namespaced local rack's runs in the host's).
            // (the calling thread's: an agent may have entered its node's namespace on its
            // threads only), held open by the caller until runc joined it.
            torc_types::NetworkMode::Host => Netns::Path(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                std::os::fd::AsRawFd::as_raw_fd(node_netns)
            )),
        };
        let devices = container
            .options
            .devices
            .iter()
            .map(host_device)
            .collect::<Result<Vec<_>, _>>()?;
        let prepared = Prepared {
            args,
            env,
            cwd,
            user,
            network,
            cgroup: self.cgroup_of(cid.as_str()).display().to_string(),
            hostname: container
                .options
                .hostname
                .clone()
                .unwrap_or_else(|| spec.name.to_string()),
            binds,
            devices,
            swap_accounted: self.swap_accounted,
            capability_bound: self.capability_bound,
        };
        let json = spec::build(spec, container, &prepared);
        let stop_signal = match &container.options.stop_signal {
            Some(s) => Some(s.number()),
            None if !run.stop_signal.is_empty() => torc_types::Signal::parse(&run.stop_signal)
                .ok()
                .map(|s| s.number()),
            None => None,
        };
        Ok((
            serde_json::to_vec(&json).expect("a spec serialises"),
            run,
            stop_signal,
        ))
    }

    /// `USER[:GROUP]` as numbers; names are looked up in the image's `/etc/passwd` and
    /// `/etc/group` (its unpacked top layer, mounted read-only for the lookup).
    async fn resolve_user(
        &self,
        text: &str,
        cid: &ContainerId,
        run: &RunConfig,
    ) -> Result<(u32, u32, Vec<u32>), ContainerError> {
        let (user, group) = match text.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (text, None),
        };
        let user = if user.is_empty() { "0" } else { user };
        let numeric = |t: &str| t.parse::<u32>().ok();
        if let (Some(uid), None) = (numeric(user), group) {
            return Ok((uid, uid, vec![]));
        }
        if let (Some(uid), Some(gid)) = (numeric(user), group.and_then(numeric)) {
            return Ok((uid, gid, vec![]));
        }
        let (passwd, groups) = self.image_files(cid, run).await?;
        let (uid, primary) = match numeric(user) {
            Some(uid) => (uid, uid),
            None => torc_procfs_users::lookup_user(&passwd, user).ok_or_else(|| {
                ContainerError::Prepare(format!("user {user}: not in the image's /etc/passwd"))
            })?,
        };
        let gid = match group {
            None => primary,
            Some(g) => match numeric(g) {
                Some(gid) => gid,
                None => torc_procfs_users::lookup_group(&groups, g).ok_or_else(|| {
                    ContainerError::Prepare(format!("group {g}: not in the image's /etc/group"))
                })?,
            },
        };
        Ok((uid, gid, vec![]))
    }

    /// The image's `/etc/passwd` and `/etc/group`, read through a read-only view of its top
    /// layer chain (a temporary snapshot, removed at once).
    async fn image_files(
        &self,
        cid: &ContainerId,
        run: &RunConfig,
    ) -> Result<(String, String), ContainerError> {
        let key = format!("{cid}-users");
        let _ = self.client.remove_snapshot(OVERLAYFS, &key).await;
        let lease = self.client.create_lease(Duration::from_secs(300)).await?;
        let leased = self.client.with_lease(&lease)?;
        let mounts = leased
            .prepare_snapshot(OVERLAYFS, &key, &run.chain_id, HashMap::new())
            .await?;
        let result = tokio::task::spawn_blocking(move || read_through_mounts(&mounts))
            .await
            .map_err(|e| ContainerError::Prepare(format!("cannot read the image's users: {e}")))?;
        let _ = self.client.remove_snapshot(OVERLAYFS, &key).await;
        let _ = self.client.delete_lease(&lease, false).await;
        result.map_err(ContainerError::Prepare)
    }

    async fn start_container(&self, req: &StartRequest<'_>) -> Result<Started, RuntimeError> {
        let container = req
            .spec
            .container
            .as_ref()
            .ok_or_else(|| RuntimeError::Container("the task has no image".into()))?;
        self.ready()?;
        let cid = Self::container_id(req.id)?;
        // A task id starts at most once: a task of it that runs is adopted, one that ran is
        // not run again.
        match self.client.task(&cid).await.map_err(ContainerError::from)? {
            Some(t) if t.status != TaskStatus::Stopped && t.status != TaskStatus::Created => {
                return Err(RuntimeError::AlreadyRunning(
                    self.handle(req.id, t.pid, None),
                ));
            }
            Some(t) if t.status == TaskStatus::Stopped => {
                return Err(RuntimeError::Container(format!(
                    "container {cid} ran already on this node (exit status {}); it is not run again",
                    t.exit_status
                )));
            }
            // Created but never started: nothing of the task ran; start over.
            Some(_) => {
                let _ = self.client.kill_task(&cid, Signal::SIGKILL, true).await;
                self.client
                    .remove(&cid)
                    .await
                    .map_err(ContainerError::from)?;
            }
            // A leftover record or snapshot without a task is handled as it is met.
            None => {}
        }
        let sandbox = self.sandbox_of(req.id);
        let sandbox_err = |source| RuntimeError::Sandbox {
            path: sandbox.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&sandbox).map_err(sandbox_err)?;
        let (stdout, stderr) = (sandbox.join("stdout"), sandbox.join("stderr"));
        for path in [&stdout, &stderr] {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(sandbox_err)?;
        }
        let _ = std::fs::remove_file(crate::runtime::status_file(&sandbox));
        // The node's namespace (this thread's), open until the task is created: a container on
        // the node's network joins it through this descriptor.
        let node_netns = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| {
            RuntimeError::Container(format!("cannot open the node's network namespace: {e}"))
        })?;
        let (spec_json, run, stop_signal) = self
            .prepare(req, &node_netns, container, &cid, &sandbox)
            .await?;

        let mut labels = HashMap::from([
            (LABEL_TASK.to_string(), req.id.to_string()),
            (LABEL_SERVICE.to_string(), req.spec.name.to_string()),
            (LABEL_NODE.to_string(), self.node.clone()),
        ]);
        if let Some(s) = stop_signal {
            labels.insert(LABEL_STOP_SIGNAL.to_string(), s.to_string());
        }
        for (k, v) in &container.options.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let new = NewContainer {
            id: cid.clone(),
            labels,
            image: container.image.to_string(),
            spec_json,
            runc: self.runc.clone(),
            snapshotter: OVERLAYFS.into(),
            snapshot_key: cid.to_string(),
        };
        let created = self
            .create_container(&new, container.image.as_str(), &run.chain_id)
            .await;
        let started = async {
            let mounts = created?;
            self.client
                .create_task(&NewTask {
                    id: cid.clone(),
                    rootfs: mounts,
                    io: match &self.logger {
                        Some(program) => TaskIo::Logger {
                            program: program.clone(),
                            args: vec![
                                ("container-log".into(), sandbox.display().to_string()),
                                ("max-bytes".into(), req.logs.max_bytes.to_string()),
                                ("files".into(), req.logs.files.to_string()),
                            ],
                        },
                        None => TaskIo::Files { stdout, stderr },
                    },
                    runc: Some(self.runc.clone()),
                })
                .await?;
            Ok::<u32, ContainerError>(self.client.start_task(&cid).await?)
        }
        .await;
        drop(node_netns);
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                // Nothing of it stays: a failed start leaves no task, container or snapshot.
                let _ = self.client.kill_task(&cid, Signal::SIGKILL, true).await;
                if let Err(e) = self.client.remove(&cid).await {
                    tracing::warn!(task = %req.id, error = %e, "cannot remove a container that did not start");
                }
                return Err(e.into());
            }
        };
        Ok(Started::adopted(self.handle(req.id, pid, stop_signal)))
    }

    fn handle(&self, id: &TaskId, pid: u32, stop_signal: Option<i32>) -> Handle {
        Handle {
            sandbox: self.sandbox_of(id),
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
            container: Some(ContainerRef {
                id: id.to_string(),
                namespace: self.namespace.to_string(),
                cgroup: self.cgroup_of(id.as_str()),
                stop_signal,
            }),
        }
    }

    /// Signals every process of the container's cgroup.
    fn signal_all(&self, handle: &Handle, sig: Signal) {
        let Some(c) = &handle.container else { return };
        for pid in self.cgroups.procs(&c.cgroup) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    /// How the container ended, recorded in its sandbox first (so an end is never lost),
    /// then its task, container and snapshot removed.
    async fn collect(&self, id: &ContainerId, sandbox: &Path, status: u32) -> ExitRecord {
        let cgroup = self.cgroup_of(id.as_str());
        let oom = self.cgroups.oom_kills(&cgroup).is_some_and(|n| n > 0);
        let exit = torc_containerd::Exit { status, at: None };
        let record = ExitRecord {
            exit_code: status as i32,
            signal: exit.signal().map(|s| s as i32),
            stopped: self
                .stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id.as_str()),
            spawn_error: None,
            oom,
        };
        if let Err(e) = record.write(&crate::runtime::status_file(sandbox)) {
            tracing::error!(task = %id, error = %e, "cannot record the container's end");
        }
        self.clean_up(id).await;
        record
    }

    async fn clean_up(&self, id: &ContainerId) {
        for attempt in 0..5 {
            match self.client.remove(id).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, attempt, "cannot remove an ended container");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }

    /// `Tasks.Get`, asked again while containerd cannot answer (up to `patience`).
    async fn task_of(
        &self,
        id: &ContainerId,
        patience: Duration,
    ) -> Result<Option<torc_containerd::TaskInfo>, torc_containerd::Error> {
        let deadline = Instant::now() + patience;
        loop {
            match self.client.task(id).await {
                Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    pub async fn list_images(&self) -> Result<Vec<images::ImageInfo>, ContainerError> {
        self.ready()?;
        Ok(images::list(&self.client).await?)
    }

    /// Imports an archive's images; with `name`, its one image under that name.
    pub async fn import<R: std::io::Read + Send + 'static>(
        &self,
        archive: R,
        name: Option<&ImageRef>,
    ) -> Result<Vec<images::Imported>, ContainerError> {
        self.ready()?;
        Ok(images::import_as(&self.client, archive, OVERLAYFS, name).await?)
    }

    /// Removes image `name`; refused while `users` (tasks using it) is not empty, unless
    /// `force`.
    pub async fn remove_image(
        &self,
        name: &str,
        users: &[TaskId],
        force: bool,
    ) -> Result<images::Freed, ContainerError> {
        self.ready()?;
        if !users.is_empty() && !force {
            return Err(ContainerError::InUse {
                image: name.into(),
                tasks: users
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        images::remove(&self.client, name)
            .await?
            .ok_or_else(|| ContainerError::NoImage(name.into()))
    }

    /// The containerd namespace of this agent's containers and images.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A `--device`'s node as the host has it.
fn host_device(d: &torc_types::Device) -> Result<HostDevice, ContainerError> {
    use nix::sys::stat::SFlag;
    let st = nix::sys::stat::stat(d.host_path.as_str())
        .map_err(|e| ContainerError::Prepare(format!("device {}: {e}", d.host_path)))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let kind = if kind == SFlag::S_IFCHR {
        'c'
    } else if kind == SFlag::S_IFBLK {
        'b'
    } else {
        return Err(ContainerError::Prepare(format!(
            "device {}: not a character or block device",
            d.host_path
        )));
    };
    Ok(HostDevice {
        container_path: d.container_path.clone(),
        kind,
        major: nix::sys::stat::major(st.st_rdev),
        minor: nix::sys::stat::minor(st.st_rdev),
        mode: st.st_mode & 0o7777,
        permissions: d.permissions.clone(),
    })
}

/// The sandbox's `resolv.conf`, `hosts` and `hostname`, bound read-only over the image's.
fn write_sandbox_files(
    sandbox: &Path,
    req: &StartRequest<'_>,
    container: &ContainerSpec,
) -> Result<Vec<Bind>, ContainerError> {
    let options = &container.options;
    let hostname = options
        .hostname
        .clone()
        .unwrap_or_else(|| req.spec.name.to_string());
    let resolv = if !options.dns.is_empty() {
        options
            .dns
            .iter()
            .map(|ip| format!("nameserver {ip}\n"))
            .collect::<String>()
    } else if let Some(text) = req.resolv_conf {
        text.to_string()
    } else {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    };
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{hostname}\n",
        req.ip
    );
    for h in &options.extra_hosts {
        hosts.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    let mut binds = Vec::new();
    for (name, text, dest) in [
        ("resolv.conf", resolv, "/etc/resolv.conf"),
        ("hosts", hosts, "/etc/hosts"),
        ("hostname", format!("{hostname}\n"), "/etc/hostname"),
    ] {
        let path = sandbox.join(name);
        std::fs::write(&path, text).map_err(|e| {
            ContainerError::Prepare(format!("cannot write {}: {e}", path.display()))
        })?;
        binds.push(Bind {
            source: path.display().to_string(),
            destination: dest.into(),
            read_only: true,
        });
    }
    Ok(binds)
}

/// Mounts a read-only view's mounts on a temporary directory, reads `etc/passwd` and
/// `etc/group`, unmounts.
fn read_through_mounts(mounts: &[torc_containerd::Mount]) -> Result<(String, String), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let dir = tempdir_in_run().map_err(|e| format!("cannot make a mount point: {e}"))?;
    let Some(m) = mounts.first() else {
        return Err("the image's view has no mount".into());
    };
    let mut flags = MsFlags::MS_RDONLY;
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => {}
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "bind" => flags |= MsFlags::MS_BIND,
            other => data.push(other.to_string()),
        }
    }
    let data = data.join(",");
    mount(
        Some(m.source.as_str()),
        &dir,
        Some(m.r#type.as_str()),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| format!("cannot mount the image ({}): {e}", m.r#type))?;
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let out = (read("etc/passwd"), read("etc/group"));
    let _ = umount2(&dir, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&dir);
    Ok(out)
}

/// A fresh directory to mount an image view on (unique per process and call).
fn tempdir_in_run() -> std::io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("torc-users-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir(&dir);
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// Lookups in `/etc/passwd` and `/etc/group` texts.
mod torc_procfs_users {
    /// `name:x:uid:gid:…` → (uid, gid).
    pub fn lookup_user(passwd: &str, name: &str) -> Option<(u32, u32)> {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    }

    /// `name:x:gid:…` → gid.
    pub fn lookup_group(group: &str, name: &str) -> Option<u32> {
        group.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
        })
    }

    #[cfg(test)]
    #[test]
    fn looks_up_users_and_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n";
        assert_eq!(lookup_user(passwd, "www"), Some((33, 34)));
        assert_eq!(lookup_user(passwd, "nobody"), None);
        assert_eq!(lookup_group("www:x:34:\n", "www"), Some(34));
    }
}

impl crate::runtime::Runtime for ContainerRuntime {
    fn info(&self) -> RuntimeInfo {
        let mut info = RuntimeInfo {
            kind: "containerd".into(),
            limits_enforced: true,
            limits_note: None,
            rack_network: false,
            rack_network_note: None,
            containers: false,
            containers_note: None,
        };
        self.fill_info(&mut info);
        info
    }

    async fn start(&self, req: &StartRequest<'_>) -> Result<Started, RuntimeError> {
        self.start_container(req).await
    }

    /// The stop signal to the container's init process now (the agent kills every process of
    /// it after the grace period: see `kill_now`). Signalled directly, as runc's `kill` does,
    /// so a stop works while containerd is away.
    fn stop(&self, handle: &Handle) {
        let Some(c) = &handle.container else { return };
        self.stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.id.clone());
        if self.is_alive(handle) {
            let sig = c
                .stop_signal
                .and_then(|n| Signal::try_from(n).ok())
                .unwrap_or(Signal::SIGTERM);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(handle.pid as i32), sig);
        }
    }

    /// SIGKILL to every process in the container's cgroup (runc's `kill --all`), at once.
    fn kill_now(&self, handle: &Handle) {
        if let Some(c) = &handle.container {
            self.stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.id.clone());
        }
        self.signal_all(handle, Signal::SIGKILL);
        if self.is_alive(handle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(handle.pid as i32),
                Signal::SIGKILL,
            );
        }
    }

    fn is_alive(&self, handle: &Handle) -> bool {
        handle.pid != 0 && process_start_time(handle.pid) == Some(handle.start_time)
    }

    /// Waits for containerd's word on the end (asking again while containerd is away: the shim
    /// keeps the status), then records and cleans up.
    async fn ended(&self, task: Started) -> Option<ExitRecord> {
        let handle = task.handle;
        let c = handle.container.as_ref()?;
        let Ok(cid) = ContainerId::new(c.id.as_str()) else {
            return ExitRecord::read(&handle.status_file());
        };
        let mut pause = Duration::from_millis(250);
        loop {
            match self.client.wait_task(&cid).await {
                Ok(exit) => return Some(self.collect(&cid, &handle.sandbox, exit.status).await),
                Err(e) if e.is_not_found() => {
                    // Gone from containerd: an earlier agent recorded the end, or nothing does.
                    let record = ExitRecord::read(&handle.status_file());
                    self.clean_up(&cid).await;
                    return record;
                }
                Err(e) => {
                    tracing::warn!(task = %cid, error = %e, "waiting for a container's end; asking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn find(&self, id: &TaskId) -> Found {
        let Ok(cid) = ContainerId::new(id.as_str()) else {
            return Found::Never;
        };
        let sandbox = self.sandbox_of(id);
        let info = match self.task_of(&cid, Duration::from_secs(30)).await {
            Ok(info) => info,
            Err(e) => {
                tracing::error!(task = %id, error = %e, "cannot ask containerd about a task the last agent was starting");
                return match ExitRecord::read(&crate::runtime::status_file(&sandbox)) {
                    Some(r) => Found::Ended(r),
                    None => Found::Never,
                };
            }
        };
        match info {
            Some(t) if t.status == TaskStatus::Stopped => {
                Found::Ended(self.collect(&cid, &sandbox, t.exit_status).await)
            }
            Some(t) if t.status == TaskStatus::Created => {
                // Created, never started: nothing of the task ran.
                let _ = self.client.kill_task(&cid, Signal::SIGKILL, true).await;
                self.clean_up(&cid).await;
                Found::Never
            }
            Some(t) => {
                let stop_signal = match self.client.container(&cid).await {
                    Ok(Some(c)) => c.labels.get(LABEL_STOP_SIGNAL).and_then(|s| s.parse().ok()),
                    _ => None,
                };
                Found::Running(self.handle(id, t.pid, stop_signal))
            }
            None => {
                let record = ExitRecord::read(&crate::runtime::status_file(&sandbox));
                // A container record without a task: it ended and was half cleaned up, or it
                // never got a task.
                self.clean_up(&cid).await;
                match record {
                    Some(r) => Found::Ended(r),
                    None => Found::Never,
                }
            }
        }
    }

    fn probe(&self, handle: &Handle) -> Probe {
        match &handle.container {
            Some(c) => Probe::Cgroup(c.cgroup.clone()),
            None => Probe::Tree(handle.pid),
        }
    }
}
