//! A bind mount into a container: a host path (or the service's data directory) and where it
//! appears inside.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The placeholder for a service's data directory on its node (`$DATA_DIR`, as in a task's
/// arguments). In a volume's host path it may be followed by `/sub/dirs`.
pub const DATA_DIR_VAR: &str = "$DATA_DIR";

/// A host directory or file bind-mounted into a container, read-only or read-write. Valid by
/// construction and on deserialisation:
/// - the host path is absolute, or `$DATA_DIR` optionally followed by `/sub/path`;
/// - the container path is absolute and not `/`;
/// - neither has a `..` component or a NUL byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "VolumeFields", into = "VolumeFields")]
pub struct Volume {
    host_path: String,
    container_path: String,
    read_only: bool,
}

/// A volume as written, before its checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeFields {
    host_path: String,
    container_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
}

/// Why a volume cannot be mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "host path {0:?} must be absolute or start with $DATA_DIR (a named volume is not a \
         host path: torc mounts only host paths)"
    )]
    HostNotAbsolute(String),
    #[error("container path {0:?} must be absolute")]
    ContainerNotAbsolute(String),
    #[error("container path must not be / (it would hide the image)")]
    ContainerRoot,
    #[error("path {0:?} must not contain a `..` component")]
    DotDot(String),
    #[error("path {0:?} must not contain a NUL byte")]
    Nul(String),
    #[error("{0:?} is not HOST:CONTAINER[:ro|rw] (e.g. $DATA_DIR:/data or /srv/x:/x:ro)")]
    Syntax(String),
    #[error("volume option {option:?} of {text:?} is not supported; torc accepts ro and rw")]
    Option { text: String, option: String },
}

impl Volume {
    pub fn new(
        host_path: impl Into<String>,
        container_path: impl Into<String>,
        read_only: bool,
    ) -> Result<Volume, VolumeError> {
        let (host_path, container_path) = (host_path.into(), container_path.into());
        for path in [&host_path, &container_path] {
            if path.contains('\0') {
                return Err(VolumeError::Nul(path.clone()));
            }
            if path.split('/').any(|c| c == "..") {
                return Err(VolumeError::DotDot(path.clone()));
            }
        }
        let data_dir = host_path
            .strip_prefix(DATA_DIR_VAR)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !host_path.starts_with('/') && !data_dir {
            return Err(VolumeError::HostNotAbsolute(host_path));
        }
        if !container_path.starts_with('/') {
            return Err(VolumeError::ContainerNotAbsolute(container_path));
        }
        if container_path.bytes().all(|b| b == b'/') {
            return Err(VolumeError::ContainerRoot);
        }
        Ok(Volume {
            host_path,
            container_path,
            read_only,
        })
    }

    /// Docker's `-v HOST:CONTAINER[:ro|rw]`.
    pub fn parse_docker(text: &str) -> Result<Volume, VolumeError> {
        let mut parts = text.split(':');
        let (Some(host), Some(container)) = (parts.next(), parts.next()) else {
            return Err(VolumeError::Syntax(text.to_string()));
        };
        let read_only = match (parts.next(), parts.next()) {
            (None, _) | (Some("rw"), None) => false,
            (Some("ro"), None) => true,
            (Some(option), None) => {
                return Err(VolumeError::Option {
                    text: text.to_string(),
                    option: option.to_string(),
                });
            }
            (Some(_), Some(_)) => return Err(VolumeError::Syntax(text.to_string())),
        };
        if host.is_empty() || container.is_empty() {
            return Err(VolumeError::Syntax(text.to_string()));
        }
        Volume::new(host, container, read_only)
    }

    /// As written: an absolute path, or `$DATA_DIR[/sub]`.
    pub fn host_path(&self) -> &str {
        &self.host_path
    }

