//! torc's rack config: the one YAML file that describes a rack — its nodes, the always-on
//! system services, the on-demand service groups and the controller's timers.
//!
//! The schema is the original ToRC `config.yml`, accepted unchanged (keys with dashes such as
//! `dns-addons` and `service-groups` included), plus torc's keys: `domain`, `service_domain`,
//! `open_join`, `power_command`, per-node `function`/`resources`/`port_range`/`task_block`/
//! `endpoint`, `network-agent.type: netlink`, `containers` (registry logins, pull and import
//! bounds), and per-service `command`, `args`, `env`, `ports`, `disk`, `network`, `health`,
//! restart and kill timers. The original's container keys (`image_name`, `privileged`,
//! `volumes`, `network_type`, `parameters`) make a container task spec. Where the
//! original crashed, torc reads what was meant: `memory: 1024` (an int), `service-groups:`
//! with no value, `""` for an unset IP.
//!
//! What this crate is not: it performs no effects. It does not start services, run power
//! commands, resolve names, pull images or watch the file; it turns text into a checked
//! [`RackConfig`] (and a service into a [`torc_types::TaskSpec`]), nothing more.
//!
//! Invariants:
//! - A [`RackConfig`] value has been validated: node names and IPs, system service names,
//!   group names and the service names within a group are unique; every service has a
//!   `command` or an `image_name`; memory, cpu and disk are finite and non-negative; a
//!   service's `node_name` is a listed node (unless `open_join`); timers are at least 1 s;
//!   task blocks are /16 to /30, overlap no other block and hold no node's `ip` or
//!   `endpoint`; a `network: rack` service has some node's block to take an address from;
//!   a service's container keys make a valid container spec (image reference, volumes,
//!   `network_type` of `host`, `none`, `torc` or `calico`, every `parameters` option mapped)
//!   and `volumes` and `parameters` appear only with an `image_name`; registries are listed
//!   once each, with a whole login or none.
//! - Unknown keys are errors at every level, never ignored: a typo such as `memroy` must not
//!   silently become the default.
//! - Every error names the file, the line (and column when known) and the key path, e.g.
//!   `rack.yaml:12:5: healthcheck.system_services[0].memroy: unknown field ...`.
//! - No input makes it panic.
//!
//! Variables: [`RackConfig::parse_with`] substitutes `$NAME` tokens (the original's
//! `$MASTER_IP`) before parsing; an unknown `$NAME` is an error, `$PORT`, `$PORT<n>`, `$IP`,
//! `$DATA_DIR` and `$SECRETS_DIR` are kept for task start, `$$` is a literal `$`. See `vars.rs`
//! for the exact rules.

mod alerts;
mod de;
mod error;
mod path;
mod rack;
mod service;
mod source_map;
mod validate;
mod vars;

use std::collections::BTreeMap;
use std::path::Path;

use serde_saphyr::MessageFormatter;

pub use alerts::{AlertCondition, AlertRule, AlertsConfig, NodeMetric};
pub use error::ServiceSpecError;
pub use error::{BadIpAddr, ConfigError, Rule};
pub use rack::{
    AccessConfig, ApiConfig, ContainersConfig, DnsAddon, HealthcheckConfig, LogsConfig,
    NetworkAgentConfig, NetworkAgentKind, NodeConfig, PowerCommand, RackConfig, RegistryConfig,
    ServiceGroup, ServiceLogin, StateCleanConfig, StateSyncConfig,
};
pub use service::{HealthProbe, ProbeCountError, ServiceConfig, ServiceHealth, Sla, Volume};
pub use torc_types::{NodeType, UnknownValue};

use source_map::{Pos, SourceMap};
use vars::Substituted;

impl RackConfig {
    /// Reads, parses and validates the config at `path`, without variables.
    pub fn load(path: &Path) -> Result<RackConfig, ConfigError> {
        Self::load_with(path, &BTreeMap::new())
    }

