//! The original's `parameters`: extra `docker run` options, one string. torc reads each
//! option it can honour into the task's spec and refuses the rest by name, with the reason,
//! so that no option is silently dropped. The config (with its file and line), the API and
//! `torc run --param` share this parser.
//!
//! Tokens are split on whitespace, with no quoting (as in the original), and read as
//! `--key=value`, `--key value`, `-k value`, `-kvalue`, `-k=value` or a bare flag, as
//! `docker run` reads them. (The original split on `-`, `=` and space and paired what came
//! out, which broke any value with a dash in it.)

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::container::options::{
    Capability, Device, ExtraHost, MAX_UTS_HOSTNAME, NetworkMode, Signal, Tmpfs, Ulimit,
    ValueProblem, check_abs_path, is_hostname, is_label_key, is_sysctl_key, is_user, parse_size,
};
use crate::task::is_env_key;
use crate::{ContainerOptions, TaskNetwork, TaskSpec, Volume};

/// What a `parameters` string asks for: the container's options, and what it says about
/// the task's other keys (its network, entrypoint, environment, volumes, privilege), for
/// [`Parameters::apply_to`] to check against them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameters {
    pub options: ContainerOptions,
    /// `--net` / `--network`.
    pub network: Option<NetworkMode>,
    /// `--entrypoint`: the program, as `command`.
    pub entrypoint: Option<String>,
    /// `-e` / `--env`.
    pub env: BTreeMap<String, String>,
    /// `-v` / `--volume`.
    pub volumes: Vec<Volume>,
    /// `--privileged`.
    pub privileged: bool,
}

/// Why `parameters` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error("unknown docker run option {option} (torc maps: {})", MAPPED_NAMES.join(", "))]
    Unknown { option: String },
    #[error("{option}: {reason}")]
    Refused {
        option: String,
        reason: RefusedReason,
    },
    #[error("{option} needs a value")]
    MissingValue { option: String },
    #[error("{option} {value:?}: {problem}")]
    BadValue {
        option: String,
        value: String,
        problem: ValueProblem,
    },
    #[error(
        "{token:?} is not a docker run option (such as --ipc=host); the command's arguments \
         go in `arguments` or `args`"
    )]
    NotAnOption { token: String },
    #[error("docker run options need an image to run")]
    NoImage,
    #[error("the container's options are given twice: as options and as docker run options")]
    OptionsTwice,
    #[error(
        "--entrypoint={entrypoint} and the command {command:?} both name the program; keep \
         one of them"
    )]
    EntrypointAndCommand { entrypoint: String, command: String },
    #[error("--net={parameter} contradicts the task's network ({task}); keep one of them")]
    NetworkConflict {
        parameter: NetworkMode,
        task: NetworkMode,
    },
    #[error("-e {key}={parameter} contradicts env {key}={task}; keep one of them")]
    EnvConflict {
        key: String,
        parameter: String,
        task: String,
    },
}

/// Why torc refuses a `docker run` option it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    Ports,
    Limits,
    Lifecycle,
    Logs,
}

impl fmt::Display for RefusedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusedReason::Ports => {
                "ports are not published: a container on the node's network uses ports from \
                 the node's range ($PORT, ports: N); one on the rack network has an address \
                 of its own"
            }
            RefusedReason::Limits => {
                "set memory: and cpu: (the scheduler places by them and the engine enforces \
                 them)"
            }
            RefusedReason::Lifecycle => "torc names, restarts and detaches tasks itself",
            RefusedReason::Logs => "output goes to the task's sandbox (torc logs)",
        })
    }
}

/// The options torc maps, by their long name, as the unknown-option error lists them.
const MAPPED_NAMES: &[&str] = &[
    "ipc",
    "pid",
    "uts",
    "net",
    "user",
    "workdir",
    "entrypoint",
    "hostname",
    "read-only",
    "cap-add",
    "cap-drop",
    "shm-size",
    "tmpfs",
    "ulimit",
    "sysctl",
    "security-opt",
    "add-host",
    "dns",
    "stop-signal",
    "env",
    "volume",
    "label",
    "privileged",
    "device",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Ipc,
    Pid,
    Uts,
    Net,
    User,
    Workdir,
    Entrypoint,
    Hostname,
    ReadOnly,
    CapAdd,
    CapDrop,
    ShmSize,
    Tmpfs,
    Ulimit,
    Sysctl,
    Security,
    AddHost,
    Dns,
    StopSignal,
    Env,
    Volume,
    Label,
    Privileged,
    Device,
}

