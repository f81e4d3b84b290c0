//! [`pull`]: an image from a registry with `oci-client` (design §5): the manifest (for an
//! index, its `linux/<host arch>` entry), then the config and layers streamed into the content
//! store and verified by digest there, with byte progress; then the GC labels, the unpack, and
//! the image record, all under a lease that a failure deletes with a synchronous GC.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use torc_types::ImageRef;

use super::content::{self, Began, Ingest};
use super::unpack::{UnpackError, unpack_target};
use super::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Manifest, OCI_INDEX, OCI_MANIFEST, host_architecture,
    label_blob, platform_manifest, put_image,
};
use crate::client::Client;
use crate::error::{Error, chain};

/// A user and password for a registry's Basic or token auth.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.user)
    }
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub credentials: Option<Credentials>,
    /// Plain HTTP to a registry that is not on a loopback address (loopback ones always are,
    /// as for containerd and Docker).
    pub insecure: bool,
    /// The snapshotter to unpack into (`overlayfs` when empty).
    pub snapshotter: String,
}

/// Where a pull is, for its progress callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullProgress {
    /// The manifest is read: `total` bytes of config and layers to have.
    Resolved { digest: String, total: u64 },
    /// Bytes in the content store so far (blobs it had already count as done).
    Bytes { done: u64, total: u64 },
    /// Layers applied into snapshots.
    Unpacking,
}

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub name: String,
    pub target: Descriptor,
    /// Bytes of config and layers (compressed as stored).
    pub size: u64,
    /// Bytes fetched from the registry (less when blobs were there already).
    pub fetched: u64,
    pub chain_id: String,
}

/// Why a pull failed. Nothing of it is left in containerd.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("image {image}: not found in the registry {registry} (manifest unknown)")]
    NotFound { image: String, registry: String },
    #[error("image {image}: the registry {registry} refused ({what})")]
    Refused {
        image: String,
        registry: String,
        what: String,
    },
    #[error("image {image}: cannot reach the registry {registry}: {reason}")]
    Unreachable {
        image: String,
        registry: String,
        reason: String,
    },
    #[error("image {image}: registry {registry}: {what}")]
    Registry {
        image: String,
        registry: String,
        what: String,
    },
    #[error("image {image}: no manifest for {platform} in its index")]
    NoPlatform { image: String, platform: String },
    #[error("image {image}: blob {digest}: {error}")]
    Blob {
        image: String,
        digest: String,
        error: Error,
    },
    #[error("image {image}: {error}")]
    Containerd { image: String, error: Error },
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

const ACCEPTED: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Pulls `image` into containerd, unpacks it, and names it `image.as_str()`. `progress` hears
/// of the bytes as they arrive.
pub async fn pull(
    client: &Client,
    image: &ImageRef,
    options: &PullOptions,
    progress: &mut (dyn FnMut(PullProgress) + Send),
) -> Result<Pulled, PullError> {
    let in_containerd = |error: Error| PullError::Containerd {
        image: image.to_string(),
        error,
    };
    let lease = client
        .create_lease(Duration::from_secs(3600))
        .await
        .map_err(in_containerd)?;
    let leased = client.with_lease(&lease).map_err(in_containerd)?;
    let result = pull_leased(&leased, image, options, progress).await;
    if let Err(e) = client.delete_lease(&lease, result.is_err()).await {
        tracing::warn!("{e}");
    }
    result
}

