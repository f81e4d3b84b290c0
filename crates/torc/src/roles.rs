//! The long-running roles: `torc controller`, `torc agent`, and the internal `torc shim`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use torc_config::RackConfig;
use torc_controller::{Controller, RackSettings};
use torc_types::{NodeName, PortRange, Resources};

use crate::{init_tracing, read_token, shutdown_signal};

#[derive(Args)]
pub struct ControllerArgs {
    /// The rack config (YAML).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Where the controller keeps its state.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the API. Default: the controller node's ip (the config's `master` node), port 3000.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A file holding the bearer token that calls changing the rack must present.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// `$NAME=value` substitutions for the config (e.g. `MASTER_IP=10.250.3.20`).
    #[arg(long = "var", value_parser = parse_key_val)]
    vars: Vec<(String, String)>,
}

fn parse_key_val(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

pub fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let vars: BTreeMap<String, String> = args.vars.into_iter().collect();
    let config = RackConfig::load_with(&args.config, &vars)?;
    let origin = args.config.display().to_string();
    let listen = match args.listen {
        Some(addr) => addr,
        None => {
            let master = config
                .nodes
                .iter()
                .find(|n| n.node_type.as_str() == "master")
                .map(|n| n.ip)
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            SocketAddr::new(master, 3000)
        }
    };
    let token = args.token_file.as_ref().map(read_token).transpose()?;
    let mut settings = RackSettings::from_config(&config, &origin);
    settings.controller_addr = Some(listen);
    let controller = Controller::open(settings, &args.data_dir, token)?;
    let name = config.name.clone();
    serve_role(
        listen,
        2,
        &format!("controller of rack {name} serving"),
        |listener| async move {
            controller.serve(listener, shutdown_signal()).await?;
            tracing::info!("controller stopped");
            Ok(())
        },
    )
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
    /// The controller's URL.
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
    /// The controller's bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// `master` or `slave` (the config's `type` wins when the node is listed there).
    #[arg(long = "type")]
    node_type: Option<String>,
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
}