/// Every mapped option: long name, short letter.
const MAPPED: &[(&str, Option<char>, Opt)] = &[
    ("ipc", None, Opt::Ipc),
    ("pid", None, Opt::Pid),
    ("uts", None, Opt::Uts),
    ("net", None, Opt::Net),
    ("network", None, Opt::Net),
    ("user", Some('u'), Opt::User),
    ("workdir", Some('w'), Opt::Workdir),
    ("entrypoint", None, Opt::Entrypoint),
    ("hostname", Some('h'), Opt::Hostname),
    ("read-only", None, Opt::ReadOnly),
    ("cap-add", None, Opt::CapAdd),
    ("cap-drop", None, Opt::CapDrop),
    ("shm-size", None, Opt::ShmSize),
    ("tmpfs", None, Opt::Tmpfs),
    ("ulimit", None, Opt::Ulimit),
    ("sysctl", None, Opt::Sysctl),
    ("security-opt", None, Opt::Security),
    ("add-host", None, Opt::AddHost),
    ("dns", None, Opt::Dns),
    ("stop-signal", None, Opt::StopSignal),
    ("env", Some('e'), Opt::Env),
    ("volume", Some('v'), Opt::Volume),
    ("label", Some('l'), Opt::Label),
    ("privileged", None, Opt::Privileged),
    ("device", None, Opt::Device),
];

/// Options torc knows and refuses: long name, short letter. A refused letter ends the
/// parse, so a cluster such as `-it` is refused at its first letter.
const REFUSED: &[(&str, Option<char>, RefusedReason)] = &[
    ("publish", Some('p'), RefusedReason::Ports),
    ("publish-all", Some('P'), RefusedReason::Ports),
    ("expose", None, RefusedReason::Ports),
    ("memory", Some('m'), RefusedReason::Limits),
    ("cpu-shares", Some('c'), RefusedReason::Limits),
    ("cpus", None, RefusedReason::Limits),
    ("kernel-memory", None, RefusedReason::Limits),
    ("name", None, RefusedReason::Lifecycle),
    ("rm", None, RefusedReason::Lifecycle),
    ("detach", Some('d'), RefusedReason::Lifecycle),
    ("restart", None, RefusedReason::Lifecycle),
    ("interactive", Some('i'), RefusedReason::Lifecycle),
    ("tty", Some('t'), RefusedReason::Lifecycle),
    ("log-driver", None, RefusedReason::Logs),
    ("log-opt", None, RefusedReason::Logs),
];

/// What a name stands for.
enum Known {
    Mapped(Opt),
    Refused(RefusedReason),
}

fn lookup_long(name: &str) -> Option<Known> {
    if let Some((_, _, opt)) = MAPPED.iter().find(|(long, _, _)| *long == name) {
        return Some(Known::Mapped(*opt));
    }
    if let Some((_, _, reason)) = REFUSED.iter().find(|(long, ..)| *long == name) {
        return Some(Known::Refused(*reason));
    }
    // Docker's `--memory-*` and `--cpu-*`/`--cpuset-*` families are all limits.
    (name.starts_with("memory") || name.starts_with("cpu"))
        .then_some(Known::Refused(RefusedReason::Limits))
}

fn lookup_short(letter: char) -> Option<Known> {
    if let Some((_, _, opt)) = MAPPED.iter().find(|(_, short, _)| *short == Some(letter)) {
        return Some(Known::Mapped(*opt));
    }
    (REFUSED.iter())
        .find(|(_, short, ..)| *short == Some(letter))
        .map(|(.., reason)| Known::Refused(*reason))
}

fn is_flag(opt: Opt) -> bool {
    matches!(opt, Opt::ReadOnly | Opt::Privileged)
}

