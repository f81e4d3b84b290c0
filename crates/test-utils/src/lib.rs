//! Test support: a real local rack (controller and agents as separate `torc` processes on a
//! loopback block of their own, or each node in a network namespace of its own), and waiting
//! on conditions instead of sleeping.
//!
//! Every rack picks a random `127.X.Y.0/24` block and free ports, so test runs can go in
//! parallel on one machine. Dropping a `LocalRack` stops every process it started, including
//! task processes left behind by agents a test killed with SIGKILL, and removes its namespaces.
//!
//! Containers: [`Registry`], [`TestImage`] and [`Containerd`] (module `containers`). A rack
//! with `RackOptions.containers` runs a private [`Containerd`] (swept after its agents stop)
//! and gives each agent a containerd namespace of its own; every other rack's agents get
//! `--containerd off`, so no test talks to the system's containerd.
//!
//! A rack on namespaces ([`RackNetwork::Namespaces`]) is built by `torc_net::rack`, the code
//! `torc up` uses, under a random slug whose lock it holds while it lives; the test reaches the
//! API through a forwarder on the rack's loopback block, never a rack address. Tests call
//! [`LocalRack::assert_namespaces`] before they send anything, and skip (one printed line)
//! without the privilege ([`namespaces_or_skip`]).

pub mod bench;
mod containers;
mod etcd;
pub mod faults_load;
pub mod faults_net;
mod namespaces;
pub mod prom;
pub mod syscalls;
mod tasks;
pub mod up;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use torc_client::Client;

pub use containers::{
    Containerd, Registry, TEST_IMAGE, TEST_IMAGE_NAME, TestImage, containers_or_skip,
    push_padded_image, require_container_peers,
};
pub use etcd::{Etcd, EtcdCluster, etcdctl};
pub use namespaces::namespaces_or_skip;
pub use tasks::{
    COUNTING_SERVER, DNS_SYSTEM_SERVICE, PYTHON, assert_counted_tail, plain_state_store,
    python_task, stdout_of, system_services, wait_running,
};
pub use torc_types::{random_bytes, random_u64};

/// A `127.X.Y.0/24` block no one is listening in, for one rack's nodes. Avoids 127.0.x.x
/// (the default local rack and ordinary localhost use).
pub fn free_loopback_block() -> Ipv4Addr {
    loop {
        let r = random_u64();
        let x = 1 + (r % 254) as u8;
        let y = (r >> 8) as u8;
        let base = Ipv4Addr::new(127, x, y, 0);
        if TcpListener::bind((Ipv4Addr::new(127, x, y, 1), 0)).is_ok() {
            return base;
        }
    }
}

/// Makes the child get SIGKILL when the test process dies, so a crashed or killed test leaves
/// no server behind.
fn die_with_test(cmd: &mut Command) {
    // SAFETY: pre_exec runs between fork and exec; prctl is an async-signal-safe system call
    // that allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
}

/// A fresh token of the shape the controller adopts from a file (`torc_<16 hex>_<64 hex>`,
/// as `torc_controller::fresh_token` makes them).
pub fn fresh_token() -> String {
    let mut b = [0u8; 40];
    random_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("torc_{}_{}", &hex[..16], &hex[16..])
}

/// A free TCP port on `ip`.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("loopback has free ports")
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How to build a rack.
#[derive(Debug, Clone)]
pub struct RackOptions {
    /// Compute nodes, named `bladerunner1..N`, besides the controller node `wedge`.
    pub compute_nodes: usize,
    /// `stateclean.timeout_in_seconds`: silence after which a node is inactive. 10 s by
    /// default, so that a loaded machine (CI runs the suite in parallel) never takes every node
    /// for lost; a test of a lost node sets a short one.
    pub node_timeout_secs: u64,
    /// How the rack guards itself.
    pub security: Security,
    /// Resources each node offers.
    pub node_resources: (f64, f64),
    /// More top-level config (e.g. `healthcheck:`, `api:`, `open_join: true`), appended as is.
    pub extra_yaml: String,
    /// How the nodes are connected.
    pub network: RackNetwork,
    /// Node name → its `task_block` instead of the standard `/24` (namespaces only), e.g. a
    /// `/30` that holds one task address.
    pub task_blocks: BTreeMap<String, String>,
    /// Start a private containerd for the rack ([`Containerd`]) and give every agent
    /// `--containerd <its socket> --containerd-namespace <its namespace>-<node>`. Without it
    /// every agent gets `--containerd off`, so no test talks to the system's containerd. Needs
    /// root and containerd: check [`containers_or_skip`] first.
    pub containers: bool,
    /// Controller nodes: `wedge`, then `wedge2`, ... (loopback racks only). With two or more,
    /// the rack runs a real 3-member etcd cluster ([`EtcdCluster`]) and every controller keeps
    /// its state there (`--store etcd`), one leading; agents get every controller's URL.
    pub controllers: usize,
    /// Environment added to every controller process, e.g. libfaketime's
    /// ([`faults_load::FakeClock::env`]) to step a controller's wall clock.
    pub controller_env: Vec<(String, String)>,
    /// The `--data-dir` of the controller `wedge` (e.g. on a small file system a test mounted),
    /// instead of `controller` in the rack's directory.
    pub controller_data_dir: Option<PathBuf>,
}

