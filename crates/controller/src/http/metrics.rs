//! `GET /metrics`: the controller's own figures in Prometheus' text format, for a monitoring
//! system to scrape with a viewer token (`authorization: credentials_file` in a Prometheus
//! scrape config): whether it acts and under which epoch, the rack as it sees it (nodes, tasks
//! by state, each service's instances), what committing changes costs (`crate::stats`), and
//! the process's own families.
//!
//! Every controller answers for itself, a standby too (its rack is its own copy). A read: it
//! changes nothing.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(ctl): State<Arc<Controller>>) -> impl IntoResponse {
    use torc_prom::Kind::Gauge;
    let acting = ctl.acting().is_ok();
    let (epoch, (status, tasks)) = ctl.read_numbered(|r| (r.status(), r.task_counts()));
    let mut text = torc_prom::Text::new();
    text.family(
        "torc_controller_acting",
        Gauge,
        "1 when this controller leads and takes changes, 0 for a standby or a leader that lapsed.",
    )
    .sample(&[], acting);
    text.family(
        "torc_controller_epoch",
        Gauge,
        "The leadership epoch this controller's rack was built for (0 before it ever led).",
    )
    .sample(&[], epoch.0);
    text.family(
        "torc_controller_nodes",
        Gauge,
        "Nodes of the rack config, by whether their agent reports.",
    )
    .sample(&[("state", "active")], status.nodes_active)
    .sample(
        &[("state", "inactive")],
        status.nodes_total.saturating_sub(status.nodes_active),
    );
    let mut family = text.family(
        "torc_controller_tasks",
        Gauge,
        "Tasks the controller lists, by state (ended ones until they are forgotten).",
    );
    for (state, n) in tasks {
        family.sample(&[("state", state.as_str())], n);
    }
    for (name, help, pick) in [
        (
            "torc_controller_service_instances_desired",
            "Instances of a system service the config asks for.",
            (|s| s.desired) as fn(&torc_api::ServiceStatus) -> usize,
        ),
        (
            "torc_controller_service_instances_running",
            "Instances of a system service running.",
            |s| s.running,
        ),
        (
            "torc_controller_service_instances_healthy",
            "Instances of a system service passing their health check.",
            |s| s.healthy,
        ),
        (
            "torc_controller_service_restarts",
            "Restarts of a system service's instances (as the status counts them).",
            |s| s.restarts as usize,
        ),
    ] {
        let mut family = text.family(name, Gauge, help);
        for s in &status.services {
            family.sample(&[("service", s.name.as_str())], pick(s));
        }
    }
    ctl.stats.write(&mut text);
    torc_prom::process(&mut text);
    (
        [(header::CONTENT_TYPE, torc_prom::CONTENT_TYPE)],
        text.into_string(),
    )
}
