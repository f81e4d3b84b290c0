//! [`Runtimes`]: the agent's two runtimes behind one face. A task with an image goes to the
//! container runtime, any other to the process runtime; a handle that names a container is
//! the container runtime's. No `dyn`: two concrete runtimes and a match.

use std::sync::Arc;

use torc_api::RuntimeInfo;
use torc_types::{TaskId, TaskSpec};

use crate::container::ContainerRuntime;
use crate::runtime::{
    ExitRecord, Found, Handle, Probe, ProcessRuntime, Runtime, RuntimeError, StartRequest, Started,
};

#[derive(Clone)]
pub(crate) struct Runtimes {
    pub process: Arc<ProcessRuntime>,
    /// The container runtime, or why this agent has none (`turned off (--containerd off)`).
    pub containers: Result<Arc<ContainerRuntime>, String>,
}

impl Runtimes {
    /// The process runtime's description, with the container runtime's capability.
    pub fn info(&self) -> RuntimeInfo {
        let mut info = self.process.info();
        match &self.containers {
            Ok(c) => c.fill_info(&mut info),
            Err(why) => {
                info.containers = false;
                info.containers_note = Some(why.clone());
            }
        }
        info
    }

    fn for_spec(&self, spec: &TaskSpec) -> Result<Option<&ContainerRuntime>, RuntimeError> {
        match (&spec.container, &self.containers) {
            (None, _) => Ok(None),
            (Some(_), Ok(c)) => Ok(Some(c)),
            (Some(_), Err(why)) => Err(RuntimeError::Container(format!(
                "containers: unavailable: {why}"
            ))),
        }
    }

    fn for_handle(&self, handle: &Handle) -> Option<&ContainerRuntime> {
        match (&handle.container, &self.containers) {
            (Some(_), Ok(c)) => Some(c),
            _ => None,
        }
    }

    pub async fn start(&self, req: &StartRequest<'_>) -> Result<Started, RuntimeError> {
        match self.for_spec(req.spec)? {
            Some(c) => c.start(req).await,
            None => self.process.start(req).await,
        }
    }

    pub fn stop(&self, handle: &Handle) {
        match self.for_handle(handle) {
            Some(c) => c.stop(handle),
            None => self.process.stop(handle),
        }
    }

    pub fn kill_now(&self, handle: &Handle) {
        match self.for_handle(handle) {
            Some(c) => c.kill_now(handle),
            None => self.process.kill_now(handle),
        }
    }

    pub fn is_alive(&self, handle: &Handle) -> bool {
        match self.for_handle(handle) {
            Some(c) => c.is_alive(handle),
            None => self.process.is_alive(handle),
        }
    }

    /// A container handle on an agent without a container runtime (turned off since) is
    /// watched by its pid, as a process's: its end is then known without its status.
    pub async fn ended(&self, task: Started) -> Option<ExitRecord> {
        match self.for_handle(&task.handle) {
            Some(c) => c.ended(task).await,
            None => self.process.ended(task).await,
        }
    }

    pub async fn find(&self, id: &TaskId, spec: &TaskSpec) -> Found {
        match self.for_spec(spec) {
            Ok(Some(c)) => c.find(id).await,
            Ok(None) => self.process.find(id).await,
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "cannot ask about a container task");
                Found::Never
            }
        }
    }

    pub fn probe(&self, handle: &Handle) -> Probe {
        match self.for_handle(handle) {
            Some(c) => c.probe(handle),
            None => self.process.probe(handle),
        }
    }
}
