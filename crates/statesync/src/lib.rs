//! statesync: keeps `/torc/` in the state store (etcd, or `torc kv`) equal to the rack's live
//! state, the seed's "state soup".
//!
//! Keys and their JSON values (this list is their documentation; README.md points here):
//! - `/torc/machines/<node>`: `{name, ip, external_ip, management_ip, type, function, active, last_seen}`
//! - `/torc/services/<instance>`: `{name, service, owner, node, ip, ports, state, task_id}`, for
//!   running tasks and announced external tasks
//! - `/torc/routes/<destination, '/' as '-'>`: `{destination, next_hop, interface, metric,
//!   protocol, owner}`, every IPv4 route of the switch's main table: `interface` is the port it
//!   leaves by, `protocol` its routing protocol's name or number, `owner` `torc` for the
//!   network agent's routes (which also carry the `node`, `task` and `service` behind them) and
//!   `other` for the rest
//! - `/torc/ports/<interface>`: `{interface, oper_state, admin_up, mtu, mac}`, the switch's ports
//!
//! Routes and ports are the switch's, read over netlink from the namespace the controller names
//! for the network agent (the rack config's `network-agent.connection`: the switch's
//! namespace, or statesync's own when empty or when the rack has no netlink network agent).
//! Besides its tick (`--interval-ms`, 1 s), statesync watches that namespace's link and route
//! changes and runs a cycle right after one, so a route the network agent adds or withdraws,
//! or a port going down, reaches the store within milliseconds, not at the next tick.
//!
//! Each cycle compares what should be with what the store holds now (not with a private
//! cache), then puts what differs and deletes what no longer exists. Unlike the original it
//! never deletes what it has just written, survives a changed route and deletes ports that went
//! away. A source that does not answer is unknown, not empty: while the controller does not
//! answer, machines and services are left as they are; while the switch's routes or ports
//! cannot be read, those keys. A store that cannot be listed ends the cycle before any change.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use torc_api::original::OriginalTask;
use torc_api::{NodeView, RackRoute, RouteSnapshot, TaskView};
use torc_net::observe::{self, PortView};
use torc_net::{Netlink, Owner, RouteProtocol, RouteView, Switch};
use torc_types::TaskState;

/// What the controller says (one consistent read per cycle).
pub struct ControllerState {
    pub nodes: Vec<NodeView>,
    pub tasks: Vec<TaskView>,
    pub announced: Vec<OriginalTask>,
    /// The controller's own name (the owner of its tasks).
    pub controller_name: String,
    /// The switch's routes the controller wants (the task behind each owned route), and where
    /// the switch is (`RouteSnapshot::switch`).
    pub network: RouteSnapshot,
}

/// The switch's table and ports; `None`: that part could not be read (unknown, so the keys of
/// that kind are kept).
pub struct NetworkState {
    pub routes: Option<Vec<RouteView>>,
    pub ports: Option<Vec<PortView>>,
    /// The network agent's routing protocol (`--route-protocol`), for the routes' labels.
    pub protocol: RouteProtocol,
    /// The routes the controller wants, for the task behind each owned one (the last it said,
    /// while it does not answer).
    pub wanted: Vec<RackRoute>,
    /// Why the switch could not be read.
    pub errors: Vec<String>,
}

/// Keys of the store and their values (JSON text), in key order.
pub type Keys = BTreeMap<String, String>;

/// A change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, String),
    Delete(String),
}

fn key_part(s: &str) -> String {
    s.replace('/', "-")
}

