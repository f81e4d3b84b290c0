//! Tasks: a container's running process, created by containerd's runc shim. Create, start,
//! signal, delete, look up, list, wait for the end (through the events, see
//! [`Client::wait_task`]), and [`Client::remove`], the idempotent clean-up of a task, its
//! container and its rootfs snapshot after the end.
//!
//! Output goes to two files the caller made (`TaskIo::Files`): the shim opens each for append
//! and copies the container's stdout and stderr into them (measured, design §1). containerd
//! requires both or neither. Or it goes to a logging program the shim starts beside the
//! container (`TaskIo::Logger`, containerd's `binary://` log URI), which reads it from pipes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::sys::signal::Signal;

use crate::client::{Client, path_text, time};
use crate::containers::RuncOptions;
use crate::error::{Error, found};
use crate::events::{Event, Notice, quote, topic};
use crate::ids::ContainerId;
use crate::proto::containerd::services::tasks::v1 as pb;
use crate::proto::containerd::types::Mount;
use crate::proto::containerd::v1::types::Status;

/// Where a task's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskIo {
    /// Nowhere (`/dev/null`).
    Null,
    /// Appended to two existing files (absolute paths; the shim does not create them).
    Files { stdout: PathBuf, stderr: PathBuf },
    /// Read by a logging program the shim starts with the container (containerd's
    /// `binary://` log URI): the program gets the container's stdout and stderr as the read
    /// ends of two pipes on descriptors 3 and 4, and descriptor 5 to close once it is ready;
    /// its arguments are `args`' keys and values, as pairs in no set order (the shim takes
    /// them from a URL query). The shim sends it SIGTERM when the task is deleted, and
    /// SIGKILL 12 s later.
    Logger {
        program: PathBuf,
        args: Vec<(String, String)>,
    },
}

/// What [`Client::remove`] found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// The task's exit, if a (stopped) task was deleted.
    pub task: Option<Exit>,
    pub container: bool,
    pub snapshot: bool,
}

/// What `Tasks.Create` needs.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: ContainerId,
    /// The rootfs mounts: the container's snapshot's (`Snapshots.Prepare` or `Mounts`).
    pub rootfs: Vec<Mount>,
    pub io: TaskIo,
    /// The runc shim's options for this task; the container's when `None`.
    pub runc: Option<RuncOptions>,
}

/// A task's state, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

impl From<Status> for TaskStatus {
    fn from(status: Status) -> TaskStatus {
        match status {
            Status::Unknown => TaskStatus::Unknown,
            Status::Created => TaskStatus::Created,
            Status::Running => TaskStatus::Running,
            Status::Stopped => TaskStatus::Stopped,
            Status::Paused => TaskStatus::Paused,
            Status::Pausing => TaskStatus::Pausing,
        }
    }
}

/// A task as containerd has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: ContainerId,
    /// The init process's pid in the host's pid namespace (0 before it was created).
    pub pid: u32,
    pub status: TaskStatus,
    /// Meaningful once `Stopped`: see [`Exit`].
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

/// How a task's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + the signal for a process killed by one (137 for SIGKILL),
    /// as containerd reports it.
    pub status: u32,
    pub at: Option<SystemTime>,
}

impl Exit {
    /// The signal that ended the process, if the status says one did.
    pub fn signal(&self) -> Option<Signal> {
        let number = self.status.checked_sub(128)?;
        Signal::try_from(i32::try_from(number).ok()?).ok()
    }
}

fn io_path(id: &str, name: &str, path: &Path) -> Result<String, Error> {
    const CALL: &str = "Tasks.Create";
    let text = path_text(CALL, id, path)?;
    let refuse = |reason: &str| {
        Err(Error::Request {
            call: CALL,
            target: id.to_string(),
            reason: format!("{name} {}: {reason}", path.display()),
        })
    };
    if !path.is_absolute() {
        return refuse("not an absolute path");
    }
    // The shim parses the path as a URL (containerd's pkg/process/io.go): a `%` or a control
    // character would fail there, with a less helpful message.
    if text.contains('%') || text.chars().any(char::is_control) {
        return refuse("the shim cannot take a path with '%' or control characters");
    }
    Ok(text)
}