    pub fn container_path(&self) -> &str {
        &self.container_path
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// For a host path under `$DATA_DIR`, what follows it (`""` or `/sub/dir`); `None` for
    /// any other host path.
    pub fn data_dir_subpath(&self) -> Option<&str> {
        self.host_path
            .strip_prefix(DATA_DIR_VAR)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether it mounts a host path outside the service's data directory: that reaches the
    /// node's files, which only an admin or the rack config may grant (as `privileged`).
    pub fn needs_privilege(&self) -> bool {
        self.data_dir_subpath().is_none()
    }
}

impl fmt::Display for Volume {
    /// Docker's form, `HOST:CONTAINER[:ro]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host_path, self.container_path)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl TryFrom<VolumeFields> for Volume {
    type Error = VolumeError;
    fn try_from(v: VolumeFields) -> Result<Self, VolumeError> {
        Volume::new(v.host_path, v.container_path, v.read_only)
    }
}

impl From<Volume> for VolumeFields {
    fn from(v: Volume) -> Self {
        VolumeFields {
            host_path: v.host_path,
            container_path: v.container_path,
            read_only: v.read_only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_volumes() {
        let v = Volume::new("$DATA_DIR", "/data", false).unwrap();
        assert_eq!(v.data_dir_subpath(), Some(""));
        assert!(!v.needs_privilege());
        let v = Volume::new("$DATA_DIR/cache", "/var/cache/x", true).unwrap();
        assert_eq!(v.data_dir_subpath(), Some("/cache"));
        assert_eq!(v.to_string(), "$DATA_DIR/cache:/var/cache/x:ro");
        let v = Volume::new("/sys", "/sys", true).unwrap();
        assert!(v.needs_privilege());
        assert_eq!(v.data_dir_subpath(), None);
        assert_eq!(
            Volume::parse_docker("/run:/run").unwrap(),
            Volume::new("/run", "/run", false).unwrap()
        );
        assert!(Volume::parse_docker("/a:/b:ro").unwrap().read_only());
        assert!(!Volume::parse_docker("/a:/b:rw").unwrap().read_only());
    }

    #[test]
    fn bad_volumes_say_why() {
        let err = |h: &str, c: &str| Volume::new(h, c, false).unwrap_err().to_string();
        assert_eq!(
            err("data", "/data"),
            "host path \"data\" must be absolute or start with $DATA_DIR (a named volume is \
             not a host path: torc mounts only host paths)"
        );
        assert!(err("$DATA_DIRX", "/d").contains("must be absolute"));
        assert_eq!(err("/a", "b"), "container path \"b\" must be absolute");
        assert_eq!(
            err("/a", "/"),
            "container path must not be / (it would hide the image)"
        );
        assert_eq!(
            err("/a", "//"),
            "container path must not be / (it would hide the image)"
        );
        assert_eq!(
            err("$DATA_DIR/../etc", "/x"),
            "path \"$DATA_DIR/../etc\" must not contain a `..` component"
        );
        assert!(err("/a", "/x/..").contains("`..`"));
        assert!(err("/a\0", "/x").contains("NUL"));
        // `..` inside a name is a name.
        assert!(Volume::new("/a..b", "/x..y", false).is_ok());

        let docker = |t: &str| Volume::parse_docker(t).unwrap_err().to_string();
        assert_eq!(
            docker("/a"),
            "\"/a\" is not HOST:CONTAINER[:ro|rw] (e.g. $DATA_DIR:/data or /srv/x:/x:ro)"
        );
        assert!(docker(":/a").contains("is not HOST:CONTAINER"));
        assert!(docker("/a:/b:ro:z").contains("is not HOST:CONTAINER"));
        assert_eq!(
            docker("/a:/b:z"),
            "volume option \"z\" of \"/a:/b:z\" is not supported; torc accepts ro and rw"
        );
        assert!(docker("myvol:/data").contains("named volume"));
    }

    #[test]
    fn serde_checks_and_refuses_unknown_fields() {
        let v: Volume =
            serde_json::from_str(r#"{"host_path":"$DATA_DIR","container_path":"/d"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"host_path":"$DATA_DIR","container_path":"/d"}"#
        );
        let e = serde_json::from_str::<Volume>(r#"{"host_path":"x","container_path":"/d"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("must be absolute"), "{e}");
        let e = serde_json::from_str::<Volume>(
            r#"{"host_path":"/x","container_path":"/d","mode":"ro"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `mode`"), "{e}");
    }
}