impl Parameters {
    /// Reads a `parameters` string; an empty one asks for nothing.
    pub fn parse(text: &str) -> Result<Parameters, ParameterError> {
        let mut tokens = text.split_whitespace();
        let mut out = Parameters::default();
        while let Some(token) = tokens.next() {
            let not_an_option = || ParameterError::NotAnOption {
                token: token.to_string(),
            };
            // The option as written (for errors), what it is, and a value written with it.
            let (written, known, inline): (String, Option<Known>, Option<&str>) =
                if let Some(long) = token.strip_prefix("--") {
                    let (name, inline) = match long.split_once('=') {
                        Some((name, value)) => (name, Some(value)),
                        None => (long, None),
                    };
                    if name.is_empty() {
                        return Err(not_an_option());
                    }
                    (format!("--{name}"), lookup_long(name), inline)
                } else if let Some(short) = token.strip_prefix('-') {
                    let mut chars = short.chars();
                    let Some(letter) = chars.next() else {
                        return Err(not_an_option());
                    };
                    let rest = chars.as_str();
                    let inline = (!rest.is_empty()).then(|| rest.strip_prefix('=').unwrap_or(rest));
                    (format!("-{letter}"), lookup_short(letter), inline)
                } else {
                    return Err(not_an_option());
                };
            let opt = match known {
                None => return Err(ParameterError::Unknown { option: written }),
                Some(Known::Refused(reason)) => {
                    return Err(ParameterError::Refused {
                        option: written,
                        reason,
                    });
                }
                Some(Known::Mapped(opt)) => opt,
            };
            let bad = |value: &str, problem| ParameterError::BadValue {
                option: written.clone(),
                value: value.to_string(),
                problem,
            };
            // A bare flag takes no value from the next token.
            let value = match inline {
                Some(value) => value,
                None if is_flag(opt) => "true",
                None => tokens.next().ok_or_else(|| ParameterError::MissingValue {
                    option: written.clone(),
                })?,
            };
            out.set(opt, value).map_err(|problem| bad(value, problem))?;
        }
        Ok(out)
    }