/// How a test rack's nodes are connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RackNetwork {
    /// Each node on its own address of the rack's loopback block.
    #[default]
    Loopback,
    /// Each node in its own network namespace on a rack address (`198.18.0.20`, `.21`, ...),
    /// linked to the switch (`wedge`'s namespace) by `swpN` ↔ `eth0`, with a task block
    /// (`198.19.N.0/24`) and its loopback address as `endpoint`; the rack has a netlink
    /// network agent unless `extra_yaml` names one. Needs CAP_SYS_ADMIN and CAP_NET_ADMIN.
    Namespaces,
}

/// How a test rack guards itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// As `torc up` runs a rack: tokens (admin, join, node credentials) and TLS from a rack CA.
    Tls,
    /// Tokens over plain HTTP (`--plaintext`).
    Plain,
    /// No credentials at all (`--insecure --plaintext`).
    Insecure,
}

impl Default for RackOptions {
    fn default() -> Self {
        RackOptions {
            compute_nodes: 4,
            node_timeout_secs: 10,
            security: Security::Tls,
            node_resources: (4.0, 4096.0),
            extra_yaml: String::new(),
            network: RackNetwork::Loopback,
            task_blocks: BTreeMap::new(),
            containers: false,
            controllers: 1,
            controller_env: Vec::new(),
            controller_data_dir: None,
        }
    }
}

/// A rack of real `torc` processes.
pub struct LocalRack {
    pub dir: tempfile::TempDir,
    exe: PathBuf,
    pub base: Ipv4Addr,
    pub port: u16,
    /// The admin token (none for an insecure rack).
    pub token: Option<String>,
    pub security: Security,
    pub config_path: PathBuf,
    /// Node name → ip: its address in the rack (a rack address on namespaces, which the
    /// host must not send to).
    pub nodes: BTreeMap<String, Ipv4Addr>,
    /// Node name → where the host reaches it: its address on loopback, its endpoint (a
    /// forwarder for the API) on namespaces.
    pub endpoints: BTreeMap<String, Ipv4Addr>,
    /// The controller nodes (`wedge`, `wedge2`, ...), in order.
    pub controller_names: Vec<String>,
    controllers: BTreeMap<String, Child>,
    /// The etcd cluster of a rack of several controllers.
    etcd: Option<EtcdCluster>,
    agents: BTreeMap<String, Child>,
    /// The rack's private containerd (`RackOptions.containers`), swept after the agents stop.
    containerd: Option<Containerd>,
    namespaces: Option<namespaces::Namespaces>,
    /// `RackOptions.controller_env`.
    controller_env: Vec<(String, String)>,
    /// `RackOptions.controller_data_dir`.
    controller_data_dir: Option<PathBuf>,
}

