//! Containers (containerd's durable records: id, spec, runtime, rootfs snapshot) and the
//! snapshots that hold their rootfs.
//!
//! A container is not a process: its task is ([`crate::tasks`]). The record is what makes a
//! task id start at most once across agent crashes: it exists from `Containers.Create` until
//! [`Client::remove`](crate::Client::remove).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use prost::Message;

use crate::client::{Client, path_text, time};
use crate::error::{Error, found};
use crate::ids::ContainerId;
use crate::proto::containerd::runc::v1 as runc;
use crate::proto::containerd::services::containers::v1 as pb;
use crate::proto::containerd::services::snapshots::v1 as snap;
use crate::proto::containerd::types::Mount;

/// The runtime torc runs every container with: runc under containerd's Go shim.
pub const RUNC_V2: &str = "io.containerd.runc.v2";
/// The snapshotter torc uses (the one `ctr` and k3s default to on Linux).
pub const OVERLAYFS: &str = "overlayfs";
/// The type URL of an OCI runtime spec given as JSON (containerd's `typeurl` registration).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The type URL of the runc shim's options.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// The runc shim's options torc sets on every container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncOptions {
    /// runc's state directory (`runc --root`). A private containerd's own (under its state),
    /// so that two containerds never share `/run/containerd/runc/<namespace>`.
    pub root: PathBuf,
    /// The runc binary, looked up on the shim's `PATH` (`runc`).
    pub binary_name: String,
}

impl RuncOptions {
    pub(crate) fn to_any(
        &self,
        call: &'static str,
        target: &str,
    ) -> Result<prost_types::Any, Error> {
        let options = runc::Options {
            root: path_text(call, target, &self.root)?,
            binary_name: self.binary_name.clone(),
            ..Default::default()
        };
        Ok(prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE_URL.into(),
            value: options.encode_to_vec(),
        })
    }
}

/// What `Containers.Create` records.
#[derive(Debug, Clone)]
pub struct NewContainer {
    pub id: ContainerId,
    pub labels: HashMap<String, String>,
    /// The image reference the rootfs came from (containerd keeps it as a label of sorts;
    /// it does not check it).
    pub image: String,
    /// The OCI runtime spec, as JSON.
    pub spec_json: Vec<u8>,
    pub runc: RuncOptions,
    /// The rootfs snapshot ([`OVERLAYFS`]); containerd's garbage collector keeps a snapshot
    /// a container names.
    pub snapshotter: String,
    pub snapshot_key: String,
}

/// A container as containerd has it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: ContainerId,
    pub labels: HashMap<String, String>,
    pub image: String,
    /// The runtime's name (`io.containerd.runc.v2`).
    pub runtime: String,
    pub spec_json: Vec<u8>,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub created_at: Option<SystemTime>,
}

/// A snapshot as `Snapshots.Stat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    pub parent: String,
    /// `Active` (a container's rootfs, writable), `Committed` (an image layer) or `View`.
    pub kind: snap::Kind,
    pub labels: HashMap<String, String>,
}

impl Client {
    /// `Containers.Create`. An id that exists already fails with
    /// [`Error::is_already_exists`]: the caller created it before (look it up).
    pub async fn create_container(&self, new: &NewContainer) -> Result<ContainerInfo, Error> {
        const CALL: &str = "Containers.Create";
        let id = new.id.as_str();
        let container = pb::Container {
            id: id.to_string(),
            labels: new.labels.clone(),
            image: new.image.clone(),
            runtime: Some(pb::container::Runtime {
                name: RUNC_V2.into(),
                options: Some(new.runc.to_any(CALL, id)?),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: new.spec_json.clone(),
            }),
            snapshotter: new.snapshotter.clone(),
            snapshot_key: new.snapshot_key.clone(),
            ..Default::default()
        };
        let request = pb::CreateContainerRequest {
            container: Some(container),
        };
        let answer = self
            .unary(CALL, id, self.containers_api().create(request))
            .await?;
        let container = answer
            .container
            .ok_or_else(|| self.answer_error(CALL, id, "no container"))?;
        self.info(CALL, container)
    }

