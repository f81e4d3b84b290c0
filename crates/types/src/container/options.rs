//! What a container gets beyond its image, volumes and the task's own keys: the `docker run`
//! options torc maps (`ContainerOptions`, filled by the `parameters` parser), and the small
//! checked values they are made of. Each value type is written and read as its `docker run`
//! text (`nofile=1024:2048`, `SIGTERM`, `/dev/fuse:/dev/fuse:rwm`), checked on construction
//! and on deserialisation; the free-text fields are checked by [`ContainerOptions::check`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The `docker run` options torc maps onto a container. Every field's default is Docker's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerOptions {
    /// `--ipc=host`: the node's IPC namespace and its `/dev/shm`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ipc: bool,
    /// `--pid=host`: the node's process namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_pid: bool,
    /// `--uts=host`: the node's host name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_uts: bool,
    /// `network_type: none` / `--net=none`: a network namespace of its own with only loopback.
    /// Only with `network: node` (the task has no rack address).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_network: bool,
    /// `--user`: `USER[:GROUP]`, names or numbers; names are looked up in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--workdir`: the process's working directory, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `--hostname`: the container's host name (default: the task's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--read-only`: the root filesystem is mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `--cap-add`: capabilities beyond Docker's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<Capability>,
    /// `--cap-drop`: capabilities taken from Docker's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<Capability>,
    /// `--shm-size`: the size of the `/dev/shm` tmpfs, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `--tmpfs`: tmpfs mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// `--ulimit`: the process's resource limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// `--sysctl`: namespaced kernel parameters (runc refuses others when it starts the
    /// container, and that error is the task's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `--security-opt=no-new-privileges`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// `--add-host`: lines of the container's `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    /// `--dns`: the container's name servers, instead of the node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// `--stop-signal`: what a stop sends first (default: the image's, else SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    /// `--label`: labels of the container in the engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `--device`: host devices in the container, with a device-cgroup rule each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
}

impl ContainerOptions {
    pub fn is_default(&self) -> bool {
        *self == ContainerOptions::default()
    }

    /// Checks the fields that are free text (user, workdir, hostname, sysctl and label keys,
    /// duplicate ulimits); the typed fields were checked when they were made. Names the
    /// option as `docker run` does.
    pub fn check(&self) -> Result<(), OptionError> {
        let bad = |option, value: &str, problem| {
            Err(OptionError {
                option,
                value: value.to_string(),
                problem,
            })
        };
        if let Some(user) = &self.user
            && !is_user(user)
        {
            return bad("user", user, ValueProblem::User);
        }
        if let Some(dir) = &self.workdir
            && let Err(problem) = check_abs_path(dir)
        {
            return bad("workdir", dir, problem);
        }
        if let Some(name) = &self.hostname
            && !is_hostname(name, MAX_UTS_HOSTNAME)
        {
            return bad("hostname", name, ValueProblem::Hostname);
        }
        if let Some(key) = self.sysctls.keys().find(|k| !is_sysctl_key(k)) {
            return bad("sysctl", key, ValueProblem::SysctlKey);
        }
        if let Some((key, value)) =
            (self.sysctls.iter()).find(|(_, v)| v.chars().any(char::is_control))
        {
            return bad("sysctl", &format!("{key}={value}"), ValueProblem::Control);
        }
        if let Some(key) = self.labels.keys().find(|k| !is_label_key(k)) {
            return bad("label", key, ValueProblem::LabelKey);
        }
        if let Some((key, value)) =
            (self.labels.iter()).find(|(_, v)| v.chars().any(char::is_control))
        {
            return bad("label", &format!("{key}={value}"), ValueProblem::Control);
        }
        for (i, limit) in self.ulimits.iter().enumerate() {
            if self.ulimits[..i].iter().any(|l| l.name == limit.name) {
                return bad("ulimit", &limit.to_string(), ValueProblem::Twice);
            }
        }
        if self.shm_size == Some(0) {
            return bad("shm-size", "0", ValueProblem::Size);
        }
        Ok(())
    }
}