    /// Reads, parses and validates the config at `path`, substituting `vars`
    /// (see [`RackConfig::parse_with`]). Errors name `path` as given.
    pub fn load_with(
        path: &Path,
        vars: &BTreeMap<String, String>,
    ) -> Result<RackConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_with(&text, &path.display().to_string(), vars)
    }

    /// Parses and validates `text`, without variables: any `$NAME` other than the runtime
    /// ones is an error. `origin` names the text in errors (a file name).
    pub fn parse(text: &str, origin: &str) -> Result<RackConfig, ConfigError> {
        Self::parse_with(text, origin, &BTreeMap::new())
    }

    /// Parses and validates `text` after replacing each `$NAME` whose `NAME` is in `vars` by
    /// its value (e.g. `MASTER_IP` → `10.250.3.20`). Substitution is textual and happens
    /// before parsing, anywhere but in comments. `$PORT`, `$PORT<n>` and `$IP` are kept
    /// verbatim for task start, `$$` stands for `$`, and any other `$NAME` is an error.
    pub fn parse_with(
        text: &str,
        origin: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<RackConfig, ConfigError> {
        if let Some(name) = vars.iter().find_map(|(name, value)| {
            (value.contains(['\n', '\r']) || name.is_empty()).then_some(name)
        }) {
            // Substitution must keep lines intact, or every later line number would be off.
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key_path: format!("${name}"),
                rule: Box::new(Rule::BadVariable),
                line: None,
            });
        }
        let substituted = vars::substitute(text, vars)
            .map_err(|unknown| unknown_var_error(text, origin, vars, unknown))?;

        let options = serde_saphyr::options! { with_snippet: false };
        let config: RackConfig = serde_saphyr::from_str_with_options(&substituted.text, options)
            .map_err(|err| parse_error(origin, &substituted, &err))?;

        validate::validate(&config).map_err(|problem| {
            let line = SourceMap::new(&substituted.text)
                .position_of(&problem.path)
                .map(|pos| pos.line);
            ConfigError::Invalid {
                origin: origin.to_string(),
                key_path: problem.path.to_string(),
                rule: Box::new(problem.rule),
                line,
            }
        })?;
        Ok(config)
    }
}

/// A serde-saphyr error, with its position mapped back to the text as written and the key
/// it is about.
fn parse_error(origin: &str, substituted: &Substituted, err: &serde_saphyr::Error) -> ConfigError {
    // serde-saphyr's `Display` renders a multi-line snippet with the position; we want the
    // bare message and the position as data.
    let err = err.without_snippet();
    let message = serde_saphyr::UserMessageFormatter
        .format_message(err)
        .into_owned();
    let pos = err.location().and_then(|l| Pos::from_location(&l));
    let key_path = pos.and_then(|pos| {
        let (mut path, at_key) = SourceMap::new(&substituted.text).path_at(pos)?;
        // An error placed exactly on a key is about that key only when it says so (unknown
        // or repeated key). Otherwise it is about the mapping the key starts or ends: serde
        // reports a missing field at the mapping's last key, and a whole-mapping check (one
        // probe in `health`) at its first.
        let about_key = message.starts_with("unknown field") || message.starts_with("duplicate");
        if at_key && !about_key {
            path.pop();
        }
        (!path.is_root()).then(|| path.to_string())
    });
    ConfigError::Parse {
        origin: origin.to_string(),
        line: pos.map(|p| p.line),
        column: pos.map(|p| substituted.original_column(p.line, p.column)),
        key_path,
        message,
    }
}

fn unknown_var_error(
    text: &str,
    origin: &str,
    vars: &BTreeMap<String, String>,
    unknown: vars::UnknownVar,
) -> ConfigError {
    let pos = Pos {
        line: unknown.line,
        column: unknown.column,
    };
    ConfigError::UnknownVariable {
        origin: origin.to_string(),
        line: unknown.line,
        column: unknown.column,
        key_path: SourceMap::new(text)
            .path_at(pos)
            .map(|(path, _)| path.to_string()),
        name: unknown.name,
        known: vars.keys().cloned().collect(),
    }
}

#[cfg(test)]
mod tests;
