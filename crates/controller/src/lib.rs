//! The torc controller: the rack's brain (the seed's Mesos master plus the ToRC Scheduler).
//!
//! It keeps the rack's nodes, tasks, services and frameworks (`rack`), persists every change
//! before acknowledging it (`store`, through `controller`'s write path), serves the `/api/v1`
//! HTTP API and the original ToRC API (`http`), and hands each agent its desired task set as a
//! whole, generation-numbered document that the agent long-polls for (the DNS role's names and
//! the network agent's routes likewise, numbered `(epoch, generation)`: `published`).
//!
//! It is not a process runtime: agents run the tasks. It does not decide placements itself
//! either: the pure `torc-scheduler` ledger does, on the rack state this crate feeds it.
//!
//! Where to start reading: `rack/mod.rs` (the rules, pure), then `controller.rs` (the lock, the
//! commit, the wake-ups), then `http/mod.rs` (the routes). The modules:
//! - `rack`: the rack's state and rules, no I/O but log lines (its parts: `nodes`, `tasks`,
//!   `supervisor`, `frameworks`, `announcements`, `feed`, `maintenance`, `rollout`, `names`,
//!   `routes`, `compat`);
//! - `controller`: the `Controller` (rack + credentials + store behind one lock), the write
//!   path, the reconciler loop, publishing the DNS names and the switch's routes
//!   (`published`), tasks' credential files;
//! - `http`: the API, split by resource, and the access policy (`http::access`);
//! - `auth` (credentials, rack secrets, task tokens: pure), `sessions` (the UI's sessions);
//! - `store` (the `Store` trait, its redb implementation, which also keeps the durable
//!   epoch, and its etcd one with the sealed secrets and the standby's mirror), `settings` (what the controller takes from the rack config);
//! - `leadership` (pure: whether this controller may act, for the highly available
//!   controller of issue 18; its cases are in `tests/leadership/`), `seat` (the question
//!   asked before every act);
//! - `backup` (the file `torc backup` writes and `torc restore` reads: every record, the
//!   secrets sealed under a passphrase; and the restore into a new redb store);
//! - `health` (the probes of health checks), `power` (the power command: on, off, status);
//! - `apply` (a new rack config for the running controller: `torc apply`, SIGHUP; its
//!   services' rollouts are `rack::rollout`'s);
//! - `clock` (the `now` of the rules: the wall clock read at start, advanced by the boot
//!   clock, so a step of the system clock moves no timeout);
//! - the UI's back ends: `kv` (the state store's client), `lookup` (a DNS query).
//!
//! Who may call what is decided in `http::access` (one policy table, checked before any
//! handler) with the credentials of `auth`; the controller runs TLS with a certificate from the
//! rack CA when it is given one, and then also issues nodes' and tasks' certificates.
//!
//! Invariants:
//! - A change is acknowledged only after it is durable in the store, and served only then: a
//!   failed commit poisons the store and puts the rack back to its last committed state (see
//!   `controller`).
//! - All rack state lives in one `Rack` behind one mutex; handlers never hold it across an
//!   await point.
//! - Without `--insecure`, no route but the UI's shell, `/admin/ping` and logging in answers a
//!   caller without a credential.
//! - No two modules import each other (checked for every crate by
//!   `crates/test-utils/tests/module_cycles.rs`).

mod alerts;
mod apply;
mod auth;
pub mod backup;
mod clock;
mod controller;
mod health;
mod http;
mod kv;
mod leadership;
mod lookup;
mod power;
mod published;
mod rack;
mod roles;
mod seat;
mod sessions;
mod settings;
mod stats;
mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use apply::ApplyError;
pub use auth::{Role, fresh_token};
pub use controller::{AuthMode, ChangeError, Controller, ControllerOptions, StartError};
pub use leadership::LeaderInfo;
pub use lookup::{Lookup, LookupError, lookup};
pub use rack::{
    AnnounceError, CredentialError, FrameworkError, HealthCheck, NodeError, ProbeFailure, Rack,
    RackError, ServiceError, TaskError,
};
pub use roles::ElectedOptions;
pub use seat::NotActing;
pub use settings::{
    ConfigFile, ConfiguredNode, HealthSpec, Probe, RackSettings, ServicePolicy, ServiceTemplate,
    SlaKind,
};
pub use store::StoreError;
/// The etcd key layout (pure), public for its fuzz target (`tests/fuzz.rs`).
pub use store::layout;
/// The etcd store (issue 18), its mirror and the sealing of secrets: public for the
/// controller's roles and `torc controller --store etcd` (the next steps).
pub use store::{EtcdOptions, EtcdStore, Mirror, MirrorError, seal};

impl Controller {
    /// Serves the API on `listener`, and runs the reconciler, the health checks and the alert
    /// rules, until
    /// `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ticker = tokio::spawn(Arc::clone(&self).reconcile());
        let health = tokio::spawn(health::run(Arc::clone(&self)));
        let alerts = tokio::spawn(alerts::run(Arc::clone(&self)));
        let app = http::router(Arc::clone(&self));
        let result = torc_tls::serve(listener, app, self.tls.clone(), shutdown).await;
        ticker.abort();
        health.abort();
        alerts.abort();
        result
    }
}
