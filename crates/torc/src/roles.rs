//! The long-running roles: `torc controller`, `agent`, `dns`, `kv`, `statesync`, `tsdb`,
//! `datacollector`, and the internal `torc shim` (`torc network-agent` is in
//! `network_agent.rs`, `torc up` in `up.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use torc_config::RackConfig;
use torc_controller::{AuthMode, Controller, ControllerOptions, ElectedOptions, RackSettings};
use torc_types::{NodeName, NodeType, PortRange, Resources};

use crate::process::{NotKeyValue, init_tracing, key_value, shutdown_signal};

/// `torc controller [OPTIONS]` runs the role; `torc controller status|step-down` asks a
/// running one.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ControllerArgs {
    #[command(subcommand)]
    action: Option<ControllerAction>,
    /// The rack config (YAML).
    #[arg(long, short = 'c', required = true)]
    config: Option<PathBuf>,
    /// Where the controller keeps its state.
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Address of the API. Default: the controller node's ip (the config's `master` node), port 3000.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// An admin token: used when the file exists, else a fresh one is written there (0600).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// The join token agents register with, the same way.
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// Check no credentials at all: anyone who reaches the API may run anything anywhere.
    #[arg(long, conflicts_with_all = ["admin_token_file", "join_token_file"])]
    insecure: bool,
    /// The rack CA (`torc ca init DIR`): serve TLS, check agents' certificates, issue nodes'
    /// and tasks' certificates.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Serve plain HTTP (no --ca-dir): tokens then cross the network in the clear.
    #[arg(long, conflicts_with = "ca_dir")]
    plaintext: bool,
    /// A DNS name browsers reach the UI by (IP addresses and the rack's own names always work).
    #[arg(long = "ui-host")]
    ui_hosts: Vec<String>,
    /// `$NAME=value` substitutions for the config (e.g. `MASTER_IP=10.250.3.20`).
    #[arg(long = "var", value_parser = parse_key_val)]
    vars: Vec<(String, String)>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Where the controller keeps the rack's state: a local file (one controller), or etcd (several
/// controllers of one rack, one of them leading).
#[derive(Args)]
struct StoreArgs {
    /// `redb`: a local file in --data-dir (one controller). `etcd`: an etcd v3 cluster shared
    /// by the rack's controllers, which elect a leader through it.
    #[arg(long, value_enum, default_value = "redb")]
    store: StoreKind,
    /// The etcd members' client URLs (`https://` with --etcd-ca).
    #[arg(long, value_delimiter = ',', required_if_eq("store", "etcd"))]
    etcd_endpoints: Vec<String>,
    /// The CA etcd's certificates chain to.
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// A client certificate to authenticate to etcd with (its CN is the etcd user).
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// An etcd user to authenticate as, with --etcd-password-file.
    #[arg(long, requires = "etcd_password_file")]
    etcd_user: Option<String>,
    #[arg(long, requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// Where the rack's state lives in etcd. Default: `/torc-controller/<rack name>/`.
    #[arg(long)]
    etcd_prefix: Option<String>,
    /// The leader's lease, in seconds: how long after a leader is lost another takes over.
    #[arg(long, default_value_t = 2)]
    lease_ttl: u64,
    /// How long a commit may take before its outcome counts as unknown, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    etcd_commit_timeout_ms: u64,
    /// The largest commit in bytes (etcd's own `--max-request-bytes` must be at least this).
    #[arg(long, default_value_t = 1536 * 1024)]
    etcd_max_request_bytes: usize,
    /// This controller's name among the rack's controllers. Default: its node's (the config's
    /// `master` node at --listen's address), else the host name.
    #[arg(long)]
    name: Option<String>,
    /// The URL agents and clients reach this controller at. Default: from --listen.
    #[arg(long)]
    advertise_url: Option<String>,
    /// The key that seals rack secrets in etcd (32 bytes, 0600; made when missing). Every
    /// controller of the rack needs the same file. Default: `store.key` in --ca-dir.
    #[arg(long)]
    store_key: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Redb,
    Etcd,
}

impl ControllerArgs {
    /// `torc controller status|step-down`: a client command, not the role.
    pub fn is_client(&self) -> bool {
        self.action.is_some()
    }
}

#[derive(clap::Subcommand)]
enum ControllerAction {
    /// The rack's controllers: who leads, where the answering one stands, the store's members.
    Status {
        #[command(flatten)]
        target: crate::cli::Target,
    },
    /// Ask the leader to hand over to a standby (before its switch is upgraded, say).
    StepDown {
        #[command(flatten)]
        target: crate::cli::Target,
    },
}

fn parse_key_val(s: &str) -> Result<(String, String), NotKeyValue> {
    key_value("NAME", s)
}

