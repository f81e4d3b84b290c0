//! Files that hold secrets (tokens, private keys, passwords).
//!
//! Written whole (temporary file, fsync, rename, fsync of the directory) with mode 0600 from the
//! first byte, in a directory created 0700. Tokens and private keys ([`read_secret`], and
//! `load_key` through it) are read only when no one but the owner can read them, as ssh does
//! with private keys: a secret file readable by others is refused with the command that fixes
//! it, not silently used.
//!
//! The exception is a password file ([`read_password_file`]): read whatever its mode, because
//! operators make these by hand (`echo pw > FILE`, the default umask) and torc's own tests and
//! documented commands do too. The rack's own password files (rack secrets such as `kv-root`)
//! are written 0600 in a 0700 secrets directory by the agent, so in a rack none is readable by
//! others.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use crate::error::TlsError;

/// Creates `dir` (and its parents) with mode 0700 where missing.
pub fn private_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write {
            path: dir.into(),
            error: source,
        })
}

/// Creates `dir` like [`private_dir`] and makes it 0700 if it already existed: for a directory
/// torc owns whole (a controller's or an agent's data, `torc up`'s state), never for one an
/// operator named as the place of a single file.
pub fn own_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt as _;
    private_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|error| {
        TlsError::Write {
            path: dir.into(),
            error,
        }
    })
}

/// Writes `bytes` to `path` atomically with `mode` from the first byte on
/// (`torc_durable::write_atomic_mode`: a temporary file in the same directory, fsync, rename,
/// fsync of the directory).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    Ok(torc_durable::write_atomic_mode(path, bytes, mode)?)
}

/// Writes a secret: `path` gets mode 0600, its directory is created 0700 if missing.
pub fn write_secret(path: &Path, text: &str) -> Result<(), TlsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir)?;
    }
    write_file(path, text.as_bytes(), 0o600)
}

/// Reads a secret, trimmed. Refused when the file is readable or writable by group or others,
/// when someone else owns it (it could be planted), or when it is empty.
pub fn read_secret(path: &Path) -> Result<String, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.into(),
        error: source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::Exposed {
            path: path.into(),
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(TlsError::NotOwned {
            path: path.into(),
            owner: meta.uid(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(TlsError::Empty { path: path.into() });
    }
    Ok(text)
}

/// Why a password file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read the password file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the password file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("the password file {} holds more than one line", path.display())]
    MultiLine { path: PathBuf },
}

/// Reads a password (of a kv or tsdb user) from a file: torc takes passwords from files only,
/// since a password on a command line is visible to every user in `ps`. The file's content less
/// one trailing line break (`\n` or `\r\n`), so `echo secret > file` works and a password may
/// still hold spaces; an empty password or one of several lines is refused. Unlike
/// [`read_secret`] it does not check the file's mode or owner: an operator's password file is
/// often made with the default umask (0644), and refusing it would break `echo pw > FILE`.
/// Keeping it private (`chmod 600`, or a 0700 directory) is the operator's part; the rack's own
/// (its secrets directory) are private.
pub fn read_password_file(path: &Path) -> Result<String, PasswordFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
        path: path.into(),
        source,
    })?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(PasswordFileError::Empty { path: path.into() });
    }
    if password.contains('\n') {
        return Err(PasswordFileError::MultiLine { path: path.into() });
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn password_files_lose_one_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let read = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            read_password_file(&path).map_err(|e| e.to_string())
        };
        assert_eq!(read("a", "s3cret\n"), Ok("s3cret".to_string()));
        assert_eq!(read("b", "s3cret\r\n"), Ok("s3cret".to_string()));
        assert_eq!(read("c", " spaced pw "), Ok(" spaced pw ".to_string()));
        let empty = read("d", "\n").unwrap_err();
        assert!(empty.ends_with("/d is empty"), "{empty}");
        let two = read("e", "a\nb\n").unwrap_err();
        assert!(two.ends_with("/e holds more than one line"), "{two}");
        let missing = read_password_file(&dir.path().join("nope")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read the password file "),
            "{missing}"
        );
    }

    #[test]
    fn secrets_are_private_and_exposed_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("token");
        write_secret(&path, "s3cret\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(read_secret(&path).unwrap(), "s3cret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path).unwrap_err().to_string();
        assert!(
            err.contains("readable by others") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_secret(&path)
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
    }
}
