//! Why a rack config could not be loaded. Every error names the file; parse and validation
//! errors also name the line (and column when known) and the key. A broken rule is a [`Rule`]
//! carrying the values involved, so a caller can tell causes apart without reading text.

use std::net::IpAddr;
use std::path::PathBuf;

use torc_types::{
    ImageRefError, Ipv4Block, NameProblem, NetworkMode, ParameterError, Resources, ServiceName,
    TaskNetwork, TaskSpecError, UnknownNetwork, VolumeError,
};

/// Why a rack config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid YAML, or does not fit the schema (unknown key, wrong type,
    /// missing key). `line` and `column` are 1-based and refer to the file as written, before
    /// variable substitution; `key_path` is the key the error is about, when it can be told.
    /// `message` is the YAML parser's (serde-saphyr's) own words.
    #[error(
        "{origin}{}: {}{message}",
        location_suffix(*.line, *.column),
        key_prefix(.key_path.as_deref())
    )]
    Parse {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        key_path: Option<String>,
        message: String,
    },

    /// A `$NAME` in the text that is neither a given variable nor one kept for task start.
    /// `known` lists the given variables' names (without `$`).
    #[error(
        "{origin}:{line}:{column}: {}unknown variable `${name}` ({}; `$PORT`, `$PORT<n>` and \
         `$IP` are filled in at task start; write `$$` for a literal `$`)",
        key_prefix(.key_path.as_deref()),
        known_variables(known)
    )]
    UnknownVariable {
        origin: String,
        line: usize,
        column: usize,
        key_path: Option<String>,
        name: String,
        known: Vec<String>,
    },

    /// The config parses but breaks a rule (duplicate name, unknown node, negative memory,
    /// ...). `key_path` is always set, e.g. `healthcheck.system_services[2].memory`. (The rule
    /// is boxed: it is the largest part, and errors travel in every `Result`.)
    #[error("{origin}{}: {key_path}: {rule}", location_suffix(*.line, None))]
    Invalid {
        origin: String,
        key_path: String,
        rule: Box<Rule>,
        line: Option<usize>,
    },
}

/// A rule of the rack config that a value breaks, with the values that break it. Where a rule
/// is about two places (a duplicate), `first` is the key path of the earlier one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rule {
    #[error("a variable needs a name and a single-line value")]
    BadVariable,
    #[error("must be a command line, e.g. [ipmitool, -H, \"{{management_ip}}\", power, on]")]
    PowerCommand,
    #[error("must be a command line")]
    CommandLine,
    #[error("{name:?} is the name of another alert rule too ({first})")]
    DuplicateAlert { name: String, first: String },
    #[error("must be a finite number at least 0, got {0}")]
    Threshold(f64),
    #[error("{0:?} is not an http:// or https:// URL")]
    WebhookUrl(String),
    #[error("must not be empty")]
    Empty,
    #[error("must be at least 1")]
    AtLeastOne,
    #[error("{0}")]
    LogLimit(torc_types::LogLimitError),
    #[error("must be a percentage below 100, got {got}")]
    Percent { got: u8 },
    /// A name that becomes a DNS label is not one.
    #[error("{text:?} {reason} (it becomes a DNS name)")]
    Label { text: String, reason: NameProblem },
    #[error("{domain:?} is not a DNS domain")]
    Domain { domain: String },
    #[error("{domain:?} is not a DNS domain: label {label:?} {reason}")]
    DomainLabel {
        domain: String,
        label: String,
        reason: NameProblem,
    },
    #[error(
        "must be at most {max} (a day), got {ttl}: resolvers would keep a stopped instance's \
         address that long"
    )]
    TtlTooLong { ttl: u32, max: u32 },
    #[error("{max} is less than restart_delay_in_seconds ({delay})")]
    MaxRestartDelayBelowDelay { max: u64, delay: u64 },
    #[error("list at least one node, or set `open_join: true` to accept any agent")]
    NoNodes,
    #[error("duplicate node name `{name}` (also {first})")]
    DuplicateNodeName { name: String, first: String },
    #[error("duplicate node IP {ip} (also {first})")]
    DuplicateNodeIp { ip: IpAddr, first: String },
    #[error("must be finite and non-negative, got {resources}")]
    NodeResources { resources: Resources },
    #[error(
        "{block} is a /{len} block; a task block must be /16 to /30 (a gateway, at least one \
         task address and a broadcast address)",
        len = block.prefix_len()
    )]
    TaskBlockSize { block: Ipv4Block },
    #[error("{block} overlaps {other}, the task block of node `{node}` ({first})")]
    OverlappingTaskBlocks {
        block: Ipv4Block,
        other: Ipv4Block,
        node: String,
        first: String,
    },
    #[error(
        "{ip} lies in {block}, the task block of node `{node}` ({first}); task blocks hold \
         only task addresses"
    )]
    AddressInTaskBlock {
        ip: IpAddr,
        block: Ipv4Block,
        node: String,
        first: String,
    },
    #[error("duplicate node endpoint {ip} (also {first})")]
    DuplicateEndpoint { ip: IpAddr, first: String },
    #[error(
        "`network: {network}` contradicts `network_type: {network_type}` (the rack network); \
         keep one of them"
    )]
    NetworkConflict {
        network: TaskNetwork,
        network_type: String,
    },
    #[error(
        "service `{service}` wants the rack network (`network: rack`), but no node has a \
         `task_block` to give it an address"
    )]
    NoTaskBlock { service: ServiceName },
    #[error("duplicate DNS addon `{name}` (also {first})")]
    DuplicateDnsAddon { name: String, first: String },
    #[error("duplicate service name `{name}` (also {first})")]
    DuplicateService { name: ServiceName, first: String },
    #[error("duplicate group name `{name}` (also {first})")]
    DuplicateGroup { name: ServiceName, first: String },
    /// A group's service has a system service's name.
    #[error("`{name}` is a system service ({system}); starting the group would replace it")]
    ShadowsSystemService { name: ServiceName, system: String },
    #[error(
        "`{name}` is the controller's own name (`name`): its DNS name and certificate are the \
         controller's"
    )]
    ControllerName { name: ServiceName },
    #[error(
        "service `{name}` has nothing to run: set `command` to run a process, or `image_name` \
         to run a container"
    )]
    NothingToRun { name: ServiceName },
    #[error("set either `args` (a list) or `arguments` (a string), not both")]
    ArgsAndArguments,
    #[error("must be a finite number >= 0, got {value}")]
    NotFiniteNonNegative { value: f64 },
    /// `known` are the nodes the config lists.
    #[error(
        "service `{service}` wants node `{node}`, which is not in `nodes` (known: {})",
        known.join(", ")
    )]
    UnknownNode {
        service: ServiceName,
        node: String,
        known: Vec<String>,
    },
    #[error("{addr:?} is not host:port")]
    NotHostPort { addr: String },
    #[error("{url:?} is not an http(s) URL")]
    NotHttpUrl { url: String },
    /// What the agent would refuse when it runs the service's task.
    #[error(transparent)]
    TaskSpec(#[from] TaskSpecError),
    /// Container keys that make no task: a bad image, volume, network or `parameters`.
    #[error(transparent)]
    Service(#[from] ServiceSpecError),
    #[error("duplicate registry `{host}` (also {first})")]
    DuplicateRegistry { host: String, first: String },
    #[error(
        "a registry login needs both `user` and `password_secret` (or neither, to pull without one)"
    )]
    RegistryLogin,
}

