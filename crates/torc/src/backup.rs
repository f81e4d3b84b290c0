//! `torc backup` and `torc restore`: the controller's state saved to a file and brought back
//! (`torc_controller::backup` says what the file holds and how a restore checks it).
//!
//! `torc backup -o FILE` asks the acting controller for a backup, checks the file it got as a
//! restore would (the sha256, every secret opening under the passphrase) and only then writes
//! it, whole or not at all, mode 0600. `torc restore --from FILE --data-dir DIR` writes a new
//! store for `torc controller --data-dir DIR`; the controller must not run on it.
//!
//! The passphrase comes from `--passphrase-file` (read as every password file,
//! `torc_tls::files::read_password_file`) or `TORC_BACKUP_PASSPHRASE`,
//! never from an argument, which any user could read in the process table.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::cli::{Target, runtime};

/// Where the passphrase comes from.
#[derive(Args)]
pub struct Passphrase {
    /// A file holding the passphrase (at least 12 bytes; one line, a trailing line break is
    /// not part of it). Default: the TORC_BACKUP_PASSPHRASE environment variable.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

impl Passphrase {
    fn read(&self) -> anyhow::Result<String> {
        let value = match &self.passphrase_file {
            // As every password file of torc's: less one trailing line break, one line only.
            Some(path) => torc_tls::files::read_password_file(path)?,
            None => std::env::var("TORC_BACKUP_PASSPHRASE").map_err(|_| {
                anyhow::anyhow!(
                    "a backup's secrets are sealed under a passphrase: give --passphrase-file FILE or set TORC_BACKUP_PASSPHRASE"
                )
            })?,
        };
        Ok(value)
    }
}

#[derive(Args)]
pub struct BackupArgs {
    /// The file to write (replaced whole if it exists).
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file (`torc backup -o FILE`).
    #[arg(long)]
    from: PathBuf,
    /// The controller's data dir to create the store in (`torc controller --data-dir DIR`);
    /// it must hold no store yet.
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
}

/// `torc backup -o FILE`.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let passphrase = args.passphrase.read()?;
    let client = args.target.client()?;
    let file = runtime()?.block_on(client.backup(&passphrase))?;
    let (_, body) = torc_controller::backup::decode(
        &file,
        &args.output.display().to_string(),
        passphrase.as_bytes(),
    )
    .context("the controller's backup does not check")?;
    torc_durable::write_atomic_mode(&args.output, &file, 0o600)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let records: usize =
        body.tables.values().map(|t| t.len()).sum::<usize>() + body.secrets.sealed.len();
    if args.target.json() {
        return crate::cli::print_json(&serde_json::json!({
            "file": args.output,
            "bytes": file.len(),
            "records": records,
            "controller": body.controller,
            "taken_at": body.taken_at,
        }));
    }
    println!(
        "wrote {} ({} bytes): {records} records from controller {}, checked; its secrets open with the passphrase",
        args.output.display(),
        file.len(),
        body.controller,
    );
    Ok(())
}

/// `torc restore --from FILE --data-dir DIR`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let passphrase = args.passphrase.read()?;
    let r = torc_controller::backup::restore(&args.from, &args.data_dir, passphrase.as_bytes())?;
    let counts: Vec<String> = (r.records.iter())
        .map(|(table, n)| format!("{n} {table}"))
        .collect();
    println!(
        "restored {} into {} (taken by controller {} {}): {}",
        args.from.display(),
        r.store.display(),
        r.controller,
        crate::cli::ago(r.taken_at),
        counts.join(", "),
    );
    println!(
        "start the controller on it: torc controller --data-dir {} ...",
        args.data_dir.display()
    );
    Ok(())
}
