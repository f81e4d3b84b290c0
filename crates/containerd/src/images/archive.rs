//! [`import`]: an OCI archive (`oci-layout`, `index.json`, `blobs/sha256/…`) or a docker
//! archive (`manifest.json`, layer tarballs, config files) read once, as a stream, with the
//! `tar` crate on a blocking thread. Every file that is not the archive's own metadata goes
//! into the content store whole (a blob's name is its expected digest; a docker file's digest
//! is computed on the way); no layer is ever extracted. Then the GC labels, the unpack and the
//! image records, all under one lease that a failure deletes with a synchronous GC.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use torc_types::ImageRef;

use super::content::{self, Began, CHUNK, Ingest};
use super::unpack::{UnpackError, unpack_target};
use super::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Descriptor, Manifest, label_blob, put_image,
};
use crate::client::Client;
use crate::error::Error;

/// The largest metadata file (`index.json`, `manifest.json`) an archive may hold.
const MAX_METADATA: u64 = 4 << 20;
/// The files of an archive that describe it rather than being content.
const METADATA: [&str; 4] = ["index.json", "manifest.json", "oci-layout", "repositories"];

/// An image an import named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The normalised name, e.g. `docker.io/torc/busybox:1`.
    pub name: String,
    pub target: Descriptor,
    /// The top of its unpacked snapshot chain.
    pub chain_id: String,
}

/// Why an archive was not imported. Nothing of it is left in containerd.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not an image archive: {0}")]
    NotArchive(String),
    #[error("entry {entry}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("entry {entry}: bad digest: its name says {expected}, its bytes are {actual}")]
    BadDigest {
        entry: String,
        expected: String,
        actual: String,
    },
    #[error("missing blob {blob}, named by {by}")]
    MissingBlob { blob: String, by: String },
    #[error("{file}: {reason}")]
    Metadata { file: String, reason: String },
    #[error("{0}")]
    NoName(String),
    #[error("entry {entry}: containerd refused it: {error}")]
    Refused { entry: String, error: Error },
    #[error(transparent)]
    Containerd(#[from] Error),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

/// What the reading thread hands over, in archive order.
enum Piece {
    Metadata { path: String, bytes: Vec<u8> },
    Blob { path: String, size: u64 },
    Data(bytes::Bytes),
    BlobEnd { digest: String, gzip: bool },
    Failed(ImportError),
}

/// Imports the images of an archive read from `archive`, unpacks them into `snapshotter`
/// and names them; returns what it named.
pub async fn import<R: Read + Send + 'static>(
    client: &Client,
    archive: R,
    snapshotter: &str,
) -> Result<Vec<Imported>, ImportError> {
    import_as(client, archive, snapshotter, None).await
}

/// [`import`], naming the archive's one image `name` instead of what the archive calls it
/// (for archives that name it only by a tag, or not at all). An archive of several images is
/// refused.
pub async fn import_as<R: Read + Send + 'static>(
    client: &Client,
    archive: R,
    snapshotter: &str,
    name: Option<&ImageRef>,
) -> Result<Vec<Imported>, ImportError> {
    let lease = client.create_lease(Duration::from_secs(3600)).await?;
    let leased = client.with_lease(&lease)?;
    let result = import_leased(&leased, archive, snapshotter, name).await;
    // Named images keep what they reach; after a failure, nothing is named and a synchronous
    // GC takes everything the lease held.
    if let Err(e) = client.delete_lease(&lease, result.is_err()).await {
        tracing::warn!("{e}");
    }
    result
}

struct Current {
    path: String,
    size: u64,
    expected: Option<String>,
    ingest: Option<Ingest>,
}