/// `text` as a URL query key or value: everything but unreserved characters percent-encoded.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// `Tasks.Create`: the shim starts and runc creates the container's init process, which
    /// waits for [`Client::start_task`]. Returns its pid.
    pub async fn create_task(&self, new: &NewTask) -> Result<u32, Error> {
        const CALL: &str = "Tasks.Create";
        let id = new.id.as_str();
        let (stdout, stderr) = match &new.io {
            TaskIo::Null => (String::new(), String::new()),
            TaskIo::Files { stdout, stderr } => (
                io_path(id, "stdout", stdout)?,
                io_path(id, "stderr", stderr)?,
            ),
            TaskIo::Logger { program, args } => {
                let query: Vec<String> = args
                    .iter()
                    .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
                    .collect();
                let uri = format!(
                    "binary://{}?{}",
                    io_path(id, "logger", program)?,
                    query.join("&")
                );
                // containerd's shim takes the log URI from stdout; both are set, as its own
                // client does.
                (uri.clone(), uri)
            }
        };
        let options = match &new.runc {
            Some(runc) => Some(runc.to_any(CALL, id)?),
            None => None,
        };
        let request = pb::CreateTaskRequest {
            container_id: id.to_string(),
            rootfs: new.rootfs.clone(),
            stdout,
            stderr,
            options,
            ..Default::default()
        };
        let answer = self
            .unary(CALL, id, self.tasks_api().create(request))
            .await?;
        Ok(answer.pid)
    }

    /// `Tasks.Start`: the init process runs. Returns its pid.
    pub async fn start_task(&self, id: &ContainerId) -> Result<u32, Error> {
        let request = pb::StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let answer = self
            .unary("Tasks.Start", id.as_str(), self.tasks_api().start(request))
            .await?;
        Ok(answer.pid)
    }

    /// `Tasks.Kill`: `signal` to the init process, or with `all` to every process of the
    /// container (runc's `kill --all`; what a SIGKILL after the grace period wants, since a
    /// pid 1 without a handler ignores SIGTERM).
    pub async fn kill_task(
        &self,
        id: &ContainerId,
        signal: Signal,
        all: bool,
    ) -> Result<(), Error> {
        let request = pb::KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal: signal as u32,
            all,
        };
        self.unary("Tasks.Kill", id.as_str(), self.tasks_api().kill(request))
            .await
    }

    /// `Tasks.Delete` of a stopped task: the shim runs `runc delete` (the cgroup goes),
    /// unmounts the rootfs and exits. `None` if there was no task. A running task is refused
    /// (`FailedPrecondition`).
    pub async fn delete_task(&self, id: &ContainerId) -> Result<Option<Exit>, Error> {
        let request = pb::DeleteTaskRequest {
            container_id: id.to_string(),
        };
        Ok(found(
            self.unary(
                "Tasks.Delete",
                id.as_str(),
                self.tasks_api().delete(request),
            )
            .await,
        )?
        .map(|answer| Exit {
            status: answer.exit_status,
            at: time(answer.exited_at),
        }))
    }

    /// `Tasks.Get`; `None` if the container has no task (or there is no container).
    pub async fn task(&self, id: &ContainerId) -> Result<Option<TaskInfo>, Error> {
        const CALL: &str = "Tasks.Get";
        let request = pb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let Some(answer) = found(
            self.unary(CALL, id.as_str(), self.tasks_api().get(request))
                .await,
        )?
        else {
            return Ok(None);
        };
        let process = answer
            .process
            .ok_or_else(|| self.answer_error(CALL, id.as_str(), "no process"))?;
        self.task_info(CALL, process).map(Some)
    }

    /// `Tasks.List`: every task of the namespace.
    pub async fn tasks(&self) -> Result<Vec<TaskInfo>, Error> {
        const CALL: &str = "Tasks.List";
        let answer = self
            .unary(
                CALL,
                "",
                self.tasks_api().list(pb::ListTasksRequest::default()),
            )
            .await?;
        answer
            .tasks
            .into_iter()
            .map(|p| self.task_info(CALL, p))
            .collect()
    }

    /// Everything of container `id` after its task ended: the (stopped) task, the container
    /// record, its rootfs snapshot. Idempotent: what is gone already is skipped, so a caller
    /// that crashed half-way repeats it. A task that still runs is not killed: the error is
    /// containerd's refusal (`FailedPrecondition`).
    pub async fn remove(&self, id: &ContainerId) -> Result<Removed, Error> {
        let mut removed = Removed {
            task: self.delete_task(id).await?,
            ..Removed::default()
        };
        if let Some(container) = self.container(id).await? {
            removed.container = self.delete_container(id).await?;
            if !container.snapshot_key.is_empty() {
                removed.snapshot = self
                    .remove_snapshot(&container.snapshotter, &container.snapshot_key)
                    .await?;
            }
        }
        Ok(removed)
    }

    fn task_info(
        &self,
        call: &'static str,
        p: crate::proto::containerd::v1::types::Process,
    ) -> Result<TaskInfo, Error> {
        // `Tasks.Get` leaves `container_id` empty; the init process's own id is the
        // container's.
        let container = if p.container_id.is_empty() {
            p.id.clone()
        } else {
            p.container_id.clone()
        };
        let id =
            ContainerId::new(container).map_err(|e| self.answer_error(call, "", e.to_string()))?;
        Ok(TaskInfo {
            id,
            pid: p.pid,
            status: p.status().into(),
            exit_status: p.exit_status,
            exited_at: time(p.exited_at),
        })
    }

    /// Waits until task `id`'s init process has ended, and says how. Subscribes to its
    /// `/tasks/exit` first and then asks `Tasks.Get`, so an exit before, during or after the
    /// call is seen; if the event stream breaks (containerd restarted), it subscribes again
    /// and asks again. Fails with [`Error::is_not_found`] if there is no such task.
    pub async fn wait_task(&self, id: &ContainerId) -> Result<Exit, Error> {
        let filter = format!(
            "topic=={},event.container_id=={},event.id=={}",
            quote(topic::TASK_EXIT),
            quote(id.as_str()),
            quote(id.as_str())
        );
        let mut events = self.subscribe(vec![filter]);
        loop {
            match events.next().await {
                Notice::Live => match self.task(id).await? {
                    Some(task) if task.status == TaskStatus::Stopped => {
                        return Ok(Exit {
                            status: task.exit_status,
                            at: task.exited_at,
                        });
                    }
                    Some(_) => {}
                    None => {
                        return Err(Error::Call {
                            socket: self.socket().to_path_buf(),
                            call: "Tasks.Get",
                            target: id.to_string(),
                            code: tonic::Code::NotFound,
                            message: "no such task".into(),
                        });
                    }
                },
                Notice::Event(envelope) => {
                    if let Event::TaskExit {
                        container_id,
                        exit_status,
                        exited_at,
                        ..
                    } = envelope.event
                        && container_id == id.as_str()
                    {
                        return Ok(Exit {
                            status: exit_status,
                            at: exited_at,
                        });
                    }
                }
                Notice::Lost(error) => {
                    tracing::debug!(%error, task = %id, "waiting for a task's exit: events lost");
                }
            }
        }
    }
}
