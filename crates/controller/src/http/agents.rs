//! The agent protocol: registration (`POST /api/v1/agents/register`: the node's credential
//! and certificate), task reports (`POST /agents/{name}/status`) and the long poll for a
//! node's desired task set (`GET /agents/{name}/desired`, with each task's credential files).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_millis;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use torc_api::{DesiredQuery, DesiredState, RegisterRequest, RegisterResponse, StatusReport};
use torc_types::NodeName;

use super::access::CallerExt;
use super::error::{ApiError, Reply};
use super::extract::{Body, Path, Query};
use super::longpoll::MAX_WAIT;
use crate::auth::Role;
use crate::controller::Controller;
use crate::rack::NodeError;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/agents/register", post(register_agent))
        .route("/api/v1/agents/{name}/status", post(agent_status))
        .route("/api/v1/agents/{name}/desired", get(agent_desired))
}

async fn register_agent(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): CallerExt,
    peer: Option<Extension<torc_tls::PeerCertificates>>,
    Body(req): Body<RegisterRequest>,
) -> Reply<RegisterResponse> {
    let node = req.node.clone();
    if let Some(Role::Node { node: own }) = caller.who.role() {
        if *own != node {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("node {own}'s credential cannot register node {node}"),
            ));
        }
        // Under TLS a node re-registers with its certificate too: its credential alone does
        // not get a certificate for a new key.
        if ctl.tls.is_some() {
            let dns = ctl.node_cert_name(node.as_str());
            let shown = peer
                .as_ref()
                .and_then(|p| p.0.leaf())
                .is_some_and(|leaf| torc_tls::cert_names(leaf, &dns));
            if !shown {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "node {node} re-registers with its client certificate for {dns} as well as its credential"
                    ),
                ));
            }
        }
    }
    let joining = matches!(caller.who.role(), Some(Role::Join));
    // A join token (or an admin's) gets the node its own credential; a node's own keeps it.
    let mint = matches!(caller.who.role(), Some(Role::Join | Role::Admin));
    let public_key = match (&ctl.ca, &req.public_key) {
        (Some(_), Some(hex)) => Some(
            crate::auth::unhex(hex)
                .and_then(torc_tls::pki::RawPublicKey::p256)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "public_key: expected an uncompressed P-256 public key in hex (130 digits, starting 04)",
                    )
                })?,
        ),
        _ => None,
    };
    let mut req = req;
    req.agent_url = agent_url(&ctl, &req)?;
    let n = node.clone();
    let (interval, credential, ip) = ctl
        .change_keys(move |rack, keys| {
            // A join token brings in a node that holds no credential; it never takes over one
            // that does (that would shut its agent out and give the caller its identity).
            if joining && keys.node_has_credential(&n, now_millis()) {
                return Err(NodeError::HoldsCredential(n).into());
            }
            let interval = rack.register(req, now_millis())?;
            let credential = mint.then(|| keys.mint_node(&n, now_millis()).token);
            let ip = rack.node_view(&n)?.ip;
            Ok((interval, credential, ip))
        })
        .await?;
    let certificate = match (&ctl.ca, public_key) {
        (Some(_), Some(_)) if ctl.node_cert_name(node.as_str()) == torc_tls::CONTROLLER_NAME => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "node {node}'s certificate would name the controller ({}); rename the node",
                    torc_tls::CONTROLLER_NAME
                ),
            ));
        }
        (Some(ca), Some(key)) => {
            let req = torc_tls::pki::CertRequest {
                common_name: format!("node {node}"),
                dns_names: vec![ctl.node_cert_name(node.as_str())],
                ips: vec![ip],
                validity: NODE_CERT_VALIDITY,
            };
            Some(
                ca.issue_for(&req, &key)
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("cannot issue node {node}'s certificate: {e}"),
                        )
                    })?
                    .cert_pem,
            )
        }
        _ => None,
    };
    tracing::info!(%node, by = %caller.who.describe(), credential = credential.is_some(), certificate = certificate.is_some(), "agent registered");
    Ok(Json(RegisterResponse {
        // The epoch the registration was committed under (fenced with it): the agent's floor.
        epoch: ctl.epoch().0,
        heartbeat_interval_ms: interval.as_millis() as u64,
        node_timeout_ms: Some(ctl.read(|r| r.settings().node_timeout.as_millis() as u64)),
        credential,
        certificate,
        upkeep: Some(ctl.read(|r| r.settings().upkeep())),
    }))
}

/// Where the controller calls a node's agent: the node's own address (from the rack config
/// when it lists the node), the port the agent serves on, HTTPS when the rack has a CA. Never
/// the URL as the agent sent it: the controller's calls carry its token, and a node must not
/// be able to send them anywhere else.
fn agent_url(ctl: &Controller, req: &RegisterRequest) -> Result<String, ApiError> {
    let port = req
        .agent_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.trim_end_matches('/').parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "agent_url: expected scheme://address:port, got {:?}",
                    req.agent_url
                ),
            )
        })?;
    let configured = ctl.read(|r| {
        r.settings()
            .nodes
            .iter()
            .find(|n| n.name == req.node)
            .map(|n| n.ip)
    });
    let ip = configured.unwrap_or(req.ip);
    let scheme = if ctl.ca.is_some() { "https" } else { "http" };
    Ok(match ip {
        std::net::IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
        v4 => format!("{scheme}://{v4}:{port}"),
    })
}

