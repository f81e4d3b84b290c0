//! Limits on names, checked before a name reaches the disk or the index, and the directory
//! name a database or retention policy gets.
//!
//! The limits are influxd 1.6's: a database or retention policy name has at most
//! [`MAX_NAME_LEN`] bytes (longer: `name too long`, influxd's words, with the detail added),
//! a series key (measurement and tags, as written) at most [`MAX_KEY_LEN`] bytes, and so does a
//! series key plus 4 plus a field key (influxd stores `key#!~#field`; `max key length
//! exceeded: N > 65535`, influxd's text). Before these checks a 200-byte database name was
//! accepted, its directory name (the name in hex) was too long for the filesystem, and the
//! store could no longer write to it nor open at all (issue 14).
//!
//! Directory names: a name of up to [`HEX_NAME_LEN`] bytes is its hex spelling (the layout of
//! format 1); a longer one is `~` and the SHA-256 of the name in hex, 65 characters whatever
//! the name's length, so every name up to the limit fits the filesystem's 255. The first
//! directory of a long name moves the data directory to format 2 (see `storage`), so a torc
//! that does not know this spelling refuses to open it instead of taking the directory for a
//! dropped database's and removing it.
//!
//! Invariant: no name longer than [`MAX_NAME_LEN`] is created, and no point whose keys exceed
//! [`MAX_KEY_LEN`] is stored; names already on disk are never refused at open (`storage`
//! reports them and serves them).

use sha2::{Digest, Sha256};

/// Longest database or retention policy name, in bytes (influxd's `MaxNameLen`).
pub const MAX_NAME_LEN: usize = 255;

/// Longest series key, and longest series key + 4 + field key, in bytes (influxd's
/// `MaxKeyLength`).
pub const MAX_KEY_LEN: usize = 65_535;

/// Longest name whose directory is its hex spelling (twice as long: 254 characters).
pub const HEX_NAME_LEN: usize = 127;

/// What kind of name a [`NameError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Database,
    RetentionPolicy,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Database => "database",
            NameKind::RetentionPolicy => "retention policy",
        })
    }
}

/// A name refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "name too long: a {kind} name has at most {MAX_NAME_LEN} bytes, {preview} has {len}",
        preview = preview(name)
    )]
    TooLong {
        kind: NameKind,
        name: String,
        len: usize,
    },
}

/// Checks a database or retention policy name that is about to be created.
pub fn check_name(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            name: name.to_string(),
            len: name.len(),
        });
    }
    Ok(())
}

/// The start of a long name, quoted, for messages.
pub fn preview(name: &str) -> String {
    let mut end = name.len().min(24);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if end < name.len() {
        format!("{:?}...", &name[..end])
    } else {
        format!("{name:?}")
    }
}

/// A series key (or a series key and a field key) of `len` bytes, over [`MAX_KEY_LEN`]; the
/// message is influxd's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("max key length exceeded: {len} > {MAX_KEY_LEN}")]
pub struct KeyTooLong {
    pub len: usize,
}

/// influxd's error for a series key of `len` bytes, if that is too long.
pub fn series_key_error(len: usize) -> Option<KeyTooLong> {
    (len > MAX_KEY_LEN).then_some(KeyTooLong { len })
}

/// influxd's error for a field key of `field_len` bytes in a series key of `key_len` bytes, if
/// the two together (with influxd's 4-byte separator) are too long.
pub fn field_key_error(key_len: usize, field_len: usize) -> Option<KeyTooLong> {
    let len = key_len.saturating_add(4).saturating_add(field_len);
    (len > MAX_KEY_LEN).then_some(KeyTooLong { len })
}

/// The directory name of a database or retention policy (see the module doc).
pub fn dir_name(name: &str) -> String {
    if name.len() <= HEX_NAME_LEN {
        name.bytes().map(|b| format!("{b:02x}")).collect()
    } else {
        let digest = Sha256::digest(name.as_bytes());
        let mut out = String::with_capacity(65);
        out.push('~');
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// True when `name`'s directory needs format 2.
pub fn needs_long_dir(name: &str) -> bool {
    name.len() > HEX_NAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_fit_the_filesystem() {
        assert_eq!(dir_name("ab"), "6162");
        let short = "x".repeat(HEX_NAME_LEN);
        assert_eq!(dir_name(&short).len(), 2 * HEX_NAME_LEN);
        for n in [HEX_NAME_LEN + 1, MAX_NAME_LEN, 10_000] {
            let d = dir_name(&"x".repeat(n));
            assert_eq!(d.len(), 65);
            assert!(d.starts_with('~'));
        }
        assert_ne!(dir_name(&"x".repeat(200)), dir_name(&"x".repeat(201)));
    }

    #[test]
    fn errors_name_the_limit() {
        let e = check_name(NameKind::Database, &"é".repeat(150)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "name too long: a database name has at most 255 bytes, {:?}... has 300",
                "é".repeat(12)
            )
        );
        assert!(check_name(NameKind::RetentionPolicy, &"r".repeat(255)).is_ok());
        assert_eq!(series_key_error(65_535), None);
        assert_eq!(
            series_key_error(65_536).map(|e| e.to_string()).as_deref(),
            Some("max key length exceeded: 65536 > 65535")
        );
        assert_eq!(field_key_error(1, 65_530), None);
        assert_eq!(field_key_error(1, 65_531), Some(KeyTooLong { len: 65_536 }));
    }
}
