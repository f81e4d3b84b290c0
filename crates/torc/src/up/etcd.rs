//! `torc up`'s etcd: the real 3-member etcd cluster (Debian's `etcd-server`) an HA rack keeps
//! its state in (issue 18, design `docs/design/ha-controller.md` §8 and §10).
//!
//! [`RackEtcd::start`] runs one member per given node ([`member_nodes`] picks them from a rack
//! config: the controller nodes, then compute nodes, 3 in all), each a child of `torc up` like
//! the controller: in its node's namespace on the namespaced layout, told to stop (SIGTERM)
//! when `torc up` dies, its data in `<state>/etcd/<member>`, its log in
//! `logs/etcd-<member>.log`. It listens on its node's address, client port 2479 and peer port
//! 2480 ([`Ports`]; 2379 belongs to `torc kv`). On the namespaced layout the host reaches a
//! member only through the forwarder on its node's endpoint ([`forwards`]): nothing here sends
//! to a rack address from the host.
//!
//! Security ([`Security::Tls`]): TLS on client and peer URLs, both with client certificates
//! required, every certificate issued by the rack CA: one per member (server and peer), one
//! for the controllers (CN `torc-controller-<rack>`) and one for `root` (both 0600 in
//! `<state>/etcd/`). On a fresh cluster `start` creates the users `root` and
//! `torc-controller-<rack>` (no passwords: etcd takes the user from the certificate's CN), the
//! role `torc-controller-<rack>` with readwrite on the rack's prefix
//! `/torc-controller/<rack>/` only, and enables auth. [`Security::Plaintext`] runs plain etcd
//! without auth, with a warning.
//!
//! Invariants:
//! - the auth setup runs until it has enabled auth and recorded that (`auth-set-up` in
//!   `<state>/etcd/`); each step is idempotent, so a start killed half way finishes it the next
//!   time, and a restart on kept data skips it;
//! - [`RackEtcd::stop`] (SIGTERM, then SIGKILL after a bound) and `Drop` (SIGKILL) both reap
//!   every member: no etcd outlives its handle, and the data directories are kept.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use torc_config::{NodeConfig, RackConfig};
use torc_kv_client::proto::authpb::{Permission, UserAddOptions, permission};
use torc_kv_client::proto::etcdserverpb as pb;
use torc_kv_client::{Client, ClientOptions, ClientTls};
use torc_net::Netns;
use torc_net::rack::{Forward, Proto};
use torc_tls::pki::{Ca, CertRequest};
use torc_types::{NodeName, NodeType};

use super::spawn::spawn_program;

/// The members' client port: 2379 is `torc kv`'s.
pub const CLIENT_PORT: u16 = 2479;
/// The members' peer port.
pub const PEER_PORT: u16 = 2480;
/// How many members a rack runs.
pub const MEMBERS: usize = 3;
/// How long a member may take to stop after SIGTERM before it is killed.
pub const STOP_BOUND: Duration = Duration::from_secs(15);
/// How long the cluster may take to become healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The flags of every member (§10): raft timing for a rack's LAN, transactions big enough for
/// the controller's batches, and compaction by revision so that standbys can resume watches.
const FLAGS: [&str; 12] = [
    "--heartbeat-interval",
    "100",
    "--election-timeout",
    "1000",
    "--max-txn-ops",
    "4096",
    "--max-request-bytes",
    "8388608",
    "--auto-compaction-mode",
    "revision",
    "--auto-compaction-retention",
    "10000",
];
/// How long the certificates `start` issues are valid (they are issued again at every start).
const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The file whose presence says the auth setup is done.
const AUTH_MARK: &str = "auth-set-up";
/// How often a start polls the members.
const POLL: Duration = Duration::from_millis(50);

/// A member's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
}

impl Default for Ports {
    /// 2479 and 2480.
    fn default() -> Ports {
        Ports {
            client: CLIENT_PORT,
            peer: PEER_PORT,
        }
    }
}

