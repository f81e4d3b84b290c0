//! Runs torc kv as a standalone process, for the benchmark and for poking at
//! it with etcdctl:
//!
//! ```text
//! cargo run --release -p torc-kv --example kv-serve -- --listen 127.0.0.1:2379 --data-dir /tmp/kv
//! ```
//!
//! Prints `listening on ADDR` once it accepts connections; stops on SIGINT or
//! SIGTERM. `--cert-file FILE --key-file FILE [--trusted-ca-file FILE]
//! [--client-cert-auth]` serve over TLS, as `torc kv` does.

use std::path::PathBuf;

use torc_kv::{KvOptions, KvServer, ServerTls};

fn usage() -> ! {
    eprintln!(
        "usage: kv-serve --listen ADDR --data-dir DIR [--retain-revisions N] [--cert-file FILE --key-file FILE [--trusted-ca-file FILE] [--client-cert-auth]]"
    );
    std::process::exit(2);
}

/// The torc binary's allocator, so benches measure what ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:2379".to_string();
    let mut data_dir: Option<PathBuf> = None;
    let mut options = KvOptions::default();
    let (mut cert, mut key, mut trusted_ca) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut client_cert_auth = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--client-cert-auth" {
            client_cert_auth = true;
            continue;
        }
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = value(),
            "--data-dir" => data_dir = Some(value().into()),
            "--retain-revisions" => options.retain_revisions = value().parse()?,
            "--cert-file" => cert = Some(value().into()),
            "--key-file" => key = Some(value().into()),
            "--trusted-ca-file" => trusted_ca = Some(value().into()),
            _ => usage(),
        }
    }
    let data_dir = data_dir.unwrap_or_else(|| usage());
    let tls = match (&cert, &key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_files(
            cert,
            key,
            trusted_ca.as_deref(),
            client_cert_auth,
        )?),
        (None, None) if trusted_ca.is_none() && !client_cert_auth => None,
        _ => usage(),
    };
    let server = KvServer::open(&data_dir, options)?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match tls {
        Some(tls) => {
            server
                .serve_tls(listener, tls, format!("https://{addr}"), shutdown)
                .await?
        }
        None => {
            server
                .serve(listener, format!("http://{addr}"), shutdown)
                .await?
        }
    }
    Ok(())
}