pub fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    match &args.action {
        Some(ControllerAction::Status { target }) => return crate::cli::controller_status(target),
        Some(ControllerAction::StepDown { target }) => {
            return crate::cli::controller_step_down(target);
        }
        None => {}
    }
    let (Some(config_path), Some(data_dir)) = (args.config.clone(), args.data_dir.clone()) else {
        anyhow::bail!("torc controller needs --config FILE and --data-dir DIR");
    };
    init_tracing("info");
    let vars: BTreeMap<String, String> = args.vars.into_iter().collect();
    let config = RackConfig::load_with(&config_path, &vars)?;
    let origin = config_path.display().to_string();
    let listen = match args.listen {
        Some(addr) => addr,
        None => {
            let master = config
                .nodes
                .iter()
                .find(|n| n.node_type == NodeType::Master)
                .map(|n| n.ip)
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            SocketAddr::new(master, 3000)
        }
    };
    anyhow::ensure!(
        args.ca_dir.is_some() || args.plaintext,
        "give --ca-dir DIR (a rack CA: `torc ca init DIR`) to serve TLS, or --plaintext to serve plain HTTP"
    );
    if args.plaintext {
        tracing::warn!("--plaintext: tokens and task specs cross the network unencrypted");
    }
    let auth = if args.insecure {
        AuthMode::Insecure
    } else {
        AuthMode::Tokens {
            admin_token_file: args.admin_token_file.clone(),
            join_token_file: args.join_token_file.clone(),
        }
    };
    let mut settings = RackSettings::from_config(&config, &origin);
    settings.controller_addr = Some(listen);
    let options = ControllerOptions {
        auth,
        ca_dir: args.ca_dir.clone(),
        ui_hosts: args.ui_hosts.clone(),
    };
    let controller = match args.store.store {
        StoreKind::Redb => Controller::open(settings, &data_dir, options)?,
        StoreKind::Etcd => {
            let s = &args.store;
            let name = match &s.name {
                Some(n) => n.clone(),
                None => config
                    .nodes
                    .iter()
                    .find(|n| n.node_type == NodeType::Master && n.ip == listen.ip())
                    .map(|n| n.name.to_string())
                    .or_else(|| {
                        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                        Some(host.trim().to_string()).filter(|h| !h.is_empty())
                    })
                    .unwrap_or_else(|| "controller".into()),
            };
            let scheme = if args.ca_dir.is_some() {
                "https"
            } else {
                "http"
            };
            let advertise_url = s
                .advertise_url
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{listen}"));
            let store_key = match (&s.store_key, &args.ca_dir) {
                (Some(k), _) => k.clone(),
                (None, Some(ca)) => ca.join("store.key"),
                (None, None) => anyhow::bail!(
                    "--store etcd without --ca-dir needs --store-key FILE: the key that seals rack secrets in etcd, the same file on every controller of the rack"
                ),
            };
            let elected = ElectedOptions {
                store_key,
                endpoints: s.etcd_endpoints.clone(),
                ca: s.etcd_ca.clone(),
                cert: s.etcd_cert.clone().zip(s.etcd_key.clone()),
                user: s.etcd_user.clone().zip(s.etcd_password_file.clone()),
                prefix: s.etcd_prefix.clone(),
                name,
                advertise_url,
                lease_ttl: Duration::from_secs(s.lease_ttl),
                commit_timeout: Duration::from_millis(s.etcd_commit_timeout_ms),
                max_request_bytes: s.etcd_max_request_bytes,
                data_dir: data_dir.clone(),
            };
            Controller::open_elected(settings, options, elected)?
        }
    };
    let name = config.name.clone();
    controller.set_config(
        config,
        Some(torc_controller::ConfigFile {
            path: config_path,
            vars,
        }),
    );
    serve_role(
        listen,
        2,
        &format!("controller of rack {name} serving"),
        |listener| async move {
            tokio::spawn(apply_on_sighup(Arc::clone(&controller)));
            controller.serve(listener, shutdown_signal()).await?;
            tracing::info!("controller stopped");
            Ok(())
        },
    )
}

/// SIGHUP: the controller reads its config file again and applies it (as `torc apply` would:
/// the report is logged, the changes and rollouts go to the event feed).
async fn apply_on_sighup(controller: Arc<Controller>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP: the config is read again only at a restart");
        return;
    };
    while hup.recv().await.is_some() {
        let ctl = Arc::clone(&controller);
        match tokio::task::spawn_blocking(move || ctl.apply_config(None, None, false)).await {
            Ok(Ok(report)) => tracing::info!(
                added = ?report.added,
                removed = ?report.removed,
                changed = ?report.changed.iter().map(|c| &c.service).collect::<Vec<_>>(),
                needs_restart = ?report.needs_restart,
                "SIGHUP: the rack config file was applied"
            ),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: the rack config file was not applied")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: the apply did not finish"),
        }
    }
}

/// Runs a server role: a runtime with `workers` threads, a listener on `listen`, and `serve`
/// until SIGINT or SIGTERM (which `serve` awaits through `shutdown_signal`).
fn serve_role<F, Fut>(
    listen: SocketAddr,
    workers: usize,
    what: &str,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(%listen, "{what}");
        serve(listener).await
    })
}

