//! A DNS-scheduler server run by bind9's `named` instead of `torc dns` (`run --server named`).
//!
//! The task runs `torc-dns-scheduler named-server`, a small sidecar that:
//! 1. writes a `named.conf` for the task's address and ports into the task's sandbox (the agent
//!    fills `$IP`, `$PORT0` and `$PORT1` in its arguments) and starts `named` in the foreground
//!    (`-g`, its log goes to the task's stderr);
//! 2. reports named's own query counter (`opcodes.QUERY` from its JSON statistics channel, on
//!    `$IP:$PORT1`) to the time-series database as the `dns_server` series, the load signal the
//!    scaler reads, exactly as `torc dns --report-influxdb` does;
//! 3. ends named on SIGTERM (the agent's kill) and exits with named's status when named ends.
//!
//! named answers only on addresses configured on an interface. On a real rack the node's address
//! is one; in a local rack (`torc up`) nodes are loopback aliases such as 127.0.3.20 that no
//! interface carries. Then named listens on 127.0.0.1 at a free port and the sidecar relays
//! `$IP:$PORT0` to it (UDP per client, TCP per connection). The answers are still named's.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::process::Command;

/// How long a relayed UDP client's upstream socket lives without traffic.
const RELAY_IDLE: Duration = Duration::from_secs(30);

/// How long named gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One named-backed server.
#[derive(Debug, Clone)]
pub struct NamedServer {
    /// The `named` binary.
    pub named: PathBuf,
    /// Where clients reach the server (`$IP:$PORT0`).
    pub listen: SocketAddr,
    /// named's statistics channel (`$IP:$PORT1`).
    pub stats: SocketAddr,
    /// Zones served: origin and zone file.
    pub zones: Vec<(String, PathBuf)>,
    /// Where named's configuration and working files go.
    pub dir: PathBuf,
    /// Report the query rate to this InfluxDB-compatible URL under this server name.
    pub report: Option<(String, String)>,
    pub report_every: Duration,
}

/// Whether `ip` is configured on one of this host's interfaces (named listens only on those).
fn on_an_interface(ip: IpAddr) -> anyhow::Result<bool> {
    let addrs = nix::ifaddrs::getifaddrs().context("cannot list this host's addresses")?;
    Ok(addrs.into_iter().any(|a| {
        a.address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .is_some_and(|s| IpAddr::V4(s.ip()) == ip)
    }))
}

/// A port on 127.0.0.1 free for both UDP and TCP right now.
fn free_loopback_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 for named")
}

/// A path as a named.conf string literal.
fn quoted(path: &Path) -> anyhow::Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if s.contains(['"', '\\', '\n']) {
        bail!("named cannot be given the path {s:?} (it holds a quote, backslash or newline)");
    }
    Ok(format!("\"{s}\""))
}

impl NamedServer {
    /// The `named.conf` for named answering on `dns` (authoritative only, no recursion).
    pub fn config(&self, dns: SocketAddr) -> anyhow::Result<String> {
        let dir = quoted(&self.dir)?;
        let mut conf = format!(
            "options {{\n    directory {dir};\n    pid-file none;\n    session-keyfile none;\n    \
             listen-on port {} {{ {}; }};\n    listen-on-v6 {{ none; }};\n    recursion no;\n    \
             dnssec-validation no;\n    notify no;\n}};\ncontrols {{ }};\n\
             statistics-channels {{ inet {} port {} allow {{ any; }}; }};\n",
            dns.port(),
            dns.ip(),
            self.stats.ip(),
            self.stats.port()
        );
        for (origin, file) in &self.zones {
            let file = std::path::absolute(file)
                .with_context(|| format!("zone file {}", file.display()))?;
            let origin = origin.trim_end_matches('.');
            if origin.is_empty()
                || !origin
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                bail!("{origin:?} is not a zone name named accepts");
            }
            conf.push_str(&format!(
                "zone \"{origin}\" {{ type primary; file {}; }};\n",
                quoted(&file)?
            ));
        }
        Ok(conf)
    }

    /// Runs named until it exits or this process gets SIGTERM/SIGINT; returns named's exit code.
    pub async fn run(mut self) -> anyhow::Result<i32> {
        let IpAddr::V4(_) = self.listen.ip() else {
            bail!(
                "named servers listen on IPv4 addresses; {} is not one",
                self.listen
            );
        };
        let relay = !on_an_interface(self.listen.ip())?;
        let dns = if relay {
            SocketAddr::from((Ipv4Addr::LOCALHOST, free_loopback_port()?))
        } else {
            self.listen
        };
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        // Absolute, so named's command line names the task's own directory.
        self.dir = std::path::absolute(&self.dir)?;
        let conf_path = self.dir.join("named.conf");
        std::fs::write(&conf_path, self.config(dns)?)
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        let mut cmd = Command::new(&self.named);
        cmd.args(["-g", "-4", "-n", "1", "-c"])
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // named dies with this sidecar, also when the sidecar is SIGKILLed (then no destructor
        // runs, and named would live on, orphaned, holding the server's port).
        // SAFETY: prctl is async-signal-safe; the closure touches nothing else. The spawn
        // happens on the thread that runs `block_on`, which lives as long as the sidecar.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot start {} (install bind9: `apt-get install bind9`)",
                self.named.display()
            )
        })?;
        tracing::info!(listen = %self.listen, named = %dns, stats = %self.stats, relay, "named started");
        if relay {
            let udp = UdpSocket::bind(self.listen)
                .await
                .with_context(|| format!("cannot listen on udp {}", self.listen))?;
            let tcp = TcpListener::bind(self.listen)
                .await
                .with_context(|| format!("cannot listen on tcp {}", self.listen))?;
            tokio::spawn(relay_udp(Arc::new(udp), dns));
            tokio::spawn(relay_tcp(tcp, dns));
        }
        if let Some((url, name)) = self.report.clone() {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()?;
            let stats_url = format!("http://{}/json/v1/server", self.stats);
            tokio::spawn(torc_collector::report_query_rate(
                url,
                name,
                self.report_every,
                move || query_counter(http.clone(), stats_url.clone()),
            ));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = term.recv() => stop(&mut child).await?,
            _ = tokio::signal::ctrl_c() => stop(&mut child).await?,
        };
        tracing::info!(%status, "named ended");
        Ok(status.code().unwrap_or(1))
    }
}

