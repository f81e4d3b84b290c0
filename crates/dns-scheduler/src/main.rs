//! `torc-dns-scheduler`: the DNS-scheduler example (see the library docs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use torc_dns_scheduler::{Config, Scheduler, ServerKind, loadgen, named, scaler::Policy};

#[derive(Parser)]
#[command(
    name = "torc-dns-scheduler",
    about = "Orchestrates DNS infrastructure on torc (the DNS example)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler: servers, loads and smart scaling.
    Run(Box<RunArgs>),
    /// Run a DNS load (the original's normalload).
    Loadgen(LoadArgs),
    /// Run bind9's `named` as one DNS server (the task `run --server named` launches).
    NamedServer(NamedArgs),
}

/// Which program answers for the demo zone.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ServerArg {
    /// `torc dns`.
    Torc,
    /// bind9's `named` (see `--named`).
    Named,
}

#[derive(clap::Args)]
struct NamedArgs {
    /// The `named` binary.
    #[arg(long, default_value = "/usr/sbin/named")]
    named: PathBuf,
    /// Where clients query the server.
    #[arg(long)]
    listen: SocketAddr,
    /// named's JSON statistics channel.
    #[arg(long)]
    stats: SocketAddr,
    /// A zone served: `ORIGIN=PATH` of its zone file.
    #[arg(long = "zone-file", value_parser = parse_zone, required = true)]
    zones: Vec<(String, PathBuf)>,
    /// Where named.conf and named's files go.
    #[arg(long, default_value = "named")]
    dir: PathBuf,
    /// Write named's query rate to this InfluxDB-compatible database (series `dns_server`).
    #[arg(long)]
    report_influxdb: Option<String>,
    /// The `server` tag of those reports (default: the listen address).
    #[arg(long)]
    report_name: Option<String>,
    #[arg(long, default_value_t = 5)]
    report_interval_secs: u64,
}

/// A `--zone-file` value without `=`.
#[derive(Debug, thiserror::Error)]
#[error("{text:?}: expected ORIGIN=PATH")]
struct ZoneArgError {
    text: String,
}

fn parse_zone(s: &str) -> Result<(String, PathBuf), ZoneArgError> {
    let (origin, path) = s
        .split_once('=')
        .ok_or_else(|| ZoneArgError { text: s.to_owned() })?;
    Ok((origin.to_string(), PathBuf::from(path)))
}