/// Text that is not an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IP address {text:?}")]
pub struct BadIpAddr {
    pub text: String,
}

fn known_variables(known: &[String]) -> String {
    if known.is_empty() {
        "no variables are set".to_string()
    } else {
        let names: Vec<String> = known.iter().map(|name| format!("`${name}`")).collect();
        format!("known: {}", names.join(", "))
    }
}

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

fn key_prefix(key_path: Option<&str>) -> String {
    key_path.map(|k| format!("{k}: ")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let err = ConfigError::Parse {
            origin: "rack.yaml".into(),
            line: Some(12),
            column: Some(5),
            key_path: Some("healthcheck.system_services[0].memroy".into()),
            message: "unknown field `memroy`".into(),
        };
        assert_eq!(
            err.to_string(),
            "rack.yaml:12:5: healthcheck.system_services[0].memroy: unknown field `memroy`"
        );
        let err = ConfigError::Invalid {
            origin: "rack.yaml".into(),
            key_path: "nodes[2].ip".into(),
            rule: Box::new(Rule::DuplicateNodeIp {
                ip: [10, 0, 0, 1].into(),
                first: "nodes[0]".into(),
            }),
            line: None,
        };
        assert_eq!(
            err.to_string(),
            "rack.yaml: nodes[2].ip: duplicate node IP 10.0.0.1 (also nodes[0])"
        );
    }
}

/// Why a service's keys make no task spec; [`ServiceSpecError::key`] names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceSpecError {
    #[error(transparent)]
    Image(ImageRefError),
    #[error("{error}")]
    Volume { index: usize, error: VolumeError },
    #[error("{0}")]
    NetworkType(UnknownNetwork),
    #[error(
        "`network_type: none` (loopback only) contradicts the rack network (`network: rack`); \
         keep one of them"
    )]
    NoNetworkOnRack,
    #[error(
        "`--net={parameter}` contradicts `network_type: {network_type}` (`host` when unset); \
         keep one of them"
    )]
    NetConflict {
        parameter: NetworkMode,
        network_type: String,
    },
    #[error(transparent)]
    Parameters(ParameterError),
    #[error(
        "`parameters` are docker run options: set `image_name` to run a container, or remove \
         them"
    )]
    ParametersNeedImage,
    #[error(
        "`volumes` mount into a container: set `image_name` to run one, or remove them (a \
         process sees the node's files as they are)"
    )]
    VolumesNeedImage,
}

impl ServiceSpecError {
    /// The service key the error is about, and the index within it for a list.
    pub fn key(&self) -> (&'static str, Option<usize>) {
        match self {
            ServiceSpecError::Image(_) => ("image_name", None),
            ServiceSpecError::Volume { index, .. } => ("volumes", Some(*index)),
            ServiceSpecError::NetworkType(_) => ("network_type", None),
            ServiceSpecError::NoNetworkOnRack => ("network", None),
            ServiceSpecError::NetConflict { .. } | ServiceSpecError::Parameters(_) => {
                ("parameters", None)
            }
            ServiceSpecError::ParametersNeedImage => ("parameters", None),
            ServiceSpecError::VolumesNeedImage => ("volumes", None),
        }
    }
}