/// Where one member runs: on a node of the rack.
#[derive(Debug, Clone)]
pub struct MemberSpec<'a> {
    /// The node's name, which is the member's.
    pub name: NodeName,
    /// The node's address, where the member listens (inside `netns`, when given).
    pub ip: IpAddr,
    /// The node's endpoint on the host (namespaced layout), where the host reaches it.
    pub endpoint: Option<IpAddr>,
    /// The node's namespace (namespaced layout).
    pub netns: Option<&'a Netns>,
    pub ports: Ports,
}

impl MemberSpec<'_> {
    /// The member on `node`, with the default ports, in `netns` if given.
    pub fn on<'n>(node: &NodeConfig, netns: Option<&'n Netns>) -> MemberSpec<'n> {
        MemberSpec {
            name: node.name.clone(),
            ip: node.ip,
            endpoint: node.endpoint,
            netns,
            ports: Ports::default(),
        }
    }

    fn client_url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", SocketAddr::new(self.ip, self.ports.client))
    }

    fn host_client_url(&self, scheme: &str) -> String {
        let ip = self.endpoint.unwrap_or(self.ip);
        format!("{scheme}://{}", SocketAddr::new(ip, self.ports.client))
    }

    fn peer_url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", SocketAddr::new(self.ip, self.ports.peer))
    }
}

/// The nodes the members of `config`'s rack run on: every `type: master` node, then the other
/// nodes in order, [`MEMBERS`] in all.
pub fn member_nodes(config: &RackConfig) -> anyhow::Result<Vec<&NodeConfig>> {
    let masters = config
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Master);
    let others = config
        .nodes
        .iter()
        .filter(|n| n.node_type != NodeType::Master);
    let nodes: Vec<&NodeConfig> = masters.chain(others).take(MEMBERS).collect();
    if nodes.len() < MEMBERS {
        bail!(
            "an etcd cluster needs {MEMBERS} nodes to run its members on; the rack config has {}",
            nodes.len()
        );
    }
    Ok(nodes)
}

/// The forwarders of a namespaced rack's members: each member's client port on its node's
/// endpoint, to the same port at its rack address (for the host's tests and an operator's
/// `etcdctl`). Members without an endpoint (loopback layout) need none.
pub fn forwards(members: &[MemberSpec<'_>]) -> Vec<Forward> {
    members
        .iter()
        .filter_map(|m| match (m.endpoint, m.ip) {
            (Some(IpAddr::V4(endpoint)), IpAddr::V4(ip)) => Some(Forward {
                proto: Proto::Tcp,
                listen: SocketAddrV4::new(endpoint, m.ports.client),
                target: SocketAddrV4::new(ip, m.ports.client),
            }),
            _ => None,
        })
        .collect()
}

/// How the members talk.
#[derive(Debug, Clone, Copy)]
pub enum Security<'a> {
    /// TLS everywhere with certificates from the rack CA, and etcd's auth.
    Tls(&'a Ca),
    /// Plain text, no auth: only the tests run it (`torc up` always serves TLS).
    #[cfg_attr(not(test), allow(dead_code))]
    Plaintext,
}

/// What [`RackEtcd::start`] runs.
#[derive(Debug)]
pub struct EtcdOptions<'a> {
    /// The rack's name: the controllers' user, role and prefix carry it.
    pub rack: &'a str,
    /// `torc up`'s state directory: members' data and the client certificates go to
    /// `<state>/etcd/`.
    pub state_dir: &'a Path,
    /// Where the members' logs go (`etcd-<member>.log`).
    pub logs: &'a Path,
    pub security: Security<'a>,
    pub members: Vec<MemberSpec<'a>>,
    /// How long the members may take to become healthy.
    pub start_timeout: Duration,
}

