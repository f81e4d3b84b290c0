//! `torc up`: a whole rack on one machine. The controller and every node's agent run as child
//! processes and stay in the foreground; on Ctrl-C or SIGTERM `torc up` stops everything it
//! started and removes what it made.
//!
//! The rack's network (`--network`, default `auto`):
//! - **namespaces** (root, or CAP_SYS_ADMIN and CAP_NET_ADMIN): every node in a network
//!   namespace of its own (`torc-<slug>-<node>`), each compute node linked to the switch (the
//!   controller node, `wedge`) by a veth pair `swpN` ↔ `eth0`, on rack addresses in
//!   198.18.0.0/15, each agent inside its node's namespace. The host never sends to a rack
//!   address: the README's endpoints (`127.0.3.20`, `.21`, ...) are forwarders whose upstream
//!   sockets are made inside the switch's namespace. Built by `torc_net::rack` (the code test
//!   racks use too), under the lock `/run/torc/<slug>.lock`, after a sweep of what killed
//!   racks left behind.
//! - **loopback**: every node on its own loopback address (controller `127.0.3.20`, compute
//!   nodes `.21`, `.22`, ...), so that every node can use the standard ports.
//!
//! Containers (`--containers`, default `auto`): one private containerd per rack, started after
//! the namespaces and before the agents and stopped after them (`containers.rs`).
//!
//! The rack is secure as a real one: `torc up` creates a rack CA and two tokens (admin, join)
//! in its state directory, which is private to the user (0700, under `$XDG_STATE_HOME` or
//! `~/.local/state`, never a predictable path in a world-writable directory). The controller
//! serves TLS with a certificate from that CA; agents join with the join token and get their
//! own credential and certificate.

mod config;
mod containers;
mod etcd;
mod net;
mod spawn;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use torc_config::RackConfig;
use torc_net::rack::{self, Forwarders, RackLock, RackNet};
use torc_types::{NodeName, NodeType};

use crate::process::{init_tracing, shutdown_signal};
use config::{Layout, sample_config_with};
use containers::{Containers, RackContainerd};
use net::Network;
use spawn::{Child, spawn, stop};

#[derive(Args)]
pub struct UpArgs {
    /// Number of compute nodes (bladerunner1..N) when no --config is given.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// A rack config to run instead of the sample one.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Keep the rack's state here, so that it survives a restart. By default the user's own
    /// state directory for it (`~/.local/state/torc/up`) is wiped at start and used.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The controller's address; compute nodes take the next ones (sample config only). On
    /// namespaces these are the nodes' endpoints on the host.
    #[arg(long, default_value = "127.0.3.20")]
    ip_base: Ipv4Addr,
    /// API port of the controller.
    #[arg(long, default_value_t = 3000)]
    api_port: u16,
    /// The rack's network: each node in a network namespace of its own (needs root, or
    /// CAP_SYS_ADMIN and CAP_NET_ADMIN), or on a loopback address of the host; `auto` takes
    /// namespaces when it may.
    #[arg(long, value_enum, default_value_t = Network::Auto)]
    network: Network,
    /// Containers: a private containerd for the rack (root, with containerd and runc
    /// installed), each agent in a containerd namespace of its own; `auto` takes one when it
    /// may, and says why not in one line.
    #[arg(long, value_enum, default_value_t = Containers::Auto)]
    containers: Containers,
    /// Controller nodes (1 to 3; sample config only): with 2 or more, each runs a controller,
    /// one leads and the others stand by, and their state lives in a real 3-member etcd
    /// cluster (Debian's `etcd-server`) that torc up starts and stops.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    controllers: u8,
    /// `--controllers 2`: a highly available controller.
    #[arg(long, conflicts_with = "controllers")]
    ha: bool,
    /// Only remove what killed racks left behind (their containers and containerd, their
    /// namespaces, the processes still in them, their records under /run/torc, the host's
    /// guard route), then exit.
    #[arg(long)]
    clean: bool,
}

/// The admin token's file in a local rack's state directory (in `credentials/`, 0700).
pub const ADMIN_TOKEN: &str = "credentials/admin.token";
/// The join token's file.
pub const JOIN_TOKEN: &str = "credentials/join.token";
/// The rack CA's directory.
pub const CA_DIR: &str = "pki";
/// The host's URLs of a rack's controllers, comma-separated (the CLI's default when it names
/// no controller).
pub const CONTROLLERS: &str = "controllers";

