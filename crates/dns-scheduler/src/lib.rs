//! The DNS-scheduler example: a sub-scheduler that talks to the rack only through torc's public
//! client library (`torc-client`; besides it, it uses torc's data types, the atomic write and
//! the datacollector's tsdb reporting), runs DNS servers for a demo zone (`dns-sl1`,
//! `dns-sl2`, ...), load generators (`normalload200`, `normalload400`), and scales the servers
//! on their measured query rate.
//!
//! It registers as a framework, keeps its servers and loads running as its own tasks
//! (restarting failed ones), reads the servers' query rate from the rack's time-series database
//! every few seconds, and applies the `scaler` rule. Its decisions, with the numbers behind
//! them, are logged, persisted in its state file, served as JSON (`/api/v1/scaling`) and posted
//! to the controller's event feed (the UI shows them). It serves the original's port-3005 API:
//! `/start/group?name=`, `DELETE /service?name=`, `/admin/ping`, on torc's accept path
//! (`torc_tls::serve`: connection caps and deadlines), over TLS with a certificate of the rack
//! CA (plain only when asked, or in a plain rack), and registers its URL with the controller,
//! which forwards group calls there (verifying the certificate against the rack CA).
//!
//! Invariant: the state in memory is the state on disk. A change (an observation and the
//! decision it brings, a group started or stopped) is kept only once saved; when the state file
//! cannot be written, the change is undone and not acted on (the API answers 500, the
//! observation is dropped and taken again at the next interval).
//!
//! The servers are `torc dns` by default, or bind9's `named` (`ServerKind::Named`): then each
//! server task is this program's `named-server` sidecar, which configures and runs named and
//! reports named's own query counter (see [`named`]).
//!
//! Unlike the original: any number of servers between `min` and `max`; every server measured;
//! state on disk; a dead server restarted.

pub mod loadgen;
pub mod named;
pub mod scaler;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, Request, State as AxState};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use torc_api::TaskView;
use torc_client::{Client, Framework};
use torc_types::{FrameworkName, Resources, ServiceName, TaskSpec, TaskState, now_millis};

use scaler::{Observation, Policy};

/// The demo zone the servers serve.
pub const DEMO_ZONE: &str = include_str!("demo.zone");

/// The load groups, as the original's config defined them.
pub const LOADS: [(&str, u32); 2] = [("normalload200", 200), ("normalload400", 400)];

#[derive(Debug, Clone)]
pub struct Config {
    pub name: FrameworkName,
    /// The controllers' URLs, comma-separated.
    pub controller: String,
    /// The framework's own token.
    pub token: Option<String>,
    /// The rack CA's certificate (PEM file), for an HTTPS controller.
    pub ca: Option<PathBuf>,
    /// Where the scheduler keeps its state and the zone file.
    pub state_dir: PathBuf,
    /// What answers for the demo zone.
    pub server: ServerKind,
    pub policy: Policy,
    pub interval: Duration,
    pub failover: Duration,
    /// The rack's DNS server (for the load generators' discovery).
    pub rack_dns: SocketAddr,
    /// The time-series database's base URL; `None` = find the `influxdb` service.
    pub tsdb: Option<String>,
    /// The tsdb user the scheduler reads the load as, and its password.
    pub tsdb_login: Option<(String, String)>,
    /// The rack secret holding that user's password, which the servers get to write their
    /// load reports (the rack config's `access.framework_secrets` must grant it).
    pub tsdb_password_secret: Option<torc_types::SecretName>,
    /// This program, for the load generator tasks.
    pub exe: PathBuf,
    /// Mean and deviation of the load generators' delay between queries.
    pub load_mean: Duration,
    pub load_dev: Duration,
    /// Where this scheduler's API answers, told to the controller (which forwards group calls).
    pub api_url: Option<String>,
}

