//! containerd 1.6 as torc drives it (design: `docs/design/containers.md`): torc's own
//! declarations of the part of containerd's gRPC API it uses ([`proto`]), a [`Client`] over
//! containerd's unix socket with typed calls for containers, tasks, snapshots, leases, events
//! and introspection, [`images`] (import of OCI and docker archives, pull from registries,
//! unpack into snapshots, list, remove: design §5), and [`daemon`], a private containerd for
//! `torc up` and test racks.
//!
//! What it is not: the agent's container runtime (building OCI specs, adoption, exit
//! records: `torc-agent`). It knows nothing of torc's tasks: its only workspace dependencies
//! are the leaves `torc-durable` and `torc-types` (for `ImageRef`, the one normaliser of image
//! names).
//!
//! Invariants:
//! - the protos keep containerd v1.6's package, service, method and message names and field
//!   numbers (no gogoproto options), so a real containerd 1.6 (and 1.7, 2.x, which keep these
//!   v1 services) understands them;
//! - every call carries the client's namespace (`containerd-namespace`) and, when it has one,
//!   its lease (`containerd-lease`); identifiers are checked before they are sent;
//! - every error names the socket and the call ([`Error`]);
//! - a private daemon never uses the system containerd's paths (its socket, root, state,
//!   `/opt/containerd`, runc's `/run/containerd/runc`); see [`daemon`] for the one it cannot
//!   move (shim sockets).
//!
//! Code map: `client` (connection, headers, version, plugins, namespaces, leases),
//! `containers` (containers, snapshots), `tasks` (tasks, [`Client::wait_task`],
//! [`Client::remove`]), `events` ([`Subscription`]), [`daemon`] (`layout`: paths, config,
//! errors; `process`: start and stop; `sweep`), [`images`] (`archive`: import; `pull`;
//! `unpack`; `content`: writes, reads and listings of the content store), `ids` (checked
//! identifiers), `error`.

mod client;
mod containers;
pub mod daemon;
mod error;
mod events;
mod ids;
pub mod images;
mod tasks;

pub use client::{
    Client, DEFAULT_CALL_TIMEOUT, Headers, LEASE_HEADER, Lease, NAMESPACE_HEADER, Plugin, Service,
    Version,
};
pub use containers::{
    ContainerInfo, NewContainer, OVERLAYFS, RUNC_OPTIONS_TYPE_URL, RUNC_V2, RuncOptions,
    SPEC_TYPE_URL, SnapshotInfo,
};
pub use error::Error;
pub use events::{Envelope, Event, Notice, Subscription, topic};
pub use ids::{ContainerId, IdError, MAX_IDENTIFIER, Namespace};
pub use proto::containerd::services::snapshots::v1::Kind as SnapshotKind;
pub use proto::containerd::types::Mount;
pub use tasks::{Exit, NewTask, Removed, TaskInfo, TaskIo, TaskStatus};

/// Code generated from torc's declarations of containerd's API (`proto/`): messages and typed
/// gRPC clients, in modules that follow the proto packages.
pub mod proto {
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    pub mod containerd {
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        pub mod v1 {
            pub mod types {
                tonic::include_proto!("containerd.v1.types");
            }
        }
        pub mod runc {
            pub mod v1 {
                tonic::include_proto!("containerd.runc.v1");
            }
        }
        pub mod events {
            tonic::include_proto!("containerd.events");
        }
        pub mod services {
            pub mod version {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.version.v1");
                }
            }
            pub mod introspection {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.introspection.v1");
                }
            }
            pub mod namespaces {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.namespaces.v1");
                }
            }
            pub mod events {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.events.v1");
                }
            }
            pub mod containers {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.containers.v1");
                }
            }
            pub mod tasks {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.tasks.v1");
                }
            }
            pub mod snapshots {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.snapshots.v1");
                }
            }
            pub mod images {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.images.v1");
                }
            }
            pub mod content {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.content.v1");
                }
            }
            pub mod diff {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.diff.v1");
                }
            }
            pub mod leases {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.leases.v1");
                }
            }
        }
    }
}