/// How long a node's certificate is valid; the agent gets a new one at each registration.
const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

async fn agent_status(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
    Body(report): Body<StatusReport>,
) -> Reply<serde_json::Value> {
    ctl.report_arrived(&node);
    ctl.change(move |rack| rack.report(&node, report, now_millis()))
        .await?;
    Ok(Json(serde_json::json!({})))
}

/// Long poll: answers as soon as the node's desired set is newer than `after`, or when the
/// wait is over (with the current document either way). An agent that holds another epoch's
/// document (it moved here from another leader, or this controller restarted) is answered at
/// once: it must not wait for a generation this leader may not reach for a while.
async fn agent_desired(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
    Query(query): Query<DesiredQuery>,
) -> Reply<DesiredState> {
    let mut rx = ctl
        .subscribe(&node)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node named \"{node}\"")))?;
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    if query.epoch == ctl.epoch().0 {
        loop {
            let current = *rx.borrow_and_update();
            // `after` beyond what we have means the agent remembers another controller life
            // of this epoch (a wiped store): give it our document at once.
            if current != query.after {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => break,
            }
        }
    }
    let (epoch, doc) = ctl.read_numbered(|r| r.desired(&node));
    let mut doc = doc?;
    doc.epoch = epoch.0;
    let (ip, endpoint) = ctl.read(|r| {
        r.node_view(&node)
            .ok()
            .map_or((None, None), |n| (Some(n.ip), n.endpoint))
    });
    for task in &mut doc.tasks {
        task.files = ctl.task_files(task, ip, endpoint);
        // Only a task still to start pulls its image.
        if task.launch
            && let Some(container) = &task.spec.container
        {
            task.registry = ctl.registry_auth(&container.image);
            task.pull_timeout_seconds =
                Some(ctl.read(|r| r.settings().containers.pull_timeout_in_seconds));
        }
    }
    Ok(Json(doc))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use torc_api::{RuntimeInfo, order::Stamp};

    use super::*;
    use crate::{ControllerOptions, RackSettings};

    /// A registration answers the controller's epoch, the desired state carries it, and a
    /// poll that names another epoch is answered at once, while one of this epoch waits for a
    /// newer generation (here: until its wait is over).
    #[tokio::test]
    async fn the_desired_poll_answers_another_epoch_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = torc_config::RackConfig::parse(
            "nodes:\n  - name: wedge\n    ip: 127.0.0.20\n    type: master\n",
            "rack.yaml",
        )
        .unwrap();
        let settings = RackSettings::from_config(&config, "rack.yaml");
        let ctl = Controller::open(settings, dir.path(), ControllerOptions::insecure()).unwrap();
        let epoch = ctl.epoch().0;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(Arc::clone(&ctl).serve(listener, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();

        let req = RegisterRequest {
            node: "wedge".parse().unwrap(),
            ip: "127.0.0.20".parse().unwrap(),
            agent_url: "http://127.0.0.20:1".into(),
            node_type: None,
            node_function: None,
            resources: torc_types::Resources::new(2.0, 1024.0, 1000.0),
            port_range: "31000-31009".parse().unwrap(),
            attributes: Default::default(),
            runtime: RuntimeInfo::default(),
            tasks: Vec::new(),
            public_key: None,
        };
        let resp = http
            .post(format!("{url}/api/v1/agents/register"))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let registered: RegisterResponse = resp.json().await.unwrap();
        assert_eq!(registered.epoch, epoch, "the floor is the leader's epoch");

        let poll = |query: String| {
            let http = http.clone();
            let url = format!("{url}/api/v1/agents/wedge/desired?{query}");
            async move {
                let started = Instant::now();
                let resp = http.get(url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let doc: DesiredState = resp.json().await.unwrap();
                (doc.stamp(), started.elapsed())
            }
        };
        let (first, _) = poll("after=0".into()).await;
        assert_eq!(first.epoch, epoch);
        let at = first.generation;
        // An agent that moved here from another leader: answered at once, not in 60 s.
        let (doc, _) = poll(format!("epoch={}&after={at}&wait_ms=60000", epoch + 3)).await;
        assert_eq!(doc, first);
        let (doc, _) = poll(format!("after={at}&wait_ms=60000")).await;
        assert_eq!(doc, first, "no epoch (0): another epoch too");
        // This epoch's agent holding the current document waits for a newer one.
        let (doc, waited) = poll(format!("epoch={epoch}&after={at}&wait_ms=300")).await;
        assert_eq!(
            doc,
            Stamp {
                epoch,
                generation: at
            }
        );
        assert!(waited >= Duration::from_millis(300), "{waited:?}");

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