async fn import_leased<R: Read + Send + 'static>(
    client: &Client,
    archive: R,
    snapshotter: &str,
    name: Option<&ImageRef>,
) -> Result<Vec<Imported>, ImportError> {
    let (tx, mut rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || read_archive(archive, tx));
    let mut metadata: HashMap<String, Vec<u8>> = HashMap::new();
    // Each content file: path → (digest, size, gzip).
    let mut files: HashMap<String, (String, u64, bool)> = HashMap::new();
    let mut current: Option<Current> = None;
    let result: Result<(), ImportError> = async {
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Metadata { path, bytes } => {
                    metadata.insert(path, bytes);
                }
                Piece::Blob { path, size } => {
                    let expected = blob_digest(&path);
                    let ingest = match Ingest::begin(client, &path, size, expected.as_deref()).await
                    {
                        Ok(Began::Writing(ingest)) => Some(*ingest),
                        Ok(Began::Exists) => None,
                        Err(error) => return Err(ImportError::Refused { entry: path, error }),
                    };
                    current = Some(Current {
                        path,
                        size,
                        expected,
                        ingest,
                    });
                }
                Piece::Data(bytes) => {
                    let Some(Current {
                        path,
                        ingest: Some(ingest),
                        ..
                    }) = current.as_mut()
                    else {
                        continue;
                    };
                    if let Err(error) = ingest.write(bytes).await {
                        return Err(ImportError::Refused {
                            entry: path.clone(),
                            error,
                        });
                    }
                }
                Piece::BlobEnd { digest, gzip } => {
                    let Some(mut blob) = current.take() else {
                        continue;
                    };
                    if let Some(expected) = &blob.expected
                        && *expected != digest
                    {
                        let error = ImportError::BadDigest {
                            entry: blob.path.clone(),
                            expected: expected.clone(),
                            actual: digest,
                        };
                        current = Some(blob);
                        return Err(error);
                    }
                    if let Some(ingest) = blob.ingest.take()
                        && let Err((error, ingest)) = ingest.commit(&digest, HashMap::new()).await
                    {
                        ingest.abort().await;
                        return Err(ImportError::Refused {
                            entry: blob.path,
                            error,
                        });
                    }
                    files.insert(blob.path, (digest, blob.size, gzip));
                }
                Piece::Failed(error) => return Err(error),
            }
        }
        Ok(())
    }
    .await;
    drop(rx);
    if let Err(error) = result {
        if let Some(Current {
            ingest: Some(ingest),
            ..
        }) = current
        {
            ingest.abort().await;
        }
        return Err(error);
    }

    let images = if let Some(index) = metadata.get("index.json") {
        oci_images(client, index, &files, name.is_some()).await?
    } else if let Some(manifest) = metadata.get("manifest.json") {
        docker_images(client, manifest, &files, name.is_some()).await?
    } else if files.is_empty() && metadata.is_empty() {
        return Err(ImportError::NotArchive("it is empty".into()));
    } else {
        return Err(ImportError::NotArchive(
            "it has neither index.json (an OCI archive) nor manifest.json (a docker archive)"
                .into(),
        ));
    };
    let images = match name {
        None => images,
        Some(name) => {
            let mut targets: Vec<&Descriptor> = images.iter().map(|(_, t)| t).collect();
            targets.dedup_by(|a, b| a.digest == b.digest);
            match targets[..] {
                [target] => vec![(name.as_str().to_string(), target.clone())],
                _ => {
                    return Err(ImportError::NoName(format!(
                        "the archive holds {} images; a name names exactly one",
                        targets.len()
                    )));
                }
            }
        }
    };
    let mut imported = Vec::new();
    for (name, target) in images {
        let chain_id = unpack_target(client, &name, &target, snapshotter).await?;
        imported.push(Imported {
            name,
            target,
            chain_id,
        });
    }
    for (i, image) in imported.iter().enumerate() {
        if let Err(e) = put_image(client, &image.name, &image.target).await {
            for named in &imported[..i] {
                let _ = super::remove(client, &named.name).await;
            }
            return Err(e.into());
        }
    }
    Ok(imported)
}

/// `blobs/sha256/<hex>` → `sha256:<hex>`.
fn blob_digest(path: &str) -> Option<String> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| format!("sha256:{hex}"))
}

