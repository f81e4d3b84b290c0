//! The datacollector: every few seconds it pulls every active node's agent metrics and writes
//! them to an InfluxDB-compatible database (`torc tsdb`, or a real `influxd`) through the 1.x
//! line-protocol `/write` API.
//!
//! It writes the original series and column names, so the seed's queries and old tools keep
//! working, with correct values: `machine` (host CPU as percent of capacity, memory used),
//! `network` (per-interface bytes per second over the real interval; cumulative drops, not
//! swapped), and `stats` (CPU and memory of the tasks marked metered). Modern extras ride along
//! as more fields of the same series.
//!
//! The control plane rides along: each cycle also reads the controller's own `/metrics` (the
//! collector's viewer token admits it) and writes it as one `control_plane` point (tags `role`
//! and `instance`; see [`control_plane_line`]), so the UI can chart what the rack's brain costs
//! over time.
//!
//! Authentication: with [`Credentials`] every request carries them as HTTP Basic (never in the
//! URL, where logs and proxies would keep them). A password is read from a file
//! ([`read_password_file`]), never from the command line, where `ps` shows it. A refusal (401,
//! 403) is logged as an error naming the database and what to check, and the points are kept
//! for the next try like any other failed write.
//!
//! Invariants: a node that joins is collected from the next cycle on; points that could not be
//! written are kept (bounded) and written with the next batch.

use std::fmt::Write as _;
use std::time::Duration;

use torc_api::NodeMetrics;
use torc_client::Client;

mod retention;
pub use retention::{DOWNSAMPLE_CQ, LONG_POLICY, Retention, Step};

/// Points kept for retry when the database is unreachable.
const MAX_PENDING_LINES: usize = 50_000;

/// Line-protocol escaping of a tag value (also used for tag keys and measurement names).
pub fn tag(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | ' ' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn float(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v}");
        if s.contains(['.', 'e', 'E']) {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        "0.0".into()
    }
}

/// The `control_plane` point (timestamp `at_ms`) of a Prometheus text from the controller at
/// `instance`: one float field per sample, named by the metric without its `torc_controller_`
/// prefix and with its label values appended (`tasks_running`, `store_commits_total_ok`,
/// `process_resident_memory_bytes`); a histogram gives its `_sum` and `_count`, not its buckets.
/// `None` when the text holds no sample.
pub fn control_plane_line(text: &str, role: &str, instance: &str, at_ms: u64) -> Option<String> {
    let mut fields = std::collections::BTreeMap::new();
    for sample in torc_prom::samples(text) {
        if sample.name.ends_with("_bucket") || !sample.value.is_finite() {
            continue;
        }
        let mut key = sample
            .name
            .strip_prefix("torc_controller_")
            .unwrap_or(sample.name)
            .to_string();
        for (_, v) in &sample.labels {
            key.push('_');
            key.push_str(v);
        }
        fields.insert(tag(&key), float(sample.value));
    }
    if fields.is_empty() {
        return None;
    }
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Some(format!(
        "control_plane,role={},instance={} {} {at_ms}",
        tag(role),
        tag(instance),
        fields.join(",")
    ))
}

