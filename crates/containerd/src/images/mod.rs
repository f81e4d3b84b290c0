//! Images in containerd's stores (design `docs/design/containers.md` §5): [`import`] of OCI
//! and docker archives, [`pull`] from a registry with `oci-client`, [`unpack`] into snapshots
//! with containerd's diff service, [`list`] and [`remove`].
//!
//! What it is not: a layer unpacker. Our code reads archives' entries and registries' blobs
//! and writes them whole into containerd's content store (`Content.Write`, verified by digest
//! and size); containerd's `Diff.Apply` applies layers, whiteouts included.
//!
//! Invariants:
//! - everything an import or a pull writes (content, snapshots) is held by a lease of its own
//!   until the image record names it; on any error the lease is deleted with a synchronous GC,
//!   so a failed import or pull leaves no image, content, snapshot, ingest or lease behind;
//! - an image record is created only after every blob it reaches is in the content store;
//! - the GC labels follow containerd's `docs/garbage-collection.md`: an index refers to its
//!   manifests (`containerd.io/gc.ref.content.m.<i>`), a manifest to its config and layers
//!   (`…content.config`, `…content.l.<i>`), a config to its unpacked snapshot chain
//!   (`containerd.io/gc.ref.snapshot.<snapshotter>`), so removing an image frees exactly what
//!   nothing else uses.

mod archive;
mod content;
mod pull;
mod unpack;

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Deserialize;

use crate::client::{Client, time};
use crate::error::{Error, found};
use crate::proto::containerd::services::images::v1 as images_api;
use crate::proto::containerd::types;

pub use archive::{ImportError, Imported, import, import_as};
pub(crate) use content::label_blob;
pub use content::{ingests, leases, list as blobs, snapshots};
pub use pull::{Credentials, PullError, PullOptions, PullProgress, Pulled, pull};
pub use unpack::{RunConfig, UnpackError, chain_ids, run_config, unpack};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The label on a config that keeps its unpacked snapshot chain, for `snapshotter`.
pub fn snapshot_gc_label(snapshotter: &str) -> String {
    format!("containerd.io/gc.ref.snapshot.{snapshotter}")
}

/// A content descriptor: what a manifest or an image record points at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// An index entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Descriptor {
    pub(crate) fn new(media_type: &str, digest: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            platform: None,
            annotations: HashMap::new(),
        }
    }

    pub(crate) fn to_proto(&self) -> types::Descriptor {
        types::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size as i64,
            annotations: HashMap::new(),
        }
    }

    fn from_proto(d: types::Descriptor) -> Descriptor {
        Descriptor::new(&d.media_type, &d.digest, d.size.max(0) as u64)
    }

    pub(crate) fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

/// An image manifest or an index, as far as torc reads them.
#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Manifest {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a manifest or index: {e}"))
    }

    /// The manifest's GC labels: its config and layers.
    pub(crate) fn gc_labels(&self) -> HashMap<String, String> {
        let mut labels = HashMap::new();
        if let Some(config) = &self.config {
            labels.insert(
                "containerd.io/gc.ref.content.config".to_string(),
                config.digest.clone(),
            );
        }
        for (i, layer) in self.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        for (i, m) in self.manifests.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.m.{i}"),
                m.digest.clone(),
            );
        }
        labels
    }
}

/// The architecture of this host as OCI names it (`amd64`, `arm64`, …).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The index entry for `linux/<host architecture>`, if any.
pub(crate) fn platform_manifest(index: &Manifest) -> Option<&Descriptor> {
    index.manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == host_architecture())
    })
}

/// An image as containerd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Its name, e.g. `docker.io/torc/busybox:1`.
    pub name: String,
    /// What it names: a manifest, or an index of manifests.
    pub target: Descriptor,
    /// The bytes of its manifest, config and layers for this host (compressed as stored).
    pub size: u64,
    pub created_at: Option<SystemTime>,
}

/// What removing an image freed: the blobs and snapshots containerd's GC collected because
/// nothing else used them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freed {
    pub blobs: usize,
    pub bytes: u64,
    pub snapshots: usize,
}

