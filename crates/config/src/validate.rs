//! The rules a parsed config must keep beyond its schema. Each broken rule is reported with
//! the key path of the offending value; the caller turns the path into a line.

use std::collections::{BTreeMap, BTreeSet};

use std::net::IpAddr;

use torc_types::{ContainerSpecError, Ipv4Block, TaskNetwork, TaskSpecError};

use crate::error::Rule;
use crate::path::KeyPath;
use crate::rack::RackConfig;
use crate::service::{HealthProbe, ServiceConfig};

/// A broken rule, and where.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) path: KeyPath,
    pub(crate) rule: Rule,
}

type Check = Result<(), Problem>;

fn fail(path: KeyPath, rule: impl Into<Rule>) -> Check {
    Err(Problem {
        path,
        rule: rule.into(),
    })
}

/// The `alerts` section: rule names unique and label-like, thresholds finite and not negative,
/// windows and counts at least 1, webhooks http(s) URLs.
fn check_alerts(config: &RackConfig) -> Check {
    use crate::alerts::AlertCondition;
    let path = KeyPath::root().key("alerts");
    if config.alerts.evaluation_interval_in_seconds == 0 {
        fail(path.key("evaluation_interval_in_seconds"), Rule::AtLeastOne)?;
    }
    for (i, url) in config.alerts.webhooks.iter().enumerate() {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            fail(path.key("webhooks").index(i), Rule::WebhookUrl(url.clone()))?;
        }
    }
    let mut names = BTreeMap::new();
    for (i, rule) in config.alerts.rules.iter().enumerate() {
        let rule_path = path.key("rules").index(i);
        check_label(rule_path.key("name"), &rule.name)?;
        if let Some(first) = names.insert(rule.name.as_str(), rule_path.clone()) {
            fail(
                rule_path.key("name"),
                Rule::DuplicateAlert {
                    name: rule.name.clone(),
                    first: first.to_string(),
                },
            )?;
        }
        let when = rule_path.key("when");
        let threshold = |path: KeyPath, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                fail(path, Rule::Threshold(v))
            }
        };
        match &rule.when {
            AlertCondition::NodeLost => {}
            AlertCondition::CrashLoop {
                restarts,
                within_seconds,
            } => {
                let path = when.key("crash_loop");
                if *restarts == 0 {
                    fail(path.key("restarts"), Rule::AtLeastOne)?;
                }
                if *within_seconds == 0 {
                    fail(path.key("within_seconds"), Rule::AtLeastOne)?;
                }
            }
            AlertCondition::Metric { above, .. } => {
                threshold(when.key("metric").key("above"), *above)?
            }
            AlertCondition::DiskUsedPercentAbove(p) => {
                threshold(when.key("disk_used_percent_above"), *p)?
            }
        }
    }
    Ok(())
}