/// The OCI archive's images: each entry of `index.json` with a name, its blobs checked and
/// labelled.
async fn oci_images(
    client: &Client,
    index: &[u8],
    files: &HashMap<String, (String, u64, bool)>,
    renamed: bool,
) -> Result<Vec<(String, Descriptor)>, ImportError> {
    let index = Manifest::parse(index).map_err(|reason| ImportError::Metadata {
        file: "index.json".into(),
        reason,
    })?;
    if index.manifests.is_empty() {
        return Err(ImportError::Metadata {
            file: "index.json".into(),
            reason: "it lists no image".into(),
        });
    }
    let mut images = Vec::new();
    for entry in &index.manifests {
        let annotations = &entry.annotations;
        let written = annotations
            .get("io.containerd.image.name")
            .or_else(|| annotations.get("org.opencontainers.image.ref.name"));
        let name = match written {
            // The caller names it.
            _ if renamed => String::new(),
            Some(name) if name.contains('/') || name.contains(':') => ImageRef::parse(name)
                .map_err(|e| ImportError::Metadata {
                    file: "index.json".into(),
                    reason: e.to_string(),
                })?
                .as_str()
                .to_string(),
            Some(tag) => {
                return Err(ImportError::NoName(format!(
                    "the archive names its image only {tag:?}; it needs a full name \
                     (REPOSITORY[:TAG]): give one (torc image import --name)"
                )));
            }
            None => {
                return Err(ImportError::NoName(format!(
                    "the archive does not name image {}",
                    entry.digest
                )));
            }
        };
        check_tree(client, entry, "index.json", files, 0).await?;
        let mut target = entry.clone();
        target.annotations.clear();
        target.platform = None;
        images.push((name, target));
    }
    Ok(images)
}

/// Checks that a manifest (or index) and what it reaches are in the content store, and puts
/// the GC labels on it.
async fn check_tree(
    client: &Client,
    descriptor: &Descriptor,
    by: &str,
    files: &HashMap<String, (String, u64, bool)>,
    depth: usize,
) -> Result<(), ImportError> {
    let present = |digest: &str| files.values().any(|f| f.0 == digest);
    let missing = |digest: &str| ImportError::MissingBlob {
        blob: digest.to_string(),
        by: by.to_string(),
    };
    if !present(&descriptor.digest) && !content::has(client, &descriptor.digest).await? {
        return Err(missing(&descriptor.digest));
    }
    let bytes = content::read(client, &descriptor.digest).await?;
    let manifest = Manifest::parse(&bytes).map_err(|reason| ImportError::Metadata {
        file: descriptor.digest.clone(),
        reason,
    })?;
    for child in manifest.config.iter().chain(&manifest.layers) {
        if !present(&child.digest) && !content::has(client, &child.digest).await? {
            return Err(ImportError::MissingBlob {
                blob: child.digest.clone(),
                by: format!("manifest {}", descriptor.digest),
            });
        }
    }
    if depth < 2 {
        for child in &manifest.manifests {
            Box::pin(check_tree(
                client,
                child,
                &format!("index {}", descriptor.digest),
                files,
                depth + 1,
            ))
            .await?;
        }
    }
    label_blob(client, &descriptor.digest, manifest.gc_labels()).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// The docker archive's images: a Docker schema-2 manifest built for each `manifest.json`
/// entry (as containerd's importer does), written into content with its GC labels.
async fn docker_images(
    client: &Client,
    manifest_json: &[u8],
    files: &HashMap<String, (String, u64, bool)>,
    renamed: bool,
) -> Result<Vec<(String, Descriptor)>, ImportError> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(manifest_json).map_err(|e| ImportError::Metadata {
            file: "manifest.json".into(),
            reason: e.to_string(),
        })?;
    let mut images = Vec::new();
    for entry in entries {
        let file = |path: &str| {
            let path = path.trim_start_matches("./");
            files.get(path).ok_or_else(|| ImportError::MissingBlob {
                blob: path.to_string(),
                by: "manifest.json".into(),
            })
        };
        let (config_digest, config_size, _) = file(&entry.config)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let (digest, size, gzip) = file(layer)?;
            let media = if *gzip {
                format!("{DOCKER_LAYER}.gzip")
            } else {
                DOCKER_LAYER.to_string()
            };
            layers.push(serde_json::json!({"mediaType": media, "size": size, "digest": digest}));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config_size, "digest": config_digest},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).expect("a JSON value serialises");
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        let labels = Manifest::parse(&bytes)
            .expect("the manifest just built")
            .gc_labels();
        content::write_bytes(client, &digest, &bytes, labels).await?;
        let target = Descriptor::new(DOCKER_MANIFEST, &digest, bytes.len() as u64);
        if renamed {
            // The caller names it.
            images.push((String::new(), target));
            continue;
        }
        if entry.repo_tags.is_empty() {
            return Err(ImportError::NoName(format!(
                "manifest.json gives image {} no RepoTags; it needs a full name: give one \
                 (torc image import --name)",
                entry.config
            )));
        }
        for tag in &entry.repo_tags {
            let name = ImageRef::parse(tag).map_err(|e| ImportError::Metadata {
                file: "manifest.json".into(),
                reason: e.to_string(),
            })?;
            images.push((name.as_str().to_string(), target.clone()));
        }
    }
    Ok(images)
}

