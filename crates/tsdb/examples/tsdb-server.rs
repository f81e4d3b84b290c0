//! Stand-alone torc-tsdb server for benchmarks (`torc tsdb` will replace it).
//! Usage: tsdb-server LISTEN_ADDR DATA_DIR
use std::sync::Arc;

/// The torc binary's allocator, so benches measure what ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8086".into());
    let dir = args.next().unwrap_or_else(|| "./tsdb-data".into());
    let db = Arc::new(torc_tsdb::Tsdb::open(&dir, torc_tsdb::Options::default())?);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("tsdb-server listening on {}", listener.local_addr()?);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    torc_tsdb::serve(listener, db.clone(), shutdown).await?;
    db.compact().await?;
    let (bytes, values) = db.disk_usage();
    eprintln!("segments: {bytes} bytes, {values} values");
    Ok(())
}
