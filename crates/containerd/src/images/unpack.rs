//! Unpacking an image into snapshots (design §5): for each layer, the chain id
//! (`chain_0 = diff_0`, `chain_i = sha256(chain_{i-1} + " " + diff_i)`); a committed snapshot
//! of that name is reused, else `Snapshots.Prepare` on the parent chain, containerd's
//! `Diff.Apply` of the layer (whose uncompressed digest must be the config's diff id), and
//! `Commit`. The config then carries the GC label that keeps the chain. Idempotent: an
//! unpacked image costs one `Stat` per layer.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::content;
use super::{Descriptor, label_blob, resolve, snapshot_gc_label};
use crate::client::{Client, random};
use crate::error::Error;
use crate::proto::containerd::services::{diff::v1 as diff_api, snapshots::v1 as snap};

/// The label containerd's unpacker puts on each layer's snapshot: its chain id.
const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// Why an image could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("image {0} does not exist")]
    NoImage(String),
    #[error("image {image}: no manifest for {platform} in its index")]
    NoPlatform { image: String, platform: String },
    #[error("image {0}: {1}")]
    Bad(String, String),
    #[error(
        "image {image}: layer {index} ({digest}) unpacked to {applied}, but the config says \
         {expected}"
    )]
    DiffId {
        image: String,
        index: usize,
        digest: String,
        applied: String,
        expected: String,
    },
    #[error(transparent)]
    Containerd(#[from] Error),
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// The chain ids of a stack of layers, bottom first.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match chains.last() {
            None => diff.clone(),
            Some(parent) => format!("sha256:{:x}", Sha256::digest(format!("{parent} {diff}"))),
        };
        chains.push(next);
    }
    chains
}

/// Unpacks image `name` into `snapshotter` and returns its top chain id (the parent of a
/// container's snapshot).
pub async fn unpack(client: &Client, name: &str, snapshotter: &str) -> Result<String, UnpackError> {
    let target = super::get(client, name)
        .await?
        .ok_or_else(|| UnpackError::NoImage(name.into()))?;
    let lease = client.create_lease(Duration::from_secs(3600)).await?;
    let leased = client.with_lease(&lease)?;
    let result = unpack_target(&leased, name, &target, snapshotter).await;
    // On success the config's label keeps the chain; on failure the lease's snapshots go.
    let sync = result.is_err();
    if let Err(e) = client.delete_lease(&lease, sync).await {
        tracing::warn!("{e}");
    }
    result
}