#[derive(Args)]
pub struct AgentArgs {
    /// The controllers' URLs, comma-separated: the agent follows the leader among them.
    #[arg(long, env = "TORC_CONTROLLER")]
    controller: String,
    /// This node's name, as in the rack config.
    #[arg(long)]
    name: NodeName,
    /// This node's address: the agent listens here and tasks bind here.
    #[arg(long)]
    ip: IpAddr,
    /// Where the agent keeps its task table and the tasks' sandboxes.
    #[arg(long)]
    data_dir: PathBuf,
    /// Port of the agent API (0 = any free port).
    #[arg(long, default_value_t = 5051)]
    port: u16,
    /// The join token (`torc token create --role join`): registers the node the first time;
    /// the node's own credential, kept in the data dir, is used after that.
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// The rack CA's certificate (`ca.pem`): trust only a controller whose certificate chains
    /// to it, get a node certificate at registration, serve the agent API over TLS.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// `master` or `slave` (the config's `type` wins when the node is listed there).
    #[arg(long = "type")]
    node_type: Option<NodeType>,
    /// `controller`, `compute`, ... (the config's `function` wins when set there).
    #[arg(long = "function")]
    node_function: Option<String>,
    /// CPUs offered (default: this machine's).
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory offered in MiB (default: this machine's).
    #[arg(long)]
    mem_mb: Option<f64>,
    /// Disk offered in MiB (default: free space of the data dir's file system).
    #[arg(long)]
    disk_mb: Option<f64>,
    /// Ports handed out to tasks.
    #[arg(long, default_value = "31000-31999")]
    port_range: PortRange,
    /// Extra attributes, `key=value`.
    #[arg(long = "attribute", value_parser = parse_key_val)]
    attributes: Vec<(String, String)>,
    /// How often host and task metrics are sampled, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    metrics_interval_ms: u64,
    /// Stop all tasks when the agent exits (a local rack). By default tasks keep running and
    /// the next agent on this node re-adopts them.
    #[arg(long)]
    kill_tasks_on_exit: bool,
    /// The user and group ids unprivileged tasks run as, one per task name on this node, from
    /// this range (ids no account uses). An agent not running as root runs every task as
    /// itself.
    #[arg(long, default_value = "200000-299999")]
    task_ids: String,
    /// containerd's socket for tasks with an image, or `off` (no containers on this node).
    #[arg(long, default_value = torc_agent::container::DEFAULT_SOCKET)]
    containerd: String,
    /// The containerd namespace this agent's containers and images live in.
    #[arg(long, default_value = torc_agent::container::DEFAULT_NAMESPACE)]
    containerd_namespace: torc_containerd::Namespace,
}

/// `--containerd PATH|off` and `--containerd-namespace NAME` as the agent's engine (`None`:
/// containers off).
fn containerd_config(
    socket: &str,
    namespace: &torc_containerd::Namespace,
) -> anyhow::Result<Option<torc_agent::ContainerdConfig>> {
    if socket == "off" {
        return Ok(None);
    }
    anyhow::ensure!(
        socket.starts_with('/'),
        "--containerd {socket:?}: expected the absolute path of containerd's socket, or `off`"
    );
    Ok(Some(torc_agent::ContainerdConfig {
        socket: PathBuf::from(socket),
        namespace: namespace.to_string(),
    }))
}

pub fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let join_token = args
        .join_token_file
        .as_deref()
        .map(torc_tls::files::read_secret)
        .transpose()?;
    anyhow::ensure!(
        !args.controller.contains("https://") || args.ca.is_some(),
        "--controller {} is HTTPS: give --ca FILE, the rack CA's certificate, to check it",
        args.controller
    );
    // A task running as this agent's user must not read its memory (where the node's
    // credential lives) through /proc.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot mark the agent undumpable");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let detected = torc_agent::detect_resources(&args.data_dir);
    let resources = Resources::new(
        args.cpus.unwrap_or(detected.cpus),
        args.mem_mb.unwrap_or(detected.mem_mb),
        args.disk_mb.unwrap_or(detected.disk_mb),
    );
    let exe = std::env::current_exe().context("cannot find the torc binary for task shims")?;
    let task_ids = {
        let (lo, hi) = args
            .task_ids
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .filter(|(a, b)| *a >= 1000 && a <= b)
            .with_context(|| {
                format!(
                    "--task-ids {}: expected FIRST-LAST, at least 1000, e.g. 200000-299999",
                    args.task_ids
                )
            })?;
        nix::unistd::geteuid().is_root().then_some(lo..=hi)
    };
    let cfg = torc_agent::AgentConfig {
        node: args.name,
        ip: args.ip,
        controller: args.controller,
        join_token,
        ca: args.ca,
        data_dir: args.data_dir,
        node_type: args.node_type,
        node_function: args.node_function,
        resources,
        port_range: args.port_range,
        attributes: args.attributes.into_iter().collect(),
        kill_tasks_on_exit: args.kill_tasks_on_exit,
        exe,
        task_ids,
        metrics_interval: Duration::from_millis(args.metrics_interval_ms.max(100)),
        containerd: containerd_config(&args.containerd, &args.containerd_namespace)?,
    };
    let listen = SocketAddr::new(cfg.ip, args.port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_keep_alive(Duration::from_secs(5))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let agent = torc_agent::Agent::open(cfg)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(%listen, "agent serving");
        agent.run(listener, shutdown_signal()).await?;
        Ok(())
    })
}

