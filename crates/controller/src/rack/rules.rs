//! The runner of the rack's rule cases: text files of events in and decisions out, run against
//! the pure `Rack` with time injected (`at=`) and task ids counted. The format is documented
//! next to the cases, in `crates/controller/tests/rules/README.md`.
//!
//! Every file runs twice, over each real store (design §13 item 2): redb (a file per rack) and
//! a real etcd (one member for the run, a prefix per rack, the store leading). Each step's
//! changes are committed through the store under its epoch (a refusal shows in the output),
//! and `restart` builds the rack from the store's `load`; both runs must give the same outputs.
//!
//! `TORC_BLESS=1 cargo test -p torc-controller rules` rewrites every expected output with
//! what the rack does now; review the diff before committing it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;

use axum::http::StatusCode;

use torc_api::original::OriginalTask;
use torc_api::{FrameworkRegistration, RegisterRequest, RuntimeInfo, StatusReport, TaskReport};
use torc_cases::{Args, Case};
use torc_config::RackConfig;
use torc_types::{FrameworkName, NodeName, Resources, ServiceName, TaskId, TaskSpec, TaskState};

use super::{HealthCheck, ProbeFailure, Rack, RackError};
use crate::settings::{Probe, RackSettings};
use crate::store::etcd::tests::RealEtcd;
use crate::store::layout::Layout;
use crate::store::{EtcdOptions, Loaded, RedbStore, Store};

/// Why a case cannot run as written (an unknown command, a missing argument, ...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadCase(String);

impl From<String> for BadCase {
    fn from(s: String) -> BadCase {
        BadCase(s)
    }
}

impl From<&str> for BadCase {
    fn from(s: &str) -> BadCase {
        BadCase(s.to_string())
    }
}

/// Why an event did not go through: the rack refused it, or the case is written wrong.
enum Refused {
    Rack(RackError),
    Case(BadCase),
}

impl From<RackError> for Refused {
    fn from(e: RackError) -> Refused {
        Refused::Rack(e)
    }
}

/// `web.000000000001` is shown as `web.1`.
fn short(id: &TaskId) -> String {
    match id.as_str().rsplit_once('.') {
        Some((name, hex)) => format!("{name}.{}", hex.trim_start_matches('0')),
        None => id.to_string(),
    }
}

/// Every task id in `text` (a `.` and 12 hex digits) shown short, in messages too.
fn shorten_ids(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 13)
            .is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit));
        let ends = b.get(i + 13).is_none_or(|c| !c.is_ascii_alphanumeric());
        if b[i] == b'.' && hex && ends {
            let digits = &text[i + 1..i + 13];
            out.push('.');
            out.push_str(digits.trim_start_matches('0'));
            i += 13;
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `web.1` names `web.000000000001`.
fn long(id: &str) -> Result<TaskId, BadCase> {
    let (name, n) = id
        .rsplit_once('.')
        .ok_or_else(|| format!("{id:?}: a task is named like web.1"))?;
    let n =
        u64::from_str_radix(n, 16).map_err(|_| format!("{id:?}: a task is named like web.1"))?;
    TaskId::new(format!("{name}.{n:012x}")).map_err(|e| BadCase(e.to_string()))
}

fn name<T: std::str::FromStr>(text: &str) -> Result<T, BadCase>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| BadCase(format!("{text:?}: {e}")))
}

/// `going (1 moved, 2 to move, moving web: web.1 -> web.4 (staging on b2))`, `done at 9000
/// (2 moved, left [...])`: a node's drain in one field.
fn drain_text(d: &torc_api::DrainView) -> String {
    let state = match (d.done_at, &d.stopped) {
        (None, _) => "going".to_string(),
        (Some(at), None) => format!("done at {at}"),
        (Some(at), Some(why)) => format!("stopped at {at} ({why})"),
    };
    let mut parts = vec![
        format!("{} moved", d.moved),
        format!("{} to move", d.to_move),
    ];
    parts.extend(d.moving.as_ref().map(|m| format!("moving {m}")));
    parts.extend(d.waiting.as_ref().map(|w| format!("waits {w:?}")));
    if !d.left.is_empty() {
        parts.push(format!("left {:?}", d.left));
    }
    format!("{state} ({})", parts.join(", "))
}