/// The reading thread: the archive's entries in order, each content file in chunks with its
/// SHA-256 computed on the way. Stops when the receiver is gone.
fn read_archive<R: Read>(reader: R, tx: mpsc::Sender<Piece>) {
    let send = |piece| tx.blocking_send(piece).is_ok();
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => {
            send(Piece::Failed(ImportError::NotArchive(e.to_string())));
            return;
        }
    };
    let mut last = String::new();
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let error = if last.is_empty() {
                    ImportError::NotArchive(e.to_string())
                } else {
                    ImportError::Entry {
                        entry: format!("after {last}"),
                        reason: e.to_string(),
                    }
                };
                send(Piece::Failed(error));
                return;
            }
        };
        let path = entry.path().map(|p| p.to_string_lossy().into_owned());
        let path = match path {
            Ok(p) => p.trim_start_matches("./").to_string(),
            Err(e) => {
                send(Piece::Failed(ImportError::Entry {
                    entry: format!("after {last:?}"),
                    reason: format!("a bad path: {e}"),
                }));
                return;
            }
        };
        last = path.clone();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        if METADATA.contains(&path.as_str()) {
            if size > MAX_METADATA {
                send(Piece::Failed(ImportError::Metadata {
                    file: path,
                    reason: format!("{size} bytes; at most {MAX_METADATA} are allowed"),
                }));
                return;
            }
            let mut bytes = Vec::with_capacity(size as usize);
            if let Err(e) = entry.read_to_end(&mut bytes) {
                send(Piece::Failed(ImportError::Entry {
                    entry: path,
                    reason: e.to_string(),
                }));
                return;
            }
            if (bytes.len() as u64) < size {
                send(Piece::Failed(truncated(&path, bytes.len() as u64, size)));
                return;
            }
            if !send(Piece::Metadata { path, bytes }) {
                return;
            }
            continue;
        }
        if !send(Piece::Blob {
            path: path.clone(),
            size,
        }) {
            return;
        }
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        let mut gzip = false;
        loop {
            let mut buf = vec![0u8; CHUNK.min((size - read) as usize).max(1)];
            let n = match entry.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    send(Piece::Failed(ImportError::Entry {
                        entry: path,
                        reason: format!("{e} after {read} bytes"),
                    }));
                    return;
                }
            };
            if n == 0 {
                break;
            }
            if read == 0 {
                gzip = buf.starts_with(&[0x1f, 0x8b]);
            }
            buf.truncate(n);
            hasher.update(&buf);
            read += n as u64;
            if !send(Piece::Data(buf.into())) {
                return;
            }
        }
        if read < size {
            send(Piece::Failed(truncated(&path, read, size)));
            return;
        }
        let digest = format!("sha256:{:x}", hasher.finalize());
        if !send(Piece::BlobEnd { digest, gzip }) {
            return;
        }
    }
}

fn truncated(path: &str, read: u64, size: u64) -> ImportError {
    ImportError::Entry {
        entry: path.to_string(),
        reason: format!("unexpected end of archive after {read} of {size} bytes"),
    }
}