#[derive(Args)]
pub struct ShimArgs {
    #[arg(long)]
    status: PathBuf,
    #[arg(long)]
    grace_ms: u64,
    #[arg(long)]
    cgroup: Option<PathBuf>,
    #[arg(long, requires = "gid")]
    uid: Option<u32>,
    #[arg(long, requires = "uid")]
    gid: Option<u32>,
    /// The agent's lock of this task, an inherited descriptor (see torc_agent::runtime).
    #[arg(long)]
    lock_fd: Option<i32>,
    /// Copy the task's stdout and stderr into capped, rotated files of this directory.
    #[arg(long)]
    logs: Option<PathBuf>,
    /// With --logs: the cap of each file, in bytes.
    #[arg(long, default_value_t = torc_types::logs::DEFAULT_LOG_BYTES)]
    log_max_bytes: u64,
    /// With --logs: how many rotated files stay besides the current one.
    #[arg(long, default_value_t = torc_types::logs::DEFAULT_LOG_FILES)]
    log_files: u32,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// containerd's shim runs `torc` as a container's logging program (the agent's `binary://`
/// log URI) with the URI's query as arguments: the pairs `container-log DIR`,
/// `max-bytes N` and `files K` in no set order, and `CONTAINER_ID` in the environment (see
/// `torc_agent::logfiles::container_log`). The exit code when called so; `None` otherwise.
pub fn container_log_if_called() -> Option<std::process::ExitCode> {
    std::env::var_os("CONTAINER_ID")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.len().is_multiple_of(2) {
        return None;
    }
    let pairs: std::collections::BTreeMap<&str, &str> = args
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect();
    let dir = PathBuf::from(pairs.get("container-log")?);
    let number = |key: &str, default: u64| -> Result<u64, String> {
        match pairs.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("torc container-log: {key} {v:?} is not a number")),
        }
    };
    let cap = number("max-bytes", torc_types::logs::DEFAULT_LOG_BYTES).and_then(|max_bytes| {
        let files = number("files", u64::from(torc_types::logs::DEFAULT_LOG_FILES))?;
        Ok(torc_types::LogCap {
            max_bytes,
            files: u32::try_from(files).unwrap_or(u32::MAX),
        })
    });
    let code = match cap {
        Ok(cap) => torc_agent::logfiles::container_log(&dir, cap),
        Err(e) => {
            eprintln!("{e}");
            2
        }
    };
    Some(std::process::ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn run_shim(args: ShimArgs) -> std::process::ExitCode {
    let mut command = args.command.into_iter();
    let program = command.next().unwrap_or_default();
    let code = torc_agent::shim::run(torc_agent::shim::ShimArgs {
        status: args.status,
        grace: Duration::from_millis(args.grace_ms),
        cgroup: args.cgroup,
        run_as: args.uid.zip(args.gid),
        lock_fd: args.lock_fd,
        logs: args.logs.map(|dir| {
            (
                dir,
                torc_types::LogCap {
                    max_bytes: args.log_max_bytes,
                    files: args.log_files,
                },
            )
        }),
        command: program,
        args: command.collect(),
    });
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}

#[derive(Args)]
pub struct CollectorArgs {
    /// The controllers' URLs, comma-separated (default: `$TORC_CONTROLLERS`, else
    /// `$TORC_CONTROLLER`, set for tasks by their agent).
    #[arg(long)]
    controller: Option<String>,
    /// Where to write: a base URL (`http://host:8086`), or `service:NAME[:PORT]` to find the
    /// named service's instance through the controller (port: its first assigned port, else
    /// PORT, else 8086).
    #[arg(long, default_value = "service:influxdb")]
    influxdb: String,
    /// Database name (the seed's is `torc`).
    #[arg(long, default_value = "torc")]
    database: String,
    /// Seconds between collections.
    #[arg(long, default_value_t = 5)]
    interval_seconds: u64,
    /// The database user, for a database with authentication enabled.
    #[arg(long, env = "TORC_INFLUXDB_USER", requires = "password_file")]
    user: Option<String>,
    /// A file holding that user's password (a password on the command line would show in
    /// `ps`).
    #[arg(long, env = "TORC_INFLUXDB_PASSWORD_FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// How long the database's default policy (`autogen`) keeps the raw samples (e.g. 7d,
    /// 30d; INF: forever). Set where the collector creates the database.
    #[arg(long, default_value = "7d", value_parser = policy_duration)]
    retention: i64,
    /// How long the 5-minute means of `machine`, `network` and `stats` are kept in the policy
    /// `long` (written by the continuous query `torc_downsample_5m`).
    #[arg(long, default_value = "52w", value_parser = policy_duration)]
    downsample_retention: i64,
    /// No downsampling: the continuous query is dropped (the policy `long` and its data stay).
    #[arg(long)]
    no_downsample: bool,
}

/// A retention policy's duration flag: an InfluxQL duration (ns), or INF (0) for forever.
fn policy_duration(text: &str) -> Result<i64, torc_tsdb::influxql::ParseError> {
    if text.trim().eq_ignore_ascii_case("inf") {
        return Ok(0);
    }
    torc_tsdb::influxql::parse_duration(text)
}

pub fn run_collector(args: CollectorArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let target = match args.influxdb.strip_prefix("service:") {
        Some(spec) => {
            let (name, port) = match spec.split_once(':') {
                Some((n, p)) => (
                    n,
                    p.parse()
                        .with_context(|| format!("--influxdb {}: bad port {p:?}", args.influxdb))?,
                ),
                None => (spec, 8086),
            };
            torc_collector::Target::Service(name.to_string(), port)
        }
        None => torc_collector::Target::Url(args.influxdb.clone()),
    };
    let credentials = match (args.user, &args.password_file) {
        (Some(user), Some(file)) => Some(torc_collector::Credentials::from_file(user, file)?),
        _ => None,
    };
    let cfg = torc_collector::CollectorConfig {
        target,
        database: args.database,
        credentials,
        interval: Duration::from_secs(args.interval_seconds.max(1)),
        retention: torc_collector::Retention {
            duration: args.retention,
            downsample: (!args.no_downsample).then_some(args.downsample_retention),
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let controller = torc_client::Client::from_env_with(torc_client::controllers_from_env(
            args.controller,
        )?)?;
        tracing::info!(influxdb = %args.influxdb, "datacollector running");
        torc_collector::Collector::new(controller, cfg)
            .run(shutdown_signal())
            .await;
        Ok(())
    })
}

#[derive(Args)]
pub struct DnsArgs {
    /// The controllers' URLs, comma-separated, for the rack's names (default:
    /// `$TORC_CONTROLLERS`, else `$TORC_CONTROLLER`, set for tasks by their agent). Without
    /// any, only the zone files are served.
    #[arg(long)]
    controller: Option<String>,
    /// Where to answer, UDP and TCP.
    #[arg(long, default_value = "127.0.0.1:53")]
    listen: SocketAddr,
    /// Extra static records: `ORIGIN=PATH` of an RFC 1035 zone file (e.g. a bind9 zone).
    #[arg(long = "zone-file", value_parser = parse_key_val)]
    zone_files: Vec<(String, String)>,
    /// Resolvers for names outside the rack's zones (`IP:PORT`).
    #[arg(long = "upstream")]
    upstreams: Vec<SocketAddr>,
    /// Clients allowed recursion (forwarding), as CIDRs. Default: loopback only.
    #[arg(long = "allow-recursion")]
    allow_recursion: Vec<torc_dns::Cidr>,
    /// UDP sockets (SO_REUSEPORT), one per core by default.
    #[arg(long)]
    threads: Option<usize>,
    /// Write this server's query rate every few seconds to this InfluxDB-compatible database
    /// (`http://host:8086`, db `torc`, series `dns_server`): the load signal smart scaling uses.
    #[arg(long)]
    report_influxdb: Option<String>,
    /// The `server` tag of those reports (default: the listen address).
    #[arg(long)]
    report_name: Option<String>,
    #[arg(long, default_value_t = 5)]
    report_interval_secs: u64,
    /// Response-rate limiting of UDP answers (bind9's `rate-limit`): answers a second per
    /// client /24 (IPv6 /56) and question; 0 turns it off. Over it, answers are dropped, every
    /// `--rrl-slip`-th sent truncated so real clients retry over TCP. TCP is never limited.
    #[arg(long, default_value_t = torc_dns::RateLimit::default().responses_per_second)]
    rrl_responses_per_second: u32,
    /// Seconds of debt a client may run up, and after which an idle one starts afresh.
    #[arg(long, default_value_t = torc_dns::RateLimit::default().window_secs,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    rrl_window: u32,
    /// Every N-th answer over the limit is sent truncated instead of dropped (0: drop all,
    /// 1: truncate all).
    #[arg(long, default_value_t = torc_dns::RateLimit::default().slip,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    rrl_slip: u32,
    /// Leading bits of an IPv4 source that make one client for rate limiting.
    #[arg(long, default_value_t = torc_dns::RateLimit::default().ipv4_prefix_len,
          value_parser = clap::value_parser!(u8).range(8..=32))]
    rrl_ipv4_prefix_length: u8,
    /// Leading bits of an IPv6 source that make one client for rate limiting.
    #[arg(long, default_value_t = torc_dns::RateLimit::default().ipv6_prefix_len,
          value_parser = clap::value_parser!(u8).range(16..=128))]
    rrl_ipv6_prefix_length: u8,
    /// Seconds a TCP client has to send its first query (bind9's `tcp-initial-timeout`).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    tcp_initial_timeout: u64,
    /// Seconds a TCP client has to send its next query, or to take an answer (bind9's
    /// `tcp-idle-timeout`).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    tcp_idle_timeout: u64,
    /// TCP connections at once; at the cap, a new client takes the slot of the one that has
    /// waited longest on its client.
    #[arg(long, default_value_t = torc_dns::DnsConfig::default().max_tcp_connections,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    tcp_clients: usize,
    /// TCP connections at once from one source address (IPv6: one /64); more are closed.
    #[arg(long, default_value_t = torc_dns::DnsConfig::default().max_tcp_connections_per_source,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    tcp_clients_per_source: usize,
    /// Serve Prometheus `/metrics` (plain HTTP, read-only) on this address: queries, response
    /// codes, answer-cache hits, rate limiting, the names' generation. Off by default.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