/// SIGTERM to named, then SIGKILL after the grace period.
async fn stop(child: &mut tokio::process::Child) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            child.start_kill()?;
            child.wait().await
        }
    }
}

/// named's cumulative count of QUERY requests, from its JSON statistics channel.
async fn query_counter(http: reqwest::Client, url: String) -> Option<u64> {
    let v: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
    v["opcodes"]["QUERY"].as_u64()
}

/// Relays datagrams from `listen`'s clients to named: one upstream socket per client, so
/// named's answers find their way back; a socket idle for [`RELAY_IDLE`] is dropped.
async fn relay_udp(listen: Arc<UdpSocket>, named: SocketAddr) {
    let upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, client) = match listen.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "relay receive failed");
                continue;
            }
        };
        let known = upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let upstream = match known {
            Some(u) => u,
            None => {
                let Ok(u) = new_upstream(named).await else {
                    continue;
                };
                let u = Arc::new(u);
                upstreams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, u.clone());
                tokio::spawn(relay_answers(
                    u.clone(),
                    listen.clone(),
                    client,
                    upstreams.clone(),
                ));
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

async fn new_upstream(named: SocketAddr) -> std::io::Result<UdpSocket> {
    let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    u.connect(named).await?;
    Ok(u)
}

/// named's answers for one client, sent back from the listening socket.
async fn relay_answers(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65_535];
    while let Ok(Ok(n)) = tokio::time::timeout(RELAY_IDLE, upstream.recv(&mut buf)).await {
        let _ = listen.send_to(&buf[..n], client).await;
    }
    upstreams
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&client);
}

/// Relays each TCP connection to named.
async fn relay_tcp(listen: TcpListener, named: SocketAddr) {
    loop {
        let Ok((mut conn, _)) = listen.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut up) = TcpStream::connect(named).await {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> NamedServer {
        NamedServer {
            named: "/usr/sbin/named".into(),
            listen: "10.0.0.5:5300".parse().unwrap(),
            stats: "10.0.0.5:5301".parse().unwrap(),
            zones: vec![("homer.ave".into(), "/srv/zones/homer.ave.zone".into())],
            dir: "/var/lib/torc/sandbox/named".into(),
            report: None,
            report_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_config_names_the_address_ports_and_zones() {
        let conf = server().config("10.0.0.5:5300".parse().unwrap()).unwrap();
        assert!(
            conf.contains("listen-on port 5300 { 10.0.0.5; };"),
            "{conf}"
        );
        assert!(
            conf.contains("statistics-channels { inet 10.0.0.5 port 5301"),
            "{conf}"
        );
        assert!(conf.contains("recursion no;"), "{conf}");
        assert!(
            conf.contains(
                r#"zone "homer.ave" { type primary; file "/srv/zones/homer.ave.zone"; };"#
            ),
            "{conf}"
        );
    }

    #[test]
    fn paths_and_names_that_would_break_the_config_are_refused() {
        let mut s = server();
        s.zones = vec![("homer.ave".into(), "/srv/a\"b.zone".into())];
        let err = s.config(s.listen).unwrap_err().to_string();
        assert!(err.contains("quote"), "{err}");
        let mut s = server();
        s.zones = vec![("homer.ave; }; zone x {".into(), "/srv/z".into())];
        let err = s.config(s.listen).unwrap_err().to_string();
        assert!(err.contains("not a zone name"), "{err}");
    }
}