impl LocalRack {
    /// Starts a controller and one agent per node, and waits until every node is active.
    pub async fn start(exe: impl AsRef<Path>, opts: RackOptions) -> anyhow::Result<LocalRack> {
        let dir = tempfile::Builder::new().prefix("torc-rack-").tempdir()?;
        // Tasks of the nodes' task user (`nobody`) reach their sandboxes through here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )?;
        let base = free_loopback_block();
        let ip = |i: u8| Ipv4Addr::new(base.octets()[0], base.octets()[1], base.octets()[2], i);
        let port = free_port(ip(1));
        let on_namespaces = opts.network == RackNetwork::Namespaces;
        if opts.controllers == 0 || (on_namespaces && opts.controllers > 1) {
            bail!(
                "RackOptions.controllers: {} (1, or several on a loopback rack)",
                opts.controllers
            );
        }
        let controller_names: Vec<String> = (1..=opts.controllers)
            .map(|i| match i {
                1 => "wedge".to_string(),
                i => format!("wedge{i}"),
            })
            .collect();
        // The first controller first and the others last, so that compute nodes keep the
        // addresses they have on a rack of one controller.
        let names: Vec<String> = std::iter::once("wedge".to_string())
            .chain((1..=opts.compute_nodes).map(|i| format!("bladerunner{i}")))
            .chain(controller_names.iter().skip(1).cloned())
            .collect();
        let (mut nodes, mut endpoints) = (BTreeMap::new(), BTreeMap::new());
        if let Some(node) = (opts.task_blocks.keys()).find(|n| !on_namespaces || !names.contains(n))
        {
            bail!("RackOptions.task_blocks: {node} is not a node of this rack on namespaces");
        }
        let mut yaml = String::from("name: torc-scheduler\ndomain: homer.ave\nnodes:\n");
        // Listed by name, as they always were (`wedge` last); node i keeps its addresses.
        let mut by_name: Vec<(usize, &String)> = names.iter().enumerate().collect();
        by_name.sort_by_key(|(_, name)| *name);
        for (i, name) in by_name {
            let endpoint = ip(1 + i as u8);
            let addr = match on_namespaces {
                true => torc_net::rack::standard_address(i),
                false => endpoint,
            };
            nodes.insert(name.clone(), addr);
            endpoints.insert(name.clone(), endpoint);
            let (t, f) = if controller_names.contains(name) {
                ("master", "controller")
            } else {
                ("slave", "compute")
            };
            yaml.push_str(&format!(
                "  - name: {name}\n    ip: {addr}\n    type: {t}\n    function: {f}\n    resources: {{cpus: {}, mem_mb: {}, disk_mb: 10000}}\n",
                opts.node_resources.0, opts.node_resources.1
            ));
            if on_namespaces {
                let block = match opts.task_blocks.get(name.as_str()) {
                    Some(block) => block.clone(),
                    None => torc_net::rack::standard_task_block(i).to_string(),
                };
                yaml.push_str(&format!(
                    "    endpoint: {endpoint}\n    task_block: {block}\n"
                ));
                if i > 0 {
                    yaml.push_str(&format!("    port: {i}\n"));
                }
            }
        }
        if on_namespaces && !opts.extra_yaml.contains("network-agent:") {
            yaml.push_str("network-agent: {type: netlink, connection: \"\"}\n");
        }
        yaml.push_str(&format!(
            "stateclean:\n  poll_interval_in_seconds: 1\n  timeout_in_seconds: {}\n  restart_delay_in_seconds: 1\n",
            opts.node_timeout_secs
        ));
        yaml.push_str(&opts.extra_yaml);
        let config_path = dir.path().join("rack.yaml");
        std::fs::write(&config_path, yaml)?;
        let token = (opts.security != Security::Insecure).then(fresh_token);
        if let Some(t) = &token {
            torc_tls::files::write_secret(&dir.path().join("admin.token"), t)?;
            torc_tls::files::write_secret(&dir.path().join("join.token"), &fresh_token())?;
        }
        if opts.security == Security::Tls {
            torc_tls::pki::Ca::create(&dir.path().join("pki"), "test")?;
        }
        let namespaces = match on_namespaces {
            true => Some(namespaces::Namespaces::start(
                opts.compute_nodes,
                std::net::SocketAddrV4::new(endpoints["wedge"], port),
            )?),
            false => None,
        };
        // After the namespaces and outside them (as `torc up` does): containers get an explicit
        // network namespace path from their agent.
        let containerd = match opts.containers {
            true => Some(Containerd::start().await?),
            false => None,
        };
        let etcd = match opts.controllers {
            1 => None,
            // As `torc up --ha` runs its members: the controller takes 2,048 operations per
            // transaction and refuses etcd's default of 128.
            _ => Some(EtcdCluster::start_with(3, &["--max-txn-ops", "4096"]).await?),
        };
        let mut rack = LocalRack {
            dir,
            exe: exe.as_ref().to_path_buf(),
            base,
            port,
            token,
            security: opts.security,
            config_path,
            nodes,
            endpoints,
            controller_names,
            controllers: BTreeMap::new(),
            etcd,
            agents: BTreeMap::new(),
            containerd,
            namespaces,
            controller_env: opts.controller_env.clone(),
            controller_data_dir: opts.controller_data_dir,
        };
        rack.start_controller()?;
        let names: Vec<String> = rack.nodes.keys().cloned().collect();
        for name in &names {
            rack.start_agent(name)?;
        }
        rack.wait_active(&names, true).await?;
        // Every controller answers before the rack counts as started: a standby may still be
        // opening its store after the leader has every node active.
        if rack.controller_names.len() > 1 {
            for name in rack.controller_names.clone() {
                wait_for(
                    &format!("controller {name} to answer"),
                    Duration::from_secs(30),
                    || async { rack.controller_status(&name).await.ok() },
                )
                .await
                .with_context(|| rack.logs_hint())?;
            }
        }
        Ok(rack)
    }