#[derive(clap::Args)]
struct RunArgs {
    /// The controllers' URLs, comma-separated (default: `$TORC_CONTROLLERS`, else
    /// `$TORC_CONTROLLER`, else https://127.0.3.20:3000).
    #[arg(long)]
    controller: Option<String>,
    /// The framework's token (`torc token create --role framework --framework NAME`).
    #[arg(long, env = "TORC_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The rack CA's certificate, which the controller's must chain to.
    #[arg(long, env = "TORC_CA")]
    ca: Option<PathBuf>,
    #[arg(long, default_value = "torc-dns-scheduler")]
    name: String,
    /// What answers for the demo zone: `torc` (torc dns) or `named` (bind9, see `--named`).
    #[arg(long, value_enum, default_value = "torc")]
    server: ServerArg,
    /// The `named` binary on the nodes, for `--server named`.
    #[arg(long, default_value = "/usr/sbin/named")]
    named: PathBuf,
    #[arg(long, default_value = "./dns-scheduler-state")]
    state_dir: PathBuf,
    /// The port-3005 API.
    #[arg(long, default_value = "127.0.0.1:3005")]
    listen: SocketAddr,
    /// The API's certificate (PEM), from the rack CA (`torc ca issue`, or a task's
    /// `credentials: {tls: true}`): the API is served over TLS. Default: `tls.crt` in
    /// `$TORC_SECRETS_DIR`, when there is one.
    #[arg(long, requires = "tls_private_key", conflicts_with = "plaintext")]
    tls_certificate: Option<PathBuf>,
    /// The certificate's private key (PEM, mode 0600). Default: `tls.key` in
    /// `$TORC_SECRETS_DIR`.
    #[arg(long, requires = "tls_certificate")]
    tls_private_key: Option<PathBuf>,
    /// Serve the API over plain HTTP although the rack runs TLS: callers' tokens then cross the
    /// network in the clear.
    #[arg(long)]
    plaintext: bool,
    /// The rack's DNS server.
    #[arg(long, default_value = "127.0.3.20:53")]
    rack_dns: SocketAddr,
    /// The time-series database (default: the rack's `influxdb` service).
    #[arg(long)]
    tsdb: Option<String>,
    /// The tsdb user to read the servers' load as (and that they report as).
    #[arg(long, requires = "tsdb_password_file")]
    tsdb_user: Option<String>,
    /// A file with that user's password.
    #[arg(long, requires = "tsdb_user")]
    tsdb_password_file: Option<PathBuf>,
    /// The rack secret with that password, which the servers get as a file to write their
    /// reports (`access.framework_secrets` in the rack config must grant it to this framework).
    #[arg(long, requires = "tsdb_user")]
    tsdb_password_secret: Option<torc_types::SecretName>,
    #[arg(long, default_value_t = 1)]
    min: u32,
    #[arg(long, default_value_t = 3)]
    max: u32,
    /// Queries per second per server above which a server is added.
    #[arg(long, default_value_t = 300.0)]
    high_qps: f64,
    /// Queries per second per server below which a server is removed.
    #[arg(long, default_value_t = 150.0)]
    low_qps: f64,
    #[arg(long, default_value_t = 3)]
    k: usize,
    #[arg(long, default_value_t = 5)]
    n: usize,
    #[arg(long, default_value_t = 30)]
    cooldown_secs: u64,
    /// Seconds between measurements.
    #[arg(long, default_value_t = 5)]
    interval_secs: u64,
    #[arg(long, default_value_t = 60)]
    failover_secs: u64,
    /// Mean and deviation (ms) of the loads' delay between queries (the original: 1000 / 800).
    #[arg(long, default_value_t = 1000)]
    load_mean_ms: u64,
    #[arg(long, default_value_t = 800)]
    load_dev_ms: u64,
}

#[derive(clap::Args)]
struct LoadArgs {
    #[arg(long, default_value_t = 10)]
    users: usize,
    #[arg(long, default_value_t = 2000)]
    mean_ms: u64,
    #[arg(long, default_value_t = 1000)]
    dev_ms: u64,
    #[arg(long, default_value = "127.0.3.20:53")]
    rack_dns: SocketAddr,
    #[arg(long, default_value = "dns-sl")]
    prefix: String,
    #[arg(long, default_value_t = 8)]
    max_servers: usize,
    #[arg(long, default_value = "service.torc")]
    service_domain: String,
    #[arg(long, default_value_t = 5)]
    report_secs: u64,
    /// Stop after this many seconds (0 = run until killed).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
}

/// The controllers' URLs: `--controller`, else what the agent set for the task.
fn controllers(a: &RunArgs) -> String {
    torc_client::controllers_from_env(a.controller.clone())
        .unwrap_or_else(|_| "https://127.0.3.20:3000".to_string())
}

