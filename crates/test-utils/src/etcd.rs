//! Real etcd 3.4 servers (Debian's `etcd-server`) for tests: one member ([`Etcd`]) or a
//! cluster of several ([`EtcdCluster`]), each member with its own data directory in a temp
//! dir, on free ports of a free loopback block (so no other test's server can hold them).
//!
//! Both are started by one helper ([`spawn_member`]) and die with the test (`PDEATHSIG`), so a
//! killed test leaves no etcd behind; dropping one kills its members and removes their
//! directories, also when a test panics. Starting waits on a condition with a deadline (the
//! port answers; for a cluster, every member's `/health` says `true`), never a blind sleep.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{die_with_test, free_loopback_block, free_port, which};

/// How long a member may take to listen, and a cluster to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a start polls.
const POLL: Duration = Duration::from_millis(50);

/// One member's command line: its name, addresses and the cluster it belongs to.
struct MemberSpec {
    name: String,
    data_dir: PathBuf,
    log: PathBuf,
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    /// etcd's `--initial-cluster`: `name=peer URL,...` of every member.
    initial_cluster: String,
    /// Extra flags (`--heartbeat-interval`, ...).
    extra: Vec<String>,
}

impl MemberSpec {
    fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.client_port))
    }
}

fn etcd_program() -> anyhow::Result<PathBuf> {
    which("etcd").context(
        "etcd is not installed: run ./scripts/test (it installs it) or `apt-get install etcd-server`",
    )
}

/// Starts one member as described (a restart of a member with data keeps its data: etcd then
/// ignores the `--initial-*` flags). Its output is appended to its log.
fn spawn_member(etcd: &Path, spec: &MemberSpec) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let (client, peer) = (spec.client_url(), spec.peer_url());
    let mut cmd = Command::new(etcd);
    cmd.args(["--name", &spec.name])
        .arg("--data-dir")
        .arg(&spec.data_dir)
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &spec.initial_cluster])
        .args(["--initial-cluster-state", "new"])
        .args(&spec.extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    die_with_test(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("starting etcd member {}", spec.name))
}

