//! Shared by the collector's tests: a real torc tsdb, served in this process.

use std::sync::Arc;

/// Serves `db` on a free loopback port until the test ends; its base URL.
pub async fn serve(db: Arc<torc_tsdb::Tsdb>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(torc_tsdb::serve(listener, db, std::future::pending()));
    url
}