/// The program behind each DNS server task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    /// `torc dns` (`command: torc`, which each agent resolves to its own binary).
    Torc,
    /// bind9's `named` at this path on the nodes, run by the `named-server` sidecar.
    Named(PathBuf),
}

/// What the scheduler wants running, besides the servers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Wanted {
    pub scaler: scaler::State,
    pub loads: BTreeSet<String>,
}

/// Shared between the loop and the API.
pub struct Scheduler {
    cfg: Config,
    wanted: Mutex<Wanted>,
    tasks: Mutex<Vec<TaskView>>,
    last_observation: Mutex<Option<Observation>>,
    http: reqwest::Client,
    /// The controller client, with the framework's token (made once).
    controller: Client,
    /// The controller's answers about callers' tokens, for a few seconds.
    reviews:
        Mutex<std::collections::HashMap<String, (torc_api::ReviewResponse, std::time::Instant)>>,
}

fn server_name(i: u32) -> String {
    format!("dns-sl{i}")
}

impl Scheduler {
    pub fn new(cfg: Config) -> anyhow::Result<Arc<Scheduler>> {
        std::fs::create_dir_all(&cfg.state_dir)?;
        std::fs::write(cfg.state_dir.join("homer.ave.zone"), DEMO_ZONE)?;
        let wanted = match std::fs::read(cfg.state_dir.join("state.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(_) => Wanted {
                scaler: scaler::State::new(&cfg.policy),
                loads: BTreeSet::new(),
            },
        };
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5));
        if let Some(ca) = &cfg.ca {
            http = http.tls_backend_preconfigured(torc_client::tls::client_config(
                &torc_client::tls::load_certs(ca)?,
                None,
            )?);
        }
        let http = http.build()?;
        let controller =
            Client::from_files(cfg.controller.clone(), cfg.token.clone(), cfg.ca.as_deref())?;
        Ok(Arc::new(Scheduler {
            controller,
            reviews: Mutex::new(std::collections::HashMap::new()),
            cfg,
            wanted: Mutex::new(wanted),
            tasks: Mutex::new(Vec::new()),
            last_observation: Mutex::new(None),
            http,
        }))
    }

    fn save(&self, w: &Wanted) -> Result<(), Unsaved> {
        let path = self.cfg.state_dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(w).expect("the state serialises");
        torc_durable::write_atomic(&path, &bytes).map_err(|e| Unsaved(Arc::new(e)))
    }

    /// Changes the wanted state with `change`, kept only if it is saved: on a failed write the
    /// state is put back as it was, so nothing unsaved is acted on.
    fn change<T, E: From<Unsaved>>(
        &self,
        change: impl FnOnce(&mut Wanted) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let before = w.clone();
        let out = change(&mut w)?;
        if let Err(e) = self.save(&w) {
            *w = before;
            return Err(e.into());
        }
        Ok(out)
    }

    /// Takes an observation into the scaler: its decision, if any, once saved.
    fn observe(&self, obs: Observation) -> Result<Option<scaler::Decision>, Unsaved> {
        self.change(|w| Ok::<_, Unsaved>(w.scaler.observe(&self.cfg.policy, obs)))
    }

    fn server_spec(&self, name: &str, tsdb: &Option<String>) -> TaskSpec {
        let zone = format!(
            "homer.ave={}",
            self.cfg.state_dir.join("homer.ave.zone").display()
        );
        let service = ServiceName::new(name).expect("dns-slN is a valid name");
        let mut spec = match &self.cfg.server {
            ServerKind::Torc => {
                let mut spec = TaskSpec::new(service, "torc");
                spec.args = vec![
                    "dns".into(),
                    "--listen".into(),
                    "$IP:$PORT0".into(),
                    "--zone-file".into(),
                    zone,
                    "--threads".into(),
                    "1".into(),
                ];
                spec.ports = 1;
                spec
            }
            ServerKind::Named(named) => {
                let mut spec = TaskSpec::new(service, self.cfg.exe.display().to_string());
                spec.args = vec![
                    "named-server".into(),
                    "--named".into(),
                    named.display().to_string(),
                    "--listen".into(),
                    "$IP:$PORT0".into(),
                    "--stats".into(),
                    "$IP:$PORT1".into(),
                    "--zone-file".into(),
                    zone,
                ];
                // DNS on the first port, named's statistics channel on the second.
                spec.ports = 2;
                spec
            }
        };
        if let Some(url) = tsdb {
            spec.args.extend([
                "--report-influxdb".into(),
                url.clone(),
                "--report-name".into(),
                name.into(),
            ]);
            // The reports log in with the rack secret, handed to the task as a file.
            if let (Some((user, _)), Some(secret)) =
                (&self.cfg.tsdb_login, &self.cfg.tsdb_password_secret)
            {
                spec.credentials.secrets.push(secret.clone());
                spec.env.insert("TORC_INFLUXDB_USER".into(), user.clone());
                spec.env.insert(
                    "TORC_INFLUXDB_PASSWORD_FILE".into(),
                    format!("$SECRETS_DIR/{secret}"),
                );
            }
        }
        spec.resources = Resources::new(0.2, 32.0, 0.0);
        spec.metered = true;
        spec.kill_grace_ms = 2_000;
        spec
    }

    fn load_spec(&self, name: &str, users: u32) -> TaskSpec {
        let mut spec = TaskSpec::new(
            ServiceName::new(name).expect("a valid name"),
            self.cfg.exe.display().to_string(),
        );
        spec.args = vec![
            "loadgen".into(),
            "--users".into(),
            users.to_string(),
            "--mean-ms".into(),
            self.cfg.load_mean.as_millis().to_string(),
            "--dev-ms".into(),
            self.cfg.load_dev.as_millis().to_string(),
            "--rack-dns".into(),
            self.cfg.rack_dns.to_string(),
        ];
        spec.resources = Resources::new(0.2, 32.0, 0.0);
        spec.kill_grace_ms = 1_000;
        spec
    }

    /// The time-series database's URL: configured, or the running `influxdb` service.
    async fn tsdb_url(&self, client: &Client) -> Option<String> {
        if let Some(u) = &self.cfg.tsdb {
            return Some(u.clone());
        }
        let services = client.services().await.ok()?;
        let s = services
            .into_iter()
            .find(|s| s.service.as_str() == "influxdb" && s.state == Some(TaskState::Running))?;
        Some(format!(
            "{}://{}:{}",
            if s.tls { "https" } else { "http" },
            s.ip?,
            s.ports.first().copied().unwrap_or(8086)
        ))
    }

    /// Total queries per second of the running servers, from their own reports in the tsdb.
    /// `running` names each server with when its current task began running: a report older
    /// than that is its predecessor's (a server killed and started again), which counted with
    /// the load its peers took over meanwhile would add the same queries twice.
    async fn measure(
        &self,
        tsdb: &str,
        running: &[(String, torc_types::UnixMillis)],
    ) -> Result<f64, reqwest::Error> {
        let q = "SELECT last(qps) FROM dns_server WHERE time > now() - 15s GROUP BY server";
        let mut req = self.http.get(format!("{tsdb}/query")).query(&[
            ("db", "torc"),
            ("q", q),
            ("epoch", "ms"),
        ]);
        if let Some((user, password)) = &self.cfg.tsdb_login {
            req = req.basic_auth(user, Some(password));
        }
        let v: serde_json::Value = req.send().await?.json().await?;
        let mut total = 0.0;
        for s in v["results"][0]["series"].as_array().into_iter().flatten() {
            let server = s["tags"]["server"].as_str().unwrap_or_default();
            let at = s["values"][0][0].as_u64().unwrap_or(0);
            if running
                .iter()
                .any(|(name, since)| name == server && at >= *since)
            {
                total += s["values"][0][1].as_f64().unwrap_or(0.0);
            }
        }
        Ok(total)
    }

    /// One reconcile pass: the servers and loads that should run, run; the others end.
    async fn reconcile(&self, fw: &Framework, tsdb: &Option<String>) -> anyhow::Result<()> {
        let tasks = fw.tasks().await?;
        let (desired, loads) = {
            let w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            (w.scaler.desired, w.loads.clone())
        };
        let mut want: BTreeMap<String, TaskSpec> = (1..=desired)
            .map(|i| (server_name(i), self.server_spec(&server_name(i), tsdb)))
            .collect();
        for (name, users) in LOADS {
            if loads.contains(name) {
                want.insert(name.to_string(), self.load_spec(name, users));
            }
        }
        let live = |t: &&TaskView| !t.state.is_terminal() && t.state != TaskState::Killing;
        for (name, spec) in &want {
            if !tasks.iter().filter(live).any(|t| t.name.as_str() == name) {
                tracing::info!(task = %name, "starting");
                fw.launch(spec).await?;
            }
        }
        for t in tasks.iter().filter(live) {
            if !want.contains_key(t.name.as_str()) {
                tracing::info!(task = %t.id, "stopping");
                fw.kill(&t.id).await?;
            }
        }
        *self.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(())
    }

    /// Measures and applies the scaling rule once.
    async fn scale(&self, client: &Client, tsdb: &str) {
        let running: Vec<(String, torc_types::UnixMillis)> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|t| t.state == TaskState::Running && t.name.as_str().starts_with("dns-sl"))
            .map(|t| {
                let since = (t.history.iter())
                    .rfind(|h| h.state == TaskState::Running)
                    .map_or(t.updated_at, |h| h.at);
                (t.name.to_string(), since)
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let total = match self.measure(tsdb, &running).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the servers' load");
                return;
            }
        };
        let obs = Observation {
            at: now_millis(),
            servers: running.len() as u32,
            total_qps: total,
        };
        tracing::info!(total_qps = total, servers = obs.servers, "load");
        *self
            .last_observation
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(obs.clone());
        let decision = match self.observe(obs) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "the observation is dropped: a decision not on disk could be repeated or undone after a restart");
                return;
            }
        };
        if let Some(d) = decision {
            let msg = format!("scaling DNS servers {} -> {}: {}", d.from, d.to, d.reason);
            tracing::info!("{msg}");
            let _ = client
                .framework_event(&self.cfg.name, torc_api::EventLevel::Info, &msg)
                .await;
        }
    }

    /// Registers, then reconciles every second and scales every interval, forever.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let client = self.client()?;
        let (mut fw, existing) = loop {
            match Framework::register_with_api(
                client.clone(),
                self.cfg.name.clone(),
                self.cfg.failover,
                self.cfg.api_url.clone(),
            )
            .await
            {
                Ok(r) => break r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::info!(framework = %self.cfg.name, surviving = existing.len(), "registered");
        let mut last_scale = std::time::Instant::now();
        let mut tsdb = None;
        loop {
            if tsdb.is_none() {
                tsdb = self.tsdb_url(&client).await;
            }
            if let Err(e) = self.reconcile(&fw, &tsdb).await {
                tracing::warn!(error = %e, "reconcile failed");
                if e.to_string().contains("register it again") {
                    let (f, _) = Framework::register_with_api(
                        client.clone(),
                        self.cfg.name.clone(),
                        self.cfg.failover,
                        self.cfg.api_url.clone(),
                    )
                    .await?;
                    fw = f;
                }
            }
            if last_scale.elapsed() >= self.cfg.interval {
                last_scale = std::time::Instant::now();
                if let Some(url) = &tsdb {
                    self.scale(&client, url).await;
                }
            }
            // The poll is the framework's heartbeat; it also wakes us on any task change.
            let _ = fw.updates(Duration::from_millis(1000)).await;
        }
    }

    /// The controller client, with the framework's token and the rack CA.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(self.controller.clone())
    }

    /// Who holds `token`, as the controller says: remembered 10 s (a refusal 2 s), at most
    /// 256 answers, so callers of the API cost the controller little.
    async fn review(
        &self,
        token: &str,
    ) -> Result<torc_api::ReviewResponse, torc_client::ClientError> {
        let now = std::time::Instant::now();
        let fresh = |a: &torc_api::ReviewResponse, at: std::time::Instant| {
            let ttl = if a.authenticated { 10 } else { 2 };
            now.duration_since(at) < Duration::from_secs(ttl)
        };
        if let Some((a, at)) = self
            .reviews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            && fresh(a, *at)
        {
            return Ok(a.clone());
        }
        let answer = self.controller.review(token).await?;
        let mut reviews = self.reviews.lock().unwrap_or_else(|e| e.into_inner());
        if reviews.len() >= 256 {
            reviews.retain(|_, (a, at)| fresh(a, *at));
            if reviews.len() >= 256 {
                reviews.clear();
            }
        }
        reviews.insert(token.to_string(), (answer.clone(), now));
        Ok(answer)
    }

    // --- the API ---

    fn status(&self) -> serde_json::Value {
        let w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "framework": self.cfg.name,
            "desired_servers": w.scaler.desired,
            "policy": self.cfg.policy,
            "loads": w.loads,
            "window": w.scaler.window,
            "last_observation": *self.last_observation.lock().unwrap_or_else(|e| e.into_inner()),
            "decisions": w.scaler.decisions,
            "tasks": tasks.iter().filter(|t| !t.state.is_terminal()).map(|t| serde_json::json!({
                "name": t.name, "id": t.id, "state": t.state, "node": t.node, "ip": t.ip, "ports": t.ports,
            })).collect::<Vec<_>>(),
        })
    }

    /// `start/group`: a server (`dns-slN` raises the count to at least N) or a load.
    fn start_group(&self, name: &str) -> Result<(), GroupError> {
        self.change(|w| self.start_group_in(w, name))
    }

    fn start_group_in(&self, w: &mut Wanted, name: &str) -> Result<(), GroupError> {
        let max = self.cfg.policy.max;
        if let Some(n) = name
            .strip_prefix("dns-sl")
            .and_then(|n| n.parse::<u32>().ok())
        {
            if n == 0 || n > max {
                return Err(GroupError::ServerOutOfRange {
                    name: name.to_string(),
                    max,
                });
            }
            w.scaler.desired = w.scaler.desired.max(n);
        } else if LOADS.iter().any(|(l, _)| *l == name) {
            w.loads.insert(name.to_string());
        } else {
            return Err(GroupError::NoGroup {
                name: name.to_string(),
                max,
            });
        }
        Ok(())
    }

    /// `DELETE service`: `dns-slN` lowers the count below N (not below `min`), or ends a load.
    fn stop_service(&self, name: &str) -> Result<(), GroupError> {
        self.change(|w| self.stop_service_in(w, name))
    }

    fn stop_service_in(&self, w: &mut Wanted, name: &str) -> Result<(), GroupError> {
        if let Some(n) = name
            .strip_prefix("dns-sl")
            .and_then(|n| n.parse::<u32>().ok())
        {
            if n <= self.cfg.policy.min {
                return Err(GroupError::WithinMinimum {
                    name: name.to_string(),
                    min: self.cfg.policy.min,
                });
            }
            w.scaler.desired = w.scaler.desired.min(n - 1);
        } else if !w.loads.remove(name) {
            return Err(GroupError::NotRunning {
                name: name.to_string(),
            });
        }
        Ok(())
    }
}

