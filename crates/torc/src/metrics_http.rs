//! `GET /metrics` for the roles with no HTTP server of their own (`torc dns`, `torc
//! network-agent`, and `torc kv`, whose port speaks only gRPC): Prometheus' text format,
//! rendered afresh for each scrape by the role's own function
//! (`torc_dns::DnsHandle::prometheus`, the network agent's counters,
//! `torc_kv::KvMetrics::prometheus`), followed by
//! the process's own families (`torc_prom::process`: CPU, memory, file descriptors).
//!
//! Plain HTTP, read-only, off unless `--metrics-listen` (kv: `--listen-metrics-urls`) is given: bind it to a loopback or
//! management address, as one does node_exporter's. Only `/metrics` answers (any other path
//! 404, any other method 405, both from axum), so a scrape can change nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

/// Binds `addr` now (so a taken port fails the start with a clear error) and returns the
/// server, which answers each `GET /metrics` with `render()` until dropped.
pub fn bind(
    addr: SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("cannot listen for /metrics on {addr}"))?;
    let render = Arc::new(render);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                let mut body = render();
                let mut process = torc_prom::Text::new();
                torc_prom::process(&mut process);
                body.push_str(&process.into_string());
                (
                    [(axum::http::header::CONTENT_TYPE, torc_prom::CONTENT_TYPE)],
                    body,
                )
            }
        }),
    );
    Ok(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, %addr, "cannot serve /metrics");
                return;
            }
        };
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, %addr, "serving /metrics stopped");
        }
    })
}