async fn pull_leased(
    client: &Client,
    image: &ImageRef,
    options: &PullOptions,
    progress: &mut (dyn FnMut(PullProgress) + Send),
) -> Result<Pulled, PullError> {
    let name = image.as_str().to_string();
    let registry = image.registry().as_str().to_string();
    let in_containerd = |error: Error| PullError::Containerd {
        image: name.clone(),
        error,
    };
    let plain = image.registry().is_loopback() || options.insecure;
    let config = ClientConfig {
        protocol: if plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    };
    let oci = oci_client::Client::new(config);
    let auth = match &options.credentials {
        Some(c) => RegistryAuth::Basic(c.user.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let reference = Reference::try_from(name.as_str()).map_err(|e| PullError::Registry {
        image: name.clone(),
        registry: registry.clone(),
        what: format!("oci-client cannot read the reference: {e}"),
    })?;
    let registry_error = |e: OciDistributionError| registry_error(&name, &registry, e);

    let (bytes, _) = oci
        .pull_manifest_raw(&reference, &auth, &ACCEPTED)
        .await
        .map_err(registry_error)?;
    let (top, top_bytes) = (described(&bytes), bytes);
    if let Some(pinned) = image.digest()
        && pinned != top.digest
    {
        return Err(PullError::Registry {
            image: name.clone(),
            registry,
            what: format!("its manifest digests to {}, not {pinned}", top.digest),
        });
    }
    let parsed = Manifest::parse(&top_bytes).map_err(|what| PullError::Registry {
        image: name.clone(),
        registry: registry.clone(),
        what,
    })?;
    let (manifest_desc, manifest_bytes, manifest, index) = if top.is_index() {
        let chosen = platform_manifest(&parsed)
            .cloned()
            .ok_or_else(|| PullError::NoPlatform {
                image: name.clone(),
                platform: format!("linux/{}", host_architecture()),
            })?;
        let by_digest = reference.clone_with_digest(chosen.digest.clone());
        let (bytes, _) = oci
            .pull_manifest_raw(&by_digest, &auth, &ACCEPTED)
            .await
            .map_err(registry_error)?;
        let desc = described(&bytes);
        if desc.digest != chosen.digest {
            return Err(PullError::Registry {
                image: name.clone(),
                registry,
                what: format!(
                    "manifest {} arrived with digest {}",
                    chosen.digest, desc.digest
                ),
            });
        }
        let manifest = Manifest::parse(&bytes).map_err(|what| PullError::Registry {
            image: name.clone(),
            registry: registry.clone(),
            what,
        })?;
        (desc, bytes, manifest, Some((top, top_bytes, parsed)))
    } else {
        (top, top_bytes, parsed, None)
    };

    let blobs: Vec<Descriptor> = manifest
        .config
        .iter()
        .chain(&manifest.layers)
        .cloned()
        .collect();
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    progress(PullProgress::Resolved {
        digest: manifest_desc.digest.clone(),
        total,
    });
    let (mut done, mut fetched) = (0u64, 0u64);
    for blob in &blobs {
        let blob_error = |error: Error| PullError::Blob {
            image: name.clone(),
            digest: blob.digest.clone(),
            error,
        };
        let mut ingest = match Ingest::begin(client, &blob.digest, blob.size, Some(&blob.digest))
            .await
            .map_err(blob_error)?
        {
            Began::Exists => {
                done += blob.size;
                progress(PullProgress::Bytes { done, total });
                continue;
            }
            Began::Writing(ingest) => *ingest,
        };
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size as i64,
            ..OciDescriptor::default()
        };
        let streamed = async {
            let mut stream = oci
                .pull_blob_stream(&reference, &descriptor)
                .await
                .map_err(registry_error)?;
            while let Some(chunk) = stream.stream.next().await {
                let chunk = chunk.map_err(|e| PullError::Registry {
                    image: name.clone(),
                    registry: registry.clone(),
                    what: format!("blob {}: {}", blob.digest, chain(&e)),
                })?;
                let len = chunk.len() as u64;
                ingest.write(chunk).await.map_err(blob_error)?;
                done += len;
                fetched += len;
                progress(PullProgress::Bytes { done, total });
            }
            Ok::<(), PullError>(())
        }
        .await;
        if let Err(e) = streamed {
            ingest.abort().await;
            return Err(e);
        }
        if let Err((error, ingest)) = ingest.commit(&blob.digest, HashMap::new()).await {
            ingest.abort().await;
            return Err(blob_error(error));
        }
    }

    content::write_bytes(
        client,
        &manifest_desc.digest,
        &manifest_bytes,
        manifest.gc_labels(),
    )
    .await
    .map_err(in_containerd)?;
    let target = match index {
        Some((desc, bytes, parsed)) => {
            content::write_bytes(client, &desc.digest, &bytes, parsed.gc_labels())
                .await
                .map_err(in_containerd)?;
            desc
        }
        None => manifest_desc,
    };
    // Written before: a manifest that existed keeps its labels; set them anyway.
    label_blob(client, &target.digest, HashMap::new())
        .await
        .map_err(in_containerd)?;
    progress(PullProgress::Unpacking);
    let snapshotter = if options.snapshotter.is_empty() {
        crate::OVERLAYFS
    } else {
        options.snapshotter.as_str()
    };
    let chain_id = unpack_target(client, &name, &target, snapshotter).await?;
    put_image(client, &name, &target)
        .await
        .map_err(in_containerd)?;
    Ok(Pulled {
        name,
        target,
        size: total,
        fetched,
        chain_id,
    })
}

/// A manifest or index's descriptor from its bytes: the digest computed here, the media type
/// from the document.
fn described(bytes: &[u8]) -> Descriptor {
    let digest = format!("sha256:{:x}", Sha256::digest(bytes));
    let media = Manifest::parse(bytes)
        .ok()
        .and_then(|m| {
            m.media_type.or_else(|| {
                if !m.manifests.is_empty() {
                    Some(OCI_INDEX.to_string())
                } else {
                    None
                }
            })
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    Descriptor::new(&media, &digest, bytes.len() as u64)
}

/// What the registry said, named.
fn registry_error(image: &str, registry: &str, error: OciDistributionError) -> PullError {
    let (image, registry) = (image.to_string(), registry.to_string());
    let refused = |what: String| PullError::Refused {
        image: image.clone(),
        registry: registry.clone(),
        what,
    };
    match &error {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            return PullError::NotFound { image, registry };
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
            {
                return PullError::NotFound { image, registry };
            }
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                return refused(chain(&error));
            }
        }
        OciDistributionError::UnauthorizedError { .. } => {
            return refused("401 Unauthorized".into());
        }
        OciDistributionError::AuthenticationFailure(what) => return refused(what.clone()),
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 | 403 => return refused(format!("{code}: {message}")),
            404 => return PullError::NotFound { image, registry },
            _ => {}
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            return PullError::Unreachable {
                image,
                registry,
                reason: chain(e),
            };
        }
        _ => {}
    }
    PullError::Registry {
        what: chain(&error),
        image,
        registry,
    }
}