/// Where `torc up` keeps its state when not told otherwise: for root `/var/lib/torc/up`
/// (tasks run as `nobody` and must reach their sandboxes, which a home directory of 0700 would
/// hide), for anyone else the user's own state directory (`$XDG_STATE_HOME/torc/up`, else
/// `~/.local/state/torc/up`).
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/torc/up"));
    }
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_STATE_HOME nor HOME is set; give --data-dir")?;
            PathBuf::from(home).join(".local").join("state")
        }
    };
    Ok(base.join("torc").join("up"))
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    init_tracing("warn");
    if args.clean {
        return clean();
    }
    // A current-thread runtime: children are spawned from this thread, which lives as long as
    // the rack (their PDEATHSIG is tied to it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(up(args))
}

/// `torc up --clean`: the sweep alone.
fn clean() -> anyhow::Result<()> {
    let containerds = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(containers::sweep_killed("torc up --clean", None))
        .context("cannot sweep the containerd of killed racks")?;
    for line in &containerds {
        println!("{line}");
    }
    let swept = rack::sweep(None).context("cannot sweep what killed racks left behind")?;
    report_sweep("torc up --clean", &swept);
    if swept.namespaces.is_empty() && !swept.guard_removed && containerds.is_empty() {
        println!("torc up --clean: nothing left behind by killed racks");
    }
    Ok(())
}

fn report_sweep(who: &str, swept: &rack::Swept) {
    if !swept.namespaces.is_empty() {
        let names: Vec<&str> = swept.namespaces.iter().map(|n| n.as_str()).collect();
        println!(
            "{who}: removed {} namespace(s) left by killed racks ({} process(es) in them stopped): {}",
            names.len(),
            swept.processes,
            names.join(" ")
        );
    }
    for busy in &swept.busy {
        println!("{who}: left {busy}* alone: its rack is running");
    }
    if swept.guard_removed {
        println!(
            "{who}: removed the host's guard route ({}): no rack runs",
            rack::guard_route()
        );
    }
}

/// Decides the rack's network before anything is made: `--network`, the privileges this
/// process has, and (with `--config`) whether the config's addresses are rack addresses.
fn choose_layout(args: &UpArgs) -> anyhow::Result<Layout> {
    if args.network == Network::Loopback {
        return Ok(Layout::Loopback);
    }
    let given = args
        .config
        .as_ref()
        .map(|p| RackConfig::load(p).map(|c| (p, c)))
        .transpose()?;
    if args.network == Network::Auto
        && let Some((path, c)) = &given
        && !config::has_rack_addresses(c)
    {
        println!(
            "torc up: the controller node of {} is not on a rack address ({}); running its nodes on their own addresses",
            path.display(),
            rack::rack_range()
        );
        return Ok(Layout::Loopback);
    }
    if !torc_net::netns::capable()? {
        let why = "needs CAP_SYS_ADMIN and CAP_NET_ADMIN";
        if args.network == Network::Namespaces {
            bail!(
                "--network namespaces: cannot create network namespaces here ({why}: run as root)"
            );
        }
        let on = match &given {
            Some(_) => "on its config's addresses".to_string(),
            None => {
                let last = Ipv4Addr::from(u32::from(args.ip_base) + args.nodes as u32);
                format!("on {}", net::span(&[args.ip_base, last]))
            }
        };
        println!(
            "torc up: cannot create network namespaces here ({why}); running the loopback rack {on}"
        );
        return Ok(Layout::Loopback);
    }
    match &given {
        Some((path, c)) => config::check_for_namespaces(c)
            .with_context(|| format!("{} cannot run on network namespaces", path.display()))?,
        None if args.nodes + controllers(args) - 1 > rack::MAX_COMPUTE_NODES => bail!(
            "--nodes {} with --controllers {}: a rack on namespaces has at most {} nodes besides the switch",
            args.nodes,
            controllers(args),
            rack::MAX_COMPUTE_NODES
        ),
        None => {}
    }
    Ok(Layout::Namespaces)
}

