//! Client commands: `torc nodes` (`torc node` is in `node.rs`), `tasks`, `kill`, `logs`, `status`, `services`,
//! `routes`, `ports`, `alerts`, `group`, `token`, `secret` and `ca` (`ca` works on a directory, not a
//! controller). Tables for people, `--json` for scripts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use torc_api::{LogQuery, LogStream, TaskFilter, TaskView};
use torc_client::Client;
use torc_types::{FrameworkName, NodeName, ServiceName, TaskId, TaskState};

use crate::process::DEFAULT_CONTROLLER;

/// How a client command finds its controller.
#[derive(Args, Clone)]
pub struct Target {
    /// The controllers' URLs, comma-separated: calls go to the leader among them.
    #[arg(long, env = "TORC_CONTROLLER", default_value = DEFAULT_CONTROLLER, global = true)]
    controller: String,
    /// Bearer token.
    #[arg(long, env = "TORC_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding the token (default: the local rack's admin token, when `torc up` runs).
    #[arg(long, env = "TORC_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The rack CA's certificate, which the controller's must chain to (default: the local
    /// rack's, when `torc up` runs).
    #[arg(long, env = "TORC_CA", global = true)]
    ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

impl Target {
    /// `--json`: print JSON instead of a table.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let local = (self.controller == DEFAULT_CONTROLLER)
            .then(crate::up::default_data_dir)
            .transpose()?
            .filter(|d| d.join(crate::up::CA_DIR).join("ca.pem").exists());
        let token = match (&self.token, &self.token_file, &local) {
            (Some(t), _, _) => Some(t.clone()),
            (None, Some(f), _) => Some(torc_tls::files::read_secret(f)?),
            (None, None, Some(dir)) if dir.join(crate::up::ADMIN_TOKEN).exists() => Some(
                torc_tls::files::read_secret(&dir.join(crate::up::ADMIN_TOKEN))?,
            ),
            _ => None,
        };
        let ca = match (&self.ca, &local) {
            (Some(ca), _) => Some(ca.clone()),
            (None, Some(dir)) => Some(dir.join(crate::up::CA_DIR).join("ca.pem")),
            (None, None) => None,
        };
        if self.controller.contains("https://") && ca.is_none() {
            anyhow::bail!(
                "{} is HTTPS: give --ca FILE (or TORC_CA), the rack CA's certificate (no local rack of `torc up` is running here)",
                self.controller
            );
        }
        // The local rack's controllers, when `torc up` runs several.
        let controllers = local
            .as_ref()
            .and_then(|dir| std::fs::read_to_string(dir.join(crate::up::CONTROLLERS)).ok())
            .map(|list| list.trim().to_string())
            .filter(|list| !list.is_empty())
            .unwrap_or_else(|| self.controller.clone());
        Ok(Client::from_files(controllers, token, ca.as_deref())?)
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as aligned columns.
pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub(crate) fn ago(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let secs = torc_types::now_millis().saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[derive(Args)]
pub struct NodesArgs {
    #[command(flatten)]
    target: Target,
}

pub fn nodes(args: NodesArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let nodes = runtime()?.block_on(client.nodes())?;
    if args.target.json {
        return print_json(&nodes);
    }
    let rows = nodes
        .iter()
        .map(|n| {
            let r = &n.resources;
            vec![
                n.name.to_string(),
                n.ip.to_string(),
                n.node_type.to_string(),
                n.node_function.clone(),
                if n.active { "active" } else { "inactive" }.to_string(),
                format!("{}/{}", num(r.allocated.cpus), num(r.total.cpus)),
                format!("{}/{}", num(r.allocated.mem_mb), num(r.total.mem_mb)),
                n.tasks.to_string(),
                ago(n.last_seen),
                containers_cell(&n.runtime),
                maintenance_cell(n),
                power_cell(n),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "IP",
            "TYPE",
            "FUNCTION",
            "STATE",
            "CPUS",
            "MEM MiB",
            "TASKS",
            "SEEN",
            "CONTAINERS",
            "MAINTENANCE",
            "POWER",
        ],
        rows,
    );
    Ok(())
}

/// Whether a node's agent runs containers: `yes`, or `unavailable: <its reason>`.
pub(crate) fn containers_cell(runtime: &torc_api::RuntimeInfo) -> String {
    match (runtime.containers, &runtime.containers_note) {
        (true, _) => "yes".into(),
        (false, Some(note)) => format!("unavailable: {note}"),
        (false, None) => "unavailable: its agent gives no reason".into(),
    }
}

/// The `MAINTENANCE` cell of `torc nodes`: `cordoned`, `draining (2 moved, 1 to move)`,
/// `drained`, or `-`.
fn maintenance_cell(node: &torc_api::NodeView) -> String {
    match (&node.drain, node.cordoned) {
        (Some(d), _) if d.done_at.is_none() => {
            format!("draining ({} moved, {} to move)", d.moved, d.to_move)
        }
        (Some(d), true) if d.stopped.is_none() => "cordoned, drained".into(),
        (_, true) => "cordoned".into(),
        (_, false) => "-".into(),
    }
}

/// The `POWER` cell of `torc nodes`: the state the last `status` read, and the last action
/// when it was another or failed.
fn power_cell(node: &torc_api::NodeView) -> String {
    let Some(p) = &node.power else {
        return "-".into();
    };
    let state = p.state.map_or("-".to_string(), |s| s.to_string());
    let last = &p.last;
    if last.action == torc_api::PowerAction::Status && last.ok {
        state
    } else {
        let outcome = if last.ok { "ran" } else { "failed" };
        format!("{state} ({} {outcome})", last.action)
    }
}

#[derive(Args)]
pub struct TasksArgs {
    #[command(flatten)]
    target: Target,
    /// Only tasks on this node.
    #[arg(long)]
    node: Option<NodeName>,
    /// Only tasks in this state (pending, staging, running, killing, finished, failed, killed, lost).
    #[arg(long)]
    state: Option<TaskState>,
    /// Only tasks of this framework.
    #[arg(long)]
    framework: Option<FrameworkName>,
    /// Include ended tasks (by default only live ones are listed).
    #[arg(long, short = 'a')]
    all: bool,
}

pub fn tasks(args: TasksArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let filter = TaskFilter {
        node: args.node,
        framework: args.framework,
        state: args.state,
        name: None,
    };
    let mut tasks = runtime()?.block_on(client.tasks(&filter))?;
    if !args.all && filter.state.is_none() {
        tasks.retain(|t| !t.state.is_terminal());
    }
    if args.target.json {
        return print_json(&tasks);
    }
    let rows = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.state.to_string(),
                t.node
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                t.ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                t.framework.to_string(),
                t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                t.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "STATE",
            "NODE",
            "PORTS",
            "FRAMEWORK",
            "EXIT",
            "MESSAGE",
        ],
        rows,
    );
    Ok(())
}

pub(crate) fn print_task_line(t: &TaskView) {
    let place = t
        .node
        .as_ref()
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    let msg = t
        .message
        .as_ref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    println!("{} {}{place}{msg}", t.id, t.state);
}

#[derive(Args)]
pub struct KillArgs {
    #[command(flatten)]
    target: Target,
    /// The task's id.
    task: TaskId,
}

pub fn kill(args: KillArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let task = runtime()?.block_on(client.kill(&args.task))?;
    if args.target.json {
        return print_json(&task);
    }
    print_task_line(&task);
    Ok(())
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    target: Target,
    /// The task's id.
    task: TaskId,
    /// Show stderr instead of stdout.
    #[arg(long)]
    stderr: bool,
    /// How many bytes from the end to show first.
    #[arg(long, default_value_t = 8192)]
    tail: u64,
    /// Keep printing new output until the task ends.
    #[arg(long, short = 'f')]
    follow: bool,
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let client = args.target.client()?;
    let stream = if args.stderr {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    };
    let rt = runtime()?;
    let mut chunk = rt.block_on(client.logs(
        &args.task,
        &LogQuery {
            stream,
            tail: Some(args.tail),
            offset: None,
        },
    ))?;
    let mut out = std::io::stdout().lock();
    out.write_all(chunk.data.as_bytes())?;
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    // Set once the task was seen ended: one more read then takes what it wrote last.
    let mut ended = false;
    loop {
        let offset = chunk.next_offset;
        chunk = rt.block_on(client.logs(
            &args.task,
            &LogQuery {
                stream,
                tail: None,
                offset: Some(offset),
            },
        ))?;
        if chunk.offset > offset {
            // Rotated away before this read: said, never shown as if nothing was missing.
            eprintln!(
                "torc: {} bytes of output were rotated away before they could be shown",
                chunk.offset - offset
            );
        }
        out.write_all(chunk.data.as_bytes())?;
        out.flush()?;
        if chunk.data.is_empty() {
            if ended {
                break;
            }
            ended = rt.block_on(client.task(&args.task))?.state.is_terminal();
            if !ended {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Ok(())
}

fn service_rows(services: &[torc_api::ServiceView]) -> Vec<Vec<String>> {
    services
        .iter()
        .map(|s| {
            vec![
                s.name.to_string(),
                s.origin.clone(),
                s.state
                    .map(|st| st.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.node
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.health.state.clone(),
                s.restarts.to_string(),
                s.waiting
                    .clone()
                    .or_else(|| {
                        s.last_failure
                            .as_ref()
                            .map(|f| format!("last failure {}: {}", ago(f.at), f.message))
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

const SERVICE_HEADER: [&str; 7] = [
    "NAME", "ORIGIN", "STATE", "NODE", "HEALTH", "RESTARTS", "NOTE",
];

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
}

/// `torc alerts`: the alerts that hold now.
pub fn alerts(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let alerts = runtime()?.block_on(client.alerts())?;
    if args.target.json {
        return print_json(&alerts);
    }
    if alerts.is_empty() {
        println!("no alerts");
        return Ok(());
    }
    let rows = (alerts.iter())
        .map(|a| {
            vec![
                a.rule.clone(),
                a.subject.clone(),
                a.state.to_string(),
                ago(a.since),
                a.summary.clone(),
            ]
        })
        .collect();
    print_table(&["RULE", "SUBJECT", "STATE", "SINCE", "SUMMARY"], rows);
    Ok(())
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let status = runtime()?.block_on(client.status())?;
    if args.target.json {
        return print_json(&status);
    }
    println!(
        "rack {}: {}/{} nodes active, up since {}",
        status.rack,
        status.nodes_active,
        status.nodes_total,
        ago(status.started_at)
    );
    for w in &status.warnings {
        println!("WARNING: {w}");
    }
    // Older controllers have no such route: the line is left out.
    if let Ok(c) = runtime()?.block_on(client.controller_status()) {
        println!("{}", controller_line(&c));
    }
    println!();
    let rows = status
        .services
        .iter()
        .map(|s| {
            vec![
                s.name.to_string(),
                s.origin.clone(),
                format!("{}/{}", s.running, s.desired),
                format!("{}/{}", s.healthy, s.desired),
                s.restarts.to_string(),
                s.last_failure
                    .as_ref()
                    .map(|f| format!("{}: {}", ago(f.at), f.message))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "SERVICE",
            "ORIGIN",
            "RUNNING",
            "HEALTHY",
            "RESTARTS",
            "LAST FAILURE",
        ],
        rows,
    );
    if !status.rollouts.is_empty() {
        println!();
        let rows = (status.rollouts.iter())
            .map(|r| {
                vec![
                    r.service.to_string(),
                    r.origin.clone(),
                    format!("{}/{}", r.step, r.of),
                    r.state.clone(),
                    r.instance
                        .as_ref()
                        .map(|i| i.to_string())
                        .unwrap_or_default(),
                    r.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(
            &["ROLLOUT", "ORIGIN", "STEP", "STATE", "REPLACING", "NOTE"],
            rows,
        );
    }
    println!();
    let rows = status
        .frameworks
        .iter()
        .map(|f| {
            vec![
                f.name.to_string(),
                if f.active { "active" } else { "inactive" }.to_string(),
                f.tasks
                    .iter()
                    .map(|(state, n)| format!("{n} {state}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    print_table(&["FRAMEWORK", "STATE", "TASKS"], rows);
    Ok(())
}

/// `controller: wedge leads (epoch 12), 1 standby; store etcd, 3/3 members healthy`.
fn controller_line(c: &torc_api::controller::ControllerStatus) -> String {
    let leader = match &c.leader {
        Some(l) => format!("{} leads (epoch {})", l.name, l.epoch),
        None => "no leader is known".to_string(),
    };
    let standbys = c.controllers.len().saturating_sub(1);
    let store = match c.store.kind.as_str() {
        "etcd" => format!(
            "store etcd, {}/{} members healthy",
            c.store.endpoints.iter().filter(|e| e.healthy).count(),
            c.store.endpoints.len()
        ),
        other => format!("store {other}"),
    };
    let mut line = format!("controller: {leader}");
    if c.role != torc_api::controller::ControllerRole::Sole {
        line.push_str(&format!(", {standbys} standby"));
    }
    line.push_str(&format!("; {store}"));
    if let Some(why) = &c.why_not {
        line.push_str(&format!(
            " (the one that answered, {}, does not act: {why})",
            c.name
        ));
    }
    line
}

/// `torc controller status`: where the answering controller stands, who leads, the
/// controllers campaigning and the store's members.
pub fn controller_status(target: &Target) -> anyhow::Result<()> {
    let client = target.client()?;
    let c = runtime()?.block_on(client.controller_status())?;
    if target.json {
        return print_json(&c);
    }
    println!("{}", controller_line(&c));
    let mut this = format!(
        "this controller: {} ({}), {}",
        c.name,
        c.url.as_deref().unwrap_or("no advertised URL"),
        c.role.as_str()
    );
    if let Some(epoch) = c.epoch {
        this.push_str(&format!(", epoch {epoch}"));
    }
    match (&c.acting_for_ms, &c.why_not) {
        (Some(ms), _) => this.push_str(&format!(", acting ({ms} ms of lease left)")),
        (None, Some(why)) => this.push_str(&format!(", not acting: {why}")),
        (None, None) if c.acting => this.push_str(", acting"),
        (None, None) => {}
    }
    println!("{this}");
    if let Some(t) = &c.trouble {
        println!("WARNING: the last keepalive failed: {t}");
    }
    if !c.controllers.is_empty() {
        println!();
        let rows = c
            .controllers
            .iter()
            .enumerate()
            .map(|(i, x)| {
                vec![
                    x.name.clone(),
                    if i == 0 { "leader" } else { "standby" }.to_string(),
                    x.epoch.to_string(),
                    x.url.clone(),
                ]
            })
            .collect();
        print_table(&["CONTROLLER", "ROLE", "EPOCH", "URL"], rows);
    }
    println!();
    println!(
        "store: {} {}{}",
        c.store.kind,
        c.store.location,
        c.store
            .revision
            .map(|r| format!(", revision {r}"))
            .unwrap_or_default()
    );
    if !c.store.endpoints.is_empty() {
        let rows = c
            .store
            .endpoints
            .iter()
            .map(|e| {
                vec![
                    e.url.clone(),
                    if e.healthy { "yes" } else { "no" }.to_string(),
                    if e.raft_leader { "yes" } else { "" }.to_string(),
                    e.raft_term.map(|t| t.to_string()).unwrap_or_default(),
                    e.version.clone().unwrap_or_default(),
                    e.db_size
                        .map(|b| format!("{} KiB", b / 1024))
                        .unwrap_or_default(),
                    e.error
                        .clone()
                        .into_iter()
                        .chain(e.alarms.iter().cloned())
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            })
            .collect();
        print_table(
            &[
                "MEMBER",
                "HEALTHY",
                "RAFT LEADER",
                "TERM",
                "VERSION",
                "SIZE",
                "ERROR",
            ],
            rows,
        );
    }
    Ok(())
}

/// `torc controller step-down`: the leader hands over to a standby (a switch upgrade).
pub fn controller_step_down(target: &Target) -> anyhow::Result<()> {
    let client = target.client()?;
    let rt = runtime()?;
    let before = rt.block_on(client.controller_status())?;
    let answer = rt.block_on(client.step_down())?;
    if target.json {
        return print_json(&answer);
    }
    let leader = before.leader.map(|l| l.name).unwrap_or_default();
    let standbys: Vec<String> = answer.standbys.iter().map(|s| s.name.clone()).collect();
    println!(
        "{leader} stepped down (epoch {}); {} may take over",
        answer.epoch,
        standbys.join(" or ")
    );
    Ok(())
}

#[derive(Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    target: Target,
    /// `purge`: remove the service's data dirs ($DATA_DIR) from every node; refused while
    /// the rack config defines it.
    action: String,
    /// The service's name.
    name: ServiceName,
}

pub fn service(args: ServiceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.action == "purge",
        "unknown service action {:?}; use purge",
        args.action
    );
    let client = args.target.client()?;
    let purge = runtime()?.block_on(client.purge_service(&args.name))?;
    if args.target.json {
        return print_json(&purge);
    }
    let rows = purge
        .nodes
        .iter()
        .map(|n| {
            let outcome = match (&n.purged, &n.error) {
                (Some(p), _) if p.removed => format!("removed ({} bytes)", p.bytes),
                (Some(_), _) => "nothing to remove".to_string(),
                (None, Some(e)) => format!("kept: {e}"),
                (None, None) => "kept".to_string(),
            };
            vec![n.node.to_string(), outcome]
        })
        .collect();
    print_table(&["NODE", "DATA DIR"], rows);
    anyhow::ensure!(
        purge.nodes.iter().all(|n| n.error.is_none()),
        "some nodes kept the data of service {} (see above)",
        purge.service
    );
    Ok(())
}

pub fn services(args: ServicesArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let rt = runtime()?;
    let services = rt.block_on(client.services())?;
    if args.target.json {
        let nodes = rt.block_on(client.nodes())?;
        return print_json(&with_endpoints(&services, &nodes)?);
    }
    print_table(&SERVICE_HEADER, service_rows(&services));
    Ok(())
}

/// The services as JSON for the host: an instance on its node's network whose node has an
/// `endpoint` (a rack on network namespaces, reached from the host through forwarders) shows
/// the endpoint as `ip`, and its rack address as `rack_ip`, so that `ip` is always an address
/// this machine may send to.
fn with_endpoints(
    services: &[torc_api::ServiceView],
    nodes: &[torc_api::NodeView],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let node_addresses: BTreeMap<&NodeName, (std::net::IpAddr, std::net::IpAddr)> = (nodes.iter())
        .filter_map(|n| n.endpoint.map(|e| (&n.name, (n.ip, e))))
        .collect();
    services
        .iter()
        .map(|s| {
            let mut value = serde_json::to_value(s)?;
            let on_node = s.node.as_ref().and_then(|n| node_addresses.get(n));
            if let (Some((node_ip, endpoint)), Some(ip)) = (on_node, s.ip)
                && ip == *node_ip
                && let Some(fields) = value.as_object_mut()
            {
                fields.insert("ip".into(), endpoint.to_string().into());
                fields.insert("rack_ip".into(), ip.to_string().into());
            }
            Ok(value)
        })
        .collect()
}

/// How long ago the network agent reported, or that it never did.
fn reported(view: &torc_api::NetworkView) -> String {
    match view.reported_at {
        0 => "the switch's network agent has not reported".into(),
        at => format!("the switch reported {}", ago(at)),
    }
}

pub fn routes(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let view = runtime()?.block_on(client.network())?;
    if args.target.json {
        return print_json(&view);
    }
    let desired: BTreeMap<std::net::Ipv4Addr, &torc_api::RackRoute> = (view.desired.routes.iter())
        .map(|r| (r.destination, r))
        .collect();
    println!(
        "{} task route(s) wanted (generation {}); {}",
        desired.len(),
        view.desired.generation,
        reported(&view)
    );
    let held = view
        .reported
        .as_ref()
        .map(|r| r.routes.as_slice())
        .unwrap_or_default();
    let mut rows: Vec<Vec<String>> = held
        .iter()
        .map(|r| {
            let task = (r.prefix_len == 32)
                .then(|| desired.get(&r.destination))
                .flatten()
                .map_or(String::new(), |d| format!("{} ({})", d.task, d.service));
            vec![
                format!("{}/{}", r.destination, r.prefix_len),
                r.gateway.map_or("-".into(), |g| g.to_string()),
                r.port.clone().unwrap_or_else(|| "-".into()),
                r.protocol.clone(),
                task,
            ]
        })
        .collect();
    // What the tasks need and the switch does not hold (yet).
    for d in &view.missing {
        rows.push(vec![
            format!("{}/32", d.destination),
            d.next_hop.to_string(),
            "-".into(),
            "missing".into(),
            format!("{} ({})", d.task, d.service),
        ]);
    }
    print_table(&["DESTINATION", "VIA", "PORT", "OWNER", "TASK"], rows);
    Ok(())
}

pub fn ports(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let view = runtime()?.block_on(client.network())?;
    if args.target.json {
        return print_json(&view.reported.map(|r| r.ports).unwrap_or_default());
    }
    println!("{}", reported(&view));
    let ports = view.reported.map(|r| r.ports).unwrap_or_default();
    let rows = ports
        .into_iter()
        .map(|p| {
            vec![
                p.name,
                p.oper_state,
                p.mtu.to_string(),
                format!("{}/{}", p.rx_bytes, p.tx_bytes),
                format!("{}/{}", p.rx_packets, p.tx_packets),
                format!("{}/{}", p.rx_errors, p.tx_errors),
            ]
        })
        .collect();
    print_table(
        &[
            "PORT",
            "STATE",
            "MTU",
            "RX/TX BYTES",
            "RX/TX PACKETS",
            "RX/TX ERRORS",
        ],
        rows,
    );
    Ok(())
}

#[derive(Args)]
pub struct GroupArgs {
    #[command(flatten)]
    target: Target,
    /// `list` (default), `start` or `stop`.
    #[arg(default_value = "list")]
    action: String,
    /// The group's name (for start and stop).
    name: Option<ServiceName>,
}

pub fn group(args: GroupArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let rt = runtime()?;
    let name = || {
        args.name
            .clone()
            .with_context(|| format!("`torc group {}` needs the group's name", args.action))
    };
    let groups = match args.action.as_str() {
        "list" => rt.block_on(client.groups())?,
        "start" => vec![rt.block_on(client.start_group(&name()?))?],
        "stop" => vec![rt.block_on(client.stop_group(&name()?))?],
        other => anyhow::bail!("unknown group action {other:?}; use list, start or stop"),
    };
    if args.target.json {
        return print_json(&groups);
    }
    for g in &groups {
        let names: Vec<&str> = g.services.iter().map(|s| s.as_str()).collect();
        println!(
            "group {} ({}): {} instance(s)",
            g.name,
            names.join(", "),
            g.instances.len()
        );
        if !g.instances.is_empty() {
            print_table(&SERVICE_HEADER, service_rows(&g.instances));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum TokenAction {
    /// Create a token and print it (shown once).
    Create {
        /// admin, viewer, join, or framework (with --framework).
        #[arg(long)]
        role: torc_api_role::RoleArg,
        /// Who or what holds it, for `torc token list`.
        #[arg(long)]
        name: Option<String>,
        /// The framework a framework token acts for.
        #[arg(long)]
        framework: Option<FrameworkName>,
        /// Seconds until it expires (default: until revoked).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// List tokens (never their secrets): admins, viewers, join tokens, nodes, frameworks.
    List,
    /// Revoke a token by id; it stops working at once (on agents within 10 s).
    Revoke { id: String },
}

/// `torc token ...`.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let rt = runtime()?;
    match args.action {
        TokenAction::Create {
            role,
            name,
            framework,
            ttl,
        } => {
            let req = torc_api::TokenRequest {
                role: role.0,
                name: name.unwrap_or_else(|| format!("{:?} token", role.0).to_lowercase()),
                framework,
                ttl_seconds: ttl,
            };
            let created = rt.block_on(client.create_token(&req))?;
            if args.target.json {
                return print_json(&created);
            }
            println!("{}", created.token);
            eprintln!(
                "created {} token {} ({:?}); it is shown this once",
                created.view.role, created.view.id, created.view.name
            );
        }
        TokenAction::List => {
            let tokens = rt.block_on(client.tokens())?;
            if args.target.json {
                return print_json(&tokens);
            }
            let rows = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.role.clone(),
                        t.subject.clone().unwrap_or_default(),
                        t.name.clone(),
                        ago(t.created_at),
                        t.expires_at
                            .map(|e| {
                                let now = torc_types::now_millis();
                                if e > now {
                                    format!("in {}s", (e - now) / 1000)
                                } else {
                                    "expired".into()
                                }
                            })
                            .unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            print_table(&["ID", "ROLE", "FOR", "NAME", "CREATED", "EXPIRES"], rows);
        }
        TokenAction::Revoke { id } => {
            rt.block_on(client.revoke_token(&id))?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Parses `--role`.
mod torc_api_role {
    #[derive(Clone, Copy)]
    pub struct RoleArg(pub torc_api::TokenRole);

    /// A `--role` that is not one of the roles.
    #[derive(Debug, thiserror::Error)]
    #[error("expected admin, viewer, join or framework, got {0:?}")]
    pub struct UnknownRole(String);

    impl std::str::FromStr for RoleArg {
        type Err = UnknownRole;
        fn from_str(s: &str) -> Result<Self, UnknownRole> {
            use torc_api::TokenRole::*;
            Ok(RoleArg(match s {
                "admin" => Admin,
                "viewer" => Viewer,
                "join" => Join,
                "framework" => Framework,
                other => return Err(UnknownRole(other.to_string())),
            }))
        }
    }
}

#[derive(Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    action: SecretAction,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum SecretAction {
    /// The rack secrets' names (never their values).
    List,
    /// Print a rack secret's value (admins; the read is recorded in the event feed).
    Get { name: torc_types::SecretName },
    /// Set a rack secret to the value read from standard input (e.g. a password an outside
    /// service already uses). Tasks started from then on get it.
    Set { name: torc_types::SecretName },
}

/// `torc secret ...`.
pub fn secret(args: SecretArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let rt = runtime()?;
    match args.action {
        SecretAction::List => {
            let names = rt.block_on(client.secrets())?;
            if args.target.json {
                return print_json(&names);
            }
            for n in names {
                println!("{n}");
            }
        }
        SecretAction::Get { name } => {
            println!("{}", rt.block_on(client.secret(&name))?);
        }
        SecretAction::Set { name } => {
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)?;
            let value = value.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!value.is_empty(), "no value on standard input");
            rt.block_on(client.set_secret(&name, value))?;
            println!("set {name}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct CaArgs {
    #[command(subcommand)]
    action: CaAction,
}

#[derive(clap::Subcommand)]
enum CaAction {
    /// Create a rack CA in DIR (0700): `ca.pem` for every party, `ca.key` for the controller.
    Init {
        dir: PathBuf,
        /// The rack's name, in the CA's name.
        #[arg(long, default_value = "torc")]
        rack: String,
    },
    /// Issue a certificate and key from the CA in DIR (for a server torc does not start
    /// itself, e.g. an etcd of your own): writes OUT.crt and OUT.key (0600).
    Issue {
        dir: PathBuf,
        /// Where to write: OUT.crt and OUT.key.
        #[arg(long)]
        out: PathBuf,
        /// DNS names it is valid for.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses it is valid for.
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// Days it is valid.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

/// `torc ca ...`: no controller needed.
pub fn ca(args: CaArgs) -> anyhow::Result<()> {
    match args.action {
        CaAction::Init { dir, rack } => {
            torc_tls::pki::Ca::create(&dir, &rack)?;
            println!(
                "rack CA created in {}: give `--ca-dir {}` to the controller and `--ca {}` to agents and clients",
                dir.display(),
                dir.display(),
                dir.join("ca.pem").display()
            );
        }
        CaAction::Issue {
            dir,
            out,
            dns,
            ips,
            days,
        } => {
            anyhow::ensure!(
                !dns.is_empty() || !ips.is_empty(),
                "give at least one --dns NAME or --ip ADDRESS"
            );
            let ca = torc_tls::pki::Ca::load(&dir)?;
            let issued = ca.issue(&torc_tls::pki::CertRequest {
                common_name: dns.first().cloned().unwrap_or_else(|| ips[0].to_string()),
                dns_names: dns,
                ips,
                validity: Duration::from_secs(days * 24 * 3600),
            })?;
            let crt = out.with_extension("crt");
            let key = out.with_extension("key");
            torc_tls::files::write_file(&crt, issued.cert_pem.as_bytes(), 0o644)?;
            torc_tls::files::write_secret(&key, issued.key_pem.as_deref().unwrap_or_default())?;
            println!("wrote {} and {}", crt.display(), key.display());
        }
    }
    Ok(())
}