    /// `Containers.Get`; `None` if there is no such container.
    pub async fn container(&self, id: &ContainerId) -> Result<Option<ContainerInfo>, Error> {
        const CALL: &str = "Containers.Get";
        let request = pb::GetContainerRequest { id: id.to_string() };
        let Some(answer) = found(
            self.unary(CALL, id.as_str(), self.containers_api().get(request))
                .await,
        )?
        else {
            return Ok(None);
        };
        let container = answer
            .container
            .ok_or_else(|| self.answer_error(CALL, id.as_str(), "no container"))?;
        self.info(CALL, container).map(Some)
    }

    /// `Containers.List`: every container of the namespace.
    pub async fn containers(&self) -> Result<Vec<ContainerInfo>, Error> {
        const CALL: &str = "Containers.List";
        let answer = self
            .unary(
                CALL,
                "",
                self.containers_api()
                    .list(pb::ListContainersRequest::default()),
            )
            .await?;
        answer
            .containers
            .into_iter()
            .map(|c| self.info(CALL, c))
            .collect()
    }

    /// `Containers.Delete`; `false` if there was no such container. containerd refuses while
    /// the container has a task.
    pub async fn delete_container(&self, id: &ContainerId) -> Result<bool, Error> {
        let request = pb::DeleteContainerRequest { id: id.to_string() };
        Ok(found(
            self.unary(
                "Containers.Delete",
                id.as_str(),
                self.containers_api().delete(request),
            )
            .await,
        )?
        .is_some())
    }

    fn info(&self, call: &'static str, c: pb::Container) -> Result<ContainerInfo, Error> {
        let id = ContainerId::new(c.id).map_err(|e| self.answer_error(call, "", e.to_string()))?;
        Ok(ContainerInfo {
            id,
            labels: c.labels,
            image: c.image,
            runtime: c.runtime.map(|r| r.name).unwrap_or_default(),
            spec_json: c.spec.map(|s| s.value).unwrap_or_default(),
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            created_at: time(c.created_at),
        })
    }

    /// `Snapshots.Prepare`: a new active (writable) snapshot `key` on top of the committed
    /// `parent` (an image's top chain id; empty for none); the mounts that make it a rootfs.
    pub async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        let request = snap::PrepareSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
            parent: parent.into(),
            labels,
        };
        let answer = self
            .unary(
                "Snapshots.Prepare",
                key,
                self.snapshots_api().prepare(request),
            )
            .await?;
        Ok(answer.mounts)
    }

    /// `Snapshots.Mounts`: the mounts of an existing active snapshot (to create a task again
    /// for a container whose snapshot was prepared before).
    pub async fn snapshot_mounts(&self, snapshotter: &str, key: &str) -> Result<Vec<Mount>, Error> {
        let request = snap::MountsRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        };
        let answer = self
            .unary(
                "Snapshots.Mounts",
                key,
                self.snapshots_api().mounts(request),
            )
            .await?;
        Ok(answer.mounts)
    }

    /// `Snapshots.Stat`; `None` if there is no such snapshot.
    pub async fn snapshot(
        &self,
        snapshotter: &str,
        key: &str,
    ) -> Result<Option<SnapshotInfo>, Error> {
        let request = snap::StatSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        };
        let Some(answer) = found(
            self.unary("Snapshots.Stat", key, self.snapshots_api().stat(request))
                .await,
        )?
        else {
            return Ok(None);
        };
        let info = answer
            .info
            .ok_or_else(|| self.answer_error("Snapshots.Stat", key, "no info"))?;
        Ok(Some(SnapshotInfo {
            kind: info.kind(),
            name: info.name,
            parent: info.parent,
            labels: info.labels,
        }))
    }

    /// `Snapshots.Remove`; `false` if there was no such snapshot.
    pub async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<bool, Error> {
        let request = snap::RemoveSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        };
        Ok(found(
            self.unary(
                "Snapshots.Remove",
                key,
                self.snapshots_api().remove(request),
            )
            .await,
        )?
        .is_some())
    }
}
