//! Sealing the records that must be shared but not read by whoever reads etcd: the task-token
//! key and the rack secrets (docs/design/ha-controller.md §8).
//!
//! AES-256-GCM (aws-lc-rs, as everywhere in torc) under a 32-byte key kept on each controller
//! host (`store.key` beside the CA key, mode 0600), with the record's etcd key as the
//! associated data, so a sealed value moved to another key fails to open. A sealed value is
//! `torc-sealed-v1:` + base64(nonce ‖ ciphertext ‖ tag), with a random 96-bit nonce per seal.
//!
//! Invariants: the key file is created 0600 with fresh random bytes if missing; a file of
//! another size, or readable by its group or others, is refused with an error naming it; a
//! value that fails to open (another key file, another etcd key, tampered) is an error naming
//! the etcd key, never a panic.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;

/// The mark every sealed value starts with.
pub const SEALED_PREFIX: &str = "torc-sealed-v1:";
/// The size of `store.key`.
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("store key {path}: {why}")]
    KeyFile { path: PathBuf, why: String },
    #[error("a store key is {KEY_LEN} bytes, not {len}")]
    KeyLength { len: usize },
    #[error("sealing the value of {key}: {why}")]
    Seal { key: String, why: String },
    #[error(
        "the sealed value of {key} does not open: {why} (another store.key, a value moved from another key, or tampered)"
    )]
    Open { key: String, why: String },
}

/// Seals and opens values under one store key. `Debug` does not show the key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// The sealer of the key in `path`, created (0600, random) if missing.
    pub fn from_file(path: &Path) -> Result<Sealer, SealError> {
        let bad = |why: String| SealError::KeyFile {
            path: path.to_path_buf(),
            why,
        };
        let rng = SystemRandom::new();
        if !path.exists() {
            let mut key = [0u8; KEY_LEN];
            rng.fill(&mut key)
                .map_err(|_| bad("no random bytes for a new key".into()))?;
            // Whole or not at all: the rack's controllers may start at once, and one of them
            // must never read another's half-written key.
            torc_durable::create_new_atomic(path, &key, 0o600)
                .map_err(|e| bad(format!("creating it: {e}")))?;
        }
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode {mode:04o} lets others read it; it must be 0600 (chmod 600 {})",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        if bytes.len() != KEY_LEN {
            return Err(bad(format!(
                "holds {} bytes; a store key is {KEY_LEN}",
                bytes.len()
            )));
        }
        Sealer::new(&bytes).map_err(|e| bad(e.to_string()))
    }

    /// The sealer of a 32-byte key.
    pub fn new(key: &[u8]) -> Result<Sealer, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| SealError::KeyLength { len: key.len() })?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// `value` sealed for the etcd key `key`.
    pub fn seal(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = |why: &str| SealError::Seal {
            key: String::from_utf8_lossy(key).into_owned(),
            why: why.to_string(),
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| fail("no random bytes for a nonce"))?;
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key),
                &mut sealed,
            )
            .map_err(|_| fail("AES-GCM refused"))?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        let mut out = SEALED_PREFIX.as_bytes().to_vec();
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .as_bytes(),
        );
        Ok(out)
    }

    /// The value sealed for the etcd key `key`.
    pub fn open(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = |why: &str| SealError::Open {
            key: String::from_utf8_lossy(key).into_owned(),
            why: why.to_string(),
        };
        let text = sealed
            .strip_prefix(SEALED_PREFIX.as_bytes())
            .ok_or_else(|| fail(&format!("it does not start with {SEALED_PREFIX}")))?;
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| fail("not base64"))?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(fail("too short"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let opened = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key),
                &mut raw[NONCE_LEN..],
            )
            .map_err(|_| fail("authentication failed"))?;
        Ok(opened.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_under_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::from_file(&dir.path().join("store.key")).unwrap();
        let sealed = sealer.seal(b"/p/secrets/a", b"hunter2").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX.as_bytes()));
        assert!(!String::from_utf8_lossy(&sealed).contains("hunter2"));
        assert_eq!(sealer.open(b"/p/secrets/a", &sealed).unwrap(), b"hunter2");
        // Two seals of one value differ (a nonce each).
        assert_ne!(sealer.seal(b"/p/secrets/a", b"hunter2").unwrap(), sealed);
        let err = sealer.open(b"/p/secrets/b", &sealed).unwrap_err();
        assert!(err.to_string().contains("/p/secrets/b"), "{err}");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(sealer.open(b"/p/secrets/a", &tampered).is_err());
        assert!(sealer.open(b"/p/secrets/a", b"hunter2").is_err());
        assert!(sealer.open(b"/p/secrets/a", b"torc-sealed-v1:!!").is_err());
    }

    #[test]
    fn the_key_file_is_made_0600_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let first = Sealer::from_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
        // The same file: the same key.
        let sealed = first.seal(b"k", b"v").unwrap();
        assert_eq!(
            Sealer::from_file(&path)
                .unwrap()
                .open(b"k", &sealed)
                .unwrap(),
            b"v"
        );
        // Another key file: a clear refusal to open.
        let other = Sealer::from_file(&dir.path().join("other.key")).unwrap();
        let err = other.open(b"k", &sealed).unwrap_err();
        assert!(err.to_string().contains("another store.key"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Sealer::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("0640"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let short = dir.path().join("short.key");
        std::fs::write(&short, [0u8; 16]).unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Sealer::from_file(&short).unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
    }
}