/// A client certificate and its key (both 0600).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files a client of the cluster needs (TLS only).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The rack CA's certificate, which the members' certificates chain to.
    pub ca: PathBuf,
    /// CN `root`: the cluster's administrator.
    pub root: ClientCert,
    /// CN `torc-controller-<rack>`: the controllers' user.
    pub controller: ClientCert,
}

/// The etcd user (and role) of `rack`'s controllers.
pub fn controller_user(rack: &str) -> String {
    format!("torc-controller-{rack}")
}

/// The key prefix `rack`'s controllers may read and write.
pub fn controller_prefix(rack: &str) -> String {
    format!("/torc-controller/{rack}/")
}

/// One running member.
struct Member {
    name: NodeName,
    /// `None` once reaped.
    child: Option<std::process::Child>,
    /// Its client URL in the rack (what the controllers use).
    rack_url: String,
    /// Its client URL from the host.
    host_url: String,
    log: PathBuf,
}

/// The running members. [`RackEtcd::stop`] stops them; dropping the handle kills them.
pub struct RackEtcd {
    members: Vec<Member>,
    tls: Option<TlsFiles>,
    auth_set_up: bool,
}

impl std::fmt::Debug for RackEtcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RackEtcd")
            .field("endpoints", &self.endpoints())
            .field("auth_set_up", &self.auth_set_up)
            .finish_non_exhaustive()
    }
}

/// The `etcd` program on `path` (a `PATH` value); refused naming Debian's package when there
/// is none.
pub fn find_etcd(path: Option<&OsStr>) -> anyhow::Result<PathBuf> {
    path.and_then(|paths| {
        std::env::split_paths(paths)
            .map(|p| p.join("etcd"))
            .find(|p| p.is_file())
    })
    .context(
        "no `etcd` on PATH: an HA rack runs a real etcd; install Debian's package etcd-server \
         (`apt-get install etcd-server`)",
    )
}