/// The keys and values that should be under `base` (e.g. `/torc`).
pub fn desired(base: &str, ctl: Option<&ControllerState>, net: &NetworkState) -> Keys {
    let mut out = BTreeMap::new();
    let base = base.trim_end_matches('/');
    if let Some(ctl) = ctl {
        for n in &ctl.nodes {
            out.insert(
                format!("{base}/machines/{}", n.name),
                json!({
                    "name": n.name, "ip": n.ip, "external_ip": n.external_ip, "management_ip": n.management_ip,
                    "type": n.node_type, "function": n.node_function, "active": n.active,
                })
                .to_string(),
            );
        }
        for t in ctl.tasks.iter().filter(|t| t.state == TaskState::Running) {
            let owner = if t.framework.as_str() == torc_types::BUILTIN_FRAMEWORK {
                ctl.controller_name.clone()
            } else {
                t.framework.to_string()
            };
            // Several tasks may share a name (a framework's replicas): the task id keeps them
            // apart, the name alone is the common case.
            let dup = ctl
                .tasks
                .iter()
                .filter(|x| x.state == TaskState::Running && x.name == t.name)
                .count()
                > 1;
            let key = if dup {
                format!("{}.{}", t.name, t.id)
            } else {
                t.name.to_string()
            };
            out.insert(
                format!("{base}/services/{}", key_part(&key)),
                json!({
                    "name": t.name, "service": t.name, "owner": owner, "node": t.node, "ip": t.ip,
                    "ports": t.ports, "state": t.state, "task_id": t.id,
                })
                .to_string(),
            );
        }
        for a in &ctl.announced {
            out.insert(
                format!("{base}/services/{}", key_part(&a.name)),
                json!({
                    "name": a.name, "service": a.name, "owner": a.controller, "node": a.node_name,
                    "ip": a.ip, "ports": [], "state": "running", "task_id": a.id,
                })
                .to_string(),
            );
        }
    }
    let behind = |r: &RouteView| {
        (r.owner == Owner::Torc)
            .then(|| {
                net.wanted
                    .iter()
                    .find(|x| x.destination == r.dst && Some(x.next_hop) == r.gateway)
            })
            .flatten()
    };
    for r in net.routes.iter().flatten() {
        let dest = format!("{}/{}", r.dst, r.dst_len);
        let mut value = json!({
            "destination": dest, "next_hop": r.gateway.map(|g| g.to_string()),
            "interface": r.device, "metric": r.priority,
            "protocol": r.protocol_label(net.protocol),
            "owner": if r.owner == Owner::Torc { "torc" } else { "other" },
        });
        if let Some(rack) = behind(r) {
            value["node"] = json!(rack.node);
            value["task"] = json!(rack.task);
            value["service"] = json!(rack.service);
        }
        out.insert(
            format!("{base}/routes/{}", key_part(&dest)),
            value.to_string(),
        );
    }
    for p in net.ports.iter().flatten() {
        out.insert(
            format!("{base}/ports/{}", key_part(&p.name)),
            json!({
                "interface": p.name, "oper_state": p.oper_state.to_string(),
                "admin_up": p.admin_up, "mtu": p.mtu, "mac": p.mac,
            })
            .to_string(),
        );
    }
    out
}

/// Which sources answered this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The controller (machines and services).
    pub controller: bool,
    /// The switch's routes.
    pub routes: bool,
    /// The switch's ports.
    pub ports: bool,
}

impl Known {
    /// What `ctl` and `net` say was read.
    pub fn of(ctl: Option<&ControllerState>, net: &NetworkState) -> Known {
        Known {
            controller: ctl.is_some(),
            routes: net.routes.is_some(),
            ports: net.ports.is_some(),
        }
    }
}

/// The changes that make `actual` equal `desired`. Keys of a source that did not answer (see
/// [`Known`]) are never deleted: its silence says nothing about them.
pub fn plan(base: &str, desired: &Keys, actual: &Keys, known: Known) -> Vec<Op> {
    let base = base.trim_end_matches('/');
    let unknown: Vec<String> = [
        (known.controller, "machines"),
        (known.controller, "services"),
        (known.routes, "routes"),
        (known.ports, "ports"),
    ]
    .into_iter()
    .filter(|(answered, _)| !answered)
    .map(|(_, kind)| format!("{base}/{kind}/"))
    .collect();
    let guarded = |k: &str| unknown.iter().any(|prefix| k.starts_with(prefix));
    let mut ops = Vec::new();
    for (k, v) in desired {
        if actual.get(k) != Some(v) {
            ops.push(Op::Put(k.clone(), v.clone()));
        }
    }
    for k in actual.keys() {
        if !desired.contains_key(k) && !guarded(k) {
            ops.push(Op::Delete(k.clone()));
        }
    }
    ops
}

