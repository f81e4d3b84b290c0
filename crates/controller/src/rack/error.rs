//! Why the rack refused a change, as data. Each part of the rack has its enum of refusals
//! (`NodeError`, `TaskError`, ...) whose variants carry the cause: the node, the task and its
//! state, the name and who holds it, the rule broken. `RackError` wraps them, so a caller
//! branches on a cause by matching a variant, never by reading the message.
//!
//! Invariants: a refusal's message is what the API answers (in the JSON body's `error`), and
//! its status code comes from `status()` alone: 404 what does not exist, 409 what conflicts
//! with the rack's state, 422 a request that cannot be valid, 403 what the config forbids.
//! The rule cases (`tests/rules/`) print both, so a changed message shows up there.

use std::net::IpAddr;

use axum::http::StatusCode;
use torc_types::{
    BUILTIN_FRAMEWORK, FrameworkName, NameError, NodeName, SecretName, ServiceName, TaskId,
    TaskSpecError, TaskState,
};

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RackError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Framework(#[from] FrameworkError),
    #[error(transparent)]
    Announce(#[from] AnnounceError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

impl RackError {
    /// The status the API answers this refusal with.
    pub fn status(&self) -> StatusCode {
        match self {
            RackError::Node(e) => e.status(),
            RackError::Task(e) => e.status(),
            RackError::Service(e) => e.status(),
            RackError::Framework(e) => e.status(),
            RackError::Announce(e) => e.status(),
            RackError::Credential(e) => e.status(),
        }
    }
}

/// Why a node's agent may not register or report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeError {
    /// The node table has no such node.
    #[error("no node named \"{0}\"")]
    Unknown(NodeName),
    /// A report from a node the rack does not know: its agent must register first.
    #[error("no node named \"{0}\"; register first")]
    Unregistered(NodeName),
    /// A report from a node gone inactive: its agent must register again, with its full task
    /// list, before it is trusted.
    #[error("node {0} is not active; the agent must register again")]
    Inactive(NodeName),
    /// An inactive node registers while tasks of its previous life are still being lost (a
    /// step loses a bounded number): it may register once they all are.
    #[error(
        "node {node} still has {left} task(s) of before it went inactive, being lost (a bounded number each step); register again in a moment"
    )]
    StillLosing { node: NodeName, left: usize },
    #[error("resources must be finite and non-negative")]
    BadResources,
    /// Another node holds the address (its certificate would name it).
    #[error("address {ip} belongs to node {owner}; node {node} cannot register from it")]
    AddressTaken {
        ip: IpAddr,
        owner: NodeName,
        node: NodeName,
    },
    /// A configured node registered from another address than its configured one.
    #[error("node {node} has ip {configured} in {origin}, but its agent registered from {from}")]
    WrongAddress {
        node: NodeName,
        configured: IpAddr,
        from: IpAddr,
        origin: String,
    },
    /// A node the config does not name, on a rack without `open_join`.
    #[error(
        "node {node} is not in the rack config ({origin}); add it under `nodes`, or set `open_join: true`"
    )]
    NotConfigured { node: NodeName, origin: String },
    /// A join token cannot take over a node that holds a credential.
    #[error(
        "node {0} already holds a credential, with which its agent registers; to let another agent take the node, revoke that credential first (`torc token list`, `torc token revoke ID`)"
    )]
    HoldsCredential(NodeName),
    /// A drain of a node already draining.
    #[error(
        "node {node} is already draining ({moved} task(s) moved so far); `torc nodes` shows its progress, `torc node uncordon {node}` stops it"
    )]
    AlreadyDraining { node: NodeName, moved: u32 },
}

impl NodeError {
    pub fn status(&self) -> StatusCode {
        match self {
            NodeError::Unknown(_) | NodeError::Unregistered(_) => StatusCode::NOT_FOUND,
            NodeError::Inactive(_) | NodeError::AddressTaken { .. } => StatusCode::CONFLICT,
            NodeError::HoldsCredential(_) | NodeError::AlreadyDraining { .. } => {
                StatusCode::CONFLICT
            }
            NodeError::BadResources => StatusCode::UNPROCESSABLE_ENTITY,
            NodeError::StillLosing { .. } => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::WrongAddress { .. } | NodeError::NotConfigured { .. } => {
                StatusCode::FORBIDDEN
            }
        }
    }
}

