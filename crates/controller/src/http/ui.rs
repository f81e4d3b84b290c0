//! The web UI: static assets compiled into the binary (`crates/controller/ui/`). The UI uses
//! only `/api/v1`.

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/", get(ui_index))
        .route("/ui/app.js", get(ui_js))
        .route("/ui/style.css", get(ui_css))
}

fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn ui_index() -> axum::response::Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    )
}

async fn ui_js() -> axum::response::Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    )
}

async fn ui_css() -> axum::response::Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    )
}