/// Reads the switch's routes and ports over `nl` (one dump of its links, one of its routes);
/// when they cannot be read (or `nl` is `None`: no connection) both are unknown (`None`), and
/// `errors` says why. `wanted` are the controller's
/// routes (see [`NetworkState::wanted`]).
pub async fn read_network(
    nl: Option<&Netlink>,
    protocol: RouteProtocol,
    wanted: Vec<RackRoute>,
) -> NetworkState {
    let Some(nl) = nl else {
        return NetworkState {
            routes: None,
            ports: None,
            protocol,
            wanted,
            errors: vec!["no connection to the switch's namespace".into()],
        };
    };
    // One pass of dumps, one after the other: a netlink socket runs one dump at a time (a
    // second one at once is refused with EBUSY).
    match observe::switch(nl, protocol).await {
        Ok((routes, ports)) => NetworkState {
            routes: Some(routes),
            ports: Some(ports),
            protocol,
            wanted,
            errors: vec![],
        },
        Err(e) => NetworkState {
            routes: None,
            ports: None,
            protocol,
            wanted,
            errors: vec![e.to_string()],
        },
    }
}

/// The store statesync writes to.
pub trait Store {
    type Error: std::fmt::Display;
    /// Every key under `prefix`, with its value.
    fn list(
        &mut self,
        prefix: &str,
    ) -> impl std::future::Future<Output = Result<Keys, Self::Error>>;
    fn put(
        &mut self,
        key: &str,
        value: &str,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>>;
    fn delete(&mut self, key: &str) -> impl std::future::Future<Output = Result<(), Self::Error>>;
}

/// Reads the controller's state; `None` when it does not answer.
pub async fn read_controller(
    client: &torc_client::Client,
    controller_name: &str,
) -> Option<ControllerState> {
    let running = torc_api::TaskFilter {
        state: Some(TaskState::Running),
        ..Default::default()
    };
    let (nodes, tasks, announced, network) = tokio::join!(
        client.nodes(),
        client.tasks(&running),
        client.original_running(),
        client.network(),
    );
    let announced = announced
        .ok()?
        .into_iter()
        .filter(|t| t.controller != controller_name)
        .collect();
    Some(ControllerState {
        nodes: nodes.ok()?,
        tasks: tasks.ok()?,
        announced,
        controller_name: controller_name.to_string(),
        network: network.ok()?.desired,
    })
}

/// One reconciling cycle; returns the changes made.
pub async fn cycle<S: Store>(
    base: &str,
    ctl: Option<&ControllerState>,
    net: &NetworkState,
    store: &mut S,
) -> Result<Vec<Op>, S::Error> {
    let want = desired(base, ctl, net);
    let have = store
        .list(&format!("{}/", base.trim_end_matches('/')))
        .await?;
    let ops = plan(base, &want, &have, Known::of(ctl, net));
    for op in &ops {
        match op {
            Op::Put(k, v) => store.put(k, v).await?,
            Op::Delete(k) => store.delete(k).await?,
        }
    }
    Ok(ops)
}

/// The etcd v3 API (a real etcd, or `torc kv`) as statesync's store, through
/// [`torc_kv_client`]: with credentials it authenticates, and authenticates
/// again when its token expires or the store restarts.
pub struct EtcdStore {
    client: torc_kv_client::Client,
}

/// Why the state store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("bad endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Client(#[from] torc_kv_client::ClientError),
}

impl EtcdStore {
    /// Connects lazily to `endpoint` (`http://host:2379`, or `https://host:2379` with `tls`), as
    /// `credentials`' user if given: a store that is down is retried on every call, and never
    /// blocks start-up.
    pub fn connect(
        endpoint: &str,
        credentials: Option<torc_kv_client::Credentials>,
        tls: Option<torc_kv_client::ClientTls>,
    ) -> Result<EtcdStore, EtcdError> {
        let endpoint_cfg = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|source| EtcdError::Endpoint {
                endpoint: endpoint.to_string(),
                source,
            })?
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(std::time::Duration::from_secs(5));
        Ok(EtcdStore {
            client: torc_kv_client::Client::lazy_with(endpoint_cfg, credentials, tls)?,
        })
    }
}