/// Why a task cannot be launched, found or killed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    #[error("no task with id \"{0}\"")]
    Unknown(TaskId),
    /// Its state is terminal, and terminal states are final.
    #[error("task {id} already ended ({state})")]
    Ended { id: TaskId, state: TaskState },
    #[error("task spec: {0}")]
    BadSpec(#[source] TaskSpecError),
    /// The controller's own name, or a DNS addon's: a task so named would answer in DNS (and
    /// hold a certificate) for them.
    #[error("name: {name} is reserved (the controller's own name, or a dns-addon in {origin})")]
    ReservedName { name: ServiceName, origin: String },
    /// `constraints.node_name` names no node of the rack.
    #[error("constraints.node_name: no node named \"{0}\" in the rack")]
    UnknownConstraintNode(NodeName),
    /// `network: rack` on a rack where no node has a task block.
    #[error(
        "network: rack needs a rack network, and no node of this rack has a task_block in {origin} (torc up gives nodes one only on network namespaces: as root or with CAP_NET_ADMIN)"
    )]
    NoTaskBlock { origin: String },
}

impl TaskError {
    pub fn status(&self) -> StatusCode {
        match self {
            TaskError::Unknown(_) => StatusCode::NOT_FOUND,
            TaskError::Ended { .. } => StatusCode::CONFLICT,
            TaskError::BadSpec(_)
            | TaskError::ReservedName { .. }
            | TaskError::UnknownConstraintNode(_)
            | TaskError::NoTaskBlock { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// Why a service instance or group cannot be started, stopped or found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// No instance of that name (system services and group instances).
    #[error("no service instance named \"{0}\"")]
    UnknownInstance(ServiceName),
    /// `DELETE /service?name=`: no service instance, announced task or live task so named.
    #[error("no running service or task named \"{0}\"")]
    NothingNamed(String),
    #[error("no service group named \"{0}\"")]
    UnknownGroup(ServiceName),
    /// Starting a group the config does not have.
    #[error("no service group named \"{group}\" in {origin}")]
    GroupNotInConfig { group: ServiceName, origin: String },
    /// A group's instance name is held by an instance of another origin (`system` or a
    /// group).
    #[error("service {name} already runs as part of {origin}")]
    InstanceTaken { name: ServiceName, origin: String },
    /// An instance's name (the service's and a suffix) is not a valid name.
    #[error("service {base}: instance name for {suffix:?}: {source}")]
    BadInstanceName {
        base: ServiceName,
        suffix: String,
        source: NameError,
    },
}

impl ServiceError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::UnknownInstance(_)
            | ServiceError::NothingNamed(_)
            | ServiceError::UnknownGroup(_)
            | ServiceError::GroupNotInConfig { .. } => StatusCode::NOT_FOUND,
            ServiceError::InstanceTaken { .. } => StatusCode::CONFLICT,
            ServiceError::BadInstanceName { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// Why a framework may not register, launch, kill or poll.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameworkError {
    #[error("no framework named \"{0}\"; register it first")]
    Unknown(FrameworkName),
    /// Unregistered or past its failover timeout (`why`): it must register again.
    #[error("framework {name} is not active ({why}); register it again")]
    Inactive { name: FrameworkName, why: String },
    /// An inactive framework registers while its tasks of before are still being killed (a
    /// bounded number each step): it may register once they all are.
    #[error(
        "framework {name} still has {left} task(s) of before it went inactive, being killed (a bounded number each step); register again in a moment"
    )]
    StillKilling { name: FrameworkName, left: usize },
    /// The controller's own name (the built-in framework's or the rack's).
    #[error("framework name {:?} is the controller's own", .0.as_str())]
    ReservedName(FrameworkName),
    /// A framework launches under the name of one of the rack's service instances.
    #[error(
        "{name} is a service of this rack ({origin}); a framework cannot launch under its name"
    )]
    NameIsService { name: ServiceName, origin: String },
    /// Another framework has a live task of that name.
    #[error("the name {name} is taken by a task of framework {owner}")]
    NameTaken {
        name: ServiceName,
        owner: FrameworkName,
    },
    /// A framework kills a task that is not its own.
    #[error(
        "task {id} belongs to {}, not to framework {framework}",
        owner_text(owner)
    )]
    NotItsTask {
        id: TaskId,
        owner: FrameworkName,
        framework: FrameworkName,
    },
}

/// Who owns a task, in words: the controller (the built-in framework) or a framework.
fn owner_text(owner: &FrameworkName) -> String {
    if owner.as_str() == BUILTIN_FRAMEWORK {
        "the controller".to_string()
    } else {
        format!("framework {owner}")
    }
}

impl FrameworkError {
    pub fn status(&self) -> StatusCode {
        match self {
            FrameworkError::Unknown(_) => StatusCode::NOT_FOUND,
            FrameworkError::StillKilling { .. } => StatusCode::SERVICE_UNAVAILABLE,
            FrameworkError::Inactive { .. }
            | FrameworkError::ReservedName(_)
            | FrameworkError::NameIsService { .. }
            | FrameworkError::NameTaken { .. }
            | FrameworkError::NotItsTask { .. } => StatusCode::CONFLICT,
        }
    }
}