    /// Applies one option's value.
    fn set(&mut self, opt: Opt, value: &str) -> Result<(), ValueProblem> {
        let o = &mut self.options;
        match opt {
            Opt::Ipc => o.host_ipc = only_host(value)?,
            Opt::Pid => o.host_pid = only_host(value)?,
            Opt::Uts => o.host_uts = only_host(value)?,
            Opt::Net => set_once(&mut self.network, NetworkMode::parse(value)?)?,
            Opt::User => {
                check(is_user(value), ValueProblem::User)?;
                set_once(&mut o.user, value.to_string())?;
            }
            Opt::Workdir => {
                check_abs_path(value)?;
                set_once(&mut o.workdir, value.to_string())?;
            }
            Opt::Entrypoint => {
                check(!value.is_empty(), ValueProblem::Empty)?;
                set_once(&mut self.entrypoint, value.to_string())?;
            }
            Opt::Hostname => {
                check(is_hostname(value, MAX_UTS_HOSTNAME), ValueProblem::Hostname)?;
                set_once(&mut o.hostname, value.to_string())?;
            }
            Opt::CapAdd => push_new(&mut o.cap_add, Capability::parse(value)?),
            Opt::CapDrop => push_new(&mut o.cap_drop, Capability::parse(value)?),
            Opt::ShmSize => set_once(&mut o.shm_size, parse_size(value)?)?,
            Opt::Tmpfs => push_new(&mut o.tmpfs, Tmpfs::parse(value)?),
            Opt::Ulimit => {
                let limit = Ulimit::parse(value)?;
                check(
                    !o.ulimits.iter().any(|l| l.name() == limit.name()),
                    ValueProblem::Twice,
                )?;
                o.ulimits.push(limit);
            }
            Opt::Sysctl => {
                let (key, val) = value.split_once('=').ok_or(ValueProblem::KeyValue)?;
                check(is_sysctl_key(key), ValueProblem::SysctlKey)?;
                insert_once(&mut o.sysctls, key, val)?;
            }
            Opt::Security => {
                o.no_new_privileges = match value {
                    "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => {
                        true
                    }
                    "no-new-privileges:false" | "no-new-privileges=false" => false,
                    _ => return Err(ValueProblem::SecurityOpt),
                }
            }
            Opt::AddHost => push_new(&mut o.extra_hosts, ExtraHost::parse(value)?),
            Opt::Dns => {
                let ip: IpAddr = value.parse().map_err(|_| ValueProblem::Ip)?;
                push_new(&mut o.dns, ip);
            }
            Opt::StopSignal => set_once(&mut o.stop_signal, Signal::parse(value)?)?,
            Opt::Env => {
                let (key, val) = value.split_once('=').ok_or(ValueProblem::EnvWithoutValue)?;
                check(is_env_key(key), ValueProblem::EnvKey)?;
                insert_once(&mut self.env, key, val)?;
            }
            Opt::Volume => self.volumes.push(Volume::parse_docker(value)?),
            Opt::Label => {
                let (key, val) = value.split_once('=').unwrap_or((value, ""));
                check(is_label_key(key), ValueProblem::LabelKey)?;
                insert_once(&mut o.labels, key, val)?;
            }
            Opt::Device => push_new(&mut o.devices, Device::parse(value)?),
            Opt::ReadOnly => o.read_only = parse_bool(value)?,
            Opt::Privileged => self.privileged = parse_bool(value)?,
        }
        Ok(())
    }

    /// Puts what the parameters ask for into `spec`, which must run an image:
    /// - the container's options become the parameters' (a spec takes its options from one
    ///   place: options given both ways are refused);
    /// - `--entrypoint` becomes the command (refused when the spec has another);
    /// - `--net` sets the network (refused when the spec already asks for another network
    ///   than the node's, the default);
    /// - `-e` adds to the environment (refused when it changes a variable the spec sets);
    /// - `-v` adds volumes, and `--privileged` makes the task privileged.
    pub fn apply_to(self, spec: &mut TaskSpec) -> Result<(), ParameterError> {
        let Some(container) = spec.container.as_mut() else {
            return Err(ParameterError::NoImage);
        };
        let no_network = container.options.no_network;
        let given = ContainerOptions {
            no_network: false,
            ..container.options.clone()
        };
        if !given.is_default() {
            return Err(ParameterError::OptionsTwice);
        }
        if let Some(entrypoint) = self.entrypoint {
            if !spec.command.is_empty() && spec.command != entrypoint {
                return Err(ParameterError::EntrypointAndCommand {
                    entrypoint,
                    command: spec.command.clone(),
                });
            }
            spec.command = entrypoint;
        }
        let task = match (no_network, spec.network) {
            (true, _) => NetworkMode::None,
            (false, TaskNetwork::Rack) => NetworkMode::Rack,
            (false, TaskNetwork::Node) => NetworkMode::Host,
        };
        let mode = match self.network {
            Some(parameter) if task != NetworkMode::Host && parameter != task => {
                return Err(ParameterError::NetworkConflict { parameter, task });
            }
            Some(parameter) => parameter,
            None => task,
        };
        for (key, value) in &self.env {
            if let Some(old) = spec.env.get(key)
                && old != value
            {
                return Err(ParameterError::EnvConflict {
                    key: key.clone(),
                    parameter: value.clone(),
                    task: old.clone(),
                });
            }
        }
        spec.env.extend(self.env);
        container.volumes.extend(self.volumes);
        container.options = self.options;
        container.options.no_network = mode == NetworkMode::None;
        spec.network = match mode {
            NetworkMode::Rack => TaskNetwork::Rack,
            NetworkMode::Host | NetworkMode::None => TaskNetwork::Node,
        };
        spec.privileged |= self.privileged;
        Ok(())
    }
}

fn check(ok: bool, problem: ValueProblem) -> Result<(), ValueProblem> {
    if ok { Ok(()) } else { Err(problem) }
}

fn parse_bool(value: &str) -> Result<bool, ValueProblem> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ValueProblem::Bool),
    }
}

fn only_host(value: &str) -> Result<bool, ValueProblem> {
    check(value == "host", ValueProblem::OnlyHost).map(|()| true)
}

/// A value that may be given once (or again, the same).
fn set_once<T: PartialEq>(slot: &mut Option<T>, value: T) -> Result<(), ValueProblem> {
    match slot {
        Some(old) if *old != value => Err(ValueProblem::Twice),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn insert_once(
    map: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
) -> Result<(), ValueProblem> {
    match map.get(key) {
        Some(old) if old != value => Err(ValueProblem::Twice),
        _ => {
            map.insert(key.to_string(), value.to_string());
            Ok(())
        }
    }
}

/// Appends unless it is there already (`--cap-add X --cap-add X` is one capability).
fn push_new<T: PartialEq>(list: &mut Vec<T>, value: T) {
    if !list.contains(&value) {
        list.push(value);
    }
}

#[cfg(test)]
mod tests;