/// How many controllers the sample rack runs (`--controllers`, `--ha`).
fn controllers(args: &UpArgs) -> usize {
    if args.ha {
        2
    } else {
        args.controllers as usize
    }
}

/// A namespaced rack's network and the host's ways into it. Stopped in this order: the
/// forwarders, then the namespaces.
struct RackNetwork {
    forwarders: Forwarders,
    rack: RackNet,
}

impl RackNetwork {
    /// Builds the rack's network for `config` under `lock`, checks it, and starts the
    /// forwarders from the nodes' endpoints.
    fn start(
        config: &RackConfig,
        lock: RackLock,
        purpose: &str,
        api_port: u16,
        extra: &[rack::Forward],
    ) -> anyhow::Result<RackNetwork> {
        let plan = net::plan_of(config, lock.prefix().clone())?;
        let rack = rack::create(plan, lock, purpose)?;
        rack.check()?;
        let mut forwards = net::forwards(config, api_port);
        forwards.extend_from_slice(extra);
        let forwarders = Forwarders::start(rack.switch(), &forwards)?;
        Ok(RackNetwork { forwarders, rack })
    }

    fn describe(&self, config: &RackConfig) -> String {
        let plan = self.rack.plan();
        let v4 = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        };
        let endpoints: Vec<Ipv4Addr> = config
            .nodes
            .iter()
            .filter_map(|n| n.endpoint.and_then(v4))
            .collect();
        let addresses: Vec<Ipv4Addr> = config.nodes.iter().filter_map(|n| v4(n.ip)).collect();
        format!(
            "  network:     namespaces {}*: switch {} with ports {}; endpoints {} forward to {}",
            plan.prefix,
            plan.switch_netns,
            plan.links
                .iter()
                .map(|l| l.port.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            net::span(&endpoints),
            net::span(&addresses),
        )
    }

