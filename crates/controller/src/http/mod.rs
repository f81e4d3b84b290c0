//! The controller's HTTP API, `/api/v1`, and the original ToRC API beside it: JSON in and out,
//! proper verbs and status codes, and every error a JSON body `{"error": "...", "status": N}`
//! that says what was wrong (`error`, `extract`).
//!
//! One module per resource, each listing its own routes:
//! - `nodes` (and a node's power), `images` (a node's container images, from its agent),
//!   `tasks`, `agents` (the agent protocol), `frameworks`,
//!   `services` (services, groups, announcements), `status` (status and the event feed),
//!   `config` (a new rack config applied: `torc apply`),
//!   `metrics` (the controller's own Prometheus figures, `GET /metrics`),
//!   `controllers` (the rack's controllers, who leads, handing over),
//!   `network` (the switch's routes for the network agent, and its report);
//! - the UI's back ends: `names` (the DNS snapshot and lookups), `state` (the state store
//!   browser), `query` (the time-series database), `ui` (the assets);
//! - `session` (UI sessions, token reviews) and `credentials` (tokens and rack secrets);
//! - `compat`: the original ToRC routes (`/nodes`, `/services/running`, ...).
//!
//! Who may call each route is decided before any handler runs, in one table (`access`); what a
//! controller that does not act (a standby) answers instead, in another (`leader`);
//! handlers that act on a caller's behalf read it from the `Caller` extension. `proxy` reaches
//! agents, frameworks and system services for a caller.

mod access;
mod agents;
mod backup;
mod compat;
mod config;
mod controllers;
mod credentials;
mod error;
mod extract;
mod frameworks;
mod images;
mod leader;
mod longpoll;
mod metrics;
mod names;
mod network;
mod nodes;
mod proxy;
mod query;
mod services;
mod session;
mod state;
mod status;
mod tasks;
mod ui;

use std::sync::Arc;

use axum::{Router, middleware};

use crate::controller::Controller;

/// Every route, behind the access policy; anything else is a JSON 404.
pub fn router(ctl: Arc<Controller>) -> Router {
    Router::new()
        .merge(nodes::routes())
        .merge(images::routes())
        .merge(status::routes())
        .merge(config::routes())
        .merge(metrics::routes())
        .merge(controllers::routes())
        .merge(names::routes())
        .merge(network::routes())
        .merge(state::routes())
        .merge(query::routes())
        .merge(tasks::routes())
        .merge(frameworks::routes())
        .merge(services::routes())
        .merge(compat::routes())
        .merge(ui::routes())
        .merge(agents::routes())
        .merge(session::routes())
        .merge(credentials::routes())
        .merge(backup::routes())
        // Runs after the access policy (layers added later run first): a caller is checked
        // before a standby names the leader to it.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&ctl),
            leader::follow_the_leader,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&ctl),
            access::authorize,
        ))
        .fallback(error::not_found)
        .with_state(ctl)
}