/// The scheduler's state file could not be written (the change it carried was undone).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot save the scheduler's state: {0}")]
pub struct Unsaved(Arc<torc_durable::WriteError>);

/// Why the port-3005 API cannot start or stop what it was asked to (a 404, as the original;
/// a 500 when the change could not be saved).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    /// `dns-slN` with N outside 1..=`max`.
    #[error("{name}: servers go from dns-sl1 to dns-sl{max}")]
    ServerOutOfRange { name: String, max: u32 },
    #[error("no group named {name:?}; groups: dns-sl1..dns-sl{max}, normalload200, normalload400")]
    NoGroup { name: String, max: u32 },
    /// Stopping `dns-slN` with N at most the policy's `min`.
    #[error("{name} is within the minimum of {min} servers")]
    WithinMinimum { name: String, min: u32 },
    #[error("no running service named {name:?}")]
    NotRunning { name: String },
    #[error(transparent)]
    Unsaved(#[from] Unsaved),
}

#[derive(Deserialize)]
struct ByName {
    name: Option<String>,
}

fn reply(r: Result<(), GroupError>) -> Response {
    match r {
        Ok(()) => Json(serde_json::json!({"result": "done"})).into_response(),
        Err(e) => {
            let status = match e {
                GroupError::Unsaved(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::NOT_FOUND,
            };
            (
                status,
                Json(serde_json::json!({"error": e.to_string(), "status": status.as_u16()})),
            )
                .into_response()
        }
    }
}

/// Admits callers of the port-3005 API as the controller does its own: a bearer token the
/// controller vouches for (`POST /api/v1/auth/review`, asked with the framework's token).
/// `/admin/ping` is open; reading the scaling state needs a viewer; starting and stopping
/// (including the original's `GET /start/group`) needs an admin.
async fn authorize(AxState(s): AxState<Arc<Scheduler>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/admin/ping" {
        return next.run(req).await;
    }
    let deny = |status: StatusCode, msg: String| {
        (
            status,
            Json(serde_json::json!({"error": msg, "status": status.as_u16()})),
        )
            .into_response()
    };
    let token = match req.headers().get(axum::http::header::AUTHORIZATION) {
        None => String::new(),
        Some(v) => match v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) => t.trim().to_string(),
            None => {
                return deny(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be `Bearer <token>`".into(),
                );
            }
        },
    };
    let changes = req.method() != axum::http::Method::GET || path == "/start/group";
    match s.review(&token).await {
        Ok(r)
            if (changes && (r.admin || r.delegate_for.as_ref() == Some(&s.cfg.name)))
                || (!changes && r.reads_all) =>
        {
            next.run(req).await
        }
        Ok(r) if r.authenticated => deny(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not {} {path}: it needs {}",
                r.subject.unwrap_or_default(),
                req.method(),
                if changes {
                    "an admin token"
                } else {
                    "a viewer or admin token"
                }
            ),
        ),
        Ok(_) if token.is_empty() => deny(
            StatusCode::UNAUTHORIZED,
            format!("{path} needs a credential: `Authorization: Bearer <token>`"),
        ),
        Ok(_) => deny(
            StatusCode::UNAUTHORIZED,
            "the token is unknown, revoked or expired".into(),
        ),
        Err(e) => deny(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the caller's token with the controller: {e}"),
        ),
    }
}

