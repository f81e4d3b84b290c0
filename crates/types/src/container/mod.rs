//! What a container task runs: an image ([`ImageRef`]), the host paths it mounts
//! ([`Volume`]) and the `docker run` options torc maps ([`ContainerOptions`], read from the
//! original's `parameters` by [`Parameters`]). A [`TaskSpec`](crate::TaskSpec) with a
//! `container` runs that image under the node's container engine; its command, arguments,
//! environment, resources, network and privilege stay the task's own keys.
//!
//! Pure vocabulary, as the rest of this crate: the engine, the image store and the OCI
//! runtime spec are the agent's.

mod image;
mod options;
mod parameters;
mod volume;

use serde::{Deserialize, Serialize};

pub use image::{
    DEFAULT_REGISTRY, DEFAULT_TAG, ImageRef, ImageRefError, ImageRefProblem, RegistryHost,
    RegistryHostError,
};
pub use options::{
    CAPABILITIES, Capability, ContainerOptions, Device, ExtraHost, NetworkMode, OptionError,
    Signal, Tmpfs, Ulimit, UnknownNetwork, ValueProblem,
};
pub use parameters::{ParameterError, Parameters, RefusedReason};
pub use volume::{DATA_DIR_VAR, Volume, VolumeError};

/// The container part of a task spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The image, normalised (`docker.io/library/busybox:latest`).
    pub image: ImageRef,
    /// Bind mounts, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "ContainerOptions::is_default")]
    pub options: ContainerOptions,
}

/// Why a container spec cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerSpecError {
    /// Two volumes or tmpfs mounts at one place: the second would hide the first.
    #[error("container path {path} is mounted twice")]
    MountedTwice { path: String },
    #[error("container option {0}")]
    Option(#[from] OptionError),
}

impl ContainerSpec {
    /// The image with no volumes and Docker's defaults.
    pub fn new(image: ImageRef) -> ContainerSpec {
        ContainerSpec {
            image,
            volumes: Vec::new(),
            options: ContainerOptions::default(),
        }
    }

    /// Checks what its types do not: no place mounted twice, the free-text options.
    pub fn validate(&self) -> Result<(), ContainerSpecError> {
        let mut seen = std::collections::BTreeSet::new();
        let mounts = (self.volumes.iter().map(Volume::container_path))
            .chain(self.options.tmpfs.iter().map(|t| t.path.as_str()));
        for path in mounts {
            let path = path.trim_end_matches('/');
            if !seen.insert(path) {
                return Err(ContainerSpecError::MountedTwice {
                    path: path.to_string(),
                });
            }
        }
        self.options.check()?;
        Ok(())
    }

    /// The first volume that mounts a host path outside the service's data directory:
    /// such a task needs the same grant as a `privileged` one.
    pub fn privileged_volume(&self) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.needs_privilege())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec::new("busybox".parse().unwrap())
    }

    #[test]
    fn mounts_twice_are_refused() {
        let mut s = spec();
        s.volumes
            .push(Volume::new("$DATA_DIR", "/data", false).unwrap());
        s.volumes.push(Volume::new("/srv", "/srv", true).unwrap());
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.privileged_volume().map(Volume::host_path), Some("/srv"));
        s.options
            .tmpfs
            .push(Tmpfs::parse("/data/:size=1m").unwrap());
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "container path /data is mounted twice"
        );
    }

    #[test]
    fn options_are_checked() {
        let mut s = spec();
        s.options.workdir = Some("relative".into());
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "container option workdir \"relative\": must be an absolute path"
        );
    }

    #[test]
    fn serde_shape() {
        let mut s = spec();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"image":"docker.io/library/busybox:latest"}"#
        );
        s.volumes
            .push(Volume::new("$DATA_DIR", "/data", true).unwrap());
        s.options.host_ipc = true;
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"image":"docker.io/library/busybox:latest","volumes":[{"host_path":"$DATA_DIR","container_path":"/data","read_only":true}],"options":{"host_ipc":true}}"#
        );
        assert_eq!(serde_json::from_str::<ContainerSpec>(&json).unwrap(), s);
        let err = serde_json::from_str::<ContainerSpec>(r#"{"image":"x","ports":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `ports`"), "{err}");
        let err = serde_json::from_str::<ContainerSpec>(r#"{"image":"X"}"#).unwrap_err();
        assert!(err.to_string().contains("must be lowercase"), "{err}");
    }
}
