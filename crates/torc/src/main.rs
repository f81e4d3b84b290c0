//! `torc`: the binary of a torc rack's roles (the DNS example's scheduler is its own binary,
//! `torc-dns-scheduler`). Each subcommand is a role (`controller`, `agent`, `dns`, `kv`,
//! `statesync`, `tsdb`, `datacollector`, `network-agent`; `up` for a whole local rack) or a
//! client command against a running controller (`cli.rs`; `torc run` in `run.rs`, `torc image` in `images.rs`,
//! `torc node` in `node.rs`, `torc backup` and `torc restore` in `backup.rs`, `torc apply` in
//! `apply.rs`; `torc tsdb backup|restore` in `tsdb_backup.rs`).

mod apply;
mod backup;
mod cli;
mod images;
mod metrics_http;
mod network_agent;
mod node;
mod process;
mod roles;
mod run;
mod tsdb_backup;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "torc",
    version,
    about = "torc: a top-of-rack controller",
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole rack on this machine: a controller and its node agents on loopback.
    Up(up::UpArgs),
    /// Run the controller role (scheduler, state, API).
    Controller(roles::ControllerArgs),
    /// Run a node agent: registers the node, runs and supervises its tasks.
    Agent(roles::AgentArgs),
    /// Run the DNS server: the node domain, the service domain, forwarding.
    Dns(roles::DnsArgs),
    /// Run the state store: an etcd v3-compatible key-value server.
    Kv(roles::KvArgs),
    /// Run statesync: the rack's live state into the state store under /torc.
    Statesync(roles::StatesyncArgs),
    /// The switch's network agent: programs a /32 route per rack-network task in the switch's
    /// kernel table over netlink and reports the table and ports (a system service).
    NetworkAgent(network_agent::NetworkAgentArgs),
    /// Run the time-series database: InfluxDB's HTTP API (1.x and 0.8).
    Tsdb(roles::TsdbArgs),
    /// Run the datacollector: node and task metrics into an InfluxDB-compatible database.
    Datacollector(roles::CollectorArgs),
    /// List the rack's nodes.
    Nodes(cli::NodesArgs),
    /// Node maintenance: `torc node cordon|uncordon|drain NAME`, `torc node power
    /// on|off|status NAME`.
    Node(node::NodeArgs),
    /// List tasks.
    Tasks(cli::TasksArgs),
    /// Launch a task: `torc run [OPTIONS] -- COMMAND [ARGS...]`, or an image: `torc run
    /// --image REF [OPTIONS] [-- COMMAND [ARGS...]]`.
    Run(run::RunArgs),
    /// Kill a task.
    Kill(cli::KillArgs),
    /// Images on the nodes: `torc image pull|import|ls|rm` (every node that runs containers,
    /// or the `--node`s given).
    Image(images::ImageArgs),
    /// Show a task's output (its sandbox's stdout or stderr).
    Logs(cli::LogsArgs),
    /// The scheduler at a glance: system services, their health and restarts, rollouts,
    /// frameworks.
    Status(cli::StatusArgs),
    /// Apply a changed rack config: `torc apply -f rack.yaml [--dry-run]` (changed services
    /// roll out one instance at a time).
    Apply(apply::ApplyArgs),
    /// List supervised service instances (system services and started groups).
    Services(cli::ServicesArgs),
    /// `torc service purge NAME`: remove the data of a service no longer in the rack config.
    Service(cli::ServiceArgs),
    /// The switch's routes: the ones the rack's tasks need, and the table its network agent
    /// reported (with each route's owner and the task behind it).
    Routes(cli::StatusArgs),
    /// The switch's ports, as its network agent last reported them.
    Ports(cli::StatusArgs),
    /// The alerts of the rack config's rules that hold now, pending or firing.
    Alerts(cli::StatusArgs),
    /// List service groups, or start or stop one: `torc group start NAME`.
    Group(cli::GroupArgs),
    /// Create, list and revoke tokens (admin, viewer, join, framework).
    Token(cli::TokenArgs),
    /// List rack secrets, or set one from standard input.
    Secret(cli::SecretArgs),
    /// Save the controller's state (records, counters, secrets sealed under a passphrase) to
    /// a file.
    Backup(backup::BackupArgs),
    /// Write a controller's store from a `torc backup` file, into a data dir that has none.
    Restore(backup::RestoreArgs),
    /// The rack CA: `torc ca init DIR`, `torc ca issue DIR --out NAME --dns ... --ip ...`.
    Ca(cli::CaArgs),
    /// Internal: supervise one task process (started by the agent).
    #[command(hide = true)]
    Shim(roles::ShimArgs),
}

/// jemalloc, not glibc's malloc: see the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // A container's logging program, started by containerd's shim with arguments of its own
    // shape (not a subcommand): before any thread starts.
    if let Some(code) = roles::container_log_if_called() {
        return code;
    }
    let cli = Cli::parse();
    // The shim must not start threads or a runtime before it forks the task.
    if let Command::Shim(args) = cli.command {
        return roles::run_shim(args);
    }
    let client_command = matches!(&cli.command, Command::Controller(a) if a.is_client());
    if client_command
        || matches!(
            cli.command,
            Command::Nodes(_)
                | Command::Node(_)
                | Command::Tasks(_)
                | Command::Run(_)
                | Command::Kill(_)
                | Command::Image(_)
                | Command::Logs(_)
                | Command::Status(_)
                | Command::Apply(_)
                | Command::Services(_)
                | Command::Service(_)
                | Command::Routes(_)
                | Command::Ports(_)
                | Command::Alerts(_)
                | Command::Group(_)
                | Command::Token(_)
                | Command::Secret(_)
                | Command::Backup(_)
                | Command::Restore(_)
                | Command::Ca(_)
        )
    {
        // A client command piped into `head` ends quietly when the pipe closes, as CLI tools
        // do; the server roles keep ignoring SIGPIPE.
        // SAFETY: SIG_DFL installs no handler of ours; this runs before any thread starts.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    raise_open_files_limit();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Controller(args) => roles::run_controller(args),
        Command::Agent(args) => roles::run_agent(args),
        Command::Datacollector(args) => roles::run_collector(args),
        Command::Dns(args) => roles::run_dns(args),
        Command::Kv(args) => roles::run_kv(args),
        Command::Tsdb(args) => roles::run_tsdb(args),
        Command::Statesync(args) => roles::run_statesync(args),
        Command::NetworkAgent(args) => network_agent::run_network_agent(args),
        Command::Nodes(args) => cli::nodes(args),
        Command::Node(args) => node::node(args),
        Command::Tasks(args) => cli::tasks(args),
        Command::Run(args) => run::run(args),
        Command::Kill(args) => cli::kill(args),
        Command::Image(args) => images::image(args),
        Command::Logs(args) => cli::logs(args),
        Command::Status(args) => cli::status(args),
        Command::Apply(args) => apply::apply(args),
        Command::Alerts(args) => cli::alerts(args),
        Command::Services(args) => cli::services(args),
        Command::Service(args) => cli::service(args),
        Command::Routes(args) => cli::routes(args),
        Command::Ports(args) => cli::ports(args),
        Command::Group(args) => cli::group(args),
        Command::Token(args) => cli::token(args),
        Command::Secret(args) => cli::secret(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Ca(args) => cli::ca(args),
        Command::Shim(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torc: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard one (as Go does at start): servers bound
/// their connections themselves (`torc_tls::ServeOptions`, the DNS TCP caps), and the usual soft
/// limit of 1024 is below those bounds.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