/// The API's TLS configuration: from `--tls-certificate`/`--tls-private-key`, else from the
/// task's secrets directory; `None` (plain HTTP) only when asked (`--plaintext`) or when the
/// rack itself is plain (an `http://` controller).
fn api_tls(a: &RunArgs) -> anyhow::Result<Option<std::sync::Arc<torc_client::tls::ServerConfig>>> {
    let from_secrets = || {
        let dir = PathBuf::from(std::env::var_os("TORC_SECRETS_DIR")?);
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        (crt.exists() && key.exists()).then_some((crt, key))
    };
    let files = match (&a.tls_certificate, &a.tls_private_key) {
        (Some(crt), Some(key)) => Some((crt.clone(), key.clone())),
        _ if a.plaintext => None,
        _ => from_secrets(),
    };
    let Some((crt, key)) = files else {
        anyhow::ensure!(
            a.plaintext || !controllers(a).contains("https://"),
            "the port-3005 API takes admin and viewer tokens: serve it over TLS with \
             --tls-certificate FILE --tls-private-key FILE (a certificate of the rack CA: `torc ca \
             issue`, or `credentials: {{tls: true}}` for a task), or say --plaintext"
        );
        tracing::warn!("the port-3005 API is served over plain HTTP");
        return Ok(None);
    };
    let identity = torc_client::tls::Identity::from_files(&crt, &key)
        .with_context(|| format!("the API's certificate {}", crt.display()))?;
    Ok(Some(std::sync::Arc::new(torc_client::tls::server_config(
        identity,
        torc_client::tls::ClientAuth::None,
    )?)))
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match Cli::parse().command {
        Command::Loadgen(a) => rt.block_on(loadgen::run(loadgen::LoadConfig {
            users: a.users,
            mean: Duration::from_millis(a.mean_ms),
            dev: Duration::from_millis(a.dev_ms),
            rack_dns: a.rack_dns,
            prefix: a.prefix,
            max_servers: a.max_servers,
            service_domain: a.service_domain,
            report_every: Duration::from_secs(a.report_secs.max(1)),
            duration: (a.duration_secs > 0).then(|| Duration::from_secs(a.duration_secs)),
        })),
        Command::NamedServer(a) => {
            let report = a.report_influxdb.map(|url| {
                let name = a.report_name.unwrap_or_else(|| a.listen.to_string());
                (url, name)
            });
            let server = named::NamedServer {
                named: a.named,
                listen: a.listen,
                stats: a.stats,
                zones: a.zones,
                dir: a.dir,
                report,
                report_every: Duration::from_secs(a.report_interval_secs.max(1)),
            };
            let code = rt.block_on(server.run())?;
            std::process::exit(code);
        }
        Command::Run(a) => {
            let a = *a;
            let api_tls = api_tls(&a)?;
            let token = a
                .token_file
                .as_deref()
                .map(torc_client::tls::files::read_secret)
                .transpose()?;
            let cfg = Config {
                name: a.name.parse().context("--name")?,
                controller: controllers(&a),
                token,
                ca: a.ca,
                state_dir: a.state_dir,
                server: match a.server {
                    ServerArg::Torc => ServerKind::Torc,
                    ServerArg::Named => ServerKind::Named(a.named),
                },
                policy: Policy {
                    min: a.min.max(1),
                    max: a.max.max(a.min.max(1)),
                    high: a.high_qps,
                    low: a.low_qps,
                    k: a.k.max(1),
                    n: a.n.max(a.k.max(1)),
                    cooldown_ms: a.cooldown_secs * 1000,
                },
                interval: Duration::from_secs(a.interval_secs.max(1)),
                failover: Duration::from_secs(a.failover_secs),
                rack_dns: a.rack_dns,
                tsdb: a.tsdb,
                tsdb_login: match (a.tsdb_user, &a.tsdb_password_file) {
                    (Some(user), Some(file)) => {
                        Some((user, torc_client::tls::files::read_secret(file)?))
                    }
                    _ => None,
                },
                tsdb_password_secret: a.tsdb_password_secret,
                exe: std::env::current_exe()?,
                load_mean: Duration::from_millis(a.load_mean_ms),
                load_dev: Duration::from_millis(a.load_dev_ms),
                api_url: Some(format!(
                    "{}://{}",
                    if api_tls.is_some() { "https" } else { "http" },
                    a.listen
                )),
            };
            rt.block_on(async move {
                let s = Scheduler::new(cfg)?;
                let listener = tokio::net::TcpListener::bind(a.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", a.listen))?;
                tracing::info!(listen = %a.listen, tls = api_tls.is_some(), "dns scheduler API");
                let app = torc_dns_scheduler::router(s.clone());
                // torc's accept path: connection caps, handshake, header, body and answer
                // deadlines, as every torc server.
                tokio::spawn(torc_client::tls::serve(
                    listener,
                    app,
                    api_tls,
                    std::future::pending(),
                ));
                s.run().await
            })?;
        }
    }
    Ok(())
}