/// The line-protocol lines for one sample (timestamps in milliseconds).
pub fn lines(m: &NodeMetrics) -> Vec<String> {
    let host = tag(m.node.as_str());
    let ts = m.at;
    let mut out = Vec::with_capacity(2 + m.interfaces.len() + m.tasks.len());
    let mut line = String::new();
    let _ = write!(
        line,
        "machine,hostname={host} cpu_usage_user={},cpu_usage_system={},cpu_usage_idle={},cpu_usage_iowait={},memory_usage={}i,memory_total={}i,memory_available={}i,load1={},load5={},load15={},cores={}i {ts}",
        float(m.cpu.user_percent),
        float(m.cpu.system_percent),
        float(m.cpu.idle_percent),
        float(m.cpu.iowait_percent),
        m.memory.used_bytes,
        m.memory.total_bytes,
        m.memory.available_bytes,
        float(m.load[0]),
        float(m.load[1]),
        float(m.load[2]),
        m.cpu.cores,
    );
    out.push(line);
    for i in &m.interfaces {
        out.push(format!(
            "network,hostname={host},interface_name={} network_in_bytes={},network_out_bytes={},network_in_drops={}i,network_out_drops={}i,network_in_packets={},network_out_packets={},network_in_errors={},network_out_errors={} {ts}",
            tag(&i.name),
            float(i.rx_bytes_per_s),
            float(i.tx_bytes_per_s),
            i.rx_drops,
            i.tx_drops,
            float(i.rx_packets_per_s),
            float(i.tx_packets_per_s),
            float(i.rx_errors_per_s),
            float(i.tx_errors_per_s),
        ));
    }
    for t in m.tasks.iter().filter(|t| t.metered) {
        out.push(format!(
            "stats,hostname={host},container_name={},task_id={} cpu_usage_user={},cpu_usage_system={},memory_usage={}i,processes={}i {ts}",
            tag(t.name.as_str()),
            tag(t.id.as_str()),
            float(t.cpu_user_percent),
            float(t.cpu_system_percent),
            t.memory_bytes,
            t.processes,
        ));
    }
    out
}

/// Where to write.
#[derive(Debug, Clone)]
pub enum Target {
    /// A fixed base URL, e.g. `http://127.0.3.23:8086`.
    Url(String),
    /// The named service's first running instance, found through the controller, looked up
    /// again whenever a write fails: its address, and its first assigned port or else this one.
    Service(String, u16),
}

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub target: Target,
    pub database: String,
    pub credentials: Option<Credentials>,
    pub interval: Duration,
    /// The database's retention and downsampling (see [`Retention`]).
    pub retention: Retention,
}

/// A user name and password for an InfluxDB with authentication enabled.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// The environment variable naming the user of [`Credentials::from_env`].
pub const USER_ENV: &str = "TORC_INFLUXDB_USER";
/// The environment variable naming the password file of [`Credentials::from_env`].
pub const PASSWORD_FILE_ENV: &str = "TORC_INFLUXDB_PASSWORD_FILE";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    PasswordFile(#[from] torc_tls::files::PasswordFileError),
    #[error("{USER_ENV} is set but {PASSWORD_FILE_ENV} is not")]
    NoPasswordFile,
}

/// Reads a password from a file: [`torc_tls::files::read_password_file`].
pub use torc_tls::files::read_password_file;

impl Credentials {
    /// `user` with the password in `password_file`.
    pub fn from_file(
        user: String,
        password_file: &std::path::Path,
    ) -> Result<Self, CredentialsError> {
        Ok(Credentials {
            user,
            password: read_password_file(password_file)?,
        })
    }

    /// From [`USER_ENV`] and [`PASSWORD_FILE_ENV`] (which the agent passes on to its tasks
    /// when it has them); `None` when no user is set.
    pub fn from_env() -> Result<Option<Self>, CredentialsError> {
        let Some(user) = std::env::var(USER_ENV).ok().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let path = std::env::var_os(PASSWORD_FILE_ENV).ok_or(CredentialsError::NoPasswordFile)?;
        Credentials::from_file(user, std::path::Path::new(&path)).map(Some)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no running instance of service {0:?} to write to")]
    NoService(String),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// 401: no, unknown or wrong credentials.
    #[error("{url} refused the credentials ({message}); check the user and the password file")]
    Unauthenticated { url: String, message: String },
    /// 403: the user lacks a privilege.
    #[error("{url} refused the request: {message}; the user needs WRITE on the database")]
    Forbidden { url: String, message: String },
}

impl WriteError {
    /// True for a refusal of the credentials or of the user's rights.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            WriteError::Unauthenticated { .. } | WriteError::Forbidden { .. }
        )
    }
}

/// Writes line protocol (millisecond timestamps) to one database of an InfluxDB-compatible
/// server. Creates the database before the first write, and again after the server answers 404
/// (it lost the database: a fresh data directory, or another instance). A user who may not
/// create databases (403) writes all the same: an admin may have created it. With
/// [`LineWriter::with_retention`], the database's retention and downsampling are set up right
/// after it is created (see [`Retention`]); a refused step is logged and the writes go on.
pub struct LineWriter {
    http: reqwest::Client,
    database: String,
    credentials: Option<Credentials>,
    database_created: bool,
    setup: Vec<Step>,
}

