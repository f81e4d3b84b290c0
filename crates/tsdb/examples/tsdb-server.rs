//! Stand-alone torc-tsdb server for benchmarks (`torc tsdb` will replace it).
//! Usage: tsdb-server LISTEN_ADDR DATA_DIR [limits=on|off] [cert=PEM key=PEM]
//! `limits=off` turns the query limits off (`max-select-*` 0, no `query-timeout`), for
//! `bench/tsdb.sh limits` to compare with the defaults; `cert=` and `key=` serve HTTPS as `torc
//! tsdb --https-certificate/--https-private-key` does, for `bench/tsdb.sh tls`.
use std::sync::Arc;

/// The torc binary's allocator, so benches measure what ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8086".into());
    let dir = args.next().unwrap_or_else(|| "./tsdb-data".into());
    let mut options = torc_tsdb::Options::default();
    let (mut cert, mut key) = (None, None);
    for arg in args {
        match arg.split_once('=') {
            Some(("limits", "on")) => {}
            Some(("limits", "off")) => {
                options.max_select_point = 0;
                options.max_select_series = 0;
                options.max_select_buckets = 0;
                options.query_timeout = std::time::Duration::ZERO;
            }
            Some(("cert", file)) => cert = Some(std::path::PathBuf::from(file)),
            Some(("key", file)) => key = Some(std::path::PathBuf::from(file)),
            _ => anyhow::bail!(
                "unknown argument {arg:?}: limits=on, limits=off, cert=FILE or key=FILE"
            ),
        }
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(Arc::new(torc_tls::server_config(
            torc_tls::Identity::from_files(&cert, &key)?,
            torc_tls::ClientAuth::None,
        )?)),
        (None, None) => None,
        _ => anyhow::bail!("cert= and key= go together"),
    };
    let db = Arc::new(torc_tsdb::Tsdb::open(&dir, options)?);
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
    torc_tsdb::serve_tls(listener, db.clone(), tls, shutdown).await?;
    db.compact().await?;
    let (bytes, values) = db.disk_usage();
    eprintln!("segments: {bytes} bytes, {values} values");
    Ok(())
}