/// `Images.List`, each with its size.
pub async fn list(client: &Client) -> Result<Vec<ImageInfo>, Error> {
    let answer = client
        .unary(
            "Images.List",
            "",
            client
                .images_api()
                .list(images_api::ListImagesRequest::default()),
        )
        .await?;
    let mut images = Vec::new();
    for image in answer.images {
        let Some(target) = image.target else {
            continue;
        };
        let target = Descriptor::from_proto(target);
        let size = image_size(client, &image.name, &target).await?;
        images.push(ImageInfo {
            name: image.name,
            target,
            size,
            created_at: time(image.created_at),
        });
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(images)
}

/// The image named `name`, if there is one.
pub async fn get(client: &Client, name: &str) -> Result<Option<Descriptor>, Error> {
    let request = images_api::GetImageRequest { name: name.into() };
    let Some(answer) = found(
        client
            .unary("Images.Get", name, client.images_api().get(request))
            .await,
    )?
    else {
        return Ok(None);
    };
    Ok(answer
        .image
        .and_then(|i| i.target)
        .map(Descriptor::from_proto))
}

async fn image_size(client: &Client, name: &str, target: &Descriptor) -> Result<u64, Error> {
    let Ok((manifest_desc, manifest)) = resolve(client, name, target).await else {
        // A record whose content is gone (or foreign): its own size is all we know.
        return Ok(target.size);
    };
    let mut size = manifest_desc.size;
    if target.is_index() {
        size += target.size;
    }
    size += manifest.config.map_or(0, |c| c.size);
    size += manifest.layers.iter().map(|l| l.size).sum::<u64>();
    Ok(size)
}

/// The manifest an image means on this host: the target itself, or the index's
/// `linux/<arch>` entry.
pub(crate) async fn resolve(
    client: &Client,
    name: &str,
    target: &Descriptor,
) -> Result<(Descriptor, Manifest), UnpackError> {
    let bytes = content::read(client, &target.digest).await?;
    let manifest =
        Manifest::parse(&bytes).map_err(|what| UnpackError::Bad(name.into(), what.clone()))?;
    let is_index = target.is_index()
        || (!manifest.manifests.is_empty() && manifest.layers.is_empty())
        || manifest.media_type.as_deref() == Some(OCI_INDEX)
        || manifest.media_type.as_deref() == Some(DOCKER_LIST);
    if !is_index {
        return Ok((target.clone(), manifest));
    }
    let chosen = platform_manifest(&manifest)
        .cloned()
        .ok_or_else(|| UnpackError::NoPlatform {
            image: name.into(),
            platform: format!("linux/{}", host_architecture()),
        })?;
    let bytes = content::read(client, &chosen.digest).await?;
    let manifest =
        Manifest::parse(&bytes).map_err(|what| UnpackError::Bad(name.into(), what.clone()))?;
    Ok((chosen, manifest))
}

/// `Images.Delete(name, sync)`: containerd removes the record and collects at once what only
/// it kept. `None` when there was no such image.
pub async fn remove(client: &Client, name: &str) -> Result<Option<Freed>, Error> {
    let (blobs_before, snaps_before) = (
        content::list(client).await?,
        content::snapshots(client).await?,
    );
    let request = images_api::DeleteImageRequest {
        name: name.into(),
        sync: true,
    };
    if found(
        client
            .unary("Images.Delete", name, client.images_api().delete(request))
            .await,
    )?
    .is_none()
    {
        return Ok(None);
    }
    let (blobs_after, snaps_after) = (
        content::list(client).await?,
        content::snapshots(client).await?,
    );
    let gone: Vec<&(String, u64)> = blobs_before
        .iter()
        .filter(|b| !blobs_after.iter().any(|a| a.0 == b.0))
        .collect();
    Ok(Some(Freed {
        blobs: gone.len(),
        bytes: gone.iter().map(|b| b.1).sum(),
        snapshots: snaps_before
            .iter()
            .filter(|s| !snaps_after.contains(s))
            .count(),
    }))
}

/// `Images.Create`, or `Images.Update` when the name exists: `name` → `target`.
pub(crate) async fn put_image(
    client: &Client,
    name: &str,
    target: &Descriptor,
) -> Result<(), Error> {
    let image = images_api::Image {
        name: name.into(),
        labels: HashMap::new(),
        target: Some(target.to_proto()),
        created_at: None,
        updated_at: None,
    };
    let create = images_api::CreateImageRequest {
        image: Some(image.clone()),
    };
    match client
        .unary("Images.Create", name, client.images_api().create(create))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => {
            let update = images_api::UpdateImageRequest {
                image: Some(image),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["target".into()],
                }),
            };
            client
                .unary("Images.Update", name, client.images_api().update(update))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}