impl Store for EtcdStore {
    type Error = EtcdError;

    async fn list(&mut self, prefix: &str) -> Result<Keys, EtcdError> {
        use torc_kv_client::proto::etcdserverpb::RangeRequest;
        let req = RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: torc_kv_client::prefix_end(prefix.as_bytes()).into(),
            ..Default::default()
        };
        let resp = self.client.range(req).await?;
        Ok(resp
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect())
    }

    async fn put(&mut self, key: &str, value: &str) -> Result<(), EtcdError> {
        use torc_kv_client::proto::etcdserverpb::PutRequest;
        let req = PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        };
        self.client.put(req).await?;
        Ok(())
    }

    async fn delete(&mut self, key: &str) -> Result<(), EtcdError> {
        use torc_kv_client::proto::etcdserverpb::DeleteRangeRequest;
        let req = DeleteRangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        };
        self.client.delete_range(req).await?;
        Ok(())
    }
}

/// How long a change of the switch waits before its cycle, so that a burst (a task's route and
/// its veth, many routes at a reconcile) is one cycle.
const SETTLE: Duration = Duration::from_millis(20);

/// Runs statesync until `shutdown`: a cycle every `interval`, and one right after the switch's
/// routes or ports change. `protocol` is the network agent's (`--route-protocol`).
pub async fn run(
    client: torc_client::Client,
    controller_name: String,
    mut store: EtcdStore,
    base: String,
    interval: Duration,
    protocol: RouteProtocol,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut controller_was_up = true;
    let mut network_was_read = true;
    let mut switch: Option<Switch> = None;
    // Where the switch is: the controller's word (`""`, statesync's own namespace, until it
    // answers, and when the rack has no netlink network agent).
    let mut setting = String::new();
    let mut wanted = Vec::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
            _ = async {
                match switch.as_mut() {
                    Some(s) => s.changed().await,
                    None => std::future::pending().await,
                }
            } => tokio::time::sleep(SETTLE).await,
        }
        let ctl = read_controller(&client, &controller_name).await;
        if ctl.is_none() && controller_was_up {
            tracing::warn!(
                "the controller does not answer; keeping its machines and services in the store as they are"
            );
        }
        controller_was_up = ctl.is_some();
        if let Some(ctl) = &ctl {
            setting = ctl.network.switch.clone().unwrap_or_default();
            wanted = ctl.network.routes.clone();
        }
        if switch.as_ref().is_some_and(|s| s.setting() != setting) {
            switch = None;
        }
        if switch.is_none() {
            match Switch::open(&setting) {
                Ok(s) => {
                    tracing::info!(switch = %s.netlink().namespace(), "reading the switch's routes and ports");
                    switch = Some(s);
                }
                Err(e) => tracing::warn!(error = %e, "cannot reach the switch's namespace"),
            }
        }
        let net = read_network(
            switch.as_ref().map(Switch::netlink),
            protocol,
            wanted.clone(),
        )
        .await;
        let known = Known::of(ctl.as_ref(), &net);
        if (!known.routes || !known.ports) && network_was_read {
            tracing::warn!(
                routes = known.routes,
                ports = known.ports,
                errors = ?net.errors,
                "cannot read the switch's routes or ports; keeping those keys as they are"
            );
        }
        network_was_read = known.routes && known.ports;
        if !network_was_read {
            // Opened again next cycle.
            switch = None;
        }
        match cycle(&base, ctl.as_ref(), &net, &mut store).await {
            Ok(ops) if !ops.is_empty() => {
                tracing::info!(changes = ops.len(), "state store updated")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot update the state store; retrying"),
        }
    }
}

#[cfg(test)]
mod tests;