pub(crate) async fn unpack_target(
    client: &Client,
    name: &str,
    target: &Descriptor,
    snapshotter: &str,
) -> Result<String, UnpackError> {
    let (_, manifest) = resolve(client, name, target).await?;
    let config_desc = manifest
        .config
        .as_ref()
        .ok_or_else(|| UnpackError::Bad(name.into(), "its manifest has no config".into()))?;
    let config: Config = serde_json::from_slice(&content::read(client, &config_desc.digest).await?)
        .map_err(|e| {
            UnpackError::Bad(name.into(), format!("config {}: {e}", config_desc.digest))
        })?;
    let diff_ids = config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(UnpackError::Bad(
            name.into(),
            format!(
                "its manifest has {} layers but its config {} diff ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let chains = chain_ids(&diff_ids);
    for (i, layer) in manifest.layers.iter().enumerate() {
        let chain = &chains[i];
        if committed(client, snapshotter, chain).await? {
            continue;
        }
        let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
        apply(
            client,
            name,
            snapshotter,
            i,
            layer,
            &diff_ids[i],
            chain,
            parent,
        )
        .await?;
    }
    let top = chains.last().cloned().unwrap_or_default();
    if !top.is_empty() {
        label_blob(
            client,
            &config_desc.digest,
            HashMap::from([(snapshot_gc_label(snapshotter), top.clone())]),
        )
        .await?;
    }
    Ok(top)
}

async fn committed(client: &Client, snapshotter: &str, name: &str) -> Result<bool, Error> {
    Ok(client
        .snapshot(snapshotter, name)
        .await?
        .is_some_and(|s| s.kind == snap::Kind::Committed))
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    client: &Client,
    name: &str,
    snapshotter: &str,
    index: usize,
    layer: &Descriptor,
    diff_id: &str,
    chain: &str,
    parent: &str,
) -> Result<(), UnpackError> {
    let mut unique = [0u8; 8];
    random(&mut unique);
    let key = format!(
        "extract-{} {chain}",
        unique
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let labels = HashMap::from([(SNAPSHOT_REF.to_string(), chain.to_string())]);
    let mounts = client
        .prepare_snapshot(snapshotter, &key, parent, labels.clone())
        .await?;
    let result = async {
        let request = diff_api::ApplyRequest {
            diff: Some(layer.to_proto()),
            mounts,
            payloads: HashMap::new(),
        };
        let answer = client
            .unary(
                "Diff.Apply",
                &layer.digest,
                client.diff_api().apply(request),
            )
            .await?;
        let applied = answer.applied.map(|d| d.digest).unwrap_or_default();
        if applied != diff_id {
            return Err(UnpackError::DiffId {
                image: name.into(),
                index,
                digest: layer.digest.clone(),
                applied,
                expected: diff_id.into(),
            });
        }
        let commit = snap::CommitSnapshotRequest {
            snapshotter: snapshotter.into(),
            name: chain.into(),
            key: key.clone(),
            labels,
        };
        match client
            .unary(
                "Snapshots.Commit",
                chain,
                client.snapshots_api().commit(commit),
            )
            .await
        {
            Ok(()) => Ok(()),
            // Another unpack committed the same chain meanwhile: same content.
            Err(e) if e.is_already_exists() => {
                client.remove_snapshot(snapshotter, &key).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
    .await;
    if result.is_err()
        && let Err(e) = client.remove_snapshot(snapshotter, &key).await
    {
        tracing::warn!("{e}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_containerds() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(
            chains[1],
            format!("sha256:{:x}", Sha256::digest(format!("{a} {b}")))
        );
        assert!(chain_ids(&[]).is_empty());
    }
}

/// What an image's config says about running it (the OCI image config's `config`), with the
/// top chain id of its layers: what a container of it needs beyond the task's own keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, in order.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `USER[:GROUP]`, names or numbers; empty: root.
    pub user: String,
    /// `SIGTERM`, `15`, …; empty: not said.
    pub stop_signal: String,
    /// The parent of a container's snapshot (empty for an image without layers).
    pub chain_id: String,
}

#[derive(Deserialize)]
struct FullConfig {
    #[serde(default)]
    config: Option<ProcessConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
struct ProcessConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "StopSignal", default)]
    stop_signal: Option<String>,
}

/// Reads image `name`'s config (for this host's platform): how to run it, and the chain id of
/// its layers. Does not unpack: see [`unpack`].
pub async fn run_config(client: &Client, name: &str) -> Result<RunConfig, UnpackError> {
    let target = super::get(client, name)
        .await?
        .ok_or_else(|| UnpackError::NoImage(name.into()))?;
    let (_, manifest) = resolve(client, name, &target).await?;
    let config_desc = manifest
        .config
        .as_ref()
        .ok_or_else(|| UnpackError::Bad(name.into(), "its manifest has no config".into()))?;
    let config: FullConfig = serde_json::from_slice(
        &content::read(client, &config_desc.digest).await?,
    )
    .map_err(|e| UnpackError::Bad(name.into(), format!("config {}: {e}", config_desc.digest)))?;
    let process = config.config.unwrap_or_default();
    Ok(RunConfig {
        entrypoint: process.entrypoint.unwrap_or_default(),
        cmd: process.cmd.unwrap_or_default(),
        env: process.env.unwrap_or_default(),
        working_dir: process.working_dir.unwrap_or_default(),
        user: process.user.unwrap_or_default(),
        stop_signal: process.stop_signal.unwrap_or_default(),
        chain_id: chain_ids(&config.rootfs.diff_ids).pop().unwrap_or_default(),
    })
}