/// A container option whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} {value:?}: {problem}")]
pub struct OptionError {
    /// The option's `docker run` name, e.g. `workdir`.
    pub option: &'static str,
    pub value: String,
    pub problem: ValueProblem,
}

/// Why an option's value cannot be used. Shown after the option and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    #[error("must not be empty")]
    Empty,
    #[error("must be an absolute path")]
    NotAbsolute,
    #[error("must not be /")]
    Root,
    #[error("must not contain a `..` component")]
    DotDot,
    #[error("must not contain control characters")]
    Control,
    #[error("is given twice")]
    Twice,
    #[error("must be true or false")]
    Bool,
    #[error("torc supports only `host` (the default is a namespace of the container's own)")]
    OnlyHost,
    #[error("must be USER[:GROUP], with names (letters, digits, '_', '.', '-') or numbers")]
    User,
    #[error(
        "must be a host name: letters, digits and '-' in labels separated by '.', at most 64 characters"
    )]
    Hostname,
    #[error("unknown capability; known: ALL, {}", CAPABILITIES.join(", "))]
    Capability,
    #[error("must be a size such as 64m or 1g (bytes, or with a unit b, k, m, g, t), above 0")]
    Size,
    #[error(
        "must be NAME=SOFT[:HARD] with numbers (-1: unlimited), the soft limit not above the \
         hard one, NAME one of {}",
        ULIMITS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    )]
    Ulimit,
    #[error("must be KEY=VALUE")]
    KeyValue,
    #[error("must be a variable name (letters, digits and '_', not starting with a digit)")]
    EnvKey,
    #[error("needs a value (NAME=VALUE): torc does not copy the node's environment")]
    EnvWithoutValue,
    #[error("is not a kernel parameter name (letters, digits, '_', '-', '.' and '/')")]
    SysctlKey,
    #[error("is not a label key (not empty, no '=' or control characters)")]
    LabelKey,
    #[error("must be a signal name (SIGTERM or TERM) or a number from 1 to 64")]
    Signal,
    #[error("must be an IP address")]
    Ip,
    #[error("must be NAME:IP (torc has no host-gateway)")]
    ExtraHost,
    #[error(
        "must be HOST[:CONTAINER][:PERMISSIONS], with absolute paths and permissions made of \
         r, w and m"
    )]
    Device,
    #[error("must be /PATH[:OPTIONS], with mount options separated by ','")]
    Tmpfs,
    #[error(
        "torc supports only no-new-privileges (it applies no seccomp, AppArmor or SELinux \
         option)"
    )]
    SecurityOpt,
    #[error("{0}")]
    Network(#[from] UnknownNetwork),
    #[error("{0}")]
    Volume(#[from] crate::VolumeError),
}

/// A container's network, as the original's `network_type` and `docker run --net` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The node's network (`host`).
    Host,
    /// Only loopback (`none`).
    None,
    /// An address of its own on the rack network (`torc`, or the original's `calico`).
    Rack,
}

/// A network name torc does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "torc has no {name} network; use host (the node's network), none (loopback only) or torc \
     (an address of its own on the rack network)"
)]
pub struct UnknownNetwork {
    pub name: String,
}