    fn stop(self) -> anyhow::Result<()> {
        self.forwarders.stop();
        self.rack.teardown()?;
        Ok(())
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let layout = choose_layout(&args)?;
    let with_containers = containers::decide(args.containers)?;
    let (data_dir, wipe) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (default_data_dir()?, true),
    };
    // On namespaces or with containers: the rack's lock, then the sweep (containerd, then
    // namespaces), before the old state is wiped (the processes of a killed rack in its
    // namespaces, and its containerd, may still be using it).
    let lock = match (layout, with_containers) {
        (Layout::Loopback, false) => None,
        _ => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let prefix = net::slug_of(&data_dir)?;
            let lock = match RackLock::acquire(&prefix) {
                Ok(lock) => lock,
                Err(torc_net::Error::Busy { path, .. }) => bail!(
                    "another torc up runs with the state directory {} (it holds {path})",
                    data_dir.display()
                ),
                Err(e) => return Err(e.into()),
            };
            for line in containers::sweep_killed("torc up", Some(&lock))
                .await
                .context("cannot sweep the containerd of killed racks")?
            {
                println!("{line}");
            }
            let swept =
                rack::sweep(Some(&lock)).context("cannot sweep what killed racks left behind")?;
            report_sweep("torc up", &swept);
            Some(lock)
        }
    };
    if wipe && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot wipe the old local rack in {}", data_dir.display()))?;
    }
    // 0711: tasks of the node's task user reach their own sandboxes under `agents/`; they
    // list nothing, and the secrets sit in 0700 directories (`credentials/`, `pki/`,
    // `controller/`) or in 0600 files.
    torc_tls::files::own_private_dir(&data_dir)?;
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
    let logs = data_dir.join("logs");
    torc_tls::files::private_dir(&logs)?;

    let config_path = match &args.config {
        Some(p) => p.clone(),
        None => {
            let p = data_dir.join("rack.yaml");
            std::fs::write(
                &p,
                sample_config_with(args.nodes, controllers(&args), args.ip_base, layout),
            )?;
            p
        }
    };
    let config = RackConfig::load(&config_path)?;
    let masters: Vec<&torc_config::NodeConfig> = config
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Master)
        .collect();
    if masters.is_empty() {
        bail!("the rack config has no `type: master` node to run the controller on");
    }
    // Several controller nodes: each runs a controller, on the rack's etcd.
    let ha = masters.len() > 1;
    // Agents reach the controllers at their rack addresses; the host (this process, the CLI,
    // the browser) at their endpoints, which on namespaces are forwarders.
    let rack_urls: Vec<String> = (masters.iter())
        .map(|m| format!("https://{}:{}", m.ip, args.api_port))
        .collect();
    let host_urls: Vec<String> = (masters.iter())
        .map(|m| format!("https://{}:{}", net::host_address(m), args.api_port))
        .collect();
    let host_url = host_urls[0].clone();

    // The rack CA and the tokens, made once per state directory.
    let ca_dir = data_dir.join(CA_DIR);
    if !ca_dir.join("ca.pem").exists() {
        torc_tls::pki::Ca::create(&ca_dir, &config.name)?;
    }
    let ca_pem = ca_dir.join("ca.pem");
    let token_path = data_dir.join(ADMIN_TOKEN);
    let join_path = data_dir.join(JOIN_TOKEN);
    for path in [&token_path, &join_path] {
        if !path.exists() {
            torc_tls::files::write_secret(path, &(torc_controller::fresh_token() + "\n"))?;
        }
    }
    let token = torc_tls::files::read_secret(&token_path)?;

    let prefix = lock.as_ref().map(|l| l.prefix().clone());
    let etcd_nodes = match ha {
        true => etcd::member_nodes(&config)?,
        false => Vec::new(),
    };
    let etcd_forwards = etcd::forwards(
        &(etcd_nodes.iter())
            .map(|n| etcd::MemberSpec::on(n, None))
            .collect::<Vec<_>>(),
    );
    // A loopback rack with containers holds its lock itself; a namespaced one's network does.
    let (network, loopback_lock) = match (lock, layout) {
        (Some(lock), Layout::Namespaces) => (
            Some(RackNetwork::start(
                &config,
                lock,
                &format!("torc up, state in {}", data_dir.display()),
                args.api_port,
                &etcd_forwards,
            )?),
            None,
        ),
        (lock, _) => (None, lock),
    };
    // After the namespaces, before the agents, outside every namespace.
    let containerd = match (with_containers, &prefix) {
        (true, Some(prefix)) => match RackContainerd::start(&data_dir, prefix).await {
            Ok(containerd) => Some(containerd),
            Err(e) => {
                stop_network(network);
                return Err(e);
            }
        },
        _ => None,
    };
    let s = |p: &Path| p.display().to_string();
    println!(
        "torc up: rack {:?} with {} nodes, state in {}",
        config.name,
        config.nodes.len(),
        data_dir.display()
    );
    if let Some(network) = &network {
        println!("{}", network.describe(&config));
    }
    if let Some(containerd) = &containerd {
        println!("{}", containerd.describe());
    }
    let netns_of = |node: &str| network.as_ref().and_then(|n| n.rack.netns(node));
    // The etcd members first: the controllers keep their state there.
    let mut rack_etcd = None;
    if ha {
        let ca = torc_tls::pki::Ca::load(&ca_dir)?;
        let started = etcd::RackEtcd::start(etcd::EtcdOptions {
            rack: &config.name,
            state_dir: &data_dir,
            logs: &logs,
            security: etcd::Security::Tls(&ca),
            members: (etcd_nodes.iter())
                .map(|n| etcd::MemberSpec::on(n, netns_of(n.name.as_str())))
                .collect(),
            start_timeout: etcd::START_TIMEOUT,
        })
        .await;
        match started {
            Ok(e) => {
                println!("{}", e.describe());
                rack_etcd = Some(e);
            }
            Err(e) => {
                stop_containerd(containerd).await;
                stop_network(network);
                release(loopback_lock);
                return Err(e);
            }
        }
    }
    let mut children = Vec::new();
    for (i, m) in masters.iter().enumerate() {
        let (label, dir, log) = match i {
            0 => (
                "controller".to_string(),
                data_dir.join("controller"),
                logs.join("controller.log"),
            ),
            _ => (
                format!("controller {}", m.name),
                data_dir.join(format!("controller-{}", m.name)),
                logs.join(format!("controller-{}.log", m.name)),
            ),
        };
        let mut a = vec![
            "controller".into(),
            "--config".into(),
            s(&config_path),
            "--data-dir".into(),
            s(&dir),
            "--listen".into(),
            format!("{}:{}", m.ip, args.api_port),
            "--admin-token-file".into(),
            s(&token_path),
            "--join-token-file".into(),
            s(&join_path),
            "--ca-dir".into(),
            s(&ca_dir),
        ];
        if let Some(e) = &rack_etcd {
            a.extend([
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                e.rack_endpoints().join(","),
                "--name".into(),
                m.name.to_string(),
                "--advertise-url".into(),
                rack_urls[i].clone(),
            ]);
            if let Some(tls) = e.tls() {
                a.extend([
                    "--etcd-ca".into(),
                    s(&tls.ca),
                    "--etcd-cert".into(),
                    s(&tls.controller.cert),
                    "--etcd-key".into(),
                    s(&tls.controller.key),
                ]);
            }
        }
        children.push(spawn(&label, &a, &log, netns_of(m.name.as_str()))?);
    }
    for node in &config.nodes {
        let mut a = vec![
            "agent".into(),
            "--controller".into(),
            rack_urls.join(","),
            "--name".into(),
            node.name.to_string(),
            "--ip".into(),
            node.ip.to_string(),
            "--data-dir".into(),
            s(&data_dir.join("agents").join(node.name.as_str())),
            "--join-token-file".into(),
            s(&join_path),
            "--ca".into(),
            s(&ca_pem),
            "--kill-tasks-on-exit".into(),
        ];
        if let Some(f) = &node.function {
            a.extend(["--function".into(), f.clone()]);
        }
        match &containerd {
            Some(containerd) => a.extend([
                "--containerd".into(),
                s(&containerd.socket()),
                "--containerd-namespace".into(),
                containerd.namespace(node.name.as_str()),
            ]),
            None => a.extend(["--containerd".into(), "off".into()]),
        }
        children.push(spawn(
            &format!("agent of {}", node.name),
            &a,
            &logs.join(format!("agent-{}.log", node.name)),
            netns_of(node.name.as_str()),
        )?);
    }

    let client = torc_client::Client::from_files(host_urls.join(","), Some(token), Some(&ca_pem))?;
    // The CLI's default controllers for this rack (read with its admin token and CA).
    std::fs::write(data_dir.join(CONTROLLERS), host_urls.join(","))?;
    let expected: Vec<NodeName> = config.nodes.iter().map(|n| n.name.clone()).collect();
    let result = tokio::select! {
        r = wait_for_nodes(&client, &expected, &mut children, &logs) => r,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        stop(children).await;
        if let Some(e) = rack_etcd {
            e.stop().await;
        }
        stop_containerd(containerd).await;
        stop_network(network);
        release(loopback_lock);
        return Err(e);
    }
    println!();
    if ha {
        let leader = tokio::select! {
            l = wait_for_leader(&client, masters.len()) => l,
            _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
        };
        match leader {
            Ok(line) => println!("  {line}"),
            Err(e) => eprintln!("torc up: {e:#}"),
        }
    }
    println!("Rack is up.");
    println!(
        "  UI:          {host_url}/  (log in with the admin token; the browser must trust the rack CA)"
    );
    println!("  API:         {host_url}/api/v1/nodes");
    println!("  admin token: {}", token_path.display());
    println!("  rack CA:     {}", ca_pem.display());
    println!("  logs:        {}", logs.display());
    println!(
        "  curl:  curl --cacert {} -H \"Authorization: Bearer $(cat {})\" {host_url}/api/v1/nodes",
        ca_pem.display(),
        token_path.display()
    );
    if ha
        || args.data_dir.is_some()
        || args.api_port != 3000
        || args.ip_base != Ipv4Addr::new(127, 0, 3, 20)
    {
        println!(
            "  for the CLI: export TORC_CONTROLLER={} TORC_TOKEN_FILE={} TORC_CA={}",
            host_urls.join(","),
            token_path.display(),
            ca_pem.display()
        );
    }
    println!("Try `torc nodes`, `torc run -- sleep 60`, `torc tasks`. Ctrl-C stops the rack.");

    // Stay up until told to stop; report children that die on their own.
    let mut watched = children;
    loop {
        let died = async {
            loop {
                for (i, c) in watched.iter_mut().enumerate() {
                    if let Ok(Some(status)) = c.child.try_wait() {
                        return (i, status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let member_died = async {
            loop {
                if let Some(gone) = rack_etcd.as_mut().and_then(|e| e.exited()) {
                    return gone;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            (i, status) = died => {
                let c = watched.remove(i);
                eprintln!("torc up: the {} exited ({status}); see {}", c.label, logs.display());
                let controllers_left = watched.iter().any(|c| c.label.starts_with("controller"));
                if c.label.starts_with("controller") && !controllers_left {
                    stop(watched).await;
                    if let Some(e) = rack_etcd {
                        e.stop().await;
                    }
                    stop_containerd(containerd).await;
                    stop_network(network);
                    release(loopback_lock);
                    bail!("no controller runs; the rack is down");
                }
            }
            (name, status, log) = member_died => {
                eprintln!(
                    "torc up: the etcd member on {name} exited ({status}); see {}",
                    log.display()
                );
            }
            _ = shutdown_signal() => break,
        }
    }
    println!("\nStopping the rack...");
    // Agents and controllers first (agents stop their containers), then the etcd members,
    // then containerd, then the namespaces.
    stop(watched).await;
    if let Some(e) = rack_etcd {
        e.stop().await;
    }
    if let Some(containerd) = containerd {
        containerd.stop().await?;
    }
    if let Some(network) = network {
        network.stop()?;
    }
    release(loopback_lock);
    println!("Stopped.");
    Ok(())
}

/// Stops the rack's containerd on a failure path, where its own failure is only worth a line.
async fn stop_containerd(containerd: Option<RackContainerd>) {
    if let Some(containerd) = containerd
        && let Err(e) = containerd.stop().await
    {
        eprintln!("torc up: {e:#}");
    }
}

/// Lets go of a loopback rack's lock (held for its containerd), removing its file.
fn release(lock: Option<RackLock>) {
    if let Some(lock) = lock {
        lock.release();
    }
}

/// Stops the rack's network on a failure path, where its own failure is only worth a line.
fn stop_network(network: Option<RackNetwork>) {
    if let Some(network) = network
        && let Err(e) = network.stop()
    {
        eprintln!("torc up: {e:#}");
    }
}

/// Waits until a controller leads and acts; `controller wedge leads (epoch 12); standby:
/// wedge2`.
async fn wait_for_leader(
    client: &torc_client::Client,
    controllers: usize,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Every controller campaigning, or (past 10 s) whoever does.
        let patience = Instant::now() + Duration::from_secs(20) > deadline;
        if let Ok(c) = client.controller_status().await
            && let Some(leader) = &c.leader
            && (c.acting || c.name != leader.name)
            && (c.controllers.len() >= controllers || patience)
        {
            let standbys: Vec<&str> = (c.controllers.iter())
                .skip(1)
                .map(|x| x.name.as_str())
                .collect();
            return Ok(format!(
                "controller {} leads (epoch {}); standby: {}",
                leader.name,
                leader.epoch,
                if standbys.is_empty() {
                    "none yet".to_string()
                } else {
                    standbys.join(", ")
                }
            ));
        }
        if Instant::now() > deadline {
            bail!("no controller leads after 30 s; see the controllers' logs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_nodes(
    client: &torc_client::Client,
    expected: &[NodeName],
    children: &mut [Child],
    logs: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = std::collections::BTreeSet::new();
    loop {
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                bail!(
                    "the {} exited during start-up ({status}); see its log in {}",
                    c.label,
                    logs.display()
                );
            }
        }
        if let Ok(nodes) = client.nodes().await {
            for n in nodes.iter().filter(|n| n.active) {
                if shown.insert(n.name.clone()) {
                    println!(
                        "  node {:<14} {:<12} {:<10} registered ({}/{})",
                        n.name.as_str(),
                        n.ip.to_string(),
                        n.node_function,
                        shown.len(),
                        expected.len()
                    );
                }
            }
            if expected.iter().all(|e| shown.contains(e)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let missing: Vec<&str> = expected
                .iter()
                .filter(|e| !shown.contains(*e))
                .map(|e| e.as_str())
                .collect();
            bail!(
                "nodes did not register within 60 s: {}; see the logs in {}",
                missing.join(", "),
                logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
