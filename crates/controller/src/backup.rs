//! Backups of the controller's state (issue 21): what `torc backup` saves and `torc restore`
//! brings back.
//!
//! A backup is every record and counter of the store as of one commit: the acting controller
//! reads its store under the rack's lock, so no change is half in it
//! (`Controller::durable_state`, served by `http/backup.rs`).
//! The file is two parts:
//! - a header line, JSON: `{"format":"torc-controller-backup","version":1,"bytes":N,"sha256":HEX}`;
//! - the body, `N` bytes of JSON ([`Body`]): when and where it was taken, the store's format
//!   version, each table's records by key, the counters, and the sealed secrets.
//!
//! The `secrets` table (rack secrets and the task-token key) is sealed: AES-256-GCM (the
//! store's own [`Sealer`]) under a key derived from the operator's passphrase
//! (PBKDF2-HMAC-SHA256, [`KDF_ITERATIONS`] iterations, a random 16-byte salt), each record with
//! `secrets/<key>` as associated data. Everything else is as the store holds it: tokens'
//! metadata and hashes, never a token. The file is written 0600 all the same.
//!
//! A restore ([`restore`]) checks the whole file before it writes anything: the header, the
//! length, the sha256 of the body, the store format, that every table and counter is one this
//! torc knows, and that every secret opens. A wrong passphrase, a changed byte or a cut file is
//! refused, named. It then writes a new redb store (a sole controller's `controller.redb`)
//! under a temporary name, fsynced, renamed into place: a crash leaves no store, or the whole
//! one. It never writes over a store. The restored store keeps the backup's epoch, so the
//! controller started on it acts under a later one (readers holding the old numbers get the
//! current documents at once, `published`).
//!
//! Not here: restoring into an etcd-backed store. That state lives in the rack's etcd, which
//! `etcdctl snapshot save` backs up (its secrets sealed with the rack's `store.key`, which must
//! be kept with it). A backup taken from such a controller restores as a sole controller's
//! store.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::pbkdf2::{PBKDF2_HMAC_SHA256, derive};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::auth::hex;
use crate::store::seal::{KEY_LEN, Sealer};
use crate::store::{
    EPOCH_KEY, Epoch, FORMAT_KEY, FORMAT_VERSION, Loaded, RedbStore, Store, StoreError, Table,
    Write,
};

/// The header's `format`.
pub const FORMAT: &str = "torc-controller-backup";
/// The header's `version`: bump when the file's layout changes.
pub const VERSION: u64 = 1;
/// The key derivation the secrets are sealed under.
pub const KDF: &str = "pbkdf2-hmac-sha256";
/// PBKDF2 iterations for a new backup (OWASP's 2023 figure for HMAC-SHA256).
pub const KDF_ITERATIONS: u32 = 600_000;
/// The fewest bytes a passphrase has.
pub const MIN_PASSPHRASE: usize = 12;
/// The most bytes a backup file may have (a rack's state is a few MiB).
pub const MAX_FILE: u64 = 1 << 30;
/// Iterations a restore accepts: a file cannot make it spin for hours.
const MAX_ITERATIONS: u32 = 10_000_000;
/// The name of a sole controller's store in its data dir.
pub const STORE_FILE: &str = "controller.redb";

/// The counters a backup carries (the format version is checked on its own, `store_format`).
fn known_counter(name: &str) -> Option<&'static str> {
    [
        EPOCH_KEY,
        crate::rack::GENERATION_KEY,
        crate::rack::NETWORK_SHUT,
    ]
    .into_iter()
    .find(|k| *k == name)
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "a backup passphrase has at least {MIN_PASSPHRASE} bytes; this one has {0} (set TORC_BACKUP_PASSPHRASE or give --passphrase-file)"
    )]
    ShortPassphrase(usize),
    #[error("{path}: {why}")]
    Io { path: String, why: String },
    #[error("{path} is not a torc controller backup: {why}")]
    NotBackup { path: String, why: String },
    #[error("{path} is damaged: {why}; nothing was restored")]
    Damaged { path: String, why: String },
    #[error(
        "the secrets in {path} do not open with this passphrase (another passphrase, or the file was altered); nothing was restored"
    )]
    Passphrase { path: String },
    #[error(
        "{path} already exists: a restore writes a new state store, never over one (stop the controller and move it away, or restore into another --data-dir)"
    )]
    Exists { path: String },
    #[error("the controller's state cannot be read now: {0}")]
    Store(#[from] StoreError),
    #[error("sealing the backup's secrets: {0}")]
    Seal(String),
}

/// The header line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u64,
    bytes: u64,
    sha256: String,
}