pub fn run_dns(args: DnsArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let mut config = torc_dns::DnsConfig::default();
    for (origin, path) in &args.zone_files {
        config.static_zones.push(torc_dns::StaticZone::from_file(
            std::path::Path::new(path),
            Some(origin),
        )?);
    }
    config.upstreams = args.upstreams.clone();
    if !args.allow_recursion.is_empty() {
        config.allow_recursion = args.allow_recursion.clone();
    }
    config.rate_limit = torc_dns::RateLimit {
        responses_per_second: args.rrl_responses_per_second,
        window_secs: args.rrl_window,
        slip: args.rrl_slip,
        ipv4_prefix_len: args.rrl_ipv4_prefix_length,
        ipv6_prefix_len: args.rrl_ipv6_prefix_length,
    };
    config.tcp_initial_timeout = Duration::from_secs(args.tcp_initial_timeout);
    config.tcp_idle_timeout = Duration::from_secs(args.tcp_idle_timeout);
    config.max_tcp_connections = args.tcp_clients;
    config.max_tcp_connections_per_source = args.tcp_clients_per_source;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listeners = torc_dns::Listeners::bind(args.listen, threads).with_context(|| {
        format!(
            "cannot listen on {} (port 53 needs root or CAP_NET_BIND_SERVICE: `setcap cap_net_bind_service=+ep $(which torc)`)",
            args.listen
        )
    })?;
    let (server, handle) = torc_dns::DnsServer::new(config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let handle = handle.clone();
            Some(crate::metrics_http::bind(addr, move || {
                handle.prometheus()
            })?)
        }
        None => None,
    };
    rt.block_on(async move {
        if let Some(metrics) = metrics {
            tokio::spawn(metrics);
        }
        if let Some(url) = args.report_influxdb.clone() {
            let name = args
                .report_name
                .clone()
                .unwrap_or_else(|| args.listen.to_string());
            let every = Duration::from_secs(args.report_interval_secs.max(1));
            let stats = handle.clone();
            tokio::spawn(torc_collector::report_query_rate(
                url,
                name,
                every,
                move || {
                    let queries = stats.stats().queries;
                    async move { Some(queries) }
                },
            ));
        }
        if let Ok(url) = torc_client::controllers_from_env(args.controller.clone()) {
            tokio::spawn(follow_names(url, handle));
        }
        tracing::info!(listen = %args.listen, "dns serving");
        server.serve(listeners, shutdown_signal()).await?;
        Ok(())
    })
}