pub fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let token = args.token_file.as_ref().map(read_token).transpose()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let detected = torc_agent::detect_resources(&args.data_dir);
    let resources = Resources::new(
        args.cpus.unwrap_or(detected.cpus),
        args.mem_mb.unwrap_or(detected.mem_mb),
        args.disk_mb.unwrap_or(detected.disk_mb),
    );
    let exe = std::env::current_exe().context("cannot find the torc binary for task shims")?;
    let cfg = torc_agent::AgentConfig {
        node: args.name,
        ip: args.ip,
        controller: args.controller,
        token,
        data_dir: args.data_dir,
        node_type: args.node_type,
        node_function: args.node_function,
        resources,
        port_range: args.port_range,
        attributes: args.attributes.into_iter().collect(),
        kill_tasks_on_exit: args.kill_tasks_on_exit,
        exe,
        metrics_interval: Duration::from_millis(args.metrics_interval_ms.max(100)),
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
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run_shim(args: ShimArgs) -> std::process::ExitCode {
    let mut command = args.command.into_iter();
    let program = command.next().unwrap_or_default();
    let code = torc_agent::shim::run(torc_agent::shim::ShimArgs {
        status: args.status,
        grace: Duration::from_millis(args.grace_ms),
        cgroup: args.cgroup,
        command: program,
        args: command.collect(),
    });
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}

#[derive(Args)]
pub struct CollectorArgs {
    /// The controller's URL (set for tasks by their agent).
    #[arg(long, env = "TORC_CONTROLLER")]
    controller: String,
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
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
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
    let cfg = torc_collector::CollectorConfig {
        target,
        database: args.database,
        user: args.user,
        password: args.password,
        interval: Duration::from_secs(args.interval_seconds.max(1)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let controller = torc_client::Client::new(args.controller, None);
        tracing::info!(influxdb = %args.influxdb, "datacollector running");
        torc_collector::Collector::new(controller, cfg)
            .run(shutdown_signal())
            .await;
        Ok(())
    })
}

#[derive(Args)]
pub struct DnsArgs {
    /// The controller's URL (set for tasks by their agent), for the rack's names. Without it,
    /// only the zone files are served.
    #[arg(long, env = "TORC_CONTROLLER")]
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
    rt.block_on(async move {
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
        if let Some(url) = args.controller.clone() {
            tokio::spawn(follow_names(url, handle));
        }
        tracing::info!(listen = %args.listen, "dns serving");
        server.serve(listeners, shutdown_signal()).await?;
        Ok(())
    })
}

/// Long-polls the controller for the rack's names and applies each new snapshot.
async fn follow_names(url: String, handle: torc_dns::DnsHandle) {
    let client = torc_client::Client::new(url, None);
    loop {
        match client
            .dns_snapshot(handle.generation(), Duration::from_secs(25))
            .await
        {
            Ok(snapshot) => match handle.apply(&snapshot) {
                Ok(true) => tracing::debug!(generation = snapshot.generation, "names updated"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the controller's names are invalid; keeping the previous ones");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach the controller; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[derive(Args)]
pub struct KvArgs {
    /// Where to serve the etcd v3 gRPC API.
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen: SocketAddr,
    /// Where the store keeps its data.
    #[arg(long)]
    data_dir: PathBuf,
    /// The client URL reported by `member list` (default: http://LISTEN).
    #[arg(long)]
    advertise_url: Option<String>,
    /// Revisions kept by automatic compaction (0 = never compact).
    #[arg(long, default_value_t = 10_000)]
    retain_revisions: u64,
}

pub fn run_kv(args: KvArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let options = torc_kv::KvOptions {
        retain_revisions: args.retain_revisions,
        ..Default::default()
    };
    let server = torc_kv::KvServer::open(&args.data_dir, options)?;
    let advertise = args
        .advertise_url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    serve_role(
        args.listen,
        2,
        "kv serving the etcd v3 API",
        |listener| async move {
            server.serve(listener, advertise, shutdown_signal()).await?;
            Ok(())
        },
    )
}

#[derive(Args)]
pub struct StatesyncArgs {
    /// The controller's URL (set for tasks by their agent).
    #[arg(long, env = "TORC_CONTROLLER")]
    controller: String,
    /// The state store's etcd v3 endpoint (a real etcd works too).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// The key prefix statesync owns.
    #[arg(long, default_value = "/torc")]
    base: String,
    /// Milliseconds between reconciliations.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

pub fn run_statesync(args: StatesyncArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = torc_client::Client::new(args.controller.clone(), None);
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
        let store = torc_statesync::EtcdStore::connect(&args.endpoints)?;
        tracing::info!(endpoints = %args.endpoints, base = %args.base, "statesync running");
        torc_statesync::run(
            client,
            name,
            store,
            args.base,
            Duration::from_millis(args.interval_ms.max(100)),
            shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

#[derive(Args)]
pub struct TsdbArgs {
    /// Where to serve the InfluxDB HTTP API (1.x and 0.8).
    #[arg(long, default_value = "127.0.0.1:8086")]
    listen: SocketAddr,
    /// Where the database keeps its data.
    #[arg(long)]
    data_dir: PathBuf,
    /// Most series per database (a write past it is refused with a clear error).
    #[arg(long, default_value_t = 1_000_000)]
    max_series: usize,
}

pub fn run_tsdb(args: TsdbArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let options = torc_tsdb::Options {
        max_series_per_database: args.max_series,
        ..Default::default()
    };
    let db = std::sync::Arc::new(torc_tsdb::Tsdb::open(&args.data_dir, options)?);
    serve_role(
        args.listen,
        2,
        "tsdb serving the InfluxDB API",
        |listener| async move {
            torc_tsdb::serve(listener, db, shutdown_signal()).await?;
            Ok(())
        },
    )
}
