//! `torc tsdb backup` and `torc tsdb restore`: the client side of a running tsdb's
//! `POST /torc/backup` and `POST /torc/restore` (see `torc_tsdb::backup` and
//! `torc_tsdb::restore`), and a restore into an empty data dir without a server.
//!
//! A backup is written to `FILE.partial`, checked end to end (every record's checksum, the
//! file's, the end record) and fsynced before it is renamed to FILE: FILE is either absent or a
//! whole, checked backup.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use tokio::io::AsyncWriteExt as _;
use torc_tsdb::backup::{BackupReader, End, Item};
use torc_tsdb::restore::{Restored, Selection};

/// Where a running tsdb is and who asks it.
#[derive(Args)]
pub struct Server {
    /// The tsdb's URL (`torc tsdb --listen`).
    #[arg(long, default_value = "http://127.0.0.1:8086")]
    url: String,
    /// An admin user (when the tsdb has authentication enabled).
    #[arg(long, requires = "password_file")]
    user: Option<String>,
    /// A file holding that user's password.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Trust this CA (PEM) for an https URL (a rack's tsdb: the rack CA, `pki/ca.pem`).
    #[arg(long)]
    cacert: Option<PathBuf>,
}

impl Server {
    fn post(&self, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        // As every rack client: no proxy from the environment, and the rack CA (rustls over
        // aws-lc-rs, torc-tls's config) as the only root when one is given.
        let mut client = reqwest::Client::builder().no_proxy();
        if let Some(ca) = &self.cacert {
            let roots = torc_tls::load_certs(ca)?;
            client = client.tls_backend_preconfigured(torc_tls::client_config(&roots, None)?);
        }
        let mut req = client.build()?.post(url);
        if let (Some(user), Some(file)) = (&self.user, &self.password_file) {
            let password = torc_tls::files::read_password_file(file)?;
            req = req.basic_auth(user, Some(password));
        }
        Ok(req)
    }
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    server: Server,
    /// Back up this database only (default: every database).
    #[arg(long)]
    db: Option<String>,
    /// The backup file to write (refused if it exists).
    #[arg(long)]
    file: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    server: Server,
    /// Restore into a new data dir (absent or empty) instead of a running tsdb; no tsdb may
    /// serve it meanwhile.
    #[arg(long, conflicts_with_all = ["url", "user", "cacert"])]
    data_dir: Option<PathBuf>,
    /// Restore this database only (default: every database of the backup).
    #[arg(long)]
    db: Option<String>,
    /// The name it takes (default: its own); a database of that name must not exist.
    #[arg(long, requires = "db")]
    newdb: Option<String>,
    /// The backup file.
    #[arg(long)]
    file: PathBuf,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The text of a tsdb's error answer (`{"error": "..."}`), or the body as it is.
async fn refusal(what: &str, resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(body);
    anyhow::anyhow!("{what} refused ({status}): {}", msg.trim())
}

pub fn run_backup(args: BackupArgs) -> anyhow::Result<()> {
    if args.file.exists() {
        anyhow::bail!("{} exists: choose a new file", args.file.display());
    }
    let partial = PathBuf::from(format!("{}.partial", args.file.display()));
    let began = Instant::now();
    let r = runtime()?.block_on(download(&args, &partial));
    let end = r.and_then(|()| check_file(&partial));
    let end = match end {
        Ok(end) => end,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &args.file)
        .with_context(|| format!("renaming {} to {}", partial.display(), args.file.display()))?;
    sync_parent(&args.file)?;
    let bytes = std::fs::metadata(&args.file)?.len();
    println!(
        "backed up {} database(s) to {}: {} segments, {} values, {} bytes in {:.2} s",
        end.databases,
        args.file.display(),
        end.segments,
        end.values,
        bytes,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn download(args: &BackupArgs, partial: &Path) -> anyhow::Result<()> {
    let mut req = args.server.post("/torc/backup")?;
    if let Some(db) = &args.db {
        req = req.query(&[("db", db)]);
    }
    let mut resp = req
        .send()
        .await
        .with_context(|| format!("asking {} for a backup", args.server.url))?;
    if !resp.status().is_success() {
        return Err(refusal("backup", resp).await);
    }
    let mut f = tokio::fs::File::create(partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    while let Some(chunk) = resp.chunk().await.context("reading the backup")? {
        f.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
    }
    f.sync_all().await?;
    Ok(())
}

/// Reads a backup file through, checking everything; its end record.
fn check_file(path: &Path) -> anyhow::Result<End> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rd = BackupReader::open(BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("checking {}", path.display()))?;
    loop {
        match rd
            .next_item()
            .with_context(|| format!("checking {}", path.display()))?
        {
            Item::End(end) => return Ok(end),
            Item::Database { .. } | Item::Segment { .. } => {}
        }
    }
}

/// Makes a rename in `path`'s directory durable (`.` for a bare file name).
fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = (path.parent()).filter(|p| !p.as_os_str().is_empty());
    Ok(torc_durable::sync_dir(parent.unwrap_or(Path::new(".")))?)
}

pub fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    let began = Instant::now();
    let sel = Selection {
        db: args.db.clone(),
        newdb: args.newdb.clone(),
    };
    let restored = match &args.data_dir {
        Some(dir) => runtime()?.block_on(restore_offline(dir, &args.file, sel))?,
        None => runtime()?.block_on(restore_online(&args, sel))?,
    };
    for r in &restored {
        println!(
            "restored {}{}: {} retention policies, {} continuous queries, {} segments, {} values",
            r.database,
            if r.from != r.database {
                format!(" (from {})", r.from)
            } else {
                String::new()
            },
            r.retention_policies,
            r.continuous_queries,
            r.segments,
            r.values
        );
    }
    println!("in {:.2} s", began.elapsed().as_secs_f64());
    Ok(())
}

async fn restore_online(args: &RestoreArgs, sel: Selection) -> anyhow::Result<Vec<Restored>> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut req = args.server.post("/torc/restore")?.body(file);
    if let Some(db) = &sel.db {
        req = req.query(&[("db", db)]);
    }
    if let Some(newdb) = &sel.newdb {
        req = req.query(&[("newdb", newdb)]);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("sending {} to {}", args.file.display(), args.server.url))?;
    if !resp.status().is_success() {
        return Err(refusal("restore", resp).await);
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        restored: Vec<Restored>,
    }
    let a: Answer = resp.json().await.context("reading the restore's answer")?;
    Ok(a.restored)
}

async fn restore_offline(dir: &Path, file: &Path, sel: Selection) -> anyhow::Result<Vec<Restored>> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty: restore into an empty data dir, or into a running tsdb (--url)",
            dir.display()
        );
    }
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let created = !dir.exists();
    let r = async {
        let db = Arc::new(torc_tsdb::Tsdb::open(dir, torc_tsdb::Options::default())?);
        let reader = BufReader::with_capacity(1 << 20, f);
        let restored = torc_tsdb::restore::restore(db.clone(), reader, sel).await?;
        db.flush().await?;
        anyhow::Ok(restored)
    }
    .await;
    if r.is_err() {
        // Leave the directory as it was: absent, or empty.
        let _ = if created {
            std::fs::remove_dir_all(dir)
        } else {
            std::fs::read_dir(dir).and_then(|entries| {
                entries.flatten().try_for_each(|e| {
                    if e.path().is_dir() {
                        std::fs::remove_dir_all(e.path())
                    } else {
                        std::fs::remove_file(e.path())
                    }
                })
            })
        };
    }
    r
}
