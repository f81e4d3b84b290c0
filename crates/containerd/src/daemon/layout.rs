//! Where a private containerd keeps its files, its config, how it is run, and what can fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::containers::RuncOptions;
use crate::error::Error;
use crate::ids::Namespace;

/// Plugins a private containerd does without: the CRI plugin (Kubernetes), snapshotters other
/// than overlayfs and native, and tracing.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.tracing",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
];

/// The longest path a unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The cgroup parent of a namespace's containers: `/torc/<namespace>`, so a container's
/// cgroup is `/torc/<namespace>/<id>`, unique per containerd namespace (per agent and rack),
/// and the sweep knows which directories to remove.
pub fn cgroup_parent(namespace: &Namespace) -> String {
    format!("/torc/{namespace}")
}

/// Where a private containerd keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// containerd's `root`: content, snapshots, metadata.
    pub root: PathBuf,
    /// Everything of one run of the daemon.
    pub run: PathBuf,
}

impl Layout {
    /// `dir/root` and `dir/run` (a test's temporary directory).
    pub fn under(dir: &Path) -> Layout {
        Layout {
            root: dir.join("root"),
            run: dir.join("run"),
        }
    }

    /// The gRPC socket clients connect to.
    pub fn socket(&self) -> PathBuf {
        self.run.join("containerd.sock")
    }
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.run.join("containerd.sock.ttrpc")
    }
    pub fn config_path(&self) -> PathBuf {
        self.run.join("config.toml")
    }
    /// containerd's `state` (bundles, with each running container's rootfs mount).
    pub fn state(&self) -> PathBuf {
        self.run.join("state")
    }
    /// The `opt` plugin's directory (`/opt/containerd` by default).
    pub fn opt(&self) -> PathBuf {
        self.run.join("opt")
    }
    /// runc's state directory for this daemon's containers (see [`Layout::runc_options`]).
    pub fn runc_root(&self) -> PathBuf {
        self.run.join("runc")
    }
    /// containerd's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.run.join("containerd.log")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.run.join("containerd.pid")
    }

    /// The runc options every container of this daemon must carry, so runc's state lives in
    /// [`Layout::runc_root`] and not in `/run/containerd/runc`, shared with every other
    /// containerd.
    pub fn runc_options(&self) -> RuncOptions {
        RuncOptions {
            root: self.runc_root(),
            binary_name: "runc".into(),
        }
    }

    /// containerd's config (version 2) for this layout.
    pub fn config_toml(&self) -> Result<String, DaemonError> {
        let plugins: Vec<String> = DISABLED_PLUGINS
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect();
        Ok(format!(
            "# Written by torc for a private containerd; rewritten at each start.\n\
             version = 2\n\
             root = {}\n\
             state = {}\n\
             disabled_plugins = [{}]\n\
             [grpc]\n  address = {}\n\
             [ttrpc]\n  address = {}\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = {}\n",
            toml_string(&self.root)?,
            toml_string(&self.state())?,
            plugins.join(", "),
            toml_string(&self.socket())?,
            toml_string(&self.ttrpc_socket())?,
            toml_string(&self.opt())?,
        ))
    }

    pub(super) fn check(&self) -> Result<(), DaemonError> {
        let socket = self.ttrpc_socket();
        let length = socket.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            return Err(DaemonError::SocketPath {
                path: socket,
                length,
            });
        }
        Ok(())
    }
}

fn toml_string(path: &Path) -> Result<String, DaemonError> {
    let text = path.to_str().ok_or_else(|| DaemonError::Path {
        path: path.to_path_buf(),
        reason: "not UTF-8",
    })?;
    if text.chars().any(char::is_control) {
        return Err(DaemonError::Path {
            path: path.to_path_buf(),
            reason: "it has control characters",
        });
    }
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// What starting, stopping or sweeping a private containerd can fail on.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{program} is not installed ({hint})")]
    Missing {
        program: &'static str,
        hint: &'static str,
    },
    #[error(
        "containerd needs root (measured: containerd as a user fails to chown its ttrpc socket)"
    )]
    NotRoot,
    #[error("{}: {reason}", path.display())]
    Path { path: PathBuf, reason: &'static str },
    #[error("socket path {} is {length} bytes; a unix socket's path holds at most 107", path.display())]
    SocketPath { path: PathBuf, length: usize },
    #[error("a containerd already answers at {}", socket.display())]
    AlreadyRunning { socket: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] torc_durable::WriteError),
    #[error("containerd exited ({status}) before answering at {}; its log ends: {log}", socket.display())]
    Exited {
        socket: PathBuf,
        status: String,
        log: String,
    },
    #[error("containerd did not answer at {} within {seconds} s (last: {last}); its log ends: {log}", socket.display())]
    NoAnswer {
        socket: PathBuf,
        seconds: u64,
        last: String,
        log: String,
    },
    #[error(transparent)]
    Client(#[from] Error),
    #[error("sweeping the containerd at {}: {}", socket.display(), failures.join("; "))]
    Sweep {
        socket: PathBuf,
        failures: Vec<String>,
    },
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to run containerd.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The containerd binary; `containerd` on `PATH` when `None`.
    pub binary: Option<PathBuf>,
    /// How long containerd may take to answer `Version` (55–75 ms measured under load).
    pub start_timeout: Duration,
    /// How long containerd may take to exit after SIGTERM before it is killed.
    pub stop_timeout: Duration,
}

impl Default for DaemonOptions {
    fn default() -> DaemonOptions {
        DaemonOptions {
            binary: None,
            start_timeout: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// A program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// The programs a private containerd needs: containerd itself, its runc shim and runc.
pub fn check_programs(options: &DaemonOptions) -> Result<PathBuf, DaemonError> {
    let containerd = match &options.binary {
        Some(path) => path.clone(),
        None => which("containerd").ok_or(DaemonError::Missing {
            program: "containerd",
            hint: "apt-get install containerd",
        })?,
    };
    if which("containerd-shim-runc-v2").is_none() {
        return Err(DaemonError::Missing {
            program: "containerd-shim-runc-v2",
            hint: "apt-get install containerd",
        });
    }
    if which("runc").is_none() {
        return Err(DaemonError::Missing {
            program: "runc",
            hint: "apt-get install runc",
        });
    }
    Ok(containerd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_moves_every_path() {
        let layout = Layout::under(Path::new("/tmp/x y"));
        let config = layout.config_toml().unwrap();
        assert!(config.contains("root = \"/tmp/x y/root\"\n"), "{config}");
        assert!(config.contains("state = \"/tmp/x y/run/state\"\n"));
        assert!(config.contains("address = \"/tmp/x y/run/containerd.sock\"\n"));
        assert!(config.contains("address = \"/tmp/x y/run/containerd.sock.ttrpc\"\n"));
        assert!(config.contains("path = \"/tmp/x y/run/opt\"\n"));
        assert!(config.contains("\"io.containerd.grpc.v1.cri\""));
        // No path of the system's containerd (every path is under the layout's).
        for line in config.lines().filter(|l| l.contains('/')) {
            assert!(line.contains("\"/tmp/x y/"), "{line}");
        }
        assert!(
            Layout::under(Path::new("/tmp/a\"b"))
                .config_toml()
                .unwrap()
                .contains("root = \"/tmp/a\\\"b/root\"")
        );
        assert!(Layout::under(Path::new("/tmp/a\nb")).config_toml().is_err());
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let layout = Layout::under(&Path::new("/tmp").join("d".repeat(90)));
        let error = layout.check().unwrap_err().to_string();
        assert!(
            error.contains("a unix socket's path holds at most 107"),
            "{error}"
        );
    }
}