fn opt(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn quoted(v: Option<&String>) -> String {
    v.map_or_else(|| "-".to_string(), |m| format!("{m:?}"))
}

/// What the runner shows of the rack, per object: its fields, in order.
type Fields = Vec<(&'static str, String)>;

/// The rack as the runner observes it, to show what an event changed.
#[derive(Default)]
struct Seen {
    objects: BTreeMap<(u8, &'static str, String), Fields>,
}

impl Seen {
    fn of(rack: &Rack) -> Seen {
        let mut objects = BTreeMap::new();
        for n in rack.node_views() {
            objects.insert(
                (0, "node", n.name.to_string()),
                vec![
                    ("active", if n.active { "yes" } else { "no" }.to_string()),
                    ("tasks", n.tasks.to_string()),
                    ("cordoned", if n.cordoned { "yes" } else { "-" }.to_string()),
                    ("drain", opt(n.drain.as_ref().map(drain_text))),
                ],
            );
        }
        for t in rack.tasks(&Default::default()) {
            let mut fields = vec![("state", t.state.to_string())];
            if t.framework.as_str() != torc_types::BUILTIN_FRAMEWORK {
                fields.push(("framework", t.framework.to_string()));
            }
            fields.push(("node", opt(t.node.as_ref())));
            if t.spec.network == torc_types::TaskNetwork::Rack {
                fields.push(("rack ip", opt(t.ip.as_ref())));
            }
            if !t.ports.is_empty() {
                let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
                fields.push(("ports", ports.join(",")));
            }
            fields.push(("exit", opt(t.exit_code)));
            fields.push(("message", quoted(t.message.as_ref())));
            objects.insert((1, "task", short(&t.id)), fields);
        }
        for s in rack.services() {
            let failure = s
                .last_failure
                .as_ref()
                .map(|f| format!("{:?} at {}", f.message, f.at));
            let health = match &s.health.message {
                Some(m) => format!("{} ({m:?})", s.health.state),
                None => s.health.state.clone(),
            };
            objects.insert(
                (2, "service", s.name.to_string()),
                vec![
                    ("task", opt(s.task.as_ref().map(short))),
                    ("state", opt(s.state)),
                    ("restarts", s.restarts.to_string()),
                    ("next start", opt(s.next_start_at)),
                    ("waiting", quoted(s.waiting.as_ref())),
                    ("last failure", opt(failure)),
                    ("health", health),
                ],
            );
        }
        for r in rack.status().rollouts {
            objects.insert(
                (5, "rollout", r.service.to_string()),
                vec![
                    ("step", format!("{}/{}", r.step, r.of)),
                    ("state", r.state),
                    ("replacing", opt(r.instance.as_ref())),
                    ("message", quoted(r.message.as_ref())),
                ],
            );
        }
        for f in rack.frameworks().into_iter().filter(|f| !f.builtin) {
            objects.insert(
                (3, "framework", f.name.to_string()),
                vec![
                    ("active", if f.active { "yes" } else { "no" }.to_string()),
                    ("message", quoted(f.message.as_ref())),
                ],
            );
        }
        for a in rack.announced() {
            objects.insert(
                (4, "announced", a.name.clone()),
                vec![("by", a.controller.clone()), ("ip", a.ip.clone())],
            );
        }
        Seen { objects }
    }

    /// `+` new objects (fields that are not `-`), `~` changed fields, `-` gone objects.
    fn diff(&self, after: &Seen, out: &mut String) {
        for (key, fields) in &after.objects {
            let (_, kind, name) = key;
            match self.objects.get(key) {
                None => {
                    let shown: Vec<String> = fields
                        .iter()
                        .filter(|(_, v)| v != "-")
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect();
                    let _ = writeln!(out, "+ {kind} {name}: {}", shown.join(", "));
                }
                Some(old) if old != fields => {
                    let get = |fs: &Fields, k: &str| {
                        fs.iter()
                            .find(|(name, _)| *name == k)
                            .map_or_else(|| "-".to_string(), |(_, v)| v.clone())
                    };
                    // Fields in the order the new view has them, then any it dropped.
                    let mut names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
                    let dropped: Vec<&str> = old
                        .iter()
                        .map(|(k, _)| *k)
                        .filter(|k| !names.contains(k))
                        .collect();
                    names.extend(dropped);
                    let changed: Vec<String> = names
                        .into_iter()
                        .filter_map(|k| {
                            let (was, new) = (get(old, k), get(fields, k));
                            (was != new).then(|| format!("{k} {was} -> {new}"))
                        })
                        .collect();
                    let _ = writeln!(out, "~ {kind} {name}: {}", changed.join(", "));
                }
                Some(_) => {}
            }
        }
        for (_, kind, name) in self
            .objects
            .keys()
            .filter(|k| !after.objects.contains_key(k))
        {
            let _ = writeln!(out, "- {kind} {name}");
        }
    }
}

/// Opens a fresh store for a case file's rack (each `config`): redb in a file, or etcd under a
/// prefix of its own.
type OpenStore = Rc<dyn Fn() -> Box<dyn Store>>;

/// A case file's state: the rack, the store behind it (every step's changes committed to it,
/// and `restart` loading from it, as the controller does), the clock.
struct Runner {
    rack: Option<Rack>,
    settings: Option<RackSettings>,
    open: OpenStore,
    store: Option<Box<dyn Store>>,
    now: u64,
    epoch: u64,
    /// The last feed event shown.
    feed_seen: u64,
    /// The health checks `health-due` started, by service, for `health` to report on.
    checks: BTreeMap<ServiceName, HealthCheck>,
}

impl Runner {
    fn new(open: OpenStore) -> Runner {
        Runner {
            rack: None,
            settings: None,
            open,
            store: None,
            now: 0,
            epoch: 0,
            feed_seen: 0,
            checks: BTreeMap::new(),
        }
    }

    fn store(&self) -> Result<&dyn Store, BadCase> {
        self.store
            .as_deref()
            .ok_or_else(|| BadCase("no rack yet: start with `config`".into()))
    }
}

/// What a TCP probe of `check` finds when it fails: `why` is `refused` (the default) or
/// `timeout`.
fn probe_failure(check: &HealthCheck, why: Option<&String>) -> Result<ProbeFailure, BadCase> {
    let Probe::Tcp(addr) = &check.probe else {
        return Err("the runner fails TCP probes only".into());
    };
    let addr = torc_types::expand_placeholders(addr, check.ip, &check.ports);
    match why.map_or("refused", String::as_str) {
        "refused" => Ok(ProbeFailure::Connect {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        }),
        "timeout" => Ok(ProbeFailure::ConnectTimeout {
            addr,
            timeout_ms: check.timeout_ms,
        }),
        other => Err(BadCase(format!("why={other}: refused or timeout"))),
    }
}

fn settings(yaml: &str) -> Result<RackSettings, BadCase> {
    let config = RackConfig::parse(yaml, "rack.yaml").map_err(|e| e.to_string())?;
    Ok(RackSettings::from_config(&config, "rack.yaml"))
}

/// A refusal as the cases show it: its kind (from the status the API answers) and message.
fn rack_error(e: RackError) -> String {
    let status = e.status();
    let kind = match status {
        StatusCode::NOT_FOUND => "not found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => status.as_str(),
    };
    format!("error ({kind}): {e}\n")
}

impl Runner {
    fn rack(&mut self) -> Result<&mut Rack, BadCase> {
        self.rack
            .as_mut()
            .ok_or_else(|| BadCase("no rack yet: start with `config`".into()))
    }

    /// Runs one case; its output (never empty, no blank line).
    fn run(&mut self, case: &Case) -> String {
        let mut out = match self.step(case) {
            Ok(out) => out,
            Err(e) => format!("bad case: {e}\n"),
        };
        if out.is_empty() {
            out.push_str("ok\n");
        }
        shorten_ids(&out)
    }

    fn step(&mut self, case: &Case) -> Result<String, BadCase> {
        let (command, args) = Args::parse(&case.command)?;
        if let Some(at) = args.num("at")? {
            self.now = at;
        }
        let now = self.now;
        // Queries show what they ask for; events show what they changed.
        let mut out = String::new();
        match command.as_str() {
            "config" => {
                self.epoch += 1;
                let mut s = settings(&case.input)?;
                if let Some(n) = args.num("tasks_per_step")? {
                    s.tasks_per_step = n as usize;
                }
                self.settings = Some(s.clone());
                // The last rack's store goes first (redb: one writer per file).
                self.store = None;
                self.store = Some((self.open)());
                self.rack = Some(Rack::for_tests(s, Loaded::default(), now, self.epoch));
                Seen::default().diff(&Seen::of(self.rack()?), &mut out);
                self.feed_seen = 0;
                return Ok(out);
            }
            "restart" => {
                self.epoch += 1;
                if !case.input.trim().is_empty() {
                    let kept = self.settings.as_ref().map(|s| s.tasks_per_step);
                    let mut s = settings(&case.input)?;
                    s.tasks_per_step = kept.unwrap_or(s.tasks_per_step);
                    self.settings = Some(s);
                }
                let s = self
                    .settings
                    .clone()
                    .ok_or("no rack yet: start with `config`")?;
                let before = Seen::of(self.rack()?);
                let loaded = self
                    .store()?
                    .load()
                    .map_err(|e| format!("loading the store: {e}"))?;
                let rack = Rack::for_tests(s, loaded, now, self.epoch);
                self.rack = Some(rack);
                self.feed_seen = 0;
                return Ok(self.settle(before, Ok(()), out));
            }
            "apply" => {
                // A new config's services, as `torc apply` gives them; a later `restart`
                // reads them too (the controller's file is the applied config).
                let new = settings(&case.input)?;
                let before = Seen::of(self.rack()?);
                if let Some(s) = &mut self.settings {
                    s.system_services = new.system_services.clone();
                    s.groups = new.groups.clone();
                }
                let summary = "rack config applied".to_string();
                (self.rack()?).apply_services(new.system_services, new.groups, summary, now);
                return Ok(self.settle(before, Ok(()), out));
            }
            "tasks" | "services" | "nodes" => {
                let all = Seen::of(self.rack()?);
                let kind = &command[..command.len() - 1];
                let mut lines = String::new();
                Seen::default().diff(&all, &mut lines);
                for l in lines
                    .lines()
                    .filter(|l| l.starts_with(&format!("+ {kind} ")))
                {
                    let _ = writeln!(out, "{}", &l[2..]);
                }
                return Ok(out);
            }
            "dns" => return Ok(dns(self.rack()?)),
            "routes" => {
                for r in self.rack()?.rack_routes() {
                    let _ = writeln!(
                        out,
                        "{}/32 via {} ({}) for {}",
                        r.destination,
                        r.next_hop,
                        r.node,
                        short(&r.task)
                    );
                }
                return Ok(out);
            }
            "desired" => {
                let node: NodeName = name(args.word(0, "a node")?)?;
                return Ok(match self.rack()?.desired(&node) {
                    Ok(d) => {
                        let _ = writeln!(out, "generation {}", d.generation);
                        for t in d.tasks {
                            let what = if t.launch { "launch" } else { "keep" };
                            let _ = match t.rack_address {
                                Some(a) => writeln!(
                                    out,
                                    "{what} {} at {} in {}",
                                    short(&t.id),
                                    a.ip,
                                    a.block
                                ),
                                None => writeln!(out, "{what} {}", short(&t.id)),
                            };
                        }
                        out
                    }
                    Err(e) => rack_error(e),
                });
            }
            "events" => {
                let fw: FrameworkName = name(args.word(0, "a framework")?)?;
                let epoch = args.num("epoch")?.unwrap_or(self.epoch);
                let after = args.num("after")?.unwrap_or(0);
                let ev = self.rack()?.framework_events(&fw, epoch, after);
                let ids: Vec<String> = ev.tasks.iter().map(|t| short(&t.id)).collect();
                let what = if ev.reset { "reset" } else { "updates" };
                let _ = writeln!(
                    out,
                    "epoch {} seq {}: {what} [{}]",
                    ev.epoch,
                    ev.seq,
                    ids.join(", ")
                );
                return Ok(out);
            }
            "running" => {
                let metered = args.words.first().is_some_and(|w| w == "metered");
                for t in self.rack()?.original_running(metered) {
                    let _ = writeln!(
                        out,
                        "{} by {} on {:?} ip {:?} network {} system {} job {}",
                        t.name,
                        t.controller,
                        t.node_name,
                        t.ip,
                        t.network_type,
                        t.is_system_service,
                        t.is_job
                    );
                }
                return Ok(out);
            }
            _ => {}
        }
        let before = Seen::of(self.rack()?);
        let result = match self.event(&command, &args, now, &mut out) {
            Ok(()) => Ok(()),
            Err(Refused::Rack(e)) => Err(e),
            Err(Refused::Case(e)) => return Err(e),
        };
        Ok(self.settle(before, result, out))
    }

    /// An event's effects: its error, what changed, the agents woken, the feed's new lines.
    fn settle(&mut self, before: Seen, result: Result<(), RackError>, mut out: String) -> String {
        if let Err(e) = result {
            out.insert_str(0, &rack_error(e));
        }
        let rack = self.rack.as_mut().expect("a rack");
        let changes = rack.take_changes();
        let store = self.store.as_deref().expect("a rack has a store");
        if let Err(e) = store.commit(store.epoch(), &changes.writes) {
            let _ = writeln!(out, "store refused the step's changes: {e}");
        }
        before.diff(&Seen::of(rack), &mut out);
        for (node, generation) in changes.wake {
            let _ = writeln!(out, "wake {node} (generation {generation})");
        }
        for e in rack.feed(self.feed_seen) {
            self.feed_seen = e.seq;
            let _ = writeln!(out, "feed [{}] {}", e.level, e.message);
        }
        out
    }

    fn event(
        &mut self,
        command: &str,
        args: &Args,
        now: u64,
        out: &mut String,
    ) -> Result<(), Refused> {
        fn bad(e: impl Into<BadCase>) -> Refused {
            Refused::Case(e.into())
        }
        let rack = self.rack.as_mut().expect("a rack");
        match command {
            "register" => {
                let node: NodeName = name(args.word(0, "a node").map_err(bad)?).map_err(bad)?;
                let ip = match args.keys.get("ip") {
                    Some(ip) => name(ip).map_err(bad)?,
                    None => rack
                        .node_view(&node)
                        .map(|n| n.ip)
                        .map_err(|_| bad(BadCase(format!("{node} is not configured: give ip="))))?,
                };
                let tasks = match args.keys.get("running") {
                    Some(list) => list
                        .split(',')
                        .map(|id| {
                            Ok(TaskReport {
                                id: long(id)?,
                                state: TaskState::Running,
                                exit_code: None,
                                message: None,
                                at: now,
                            })
                        })
                        .collect::<Result<Vec<_>, BadCase>>()
                        .map_err(bad)?,
                    None => Vec::new(),
                };
                let req = RegisterRequest {
                    node,
                    ip,
                    agent_url: format!("http://{ip}:5051"),
                    node_type: match args.keys.get("type") {
                        Some(t) => Some(name(t).map_err(bad)?),
                        None => None,
                    },
                    node_function: None,
                    resources: Resources::new(
                        args.float("cpus", 2.0).map_err(bad)?,
                        args.float("mem", 1024.0).map_err(bad)?,
                        1000.0,
                    ),
                    port_range: "31000-31009".parse().expect("a range"),
                    attributes: BTreeMap::new(),
                    runtime: {
                        // `yes`, or why not; left out: the agent does not say.
                        let said = |key: &str| match args.keys.get(key).map(String::as_str) {
                            None => (false, None),
                            Some("yes") => (true, None),
                            Some(note) => (false, Some(note.to_string())),
                        };
                        let (rack_network, rack_network_note) = said("rack_network");
                        let (containers, containers_note) = said("containers");
                        RuntimeInfo {
                            rack_network,
                            rack_network_note,
                            containers,
                            containers_note,
                            ..RuntimeInfo::default()
                        }
                    },
                    tasks,
                    public_key: None,
                };
                rack.register(req, now).map(|_| ()).map_err(Refused::Rack)
            }
            "report" => {
                let node: NodeName = name(args.word(0, "a node").map_err(bad)?).map_err(bad)?;
                let mut tasks = Vec::new();
                for (id, state) in &args.keys {
                    if id == "at" || id == "message" {
                        continue;
                    }
                    let (state, exit) = match state.split_once(':') {
                        Some((s, code)) => (s, Some(name::<i32>(code).map_err(bad)?)),
                        None => (state.as_str(), None),
                    };
                    tasks.push(TaskReport {
                        id: long(id).map_err(bad)?,
                        state: name(state).map_err(bad)?,
                        exit_code: exit,
                        message: args.keys.get("message").cloned(),
                        at: now,
                    });
                }
                let full = args.words.iter().any(|w| w == "full");
                rack.report(
                    &node,
                    StatusReport {
                        tasks,
                        full,
                        disk: None,
                    },
                    now,
                )
                .map_err(Refused::Rack)
            }
            "tick" => {
                rack.tick(now);
                Ok(())
            }
            "calico-shutdown" => {
                rack.shut_down_network(now);
                Ok(())
            }
            "cordon" | "uncordon" | "drain" => {
                let node: NodeName = name(args.word(0, "a node").map_err(bad)?).map_err(bad)?;
                match command {
                    "cordon" => rack.cordon(&node, now),
                    "uncordon" => rack.uncordon(&node, now),
                    _ => rack.drain(&node, now),
                }
                .map(drop)
                .map_err(Refused::Rack)
            }
            "calico-configure" => {
                rack.configure_network(now);
                Ok(())
            }
            "launch" | "framework-launch" => {
                let (framework, task) = if command == "launch" {
                    let fw = FrameworkName::new(torc_types::BUILTIN_FRAMEWORK).expect("valid");
                    (fw, args.word(0, "a task name").map_err(bad)?)
                } else {
                    let fw = name(args.word(0, "a framework").map_err(bad)?).map_err(bad)?;
                    (fw, args.word(1, "a task name").map_err(bad)?)
                };
                let mut spec = TaskSpec::new(name(task).map_err(bad)?, "sleep");
                spec.resources = Resources::new(
                    args.float("cpus", 0.1).map_err(bad)?,
                    args.float("mem", 64.0).map_err(bad)?,
                    0.0,
                );
                spec.ports = args.num("ports").map_err(bad)?.unwrap_or(0) as u16;
                if let Some(n) = args.keys.get("node") {
                    spec.constraints.node_name = Some(name(n).map_err(bad)?);
                }
                if let Some(network) = args.keys.get("network") {
                    spec.network = name(network).map_err(bad)?;
                }
                if let Some(image) = args.keys.get("image") {
                    let image: torc_types::ImageRef = name(image).map_err(bad)?;
                    spec.container = Some(torc_types::ContainerSpec::new(image));
                }
                let id = if command == "launch" {
                    rack.launch(spec, framework, now)?
                } else {
                    rack.framework_launch(&framework, spec, now)?
                };
                let _ = writeln!(out, "launched {}", short(&id));
                Ok(())
            }
            "kill" => {
                let id = long(args.word(0, "a task").map_err(bad)?).map_err(bad)?;
                rack.kill(&id, now).map_err(Refused::Rack)
            }
            "framework-kill" => {
                let fw: FrameworkName =
                    name(args.word(0, "a framework").map_err(bad)?).map_err(bad)?;
                let id = long(args.word(1, "a task").map_err(bad)?).map_err(bad)?;
                rack.framework_kill(&fw, &id, now).map_err(Refused::Rack)
            }
            "start-group" | "stop-group" => {
                let group: ServiceName =
                    name(args.word(0, "a group").map_err(bad)?).map_err(bad)?;
                let names = if command == "start-group" {
                    rack.start_group(&group, now)?
                } else {
                    rack.stop_group(&group, now)?
                };
                let names: Vec<String> = names.iter().map(ToString::to_string).collect();
                let _ = writeln!(out, "instances [{}]", names.join(", "));
                Ok(())
            }
            "delete" => {
                let what = rack.delete_service(args.word(0, "a name").map_err(bad)?, now)?;
                let _ = writeln!(out, "{what}");
                Ok(())
            }
            "health-due" => {
                for c in rack.due_health_checks(now) {
                    rack.health_check_started(&c.service, now);
                    let _ = writeln!(out, "check {} (task {})", c.service, short(&c.task));
                    self.checks.insert(c.service.clone(), c);
                }
                Ok(())
            }
            "health" => {
                let service: ServiceName =
                    name(args.word(0, "a service").map_err(bad)?).map_err(bad)?;
                let check = self.checks.remove(&service).ok_or_else(|| {
                    bad(BadCase(format!(
                        "no check of {service} is running: `health-due` starts them"
                    )))
                })?;
                let result = match args.word(1, "ok or fail").map_err(bad)? {
                    "ok" => Ok(()),
                    "fail" => Err(probe_failure(&check, args.keys.get("why")).map_err(bad)?),
                    other => return Err(bad(BadCase(format!("{other:?}: ok or fail")))),
                };
                rack.record_health(&service, &check.task, result, now);
                Ok(())
            }
            "framework-register" => {
                let fw: FrameworkName =
                    name(args.word(0, "a framework").map_err(bad)?).map_err(bad)?;
                let reg = FrameworkRegistration {
                    name: fw,
                    failover_timeout_ms: args.num("timeout").map_err(bad)?,
                    api_url: None,
                };
                let got = rack.register_framework(reg, now)?;
                let ids: Vec<String> = got.tasks.iter().map(|t| short(&t.id)).collect();
                let _ = writeln!(out, "registered, tasks [{}]", ids.join(", "));
                Ok(())
            }
            "framework-poll" => {
                let fw = name(args.word(0, "a framework").map_err(bad)?).map_err(bad)?;
                rack.framework_seen(&fw, now).map_err(Refused::Rack)
            }
            "framework-unregister" => {
                let fw = name(args.word(0, "a framework").map_err(bad)?).map_err(bad)?;
                rack.unregister_framework(&fw, now).map_err(Refused::Rack)
            }
            "announce" => {
                // The body a sub-scheduler posts: the rest takes the original's defaults.
                let body = serde_json::json!({
                    "name": args.word(0, "a name").map_err(bad)?,
                    "controller": args.keys.get("by").cloned().unwrap_or_default(),
                    "ip": args.keys.get("ip").cloned().unwrap_or_default(),
                });
                let task: OriginalTask =
                    serde_json::from_value(body).map_err(|e| bad(BadCase(e.to_string())))?;
                rack.announce(task, now).map_err(Refused::Rack)
            }
            other => Err(bad(BadCase(format!("unknown command {other:?}")))),
        }
    }
}

/// The DNS snapshot's content, one line per name.
fn dns(rack: &Rack) -> String {
    let snap = rack.dns_snapshot();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nodes in {} (ttl {}), nameserver {}",
        snap.node_domain,
        snap.node_ttl,
        opt(snap.nameserver_ip)
    );
    for n in &snap.nodes {
        let _ = writeln!(out, "  {} {}", n.name, n.ip);
    }
    let _ = writeln!(out, "services in {}", snap.service_domain);
    for s in &snap.services {
        let instances: Vec<String> = s
            .instances
            .iter()
            .map(|i| {
                let target = i
                    .target
                    .strip_suffix(&format!(".{}", snap.service_domain))
                    .unwrap_or(&i.target);
                format!("{target} {}:{}", i.ip, i.port)
            })
            .collect();
        let _ = writeln!(
            out,
            "  {} (ttl {}): {}",
            s.name,
            s.ttl,
            instances.join(", ")
        );
    }
    out
}

/// Runs every case file (one rack per file) over `open`'s stores; with `TORC_BLESS=1`,
/// rewrites the expected outputs instead of failing.
fn run_rules(open: OpenStore) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules");
    torc_cases::run_dir(
        &dir,
        "rules",
        || Runner::new(Rc::clone(&open)),
        |runner, case| Ok(runner.run(case)),
    );
}

/// Every case file over redb (a file per rack).
#[test]
fn the_racks_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let files = Cell::new(0);
    run_rules(Rc::new(move || {
        files.set(files.get() + 1);
        let file = path.join(format!("rack-{}.redb", files.get()));
        Box::new(RedbStore::open(&file).expect("a redb store opens"))
    }));
}

/// The same case files over one real etcd (a prefix per rack), the same outputs
/// (design §13 item 2).
#[test]
fn the_racks_rules_over_etcd() {
    let etcd = Rc::new(RealEtcd::start());
    let racks = Cell::new(0);
    let opener = Rc::clone(&etcd);
    run_rules(Rc::new(move || {
        racks.set(racks.get() + 1);
        let layout = Layout::new(&format!("/torc-rules/rack-{}/", racks.get())).unwrap();
        let options = EtcdOptions::new(opener.cluster.endpoints(), layout);
        Box::new(opener.open_with(options).expect("an etcd store opens"))
    }));
}