/// Why a sub-scheduler's announcement of an external task was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnnounceError {
    #[error("name: {0}")]
    BadName(#[source] NameError),
    #[error("controller: {0}")]
    BadController(#[source] NameError),
    #[error("ip: {0:?} is not an IP address")]
    BadIp(String),
    /// The announcer claims to be this controller.
    #[error("controller {0:?} is this controller; announced tasks belong to sub-schedulers")]
    OwnController(String),
    /// The name is one of the rack's service instances (`origin`: `system` or its group).
    #[error("{name} is a service of this rack ({origin}); a sub-scheduler cannot announce it")]
    IsService { name: ServiceName, origin: String },
    /// Another sub-scheduler announced the name.
    #[error("{name} is announced by {owner}; {by} cannot take it over")]
    Taken {
        name: ServiceName,
        owner: String,
        by: String,
    },
}

impl AnnounceError {
    pub fn status(&self) -> StatusCode {
        match self {
            AnnounceError::BadName(_)
            | AnnounceError::BadController(_)
            | AnnounceError::BadIp(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AnnounceError::OwnController(_)
            | AnnounceError::IsService { .. }
            | AnnounceError::Taken { .. } => StatusCode::CONFLICT,
        }
    }
}

/// A credential or rack secret that is not there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CredentialError {
    /// No live token with that id (never minted, or already revoked).
    #[error("no token with id {0:?}")]
    UnknownToken(String),
    #[error("no rack secret named {0}")]
    UnknownSecret(SecretName),
}

impl CredentialError {
    pub fn status(&self) -> StatusCode {
        match self {
            CredentialError::UnknownToken(_) | CredentialError::UnknownSecret(_) => {
                StatusCode::NOT_FOUND
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The messages are the API's: clients and people read them, and tests of the binary match
    //! some. Each refusal is pinned here with its status, including those no rule case shows.

    use super::*;

    fn name<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    #[test]
    fn every_refusal_keeps_its_message_and_status() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let bad_name = || ServiceName::new("Bad_Name").unwrap_err();
        let instance_message = format!(
            "service web: instance name for \"Bad_Name\": {}",
            bad_name()
        );
        let name_message = format!("name: {}", bad_name());
        let controller_message = format!("controller: {}", bad_name());
        let cases: Vec<(RackError, u16, &str)> = vec![
            (
                NodeError::Unknown(name("b1")).into(),
                404,
                "no node named \"b1\"",
            ),
            (
                NodeError::Unregistered(name("b1")).into(),
                404,
                "no node named \"b1\"; register first",
            ),
            (
                NodeError::Inactive(name("b1")).into(),
                409,
                "node b1 is not active; the agent must register again",
            ),
            (
                NodeError::BadResources.into(),
                422,
                "resources must be finite and non-negative",
            ),
            (
                NodeError::AddressTaken {
                    ip: ip("10.0.0.20"),
                    owner: name("wedge"),
                    node: name("b1"),
                }
                .into(),
                409,
                "address 10.0.0.20 belongs to node wedge; node b1 cannot register from it",
            ),
            (
                NodeError::WrongAddress {
                    node: name("b1"),
                    configured: ip("10.0.0.21"),
                    from: ip("10.0.0.98"),
                    origin: "rack.yaml".into(),
                }
                .into(),
                403,
                "node b1 has ip 10.0.0.21 in rack.yaml, but its agent registered from 10.0.0.98",
            ),
            (
                NodeError::NotConfigured {
                    node: name("stranger"),
                    origin: "rack.yaml".into(),
                }
                .into(),
                403,
                "node stranger is not in the rack config (rack.yaml); add it under `nodes`, or set `open_join: true`",
            ),
            (
                NodeError::HoldsCredential(name("b1")).into(),
                409,
                "node b1 already holds a credential, with which its agent registers; to let another agent take the node, revoke that credential first (`torc token list`, `torc token revoke ID`)",
            ),
            (
                NodeError::AlreadyDraining {
                    node: name("b1"),
                    moved: 2,
                }
                .into(),
                409,
                "node b1 is already draining (2 task(s) moved so far); `torc nodes` shows its progress, `torc node uncordon b1` stops it",
            ),
            (
                TaskError::Unknown(name("web.1")).into(),
                404,
                "no task with id \"web.1\"",
            ),
            (
                TaskError::Ended {
                    id: name("web.1"),
                    state: TaskState::Killed,
                }
                .into(),
                409,
                "task web.1 already ended (killed)",
            ),
            (
                TaskError::BadSpec(TaskSpecError::EmptyCommand).into(),
                422,
                "task spec: command must not be empty",
            ),
            (
                TaskError::ReservedName {
                    name: name("printer"),
                    origin: "rack.yaml".into(),
                }
                .into(),
                422,
                "name: printer is reserved (the controller's own name, or a dns-addon in rack.yaml)",
            ),
            (
                TaskError::UnknownConstraintNode(name("b9")).into(),
                422,
                "constraints.node_name: no node named \"b9\" in the rack",
            ),
            (
                TaskError::NoTaskBlock {
                    origin: "rack.yaml".into(),
                }
                .into(),
                422,
                "network: rack needs a rack network, and no node of this rack has a task_block in rack.yaml (torc up gives nodes one only on network namespaces: as root or with CAP_NET_ADMIN)",
            ),
            (
                ServiceError::UnknownInstance(name("web")).into(),
                404,
                "no service instance named \"web\"",
            ),
            (
                ServiceError::NothingNamed("ghost".into()).into(),
                404,
                "no running service or task named \"ghost\"",
            ),
            (
                ServiceError::UnknownGroup(name("nosuch")).into(),
                404,
                "no service group named \"nosuch\"",
            ),
            (
                ServiceError::GroupNotInConfig {
                    group: name("nosuch"),
                    origin: "rack.yaml".into(),
                }
                .into(),
                404,
                "no service group named \"nosuch\" in rack.yaml",
            ),
            (
                ServiceError::InstanceTaken {
                    name: name("web"),
                    origin: "system".into(),
                }
                .into(),
                409,
                "service web already runs as part of system",
            ),
            (
                ServiceError::BadInstanceName {
                    base: name("web"),
                    suffix: "Bad_Name".into(),
                    source: bad_name(),
                }
                .into(),
                422,
                &instance_message,
            ),
            (
                FrameworkError::Unknown(name("dnssl")).into(),
                404,
                "no framework named \"dnssl\"; register it first",
            ),
            (
                FrameworkError::Inactive {
                    name: name("dnssl"),
                    why: "unregistered".into(),
                }
                .into(),
                409,
                "framework dnssl is not active (unregistered); register it again",
            ),
            (
                FrameworkError::ReservedName(name("torc")).into(),
                409,
                "framework name \"torc\" is the controller's own",
            ),
            (
                FrameworkError::NameIsService {
                    name: name("web"),
                    origin: "system".into(),
                }
                .into(),
                409,
                "web is a service of this rack (system); a framework cannot launch under its name",
            ),
            (
                FrameworkError::NameTaken {
                    name: name("worker"),
                    owner: name("dnssl"),
                }
                .into(),
                409,
                "the name worker is taken by a task of framework dnssl",
            ),
            (
                FrameworkError::NotItsTask {
                    id: name("web.1"),
                    owner: name(BUILTIN_FRAMEWORK),
                    framework: name("dnssl"),
                }
                .into(),
                409,
                "task web.1 belongs to the controller, not to framework dnssl",
            ),
            (
                FrameworkError::NotItsTask {
                    id: name("job.2"),
                    owner: name("other"),
                    framework: name("dnssl"),
                }
                .into(),
                409,
                "task job.2 belongs to framework other, not to framework dnssl",
            ),
            (
                AnnounceError::BadName(bad_name()).into(),
                422,
                &name_message,
            ),
            (
                AnnounceError::BadController(bad_name()).into(),
                422,
                &controller_message,
            ),
            (
                AnnounceError::BadIp("nowhere".into()).into(),
                422,
                "ip: \"nowhere\" is not an IP address",
            ),
            (
                AnnounceError::OwnController("torc".into()).into(),
                409,
                "controller \"torc\" is this controller; announced tasks belong to sub-schedulers",
            ),
            (
                AnnounceError::IsService {
                    name: name("api"),
                    origin: "system".into(),
                }
                .into(),
                409,
                "api is a service of this rack (system); a sub-scheduler cannot announce it",
            ),
            (
                AnnounceError::Taken {
                    name: name("ext"),
                    owner: "dnssl".into(),
                    by: "other".into(),
                }
                .into(),
                409,
                "ext is announced by dnssl; other cannot take it over",
            ),
            (
                CredentialError::UnknownToken("t-1".into()).into(),
                404,
                "no token with id \"t-1\"",
            ),
            (
                CredentialError::UnknownSecret(name("kv-root")).into(),
                404,
                "no rack secret named kv-root",
            ),
        ];
        for (e, status, message) in cases {
            assert_eq!(e.to_string(), message);
            assert_eq!(e.status().as_u16(), status, "{e}");
        }
    }
}