/// What a backup holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// When it was read (Unix ms).
    pub taken_at: u64,
    /// The controller that read it.
    pub controller: String,
    /// The store's format version (`store::FORMAT_VERSION`) the records are in.
    pub store_format: u64,
    /// Each table's records by key, but `secrets`.
    pub tables: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// The counters (`meta`), but the format version.
    pub meta: BTreeMap<String, u64>,
    pub secrets: SealedSecrets,
}

/// The `secrets` table, sealed under the passphrase.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecrets {
    pub kdf: String,
    pub iterations: u32,
    /// Base64.
    pub salt: String,
    /// Key → the record's JSON, sealed (`torc-sealed-v1:` + base64).
    pub sealed: BTreeMap<String, String>,
}

/// What a restore wrote, for its report.
#[derive(Debug)]
pub struct Restored {
    pub store: PathBuf,
    pub taken_at: u64,
    pub controller: String,
    /// Records per table, in `Table::ALL` order.
    pub records: Vec<(&'static str, usize)>,
}

/// The associated data a secret is sealed with.
fn secret_aad(key: &str) -> Vec<u8> {
    format!("secrets/{key}").into_bytes()
}

fn sealer(passphrase: &[u8], salt: &[u8], iterations: u32) -> Result<Sealer, BackupError> {
    let iterations = std::num::NonZeroU32::new(iterations)
        .ok_or_else(|| BackupError::Seal("0 PBKDF2 iterations".into()))?;
    let mut key = [0u8; KEY_LEN];
    derive(PBKDF2_HMAC_SHA256, iterations, salt, passphrase, &mut key);
    Sealer::new(&key).map_err(|e| BackupError::Seal(e.to_string()))
}

fn check_passphrase(passphrase: &[u8]) -> Result<(), BackupError> {
    if passphrase.len() < MIN_PASSPHRASE {
        return Err(BackupError::ShortPassphrase(passphrase.len()));
    }
    Ok(())
}

/// The backup file of `loaded` (read by `controller` at `taken_at`), its secrets sealed under
/// `passphrase`.
pub fn encode(
    loaded: &Loaded,
    controller: &str,
    taken_at: u64,
    passphrase: &[u8],
) -> Result<Vec<u8>, BackupError> {
    check_passphrase(passphrase)?;
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| BackupError::Seal("no random bytes for a salt".into()))?;
    let sealer = sealer(passphrase, &salt, KDF_ITERATIONS)?;
    let mut tables = BTreeMap::new();
    let mut sealed = BTreeMap::new();
    for table in Table::ALL {
        let records = loaded.records.get(&table).map_or(&[][..], Vec::as_slice);
        if table == Table::Secrets {
            for (key, value) in records {
                let json = serde_json::to_vec(value).expect("a JSON value serialises");
                let s = (sealer.seal(&secret_aad(key), &json))
                    .map_err(|e| BackupError::Seal(e.to_string()))?;
                let s = String::from_utf8(s).expect("a sealed value is ASCII");
                sealed.insert(key.clone(), s);
            }
        } else {
            let by_key = records.iter().cloned().collect();
            tables.insert(table.name().to_string(), by_key);
        }
    }
    let body = Body {
        taken_at,
        controller: controller.to_string(),
        store_format: FORMAT_VERSION,
        tables,
        meta: (loaded.meta.iter())
            .filter(|(k, _)| k != FORMAT_KEY)
            .cloned()
            .collect(),
        secrets: SealedSecrets {
            kdf: KDF.to_string(),
            iterations: KDF_ITERATIONS,
            salt: base64::engine::general_purpose::STANDARD.encode(salt),
            sealed,
        },
    };
    let body = serde_json::to_vec(&body).expect("a backup body serialises");
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        bytes: body.len() as u64,
        sha256: hex(digest(&SHA256, &body).as_ref()),
    };
    let mut out = serde_json::to_vec(&header).expect("a header serialises");
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// The writes that restore `file` (named `path` in errors), its secrets opened with
/// `passphrase`, and what it holds. Checks everything; writes nothing.
pub fn decode(
    file: &[u8],
    path: &str,
    passphrase: &[u8],
) -> Result<(Vec<Write>, Body), BackupError> {
    let not = |why: String| BackupError::NotBackup {
        path: path.to_string(),
        why,
    };
    let damaged = |why: String| BackupError::Damaged {
        path: path.to_string(),
        why,
    };
    let Some(newline) = file.iter().position(|b| *b == b'\n') else {
        return Err(not("no header line".into()));
    };
    let header: Header = serde_json::from_slice(&file[..newline])
        .map_err(|e| not(format!("its header line does not read: {e}")))?;
    if header.format != FORMAT {
        return Err(not(format!("its format is {:?}", header.format)));
    }
    if header.version != VERSION {
        return Err(not(format!(
            "it is of backup version {}; this torc reads version {VERSION}",
            header.version
        )));
    }
    let body = &file[newline + 1..];
    if body.len() as u64 != header.bytes {
        return Err(damaged(format!(
            "its header says {} bytes follow, but {} do (cut, or appended to)",
            header.bytes,
            body.len()
        )));
    }
    let sum = hex(digest(&SHA256, body).as_ref());
    if sum != header.sha256 {
        return Err(damaged(format!(
            "its sha256 is {sum}, not the {} its header records",
            header.sha256
        )));
    }
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| damaged(format!("its body does not read: {e}")))?;
    if body.store_format != FORMAT_VERSION {
        return Err(not(format!(
            "its records are of store format {}; this torc reads format {FORMAT_VERSION}",
            body.store_format
        )));
    }
    let mut writes = Vec::new();
    for (name, records) in &body.tables {
        let table = (Table::ALL.into_iter())
            .find(|t| t.name() == name && *t != Table::Secrets)
            .ok_or_else(|| not(format!("it holds a table {name:?} this torc does not know")))?;
        for (key, value) in records {
            let bytes = serde_json::to_vec(value).expect("a JSON value serialises");
            writes.push(Write::Put(table, key.clone(), bytes));
        }
    }
    for (name, value) in &body.meta {
        let name = known_counter(name).ok_or_else(|| {
            not(format!(
                "it holds a counter {name:?} this torc does not know"
            ))
        })?;
        writes.push(Write::Meta(name, *value));
    }
    let secrets = &body.secrets;
    if secrets.kdf != KDF {
        return Err(not(format!(
            "its secrets are sealed with {:?}",
            secrets.kdf
        )));
    }
    if secrets.iterations == 0 || secrets.iterations > MAX_ITERATIONS {
        return Err(damaged(format!(
            "its key derivation asks {} iterations (1 to {MAX_ITERATIONS})",
            secrets.iterations
        )));
    }
    if !secrets.sealed.is_empty() {
        check_passphrase(passphrase)?;
        let salt = base64::engine::general_purpose::STANDARD
            .decode(&secrets.salt)
            .map_err(|e| damaged(format!("its salt does not read: {e}")))?;
        let sealer = sealer(passphrase, &salt, secrets.iterations)?;
        for (key, sealed) in &secrets.sealed {
            let json = (sealer.open(&secret_aad(key), sealed.as_bytes())).map_err(|_| {
                BackupError::Passphrase {
                    path: path.to_string(),
                }
            })?;
            serde_json::from_slice::<serde_json::Value>(&json)
                .map_err(|e| damaged(format!("secret {key} does not read: {e}")))?;
            writes.push(Write::Put(Table::Secrets, key.clone(), json));
        }
    }
    Ok((writes, body))
}

