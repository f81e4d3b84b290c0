//! Starting and stopping a private containerd.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::layout::{DaemonError, DaemonOptions, Layout, check_programs, io_error};
use crate::client::{Client, Version};
use crate::error::Error;
use crate::ids::Namespace;

/// A private containerd this process started.
pub struct Daemon {
    pub(super) layout: Layout,
    /// `None` once stopped or swept (the drop then has nothing to do).
    pub(super) child: Option<tokio::process::Child>,
    pid: u32,
    version: Version,
    pub(super) options: DaemonOptions,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("layout", &self.layout)
            .field("pid", &self.pid)
            .field("version", &self.version)
            .finish()
    }
}

impl Daemon {
    /// Starts containerd on `layout` and waits until it answers `Version`.
    pub async fn start(layout: Layout, options: DaemonOptions) -> Result<Daemon, DaemonError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(DaemonError::NotRoot);
        }
        let containerd = check_programs(&options)?;
        layout.check()?;
        let socket = layout.socket();
        if answers(&socket).await {
            return Err(DaemonError::AlreadyRunning { socket });
        }
        for dir in [&layout.root, &layout.run] {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let config = layout.config_path();
        torc_durable::write_atomic(&config, layout.config_toml()?.as_bytes())?;
        let log_path = layout.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        let log_err = log.try_clone().map_err(io_error(&log_path))?;
        let mut child = tokio::process::Command::new(&containerd)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(io_error(&containerd))?;
        let pid = child.id().unwrap_or_default();
        torc_durable::write_atomic(&layout.pid_path(), format!("{pid}\n").as_bytes())?;
        let deadline = Instant::now() + options.start_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DaemonError::Exited {
                    socket,
                    status: status.to_string(),
                    log: log_tail(&log_path),
                });
            }
            let last = match version(&socket).await {
                Ok(version) => {
                    tracing::debug!(pid, socket = %socket.display(), "private containerd answers");
                    return Ok(Daemon {
                        layout,
                        child: Some(child),
                        pid,
                        version,
                        options,
                    });
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(DaemonError::NoAnswer {
                    socket,
                    seconds: options.start_timeout.as_secs(),
                    last,
                    log: log_tail(&log_path),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn socket(&self) -> PathBuf {
        self.layout.socket()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What `Version` answered at the start.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// A client of this daemon in `namespace`.
    pub async fn client(&self, namespace: Namespace) -> Result<Client, Error> {
        Client::connect(self.socket(), namespace).await
    }

    /// Ends containerd (SIGTERM; SIGKILL after the stop timeout). Its shims and containers
    /// keep running: stop them first, or [`sweep`](super::sweep()) after.
    pub async fn stop(mut self) -> Result<(), DaemonError> {
        let child = self.child.take();
        if let Some(mut child) = child {
            terminate(&mut child, self.options.stop_timeout).await;
        }
        Ok(())
    }
}

/// Whether a containerd answers `Version` on `socket` (within a second).
pub(super) async fn answers(socket: &Path) -> bool {
    socket.exists()
        && tokio::time::timeout(Duration::from_secs(1), version(socket))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
}

async fn version(socket: &Path) -> Result<Version, Error> {
    let any = Namespace::new("default").expect("a valid namespace");
    Client::connect(socket, any)
        .await?
        .with_call_timeout(Duration::from_secs(2))
        .version()
        .await
}

/// SIGTERM, then SIGKILL after `timeout`; reaps the child.
pub(super) async fn terminate(child: &mut tokio::process::Child, timeout: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(timeout, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, "containerd did not exit after SIGTERM: killing it");
    }
    let _ = child.kill().await;
}

/// The end of containerd's log, for an error: its error and fatal lines when it has any.
fn log_tail(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("({} unreadable)", path.display());
    };
    let lines: Vec<&str> = text.lines().collect();
    let bad: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("level=error") || l.contains("level=fatal"))
        .collect();
    let chosen = if bad.is_empty() { &lines[..] } else { &bad[..] };
    let start = chosen.len().saturating_sub(3);
    let tail = chosen[start..].join(" | ");
    if tail.is_empty() {
        format!("({} is empty)", path.display())
    } else {
        tail
    }
}
