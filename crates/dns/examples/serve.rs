//! A standalone DNS server for benchmarks and manual tests, until the `torc dns` role exists.
//!
//! ```text
//! cargo run --release -p torc-dns --example serve -- --listen 127.0.0.1:5353 \
//!     --zone homer.ave=db.homer.ave [--snapshot rack.json] [--upstream 9.9.9.9:53] [--threads 2]
//! ```

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, bail};
use torc_dns::{DnsConfig, DnsServer, DnsSnapshot, Listeners, StaticZone};

fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:5353".parse()?;
    let mut config = DnsConfig::default();
    let mut snapshot: Option<PathBuf> = None;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--zone" => {
                let v = value()?;
                let (origin, path) = v.split_once('=').context("--zone ORIGIN=PATH")?;
                config
                    .static_zones
                    .push(StaticZone::from_file(path.as_ref(), Some(origin))?);
            }
            "--snapshot" => snapshot = Some(value()?.into()),
            "--upstream" => config.upstreams.push(value()?.parse()?),
            "--threads" => threads = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let (server, handle) = DnsServer::new(config);
    if let Some(path) = snapshot {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let snapshot: DnsSnapshot = serde_json::from_str(&text)?;
        handle.apply(&snapshot)?;
    }
    let listeners = Listeners::bind(listen, threads)?;
    eprintln!(
        "serving DNS on {} with {} UDP thread(s)",
        listeners.local_addr()?,
        listeners.udp.len()
    );
    // UDP runs on its own threads; the runtime only carries TCP and forwarding.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(server.serve(listeners, async {
        let _ = tokio::signal::ctrl_c().await;
    }))?;
    Ok(())
}