    /// The controller's URL for the host (through the API's forwarder on namespaces).
    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.scheme(),
            self.endpoints["wedge"],
            self.port
        )
    }

    /// The controller's URL inside the rack (what agents and tasks use): every controller's,
    /// comma-separated, on a rack of several.
    pub fn rack_url(&self) -> String {
        let urls: Vec<String> = (self.controller_names.iter())
            .map(|n| self.controller_rack_url(n))
            .collect();
        urls.join(",")
    }

    /// Controller `name`'s URL inside the rack.
    pub fn controller_rack_url(&self, name: &str) -> String {
        format!("{}://{}:{}", self.scheme(), self.nodes[name], self.port)
    }

    /// Controller `name`'s URL for the host.
    pub fn controller_url(&self, name: &str) -> String {
        format!("{}://{}:{}", self.scheme(), self.endpoints[name], self.port)
    }

    /// Every controller's URL for the host, comma-separated (one URL on a rack of one).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = (self.controller_names.iter())
            .map(|n| self.controller_url(n))
            .collect();
        urls.join(",")
    }

    /// The etcd cluster of a rack of several controllers.
    pub fn etcd(&self) -> Option<&EtcdCluster> {
        self.etcd.as_ref()
    }

    /// [`LocalRack::etcd`], to kill or restart members.
    pub fn etcd_mut(&mut self) -> Option<&mut EtcdCluster> {
        self.etcd.as_mut()
    }

    fn scheme(&self) -> &'static str {
        match self.security {
            Security::Tls => "https",
            Security::Plain | Security::Insecure => "http",
        }
    }

    /// The namespace of node `node`, on a rack on namespaces.
    pub fn netns(&self, node: &str) -> Option<&torc_net::Netns> {
        self.namespaces.as_ref()?.rack().netns(node)
    }

    /// Checks that the rack is on the namespaces it should be, before the test sends anything:
    /// each `/run/netns/<name>` exists and is a namespace mount (the very one the rack made),
    /// holds its node's rack address, and the host holds no address of 198.18.0.0/15. Panics
    /// with the first problem, or when the rack is not on namespaces.
    pub fn assert_namespaces(&self) {
        let namespaces = self
            .namespaces
            .as_ref()
            .expect("assert_namespaces: this rack is not on namespaces");
        if let Err(e) = namespaces.rack().check() {
            panic!("{e}");
        }
    }

    /// Runs `argv` inside node `node`'s namespace and waits for it (`ip -j route`, a probe).
    /// A node without a namespace is an error: nothing is ever run in the host's by mistake.
    pub fn exec_in(&self, node: &str, argv: &[&str]) -> anyhow::Result<std::process::Output> {
        let ns = self
            .netns(node)
            .with_context(|| format!("node {node} has no namespace in this rack"))?;
        let (program, args) = argv.split_first().context("exec_in: an empty argv")?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        namespaces::enter_in(&mut cmd, ns);
        cmd.output()
            .with_context(|| format!("cannot run {program} in {}", ns.label()))
    }

    /// The switch's ports (`wedge`'s links) with their counters, read over netlink inside its
    /// namespace, by name.
    pub async fn switch_ports(
        &self,
    ) -> anyhow::Result<BTreeMap<String, torc_net::observe::PortView>> {
        let switch = self
            .netns("wedge")
            .context("switch_ports: this rack is not on namespaces")?;
        let nl = torc_net::netns::connect_in(switch)?;
        Ok(torc_net::observe::ports(&nl)
            .await?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect())
    }

    /// The rack CA's certificate (TLS racks).
    pub fn ca_path(&self) -> Option<PathBuf> {
        (self.security == Security::Tls).then(|| self.dir.path().join("pki").join("ca.pem"))
    }

    /// The admin token's file (not for insecure racks).
    pub fn token_path(&self) -> PathBuf {
        self.dir.path().join("admin.token")
    }

    /// A typed client with the admin token.
    pub fn client(&self) -> Client {
        self.client_with(self.token.clone())
    }

    /// A typed client with another token (or none).
    pub fn client_with(&self, token: Option<String>) -> Client {
        // Every controller: the client follows the leader.
        Client::from_files(self.urls(), token, self.ca_path().as_deref())
            .expect("the rack's CA loads")
    }

    /// A plain HTTP client that trusts the rack's CA (no token: add the header yourself).
    pub fn http(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(40));
        if let Some(ca) = self.ca_path() {
            let roots = torc_tls::load_certs(&ca).expect("the rack's CA loads");
            b = b.tls_backend_preconfigured(
                torc_tls::client_config(&roots, None).expect("a client config"),
            );
        }
        b.build().expect("an HTTP client")
    }

    /// [`LocalRack::http`] that sends the admin token with every request.
    pub fn http_admin(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}")
                    .parse()
                    .expect("a token is a valid header"),
            );
        }
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(40))
            .default_headers(headers);
        if let Some(ca) = self.ca_path() {
            let roots = torc_tls::load_certs(&ca).expect("the rack's CA loads");
            b = b.tls_backend_preconfigured(
                torc_tls::client_config(&roots, None).expect("a client config"),
            );
        }
        b.build().expect("an HTTP client")
    }

    /// A new token with `role` (and the framework it acts for), made with the admin token.
    pub async fn make_token(
        &self,
        role: torc_api::TokenRole,
        framework: Option<&str>,
    ) -> anyhow::Result<String> {
        let created = self
            .client()
            .create_token(&torc_api::TokenRequest {
                role,
                name: format!("test {role:?}"),
                framework: framework.map(|f| f.parse()).transpose()?,
                ttl_seconds: None,
            })
            .await?;
        Ok(created.token)
    }

    /// [`LocalRack::make_token`] written to a file (0600) in the rack's directory.
    pub async fn token_file(
        &self,
        role: torc_api::TokenRole,
        framework: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        let token = self.make_token(role, framework).await?;
        let path = self
            .dir
            .path()
            .join(format!("{role:?}-{}.token", framework.unwrap_or("rack")).to_lowercase());
        torc_tls::files::write_secret(&path, &token)?;
        Ok(path)
    }

    /// A client holding a new token with `role` (and the framework it acts for).
    pub async fn client_as(
        &self,
        role: torc_api::TokenRole,
        framework: Option<&str>,
    ) -> anyhow::Result<Client> {
        Ok(self.client_with(Some(self.make_token(role, framework).await?)))
    }

    /// The environment the `torc` CLI needs to talk to this rack as its admin.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("TORC_CONTROLLER".to_string(), self.urls())];
        if self.token.is_some() {
            env.push((
                "TORC_TOKEN_FILE".into(),
                self.token_path().display().to_string(),
            ));
        }
        if let Some(ca) = self.ca_path() {
            env.push(("TORC_CA".into(), ca.display().to_string()));
        }
        env
    }

    fn log(&self, name: &str) -> anyhow::Result<(Stdio, Stdio)> {
        let path = self.dir.path().join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok((f.try_clone()?.into(), f.into()))
    }

    /// Starts `torc <args>` for node `node` (inside its namespace on namespaces).
    fn command(&self, node: &str, args: &[String], log: &str) -> anyhow::Result<Child> {
        self.command_with(node, args, log, &[])
    }

    /// [`LocalRack::command`] with more environment.
    fn command_with(
        &self,
        node: &str,
        args: &[String],
        log: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Child> {
        let (out, err) = self.log(log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        die_with_test(&mut cmd);
        if let Some(net) = &self.namespaces {
            let ns = net
                .rack()
                .netns(node)
                .with_context(|| format!("node {node} has no namespace in this rack"))?;
            namespaces::enter_in(&mut cmd, ns);
        }
        cmd.spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))
    }

    /// Starts every controller that does not run.
    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        for name in self.controller_names.clone() {
            if !self.controllers.contains_key(&name) {
                self.start_controller_named(&name)?;
            }
        }
        Ok(())
    }

    /// Starts controller `name` (`wedge`, `wedge2`, ...).
    pub fn start_controller_named(&mut self, name: &str) -> anyhow::Result<()> {
        let d = self.dir.path();
        let data = match name {
            "wedge" => self
                .controller_data_dir
                .clone()
                .unwrap_or_else(|| d.join("controller")),
            other => d.join(format!("controller-{other}")),
        };
        let mut args = vec![
            "controller".into(),
            "--config".into(),
            self.config_path.display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen".into(),
            format!("{}:{}", self.nodes[name], self.port),
        ];
        if let Some(etcd) = &self.etcd {
            args.extend([
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                etcd.endpoints().join(","),
                "--name".into(),
                name.into(),
                "--advertise-url".into(),
                self.controller_rack_url(name),
            ]);
        }
        match self.security {
            Security::Insecure => args.extend(["--insecure".into(), "--plaintext".into()]),
            Security::Plain | Security::Tls => {
                args.extend([
                    "--admin-token-file".into(),
                    d.join("admin.token").display().to_string(),
                    "--join-token-file".into(),
                    d.join("join.token").display().to_string(),
                ]);
                if self.security == Security::Tls {
                    args.extend(["--ca-dir".into(), d.join("pki").display().to_string()]);
                } else {
                    args.push("--plaintext".into());
                }
            }
        }
        let log = match name {
            "wedge" => "controller".to_string(),
            other => format!("controller-{other}"),
        };
        let child = self.command_with(name, &args, &log, &self.controller_env)?;
        self.controllers.insert(name.to_string(), child);
        Ok(())
    }

    pub fn start_agent(&mut self, name: &str) -> anyhow::Result<()> {
        self.start_agent_following(name, &self.rack_url())
    }

    /// Starts a node's agent with `--controller CONTROLLERS` (a comma-separated list).
    pub fn start_agent_following(&mut self, name: &str, controllers: &str) -> anyhow::Result<()> {
        let d = self.dir.path();
        let mut args = vec![
            "agent".into(),
            "--controller".into(),
            controllers.to_string(),
            "--name".into(),
            name.into(),
            "--ip".into(),
            self.nodes[name].to_string(),
            "--port".into(),
            "0".into(),
            "--data-dir".into(),
            d.join("agents").join(name).display().to_string(),
            "--kill-tasks-on-exit".into(),
        ];
        if self.security != Security::Insecure {
            args.extend([
                "--join-token-file".into(),
                d.join("join.token").display().to_string(),
            ]);
        }
        if let Some(ca) = self.ca_path() {
            args.extend(["--ca".into(), ca.display().to_string()]);
        }
        match (&self.containerd, self.container_namespace(name)) {
            (Some(containerd), Some(namespace)) => args.extend([
                "--containerd".into(),
                containerd.layout.socket().display().to_string(),
                "--containerd-namespace".into(),
                namespace,
            ]),
            _ => args.extend(["--containerd".into(), "off".into()]),
        }
        let child = self.command(name, &args, &format!("agent-{name}"))?;
        self.agents.insert(name.to_string(), child);
        Ok(())
    }

    /// The rack's private containerd (`RackOptions.containers`).
    /// Runs the CLI (`exe`, the `torc` binary) against this rack: (success, stdout, stderr),
    /// with the transcript printed for the test's log.
    pub fn torc(&self, exe: &str, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(exe)
            .args(args)
            .envs(self.cli_env())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
        let result = (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        println!("$ torc {}\n{}{}", args.join(" "), result.1, result.2);
        result
    }

    pub fn containerd(&self) -> Option<&Containerd> {
        self.containerd.as_ref()
    }

    /// The containerd namespace of node `node`'s agent: the rack's namespace and the node's
    /// name (`t-1a2b3c4d-bladerunner1`), as `torc up` gives each agent one of its own.
    pub fn container_namespace(&self, node: &str) -> Option<String> {
        let containerd = self.containerd.as_ref()?;
        Some(format!("{}-{node}", containerd.namespace))
    }

    /// Gives a node that is not in the config an address of the rack's block (for open join).
    pub fn add_node(&mut self, name: &str) -> Ipv4Addr {
        assert!(
            self.namespaces.is_none(),
            "add_node: a rack on namespaces has the nodes it was built with"
        );
        let o = self.base.octets();
        let ip = Ipv4Addr::new(o[0], o[1], o[2], 1 + self.nodes.len() as u8);
        self.nodes.insert(name.to_string(), ip);
        self.endpoints.insert(name.to_string(), ip);
        ip
    }

    /// SIGKILLs a node's agent (its tasks keep running under their shims).
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut c) = self.agents.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pid of node `name`'s agent, while it runs.
    pub fn agent_pid(&self, name: &str) -> Option<u32> {
        self.agents.get(name).map(|c| c.id())
    }

    /// The first controller's pid (`wedge`), while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller_pid_of("wedge")
    }

    /// Controller `name`'s pid, while it runs.
    pub fn controller_pid_of(&self, name: &str) -> Option<u32> {
        self.controllers.get(name).map(|c| c.id())
    }

    /// SIGKILLs every controller.
    pub fn kill_controller(&mut self) {
        for name in self.controller_names.clone() {
            self.kill_controller_named(&name);
        }
    }

    /// SIGKILLs controller `name`.
    pub fn kill_controller_named(&mut self, name: &str) {
        if let Some(mut c) = self.controllers.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Controller `name`'s own view of the rack's controllers (`GET /api/v1/controller`),
    /// asked of it alone.
    pub async fn controller_status(
        &self,
        name: &str,
    ) -> anyhow::Result<torc_api::controller::ControllerStatus> {
        let resp = self
            .http_admin()
            .get(format!("{}/api/v1/controller", self.controller_url(name)))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "controller {name}: {}",
            resp.status()
        );
        Ok(resp.json().await?)
    }

    /// Waits until one controller acts, other than those in `not`; its name.
    pub async fn wait_leader(&self, not: &[&str]) -> anyhow::Result<String> {
        wait_for(
            &format!("a controller other than {not:?} to lead and act"),
            Duration::from_secs(30),
            || async {
                for name in &self.controller_names {
                    if not.contains(&name.as_str()) || !self.controllers.contains_key(name) {
                        continue;
                    }
                    if let Ok(s) = self.controller_status(name).await
                        && s.acting
                    {
                        return Some(name.clone());
                    }
                }
                None
            },
        )
        .await
        .with_context(|| self.logs_hint())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) controller `name`.
    pub fn freeze_controller(&self, name: &str, frozen: bool) -> anyhow::Result<()> {
        let child = self
            .controllers
            .get(name)
            .with_context(|| format!("controller {name} does not run"))?;
        freeze(child.id(), frozen)
    }

    /// Waits until each named node is active (or inactive).
    pub async fn wait_active(&self, names: &[String], active: bool) -> anyhow::Result<()> {
        let client = self.client();
        wait_for(
            &format!(
                "nodes {names:?} to be {}",
                if active { "active" } else { "inactive" }
            ),
            Duration::from_secs(30),
            || async {
                let nodes = client.nodes().await.ok()?;
                names
                    .iter()
                    .all(|n| {
                        nodes
                            .iter()
                            .any(|x| x.name.as_str() == n && x.active == active)
                    })
                    .then_some(())
            },
        )
        .await
        .with_context(|| self.logs_hint())
    }

    /// Waits until the named service runs; its view then.
    pub async fn wait_service_running(&self, name: &str) -> anyhow::Result<torc_api::ServiceView> {
        let client = self.client();
        let service = name
            .parse()
            .map_err(|e| anyhow::anyhow!("service name {name:?}: {e}"))?;
        wait_for(
            &format!("service {name} to run"),
            Duration::from_secs(30),
            || async {
                client
                    .service(&service)
                    .await
                    .ok()
                    .filter(|s| s.state == Some(torc_types::TaskState::Running))
            },
        )
        .await
        .with_context(|| self.logs_hint())
    }

    pub fn logs_hint(&self) -> String {
        let mut out = String::from("process logs:\n");
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    out.push_str(&format!("--- {}\n", e.path().display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// Pids of task shims started under this rack's directory (not a shim's fork that has not
    /// exec'd its task yet: it carries the shim's command line for a moment).
    pub fn shim_pids(&self) -> Vec<u32> {
        without_forks(processes_mentioning(self.dir.path()))
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("shim"))
            .map(|(pid, _)| pid)
            .collect()
    }
}

/// The pids `/proc` lists now.
pub(crate) fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    (entries.flatten())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .collect()
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A process's command line, its arguments joined by spaces (`None` once it is gone).
fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Processes whose command line mentions `path`, with that command line.
pub fn processes_mentioning(path: &Path) -> Vec<(u32, String)> {
    let needle = path.display().to_string();
    (all_pids().into_iter())
        .filter_map(|pid| command_line(pid).map(|cmd| (pid, cmd)))
        .filter(|(_, cmd)| cmd.contains(&needle))
        .collect()
}

/// Processes inside any of the network namespaces `namespaces` (each as the (device, inode) of
/// its `/run/netns/NAME` or `/proc/PID/ns/net`), with their command lines: a namespaced rack's
/// daemons and every task they started.
pub fn processes_in_namespaces(
    namespaces: &std::collections::BTreeSet<(u64, u64)>,
) -> Vec<(u32, String)> {
    use std::os::unix::fs::MetadataExt as _;
    (all_pids().into_iter())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| namespaces.contains(&(m.dev(), m.ino())))
        })
        .filter_map(|pid| command_line(pid).map(|cmd| (pid, cmd)))
        .collect()
}