impl RackEtcd {
    /// Starts the members, waits until every one is healthy, and on a fresh cluster sets up
    /// auth (TLS only). On failure every member started is killed.
    pub async fn start(opts: EtcdOptions<'_>) -> anyhow::Result<RackEtcd> {
        let etcd = find_etcd(std::env::var_os("PATH").as_deref())?;
        check_members(&opts.members)?;
        let dir = opts.state_dir.join("etcd");
        torc_tls::files::private_dir(&dir)?;
        let (scheme, tls) = match opts.security {
            Security::Tls(ca) => ("https", Some(issue_certificates(ca, &dir, &opts)?)),
            Security::Plaintext => {
                eprintln!(
                    "torc up: --plaintext: etcd runs without TLS and without auth; the rack's state crosses the network unencrypted"
                );
                ("http", None)
            }
        };
        let initial_cluster = opts
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url(scheme)))
            .collect::<Vec<_>>()
            .join(",");
        let mut rack = RackEtcd {
            members: Vec::with_capacity(opts.members.len()),
            tls,
            auth_set_up: false,
        };
        for spec in &opts.members {
            let log = opts.logs.join(format!("etcd-{}.log", spec.name));
            let args = member_args(
                spec,
                scheme,
                &dir,
                &initial_cluster,
                opts.rack,
                rack.tls.as_ref(),
            );
            let child = spawn_program(
                &format!("etcd member {}", spec.name),
                &etcd,
                &args,
                &log,
                spec.netns,
            )?;
            rack.members.push(Member {
                name: spec.name.clone(),
                child: Some(child),
                rack_url: spec.client_url(scheme),
                host_url: spec.host_client_url(scheme),
                log,
            });
        }
        // On an error from here on, dropping `rack` kills the members.
        let client = rack.root_client()?;
        rack.wait_healthy(&client, opts.start_timeout).await?;
        let mark = dir.join(AUTH_MARK);
        if rack.tls.is_some() && !mark.exists() {
            set_up_auth(&client, opts.rack)
                .await
                .with_context(|| format!("cannot set up etcd's auth at {}", client.endpoint()))?;
            torc_tls::files::write_file(&mark, b"", 0o600)?;
            rack.auth_set_up = true;
        }
        Ok(rack)
    }

    /// The members' client URLs from the host (through the forwarders on namespaces).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.host_url.clone()).collect()
    }

    /// The members' client URLs in the rack: what the controllers are given.
    pub fn rack_endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.rack_url.clone()).collect()
    }

    /// The certificates of the cluster's clients (TLS only).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Whether this start set up auth (a fresh cluster), rather than finding it done.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn auth_set_up(&self) -> bool {
        self.auth_set_up
    }

    /// The pid of member `name` while it runs.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.members
            .iter()
            .find(|m| m.name.as_str() == name)
            .and_then(|m| m.child.as_ref())
            .map(|c| c.id())
    }

    /// A member that exited on its own since the last call, with its status and log (for
    /// `torc up`'s watch over its children).
    pub fn exited(&mut self) -> Option<(NodeName, ExitStatus, PathBuf)> {
        for m in &mut self.members {
            if let Some(child) = &mut m.child
                && let Ok(Some(status)) = child.try_wait()
            {
                m.child = None;
                return Some((m.name.clone(), status, m.log.clone()));
            }
        }
        None
    }

    /// One line for `torc up`'s banner.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        format!(
            "  etcd:        {} members healthy ({}) at {}",
            self.members.len(),
            names.join(" "),
            self.endpoints().join(",")
        )
    }

    /// A client of every member with the root certificate (plain text without TLS).
    fn root_client(&self) -> anyhow::Result<Client> {
        Ok(Client::lazy_endpoints(
            &self.endpoints(),
            self.root_options()?,
        )?)
    }

    /// The options of a root client: the root certificate, short timeouts for a start.
    fn root_options(&self) -> anyhow::Result<ClientOptions> {
        let tls = match &self.tls {
            Some(files) => Some(ClientTls::from_files(
                &files.ca,
                Some((&files.root.cert, &files.root.key)),
            )?),
            None => None,
        };
        Ok(ClientOptions {
            tls,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Some(Duration::from_secs(2)),
            ..ClientOptions::default()
        })
    }

    /// Waits until every member runs, knows a leader and a linearizable read succeeds; fails
    /// at once when a member exits, naming its log.
    async fn wait_healthy(&mut self, client: &Client, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let members = self.member_clients()?;
        loop {
            if let Some((name, status, log)) = self.exited() {
                bail!(
                    "etcd member {name} exited during start-up ({status}); its log ({}) ends:\n{}",
                    log.display(),
                    log_tail(&log)
                );
            }
            let why = match unhealthy(&members, client).await {
                None => return Ok(()),
                Some(why) => why,
            };
            if Instant::now() > deadline {
                let log = &self.members[0].log;
                bail!(
                    "etcd did not become healthy within {timeout:?}: {why}; {} ends:\n{}",
                    log.display(),
                    log_tail(log)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One root client per member, pinned to it (to ask each about its own state).
    fn member_clients(&self) -> anyhow::Result<Vec<Client>> {
        let options = ClientOptions {
            // A member without a leader answers its status: that is what is asked.
            require_leader: false,
            ..self.root_options()?
        };
        let mut clients = Vec::new();
        for m in &self.members {
            clients.push(Client::lazy_endpoints(&[&m.host_url], options.clone())?);
        }
        Ok(clients)
    }

    /// Stops the members one after the other: SIGTERM, then SIGKILL if it still runs after
    /// [`STOP_BOUND`]. Their data stays.
    ///
    /// One at a time because a leader that stops hands its leadership to a live follower
    /// first; stopped all at once, it waits for a follower that is stopping too until etcd's
    /// request timeout (7 s with our flags, measured).
    pub async fn stop(self) {
        self.stop_within(STOP_BOUND).await;
    }

    /// [`RackEtcd::stop`] with another bound per member.
    pub async fn stop_within(mut self, bound: Duration) {
        for m in &mut self.members {
            let Some(child) = &mut m.child else {
                continue;
            };
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + bound;
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    eprintln!(
                        "torc up: etcd member {} did not stop in {bound:?}; killing it",
                        m.name
                    );
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            // Drop kills and reaps what is left.
        }
    }
}

impl Drop for RackEtcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                if !matches!(child.try_wait(), Ok(Some(_))) {
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
        }
    }
}

/// Refuses members that cannot form a cluster: none, a name twice, an address and port twice.
fn check_members(members: &[MemberSpec<'_>]) -> anyhow::Result<()> {
    if members.is_empty() {
        bail!("an etcd cluster needs at least one member");
    }
    for (i, a) in members.iter().enumerate() {
        for b in &members[..i] {
            if a.name == b.name {
                bail!("etcd member {} is given twice", a.name);
            }
            let (a_ports, b_ports) = (
                [a.ports.client, a.ports.peer],
                [b.ports.client, b.ports.peer],
            );
            if a.ip == b.ip
                && a.netns.is_none()
                && b.netns.is_none()
                && a_ports.iter().any(|p| b_ports.contains(p))
            {
                bail!(
                    "etcd members {} and {} would listen on the same port of {}",
                    b.name,
                    a.name,
                    a.ip
                );
            }
        }
        if a.ports.client == a.ports.peer {
            bail!(
                "etcd member {}: client and peer port are both {}",
                a.name,
                a.ports.client
            );
        }
    }
    Ok(())
}

/// Issues (again, at every start, so that they follow the nodes' addresses) each member's
/// certificate and the two client certificates, into `dir`.
fn issue_certificates(ca: &Ca, dir: &Path, opts: &EtcdOptions<'_>) -> anyhow::Result<TlsFiles> {
    let write = |name: &str, common_name: String, ips: Vec<IpAddr>| -> anyhow::Result<ClientCert> {
        let issued = ca.issue(&CertRequest {
            common_name,
            dns_names: Vec::new(),
            ips,
            validity: CERT_VALIDITY,
        })?;
        let key = issued.key_pem.context("the CA made no key")?;
        let files = ClientCert {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        torc_tls::files::write_file(&files.cert, issued.cert_pem.as_bytes(), 0o600)?;
        torc_tls::files::write_secret(&files.key, &key)?;
        Ok(files)
    };
    for m in &opts.members {
        let mut ips: Vec<IpAddr> = std::iter::once(m.ip).chain(m.endpoint).collect();
        // A connection between two loopback addresses comes from 127.0.0.1, and etcd checks
        // a peer's client certificate against the address it comes from.
        if m.ip.is_loopback() {
            ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        write(&member_file(&m.name), format!("etcd {}", m.name), ips)?;
    }
    let ca_pem = ca.dir().join("ca.pem");
    Ok(TlsFiles {
        ca: ca_pem,
        root: write("root", "root".into(), Vec::new())?,
        controller: write("controller", controller_user(opts.rack), Vec::new())?,
    })
}

/// The file name (without extension) of a member's certificate in `<state>/etcd/`.
fn member_file(name: &NodeName) -> String {
    format!("member-{name}")
}

/// A member's command line.
fn member_args(
    spec: &MemberSpec<'_>,
    scheme: &str,
    dir: &Path,
    initial_cluster: &str,
    rack: &str,
    tls: Option<&TlsFiles>,
) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    let (client, peer) = (spec.client_url(scheme), spec.peer_url(scheme));
    let mut args: Vec<String> = [
        "--name",
        spec.name.as_str(),
        "--data-dir",
        &s(&dir.join(spec.name.as_str())),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        &format!("torc-{rack}"),
        "--logger",
        "zap",
    ]
    .iter()
    .chain(FLAGS.iter())
    .map(|a| a.to_string())
    .collect();
    if let Some(tls) = tls {
        let cert = s(&dir.join(format!("{}.pem", member_file(&spec.name))));
        let key = s(&dir.join(format!("{}.key", member_file(&spec.name))));
        let ca = s(&tls.ca);
        args.extend(
            [
                "--cert-file",
                &cert,
                "--key-file",
                &key,
                "--trusted-ca-file",
                &ca,
                "--client-cert-auth",
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &key,
                "--peer-trusted-ca-file",
                &ca,
                "--peer-client-cert-auth",
            ]
            .map(String::from),
        );
    }
    args
}

/// Why the cluster is not healthy yet, or `None` when every member knows a leader and a
/// linearizable read through `client` succeeds.
async fn unhealthy(members: &[Client], client: &Client) -> Option<String> {
    for member in members {
        let status = member
            .call_idempotent(|c| async move {
                c.maintenance()
                    .status(pb::StatusRequest {})
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        match status {
            Ok(s) if s.leader != 0 => {}
            Ok(_) => return Some(format!("{} has no leader yet", member.endpoint())),
            Err(e) => return Some(e.to_string()),
        }
    }
    let read = client
        .range(pb::RangeRequest {
            key: b"health".to_vec().into(),
            ..Default::default()
        })
        .await;
    read.err().map(|e| format!("a linearizable read: {e}"))
}

/// One change through the Auth service: `client.auth().$method(req)`, re-authenticated as
/// [`Client::call`] does, its error saying what it was doing.
macro_rules! auth_change {
    ($client:expr, $method:ident, $req:expr, $($what:tt)+) => {{
        let req = $req;
        $client
            .call(|c| {
                let req = req.clone();
                async move { c.auth().$method(req).await.map(drop) }
            })
            .await
            .with_context(|| format!($($what)+))
    }};
}

/// Creates the users `root` and `torc-controller-<rack>` (no passwords), the controllers'
/// role with readwrite on their prefix, and enables auth. Each step is skipped when done, so
/// a setup cut short is finished by the next start.
async fn set_up_auth(client: &Client, rack: &str) -> anyhow::Result<()> {
    let user = controller_user(rack);
    // What a start cut short has made already.
    let users = client
        .call_idempotent(|c| async move { c.auth().user_list(pb::AuthUserListRequest {}).await })
        .await?
        .into_inner()
        .users;
    let roles = client
        .call_idempotent(|c| async move { c.auth().role_list(pb::AuthRoleListRequest {}).await })
        .await?
        .into_inner()
        .roles;
    for role in ["root", user.as_str()] {
        if !roles.iter().any(|r| r == role) {
            let req = pb::AuthRoleAddRequest { name: role.into() };
            auth_change!(client, role_add, req, "adding role {role}")?;
        }
    }
    let prefix = controller_prefix(rack);
    let grant = pb::AuthRoleGrantPermissionRequest {
        name: user.clone(),
        perm: Some(Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: prefix.as_bytes().to_vec().into(),
            range_end: torc_kv_client::prefix_end(prefix.as_bytes()).into(),
        }),
    };
    auth_change!(
        client,
        role_grant_permission,
        grant,
        "granting role {user} readwrite on {prefix}"
    )?;
    for (name, role) in [("root", "root"), (user.as_str(), user.as_str())] {
        if !users.iter().any(|u| u == name) {
            let req = pb::AuthUserAddRequest {
                name: name.into(),
                password: String::new(),
                options: Some(UserAddOptions { no_password: true }),
            };
            auth_change!(client, user_add, req, "adding user {name}")?;
        }
        let req = pb::AuthUserGrantRoleRequest {
            user: name.into(),
            role: role.into(),
        };
        auth_change!(
            client,
            user_grant_role,
            req,
            "granting user {name} role {role}"
        )?;
    }
    auth_change!(
        client,
        auth_enable,
        pb::AuthEnableRequest {},
        "enabling auth"
    )
}

/// The last lines of a log, for an error.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests;