impl LineWriter {
    pub fn new(
        http: reqwest::Client,
        database: String,
        credentials: Option<Credentials>,
    ) -> LineWriter {
        LineWriter {
            http,
            database,
            credentials,
            database_created: false,
            setup: Vec::new(),
        }
    }

    /// Sets the database's retention up (see [`Retention`]) whenever it is created.
    pub fn with_retention(mut self, retention: Retention) -> LineWriter {
        self.setup = retention.steps(&self.database);
        self
    }

    /// Runs the setup steps; a step the server refuses is logged, never an error of the write.
    async fn set_up(&mut self, base: &str) -> Result<(), WriteError> {
        for step in self.setup.clone() {
            let mut refusal = self.statement(base, &step.statement).await?;
            if let (Some(e), Some(instead)) = (&refusal, &step.if_exists)
                && e.contains("already exists")
            {
                refusal = self.statement(base, instead).await?;
            }
            if let Some(e) = refusal {
                tracing::warn!(database = %self.database, statement = %step.statement, error = %e, "retention setup refused");
            }
        }
        Ok(())
    }

    /// Runs one InfluxQL request: `Some(error)` when the server refused a statement of it
    /// (influxd answers that with 200 and the error in the result, or with 403).
    async fn statement(&mut self, base: &str, q: &str) -> Result<Option<String>, WriteError> {
        let query = vec![("q", q.to_string())];
        match self
            .post(format!("{base}/query"), query, String::new())
            .await
        {
            Ok(body) => Ok(serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v["results"].as_array().and_then(|rs| {
                        rs.iter()
                            .find_map(|r| r["error"].as_str().map(str::to_string))
                    })
                })),
            Err(WriteError::Forbidden { message, .. }) => Ok(Some(message)),
            Err(e) => Err(e),
        }
    }

    /// Writes `body` (lines) to the server at `base` (`http://host:port`).
    pub async fn write(&mut self, base: &str, body: String) -> Result<(), WriteError> {
        if !self.database_created {
            let q = vec![(
                "q",
                format!("CREATE DATABASE {}", retention::quote(&self.database)),
            )];
            match self.post(format!("{base}/query"), q, String::new()).await {
                Ok(_) => {}
                Err(WriteError::Forbidden { message, .. }) => {
                    tracing::debug!(%message, "may not create the database; writing anyway");
                }
                Err(e) => return Err(e),
            }
            self.set_up(base).await?;
            self.database_created = true;
        }
        let q = vec![
            ("db", self.database.clone()),
            ("precision", "ms".to_string()),
        ];
        self.post(format!("{base}/write"), q, body).await.map(drop)
    }

    async fn post(
        &mut self,
        url: String,
        query: Vec<(&'static str, String)>,
        body: String,
    ) -> Result<String, WriteError> {
        let mut req = self.http.post(&url).query(&query).body(body);
        if let Some(c) = &self.credentials {
            req = req.basic_auth(&c.user, Some(&c.password));
        }
        let resp = req.send().await.map_err(|e| WriteError::Http {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if resp.status().is_success() {
            return Ok(resp.text().await.unwrap_or_default());
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        // influxd answers `{"error": "..."}`: show the text alone.
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        Err(match status.as_u16() {
            401 => WriteError::Unauthenticated { url, message },
            403 => WriteError::Forbidden { url, message },
            code => {
                if code == 404 {
                    self.database_created = false;
                }
                WriteError::Http {
                    url,
                    message: format!("{status}: {message}"),
                }
            }
        })
    }
}

pub struct Collector {
    controller: Client,
    cfg: CollectorConfig,
    /// The database's base URL while writes to it succeed.
    base: Option<String>,
    writer: LineWriter,
    pending: Vec<String>,
}

impl Collector {
    pub fn new(controller: Client, cfg: CollectorConfig) -> Collector {
        let http = torc_client::rack_http_from_env()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot load the rack CA (TORC_CA); HTTPS services will be refused");
                reqwest::Client::builder().no_proxy()
            })
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with a loaded CA builds");
        let writer = LineWriter::new(http, cfg.database.clone(), cfg.credentials.clone())
            .with_retention(cfg.retention);
        Collector {
            controller,
            cfg,
            base: None,
            writer,
            pending: Vec::new(),
        }
    }

    async fn base(&mut self) -> Result<String, WriteError> {
        if let Some(b) = &self.base {
            return Ok(b.clone());
        }
        let base = match &self.cfg.target {
            Target::Url(u) => u.trim_end_matches('/').to_string(),
            Target::Service(name, default_port) => {
                let services = self
                    .controller
                    .services()
                    .await
                    .map_err(|e| WriteError::Http {
                        url: self.controller.base_url().to_string(),
                        message: e.to_string(),
                    })?;
                let s = services
                    .into_iter()
                    .find(|s| {
                        (s.name.as_str() == name || s.service.as_str() == name)
                            && s.state == Some(torc_types::TaskState::Running)
                    })
                    .ok_or_else(|| WriteError::NoService(name.clone()))?;
                let Some(ip) = s.ip else {
                    return Err(WriteError::NoService(name.clone()));
                };
                let port = s.ports.first().unwrap_or(default_port);
                let scheme = if s.tls { "https" } else { "http" };
                format!("{scheme}://{ip}:{port}")
            }
        };
        self.base = Some(base.clone());
        Ok(base)
    }

    /// One cycle: collect from every active node, write everything pending.
    pub async fn cycle(&mut self) -> Result<usize, WriteError> {
        let nodes = self
            .controller
            .nodes()
            .await
            .map_err(|e| WriteError::Http {
                url: self.controller.base_url().to_string(),
                message: e.to_string(),
            })?;
        let fetches = nodes.into_iter().filter(|n| n.active).filter_map(|n| {
            let url = format!("{}/v1/metrics", n.agent_url?);
            let controller = self.controller.clone();
            Some(async move {
                // The agent wants a viewer's token: the collector's own (its task's).
                match controller.get_url::<NodeMetrics>(&url).await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "no metrics from this node");
                        None
                    }
                }
            })
        });
        let samples: Vec<NodeMetrics> = futures_join(fetches.collect()).await;
        for m in &samples {
            self.pending.extend(lines(m));
        }
        self.pending.extend(self.control_plane().await);
        if self.pending.len() > MAX_PENDING_LINES {
            let excess = self.pending.len() - MAX_PENDING_LINES;
            tracing::warn!(
                dropped = excess,
                "database unreachable for long; dropping the oldest points"
            );
            self.pending.drain(..excess);
        }
        if self.pending.is_empty() {
            return Ok(0);
        }
        let base = self.base().await?;
        let n = self.pending.len();
        if let Err(e) = self.writer.write(&base, self.pending.join("\n")).await {
            // Look the service up again before the next try: it may have moved.
            self.base = None;
            return Err(e);
        }
        self.pending.clear();
        Ok(n)
    }

    /// The controller's `/metrics` as a `control_plane` point, or nothing (logged) when it
    /// cannot be read.
    async fn control_plane(&self) -> Option<String> {
        let base = self.controller.base_url().to_string();
        let url = format!("{}/metrics", base.trim_end_matches('/'));
        let text = match self.controller.get_url_text(&url).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%url, error = %e, "no metrics from the controller");
                return None;
            }
        };
        let instance = base
            .split("://")
            .nth(1)
            .unwrap_or(&base)
            .trim_end_matches('/');
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        control_plane_line(&text, "controller", instance, at)
    }

    /// Runs cycles until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            match self.cycle().await {
                Ok(n) => tracing::debug!(points = n, "written"),
                Err(e) if e.is_auth() => {
                    tracing::error!(error = %e, pending = self.pending.len(), "the database refused the datacollector; points kept, retrying next cycle")
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = self.pending.len(), "cannot write; retrying next cycle")
                }
            }
        }
    }
}