/// Checks `config`, stopping at the first problem (in file order, roughly).
pub(crate) fn validate(config: &RackConfig) -> Check {
    let root = KeyPath::root();
    check_label(root.key("name"), &config.name)?;
    check_domain(root.key("domain"), &config.domain)?;
    check_domain(root.key("service_domain"), &config.service_domain)?;
    if let Some(power) = &config.power_command {
        let path = root.key("power_command");
        let status = power.status.as_ref().map(|argv| ("status", argv));
        for (key, argv) in [("on", &power.on), ("off", &power.off)]
            .into_iter()
            .chain(status)
        {
            if argv.first().is_none_or(|program| program.trim().is_empty()) {
                fail(path.key(key), Rule::PowerCommand)?;
            }
        }
    }
    check_timers(config)?;
    check_ttl(root.key("node_ttl_in_seconds"), config.node_ttl_in_seconds)?;
    check_ttl(
        root.key("service_ttl_in_seconds"),
        config.service_ttl_in_seconds,
    )?;
    check_nodes(config)?;
    check_task_blocks(config)?;
    check_dns_addons(config)?;
    check_containers(config)?;
    check_alerts(config)?;
    check_logs(config)?;

    let mut system_names = BTreeMap::new();
    let services = root.key("healthcheck").key("system_services");
    for (i, service) in config.healthcheck.system_services.iter().enumerate() {
        let path = services.index(i);
        check_service(config, &path, service)?;
        if let Some(first) = system_names.insert(service.name.as_str(), path.clone()) {
            fail(
                path.key("name"),
                Rule::DuplicateService {
                    name: service.name.clone(),
                    first: first.to_string(),
                },
            )?;
        }
    }

    let groups = root.key("api").key("service-groups");
    let mut group_names = BTreeMap::new();
    for (g, group) in config.api.service_groups.iter().enumerate() {
        let group_path = groups.index(g);
        if let Some(first) = group_names.insert(group.name.as_str(), group_path.clone()) {
            fail(
                group_path.key("name"),
                Rule::DuplicateGroup {
                    name: group.name.clone(),
                    first: first.to_string(),
                },
            )?;
        }
        let mut names = BTreeMap::new();
        for (s, service) in group.services.iter().enumerate() {
            let path = group_path.key("services").index(s);
            check_service(config, &path, service)?;
            if let Some(first) = names.insert(service.name.as_str(), path.clone()) {
                fail(
                    path.key("name"),
                    Rule::DuplicateService {
                        name: service.name.clone(),
                        first: first.to_string(),
                    },
                )?;
            }
            if let Some(system) = system_names.get(service.name.as_str()) {
                fail(
                    path.key("name"),
                    Rule::ShadowsSystemService {
                        name: service.name.clone(),
                        system: system.to_string(),
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// A name that becomes a DNS label: what `ServiceName` accepts.
fn check_label(path: KeyPath, text: &str) -> Check {
    match torc_types::ServiceName::new(text) {
        Ok(_) => Ok(()),
        Err(err) => fail(
            path,
            Rule::Label {
                text: text.to_string(),
                reason: err.reason,
            },
        ),
    }
}

fn check_domain(path: KeyPath, domain: &str) -> Check {
    if domain.is_empty() || domain.len() > 253 {
        return fail(
            path,
            Rule::Domain {
                domain: domain.to_string(),
            },
        );
    }
    for label in domain.split('.') {
        if let Err(err) = torc_types::ServiceName::new(label) {
            return fail(
                path,
                Rule::DomainLabel {
                    domain: domain.to_string(),
                    label: label.to_string(),
                    reason: err.reason,
                },
            );
        }
    }
    Ok(())
}

/// The longest DNS TTL accepted: a day. Longer ones keep a gone instance's address in caches
/// long after it stopped.
const MAX_TTL: u32 = 86_400;

fn check_ttl(path: KeyPath, ttl: u32) -> Check {
    if ttl > MAX_TTL {
        fail(path, Rule::TtlTooLong { ttl, max: MAX_TTL })
    } else {
        Ok(())
    }
}

fn check_timers(config: &RackConfig) -> Check {
    let root = KeyPath::root();
    let at_least_one = |path: KeyPath, value: u64| -> Check {
        if value == 0 {
            fail(path, Rule::AtLeastOne)
        } else {
            Ok(())
        }
    };
    at_least_one(
        root.key("statesync").key("poll_interval_in_seconds"),
        config.statesync.poll_interval_in_seconds,
    )?;
    let clean = &config.stateclean;
    let path = root.key("stateclean");
    at_least_one(
        path.key("poll_interval_in_seconds"),
        clean.poll_interval_in_seconds,
    )?;
    at_least_one(path.key("timeout_in_seconds"), clean.timeout_in_seconds)?;
    // A zero delay would restart a crashing service in a tight loop, and a back-off that
    // doubles zero never grows.
    at_least_one(
        path.key("restart_delay_in_seconds"),
        clean.restart_delay_in_seconds,
    )?;
    if clean.max_restart_delay_in_seconds < clean.restart_delay_in_seconds {
        fail(
            path.key("max_restart_delay_in_seconds"),
            Rule::MaxRestartDelayBelowDelay {
                max: clean.max_restart_delay_in_seconds,
                delay: clean.restart_delay_in_seconds,
            },
        )?;
    }
    at_least_one(
        root.key("healthcheck").key("poll_interval_in_seconds"),
        config.healthcheck.poll_interval_in_seconds,
    )
}

fn check_nodes(config: &RackConfig) -> Check {
    let nodes = KeyPath::root().key("nodes");
    if config.nodes.is_empty() && !config.open_join {
        return fail(nodes, Rule::NoNodes);
    }
    let mut names = BTreeMap::new();
    let mut ips = BTreeMap::new();
    for (i, node) in config.nodes.iter().enumerate() {
        let path = nodes.index(i);
        if let Some(first) = names.insert(node.name.as_str(), path.clone()) {
            fail(
                path.key("name"),
                Rule::DuplicateNodeName {
                    name: node.name.to_string(),
                    first: first.to_string(),
                },
            )?;
        }
        if let Some(first) = ips.insert(node.ip, path.clone()) {
            fail(
                path.key("ip"),
                Rule::DuplicateNodeIp {
                    ip: node.ip,
                    first: first.to_string(),
                },
            )?;
        }
        if let Some(resources) = &node.resources
            && !resources.is_valid()
        {
            fail(
                path.key("resources"),
                Rule::NodeResources {
                    resources: *resources,
                },
            )?;
        }
    }
    Ok(())
}

/// Task blocks are routed by the switch as a whole, so they must not overlap each other or
/// hold a node's own address; each must leave room for the gateway and a task.
fn check_task_blocks(config: &RackConfig) -> Check {
    let nodes = KeyPath::root().key("nodes");
    let blocks: Vec<(usize, &str, Ipv4Block)> = (config.nodes.iter().enumerate())
        .filter_map(|(i, n)| n.task_block.map(|b| (i, n.name.as_str(), b)))
        .collect();
    let mut endpoints = BTreeMap::new();
    for (i, node) in config.nodes.iter().enumerate() {
        let path = nodes.index(i);
        if let Some(block) = node.task_block {
            if !(16..=30).contains(&block.prefix_len()) {
                fail(path.key("task_block"), Rule::TaskBlockSize { block })?;
            }
            if let Some((j, name, other)) =
                (blocks.iter()).find(|(j, _, other)| *j < i && other.overlaps(&block))
            {
                fail(
                    path.key("task_block"),
                    Rule::OverlappingTaskBlocks {
                        block,
                        other: *other,
                        node: name.to_string(),
                        first: nodes.index(*j).key("task_block").to_string(),
                    },
                )?;
            }
        }
        if let Some(endpoint) = node.endpoint
            && let Some(first) = endpoints.insert(endpoint, path.clone())
        {
            fail(
                path.key("endpoint"),
                Rule::DuplicateEndpoint {
                    ip: endpoint,
                    first: first.to_string(),
                },
            )?;
        }
        let addresses = [("ip", Some(node.ip)), ("endpoint", node.endpoint)];
        for (key, ip) in addresses {
            let Some(IpAddr::V4(v4)) = ip else { continue };
            if let Some((j, name, block)) = blocks.iter().find(|(_, _, b)| b.contains(v4)) {
                fail(
                    path.key(key),
                    Rule::AddressInTaskBlock {
                        ip: IpAddr::V4(v4),
                        block: *block,
                        node: name.to_string(),
                        first: nodes.index(*j).key("task_block").to_string(),
                    },
                )?;
            }
        }
    }
    Ok(())
}

fn check_dns_addons(config: &RackConfig) -> Check {
    let addons = KeyPath::root().key("dns-addons");
    let mut names = BTreeMap::new();
    for (i, addon) in config.dns_addons.iter().enumerate() {
        let path = addons.index(i);
        if let Some(first) = names.insert(addon.name.as_str(), path.clone()) {
            fail(
                path.key("name"),
                Rule::DuplicateDnsAddon {
                    name: addon.name.to_string(),
                    first: first.to_string(),
                },
            )?;
        }
    }
    Ok(())
}

fn check_service(config: &RackConfig, path: &KeyPath, service: &ServiceConfig) -> Check {
    if service.name.as_str() == config.name {
        fail(
            path.key("name"),
            Rule::ControllerName {
                name: service.name.clone(),
            },
        )?;
    }
    if let Some(ttl) = service.dns_ttl_in_seconds {
        check_ttl(path.key("dns_ttl_in_seconds"), ttl)?;
    }
    match (&service.command, &service.image_name) {
        (Some(command), _) if command.trim().is_empty() => {
            fail(path.key("command"), Rule::Empty)?;
        }
        (None, None) => fail(
            path.clone(),
            Rule::NothingToRun {
                name: service.name.clone(),
            },
        )?,
        _ => {}
    }
    if service.args.is_some() && !service.arguments.trim().is_empty() {
        fail(path.key("args"), Rule::ArgsAndArguments)?;
    }
    for (key, value) in [
        ("memory", service.memory),
        ("cpu", service.cpu),
        ("disk", service.disk),
    ] {
        if !value.is_finite() || value < 0.0 {
            fail(path.key(key), Rule::NotFiniteNonNegative { value })?;
        }
    }
    if service.number_of_instances == 0 {
        fail(path.key("number_of_instances"), Rule::AtLeastOne)?;
    }
    if let Some(node) = &service.node_name
        && !config.open_join
        && config.node(node.as_str()).is_none()
    {
        let known: BTreeSet<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
        fail(
            path.key("node_name"),
            Rule::UnknownNode {
                service: service.name.clone(),
                node: node.to_string(),
                known: known.into_iter().map(str::to_string).collect(),
            },
        )?;
    }
    if let Some(network @ TaskNetwork::Node) = service.network
        && service.network_type_is_rack()
    {
        fail(
            path.key("network"),
            Rule::NetworkConflict {
                network,
                network_type: service.network_type.clone(),
            },
        )?;
    }
    if service.task_network() == TaskNetwork::Rack
        && config.nodes.iter().all(|n| n.task_block.is_none())
    {
        let key = if service.network.is_some() {
            "network"
        } else {
            "network_type"
        };
        fail(
            path.key(key),
            Rule::NoTaskBlock {
                service: service.name.clone(),
            },
        )?;
    }
    if service.restart_delay_in_seconds == Some(0) {
        fail(path.key("restart_delay_in_seconds"), Rule::AtLeastOne)?;
    }
    if let Some(health) = &service.health {
        let path = path.key("health");
        match &health.probe {
            HealthProbe::Tcp(addr) if !addr.contains(':') => {
                fail(path.key("tcp"), Rule::NotHostPort { addr: addr.clone() })?;
            }
            HealthProbe::Http(url)
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                fail(path.key("http"), Rule::NotHttpUrl { url: url.clone() })?;
            }
            HealthProbe::Command(argv)
                if argv.first().is_none_or(|program| program.trim().is_empty()) =>
            {
                fail(path.key("command"), Rule::CommandLine)?;
            }
            _ => {}
        }
        if health.interval_in_seconds == 0 {
            fail(path.key("interval_in_seconds"), Rule::AtLeastOne)?;
        }
        if health.timeout_in_seconds == 0 {
            fail(path.key("timeout_in_seconds"), Rule::AtLeastOne)?;
        }
        if health.failure_threshold == 0 {
            fail(path.key("failure_threshold"), Rule::AtLeastOne)?;
        }
    }
    // The container keys, and what the agent will check when it runs the task, checked
    // here so that a bad config fails at load rather than at start.
    let spec = match service.task_spec() {
        Ok(spec) => spec,
        Err(err) => {
            let (key, index) = err.key();
            let at = match index {
                Some(i) => path.key(key).index(i),
                None => path.key(key),
            };
            return fail(at, Rule::Service(err));
        }
    };
    if let Some(spec) = spec
        && let Err(err) = spec.validate()
    {
        let at = match &err {
            TaskSpecError::EmptyCommand => path.key("command"),
            TaskSpecError::BadEnvKey(key) => path.key("env").key(key),
            TaskSpecError::TooManyPorts(_) => path.key("ports"),
            TaskSpecError::NoNetworkOnRack => path.key("network_type"),
            TaskSpecError::Container(ContainerSpecError::MountedTwice { .. }) => {
                path.key("volumes")
            }
            TaskSpecError::Container(ContainerSpecError::Option(_)) => path.key("parameters"),
            _ => path.clone(),
        };
        fail(at, err)?;
    }
    Ok(())
}

/// Registries are named once each, with both halves of a login or none, and the timers
/// and bounds are at least 1.
fn check_containers(config: &RackConfig) -> Check {
    let path = KeyPath::root().key("containers");
    let containers = &config.containers;
    if containers.pull_timeout_in_seconds == 0 {
        fail(path.key("pull_timeout_in_seconds"), Rule::AtLeastOne)?;
    }
    if containers.import_max_mb == 0 {
        fail(path.key("import_max_mb"), Rule::AtLeastOne)?;
    }
    let mut hosts = BTreeMap::new();
    for (i, registry) in containers.registries.iter().enumerate() {
        let at = path.key("registries").index(i);
        if let Some(first) = hosts.insert(registry.host.as_str(), at.clone()) {
            fail(
                at.key("host"),
                Rule::DuplicateRegistry {
                    host: registry.host.to_string(),
                    first: first.to_string(),
                },
            )?;
        }
        match (&registry.user, &registry.password_secret) {
            (Some(user), _) if user.trim().is_empty() => fail(at.key("user"), Rule::Empty)?,
            (Some(_), None) => fail(at.key("password_secret"), Rule::RegistryLogin)?,
            (None, Some(_)) => fail(at.key("user"), Rule::RegistryLogin)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_logs(config: &RackConfig) -> Check {
    let path = KeyPath::root().key("logs");
    let logs = &config.logs;
    if let Err(e) = torc_types::logs::check_max_bytes(logs.max_bytes) {
        fail(path.key("max_bytes"), Rule::LogLimit(e))?;
    }
    if let Err(e) = torc_types::logs::check_files(logs.files) {
        fail(path.key("files"), Rule::LogLimit(e))?;
    }
    if logs.keep_ended_for_in_seconds == 0 {
        fail(path.key("keep_ended_for_in_seconds"), Rule::AtLeastOne)?;
    }
    if logs.disk_free_warning_percent > 99 {
        fail(
            path.key("disk_free_warning_percent"),
            Rule::Percent {
                got: logs.disk_free_warning_percent,
            },
        )?;
    }
    Ok(())
}