impl NetworkMode {
    /// `host`, `none`, `torc` or `calico` (the original's name for the rack network).
    pub fn parse(name: &str) -> Result<NetworkMode, UnknownNetwork> {
        match name {
            "host" => Ok(NetworkMode::Host),
            "none" => Ok(NetworkMode::None),
            "torc" | "calico" => Ok(NetworkMode::Rack),
            _ => Err(UnknownNetwork {
                name: name.to_string(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Rack => "torc",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Linux's capabilities, without their `CAP_` prefix (linux/capability.h, 6.x).
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability (`CAP_NET_ADMIN`), or `ALL`. Read as Docker reads it: with or without the
/// `CAP_` prefix, in any case; written as the OCI spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capability(Option<&'static str>);

impl Capability {
    pub const ALL: Capability = Capability(None);

    pub fn parse(text: &str) -> Result<Capability, ValueProblem> {
        let upper = text.to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(Capability::ALL);
        }
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        CAPABILITIES
            .iter()
            .find(|c| **c == bare)
            .map(|c| Capability(Some(c)))
            .ok_or(ValueProblem::Capability)
    }

    /// `None` for `ALL`, else the name without `CAP_`.
    pub fn name(self) -> Option<&'static str> {
        self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("ALL"),
            Some(name) => write!(f, "CAP_{name}"),
        }
    }
}

/// Linux's signals 1 to 31 (asm-generic), without `SIG`.
const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// A signal by number (1 to 64), read as Docker reads `--stop-signal`: `SIGTERM`, `term` or
/// `15`. Written as its name (`SIGTERM`), or its number when it has none (real-time ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(u8);

impl Signal {
    pub fn parse(text: &str) -> Result<Signal, ValueProblem> {
        if let Ok(n) = text.parse::<u8>() {
            return (1..=64)
                .contains(&n)
                .then_some(Signal(n))
                .ok_or(ValueProblem::Signal);
        }
        let upper = text.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS
            .iter()
            .position(|s| *s == bare)
            .map(|i| Signal(i as u8 + 1))
            .ok_or(ValueProblem::Signal)
    }

    pub fn number(self) -> i32 {
        i32::from(self.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (usize::from(self.0).checked_sub(1)).and_then(|i| SIGNALS.get(i)) {
            Some(name) => write!(f, "SIG{name}"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Docker's `--ulimit` names and the OCI rlimit types they are.
const ULIMITS: &[(&str, &str)] = &[
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// A resource limit, `--ulimit nofile=1024:2048`. [`Ulimit::UNLIMITED`] stands for `-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ulimit {
    name: &'static str,
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// `RLIM_INFINITY`.
    pub const UNLIMITED: u64 = u64::MAX;

    /// `NAME=SOFT[:HARD]`; without `HARD`, both are `SOFT`.
    pub fn parse(text: &str) -> Result<Ulimit, ValueProblem> {
        let (name, values) = text.split_once('=').ok_or(ValueProblem::Ulimit)?;
        let name = ULIMITS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, _)| *n)
            .ok_or(ValueProblem::Ulimit)?;
        let value = |v: &str| match v {
            "-1" => Ok(Ulimit::UNLIMITED),
            v => v.parse::<u64>().map_err(|_| ValueProblem::Ulimit),
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (value(soft)?, value(hard)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(ValueProblem::Ulimit);
        }
        Ok(Ulimit { name, soft, hard })
    }

    /// Docker's name, e.g. `nofile`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The OCI spec's `type`, e.g. `RLIMIT_NOFILE`.
    pub fn oci_type(&self) -> &'static str {
        ULIMITS
            .iter()
            .find(|(n, _)| *n == self.name)
            .map_or("", |(_, t)| t)
    }
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: u64| {
            if v == Ulimit::UNLIMITED {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        write!(f, "{}={}:{}", self.name, show(self.soft), show(self.hard))
    }
}

/// A host device in the container, `--device /dev/fuse[:/dev/fuse][:rwm]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    pub host_path: String,
    pub container_path: String,
    /// Some of `r`, `w` and `m` (mknod), for the device-cgroup rule.
    pub permissions: String,
}

impl Device {
    pub fn parse(text: &str) -> Result<Device, ValueProblem> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, container, permissions) = match parts[..] {
            [host] => (host, host, "rwm"),
            [host, perms] if is_device_permissions(perms) => (host, host, perms),
            [host, container] => (host, container, "rwm"),
            [host, container, perms] => (host, container, perms),
            _ => return Err(ValueProblem::Device),
        };
        let path_ok = |p: &str| check_abs_path(p).is_ok() && p != "/";
        if !path_ok(host) || !path_ok(container) || !is_device_permissions(permissions) {
            return Err(ValueProblem::Device);
        }
        Ok(Device {
            host_path: host.to_string(),
            container_path: container.to_string(),
            permissions: permissions.to_string(),
        })
    }
}

fn is_device_permissions(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 3
        && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && p.chars().enumerate().all(|(i, c)| !p[..i].contains(c))
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.host_path, self.container_path, self.permissions
        )
    }
}

/// A tmpfs mount, `--tmpfs /run:rw,size=64m`. The options go to mount(2) as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tmpfs {
    pub path: String,
    pub options: Vec<String>,
}

impl Tmpfs {
    pub fn parse(text: &str) -> Result<Tmpfs, ValueProblem> {
        let (path, options) = match text.split_once(':') {
            Some((path, options)) => (path, options.split(',').map(str::to_string).collect()),
            None => (text, Vec::new()),
        };
        let option_ok = |o: &String| {
            !o.is_empty()
                && o.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'.' | b'-'))
        };
        if check_abs_path(path).is_err() || path == "/" || !options.iter().all(option_ok) {
            return Err(ValueProblem::Tmpfs);
        }
        Ok(Tmpfs {
            path: path.to_string(),
            options,
        })
    }
}