/// Writes a DNS server's query rate to an InfluxDB-compatible database (`url`, db `torc`) every
/// `every`, forever: the series `dns_server` (tags `server`, `host`; fields `qps`, the rate since
/// the last report, and `queries`, the server's counter). This is the load signal the DNS
/// scheduler scales on; `torc dns` and the `named` sidecar both report through it.
///
/// Credentials come from the environment ([`Credentials::from_env`]: `TORC_INFLUXDB_USER` and
/// `TORC_INFLUXDB_PASSWORD_FILE`), so the DNS servers' command lines need no password flags;
/// unreadable ones are logged and the reports go out without.
///
/// `read_queries` returns the server's cumulative query counter, or `None` when it cannot be read
/// this time (that report is skipped; the next rate spans the whole gap). A counter that goes
/// back (the server restarted) starts a new baseline. The `host` tag is `$TORC_NODE`, which the
/// agent sets for its tasks.
pub async fn report_query_rate<F, Fut>(
    url: String,
    server: String,
    every: Duration,
    read_queries: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let credentials = Credentials::from_env().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read the database credentials; reporting without");
        None
    });
    report_query_rate_as(url, credentials, server, every, read_queries).await
}

/// [`report_query_rate`] with these credentials. A refusal by the database is logged as an
/// error (a report that cannot be written for other reasons at debug level: the next one
/// carries the counter anyway).
pub async fn report_query_rate_as<F, Fut>(
    url: String,
    credentials: Option<Credentials>,
    server: String,
    every: Duration,
    mut read_queries: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let http = match torc_client::rack_http_from_env()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())
        }) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build an HTTP client; not reporting the query rate");
            return;
        }
    };
    let host = std::env::var("TORC_NODE").unwrap_or_else(|_| "unknown".into());
    let mut last: Option<(std::time::Instant, u64)> = None;
    let mut writer = LineWriter::new(http, "torc".into(), credentials);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(queries) = read_queries().await else {
            continue;
        };
        let now = (std::time::Instant::now(), queries);
        let Some(prev) = last.replace(now).filter(|p| p.1 <= queries) else {
            continue;
        };
        let qps = (queries - prev.1) as f64 / now.0.duration_since(prev.0).as_secs_f64().max(1e-3);
        let line = format!(
            "dns_server,server={},host={} qps={},queries={queries}i {}",
            tag(&server),
            tag(&host),
            float(qps),
            torc_types::now_millis()
        );
        match writer.write(&url, line).await {
            Ok(()) => {}
            Err(e) if e.is_auth() => {
                tracing::error!(error = %e, "the database refused the query rate report")
            }
            Err(e) => tracing::debug!(error = %e, "cannot report the query rate"),
        }
    }
}