/// Runs the real `etcdctl` (API v3) against `endpoint` (`user add`, `auth enable`, ...); its
/// output, or an error with what it said.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(which("etcdctl").context("etcdctl is not installed")?)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .context("running etcdctl")?;
    if !out.status.success() {
        bail!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Kills a child with SIGKILL and reaps it.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A real etcd 3.4 (Debian's `etcd-server`), one member, in a temp dir, on an address of a
/// free loopback block (so its ports cannot collide with another test's); started again on
/// another block if it could not bind.
pub struct Etcd {
    pub dir: tempfile::TempDir,
    /// `http://IP:PORT`, the client URL.
    pub endpoint: String,
    child: Child,
}

impl Etcd {
    pub async fn start() -> anyhow::Result<Etcd> {
        let etcd = etcd_program()?;
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("etcd-").tempdir()?;
            let block = free_loopback_block().octets();
            let ip = Ipv4Addr::new(block[0], block[1], block[2], 1);
            let (client_port, peer_port) = (free_port(ip), free_port(ip));
            let spec = MemberSpec {
                name: "real".into(),
                data_dir: dir.path().join("data"),
                log: dir.path().join("etcd.log"),
                ip,
                client_port,
                peer_port,
                initial_cluster: format!("real=http://{ip}:{peer_port}"),
                extra: Vec::new(),
            };
            let mut real = Etcd {
                child: spawn_member(&etcd, &spec)?,
                endpoint: spec.client_url(),
                dir,
            };
            if listening(&mut real.child, spec.client_addr(), &spec.log).await? {
                return Ok(real);
            }
            last_log = real.log();
        }
        bail!("etcd exited 5 times before listening; last log:\n{last_log}")
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("etcd.log"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Waits until `addr` accepts connections: `Ok(false)` if the member exited first (it could
/// not bind, say), an error if it did neither within [`START_TIMEOUT`].
async fn listening(child: &mut Child, addr: SocketAddr, log: &Path) -> anyhow::Result<bool> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!(
                "etcd did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                read_log(log)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One member of an [`EtcdCluster`]: its command line, and its process while it runs.
struct Member {
    spec: MemberSpec,
    child: Option<Child>,
}

/// Several real etcd 3.4 members forming one cluster on a free loopback block (`127.X.Y.1`,
/// client and peer ports free), each with its own data directory, for tests of what a client
/// does when a member dies, freezes or comes back.
///
/// Members are numbered from 0 in [`EtcdCluster::endpoints`]' order. The cluster runs with
/// etcd's default timing, given explicitly: heartbeat 100 ms, election timeout 1 s.
pub struct EtcdCluster {
    /// Data directories (`member-N/data`) and logs (`member-N/etcd.log`).
    dir: tempfile::TempDir,
    etcd: PathBuf,
    members: Vec<Member>,
    http: reqwest::Client,
}

impl EtcdCluster {
    /// Three members, healthy.
    pub async fn start() -> anyhow::Result<EtcdCluster> {
        EtcdCluster::start_n(3).await
    }

    /// `n` members, once every one reports healthy (`/health`: it has a raft leader and
    /// answers). Tried again on another loopback block (up to 3 times) if a member exits
    /// before that (it lost a race for a port).
    pub async fn start_n(n: usize) -> anyhow::Result<EtcdCluster> {
        EtcdCluster::start_with(n, &[]).await
    }

    /// [`EtcdCluster::start_n`], each member also given `extra` flags (`--max-txn-ops 4096`).
    pub async fn start_with(n: usize, extra: &[&str]) -> anyhow::Result<EtcdCluster> {
        anyhow::ensure!(n > 0, "an etcd cluster needs at least one member");
        let etcd = etcd_program()?;
        let mut last = None;
        for _ in 0..3 {
            let cluster = EtcdCluster::spawn(&etcd, n, extra)?;
            match cluster.wait_healthy_all().await {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e.context(cluster.logs())),
            }
        }
        Err(last.expect("three attempts were made"))
    }

    fn spawn(etcd: &Path, n: usize, extra: &[&str]) -> anyhow::Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("etcd-cluster-").tempdir()?;
        let block = free_loopback_block().octets();
        let ip = Ipv4Addr::new(block[0], block[1], block[2], 1);
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(ip), free_port(ip))).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://{ip}:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            etcd: etcd.to_path_buf(),
            members: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            dir,
        };
        for (i, (client_port, peer_port)) in ports.into_iter().enumerate() {
            let home = cluster.dir.path().join(format!("member-{i}"));
            std::fs::create_dir(&home)?;
            let spec = MemberSpec {
                name: format!("m{i}"),
                data_dir: home.join("data"),
                log: home.join("etcd.log"),
                ip,
                client_port,
                peer_port,
                initial_cluster: initial_cluster.clone(),
                extra: ["--heartbeat-interval", "100", "--election-timeout", "1000"]
                    .iter()
                    .chain(extra)
                    .map(|s| s.to_string())
                    .collect(),
            };
            // Pushed before spawning, so that a failure to spawn still drops the others.
            cluster.members.push(Member { spec, child: None });
            let child = spawn_member(etcd, &cluster.members[i].spec)?;
            cluster.members[i].child = Some(child);
        }
        Ok(cluster)
    }

    /// The members' client URLs (`http://IP:PORT`), member 0 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.spec.client_url()).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].spec.client_url()
    }

    /// The index of the member whose client URL is `endpoint`.
    pub fn index_of(&self, endpoint: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.spec.client_url() == endpoint)
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s pid while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// SIGKILLs member `i` and reaps it; its data stays, for [`EtcdCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            kill_child(&mut child);
        }
    }

    /// Starts member `i` again on its data directory and ports (killing it first if it
    /// runs), and waits until it listens. It is healthy once it has caught up with a quorum:
    /// see [`EtcdCluster::wait_healthy`].
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        let member = &mut self.members[i];
        let mut child = spawn_member(&self.etcd, &member.spec)?;
        let up = listening(&mut child, member.spec.client_addr(), &member.spec.log).await;
        member.child = Some(child);
        if !up? {
            bail!(
                "etcd member {i} exited on restart:\n{}",
                read_log(&member.spec.log)
            );
        }
        Ok(())
    }

    /// Freezes member `i` (SIGSTOP): it holds its connections and answers nothing.
    pub fn stop(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, Signal::SIGSTOP)
    }

    /// Thaws member `i` (SIGCONT) after [`EtcdCluster::stop`].
    pub fn cont(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, Signal::SIGCONT)
    }

    fn signal(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid(i)
            .with_context(|| format!("etcd member {i} is not running"))?;
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("sending {signal} to etcd member {i} (pid {pid})"))
    }

    /// Whether member `i` reports itself healthy: it answers `/health` with `"health":"true"`,
    /// which etcd 3.4 says only while the member has a raft leader.
    pub async fn healthy(&self, i: usize) -> bool {
        let url = format!("{}/health", self.endpoint(i));
        let Ok(resp) = self.http.get(&url).send().await else {
            return false;
        };
        let Ok(body) = resp.json::<serde_json::Value>().await else {
            return false;
        };
        body.get("health").and_then(|h| h.as_str()) == Some("true")
    }

    /// Waits until every member in `members` is healthy, or fails after 30 s naming those
    /// that are not, with their logs.
    pub async fn wait_healthy(&self, members: &[usize]) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut sick = Vec::new();
            for &i in members {
                if !self.healthy(i).await {
                    sick.push(i);
                }
            }
            if sick.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd members {sick:?} not healthy within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_healthy_all(&self) -> anyhow::Result<()> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.wait_healthy(&all).await
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        read_log(&self.members[i].spec.log)
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let text = read_log(&m.spec.log);
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- etcd member {i} ({})\n", m.spec.client_url()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The temp dir that holds the members' data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; the temp dir goes after the members.
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                kill_child(&mut child);
            }
        }
    }
}