/// `processes` without the forks that have not exec'd yet: a child with its parent's command
/// line, whose parent is in the list too (a process that spawns is seen twice for a moment).
pub fn without_forks(processes: Vec<(u32, String)>) -> Vec<(u32, String)> {
    processes
        .iter()
        .filter(|(pid, cmd)| {
            !parent_of(*pid)
                .is_some_and(|ppid| processes.iter().any(|(p, c)| *p == ppid && c == cmd))
        })
        .cloned()
        .collect()
}

/// Freezes (SIGSTOP) or thaws (SIGCONT) process `pid`.
pub fn freeze(pid: u32, frozen: bool) -> anyhow::Result<()> {
    let signal = if frozen {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    kill(Pid::from_raw(pid as i32), signal).with_context(|| format!("{signal} to {pid}"))?;
    Ok(())
}

/// Whether a process exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Drop for LocalRack {
    fn drop(&mut self) {
        // Agents first: they stop their tasks on SIGTERM.
        for c in self.agents.values() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in self.agents.values_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // SIGKILL ends a frozen (SIGSTOPped) controller too.
        self.kill_controller();
        drop(self.etcd.take());
        // Whatever is left (shims of agents killed by the test) goes too.
        for (pid, _) in processes_mentioning(self.dir.path()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        // Then the containerd: its sweep ends any container an agent left, and the daemon.
        drop(self.containerd.take());
        // Then the forwarder and the namespaces (their veths and routes go with them).
        if let Some(mut namespaces) = self.namespaces.take() {
            namespaces.stop();
        }
    }
}

/// A real InfluxDB 1.x server (Debian's `influxd`) in a temp dir, on an address of a free
/// loopback block.
pub struct Influxd {
    pub dir: tempfile::TempDir,
    pub url: String,
    child: Child,
}

impl Influxd {
    pub async fn start() -> anyhow::Result<Influxd> {
        let influxd = which("influxd").context(
            "influxd is not installed: run ./scripts/test (it installs it) or `apt-get install influxdb influxdb-client`",
        )?;
        let dir = tempfile::Builder::new().prefix("influxd-").tempdir()?;
        // An address of its own, so no other test's server can hold its ports.
        let block = free_loopback_block().octets();
        let ip = Ipv4Addr::new(block[0], block[1], block[2], 1);
        let (http, rpc) = (free_port(ip), free_port(ip));
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"{ip}:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n[http]\n  bind-address = \"{ip}:{http}\"\n  log-enabled = false\n"
        );
        std::fs::write(dir.path().join("influxd.conf"), conf)?;
        let log = std::fs::File::create(dir.path().join("influxd.log"))?;
        let mut cmd = Command::new(influxd);
        cmd.arg("-config")
            .arg(dir.path().join("influxd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_test(&mut cmd);
        let child = cmd.spawn()?;
        let url = format!("http://{ip}:{http}");
        let db = Influxd { dir, url, child };
        let ping = format!("{}/ping", db.url);
        wait_for(
            "influxd to answer /ping",
            Duration::from_secs(30),
            || async { reqwest_ping(&ping).await.then_some(()) },
        )
        .await?;
        Ok(db)
    }
}

async fn reqwest_ping(url: &str) -> bool {
    let Ok(addr) = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .parse::<std::net::SocketAddr>()
    else {
        return false;
    };
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium driven through WebDriver (Debian's `chromium` and `chromium-driver`).
///
/// Dropping it ends the WebDriver session (chromedriver quits Chromium, whose crash handlers
/// then exit too), then kills chromedriver's process group, which Chromium's processes are in,
/// so nothing is left running even when the session could not be ended.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Browser> {
        Browser::start_with(&[]).await
    }

    /// A browser with extra Chromium flags (e.g. `--ignore-certificate-errors` for a rack whose
    /// CA the test browser does not trust).
    pub async fn start_with(extra_args: &[&str]) -> anyhow::Result<Browser> {
        let driver_bin = which("chromedriver").context(
            "chromedriver is not installed: run ./scripts/test (it installs it) or `apt-get install chromium chromium-driver`",
        )?;
        let chromium =
            which("chromium").context("chromium is not installed: `apt-get install chromium`")?;
        let port = free_port(Ipv4Addr::LOCALHOST);
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        die_with_test(&mut cmd);
        let driver = cmd.spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build()?;
        let status = format!("{base}/status");
        wait_for("chromedriver to start", Duration::from_secs(20), || async {
            http.get(&status)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await?;
        let profile = tempfile::tempdir()?;
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1300,1000",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let resp: serde_json::Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = resp["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("chromedriver did not open a session: {resp}"))?
            .to_string();
        Ok(Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp: serde_json::Value = req.send().await?.json().await?;
        if let Some(err) = resp["value"].get("error") {
            bail!("webdriver {path}: {err} {}", resp["value"]["message"]);
        }
        Ok(resp["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({ "url": url }),
        )
        .await?;
        Ok(())
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn eval(&self, script: &str) -> anyhow::Result<serde_json::Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            serde_json::json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The page's visible text.
    pub async fn text(&self) -> anyhow::Result<String> {
        Ok(self
            .eval("return document.body.innerText")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Waits until the page's text contains `needle`.
    pub async fn wait_text(&self, needle: &str) -> anyhow::Result<String> {
        wait_for(
            &format!("the page to show {needle:?}"),
            // Generous: a loaded CI machine is slow; a passing run never waits this long.
            Duration::from_secs(60),
            || async { self.text().await.ok().filter(|t| t.contains(needle)) },
        )
        .await
    }

    /// Sets the window size (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            serde_json::json!({ "width": width, "height": height }),
        )
        .await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let b64 = self
            .call(reqwest::Method::GET, "/screenshot", serde_json::Value::Null)
            .await?;
        // Standard base64 is what WebDriver screenshots are.
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            b64.as_str().unwrap_or_default(),
        )
        .context("a screenshot that is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Errors the page recorded (script errors, failed requests shown to the user) and SEVERE
    /// browser log entries (e.g. a 404 for an asset).
    pub async fn errors(&self) -> anyhow::Result<Vec<String>> {
        let mut out: Vec<String> = self
            .eval("return window.__torcErrors || ['app.js did not load']")
            .await?
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        if let Ok(logs) = self
            .call(
                reqwest::Method::POST,
                "/se/log",
                serde_json::json!({"type": "browser"}),
            )
            .await
        {
            for e in logs.as_array().into_iter().flatten() {
                if e["level"] == "SEVERE" {
                    out.push(e["message"].to_string());
                }
            }
        }
        Ok(out)
    }
}

impl Browser {
    /// `DELETE /session/{id}`, blocking (Drop cannot await), waiting at most a few seconds.
    fn end_session(&self) -> std::io::Result<()> {
        use std::io::{Read as _, Write as _};
        let addr = self.base.trim_start_matches("http://");
        let mut conn = std::net::TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        )?;
        // chromedriver answers once Chromium has quit.
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.end_session();
        // The group chromedriver leads (see `start`): chromedriver and whatever Chromium
        // processes are still there.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