/// Awaits every future concurrently (the handful of nodes of a rack).
async fn futures_join<T: Send + 'static>(
    futs: Vec<impl std::future::Future<Output = Option<T>> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(Some(v)) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_to_line_protocol() {
        let m: NodeMetrics =
            serde_json::from_str(include_str!("../tests/data/sample.json")).unwrap();
        let got = lines(&m).join("\n") + "\n";
        let want = include_str!("../tests/data/sample.lines");
        assert_eq!(got, want);
    }

    #[test]
    fn control_plane_point() {
        let text = "# TYPE torc_controller_tasks gauge\n\
                    torc_controller_tasks{state=\"running\"} 3\n\
                    torc_controller_store_commit_duration_seconds_bucket{le=\"0.001\"} 2\n\
                    torc_controller_store_commit_duration_seconds_sum 0.5\n\
                    process_open_fds 12\n\
                    torc_controller_service_instances_running{service=\"my svc\"} 1\n";
        assert_eq!(
            control_plane_line(text, "controller", "127.0.3.20:3000", 7).unwrap(),
            "control_plane,role=controller,instance=127.0.3.20:3000 \
             process_open_fds=12.0,service_instances_running_my\\ svc=1.0,\
             store_commit_duration_seconds_sum=0.5,tasks_running=3.0 7"
        );
        assert_eq!(
            control_plane_line("# nothing\n", "controller", "x", 1),
            None
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(tag("a b,c=d"), "a\\ b\\,c\\=d");
        assert_eq!(float(12.0), "12.0");
        assert_eq!(float(f64::NAN), "0.0");
    }
}