/// The original's port-3005 API, plus `/api/v1/scaling`.
pub fn router(s: Arc<Scheduler>) -> Router {
    Router::new()
        .route("/admin/ping", get(|| async { "pong" }))
        .route(
            "/start/group",
            get(
                |AxState(s): AxState<Arc<Scheduler>>, Query(q): Query<ByName>| async move {
                    reply(s.start_group(q.name.as_deref().unwrap_or_default()))
                },
            ),
        )
        .route(
            "/service",
            axum::routing::delete(
                |AxState(s): AxState<Arc<Scheduler>>, Query(q): Query<ByName>| async move {
                    reply(s.stop_service(q.name.as_deref().unwrap_or_default()))
                },
            ),
        )
        .route(
            "/api/v1/scaling",
            get(|AxState(s): AxState<Arc<Scheduler>>| async move { Json(s.status()) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(s.clone(), authorize))
        .with_state(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(dir: &std::path::Path) -> Arc<Scheduler> {
        Scheduler::new(Config {
            name: "dns-test".parse().unwrap(),
            // Nothing listens there; these tests never reach the controller.
            controller: "http://127.0.0.1:9".into(),
            token: None,
            ca: None,
            state_dir: dir.to_path_buf(),
            server: ServerKind::Torc,
            policy: Policy {
                min: 1,
                max: 3,
                high: 100.0,
                low: 10.0,
                k: 1,
                n: 1,
                cooldown_ms: 0,
            },
            interval: Duration::from_secs(1),
            failover: Duration::from_secs(1),
            rack_dns: "127.0.0.1:53".parse().unwrap(),
            tsdb: None,
            tsdb_login: None,
            tsdb_password_secret: None,
            exe: "/bin/false".into(),
            load_mean: Duration::from_secs(1),
            load_dev: Duration::from_secs(1),
            api_url: None,
        })
        .unwrap()
    }

    /// The state file is replaced durably (issue 19, bug 5: it was renamed without any fsync,
    /// so a power loss could forget a decision the scheduler had acted on): the new contents
    /// are synced before the rename, the directory after it. Checked in the system calls a real
    /// strace sees.
    #[test]
    fn the_state_file_is_synced_before_and_after_its_rename() {
        if !torc_test_utils::syscalls::strace_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(dir.path());
        let (saved, trace) =
            torc_test_utils::syscalls::trace(|| s.start_group("normalload200")).unwrap();
        saved.unwrap();
        torc_test_utils::syscalls::assert_durable_replace(&trace, &dir.path().join("state.json"));
    }

    /// A change that cannot be saved is undone and refused: the scheduler never acts on a
    /// decision or a group that a restart would forget.
    #[test]
    fn an_unsaved_change_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(dir.path());
        s.start_group("normalload200").unwrap();
        // A directory where the state file goes: every save fails (also for root).
        let state = dir.path().join("state.json");
        std::fs::remove_file(&state).unwrap();
        std::fs::create_dir(&state).unwrap();
        let err = s.start_group("normalload400").unwrap_err();
        assert!(matches!(err, GroupError::Unsaved(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("cannot save the scheduler's state: cannot write "),
            "{err}"
        );
        let loads = s.status()["loads"].clone();
        assert_eq!(loads, serde_json::json!(["normalload200"]));
        let busy = Observation {
            at: 1,
            servers: 1,
            total_qps: 1000.0,
        };
        assert!(s.observe(busy.clone()).is_err());
        let status = s.status();
        assert_eq!(status["desired_servers"], 1, "no unsaved scale-up");
        assert_eq!(status["window"], serde_json::json!([]), "{status}");
        // Once the file can be written again, the same observation scales up.
        std::fs::remove_dir(&state).unwrap();
        let decision = s.observe(busy).unwrap().expect("a decision");
        assert_eq!((decision.from, decision.to), (1, 2));
        let saved: Wanted = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(saved.scaler.desired, 2);
    }

    /// The port-3005 API's 404 bodies: what an operator reads.
    #[test]
    fn group_errors_say_what_exists() {
        let cases = [
            (
                GroupError::ServerOutOfRange {
                    name: "dns-sl9".into(),
                    max: 4,
                },
                "dns-sl9: servers go from dns-sl1 to dns-sl4",
            ),
            (
                GroupError::NoGroup {
                    name: "web".into(),
                    max: 4,
                },
                "no group named \"web\"; groups: dns-sl1..dns-sl4, normalload200, normalload400",
            ),
            (
                GroupError::WithinMinimum {
                    name: "dns-sl1".into(),
                    min: 1,
                },
                "dns-sl1 is within the minimum of 1 servers",
            ),
            (
                GroupError::NotRunning {
                    name: "normalload200".into(),
                },
                "no running service named \"normalload200\"",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