/// Restores the backup at `file` into a new store in `data_dir` (a sole controller's
/// `controller.redb`), its secrets opened with `passphrase`.
pub fn restore(file: &Path, data_dir: &Path, passphrase: &[u8]) -> Result<Restored, BackupError> {
    let shown = file.display().to_string();
    let io = |path: &Path, e: &dyn std::fmt::Display| BackupError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| io(file, &e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(BackupError::NotBackup {
            path: shown,
            why: format!("it is larger than {MAX_FILE} bytes"),
        });
    }
    let (writes, body) = decode(&bytes, &shown, passphrase)?;
    let target = data_dir.join(STORE_FILE);
    if target.exists() {
        return Err(BackupError::Exists {
            path: target.display().to_string(),
        });
    }
    torc_tls::files::own_private_dir(data_dir).map_err(|e| io(data_dir, &e))?;
    let partial = data_dir.join(format!("{STORE_FILE}.restoring"));
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&partial, &e)),
    }
    {
        let store = RedbStore::open(&partial)?;
        let epoch: Epoch = store.epoch();
        store.commit(epoch, &writes)?;
    }
    std::fs::rename(&partial, &target).map_err(|e| io(&target, &e))?;
    torc_durable::sync_dir(data_dir).map_err(|e| io(data_dir, &e))?;
    let records = (Table::ALL.into_iter())
        .map(|t| {
            let n = (writes.iter())
                .filter(|w| matches!(w, Write::Put(table, _, _) if *table == t))
                .count();
            (t.name(), n)
        })
        .collect();
    Ok(Restored {
        store: target,
        taken_at: body.taken_at,
        controller: body.controller,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PASS: &[u8] = b"correct horse battery";

    fn loaded() -> Loaded {
        let mut l = Loaded::default();
        l.records
            .insert(Table::Nodes, vec![("n1".into(), json!({"name": "n1"}))]);
        l.records.insert(
            Table::Tasks,
            vec![
                ("t.1".into(), json!({"id": "t.1"})),
                ("t.2".into(), json!({"id": "t.2"})),
            ],
        );
        l.records.insert(
            Table::Secrets,
            vec![("kv-root".into(), json!({"value": "s3cret-value"}))],
        );
        l.meta = vec![
            (EPOCH_KEY.into(), 7),
            (FORMAT_KEY.into(), FORMAT_VERSION),
            (crate::rack::GENERATION_KEY.into(), 42),
        ];
        l
    }

    /// A backup with its body replaced by `body` (and a header that matches it).
    fn with_body(body: &[u8]) -> Vec<u8> {
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            bytes: body.len() as u64,
            sha256: hex(digest(&SHA256, body).as_ref()),
        };
        let mut out = serde_json::to_vec(&header).unwrap();
        out.push(b'\n');
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_backup_restores_every_record_and_counter_and_hides_its_secrets() {
        let file = encode(&loaded(), "c1", 1_000, PASS).unwrap();
        let text = String::from_utf8_lossy(&file);
        assert!(!text.contains("s3cret-value"), "a secret in clear: {text}");
        assert!(text.contains("\"t.2\""), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.torc");
        std::fs::write(&path, &file).unwrap();
        let data = dir.path().join("data");
        let r = restore(&path, &data, PASS).unwrap();
        assert_eq!(r.controller, "c1");
        assert_eq!(r.taken_at, 1_000);
        assert!(r.records.contains(&("tasks", 2)), "{:?}", r.records);
        assert!(r.records.contains(&("secrets", 1)), "{:?}", r.records);
        assert!(!data.join(format!("{STORE_FILE}.restoring")).exists());
        // The restored store, opened as a controller opens it: the next epoch, every record.
        let store = RedbStore::open(&data.join(STORE_FILE)).unwrap();
        assert_eq!(store.epoch(), Epoch(8), "the backup's epoch, then one more");
        let back = store.load().unwrap();
        for table in [Table::Nodes, Table::Tasks, Table::Secrets] {
            assert_eq!(back.records[&table], loaded().records[&table], "{table:?}");
        }
        assert_eq!(back.meta(crate::rack::GENERATION_KEY), Some(42));
        // Never over a store.
        let again = restore(&path, &data, PASS).unwrap_err();
        assert!(matches!(again, BackupError::Exists { .. }), "{again}");
        assert!(again.to_string().contains("already exists"), "{again}");
    }

    #[test]
    fn a_wrong_passphrase_or_a_changed_byte_is_refused_before_anything_is_written() {
        let file = encode(&loaded(), "c1", 1_000, PASS).unwrap();
        let wrong = decode(&file, "b.torc", b"another passphrase").unwrap_err();
        assert!(matches!(wrong, BackupError::Passphrase { .. }), "{wrong}");
        // A byte of the body changed.
        let mut changed = file.clone();
        let at = changed.len() - 10;
        changed[at] ^= 1;
        let e = decode(&changed, "b.torc", PASS).unwrap_err();
        assert!(
            e.to_string().contains("b.torc is damaged: its sha256 is"),
            "{e}"
        );
        // Cut short.
        let e = decode(&file[..file.len() - 1], "b.torc", PASS).unwrap_err();
        assert!(
            e.to_string().contains("but 0 do") || e.to_string().contains("bytes follow"),
            "{e}"
        );
        // Not a backup at all.
        let e = decode(b"hello", "b.torc", PASS).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a torc controller backup: no header line"),
            "{e}"
        );
        let e = decode(b"{\"format\":\"zip\"}\n", "b.torc", PASS).unwrap_err();
        assert!(
            e.to_string().contains("its header line does not read"),
            "{e}"
        );
        // A sealed secret moved to another key does not open.
        let text =
            String::from_utf8(file[file.iter().position(|b| *b == b'\n').unwrap() + 1..].to_vec())
                .unwrap();
        let moved = with_body(text.replace("\"kv-root\"", "\"other\"").as_bytes());
        let e = decode(&moved, "b.torc", PASS).unwrap_err();
        assert!(matches!(e, BackupError::Passphrase { .. }), "{e}");
        // A table this torc does not know.
        let unknown = with_body(text.replace("\"tasks\"", "\"gadgets\"").as_bytes());
        let e = decode(&unknown, "b.torc", PASS).unwrap_err();
        assert!(e.to_string().contains("a table \"gadgets\""), "{e}");
        // A restore of a refused file leaves no store behind.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.torc");
        std::fs::write(&path, &changed).unwrap();
        assert!(restore(&path, &dir.path().join("data"), PASS).is_err());
        assert!(!dir.path().join("data").exists());
    }

    #[test]
    fn a_short_passphrase_is_refused_naming_the_minimum() {
        let e = encode(&loaded(), "c1", 1, b"short").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a backup passphrase has at least 12 bytes; this one has 5 (set TORC_BACKUP_PASSPHRASE or give --passphrase-file)"
        );
    }
}