/// Long-polls the controller for the rack's names and applies each new snapshot, ordered by
/// `(epoch, generation)` (`torc_api::order::Follower`: a lower epoch is refused for a grace).
async fn follow_names(url: String, handle: torc_dns::DnsHandle) {
    let client = match torc_client::Client::from_env_with(url) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the controller for the rack's names");
            return;
        }
    };
    loop {
        let asked = std::time::Instant::now();
        match client
            .dns_snapshot(
                handle.snapshot_epoch(),
                handle.generation(),
                Duration::from_secs(25),
            )
            .await
        {
            Ok(snapshot) => match handle.apply(&snapshot) {
                Ok(verdict) => {
                    if let Some(warning) = verdict.warning(snapshot.epoch) {
                        tracing::warn!("the rack's names of {warning}");
                    }
                    match verdict {
                        torc_dns::Verdict::Take | torc_dns::Verdict::NewStore { .. } => {
                            tracing::debug!(
                                epoch = snapshot.epoch,
                                generation = snapshot.generation,
                                "names updated"
                            );
                        }
                        // Not newer: the long poll answered at its deadline. Never a busy
                        // loop, even against a controller that answers at once.
                        torc_dns::Verdict::NotNewer => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        // A deposed leader answers a poll of another epoch at once: asked
                        // again after a pause, until the client moves on or the grace is over.
                        torc_dns::Verdict::Refused { .. } => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the controller's names are invalid; keeping the previous ones");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach the controller; retrying");
                // Half a second between two asks, counted from the failed ask's start: one
                // that failed fast is not repeated in a loop, and one that failed slowly (the
                // long poll timed out while this process was frozen past its deadline, its
                // answer unread) is asked again at once, not half a second of stale names
                // later.
                tokio::time::sleep(Duration::from_millis(500).saturating_sub(asked.elapsed()))
                    .await;
            }
        }
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct KvArgs {
    #[command(subcommand)]
    action: Option<KvAction>,
    /// Where to serve the etcd v3 gRPC API.
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen: SocketAddr,
    /// Where the store keeps its data.
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// The client URL reported by `member list` (default: http://LISTEN, or https://LISTEN
    /// with TLS).
    #[arg(long)]
    advertise_url: Option<String>,
    /// The member name `member list` reports, as etcd's `--name`.
    #[arg(long, default_value = "torc-kv")]
    name: String,
    /// The peer URLs `member list` reports (comma-separated), as etcd's
    /// `--initial-advertise-peer-urls`; kv has no peers and listens on none of them.
    #[arg(long, value_delimiter = ',', default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: Vec<String>,
    /// Serve over TLS only, with this certificate (PEM, chain first), as etcd's `--cert-file`.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM, readable by its owner only), as etcd's `--key-file`.
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Clients must present a certificate chaining to this CA (PEM), as etcd's
    /// `--trusted-ca-file` (etcd 3.4 requires client certificates whenever it is given).
    #[arg(long, requires = "cert_file")]
    trusted_ca_file: Option<PathBuf>,
    /// A request without a token is made by the user its client certificate's common name
    /// names, as etcd's `--client-cert-auth`. Needs `--trusted-ca-file`.
    #[arg(long, requires = "trusted_ca_file")]
    client_cert_auth: bool,
    /// Revisions kept by automatic compaction (0 = never compact).
    #[arg(long, default_value_t = 10_000)]
    retain_revisions: u64,
    /// Turn etcd auth on for a new store: if it has no `root` user yet, create `root` (with the
    /// `root` role) with the password in this file and enable auth, before serving. A store that
    /// has a `root` user is left as it is. Without it, auth stays as the store has it (off, for a
    /// new store).
    #[arg(long)]
    root_password_file: Option<PathBuf>,
    /// Seconds an auth token stays valid after its last use (etcd's `--auth-token-ttl`).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    auth_token_ttl: u64,
    /// The storage quota in bytes, as etcd's: past it writes are refused with `mvcc: database
    /// space exceeded` and the NOSPACE alarm is raised until `etcdctl alarm disarm`
    /// (0: etcd's default, 2 GiB; negative: no quota).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    quota_backend_bytes: i64,
    /// Largest request accepted, in bytes (etcd's `--max-request-bytes`).
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Most bytes of keys and values one Range answers with.
    #[arg(long, default_value_t = torc_kv::mvcc::DEFAULT_MAX_RANGE_BYTES)]
    max_range_bytes: usize,
    /// Most keys one Range answers with (a Range with a smaller --limit is never refused).
    #[arg(long, default_value_t = torc_kv::mvcc::DEFAULT_MAX_RANGE_KEYS)]
    max_range_keys: usize,
    /// Most watchers open at once over one client connection.
    #[arg(long, default_value_t = 10_000)]
    max_watchers_per_connection: usize,
    /// Most leases one client connection may hold (granted through it, not yet gone).
    #[arg(long, default_value_t = 10_000)]
    max_leases_per_connection: usize,
    /// Most client connections open at once.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Most client connections open at once from one IP address.
    #[arg(long, default_value_t = 1024)]
    max_connections_per_source: usize,
    /// Most calls open at once on one connection (etcd's `--max-concurrent-streams`).
    #[arg(long, default_value_t = 1024)]
    max_concurrent_streams: u32,
    /// Seconds a connection with no call or stream open is kept before a GOAWAY closes it.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Serve Prometheus `/metrics` (etcd's metric names, plain HTTP, read-only) on these
    /// URLs, comma-separated, as etcd's flag of the same name: `http://IP:PORT`. Off by
    /// default.
    #[arg(long, value_delimiter = ',', value_parser = metrics_url)]
    listen_metrics_urls: Vec<SocketAddr>,
}

/// An `http://IP:PORT` of `--listen-metrics-urls`.
fn metrics_url(text: &str) -> Result<SocketAddr, String> {
    let Some(addr) = text.strip_prefix("http://") else {
        return Err(format!(
            "{text:?} is not an http://IP:PORT URL (torc kv serves /metrics over plain HTTP only)"
        ));
    };
    addr.trim_end_matches('/')
        .parse()
        .map_err(|e| format!("{text:?}: {e} (expected http://IP:PORT)"))
}

#[derive(clap::Subcommand)]
enum KvAction {
    /// Make a new data dir from a snapshot in etcd's format (`etcdctl snapshot save` against
    /// torc kv or against etcd 3.4): its sha256 trailer is checked first, and DIR must be new
    /// or empty.
    Restore {
        /// The snapshot file.
        #[arg(long)]
        snapshot: PathBuf,
        /// The new data dir (`torc kv --data-dir DIR` serves it).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn run_kv_restore(snapshot: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let r = torc_kv::snapshot::restore(snapshot, data_dir)?;
    println!(
        "restored {} into {}: revision {}, compacted at {}, {} key revisions, {} leases, {} users, {} roles",
        snapshot.display(),
        data_dir.display(),
        r.revision,
        r.compact_revision,
        r.key_revisions,
        r.leases,
        r.users,
        r.roles
    );
    Ok(())
}

pub fn run_kv(args: KvArgs) -> anyhow::Result<()> {
    if let Some(KvAction::Restore { snapshot, data_dir }) = &args.action {
        return run_kv_restore(snapshot, data_dir);
    }
    let Some(data_dir) = args.data_dir.clone() else {
        anyhow::bail!("torc kv needs --data-dir DIR");
    };
    init_tracing("info");
    let options = torc_kv::KvOptions {
        name: args.name,
        peer_urls: args.initial_advertise_peer_urls,
        retain_revisions: args.retain_revisions,
        auth_token_ttl: Duration::from_secs(args.auth_token_ttl),
        quota_backend_bytes: match args.quota_backend_bytes {
            0 => torc_kv::mvcc::DEFAULT_QUOTA_BYTES,
            n => u64::try_from(n).unwrap_or(0),
        },
        max_request_bytes: args.max_request_bytes,
        max_range_bytes: args.max_range_bytes,
        max_range_keys: args.max_range_keys,
        max_watchers_per_connection: args.max_watchers_per_connection,
        max_leases_per_connection: args.max_leases_per_connection,
        max_connections: args.max_connections,
        max_connections_per_source: args.max_connections_per_source,
        max_concurrent_streams: args.max_concurrent_streams,
        idle_timeout: Duration::from_secs(args.idle_timeout),
        ..Default::default()
    };
    let root_password = args
        .root_password_file
        .as_deref()
        .map(|path| torc_kv_client::read_password_file(path).map(|pw| (path.to_owned(), pw)))
        .transpose()?;
    // Checked before the store is opened: a bad certificate stops kv at once.
    let tls = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => Some(torc_kv::ServerTls::from_files(
            cert,
            key,
            args.trusted_ca_file.as_deref(),
            args.client_cert_auth,
        )?),
        _ => None,
    };
    let server = torc_kv::KvServer::open(&data_dir, options)?;
    let mut metrics = Vec::new();
    for addr in &args.listen_metrics_urls {
        let kv = server.metrics();
        metrics.push(crate::metrics_http::bind(*addr, move || kv.prometheus())?);
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let advertise = args
        .advertise_url
        .unwrap_or_else(|| format!("{scheme}://{}", args.listen));
    let what = match &tls {
        None => "kv serving the etcd v3 API",
        Some(t) if t.client_cert_auth() => {
            "kv serving the etcd v3 API over TLS, client certificates naming users"
        }
        Some(_) if args.trusted_ca_file.is_some() => {
            "kv serving the etcd v3 API over TLS, client certificates required"
        }
        Some(_) => "kv serving the etcd v3 API over TLS",
    };
    serve_role(args.listen, 2, what, |listener| async move {
        for m in metrics {
            tokio::spawn(m);
        }
        if let Some((path, password)) = root_password {
            match server.bootstrap_root(password).await? {
                torc_kv::RootBootstrap::Created => tracing::info!(
                    file = %path.display(),
                    "created the root user and enabled auth"
                ),
                torc_kv::RootBootstrap::RootExists => tracing::info!(
                    file = %path.display(),
                    "the store has a root user already; the root password file was not used"
                ),
            }
        }
        match tls {
            Some(tls) => {
                server
                    .serve_tls(listener, tls, advertise, shutdown_signal())
                    .await?
            }
            None => server.serve(listener, advertise, shutdown_signal()).await?,
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct StatesyncArgs {
    /// The controllers' URLs, comma-separated (default: `$TORC_CONTROLLERS`, else
    /// `$TORC_CONTROLLER`, set for tasks by their agent).
    #[arg(long)]
    controller: Option<String>,
    /// The state store's etcd v3 endpoint (a real etcd works too).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// The key prefix statesync owns.
    #[arg(long, default_value = "/torc")]
    base: String,
    /// Milliseconds between reconciliations (besides the one right after the switch's routes
    /// or ports change).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// The network agent's routing protocol (its `--route-protocol`): routes with it are
    /// `owner: torc` in the store.
    #[arg(long, default_value_t = torc_net::RouteProtocol::TORC.0)]
    route_protocol: u8,
    /// The store's user to authenticate as (etcd auth); needs `--password-file`.
    #[arg(long, requires = "password_file")]
    user: Option<String>,
    /// The file holding `--user`'s password (never on the command line, where `ps` shows it).
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Speak TLS to an `https://` endpoint, trusting this CA (PEM) only, as etcdctl's
    /// `--cacert` (default for an `https://` endpoint: the rack CA in `TORC_CA`, which a
    /// task's agent sets).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// A client certificate (PEM) for a store that asks for one, as etcdctl's `--cert`.
    #[arg(long, requires_all = ["key", "cacert"])]
    cert: Option<PathBuf>,
    /// Its private key (PEM, readable by its owner only), as etcdctl's `--key`.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

pub fn run_statesync(args: StatesyncArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let protocol = torc_net::RouteProtocol::owner(args.route_protocol)?;
    // A bad password file stops statesync at once, not after the controller answers.
    let credentials = match (&args.user, &args.password_file) {
        (Some(user), Some(file)) => Some(torc_kv_client::Credentials::new(
            user,
            torc_kv_client::read_password_file(file)?,
        )),
        _ => None,
    };
    let cacert = args.cacert.clone().or_else(|| {
        args.endpoints
            .starts_with("https://")
            .then(|| std::env::var_os(torc_client::ENV_CA).map(PathBuf::from))
            .flatten()
    });
    let tls = cacert
        .as_deref()
        .map(|ca| {
            let cert_and_key = args.cert.as_deref().zip(args.key.as_deref());
            torc_kv_client::ClientTls::from_files(ca, cert_and_key)
        })
        .transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // No I/O yet, but a bad endpoint (https:// without --cacert) stops statesync now.
        let store = torc_statesync::EtcdStore::connect(&args.endpoints, credentials, tls)?;
        let client = torc_client::Client::from_env_with(torc_client::controllers_from_env(
            args.controller.clone(),
        )?)?;
        // The controller's name owns its tasks in the store; ask it, waiting for it if needed.
        let name = loop {
            match client.status().await {
                Ok(s) => break s.rack,
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the controller");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::info!(
            endpoints = %args.endpoints,
            base = %args.base,
            user = args.user.as_deref().unwrap_or("(none)"),
            "statesync running"
        );
        torc_statesync::run(
            client,
            name,
            store,
            args.base,
            Duration::from_millis(args.interval_ms.max(100)),
            protocol,
            shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

/// `torc tsdb [OPTIONS]` runs the role; `torc tsdb backup|restore` asks a running one (see
/// `tsdb_backup.rs`).
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TsdbArgs {
    #[command(subcommand)]
    action: Option<TsdbAction>,
    /// Where to serve the InfluxDB HTTP API (1.x and 0.8).
    #[arg(long, default_value = "127.0.0.1:8086")]
    listen: SocketAddr,
    /// Where the database keeps its data.
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Most series per database (a write past it is refused with a clear error).
    #[arg(long, default_value_t = 1_000_000)]
    max_series: usize,
    /// Require authentication, as InfluxDB's `[http] auth-enabled` (once an admin exists).
    #[arg(long)]
    auth_enabled: bool,
    /// If the database has no users yet, create this admin user. Implies --auth-enabled.
    #[arg(long, requires = "admin_password_file")]
    admin_user: Option<String>,
    /// A file holding that admin's password (a password on the command line would show in
    /// `ps`).
    #[arg(long, requires = "admin_user")]
    admin_password_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate (PEM, chain first), as influxd's `https-certificate`.
    #[arg(long, requires = "https_private_key")]
    https_certificate: Option<PathBuf>,
    /// The certificate's private key (PEM), as influxd's `https-private-key`.
    #[arg(long, requires = "https_certificate")]
    https_private_key: Option<PathBuf>,
    /// Most points a SELECT may read (and GROUP BY time buckets it may build), as influxd's
    /// `max-select-point`; 0: no limit.
    #[arg(long, default_value_t = torc_tsdb::Options::default().max_select_point)]
    max_select_point: usize,
    /// Most series a SELECT may read, as influxd's `max-select-series`; 0: no limit.
    #[arg(long, default_value_t = torc_tsdb::Options::default().max_select_series)]
    max_select_series: usize,
    /// Most GROUP BY time buckets per group, as influxd's `max-select-buckets`; 0: no limit.
    #[arg(long, default_value_t = torc_tsdb::Options::default().max_select_buckets)]
    max_select_buckets: usize,
    /// Longest a query may run (e.g. 30s, 2m), as influxd's `query-timeout`; 0: no limit.
    /// Default: a minute.
    #[arg(long, value_parser = tsdb_duration)]
    query_timeout: Option<Duration>,
    /// How often shards past their retention policy are dropped, as influxd's `[retention]
    /// check-interval`.
    #[arg(long, default_value = "30m", value_parser = tsdb_duration)]
    retention_check_interval: Duration,
    /// How often continuous queries are checked (each runs at its own interval), as influxd's
    /// `[continuous_queries] run-interval`.
    #[arg(long, default_value = "1s", value_parser = tsdb_duration)]
    cq_run_interval: Duration,
}

#[derive(clap::Subcommand)]
enum TsdbAction {
    /// Write a consistent backup of a running tsdb (one database, or all) to a file, as
    /// `influxd backup -portable`: every point acknowledged before it began, the retention
    /// policies and continuous queries. Needs an admin when authentication is on.
    Backup(crate::tsdb_backup::BackupArgs),
    /// Restore a backup into a running tsdb (or into an empty --data-dir), as `influxd restore
    /// -portable [-db X -newdb Y]`: an existing database is never overwritten.
    Restore(crate::tsdb_backup::RestoreArgs),
}

/// A duration flag of `torc tsdb`, written as InfluxQL writes durations.
fn tsdb_duration(text: &str) -> Result<Duration, torc_tsdb::influxql::ParseError> {
    torc_tsdb::influxql::parse_duration(text).map(|ns| Duration::from_nanos(ns.unsigned_abs()))
}

pub fn run_tsdb(args: TsdbArgs) -> anyhow::Result<()> {
    match args.action {
        Some(TsdbAction::Backup(a)) => return crate::tsdb_backup::run_backup(a),
        Some(TsdbAction::Restore(a)) => return crate::tsdb_backup::run_restore(a),
        None => {}
    }
    let Some(data_dir) = args.data_dir.clone() else {
        anyhow::bail!("torc tsdb needs --data-dir DIR");
    };
    init_tracing("info");
    let admin = match (&args.admin_user, &args.admin_password_file) {
        (Some(user), Some(file)) => Some((user.clone(), torc_collector::read_password_file(file)?)),
        _ => None,
    };
    let defaults = torc_tsdb::Options::default();
    let options = torc_tsdb::Options {
        max_series_per_database: args.max_series,
        auth_enabled: args.auth_enabled || admin.is_some(),
        max_select_point: args.max_select_point,
        max_select_series: args.max_select_series,
        max_select_buckets: args.max_select_buckets,
        query_timeout: args.query_timeout.unwrap_or(defaults.query_timeout),
        retention_check_interval: args.retention_check_interval,
        cq_run_interval: args.cq_run_interval,
        ..defaults
    };
    let tls = match (&args.https_certificate, &args.https_private_key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(torc_tls::server_config(
            torc_tls::Identity::from_files(cert, key)?,
            torc_tls::ClientAuth::None,
        )?)),
        _ => None,
    };
    let db = std::sync::Arc::new(torc_tsdb::Tsdb::open(&data_dir, options)?);
    serve_role(
        args.listen,
        2,
        if tls.is_some() {
            "tsdb serving the InfluxDB API over HTTPS"
        } else {
            "tsdb serving the InfluxDB API"
        },
        |listener| async move {
            if let Some((user, password)) = admin {
                if db.ensure_admin(&user, &password).await? {
                    tracing::info!(%user, "created the admin user");
                } else if db.admin_exists() {
                    tracing::info!(%user, "users exist already; --admin-user changes nothing");
                } else {
                    tracing::warn!(%user, "users exist but none is an admin: every request will be refused until authentication is disabled");
                }
            }
            torc_tsdb::serve_tls(listener, db, tls, shutdown_signal()).await?;
            Ok(())
        },
    )
}