impl fmt::Display for Tmpfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if !self.options.is_empty() {
            write!(f, ":{}", self.options.join(","))?;
        }
        Ok(())
    }
}

/// A line of the container's `/etc/hosts`, `--add-host db:10.0.0.5`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtraHost {
    pub name: String,
    pub ip: IpAddr,
}

impl ExtraHost {
    /// `NAME:IP` (an IPv6 address may be in brackets) or `NAME=IP`.
    pub fn parse(text: &str) -> Result<ExtraHost, ValueProblem> {
        let (name, ip) = text.split_once([':', '=']).ok_or(ValueProblem::ExtraHost)?;
        let ip = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        let ip: IpAddr = ip.parse().map_err(|_| ValueProblem::ExtraHost)?;
        if !is_hostname(name, 253) {
            return Err(ValueProblem::ExtraHost);
        }
        Ok(ExtraHost {
            name: name.to_string(),
            ip,
        })
    }
}

impl fmt::Display for ExtraHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.ip)
    }
}

/// Each value type is written and read as its text, checked again when read.
macro_rules! text_serde {
    ($($ty:ident),+) => {$(
        impl FromStr for $ty {
            type Err = ValueProblem;
            fn from_str(text: &str) -> Result<Self, ValueProblem> {
                $ty::parse(text)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $ty::parse(&text).map_err(|problem| {
                    serde::de::Error::custom(format_args!("{text:?}: {problem}"))
                })
            }
        }
    )+};
}

text_serde!(Capability, Signal, Ulimit, Device, Tmpfs, ExtraHost);

/// The kernel's `HOST_NAME_MAX`, for a container's own host name.
pub(crate) const MAX_UTS_HOSTNAME: usize = 64;

pub(crate) fn is_hostname(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(crate) fn is_user(user: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 256
            && !p.starts_with('-')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    match user.split_once(':') {
        Some((user, group)) => part(user) && part(group),
        None => part(user),
    }
}

pub(crate) fn check_abs_path(path: &str) -> Result<(), ValueProblem> {
    if path.is_empty() {
        return Err(ValueProblem::Empty);
    }
    if path.chars().any(char::is_control) {
        return Err(ValueProblem::Control);
    }
    if !path.starts_with('/') {
        return Err(ValueProblem::NotAbsolute);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(ValueProblem::DotDot);
    }
    Ok(())
}

pub(crate) fn is_sysctl_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(['.', '/'])
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

pub(crate) fn is_label_key(key: &str) -> bool {
    !key.is_empty() && !key.contains('=') && !key.chars().any(char::is_control)
}

/// Docker's `RAMInBytes`: a number with an optional fraction and a binary unit (`b`, `k`,
/// `m`, `g`, `t`, `p`, any case, optionally followed by `i` and `b`): `64m`, `1.5GiB`, `100`.
pub(crate) fn parse_size(text: &str) -> Result<u64, ValueProblem> {
    let lower = text.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(ValueProblem::Size),
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(ValueProblem::Size);
    }
    let value: f64 = number.parse().map_err(|_| ValueProblem::Size)?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(ValueProblem::Size);
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests;
